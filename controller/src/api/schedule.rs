//! Maintenance windows from a plan's schedule: cron expression, IANA time zone (with its
//! daylight-saving rules, from the tz database bundled into the binary) and window length.

use std::str::FromStr;

use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::spec::Schedule;

/// One maintenance window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When it opens.
    pub start: Timestamp,
    /// When it closes.
    pub end: Timestamp,
}

/// Where `now` stands against a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// The window open at `now`, if any.
    pub open: Option<Window>,
    /// When the next window opens (after `now`).
    pub next: Option<Timestamp>,
}

/// Why a schedule cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("schedule.cron {cron:?} is not a cron expression: {reason}")]
    Cron {
        /// The expression.
        cron: String,
        /// The parser's words.
        reason: String,
    },
    /// The time zone is unknown.
    #[error("schedule.timeZone {0:?} is not an IANA time zone (e.g. Europe/London)")]
    TimeZone(String),
}

/// Checks a schedule.
pub fn check(schedule: &Schedule) -> Result<(), ScheduleError> {
    parse(schedule).map(|_| ())
}

fn parse(schedule: &Schedule) -> Result<(Cron, TimeZone), ScheduleError> {
    // Five fields only: a seconds field or a year would make "22:00 on Sundays" ambiguous.
    if schedule.cron.split_whitespace().count() != 5 {
        return Err(ScheduleError::Cron {
            cron: schedule.cron.clone(),
            reason: "it needs five fields: minute hour day-of-month month day-of-week".to_owned(),
        });
    }
    let cron = Cron::from_str(&schedule.cron).map_err(|e| ScheduleError::Cron {
        cron: schedule.cron.clone(),
        reason: e.to_string(),
    })?;
    let tz = TimeZone::get(&schedule.time_zone).map_err(|_| ScheduleError::TimeZone(schedule.time_zone.clone()))?;
    Ok((cron, tz))
}

/// The window open at `now`, if any, and the start of the next one.
pub fn window_state(schedule: &Schedule, now: Timestamp) -> Result<WindowState, ScheduleError> {
    let (cron, tz) = parse(schedule)?;
    let zoned = now.to_zoned(tz);
    let length = SignedDuration::from_mins(i64::from(schedule.window_minutes));
    let open = cron
        .find_previous_occurrence(&zoned, true)
        .ok()
        .map(|start| start.timestamp())
        .map(|start| Window {
            start,
            end: start + length,
        })
        .filter(|w| now < w.end);
    let next = cron
        .find_next_occurrence(&zoned, false)
        .ok()
        .map(|start| start.timestamp());
    Ok(WindowState { open, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sunday_night_london() -> Schedule {
        Schedule {
            cron: "0 22 * * SUN".into(),
            time_zone: "Europe/London".into(),
            window_minutes: 240,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_winter_window_is_in_gmt() {
        let state = window_state(&sunday_night_london(), ts("2026-11-22T23:30:00Z")).expect("valid");
        assert_eq!(
            state.open,
            Some(Window {
                start: ts("2026-11-22T22:00:00Z"),
                end: ts("2026-11-23T02:00:00Z")
            })
        );
        assert_eq!(state.next, Some(ts("2026-11-29T22:00:00Z")));
    }

    #[test]
    fn a_summer_window_is_in_bst() {
        let state = window_state(&sunday_night_london(), ts("2026-07-05T21:30:00Z")).expect("valid");
        assert_eq!(
            state.open.map(|w| w.start),
            Some(ts("2026-07-05T21:00:00Z")),
            "22:00 BST is 21:00 UTC"
        );
    }

    #[test]
    fn closed_between_windows() {
        let state = window_state(&sunday_night_london(), ts("2026-11-23T03:00:00Z")).expect("valid");
        assert_eq!(state.open, None);
        assert_eq!(state.next, Some(ts("2026-11-29T22:00:00Z")));
    }

    #[test]
    fn bad_schedules_are_explained() {
        let mut s = sunday_night_london();
        s.time_zone = "Europe/Londn".into();
        assert!(matches!(check(&s), Err(ScheduleError::TimeZone(_))));
        s.time_zone = "UTC".into();
        s.cron = "0 22 * *".into();
        assert!(check(&s).unwrap_err().to_string().contains("five fields"));
        s.cron = "0 25 * * *".into();
        assert!(matches!(check(&s), Err(ScheduleError::Cron { .. })));
    }
}
