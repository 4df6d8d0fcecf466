//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly
//! one drives the plans and the others stand by.
//!
//! Written here rather than taken from a crate because none supports kube 5 yet
//! (`kube-leader-election` 0.44 needs kube 4, `kubert` 0.25 needs kube 1.1). The semantics
//! are client-go's: take the lease when it is absent, released or expired; renew it every
//! retry period with optimistic concurrency; step down at once when a renew has not
//! succeeded within the renew deadline; give it up on shutdown.
//!
//! [`decide`] holds the pure rules, [`LeaderElector`] the loop that talks to the apiserver.

mod decide;
mod elector;

use std::time::Duration;

pub use decide::{LeaseDecision, decide, duration_seconds, held_until, leading_spec, released_spec};
pub use elector::{LeaderElector, LeaderHandle, Leadership, Round, is_conflict};

/// Where the lease lives, who we are, and its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// Namespace of the Lease object (the controller's own namespace).
    pub namespace: String,
    /// Who we are, written as `holderIdentity`: the pod name, unique among the replicas.
    pub holder_identity: String,
    /// How long a lease stays valid for others after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops believing it leads. Shorter
    /// than `lease_duration`: the gap is the margin that keeps two leaders apart despite
    /// clock skew and slow requests.
    pub renew_deadline: Duration,
    /// Time between tries, both for renewing and for waiting to acquire.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: a 15 s lease, a 10 s renew deadline, a try every 2 s.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, holder_identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            holder_identity: holder_identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the timing for the orderings that make election safe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Empty("name"));
        }
        if self.namespace.is_empty() {
            return Err(ConfigError::Empty("namespace"));
        }
        if self.holder_identity.is_empty() {
            // An empty holder reads as "free" to everyone, us included.
            return Err(ConfigError::Empty("holder_identity"));
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::ZeroRetryPeriod);
        }
        if self.renew_deadline <= self.retry_period {
            return Err(ConfigError::Timing("renew_deadline must be longer than retry_period"));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::Timing("lease_duration must be longer than renew_deadline"));
        }
        Ok(())
    }
}

/// A [`LeaseConfig`] that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required string is empty.
    #[error("leader election: {0} must not be empty")]
    Empty(&'static str),
    /// The retry period is zero, which would spin.
    #[error("leader election: retry_period must be positive")]
    ZeroRetryPeriod,
    /// The durations are in the wrong order.
    #[error("leader election: {0}")]
    Timing(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(LeaseConfig::new("pitstop", "ns", "pod-a").validate(), Ok(()));
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = LeaseConfig::new("pitstop", "ns", "pod-a");
        let cases = [
            LeaseConfig {
                name: String::new(),
                ..base.clone()
            },
            LeaseConfig {
                namespace: String::new(),
                ..base.clone()
            },
            LeaseConfig {
                holder_identity: String::new(),
                ..base.clone()
            },
            LeaseConfig {
                retry_period: Duration::ZERO,
                ..base.clone()
            },
            LeaseConfig {
                renew_deadline: Duration::from_secs(2),
                ..base.clone()
            },
            LeaseConfig {
                lease_duration: Duration::from_secs(10),
                ..base.clone()
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
