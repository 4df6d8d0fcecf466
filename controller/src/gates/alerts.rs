//! Which Prometheus alerts hold a plan (`spec.gates.prometheus`): alert names as regular
//! expressions, label matchers in Alertmanager's syntax, firing (and, if asked, pending)
//! alerts. Pure.

use std::collections::BTreeMap;

use regex::Regex;

use crate::api::PrometheusGate;

use super::GateReading;

/// An alert as Prometheus' `/api/v1/alerts` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Firing, or pending (its `for` has not elapsed).
    pub state: AlertState,
}

/// The state of an active alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// Its condition has held for its `for`.
    Firing,
    /// Its condition holds, not yet for its `for`.
    Pending,
}

impl Alert {
    /// Its `alertname` label.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// One label matcher: `name="value"`, `name!="value"`, `name=~"re"`, `name!~"re"`.
#[derive(Clone, Debug)]
struct Matcher {
    label: String,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    DoesNotMatch(Regex),
}

impl Matcher {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| {
            format!(
                "label matcher {text:?} {why}; write it as name=\"value\", name!=\"value\", name=~\"regex\" or name!~\"regex\""
            )
        };
        // The operator is the first of `=~`, `!~`, `!=`, `=` after the label name.
        let at = text.find(['=', '!']).ok_or_else(|| invalid("has no operator"))?;
        let label = text[..at].trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid("does not start with a label name"));
        }
        let rest = &text[at..];
        let (operator, value) = ["=~", "!~", "!=", "="]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|value| (op, value)))
            .ok_or_else(|| invalid("has no operator"))?;
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        let test = match operator {
            "=" => Test::Equal(value),
            "!=" => Test::NotEqual(value),
            "=~" => Test::Matches(whole(&value).map_err(|e| invalid(&e))?),
            _ => Test::DoesNotMatch(whole(&value).map_err(|e| invalid(&e))?),
        };
        Ok(Self {
            label: label.to_owned(),
            test,
        })
    }

    /// As Alertmanager: a missing label reads as the empty string.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        match &self.test {
            Test::Equal(expected) => value == expected,
            Test::NotEqual(expected) => value != expected,
            Test::Matches(re) => re.is_match(value),
            Test::DoesNotMatch(re) => !re.is_match(value),
        }
    }
}

/// A regular expression that must match the whole text, as PromQL's are.
fn whole(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("is not a valid regular expression ({e})"))
}

/// The alerts a gate counts, compiled from its spec.
#[derive(Clone, Debug)]
pub struct AlertFilter {
    names: Vec<Regex>,
    matchers: Vec<Matcher>,
    include_pending: bool,
}

impl AlertFilter {
    /// Compiles the gate's names and matchers; the error says which one is wrong and why.
    pub fn new(gate: &PrometheusGate) -> Result<Self, String> {
        let names = gate
            .alert_names
            .iter()
            .map(|name| whole(name).map_err(|e| format!("spec.gates.prometheus.alertNames: {name:?} {e}")))
            .collect::<Result<_, _>>()?;
        let matchers = gate
            .matchers
            .iter()
            .map(|m| Matcher::parse(m).map_err(|e| format!("spec.gates.prometheus.matchers: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            names,
            matchers,
            include_pending: gate.include_pending,
        })
    }

    /// Whether `alert` holds the plan.
    pub fn counts(&self, alert: &Alert) -> bool {
        (alert.state == AlertState::Firing || self.include_pending)
            && (self.names.is_empty() || self.names.iter().any(|re| re.is_match(alert.name())))
            && self.matchers.iter().all(|m| m.matches(&alert.labels))
    }

    /// The reading of the gate from the alerts Prometheus listed.
    pub fn read(&self, alerts: &[Alert]) -> GateReading {
        let holding: Vec<&Alert> = alerts.iter().filter(|a| self.counts(a)).collect();
        match holding.as_slice() {
            [] => GateReading::Quiet,
            [first, rest @ ..] => {
                let more = match rest.len() {
                    0 => String::new(),
                    n => format!(" (and {n} more)"),
                };
                GateReading::Holding(format!("alert {} {}{more}", describe(first), state_word(first.state)))
            }
        }
    }
}

fn state_word(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Pending => "pending",
    }
}

/// `HighErrorRate{job="web",severity="critical"}`: the name and the other labels.
fn describe(alert: &Alert) -> String {
    let labels: Vec<String> = alert
        .labels
        .iter()
        .filter(|(k, _)| *k != "alertname")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{}{{{}}}", alert.name(), labels.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, labels: &[(&str, &str)], state: AlertState) -> Alert {
        let mut all: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        all.insert("alertname".into(), name.into());
        Alert { labels: all, state }
    }

    fn gate(names: &[&str], matchers: &[&str]) -> PrometheusGate {
        PrometheusGate {
            alert_names: names.iter().map(|s| (*s).to_owned()).collect(),
            matchers: matchers.iter().map(|s| (*s).to_owned()).collect(),
            ..PrometheusGate::default()
        }
    }

    #[test]
    fn names_match_whole_and_matchers_all_hold() {
        let filter = AlertFilter::new(&gate(
            &["High.*", "NodeDown"],
            &[
                r#"severity="critical""#,
                "team!=batch",
                r#"env=~"prod|staging""#,
                "job!~test.*",
            ],
        ))
        .unwrap();
        let good = [
            ("severity", "critical"),
            ("team", "web"),
            ("env", "prod"),
            ("job", "api"),
        ];
        assert!(filter.counts(&alert("HighErrorRate", &good, AlertState::Firing)));
        assert!(filter.counts(&alert("NodeDown", &good, AlertState::Firing)));
        assert!(
            !filter.counts(&alert("NodeDownSoon", &good, AlertState::Firing)),
            "names match whole"
        );
        assert!(
            !filter.counts(&alert("XHighErrorRate", &good, AlertState::Firing)),
            "names match whole"
        );
        assert!(
            !filter.counts(&alert("HighErrorRate", &good, AlertState::Pending)),
            "firing only"
        );
        for (label, bad) in [
            ("severity", "warning"),
            ("team", "batch"),
            ("env", "production"),
            ("job", "testing"),
        ] {
            let labels: Vec<(&str, &str)> = good
                .iter()
                .map(|(k, v)| if *k == label { (*k, bad) } else { (*k, *v) })
                .collect();
            assert!(
                !filter.counts(&alert("HighErrorRate", &labels, AlertState::Firing)),
                "{label}={bad}"
            );
        }
    }

    #[test]
    fn an_empty_gate_counts_every_firing_alert_and_pending_ones_when_asked() {
        let mut spec = gate(&[], &[]);
        assert!(
            AlertFilter::new(&spec)
                .unwrap()
                .counts(&alert("Anything", &[], AlertState::Firing))
        );
        assert!(
            !AlertFilter::new(&spec)
                .unwrap()
                .counts(&alert("Anything", &[], AlertState::Pending))
        );
        spec.include_pending = true;
        assert!(
            AlertFilter::new(&spec)
                .unwrap()
                .counts(&alert("Anything", &[], AlertState::Pending))
        );
    }

    #[test]
    fn the_reading_names_the_first_alert_and_counts_the_rest() {
        let filter = AlertFilter::new(&gate(&[], &["severity=critical"])).unwrap();
        let alerts = [
            alert("Quiet", &[("severity", "info")], AlertState::Firing),
            alert(
                "HighErrorRate",
                &[("severity", "critical"), ("job", "web")],
                AlertState::Firing,
            ),
            alert("NodeDown", &[("severity", "critical")], AlertState::Firing),
        ];
        assert_eq!(
            filter.read(&alerts),
            GateReading::Holding(
                r#"alert HighErrorRate{job="web",severity="critical"} firing (and 1 more)"#.to_owned()
            )
        );
        assert_eq!(filter.read(&alerts[..1]), GateReading::Quiet);
    }

    #[test]
    fn bad_names_and_matchers_are_refused_with_the_field() {
        let error = AlertFilter::new(&gate(&["(unclosed"], &[])).unwrap_err();
        assert!(
            error.starts_with("spec.gates.prometheus.alertNames: \"(unclosed\" is not a valid regular expression"),
            "{error}"
        );
        for bad in ["severity", "=critical", "sev erity=x", r#"env=~"(""#] {
            let error = AlertFilter::new(&gate(&[], &[bad])).unwrap_err();
            assert!(
                error.starts_with("spec.gates.prometheus.matchers: label matcher"),
                "{bad}: {error}"
            );
        }
    }
}
