//! When a plan needs its target group's turn, the lock that keeps one instance out of a
//! target group at a time across plans (a Lease per target group in the controller).
//!
//! The turn is taken before an instance is deregistered and kept while it is out. A plan
//! that waits at a preflight gate for its next instance keeps it too: otherwise another
//! plan could take an instance out meanwhile, and the waiting plan's gate would count that
//! plan's absence against its own timeout. Between instances (settling, outside a window,
//! suspended, finished) the turn is given back, and a plan that waits for the group goes
//! before the plan that gave it back ([`super::TurnQueue`]), so plans on one group take turns
//! instance by instance.

use jiff::Timestamp;

use crate::api::schedule::window_state;
use crate::api::{InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus};

use super::decide::settling_until;
use super::observed::{in_flight, wants_at};

/// Whether this round may take an instance out of the target group, so that the turn has
/// to be asked for first: nothing is out, the next instance is due (not a dry run, inside
/// the window if there is a schedule, past `settleSeconds`).
pub fn needs_turn(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>, now: Timestamp) -> bool {
    let idle = status.and_then(|s| in_flight(spec, s)).is_none();
    idle && !spec.dry_run && wants_at(spec, status, now).instance_id.is_some()
}

/// Whether the time allows a next instance to start: inside the schedule's window (if the
/// plan has one) and past `settleSeconds` after the last one came back.
pub(crate) fn may_start_now(
    spec: &MaintenancePlanSpec,
    status: Option<&MaintenancePlanStatus>,
    now: Timestamp,
) -> bool {
    if let Some(schedule) = &spec.schedule
        && !window_state(schedule, now).is_ok_and(|w| w.open.is_some())
    {
        return false;
    }
    let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
    settling_until(spec, instances).is_none_or(|until| until <= now)
}

/// Whether a plan in this state keeps the turn after its round: an instance is out (or on
/// its way back), or its next instance is waiting at a preflight gate.
pub fn holds_turn(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus, now: Timestamp) -> bool {
    if in_flight(spec, status).is_some() {
        return true;
    }
    let at_gate = status
        .instances
        .iter()
        .any(|i| i.phase == InstancePhase::Pending && i.waiting_since.is_some());
    at_gate && needs_turn(spec, Some(status), now)
}

/// What a round knows of its target groups' turn before it reads AWS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnView {
    /// Another plan (`namespace/name`) holds a group: no instance may be taken out.
    pub held_by: Option<String>,
    /// This plan holds the groups and another plan waits for one of them: the wave out
    /// (`maxUnavailable`) is not refilled as its instances come back, so the turn passes on
    /// once it is back.
    pub wanted: bool,
}

/// The instance message of a plan waiting for its turn; also how the conditions tell that
/// wait from the others.
pub const WAITING_FOR_TURN: &str = "waiting for target group held by";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InstanceStatus, PlanPhase, Schedule};

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

    fn spec() -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: ARN.to_owned(),
            instances: vec!["i-0000000000000000a".into(), "i-0000000000000000b".into()],
            ..MaintenancePlanSpec::default()
        }
    }

    fn at(time: &str) -> Timestamp {
        time.parse().expect("valid timestamp")
    }

    fn status(phases: [InstancePhase; 2]) -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            phase: PlanPhase::Running,
            instances: ["i-0000000000000000a", "i-0000000000000000b"]
                .into_iter()
                .zip(phases)
                .map(|(id, phase)| InstanceStatus {
                    instance_id: id.to_owned(),
                    phase,
                    out_of_rotation: phase != InstancePhase::Pending && phase != InstancePhase::Registered,
                    phase_since: Some(at("2026-11-22T22:00:00Z")),
                    ..InstanceStatus::default()
                })
                .collect(),
            ..MaintenancePlanStatus::default()
        }
    }

    #[test]
    fn a_new_plan_needs_the_turn_a_dry_run_never_does() {
        let now = at("2026-11-22T22:00:00Z");
        assert!(needs_turn(&spec(), None, now));
        let dry = MaintenancePlanSpec {
            dry_run: true,
            ..spec()
        };
        assert!(!needs_turn(&dry, None, now));
    }

    #[test]
    fn an_instance_out_holds_the_turn_and_asks_for_no_other() {
        let now = at("2026-11-22T22:00:00Z");
        let out = status([InstancePhase::Rebooting, InstancePhase::Pending]);
        assert!(!needs_turn(&spec(), Some(&out), now), "it has the turn already");
        assert!(holds_turn(&spec(), &out, now));
    }

    #[test]
    fn between_instances_the_turn_is_given_back_unless_waiting_at_a_gate() {
        let now = at("2026-11-22T22:00:05Z");
        let mut between = status([InstancePhase::Registered, InstancePhase::Pending]);
        assert!(needs_turn(&spec(), Some(&between), now));
        assert!(!holds_turn(&spec(), &between, now));
        between.instances[1].waiting_since = Some(now);
        assert!(holds_turn(&spec(), &between, now), "a gate wait keeps the group");
        let suspended = MaintenancePlanSpec {
            suspend: true,
            ..spec()
        };
        assert!(!holds_turn(&suspended, &between, now), "not once suspended");
    }

    #[test]
    fn settling_and_closed_windows_do_not_ask_for_the_turn() {
        let between = status([InstancePhase::Registered, InstancePhase::Pending]);
        let settling = MaintenancePlanSpec {
            settle_seconds: 60,
            ..spec()
        };
        assert!(!needs_turn(&settling, Some(&between), at("2026-11-22T22:00:30Z")));
        assert!(needs_turn(&settling, Some(&between), at("2026-11-22T22:01:00Z")));

        // Sundays 22:00 in London, for an hour; 2026-11-22 is a Sunday (GMT).
        let scheduled = MaintenancePlanSpec {
            schedule: Some(Schedule {
                cron: "0 22 * * 0".into(),
                time_zone: "Europe/London".into(),
                window_minutes: 60,
            }),
            ..spec()
        };
        assert!(needs_turn(&scheduled, Some(&between), at("2026-11-22T22:30:00Z")));
        assert!(!needs_turn(&scheduled, Some(&between), at("2026-11-22T23:00:00Z")));
    }
}
