//! `spec.maxUnavailable`: how many instances of a plan may be out of rotation at once, as a
//! count or as a percentage of the target group (Kubernetes' int-or-string convention, as
//! in a Deployment's `maxUnavailable`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A count (`3`) or a percentage of the target group's registered targets (`"25%"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// This many instances.
    Count(u32),
    /// This percentage of the registered targets, rounded down, and never less than one.
    Percent(u32),
}

impl Default for MaxUnavailable {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl MaxUnavailable {
    /// The number of instances for a target group of `registered` targets: a percentage is
    /// rounded down (the safe side), and at least one instance may always go.
    pub fn resolve(self, registered: usize) -> u32 {
        match self {
            Self::Count(count) => count.max(1),
            Self::Percent(percent) => {
                let share = registered.saturating_mul(percent as usize) / 100;
                u32::try_from(share).unwrap_or(u32::MAX).max(1)
            }
        }
    }

    /// True when more than one instance may ever be out at once.
    pub fn allows_several(self) -> bool {
        !matches!(self, Self::Count(0 | 1))
    }

    /// Why the value is out of range, if it is (the CRD schema says so at admission too).
    pub fn problem(self) -> Option<String> {
        match self {
            Self::Count(0) => Some("maxUnavailable must be at least 1".to_owned()),
            Self::Count(count) if count > MAX_COUNT => Some(format!(
                "maxUnavailable {count} is more than the most allowed, {MAX_COUNT}"
            )),
            Self::Percent(percent) if !(1..=100).contains(&percent) => {
                Some(format!("maxUnavailable \"{percent}%\" must be between 1% and 100%"))
            }
            _ => None,
        }
    }
}

/// The most instances one plan takes out at once, whatever the target group's size: the most
/// a plan lists.
pub const MAX_COUNT: u32 = super::MAX_INSTANCES as u32;

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(count) => serializer.serialize_u32(*count),
            Self::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(count) => Ok(Self::Count(count)),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// `"25%"` or `"3"` (a count written as a string, which Kubernetes' int-or-string allows).
fn parse(text: &str) -> Result<MaxUnavailable, String> {
    let invalid = || format!("maxUnavailable {text:?} is neither a count (3) nor a percentage (\"25%\")");
    match text.strip_suffix('%') {
        Some(number) => number.parse().map(MaxUnavailable::Percent).map_err(|_| invalid()),
        None => text.parse().map(MaxUnavailable::Count).map_err(|_| invalid()),
    }
}

impl schemars::JsonSchema for MaxUnavailable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxUnavailable".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Kubernetes' structural form of an int-or-string; the range is checked by a CEL
        // rule, so a bad value is refused at `kubectl apply`.
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == int ? (self >= 1 && self <= 1000) : self.matches('^([1-9][0-9]?|100)%$')",
                "message": "maxUnavailable must be a count from 1 to 1000 or a percentage from 1% to 100%"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages_read_and_write_as_kubernetes_writes_them() {
        let read = |json: &str| serde_json::from_str::<MaxUnavailable>(json);
        assert_eq!(read("3").unwrap(), MaxUnavailable::Count(3));
        assert_eq!(read("\"25%\"").unwrap(), MaxUnavailable::Percent(25));
        assert_eq!(read("\"4\"").unwrap(), MaxUnavailable::Count(4));
        let error = read("\"a quarter\"").unwrap_err().to_string();
        assert!(error.contains("neither a count"), "{error}");
        assert_eq!(serde_json::to_string(&MaxUnavailable::Percent(25)).unwrap(), "\"25%\"");
        assert_eq!(serde_json::to_string(&MaxUnavailable::Count(3)).unwrap(), "3");
    }

    #[test]
    fn a_percentage_rounds_down_but_lets_one_instance_go() {
        assert_eq!(MaxUnavailable::Percent(25).resolve(10), 2);
        assert_eq!(MaxUnavailable::Percent(30).resolve(10), 3);
        assert_eq!(MaxUnavailable::Percent(10).resolve(3), 1);
        assert_eq!(MaxUnavailable::Percent(100).resolve(7), 7);
        assert_eq!(MaxUnavailable::Count(3).resolve(2), 3);
        assert!(MaxUnavailable::Count(0).problem().is_some());
        assert!(MaxUnavailable::Percent(101).problem().is_some());
        assert!(MaxUnavailable::Percent(100).problem().is_none());
    }
}
