//! One emulated EC2 instance: its ID, its "disk" (home directory), its power and boot counter, and the processes
//! running on it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::watch;

use super::process::kill_process_group;

/// First instance ID; the others count up from it, so IDs are stable from run to run.
const FIRST_INSTANCE_ID: u128 = 0x0_1234_5678_9abc_def0;

/// The instance ID of the `index`-th instance: `i-` and 17 hex digits, as EC2 writes them (`i-0123456789abcdef0`).
pub fn instance_id(index: usize) -> String {
    let index = u128::try_from(index).unwrap_or(u128::MAX - FIRST_INSTANCE_ID);
    format!("i-{:017x}", FIRST_INSTANCE_ID.saturating_add(index))
}

/// Whether the instance's OS and agent are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    /// Booted: the backend runs and the SSM agent answers (`Online`).
    Running,
    /// Booting or rebooting: nothing runs, the agent reads `ConnectionLost`.
    Down,
    /// Went down and, by the `never_return` fault, is not coming back until that switch is turned off.
    Lost,
    /// Terminated: gone for good (see `Sandbox::terminate_instance`).
    Terminated,
}

/// Power state and boot counter, changed together so that waiters see them consistently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PowerState {
    pub(crate) power: Power,
    /// Starts of the backend so far; the one being booted counts as soon as its process starts.
    pub(crate) boot_count: u64,
    /// When `power` last changed, for the agent's last ping.
    pub(crate) since: SystemTime,
    /// `boot_count` when the instance last went down: a reboot is over once it runs with a larger count.
    pub(crate) down_at_boot: u64,
}

/// Processes running on the instance.
#[derive(Debug, Default)]
pub(crate) struct Processes {
    /// The web service.
    pub(crate) backend: Option<Child>,
    /// Process groups of running command scripts.
    pub(crate) scripts: HashSet<u32>,
}

/// One instance of the fleet.
#[derive(Debug)]
pub(crate) struct Instance {
    /// EC2 instance ID.
    pub(crate) id: String,
    /// Loopback port of its web service, the same across reboots.
    pub(crate) port: u16,
    /// Its "disk": survives reboots; scripts run here with `PITSTOP_STATE_DIR` pointing at it.
    pub(crate) home: PathBuf,
    /// When this file exists the backend fails its health check; outside `home` so scripts cannot touch it.
    pub(crate) sick_file: PathBuf,
    /// Backend stdout and stderr, appended across boots.
    pub(crate) log_file: PathBuf,
    power: watch::Sender<PowerState>,
    processes: Mutex<Processes>,
    /// A spare: booted but not launched into the fleet yet (in no target group, not in service).
    spare: AtomicBool,
}

impl Instance {
    /// Creates the `index`-th instance's directories under `root`; it starts down with no boot yet.
    pub(crate) fn create(index: usize, port: u16, root: &std::path::Path) -> anyhow::Result<Self> {
        let id = instance_id(index);
        let dir = root.join(&id);
        let home = dir.join("home");
        let control = dir.join("control");
        for d in [&home, &control] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let (power, _) = watch::channel(PowerState {
            power: Power::Down,
            boot_count: 0,
            since: SystemTime::now(),
            down_at_boot: 0,
        });
        Ok(Self {
            id,
            port,
            home,
            sick_file: control.join("unhealthy"),
            log_file: dir.join("backend.log"),
            power,
            processes: Mutex::default(),
            spare: AtomicBool::new(false),
        })
    }

    /// Marks the instance as a spare, to be launched later ([`Self::take_spare`]).
    pub(crate) fn make_spare(&self) {
        self.spare.store(true, Ordering::SeqCst);
    }

    /// Launches the instance if it is a spare: true once, for the caller that launches it.
    pub(crate) fn take_spare(&self) -> bool {
        self.spare.swap(false, Ordering::SeqCst)
    }

    /// Part of the fleet: launched (not a spare) and not terminated.
    pub(crate) fn in_service(&self) -> bool {
        !self.spare.load(Ordering::SeqCst) && self.power().power != Power::Terminated
    }

    /// Marks the instance terminated, for good.
    pub(crate) fn terminate(&self) {
        self.power.send_modify(|state| {
            state.power = Power::Terminated;
            state.since = SystemTime::now();
        });
    }

    /// Current power state and boot counter.
    pub(crate) fn power(&self) -> PowerState {
        *self.power.borrow()
    }

    /// A receiver woken at every power change.
    pub(crate) fn watch_power(&self) -> watch::Receiver<PowerState> {
        self.power.subscribe()
    }

    /// Sets the power state, keeping the boot counter.
    pub(crate) fn set_power(&self, power: Power) {
        self.power.send_if_modified(|state| {
            // Nothing brings a terminated instance back.
            if state.power == power || state.power == Power::Terminated {
                return false;
            }
            state.power = power;
            state.since = SystemTime::now();
            true
        });
    }

    /// Turns `Running` into `Down` atomically; false when the instance was not running (a reboot is under way).
    pub(crate) fn power_off_if_running(&self) -> bool {
        self.power.send_if_modified(|state| {
            if state.power != Power::Running {
                return false;
            }
            state.power = Power::Down;
            state.since = SystemTime::now();
            state.down_at_boot = state.boot_count;
            true
        })
    }

    /// Counts a new boot and returns its number.
    pub(crate) fn count_boot(&self) -> u64 {
        let mut count = 0;
        self.power.send_modify(|state| {
            state.boot_count += 1;
            count = state.boot_count;
        });
        count
    }

    /// Runs `f` with the instance's processes locked; spawning inside `f` keeps a shutdown from missing a child.
    pub(crate) fn with_processes<T>(&self, f: impl FnOnce(&mut Processes) -> T) -> T {
        let mut guard = self.processes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Kills everything running on the instance right now (a power cut), returning the backend to reap.
    pub(crate) fn kill_processes(&self) -> Option<Child> {
        self.with_processes(|procs| {
            for pgid in procs.scripts.drain() {
                kill_process_group(pgid);
            }
            let mut backend = procs.backend.take();
            if let Some(child) = backend.as_mut() {
                // Only fails when the child is already reaped, which is what we want anyway.
                let _ = child.start_kill();
            }
            backend
        })
    }

    /// PID of the running backend, if any.
    pub(crate) fn backend_pid(&self) -> Option<u32> {
        self.with_processes(|procs| procs.backend.as_ref().and_then(Child::id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_look_like_ec2_and_are_stable() {
        assert_eq!(instance_id(0), "i-0123456789abcdef0");
        assert_eq!(instance_id(1), "i-0123456789abcdef1");
        assert_eq!(instance_id(16), "i-0123456789abcdf00");
        for index in [0, 7, 199] {
            let id = instance_id(index);
            assert_eq!(id.len(), 19, "{id}");
            assert!(id[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn power_off_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let instance = Instance::create(0, 1, dir.path()).unwrap();
        assert!(!instance.power_off_if_running(), "a fresh instance is down");
        instance.set_power(Power::Running);
        assert!(instance.power_off_if_running());
        assert!(!instance.power_off_if_running());
        assert_eq!(instance.count_boot(), 1);
        assert_eq!(instance.power().boot_count, 1);
    }
}
