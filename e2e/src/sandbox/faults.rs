//! Fault switches: what tests (or `POST /_sandbox/faults`) can make go wrong while the sandbox runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Every fault switch at once; also the JSON body of `GET`/`POST /_sandbox/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Instances that stay down after their next reboot (their agent reads `ConnectionLost`) until switched off.
    pub never_return: BTreeSet<String>,
    /// Instances whose health check fails from their next boot on, until switched off.
    pub unhealthy_after_boot: BTreeSet<String>,
    /// Instances on which every command fails with the given exit code, without running its script.
    pub command_failures: BTreeMap<String, i32>,
    /// Share (0.0..=1.0) of AWS calls answered with a throttling error instead of being carried out.
    pub throttle_rate: f64,
    /// API operations (e.g. `DeregisterTargets`, `SendCommand`) that IAM does not allow: answered with AWS's
    /// AccessDenied answer (Query XML, HTTP 403, for ELBv2; JSON `AccessDeniedException`, HTTP 400, for SSM) and
    /// not carried out.
    pub deny_operations: BTreeSet<String>,
}

/// A fault switch that cannot be set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// The instance is not part of the sandbox.
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    /// The throttling share is not a number within 0.0..=1.0.
    #[error("throttle rate {0} is outside 0.0..=1.0")]
    BadThrottleRate(f64),
    /// Exit code 0 means success and cannot make a command fail.
    #[error("a failing command needs a non-zero exit code")]
    ZeroExitCode,
}

/// Handle on the fault switches of one sandbox; clones share the same switches.
#[derive(Debug, Clone)]
pub struct Faults {
    known: Arc<BTreeSet<String>>,
    settings: Arc<watch::Sender<FaultSettings>>,
}

impl Faults {
    /// Switches for a fleet made of `instance_ids`, all off.
    pub(crate) fn new(instance_ids: impl IntoIterator<Item = String>) -> Self {
        let (settings, _) = watch::channel(FaultSettings::default());
        Self {
            known: Arc::new(instance_ids.into_iter().collect()),
            settings: Arc::new(settings),
        }
    }

    fn known(&self, id: &str) -> Result<(), FaultError> {
        if self.known.contains(id) {
            Ok(())
        } else {
            Err(FaultError::UnknownInstance(id.to_owned()))
        }
    }

    /// Makes `id` stay down after its next reboot (`true`), or lets it come back (`false`; if it is down for good
    /// now, it boots).
    pub fn set_never_return(&self, id: &str, on: bool) -> Result<(), FaultError> {
        self.known(id)?;
        self.settings.send_modify(|s| {
            if on {
                s.never_return.insert(id.to_owned());
            } else {
                s.never_return.remove(id);
            }
        });
        Ok(())
    }

    /// Makes `id`'s health check fail from its next boot on (`true`), or pass again right away (`false`).
    pub fn set_unhealthy_after_boot(&self, id: &str, on: bool) -> Result<(), FaultError> {
        self.known(id)?;
        self.settings.send_modify(|s| {
            if on {
                s.unhealthy_after_boot.insert(id.to_owned());
            } else {
                s.unhealthy_after_boot.remove(id);
            }
        });
        Ok(())
    }

    /// Makes every command on `id` fail with `exit_code` without running (`Some`), or run normally (`None`).
    pub fn set_command_failure(&self, id: &str, exit_code: Option<i32>) -> Result<(), FaultError> {
        self.known(id)?;
        if exit_code == Some(0) {
            return Err(FaultError::ZeroExitCode);
        }
        self.settings.send_modify(|s| match exit_code {
            Some(code) => {
                s.command_failures.insert(id.to_owned(), code);
            }
            None => {
                s.command_failures.remove(id);
            }
        });
        Ok(())
    }

    /// Answers the share `rate` (0.0..=1.0) of AWS calls with a throttling error.
    pub fn set_throttle_rate(&self, rate: f64) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(FaultError::BadThrottleRate(rate));
        }
        self.settings.send_modify(|s| s.throttle_rate = rate);
        Ok(())
    }

    /// Makes IAM deny `operation` (`true`), or allow it again (`false`).
    pub fn set_denied(&self, operation: &str, on: bool) {
        self.settings.send_modify(|s| {
            if on {
                s.deny_operations.insert(operation.to_owned());
            } else {
                s.deny_operations.remove(operation);
            }
        });
    }

    /// Replaces every switch at once, after checking all of them.
    pub fn replace(&self, settings: FaultSettings) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&settings.throttle_rate) {
            return Err(FaultError::BadThrottleRate(settings.throttle_rate));
        }
        let ids = settings
            .never_return
            .iter()
            .chain(&settings.unhealthy_after_boot)
            .chain(settings.command_failures.keys());
        for id in ids {
            self.known(id)?;
        }
        if settings.command_failures.values().any(|code| *code == 0) {
            return Err(FaultError::ZeroExitCode);
        }
        self.settings.send_replace(settings);
        Ok(())
    }

    /// Switches every fault off.
    pub fn clear(&self) {
        self.settings.send_replace(FaultSettings::default());
    }

    /// The current switches.
    pub fn settings(&self) -> FaultSettings {
        self.settings.borrow().clone()
    }

    /// A receiver that wakes on every change, for instances waiting to come back.
    pub(crate) fn subscribe(&self) -> watch::Receiver<FaultSettings> {
        self.settings.subscribe()
    }

    /// Whether `id` stays down after a reboot.
    pub(crate) fn never_returns(&self, id: &str) -> bool {
        self.settings.borrow().never_return.contains(id)
    }

    /// Whether `id` boots with a failing health check.
    pub(crate) fn boots_unhealthy(&self, id: &str) -> bool {
        self.settings.borrow().unhealthy_after_boot.contains(id)
    }

    /// The exit code commands on `id` fail with, if any.
    pub(crate) fn command_failure(&self, id: &str) -> Option<i32> {
        self.settings.borrow().command_failures.get(id).copied()
    }

    /// Whether IAM denies `operation`.
    pub(crate) fn denies(&self, operation: &str) -> bool {
        self.settings.borrow().deny_operations.contains(operation)
    }

    /// Draws whether this AWS call is throttled.
    pub(crate) fn should_throttle(&self) -> bool {
        let rate = self.settings.borrow().throttle_rate;
        rate > 0.0 && fastrand::f64() < rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults::new(["i-a".to_owned(), "i-b".to_owned()])
    }

    #[test]
    fn switches_toggle_and_unknown_instances_are_refused() {
        let f = faults();
        f.set_never_return("i-a", true).unwrap();
        f.set_command_failure("i-b", Some(3)).unwrap();
        assert!(f.never_returns("i-a") && !f.never_returns("i-b"));
        assert_eq!(f.command_failure("i-b"), Some(3));
        f.set_never_return("i-a", false).unwrap();
        assert!(!f.never_returns("i-a"));
        assert_eq!(
            f.set_unhealthy_after_boot("i-zzz", true),
            Err(FaultError::UnknownInstance("i-zzz".into()))
        );
        assert_eq!(f.set_command_failure("i-a", Some(0)), Err(FaultError::ZeroExitCode));
        assert_eq!(f.set_throttle_rate(1.5), Err(FaultError::BadThrottleRate(1.5)));
    }

    #[test]
    fn throttling_extremes_are_deterministic() {
        let f = faults();
        assert!(!(0..100).any(|_| f.should_throttle()));
        f.set_throttle_rate(1.0).unwrap();
        assert!((0..100).all(|_| f.should_throttle()));
        f.clear();
        assert_eq!(f.settings(), FaultSettings::default());
    }

    #[test]
    fn denied_operations_toggle_and_come_from_json() {
        let f = faults();
        f.set_denied("DeregisterTargets", true);
        assert!(f.denies("DeregisterTargets") && !f.denies("RegisterTargets"));
        f.set_denied("DeregisterTargets", false);
        assert!(!f.denies("DeregisterTargets"));
        f.replace(serde_json::from_str(r#"{"deny_operations":["SendCommand"]}"#).unwrap())
            .unwrap();
        assert!(f.denies("SendCommand"));
    }

    #[test]
    fn replace_checks_everything_first() {
        let f = faults();
        let bad = FaultSettings {
            never_return: ["i-a".into(), "nope".into()].into(),
            ..Default::default()
        };
        assert!(f.replace(bad).is_err());
        assert!(!f.never_returns("i-a"), "a refused replace changes nothing");
        let json = r#"{"unhealthy_after_boot":["i-b"],"throttle_rate":0.25}"#;
        f.replace(serde_json::from_str(json).unwrap()).unwrap();
        assert!(f.boots_unhealthy("i-b"));
        assert_eq!(f.settings().throttle_rate, 0.25);
    }
}
