//! Per-plan exponential backoff after failed reconciles: one plan whose AWS calls keep
//! failing slows down on its own, without slowing the others.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First wait after a failure.
const BASE: Duration = Duration::from_secs(5);
/// Longest wait: long enough not to hammer a broken API, short enough that a fixed IAM
/// policy is picked up within minutes.
const CAP: Duration = Duration::from_secs(300);

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
    }
}
