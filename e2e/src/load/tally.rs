//! Counting outcomes while a run is going: by second, by connection mode, and 2xx by backend.

use std::collections::BTreeMap;

use crate::report::{Counts, LoadResult, Outcome, SecondCounts};

/// How many distinct backends are counted by name; a misbehaving target cannot grow the map without bound.
const MAX_BACKENDS: usize = 64;
/// Longest backend name taken from a body; anything longer is not an instance id.
const MAX_BACKEND_NAME: usize = 64;
/// Where 2xx go whose body names no backend.
pub const UNKNOWN_BACKEND: &str = "(unknown)";
/// Where 2xx go once 63 distinct backends have been counted by name (the cap keeps the map small).
pub const OTHER_BACKENDS: &str = "(other)";

/// The backend named by a body like `Hello, World! From i-0123456789abcdef0` (the seed's sample app says which
/// host answered in the same way): the word after the last `From `. `None` when there is no such word, or when it
/// does not look like a name (too long, or not printable ASCII).
pub fn backend_from_body(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let (_, rest) = text.rsplit_once("From ")?;
    let name = rest.split_whitespace().next()?;
    let looks_like_name = name.len() <= MAX_BACKEND_NAME && name.bytes().all(|b| b.is_ascii_graphic());
    looks_like_name.then(|| name.to_string())
}

/// Which request an outcome belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    /// Second since the start in which the request was due.
    pub second: u64,
    /// Whether the request was sent on a fresh connection.
    pub new_connection: bool,
}

/// The counters of a run; lives behind a mutex shared by the request tasks.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    totals: Counts,
    keep_alive: Counts,
    new_connection: Counts,
    per_second: Vec<Counts>,
    backends: BTreeMap<String, u64>,
}

impl Tally {
    pub fn sent(&mut self, slot: Slot) {
        for counts in self.counts_for(slot) {
            counts.record_sent();
        }
    }

    pub fn dropped(&mut self, slot: Slot) {
        for counts in self.counts_for(slot) {
            counts.record_dropped();
        }
    }

    pub fn outcome(&mut self, slot: Slot, outcome: Outcome, backend: Option<String>) {
        for counts in self.counts_for(slot) {
            counts.record(outcome);
        }
        if outcome == Outcome::Success {
            let name = backend.unwrap_or_else(|| UNKNOWN_BACKEND.to_string());
            // One place is kept for the overflow bucket, so the map never exceeds MAX_BACKENDS entries.
            let key = if self.backends.contains_key(&name) || self.backends.len() < MAX_BACKENDS - 1 {
                name
            } else {
                OTHER_BACKENDS.to_string()
            };
            *self.backends.entry(key).or_default() += 1;
        }
    }

    /// The totals, the connection mode's counts and the second's counts that a request in `slot` adds to.
    fn counts_for(&mut self, slot: Slot) -> [&mut Counts; 3] {
        // Seconds are bounded by the generator's maximum run time, so this vector stays small.
        let index = usize::try_from(slot.second).unwrap_or(usize::MAX);
        if self.per_second.len() <= index {
            self.per_second.resize(index.saturating_add(1), Counts::default());
        }
        let mode = if slot.new_connection {
            &mut self.new_connection
        } else {
            &mut self.keep_alive
        };
        [&mut self.totals, mode, &mut self.per_second[index]]
    }

    /// The counts so far, in a [`LoadResult`] whose descriptive fields the caller fills in.
    pub fn to_result(&self) -> LoadResult {
        LoadResult {
            totals: self.totals.clone(),
            keep_alive: self.keep_alive.clone(),
            new_connection: self.new_connection.clone(),
            per_second: self
                .per_second
                .iter()
                .enumerate()
                .map(|(second, counts)| SecondCounts {
                    second: second as u64,
                    counts: counts.clone(),
                })
                .collect(),
            backends: self.backends.clone(),
            ..LoadResult::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_the_word_after_the_last_from() {
        assert_eq!(
            backend_from_body(b"Hello, World! From i-0abc\n").as_deref(),
            Some("i-0abc")
        );
        assert_eq!(backend_from_body(b"From x From i-1 trailing").as_deref(), Some("i-1"));
        assert_eq!(backend_from_body(b"Hello, World!"), None);
        assert_eq!(backend_from_body(b"From "), None);
        assert_eq!(backend_from_body("From \u{e9}t\u{e9}".as_bytes()), None);
        assert_eq!(
            backend_from_body(format!("From i-{}", "a".repeat(100)).as_bytes()),
            None
        );
    }

    #[test]
    fn counts_land_in_totals_mode_and_second() {
        let mut tally = Tally::default();
        let keep_alive = Slot {
            second: 0,
            new_connection: false,
        };
        let fresh = Slot {
            second: 2,
            new_connection: true,
        };
        tally.sent(keep_alive);
        tally.outcome(keep_alive, Outcome::Success, Some("i-a".into()));
        tally.sent(fresh);
        tally.outcome(fresh, Outcome::ServerError(502), None);
        tally.dropped(fresh);

        let result = tally.to_result();
        assert_eq!(result.totals.sent, 2);
        assert_eq!(result.totals.dropped, 1);
        assert_eq!(result.totals.scheduled, 3);
        assert_eq!(result.keep_alive.success, 1);
        assert_eq!(result.new_connection.status_502, 1);
        assert_eq!(result.per_second.len(), 3);
        assert_eq!(result.per_second[1].counts, Counts::default());
        assert_eq!(result.per_second[2].counts.server_errors, 1);
        assert_eq!(result.backends, BTreeMap::from([("i-a".to_string(), 1)]));
    }

    #[test]
    fn backend_names_are_capped() {
        let mut tally = Tally::default();
        let slot = Slot {
            second: 0,
            new_connection: false,
        };
        for i in 0..MAX_BACKENDS + 5 {
            tally.outcome(slot, Outcome::Success, Some(format!("i-{i}")));
        }
        tally.outcome(slot, Outcome::Success, None);
        let result = tally.to_result();
        assert_eq!(result.backends.len(), MAX_BACKENDS);
        assert!(
            !result.backends.contains_key(UNKNOWN_BACKEND),
            "the cap also applies to the unknown bucket"
        );
        // MAX_BACKENDS - 1 named ones, then 6 more named and the unknown one share the overflow bucket.
        assert_eq!(result.backends.get(OTHER_BACKENDS), Some(&7));
    }
}
