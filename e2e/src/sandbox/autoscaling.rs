//! The world's Auto Scaling group: every launched instance of the sandbox belongs to one group, whose sizes and
//! members' lifecycle states follow what the fleet does (a launch adds an `InService` member, a termination takes
//! the member through `Terminating` and out of the group). The wire (`autoscaling_api`) reads it.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lifecycle state of a group member, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Serving.
    InService,
    /// Being terminated: deregistered from the group's target groups, draining.
    Terminating,
}

impl Lifecycle {
    /// The API's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::Terminating => "Terminating",
        }
    }
}

/// The sizes and per-member states the group keeps itself; which instances are members comes from the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSizes {
    /// MinSize.
    pub(crate) min_size: usize,
    /// MaxSize.
    pub(crate) max_size: usize,
    /// DesiredCapacity.
    pub(crate) desired_capacity: usize,
}

#[derive(Debug)]
struct GroupState {
    sizes: GroupSizes,
    /// Members on their way out (see [`Lifecycle::Terminating`]).
    terminating: BTreeSet<String>,
}

/// The sandbox's Auto Scaling group.
#[derive(Debug)]
pub(crate) struct AutoScalingGroup {
    /// Its name.
    pub(crate) name: String,
    /// Its ARN, as AWS writes them.
    pub(crate) arn: String,
    state: Mutex<GroupState>,
}

impl AutoScalingGroup {
    /// A group named `name` in `region` holding `instances` members, which may grow by `spares`.
    pub(crate) fn new(name: &str, region: &str, account: &str, instances: usize, spares: usize) -> Self {
        Self {
            name: name.to_owned(),
            arn: format!(
                "arn:aws:autoscaling:{region}:{account}:autoScalingGroup:{}:autoScalingGroupName/{name}",
                uuid::Uuid::new_v4()
            ),
            state: Mutex::new(GroupState {
                sizes: GroupSizes {
                    min_size: instances,
                    max_size: instances + spares,
                    desired_capacity: instances,
                },
                terminating: BTreeSet::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Every change is a single assignment: a panic elsewhere cannot leave the state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// MinSize, MaxSize and DesiredCapacity now.
    pub(crate) fn sizes(&self) -> GroupSizes {
        self.lock().sizes.clone()
    }

    /// The lifecycle state of member `id` (the caller knows it is a member).
    pub(crate) fn lifecycle(&self, id: &str) -> Lifecycle {
        if self.lock().terminating.contains(id) {
            Lifecycle::Terminating
        } else {
            Lifecycle::InService
        }
    }

    /// Member `id` starts terminating. `decrement`: the group wants one instance less (as
    /// TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity); otherwise a replacement follows.
    pub(crate) fn start_terminating(&self, id: &str, decrement: bool) {
        let mut state = self.lock();
        state.terminating.insert(id.to_owned());
        if decrement {
            state.sizes.desired_capacity = state.sizes.desired_capacity.saturating_sub(1);
            state.sizes.min_size = state.sizes.min_size.min(state.sizes.desired_capacity);
        }
    }

    /// Member `id` is gone.
    pub(crate) fn finish_terminating(&self, id: &str) {
        self.lock().terminating.remove(id);
    }

    /// A member was launched. `increment`: to grow the group (not to replace one), so the desired capacity rises.
    pub(crate) fn launched(&self, increment: bool) {
        let mut state = self.lock();
        if increment {
            state.sizes.desired_capacity += 1;
            state.sizes.max_size = state.sizes.max_size.max(state.sizes.desired_capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_terminations_and_launches() {
        let group = AutoScalingGroup::new("web", "us-east-1", "123456789012", 3, 1);
        assert!(group.arn.ends_with(":autoScalingGroupName/web"), "{}", group.arn);
        let sizes = |min, max, desired| GroupSizes {
            min_size: min,
            max_size: max,
            desired_capacity: desired,
        };
        assert_eq!(group.sizes(), sizes(3, 4, 3));
        group.start_terminating("i-a", false);
        assert_eq!(group.lifecycle("i-a"), Lifecycle::Terminating);
        assert_eq!(group.lifecycle("i-b"), Lifecycle::InService);
        group.finish_terminating("i-a");
        group.launched(false);
        assert_eq!(group.sizes(), sizes(3, 4, 3), "a replacement keeps the sizes");
        group.start_terminating("i-b", true);
        group.finish_terminating("i-b");
        assert_eq!(group.sizes(), sizes(2, 4, 2), "a plain termination shrinks the group");
        group.launched(true);
        assert_eq!(group.sizes(), sizes(2, 4, 3));
    }
}
