//! Per-plan exponential backoff after failed reconciles: one plan whose AWS calls keep
//! failing slows down on its own, without slowing the others. A plan with an instance out
//! of rotation whose apiserver calls fail retries on a short leash instead
//! ([`ErrorBackoff::failed_short`]): the apiserver coming back should not find it asleep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First wait after a failure.
const BASE: Duration = Duration::from_secs(5);
/// Longest wait: long enough not to hammer a broken API, short enough that a fixed IAM
/// policy is picked up within minutes.
const CAP: Duration = Duration::from_secs(300);

/// First wait of the short retry.
const SHORT_BASE: Duration = Duration::from_secs(1);
/// First wait after a failure that waiting does not fix (credentials, IAM, region, a missing
/// target group): nothing changes on its own, so asking AWS every few seconds only fills
/// the logs and CloudTrail.
const PERMANENT_BASE: Duration = Duration::from_secs(60);
/// Longest wait after such failures: a fixed setup is picked up within this long, without
/// touching the plan.
const PERMANENT_CAP: Duration = Duration::from_secs(600);

/// Consecutive failures per plan (`namespace/name`).
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Counts a failure of `plan` and returns the wait before its next try: 5 s, 10 s,
    /// 20 s, ... up to 5 min.
    pub fn failed(&self, plan: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(plan.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    /// Counts a failure of `plan` and returns a short wait: 1 s, 2 s, 4 s, ... up to `cap`
    /// (the poll interval), for failures that should not keep an instance out of rotation
    /// longer than the outage that caused them.
    pub fn failed_short(&self, plan: &str, cap: Duration) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(plan.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        short_delay(*count, cap)
    }

    /// Counts a failure of `plan` that waiting does not fix and returns the wait before its
    /// next try: 1 min, 2 min, 4 min, 8 min, then 10 min.
    pub fn failed_permanently(&self, plan: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(plan.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let doublings = count.saturating_sub(1).min(16);
        PERMANENT_BASE.saturating_mul(1u32 << doublings).min(PERMANENT_CAP)
    }

    /// How many times in a row `plan` failed so far (0 after a success).
    pub fn failures(&self, plan: &str) -> u32 {
        let failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.get(plan).copied().unwrap_or(0)
    }

    /// Forgets the failures of `plan` after a successful reconcile.
    pub fn succeeded(&self, plan: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(plan);
    }
}

/// The wait after `failures` consecutive failures.
fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1u32 << doublings).min(CAP)
}

/// The short wait after `failures` consecutive failures, at most `cap` (never zero).
fn short_delay(failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    SHORT_BASE
        .saturating_mul(1u32 << doublings)
        .min(cap)
        .max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let backoff = ErrorBackoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.failed("ns/a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.failed("ns/b"), BASE, "plans back off independently");
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failed("ns/a"), BASE);
    }

    #[test]
    fn never_overflows() {
        assert_eq!(delay(u32::MAX), CAP);
        assert_eq!(short_delay(u32::MAX, Duration::from_secs(5)), Duration::from_secs(5));
    }

    #[test]
    fn the_short_retry_stays_within_the_cap_and_shares_the_count() {
        let backoff = ErrorBackoff::default();
        let cap = Duration::from_secs(5);
        let waits: Vec<u64> = (0..6).map(|_| backoff.failed_short("ns/a", cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5, 5]);
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failed_short("ns/a", cap), SHORT_BASE);
        assert_eq!(
            short_delay(1, Duration::ZERO),
            Duration::from_millis(100),
            "never a busy loop"
        );
    }

    #[test]
    fn permanent_failures_wait_long_and_count_with_the_others() {
        let backoff = ErrorBackoff::default();
        assert_eq!(backoff.failures("ns/a"), 0);
        let waits: Vec<u64> = (0..6).map(|_| backoff.failed_permanently("ns/a").as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff.failures("ns/a"), 6);
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failures("ns/a"), 0);
    }
}
