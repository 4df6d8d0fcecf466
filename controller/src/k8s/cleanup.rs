//! What deleting a plan must undo on AWS, worked out from its status alone (pure).
//!
//! The status is the controller's only memory, and it says which instances pitstop has
//! out of the target group (`outOfRotation`), out of which groups on which port
//! (`targetGroups`), and which commands it sent.

use crate::api::{
    InstanceAutoScaling, InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus, OnFailure,
};
use crate::aws::{CommandKind, CommandTag};
use crate::machine::{GroupTarget, groups_out, reason};

/// The clean-up of a deleted plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Instances to put back into their target groups, in the status's order.
    pub returns: Vec<Return>,
    /// Instances that stay out, and why.
    pub left_out: Vec<LeftOut>,
}

impl Cleanup {
    /// True when there is nothing to do: the plan can be released at once.
    pub fn is_empty(&self) -> bool {
        self.returns.is_empty() && self.left_out.is_empty()
    }
}

/// An instance to put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    /// The instance.
    pub instance_id: String,
    /// Every target group it was taken out of, on the port it was registered on there.
    pub groups: Vec<GroupTarget>,
    /// A command that may still be running on it, to cancel first: an instance must not
    /// get traffic while a reboot may still come.
    pub cancel: Option<RunningCommand>,
    /// What pitstop did to its Auto Scaling group (`spec.autoScaling`), to undo as well
    /// (see [`super::auto_scaling_undo`]).
    pub auto_scaling: Option<InstanceAutoScaling>,
}

/// A command that may still be running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningCommand {
    /// Which command.
    pub kind: CommandKind,
    /// Its ID, when recorded. None: it may have been sent just before a crash, so it is
    /// looked up by `comment`.
    pub command_id: Option<String>,
    /// Its tag (SSM `Comment`).
    pub comment: String,
}

/// An instance out of the target group that the clean-up leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The instance.
    pub instance_id: String,
    /// Why.
    pub why: LeftOutReason,
}

/// Why an instance stays out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftOutReason {
    /// It failed and the plan says `onFailure: LeaveOut`: the user asked for it to stay
    /// out for a human to look at.
    OnFailureLeaveOut,
    /// AWS already refused to register it for good (e.g. it was terminated).
    RegisterRejected,
}

/// Works out the clean-up of a plan from its status. A plan that never started, or has
/// nothing out of rotation, needs none.
pub fn cleanup_for(uid: &str, spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> Cleanup {
    let mut cleanup = Cleanup::default();
    for instance in status.map(|s| s.instances.as_slice()).unwrap_or_default() {
        // Draining and Rebooting always mean out of rotation (the write-ahead status sets
        // the flag with them); the flag covers the rest.
        let out = instance.out_of_rotation
            || matches!(instance.phase, InstancePhase::Draining | InstancePhase::Rebooting)
            || super::auto_scaling_undo::pending(instance);
        if !out {
            continue;
        }
        if instance.phase == InstancePhase::Failed {
            if spec.on_failure == OnFailure::LeaveOut {
                cleanup.left_out.push(LeftOut {
                    instance_id: instance.instance_id.clone(),
                    why: LeftOutReason::OnFailureLeaveOut,
                });
                continue;
            }
            if instance.failure_reason.as_deref() == Some(reason::REGISTER_REJECTED) {
                cleanup.left_out.push(LeftOut {
                    instance_id: instance.instance_id.clone(),
                    why: LeftOutReason::RegisterRejected,
                });
                continue;
            }
        }
        cleanup.returns.push(Return {
            instance_id: instance.instance_id.clone(),
            groups: groups_out(spec, instance),
            cancel: running_command(uid, spec, instance),
            auto_scaling: instance.auto_scaling.clone(),
        });
    }
    cleanup
}

fn running_command(uid: &str, spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> Option<RunningCommand> {
    let command = |kind: CommandKind, command_id: &Option<String>| RunningCommand {
        kind,
        command_id: command_id.clone(),
        comment: CommandTag {
            plan_uid: uid.to_owned(),
            kind,
            attempt: instance.attempt.max(1),
        }
        .comment(),
    };
    match instance.phase {
        InstancePhase::Rebooting => Some(command(CommandKind::Maintenance, &instance.maintenance_command_id)),
        InstancePhase::Verifying if spec.verify.is_some() && instance.registered_at.is_none() => {
            Some(command(CommandKind::Verify, &instance.verify_command_id))
        }
        // A failure can come from a timeout or from the spec turning invalid while the
        // command still ran; cancelling one that has finished is harmless.
        InstancePhase::Failed => match (&instance.verify_command_id, &instance.maintenance_command_id) {
            (Some(_), _) => Some(command(CommandKind::Verify, &instance.verify_command_id)),
            (None, Some(_)) => Some(command(CommandKind::Maintenance, &instance.maintenance_command_id)),
            (None, None) => None,
        },
        InstancePhase::Pending
        | InstancePhase::Draining
        | InstancePhase::Verifying
        | InstancePhase::Registered
        | InstancePhase::Skipped => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CommandSpec;

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

    fn spec(on_failure: OnFailure) -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: ARN.to_owned(),
            region: None,
            instances: vec!["i-0000000a".into(), "i-0000000b".into(), "i-0000000c".into()],
            maintenance: None,
            verify: None,
            preflight: Default::default(),
            timeouts: Default::default(),
            on_failure,
            max_failures: 0,
            ..Default::default()
        }
    }

    fn instance(id: &str, phase: InstancePhase, out: bool) -> InstanceStatus {
        InstanceStatus {
            instance_id: id.to_owned(),
            phase,
            attempt: 1,
            out_of_rotation: out,
            port: Some(8080),
            ..InstanceStatus::default()
        }
    }

    fn status(instances: Vec<InstanceStatus>) -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            instances,
            ..MaintenancePlanStatus::default()
        }
    }

    #[test]
    fn a_plan_that_never_started_needs_nothing() {
        assert!(cleanup_for("uid", &spec(OnFailure::Register), None).is_empty());
        let pending = status(vec![instance("i-0000000a", InstancePhase::Pending, false)]);
        assert!(cleanup_for("uid", &spec(OnFailure::Register), Some(&pending)).is_empty());
    }

    #[test]
    fn finished_instances_need_nothing() {
        let done = status(vec![
            instance("i-0000000a", InstancePhase::Registered, false),
            instance("i-0000000b", InstancePhase::Failed, false),
            // Registered again, waiting for healthy: already back in the group.
            instance("i-0000000c", InstancePhase::Verifying, false),
        ]);
        assert!(cleanup_for("uid", &spec(OnFailure::Register), Some(&done)).is_empty());
    }

    #[test]
    fn a_rebooting_instance_is_put_back_on_its_port_after_cancelling_its_command() {
        let mut rebooting = instance("i-0000000b", InstancePhase::Rebooting, true);
        rebooting.maintenance_command_id = Some("cmd-1".into());
        let cleanup = cleanup_for("uid", &spec(OnFailure::LeaveOut), Some(&status(vec![rebooting])));
        assert_eq!(
            cleanup.returns,
            [Return {
                instance_id: "i-0000000b".into(),
                groups: vec![GroupTarget {
                    target_group_arn: ARN.into(),
                    target: crate::aws::Target {
                        instance_id: "i-0000000b".into(),
                        port: Some(8080)
                    },
                }],
                cancel: Some(RunningCommand {
                    kind: CommandKind::Maintenance,
                    command_id: Some("cmd-1".into()),
                    comment: "pitstop/uid/maintenance/1".into(),
                }),
                auto_scaling: None,
            }]
        );
        assert!(cleanup.left_out.is_empty(), "an instance in flight always goes back");
    }

    #[test]
    fn an_unrecorded_command_is_looked_up_by_its_tag() {
        let mut s = spec(OnFailure::Register);
        s.verify = Some(CommandSpec {
            document_name: "AWS-RunShellScript".into(),
            document_version: None,
            parameters: Default::default(),
            timeout_seconds: None,
        });
        let mut verifying = instance("i-0000000a", InstancePhase::Verifying, true);
        verifying.attempt = 2;
        let cleanup = cleanup_for("uid", &s, Some(&status(vec![verifying])));
        let cancel = cleanup.returns[0].cancel.clone().expect("the verify command may run");
        assert_eq!(cancel.kind, CommandKind::Verify);
        assert_eq!(cancel.command_id, None);
        assert_eq!(cancel.comment, "pitstop/uid/verify/2");
    }

    #[test]
    fn an_instance_out_of_several_groups_goes_back_into_each_on_its_port() {
        const TLS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/tls/fedcba9876543210";
        let mut s = spec(OnFailure::Register);
        s.target_group_arn = String::new();
        s.target_group_arns = vec![ARN.into(), TLS.into()];
        let mut draining = instance("i-0000000a", InstancePhase::Draining, true);
        draining.target_groups = vec![
            crate::api::TargetGroupRegistration {
                target_group_arn: ARN.into(),
                port: Some(8080),
            },
            crate::api::TargetGroupRegistration {
                target_group_arn: TLS.into(),
                port: Some(8443),
            },
        ];
        let cleanup = cleanup_for("uid", &s, Some(&status(vec![draining])));
        let back: Vec<_> = cleanup.returns[0]
            .groups
            .iter()
            .map(|g| (g.target_group_arn.as_str(), g.target.port))
            .collect();
        assert_eq!(back, [(ARN, Some(8080)), (TLS, Some(8443))]);
    }

    #[test]
    fn a_draining_instance_goes_back_even_if_the_flag_was_lost() {
        let cleanup = cleanup_for(
            "uid",
            &spec(OnFailure::Register),
            Some(&status(vec![instance("i-0000000a", InstancePhase::Draining, false)])),
        );
        assert_eq!(cleanup.returns.len(), 1);
        assert_eq!(cleanup.returns[0].cancel, None);
    }

    #[test]
    fn failed_instances_follow_on_failure() {
        let mut failed = instance("i-0000000a", InstancePhase::Failed, true);
        failed.maintenance_command_id = Some("cmd-1".into());
        let plan = status(vec![failed.clone()]);

        let register = cleanup_for("uid", &spec(OnFailure::Register), Some(&plan));
        assert_eq!(register.returns.len(), 1, "on the way back already: finish it");
        assert_eq!(
            register.returns[0]
                .cancel
                .as_ref()
                .and_then(|c| c.command_id.as_deref()),
            Some("cmd-1")
        );

        let leave_out = cleanup_for("uid", &spec(OnFailure::LeaveOut), Some(&plan));
        assert!(leave_out.returns.is_empty(), "the user asked for it to stay out");
        assert_eq!(
            leave_out.left_out,
            [LeftOut {
                instance_id: "i-0000000a".into(),
                why: LeftOutReason::OnFailureLeaveOut
            }]
        );

        failed.failure_reason = Some(reason::REGISTER_REJECTED.into());
        let rejected = cleanup_for("uid", &spec(OnFailure::Register), Some(&status(vec![failed])));
        assert!(rejected.returns.is_empty());
        assert_eq!(rejected.left_out[0].why, LeftOutReason::RegisterRejected);
    }
}
