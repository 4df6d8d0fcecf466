//! `spec.gates.cloudWatchAlarms`: what the alarms' states say. Pure; the reads are
//! `aws::Alarms`.

use std::collections::BTreeMap;

use crate::api::CloudWatchAlarmsGate;
use crate::aws::AlarmState;

use super::GateReading;

/// The most alarms a gate may name: what SSM's `AlarmConfiguration` and CodeDeploy take.
pub const MAX_ALARMS: usize = 10;

/// What is wrong with the gate, one sentence each (the CRD's schema says the same; `pitstop
/// run` has only this).
pub fn problems(gate: &CloudWatchAlarmsGate) -> Vec<String> {
    let mut problems = Vec::new();
    if gate.names.is_empty() || gate.names.len() > MAX_ALARMS {
        problems.push(format!(
            "spec.gates.cloudWatchAlarms.names has {} names; 1 to {MAX_ALARMS} are allowed",
            gate.names.len()
        ));
    }
    for name in &gate.names {
        if name.trim().is_empty() || name.chars().count() > 255 {
            problems.push(format!(
                "spec.gates.cloudWatchAlarms.names: {name:?} is not an alarm name (1 to 255 characters)"
            ));
        }
    }
    problems
}

/// What the states of the gate's alarms say: `Holding` while any is in `ALARM` (naming
/// those), `Unreadable` when one of them does not exist, `Quiet` otherwise.
pub fn read(gate: &CloudWatchAlarmsGate, states: &BTreeMap<String, AlarmState>) -> GateReading {
    let missing: Vec<&str> = gate
        .names
        .iter()
        .filter(|name| !states.contains_key(name.as_str()))
        .map(String::as_str)
        .collect();
    let firing: Vec<String> = gate
        .names
        .iter()
        .filter_map(|name| states.get(name).filter(|s| s.in_alarm()).map(|s| (name, s)))
        .map(|(name, state)| match &state.reason {
            Some(reason) => format!("alarm {name} in ALARM ({})", shorten(reason)),
            None => format!("alarm {name} in ALARM"),
        })
        .collect();
    // An alarm in ALARM holds the plan whatever else is wrong: that is certain news.
    if !firing.is_empty() {
        return GateReading::Holding(firing.join("; "));
    }
    if !missing.is_empty() {
        return GateReading::Unreadable(format!("CloudWatch has no alarm named {}", missing.join(", ")));
    }
    GateReading::Quiet
}

/// An alarm's state reason can be long (it quotes the datapoints); a status message needs
/// its start.
fn shorten(reason: &str) -> String {
    const MAX: usize = 160;
    if reason.chars().count() <= MAX {
        return reason.to_owned();
    }
    let cut: String = reason.chars().take(MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(names: &[&str]) -> CloudWatchAlarmsGate {
        CloudWatchAlarmsGate {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..CloudWatchAlarmsGate::default()
        }
    }

    fn states(pairs: &[(&str, &str)]) -> BTreeMap<String, AlarmState> {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    (*name).to_owned(),
                    AlarmState {
                        value: (*value).to_owned(),
                        reason: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_alarm_holds_ok_and_insufficient_data_let_the_plan_go() {
        let gate = gate(&["5xx", "latency"]);
        assert_eq!(
            read(&gate, &states(&[("5xx", "OK"), ("latency", "INSUFFICIENT_DATA")])),
            GateReading::Quiet
        );
        assert_eq!(
            read(&gate, &states(&[("5xx", "ALARM"), ("latency", "OK")])),
            GateReading::Holding("alarm 5xx in ALARM".to_owned())
        );
    }

    #[test]
    fn a_missing_alarm_is_unreadable_unless_another_is_in_alarm() {
        let gate = gate(&["5xx", "typo"]);
        assert_eq!(
            read(&gate, &states(&[("5xx", "OK")])),
            GateReading::Unreadable("CloudWatch has no alarm named typo".to_owned())
        );
        assert!(matches!(
            read(&gate, &states(&[("5xx", "ALARM")])),
            GateReading::Holding(_)
        ));
    }

    #[test]
    fn the_reason_is_quoted_short() {
        let gate = gate(&["5xx"]);
        let mut states = states(&[("5xx", "ALARM")]);
        states.get_mut("5xx").expect("set").reason = Some("x".repeat(500));
        let GateReading::Holding(what) = read(&gate, &states) else {
            panic!("holds");
        };
        assert!(what.len() < 200, "{what}");
        assert!(what.ends_with("…)"), "{what}");
    }

    #[test]
    fn names_are_counted_and_checked() {
        assert_eq!(problems(&gate(&["a"])), Vec::<String>::new());
        assert_eq!(problems(&gate(&[])).len(), 1);
        let eleven: Vec<String> = (0..11).map(|i| format!("a{i}")).collect();
        let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
        assert_eq!(problems(&gate(&eleven)).len(), 1);
        assert_eq!(problems(&gate(&[" "])).len(), 1);
    }
}
