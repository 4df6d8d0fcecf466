//! Fault switches: what tests (or `POST /_sandbox/faults`) can make go wrong while the sandbox runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Share (0.0..=1.0) of AWS calls answered with a throttling error instead of being carried out. Each call is
    /// drawn at random (a fixed pattern would fall into step with a client's own rhythm and always hit the same
    /// call), but never more than `2 / rate - 1` calls in a row go through (3 at 0.5), so that any longer stretch
    /// of calls a test looks at is certain to have met throttling.
    pub throttle_rate: f64,
    /// Write operations (`SendCommand`, `DeregisterTargets`...) whose answer is lost after the sandbox carried the
    /// call out: the work happens, the client never hears of it.
    pub lose_answers: BTreeMap<String, LostAnswer>,
    /// API operations (e.g. `DeregisterTargets`, `SendCommand`) that IAM does not allow: answered with AWS's
    /// AccessDenied answer (Query XML, HTTP 403, for ELBv2; JSON `AccessDeniedException`, HTTP 400, for SSM) and
    /// not carried out.
    pub deny_operations: BTreeSet<String>,
}

/// How the answer of a write that was carried out goes missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostAnswerMode {
    /// The connection is reset (TCP RST) instead of answering, as a NAT gateway or proxy that dropped it would.
    Reset,
    /// AWS's front end answers `500 InternalFailure` although the back end acted.
    Error500,
    /// No answer for `hold_ms` (past the client's attempt timeout), then the real one, to whoever still listens.
    Hold,
}

/// Default of [`LostAnswer::hold_ms`]: longer than the SDK's default 30 s attempt limit.
pub const DEFAULT_HOLD_MS: u64 = 45_000;

/// Which calls of one write operation lose their answer, and how. Exactly one of `count` and `rate` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostAnswer {
    /// How the answer is lost.
    pub mode: LostAnswerMode,
    /// Lose the answers of the next `count` calls; the rule is removed once they are used up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Lose this share (0.0..=1.0) of the calls, until switched off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// With `hold`: how long the answer is held, in milliseconds (default [`DEFAULT_HOLD_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

impl LostAnswer {
    /// The answers of the next `count` calls are lost this way.
    pub fn next(mode: LostAnswerMode, count: u32) -> Self {
        Self {
            mode,
            count: Some(count),
            rate: None,
            hold_ms: None,
        }
    }

    /// This share of the calls loses its answer this way.
    pub fn share(mode: LostAnswerMode, rate: f64) -> Self {
        Self {
            mode,
            count: None,
            rate: Some(rate),
            hold_ms: None,
        }
    }

    /// Holds the answer this long (for [`LostAnswerMode::Hold`]).
    pub fn holding(mut self, hold: Duration) -> Self {
        self.hold_ms = Some(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX));
        self
    }

    fn check(&self, operation: &str) -> Result<(), FaultError> {
        if !LOSABLE_WRITES.contains(&operation) && !LOSABLE_AUTOSCALING_WRITES.contains(&operation) {
            return Err(FaultError::NotAWrite(operation.to_owned()));
        }
        match (self.count, self.rate) {
            (Some(_), None) => Ok(()),
            (None, Some(rate)) if (0.0..=1.0).contains(&rate) => Ok(()),
            (None, Some(rate)) => Err(FaultError::BadLossRate(rate)),
            _ => Err(FaultError::CountOrRate(operation.to_owned())),
        }
    }
}

/// The write operations the sandbox carries out, each of which can lose its answer.
pub const LOSABLE_WRITES: &[&str] = &["DeregisterTargets", "RegisterTargets", "SendCommand", "CancelCommand"];

/// The Auto Scaling writes the sandbox carries out, each of which can lose its answer too (pitstop does not call
/// them yet, so `make chaos` leaves them out).
pub const LOSABLE_AUTOSCALING_WRITES: &[&str] = &[
    "EnterStandby",
    "ExitStandby",
    "UpdateAutoScalingGroup",
    "SuspendProcesses",
    "ResumeProcesses",
];

/// A lost answer drawn for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLoss {
    /// How.
    pub mode: LostAnswerMode,
    /// For [`LostAnswerMode::Hold`]: how long.
    pub hold: Duration,
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
    /// Only the writes the sandbox carries out can lose their answer.
    #[error(
        "{0:?} is not a write the sandbox carries out; answers can be lost for {LOSABLE_WRITES:?} and {LOSABLE_AUTOSCALING_WRITES:?}"
    )]
    NotAWrite(String),
    /// A lost-answer rule needs exactly one of `count` and `rate`.
    #[error("the lost-answer rule for {0} needs exactly one of count and rate")]
    CountOrRate(String),
    /// The share of lost answers is not a number within 0.0..=1.0.
    #[error("lost-answer rate {0} is outside 0.0..=1.0")]
    BadLossRate(f64),
}

/// Handle on the fault switches of one sandbox; clones share the same switches.
#[derive(Debug, Clone)]
pub struct Faults {
    known: Arc<BTreeSet<String>>,
    settings: Arc<watch::Sender<FaultSettings>>,
    /// Calls let through in a row since the last throttled one (see [`FaultSettings::throttle_rate`]).
    passed_in_a_row: Arc<AtomicU64>,
}

impl Faults {
    /// Switches for a fleet made of `instance_ids`, all off.
    pub(crate) fn new(instance_ids: impl IntoIterator<Item = String>) -> Self {
        let (settings, _) = watch::channel(FaultSettings::default());
        Self {
            known: Arc::new(instance_ids.into_iter().collect()),
            settings: Arc::new(settings),
            passed_in_a_row: Arc::new(AtomicU64::new(0)),
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
        self.passed_in_a_row.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Makes calls of the write `operation` lose their answer after being carried out (`Some`), or answer
    /// normally (`None`).
    pub fn set_lost_answer(&self, operation: &str, rule: Option<LostAnswer>) -> Result<(), FaultError> {
        if let Some(rule) = &rule {
            rule.check(operation)?;
        }
        self.settings.send_modify(|s| match rule {
            Some(rule) => {
                s.lose_answers.insert(operation.to_owned(), rule);
            }
            None => {
                s.lose_answers.remove(operation);
            }
        });
        Ok(())
    }

    /// Draws whether this call of `operation`, just carried out, loses its answer; a `count` rule is used up by it.
    pub(crate) fn draw_lost_answer(&self, operation: &str) -> Option<AnswerLoss> {
        let mut drawn = None;
        self.settings.send_if_modified(|s| {
            let Some(rule) = s.lose_answers.get_mut(operation) else {
                return false;
            };
            let hold = Duration::from_millis(rule.hold_ms.unwrap_or(DEFAULT_HOLD_MS));
            let loss = AnswerLoss { mode: rule.mode, hold };
            match (rule.count.as_mut(), rule.rate) {
                (Some(count), _) => {
                    if *count > 0 {
                        *count -= 1;
                        drawn = Some(loss);
                    }
                    if *count == 0 {
                        s.lose_answers.remove(operation);
                    }
                    true
                }
                (None, Some(rate)) => {
                    if rate > 0.0 && fastrand::f64() < rate {
                        drawn = Some(loss);
                    }
                    false
                }
                (None, None) => false,
            }
        });
        drawn
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
        for (operation, rule) in &settings.lose_answers {
            rule.check(operation)?;
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
        self.passed_in_a_row.store(0, Ordering::SeqCst);
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

    /// Draws whether this AWS call is throttled (see [`FaultSettings::throttle_rate`]).
    pub(crate) fn should_throttle(&self) -> bool {
        let rate = self.settings.borrow().throttle_rate;
        if rate <= 0.0 {
            return false;
        }
        let longest_gap = (2.0 / rate).ceil() as u64 - 1;
        let passed = self.passed_in_a_row.load(Ordering::SeqCst);
        let throttled = passed >= longest_gap || fastrand::f64() < rate;
        if throttled {
            self.passed_in_a_row.store(0, Ordering::SeqCst);
        } else {
            self.passed_in_a_row.fetch_add(1, Ordering::SeqCst);
        }
        throttled
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
    fn throttling_never_lets_more_than_the_longest_gap_through_in_a_row() {
        let f = faults();
        for (rate, longest_gap) in [(0.5, 3), (0.3, 6)] {
            f.set_throttle_rate(rate).unwrap();
            let draws: Vec<bool> = (0..10_000).map(|_| f.should_throttle()).collect();
            let gaps = draws.split(|throttled| *throttled);
            assert!(gaps.clone().all(|gap| gap.len() <= longest_gap), "rate {rate}");
            assert!(
                gaps.clone().any(|gap| gap.len() == longest_gap),
                "rate {rate}: random, not a pattern"
            );
            assert!(
                draws.windows(4).any(|w| w == [false, true, true, false]),
                "rate {rate}: random, not a pattern"
            );
        }
    }

    #[test]
    fn lost_answers_are_for_writes_only_and_counted_rules_run_out() {
        let f = faults();
        assert_eq!(
            f.set_lost_answer("DescribeTargetHealth", Some(LostAnswer::next(LostAnswerMode::Reset, 1))),
            Err(FaultError::NotAWrite("DescribeTargetHealth".into()))
        );
        let neither = LostAnswer {
            count: None,
            ..LostAnswer::next(LostAnswerMode::Error500, 1)
        };
        assert_eq!(
            f.set_lost_answer("SendCommand", Some(neither)),
            Err(FaultError::CountOrRate("SendCommand".into()))
        );
        assert_eq!(
            f.set_lost_answer("SendCommand", Some(LostAnswer::share(LostAnswerMode::Hold, 1.5))),
            Err(FaultError::BadLossRate(1.5))
        );
        f.set_lost_answer(
            "SendCommand",
            Some(LostAnswer::next(LostAnswerMode::Hold, 2).holding(Duration::from_millis(1500))),
        )
        .unwrap();
        let drawn: Vec<_> = (0..4).map(|_| f.draw_lost_answer("SendCommand")).collect();
        let hold = Some(AnswerLoss {
            mode: LostAnswerMode::Hold,
            hold: Duration::from_millis(1500),
        });
        assert_eq!(drawn, vec![hold, hold, None, None]);
        assert!(f.settings().lose_answers.is_empty(), "a used-up rule is removed");
        assert_eq!(f.draw_lost_answer("RegisterTargets"), None);
    }

    #[test]
    fn lost_answer_shares_are_deterministic_at_the_extremes() {
        let f = faults();
        f.set_lost_answer("RegisterTargets", Some(LostAnswer::share(LostAnswerMode::Reset, 1.0)))
            .unwrap();
        assert!((0..50).all(|_| f.draw_lost_answer("RegisterTargets").is_some()));
        f.set_lost_answer("RegisterTargets", Some(LostAnswer::share(LostAnswerMode::Reset, 0.0)))
            .unwrap();
        assert!((0..50).all(|_| f.draw_lost_answer("RegisterTargets").is_none()));
        let json = r#"{"lose_answers":{"SendCommand":{"mode":"error500","count":1},"GetCommandInvocation":{"mode":"reset","count":1}}}"#;
        assert_eq!(
            f.replace(serde_json::from_str(json).unwrap()),
            Err(FaultError::NotAWrite("GetCommandInvocation".into()))
        );
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
