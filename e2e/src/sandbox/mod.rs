//! A local stand-in for the AWS side of pitstop, built from real parts.
//!
//! N instances, each a real `pitstop-backend` process with a home directory and a boot counter, sit behind a real
//! HAProxy whose health checks mirror the target group's. An HTTP endpoint speaks enough ELBv2 (Query/XML) and SSM
//! (JSON 1.1) for the unmodified AWS SDK, pointed at it through `AWS_ENDPOINT_URL`: registering and deregistering
//! targets drives HAProxy through its runtime API, target health is read from HAProxy's checks, and
//! `AWS-RunShellScript` runs scripts on the instance, rebooting it on `exit 194`. Fault switches and a call log let
//! tests bend the fleet and check what a client did.
//!
//! A light mode ([`SandboxConfig::light`], for `make bench-scale`) keeps the AWS side the same but runs no process:
//! HAProxy's checks are simulated in memory (`simulated_balancer.rs`), so a thousand instances in a hundred target
//! groups fit on a laptop.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::start(SandboxConfig::default()).await?;
//! println!("AWS_ENDPOINT_URL={}", sandbox.aws_endpoint_url());
//! sandbox.shutdown().await?;
//! # Ok(()) }
//! ```

mod agent;
mod autoscaling;
mod autoscaling_api;
mod backend_process;
mod balancer;
mod call_log;
mod cloudwatch_api;
mod commands;
mod config;
mod ec2_api;
mod elbv2_api;
mod endpoint;
mod faults;
mod fleet;
mod haproxy;
mod instance;
mod lifecycle;
mod monitor;
mod net;
mod process;
mod protocol;
mod rotation;
mod server;
mod simulated_balancer;
mod ssm_api;
mod targets;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use call_log::{CallLog, CallOutcome, CallRecord, Service, is_write_operation};
pub use config::{
    BACKEND_BINARY_ENV, HAPROXY_BINARY_ENV, LIGHT_MAX_INSTANCES, LIGHT_MAX_TARGET_GROUPS, SandboxConfig,
    check_haproxy_binary, default_backend_binary, default_haproxy_binary,
};
pub use faults::{
    AnswerLoss, FaultError, FaultSettings, Faults, LOSABLE_AUTOSCALING_WRITES, LOSABLE_WRITES, LostAnswer,
    LostAnswerMode,
};
pub use instance::{Power, instance_id};
pub use net::{SimpleResponse, http_get, http_request};
pub use process::tie_to_parent;
pub use rotation::{AdminState, OperationalState, RotationSnapshot, RotationState};
pub use targets::{TargetHealth, TargetState};

use balancer::Balancer;
use commands::CommandStore;
use haproxy::{HaproxySettings, RuntimeApi};
use instance::Instance;
use rotation::RotationRecorder;
use simulated_balancer::SimulatedBalancer;
use targets::TargetGroup;

/// Account ID in the target group ARN (the one AWS documentation uses).
const ACCOUNT_ID: &str = "123456789012";

/// Background tasks of a sandbox, aborted together when it stops.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    set: Mutex<JoinSet<()>>,
}

impl Tasks {
    /// Runs `task` until it ends or the sandbox stops.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop finished tasks so the set does not grow with every command.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    fn abort_all(&self) {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
    }

    /// Waits (at most `limit`) for aborted tasks to be gone, so they release their processes.
    async fn join_all(&self, limit: Duration) {
        let mut set = std::mem::take(&mut *self.set.lock().unwrap_or_else(PoisonError::into_inner));
        set.abort_all();
        let _ = tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
    }
}

/// State shared by the endpoint, the agents and the watchers of one sandbox.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: SandboxConfig,
    pub(crate) started: Instant,
    pub(crate) instances: Vec<Arc<Instance>>,
    /// The target groups, at least one; every instance is registered in each at the start.
    pub(crate) target_groups: Vec<TargetGroup>,
    /// The Auto Scaling group every launched instance belongs to.
    pub(crate) auto_scaling: autoscaling::AutoScalingGroup,
    /// HAProxy, or its simulation in light mode.
    pub(crate) balancer: Balancer,
    haproxy_process: Mutex<Option<Child>>,
    pub(crate) commands: CommandStore,
    /// CloudWatch's alarms (`spec.gates.cloudWatchAlarms`).
    pub(crate) alarms: cloudwatch_api::AlarmStore,
    pub(crate) faults: Faults,
    pub(crate) calls: CallLog,
    /// Takes the AWS endpoint down for a while (`/_sandbox/outage`, [`Sandbox::refuse_connections`]).
    pub(crate) outage: server::OutageSwitch,
    pub(crate) rotation: RotationRecorder,
    /// The most members of each group out of rotation at once.
    pub(crate) most_out: rotation::MostOutPerGroup,
    /// Held while HAProxy's states are read and recorded, so records are made in the order of the reads.
    pub(crate) observing: tokio::sync::Mutex<()>,
    pub(crate) tasks: Tasks,
    closed: AtomicBool,
}

impl Shared {
    /// The index of the target group with this ARN.
    pub(crate) fn target_group_index(&self, arn: &str) -> Option<usize> {
        self.target_groups.iter().position(|g| g.arn == arn)
    }

    /// The instance with this ID.
    pub(crate) fn instance(&self, id: &str) -> Option<&Arc<Instance>> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// Whether the sandbox is stopping: nothing may be started any more.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops everything at once, without waiting: no task runs on, no child survives. Safe to call twice.
    fn kill_everything(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.tasks.abort_all();
        for instance in &self.instances {
            // Dropping the handle after start_kill leaves the reaping to the runtime.
            drop(instance.kill_processes());
        }
        if let Some(mut haproxy) = self
            .haproxy_process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = haproxy.start_kill();
        }
    }
}

/// The sandbox's temporary directory, or a kept one the caller chose.
#[derive(Debug)]
enum WorkDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl WorkDir {
    fn path(&self) -> &Path {
        match self {
            WorkDir::Temporary(dir) => dir.path(),
            WorkDir::Kept(path) => path,
        }
    }
}

/// What a client needs to reach a sandbox; printed and written as JSON by `pitstop-sandbox --info-file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// Value for `AWS_ENDPOINT_URL`.
    pub aws_endpoint_url: String,
    /// URL of HAProxy's frontend of the first target group, where clients send traffic.
    pub frontend_url: String,
    /// ARN of the first target group.
    pub target_group_arn: String,
    /// URL of every target group's frontend, in target group order.
    #[serde(default)]
    pub frontend_urls: Vec<String>,
    /// ARN of every target group.
    #[serde(default)]
    pub target_group_arns: Vec<String>,
    /// Name of the Auto Scaling group every instance belongs to.
    #[serde(default)]
    pub auto_scaling_group_name: String,
    /// AWS region.
    pub region: String,
    /// Instance IDs, in index order.
    pub instance_ids: Vec<String>,
    /// Environment variables for an AWS SDK client (endpoint, dummy credentials, region).
    pub env: BTreeMap<String, String>,
    /// Work directory (HAProxy config and log, instance homes).
    pub work_dir: PathBuf,
}

/// A running sandbox fleet. Stop it with [`Sandbox::shutdown`]; dropping it also kills every process it started.
#[derive(Debug)]
pub struct Sandbox {
    shared: Arc<Shared>,
    work_dir: WorkDir,
    aws_addr: SocketAddr,
    /// One frontend per target group.
    frontend_addrs: Vec<SocketAddr>,
    ports: Vec<u16>,
    server: Option<JoinHandle<()>>,
    server_stop: Option<oneshot::Sender<()>>,
}

impl Sandbox {
    /// Starts the backends, HAProxy and the AWS endpoint, registers every instance, and returns once every target
    /// reads `healthy`.
    pub async fn start(cfg: SandboxConfig) -> anyhow::Result<Sandbox> {
        cfg.validate()?;
        let work_dir = match &cfg.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
                WorkDir::Kept(dir.clone())
            }
            None => WorkDir::Temporary(
                tempfile::Builder::new()
                    .prefix("pitstop-sandbox-")
                    .tempdir()
                    .context("create a temporary work dir")?,
            ),
        };
        let mut ports = Vec::new();
        let mut instances = Vec::new();
        let instances_dir = work_dir.path().join("instances");
        for index in 0..cfg.instances + cfg.spare_instances {
            let port = match net::pick_backend_port() {
                Ok(port) => port,
                Err(err) => {
                    net::release_ports(&ports);
                    return Err(err);
                }
            };
            ports.push(port);
            match Instance::create(index, port, &instances_dir) {
                Ok(mut instance) => {
                    instance.place(&cfg.region, index);
                    if index >= cfg.instances {
                        instance.make_spare();
                    }
                    instances.push(Arc::new(instance));
                }
                Err(err) => {
                    net::release_ports(&ports);
                    return Err(err);
                }
            }
        }
        let mut frontend_ports = Vec::new();
        for _ in 0..cfg.target_groups.max(1) {
            match net::pick_free_port() {
                Ok(port) => {
                    ports.push(port);
                    frontend_ports.push(port);
                }
                Err(err) => {
                    net::release_ports(&ports);
                    return Err(err);
                }
            }
        }

        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let socket = work_dir.path().join("haproxy.sock");
        let target_groups: Vec<TargetGroup> = (0..frontend_ports.len())
            .map(|index| {
                let arn = format!(
                    "arn:aws:elasticloadbalancing:{}:{ACCOUNT_ID}:targetgroup/{}/{:016x}",
                    cfg.region,
                    targets::target_group_name(index),
                    fastrand::u64(..)
                );
                let members: Vec<String> = ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| cfg.in_group(*i, index))
                    .map(|(_, id)| id.clone())
                    .collect();
                TargetGroup::new(index, arn, &members)
            })
            .collect();
        let balancer = if cfg.light {
            let backends = target_groups.iter().map(|g| (g.backend.clone(), g.members()));
            Balancer::Simulated(SimulatedBalancer::new(
                backends,
                cfg.healthy_threshold,
                cfg.unhealthy_threshold,
            ))
        } else {
            Balancer::Haproxy(RuntimeApi::new(socket.clone()))
        };
        let listener = match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(listener) => listener,
            Err(err) => {
                net::release_ports(&ports);
                return Err(err).context("bind the AWS endpoint on 127.0.0.1");
            }
        };
        let aws_addr = listener.local_addr().context("AWS endpoint address")?;
        let (outage, outages) = server::outage_switch();
        let auto_scaling = autoscaling::AutoScalingGroup::new(
            &cfg.auto_scaling_group_name,
            &cfg.region,
            ACCOUNT_ID,
            &ids[..cfg.instances],
            cfg.spare_instances,
            cfg.elb_health_check_grace,
        );
        let shared = Arc::new(Shared {
            outage,
            auto_scaling,
            started: Instant::now(),
            target_groups,
            balancer,
            haproxy_process: Mutex::new(None),
            commands: CommandStore::default(),
            alarms: cloudwatch_api::AlarmStore::default(),
            faults: Faults::new(ids.iter().cloned()),
            calls: CallLog::default(),
            rotation: RotationRecorder::default(),
            most_out: rotation::MostOutPerGroup::default(),
            observing: tokio::sync::Mutex::new(()),
            tasks: Tasks::default(),
            closed: AtomicBool::new(false),
            instances,
            cfg,
        });
        // From here on, an error drops `sandbox`, whose Drop kills whatever was started.
        let mut sandbox = Sandbox {
            shared: Arc::clone(&shared),
            work_dir,
            aws_addr,
            frontend_addrs: frontend_ports
                .iter()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, *port)))
                .collect(),
            ports,
            server: None,
            server_stop: None,
        };

        // Boot the fleet: start every backend, then wait for each (they come up side by side).
        for instance in &shared.instances {
            lifecycle::start_backend(&shared, instance)?;
        }
        for instance in &shared.instances {
            lifecycle::finish_boot(&shared, instance).await?;
        }

        if shared.cfg.light {
            shared.tasks.spawn(monitor::check_simulated_health(Arc::clone(&shared)));
        } else {
            let settings = HaproxySettings {
                frontend_ports,
                servers: shared.instances.iter().map(|i| (i.id.clone(), i.port)).collect(),
                interval: shared.cfg.health_interval,
                rise: shared.cfg.healthy_threshold,
                fall: shared.cfg.unhealthy_threshold,
                socket,
            };
            let child = haproxy::start(&shared.cfg.haproxy_binary, sandbox.work_dir.path(), &settings).await?;
            *shared.haproxy_process.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        }

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let app = endpoint::router(Arc::clone(&shared));
        sandbox.server = Some(tokio::spawn(async move {
            if let Err(err) = server::serve(listener, app, outages, stop_rx).await {
                tracing::error!("the sandbox's AWS endpoint stopped: {err:#}");
            }
        }));
        sandbox.server_stop = Some(stop_tx);

        if !shared.cfg.light {
            // In light mode only registrations and check rounds change a state, and both record it at once.
            shared.tasks.spawn(monitor::watch_haproxy(Arc::clone(&shared)));
        }
        shared.tasks.spawn(monitor::watch_faults(Arc::clone(&shared)));
        shared.tasks.spawn(autoscaling::watch_health(Arc::clone(&shared)));

        // Every instance starts registered in every group, on the group's port, through the same path as a
        // RegisterTargets call.
        for (index, group) in shared.target_groups.iter().enumerate() {
            let all: Vec<(String, u16)> = ids
                .iter()
                .take(shared.cfg.instances)
                .enumerate()
                .filter(|(i, _)| shared.cfg.in_group(*i, index))
                .map(|(_, id)| (id.clone(), group.port))
                .collect();
            targets::register(&shared, index, &all).await?;
        }
        sandbox.wait_until_all_healthy().await?;
        // Read HAProxy now: the monitor's last poll may predate the last check that passed.
        let current = monitor::observe_now(&shared).await?;
        shared.rotation.reset(shared.started.elapsed(), Some(current));
        // The boot of the fleet had every instance out; what counts is what clients do from now on.
        shared.most_out.reset();
        Ok(sandbox)
    }

    async fn wait_until_all_healthy(&self) -> anyhow::Result<()> {
        let cfg = &self.shared.cfg;
        let limit = Duration::from_secs(20) + cfg.health_interval * (cfg.healthy_threshold + 2) * 2;
        let deadline = Instant::now() + limit;
        loop {
            let mut health = Vec::new();
            for index in 0..self.shared.target_groups.len() {
                health.push(targets::describe(&self.shared, index).await?);
            }
            let in_service = |id: &String| self.shared.instance(id).is_some_and(|i| i.in_service());
            if health
                .iter()
                .flat_map(|h| h.iter())
                .filter(|(id, _)| in_service(id))
                .all(|(_, h)| h.state == TargetState::Healthy)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the targets did not all become healthy within {limit:?}: {health:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Value for `AWS_ENDPOINT_URL`: `http://127.0.0.1:<port>`, serving both ELBv2 and SSM.
    pub fn aws_endpoint_url(&self) -> String {
        format!("http://{}", self.aws_addr)
    }

    /// Address of the AWS endpoint (also serving `/_sandbox/*`).
    pub fn aws_endpoint_addr(&self) -> SocketAddr {
        self.aws_addr
    }

    /// URL of HAProxy's frontend of the first target group: `http://127.0.0.1:<port>`.
    pub fn frontend_url(&self) -> String {
        format!("http://{}", self.frontend_addr())
    }

    /// Address of HAProxy's frontend of the first target group.
    pub fn frontend_addr(&self) -> SocketAddr {
        self.frontend_addrs[0]
    }

    /// URLs of every target group's frontend, in target group order.
    pub fn frontend_urls(&self) -> Vec<String> {
        self.frontend_addrs.iter().map(|a| format!("http://{a}")).collect()
    }

    /// ARN of the first target group: `arn:aws:elasticloadbalancing:<region>:123456789012:targetgroup/sandbox/<16 hex>`.
    pub fn target_group_arn(&self) -> &str {
        &self.shared.target_groups[0].arn
    }

    /// Instances the Auto Scaling group replaced because its ELB health check found them unhealthy, in order (see
    /// [`SandboxConfig::elb_health_check_grace`]).
    pub fn auto_scaling_replacements(&self) -> Vec<String> {
        self.shared.auto_scaling.replaced()
    }

    /// Name of the Auto Scaling group every launched instance belongs to ([`SandboxConfig::auto_scaling_group_name`]).
    pub fn auto_scaling_group_name(&self) -> &str {
        &self.shared.auto_scaling.name
    }

    /// ARNs of every target group (`…/sandbox/…`, `…/sandbox-2/…`, ...), in order.
    pub fn target_group_arns(&self) -> Vec<String> {
        self.shared.target_groups.iter().map(|g| g.arn.clone()).collect()
    }

    /// AWS region of the sandbox.
    pub fn region(&self) -> &str {
        &self.shared.cfg.region
    }

    /// The configuration the sandbox runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.cfg
    }

    /// IDs of the instances in service (launched and not terminated), in index order.
    pub fn instance_ids(&self) -> Vec<String> {
        self.shared
            .instances
            .iter()
            .filter(|i| i.in_service())
            .map(|i| i.id.clone())
            .collect()
    }

    /// Terminates instance `id` as an Auto Scaling group does: out of every target group it is in (after the
    /// deregistration delay), then powered off for good. Returns once it is gone.
    pub async fn terminate_instance(&self, id: &str) -> anyhow::Result<()> {
        fleet::terminate(&self.shared, id).await
    }

    /// Creates the CloudWatch alarm `name` or sets its state (`OK`, `ALARM`, `INSUFFICIENT_DATA`), as its evaluation
    /// would on AWS.
    pub fn set_alarm(&self, name: &str, state: &str, reason: &str) -> anyhow::Result<()> {
        self.shared
            .alarms
            .set(name, state, reason)
            .map_err(|err| anyhow::anyhow!("{}: {}", err.code, err.message))
    }

    /// Launches a spare instance into every target group (see [`SandboxConfig::spare_instances`]); returns its ID.
    pub async fn launch_instance(&self) -> anyhow::Result<String> {
        fleet::launch(&self.shared).await
    }

    /// Replaces instance `id`: terminates it, then launches a spare in its place; returns the new instance's ID.
    pub async fn replace_instance(&self, id: &str) -> anyhow::Result<String> {
        fleet::replace(&self.shared, id).await
    }

    /// How many times instance `id`'s backend has started (1 after the sandbox starts); `None` for an unknown ID.
    pub fn boot_count(&self, id: &str) -> Option<u64> {
        self.shared.instance(id).map(|i| i.power().boot_count)
    }

    /// Boot counts of every instance.
    pub fn boot_counts(&self) -> BTreeMap<String, u64> {
        self.shared
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.power().boot_count))
            .collect()
    }

    /// Whether instance `id` is running, down (rebooting) or lost (the `never_return` fault).
    pub fn power(&self, id: &str) -> Option<Power> {
        self.shared.instance(id).map(|i| i.power().power)
    }

    /// Home directory ("disk") of instance `id`.
    pub fn instance_home(&self, id: &str) -> Option<PathBuf> {
        self.shared.instance(id).map(|i| i.home.clone())
    }

    /// HAProxy's admin and operational state of every instance's server in the first target group, read now.
    pub async fn rotation_states(&self) -> anyhow::Result<BTreeMap<String, RotationState>> {
        self.shared.balancer.server_states(haproxy::BACKEND).await
    }

    /// Rotation states each time they changed, as read by the background poll, every `DescribeTargetHealth` and
    /// every registration change, since the sandbox became ready (or the last
    /// [`reset_rotation_history`](Self::reset_rotation_history)).
    pub fn rotation_history(&self) -> Vec<RotationSnapshot> {
        self.shared.rotation.history()
    }

    /// Largest number of instances out of rotation at once in [`rotation_history`](Self::rotation_history).
    pub fn max_out_of_rotation(&self) -> usize {
        self.shared.rotation.max_out_of_rotation()
    }

    /// The most members of each target group out of rotation at once since the sandbox was ready (or since
    /// [`Self::reset_rotation_history`]), in target group order. Exact in light mode, where every change is
    /// recorded as it is made; with HAProxy, checks are read every `haproxy_poll`.
    pub fn most_out_per_target_group(&self) -> Vec<usize> {
        let mut most = self.shared.most_out.get();
        most.resize(self.shared.target_groups.len(), 0);
        most
    }

    /// Starts the rotation history afresh from the states last read (at most one `haproxy_poll` old).
    pub fn reset_rotation_history(&self) {
        self.shared.rotation.reset(self.shared.started.elapsed(), None);
        self.shared.most_out.reset();
    }

    /// Every instance's target health in the first target group, exactly as `DescribeTargetHealth` would report it
    /// now (without a call-log entry).
    pub async fn target_health(&self) -> anyhow::Result<BTreeMap<String, TargetHealth>> {
        targets::describe(&self.shared, 0).await
    }

    /// Every instance's target health in the target group with this ARN, as [`Self::target_health`].
    pub async fn target_health_in(&self, arn: &str) -> anyhow::Result<BTreeMap<String, TargetHealth>> {
        let index = self
            .shared
            .target_group_index(arn)
            .with_context(|| format!("no target group {arn} in the sandbox"))?;
        targets::describe(&self.shared, index).await
    }

    /// The fault switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Takes the AWS endpoint down for `length`: open connections are closed and new ones refused (nothing
    /// listens on the port), then it comes back on the same address. Returns at once.
    pub fn refuse_connections(&self, length: Duration) {
        self.shared.outage.refuse_connections(length);
    }

    /// The log of AWS calls.
    pub fn call_log(&self) -> &CallLog {
        &self.shared.calls
    }

    /// The work directory.
    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// PIDs of HAProxy and the running backends (scripts come and go and are not listed).
    pub fn child_pids(&self) -> Vec<u32> {
        let haproxy = self
            .shared
            .haproxy_process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Child::id);
        haproxy
            .into_iter()
            .chain(self.shared.instances.iter().filter_map(|i| i.backend_pid()))
            .collect()
    }

    /// Environment for an AWS SDK client: `AWS_ENDPOINT_URL`, dummy credentials, `AWS_REGION`.
    pub fn aws_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("AWS_ENDPOINT_URL".to_owned(), self.aws_endpoint_url()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
            ("AWS_REGION".to_owned(), self.region().to_owned()),
        ])
    }

    /// Everything a client needs to reach the sandbox.
    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            aws_endpoint_url: self.aws_endpoint_url(),
            frontend_url: self.frontend_url(),
            target_group_arn: self.target_group_arn().to_owned(),
            frontend_urls: self.frontend_urls(),
            target_group_arns: self.target_group_arns(),
            auto_scaling_group_name: self.auto_scaling_group_name().to_owned(),
            region: self.region().to_owned(),
            instance_ids: self.instance_ids(),
            env: self.aws_env(),
            work_dir: self.work_dir().to_owned(),
        }
    }

    /// Stops the endpoint, HAProxy, the backends and running scripts, waits for them to exit, and removes the
    /// temporary work directory.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let shared = Arc::clone(&self.shared);
        shared.closed.store(true, Ordering::SeqCst);
        shared.tasks.join_all(Duration::from_secs(2)).await;
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(2), &mut server).await.is_err()
        {
            // Clients holding idle keep-alive connections must not keep the sandbox alive.
            server.abort();
        }
        for instance in &shared.instances {
            if let Some(mut backend) = instance.kill_processes() {
                let _ = backend.wait().await;
            }
        }
        let haproxy = shared
            .haproxy_process
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut haproxy) = haproxy {
            // An error here means it is already gone, which is the goal.
            let _ = haproxy.start_kill();
            let _ = haproxy.wait().await;
        }
        // Drop (which runs next) has nothing left to kill; it frees the ports and the temporary directory.
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shared.kill_everything();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        net::release_ports(&self.ports);
    }
}
