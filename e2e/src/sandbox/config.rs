//! Settings of a sandbox fleet, with defaults short enough for tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure};

/// Environment variable naming the `pitstop-backend` binary; it wins over the search next to the running executable.
pub const BACKEND_BINARY_ENV: &str = "PITSTOP_BACKEND_BIN";

/// Environment variable naming the HAProxy binary; it wins over `/usr/sbin/haproxy` and `PATH`.
pub const HAPROXY_BINARY_ENV: &str = "PITSTOP_HAPROXY_BIN";

/// Where Debian's `haproxy` package installs the binary.
const DEBIAN_HAPROXY: &str = "/usr/sbin/haproxy";

/// Everything a [`Sandbox`](super::Sandbox) needs to start.
///
/// `Default` gives a three-instance fleet with settings meant for fast tests: a 2 s deregistration delay,
/// 1 s health-check interval, thresholds of 2 and a 2 s boot. The `with_*` methods change one field each.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Number of EC2 instances (backend processes) in the target group.
    pub instances: usize,
    /// Number of target groups every instance is registered in (1 to 10), each a real HAProxy frontend and
    /// backend with its own health checks, as an instance serving HTTP and HTTPS, or through an ALB and an NLB.
    pub target_groups: usize,
    /// Spare instances: booted with the fleet but in no target group, launched into every group one at a time by
    /// `Sandbox::replace_instance` or `Sandbox::launch_instance` (as an Auto Scaling group launches a replacement).
    pub spare_instances: usize,
    /// The target group's `deregistration_delay.timeout_seconds`: how long a deregistered target stays `draining`.
    /// AWS counts whole seconds, so the value reported by `DescribeTargetGroupAttributes` is rounded up.
    pub deregistration_delay: Duration,
    /// Health-check interval, HAProxy's `inter`.
    pub health_interval: Duration,
    /// Consecutive passed checks before a target is healthy, HAProxy's `rise`.
    pub healthy_threshold: u32,
    /// Consecutive failed checks before a target is unhealthy, HAProxy's `fall`.
    pub unhealthy_threshold: u32,
    /// How long an instance stays down when it reboots.
    pub boot_time: Duration,
    /// How long after `SendCommand` `GetCommandInvocation` still answers `InvocationDoesNotExist`, as real SSM does.
    pub invocation_visibility_delay: Duration,
    /// The `pitstop-backend` binary each instance runs.
    pub backend_binary: PathBuf,
    /// The HAProxy binary.
    pub haproxy_binary: PathBuf,
    /// Directory for HAProxy's config and socket and the instances' home directories; `None` means a fresh
    /// temporary directory that is removed when the sandbox goes away. A given directory is kept.
    pub work_dir: Option<PathBuf>,
    /// AWS region written into the target group ARN and printed for clients.
    pub region: String,
    /// Name of the Auto Scaling group every launched instance belongs to (MinSize and DesiredCapacity the number of
    /// instances, MaxSize that plus the spares).
    pub auto_scaling_group_name: String,
    /// The Auto Scaling group's ELB health check and its grace period: a member that a target group reads
    /// `unhealthy` once the grace period after it came into service has passed is replaced (terminated, a spare
    /// launched and registered), as AWS does with `HealthCheckType: ELB`. None (default): the EC2 health check only,
    /// which a running instance always passes, so the group never replaces one.
    pub elb_health_check_grace: Option<Duration>,
    /// After a reboot, how long the service fails its health check once the OS and the SSM agent are up (a slow
    /// application start: the maintenance command has finished, the load balancer still reads it unhealthy). Zero
    /// (default): it serves at once. The first boot never warms up.
    pub app_warmup: Duration,
    /// How often the sandbox reads HAProxy's server states in the background, for target health and the rotation
    /// record. Every `DescribeTargetHealth` and every change the sandbox makes also reads them, so the record holds
    /// every state a client acted on, whatever this is.
    pub haproxy_poll: Duration,
    /// Light mode (`make bench-scale`): no HAProxy and no backend processes. Target health comes from an in-memory
    /// simulation of HAProxy's checks with the same thresholds, and an instance "runs" between boots without a
    /// process; deregistration delay, boot time and SSM commands behave as in the full sandbox. There are no
    /// frontends and no traffic. Allows up to [`LIGHT_MAX_INSTANCES`] instances and [`LIGHT_MAX_TARGET_GROUPS`] groups.
    pub light: bool,
    /// Each instance in one target group only, `i` in group `i % target_groups`, instead of every instance in every
    /// group: a fleet of many small groups, as `make bench-scale` runs.
    pub partitioned_groups: bool,
}

/// Most instances a light-mode sandbox holds (a full one holds 200: each is a process behind HAProxy).
pub const LIGHT_MAX_INSTANCES: usize = 2000;
/// Most target groups a light-mode sandbox holds (a full one has 10: each is an HAProxy frontend).
pub const LIGHT_MAX_TARGET_GROUPS: usize = 200;

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            instances: 3,
            target_groups: 1,
            spare_instances: 0,
            deregistration_delay: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            boot_time: Duration::from_secs(2),
            invocation_visibility_delay: Duration::from_millis(500),
            backend_binary: default_backend_binary(),
            haproxy_binary: default_haproxy_binary(),
            work_dir: None,
            region: "us-east-1".to_owned(),
            haproxy_poll: Duration::from_millis(100),
            auto_scaling_group_name: "sandbox-asg".to_owned(),
            elb_health_check_grace: None,
            app_warmup: Duration::ZERO,
            light: false,
            partitioned_groups: false,
        }
    }
}

impl SandboxConfig {
    /// Sets the number of instances.
    pub fn with_instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }

    /// Sets the number of target groups every instance is registered in.
    pub fn with_target_groups(mut self, target_groups: usize) -> Self {
        self.target_groups = target_groups;
        self
    }

    /// Sets the number of spare instances.
    pub fn with_spare_instances(mut self, spare_instances: usize) -> Self {
        self.spare_instances = spare_instances;
        self
    }

    /// Sets the deregistration delay.
    pub fn with_deregistration_delay(mut self, delay: Duration) -> Self {
        self.deregistration_delay = delay;
        self
    }

    /// Sets the health-check interval.
    pub fn with_health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Sets the healthy and unhealthy thresholds.
    pub fn with_thresholds(mut self, healthy: u32, unhealthy: u32) -> Self {
        self.healthy_threshold = healthy;
        self.unhealthy_threshold = unhealthy;
        self
    }

    /// Sets how long a reboot keeps an instance down.
    pub fn with_boot_time(mut self, boot_time: Duration) -> Self {
        self.boot_time = boot_time;
        self
    }

    /// Sets how long a new command's invocations stay invisible to `GetCommandInvocation`.
    pub fn with_invocation_visibility_delay(mut self, delay: Duration) -> Self {
        self.invocation_visibility_delay = delay;
        self
    }

    /// Sets the `pitstop-backend` binary.
    pub fn with_backend_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.backend_binary = path.into();
        self
    }

    /// Sets the HAProxy binary.
    pub fn with_haproxy_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.haproxy_binary = path.into();
        self
    }

    /// Sets a work directory that is kept after the sandbox stops.
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// Sets the AWS region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets how often HAProxy's server states are read in the background.
    pub fn with_haproxy_poll(mut self, every: Duration) -> Self {
        self.haproxy_poll = every;
        self
    }

    /// Sets the Auto Scaling group's name.
    pub fn with_auto_scaling_group_name(mut self, name: impl Into<String>) -> Self {
        self.auto_scaling_group_name = name.into();
        self
    }

    /// Turns the Auto Scaling group's ELB health check on, with this grace period.
    pub fn with_elb_health_check(mut self, grace: Duration) -> Self {
        self.elb_health_check_grace = Some(grace);
        self
    }

    /// Light mode: simulated target health, no processes (see [`SandboxConfig::light`]).
    pub fn light(mut self) -> Self {
        self.light = true;
        self
    }

    /// Puts instance `i` in target group `i % target_groups` only (see [`SandboxConfig::partitioned_groups`]).
    pub fn with_partitioned_groups(mut self) -> Self {
        self.partitioned_groups = true;
        self
    }

    /// Whether instance `index` belongs to target group `group`.
    pub(crate) fn in_group(&self, index: usize, group: usize) -> bool {
        !self.partitioned_groups || index % self.target_groups.max(1) == group
    }

    /// Sets the service's warm-up after each reboot.
    pub fn with_app_warmup(mut self, warmup: Duration) -> Self {
        self.app_warmup = warmup;
        self
    }

    /// The deregistration delay as AWS reports it: whole seconds, rounded up.
    pub fn deregistration_delay_seconds(&self) -> u64 {
        let delay = self.deregistration_delay;
        delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
    }

    /// Rejects settings HAProxy or the emulated APIs cannot honour, and missing binaries, with a hint to fix them.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.instances >= 1, "a sandbox needs at least one instance");
        let (max_instances, max_groups) = if self.light {
            (LIGHT_MAX_INSTANCES, LIGHT_MAX_TARGET_GROUPS)
        } else {
            (200, 10)
        };
        ensure!(
            self.instances <= max_instances,
            "a sandbox holds at most {max_instances} instances, not {}",
            self.instances
        );
        ensure!(
            self.instances + self.spare_instances <= max_instances,
            "a sandbox holds at most {max_instances} instances, spares included, not {}",
            self.instances + self.spare_instances
        );
        ensure!(
            (1..=max_groups).contains(&self.target_groups),
            "a sandbox has 1 to {max_groups} target groups, not {}",
            self.target_groups
        );
        ensure!(
            !self.partitioned_groups || self.instances >= self.target_groups,
            "partitioned target groups need at least one instance each: {} instances for {} groups",
            self.instances,
            self.target_groups
        );
        ensure!(
            self.health_interval >= Duration::from_millis(100),
            "the health-check interval must be at least 100 ms, not {:?}",
            self.health_interval
        );
        ensure!(
            (1..=10).contains(&self.healthy_threshold),
            "the healthy threshold must be within 1..=10, not {}",
            self.healthy_threshold
        );
        ensure!(
            (1..=10).contains(&self.unhealthy_threshold),
            "the unhealthy threshold must be within 1..=10, not {}",
            self.unhealthy_threshold
        );
        ensure!(!self.region.is_empty(), "the region must not be empty");
        ensure!(
            (1..=255).contains(&self.auto_scaling_group_name.chars().count()),
            "the Auto Scaling group name must have 1 to 255 characters, not {:?}",
            self.auto_scaling_group_name
        );
        ensure!(
            self.haproxy_poll >= Duration::from_millis(10),
            "the HAProxy poll interval must be at least 10 ms, not {:?}",
            self.haproxy_poll
        );
        if self.light {
            // Neither HAProxy nor the backend runs in light mode.
            return Ok(());
        }
        check_haproxy_binary(&self.haproxy_binary)?;
        if !self.backend_binary.is_file() {
            bail!(
                "the backend binary {} does not exist: build it with `cargo build -p pitstop-e2e --bin pitstop-backend` \
                 or point {BACKEND_BINARY_ENV} at it",
                self.backend_binary.display()
            );
        }
        Ok(())
    }
}

/// Fails with the install hint when HAProxy is missing, the one outside dependency of the sandbox.
pub fn check_haproxy_binary(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "HAProxy not found at {}: the sandbox needs a real HAProxy, run `apt-get install haproxy` \
             (the Makefile does) or point {HAPROXY_BINARY_ENV} at one",
            path.display()
        );
    }
    Ok(())
}

/// The `pitstop-backend` binary: `$PITSTOP_BACKEND_BIN`, else next to the running executable, else one directory
/// up (integration tests run from `target/<profile>/deps`, binaries live in `target/<profile>`).
pub fn default_backend_binary() -> PathBuf {
    crate::binaries::sibling_binary(BACKEND_BINARY_ENV, "pitstop-backend")
}

/// The HAProxy binary: `$PITSTOP_HAPROXY_BIN`, else Debian's `/usr/sbin/haproxy`, else the first on `PATH`.
pub fn default_haproxy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(HAPROXY_BINARY_ENV) {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from(DEBIAN_HAPROXY);
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("haproxy"))
                .find(|p| p.is_file())
        })
        .unwrap_or(debian)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deregistration_delay_rounds_up_to_whole_seconds() {
        let cfg = SandboxConfig::default().with_deregistration_delay(Duration::from_millis(1500));
        assert_eq!(cfg.deregistration_delay_seconds(), 2);
        let cfg = cfg.with_deregistration_delay(Duration::from_secs(3));
        assert_eq!(cfg.deregistration_delay_seconds(), 3);
    }

    #[test]
    fn missing_haproxy_names_the_install_command() {
        let err = check_haproxy_binary(Path::new("/nonexistent/haproxy")).unwrap_err();
        assert!(err.to_string().contains("apt-get install haproxy"), "{err}");
    }

    #[test]
    fn thresholds_out_of_range_are_rejected() {
        let cfg = SandboxConfig::default().with_thresholds(0, 2);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn a_busy_loop_of_haproxy_polls_is_rejected() {
        let err = SandboxConfig::default()
            .with_haproxy_poll(Duration::from_millis(1))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("poll interval must be at least 10 ms"),
            "{err}"
        );
    }
}
