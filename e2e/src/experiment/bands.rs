//! The instances' phases over time, as bands for the chart, from the statuses pitstop
//! records (or, in naive mode, from what the naive loop did).

use std::collections::BTreeMap;

use jiff::Timestamp;

use pitstop::api::{InstancePhase, MaintenancePlanStatus};

use crate::report::PhaseBand;

/// Collects phase changes and turns them into bands.
#[derive(Debug)]
pub struct BandRecorder {
    origin: Timestamp,
    open: BTreeMap<String, (String, Timestamp)>,
    closed: Vec<PhaseBand>,
}

impl BandRecorder {
    /// Bands are measured in seconds from `origin` (the start of the load).
    pub fn new(origin: Timestamp) -> Self {
        Self {
            origin,
            open: BTreeMap::new(),
            closed: Vec::new(),
        }
    }

    fn offset(&self, at: Timestamp) -> f64 {
        at.duration_since(self.origin).as_secs_f64()
    }

    /// Notes that `instance` is in `phase` since `since`.
    pub fn phase(&mut self, instance: &str, phase: &str, since: Timestamp) {
        if let Some((open_phase, open_since)) = self.open.get(instance)
            && open_phase == phase
            && *open_since == since
        {
            return;
        }
        if let Some((open_phase, open_since)) = self.open.remove(instance) {
            self.closed.push(PhaseBand {
                instance_id: instance.to_owned(),
                phase: open_phase,
                start_s: self.offset(open_since),
                end_s: self.offset(since),
            });
        }
        // Pending and Registered are the ends of the story, not phases worth a band.
        if phase != InstancePhase::Pending.as_str() && phase != InstancePhase::Registered.as_str() {
            self.open.insert(instance.to_owned(), (phase.to_owned(), since));
        }
    }

    /// Notes every instance's phase in a recorded status.
    pub fn status(&mut self, status: &MaintenancePlanStatus) {
        for instance in &status.instances {
            if let Some(since) = instance.phase_since {
                self.phase(&instance.instance_id, instance.phase.as_str(), since);
            }
        }
    }

    /// Closes what is still open now and returns the bands.
    pub fn finish(mut self) -> Vec<PhaseBand> {
        let now = Timestamp::now();
        let open: Vec<_> = std::mem::take(&mut self.open).into_iter().collect();
        for (instance, (phase, since)) in open {
            self.closed.push(PhaseBand {
                instance_id: instance,
                phase,
                start_s: self.offset(since),
                end_s: self.offset(now),
            });
        }
        self.closed.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_become_bands_between_their_starts() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        let mut recorder = BandRecorder::new(t0);
        recorder.phase("i-1", "Draining", at(1));
        recorder.phase("i-1", "Draining", at(1));
        recorder.phase("i-1", "Rebooting", at(3));
        recorder.phase("i-1", "Registered", at(7));
        let bands = recorder.finish();
        assert_eq!(bands.len(), 2);
        assert_eq!(
            (bands[0].phase.as_str(), bands[0].start_s, bands[0].end_s),
            ("Draining", 1.0, 3.0)
        );
        assert_eq!(
            (bands[1].phase.as_str(), bands[1].start_s, bands[1].end_s),
            ("Rebooting", 3.0, 7.0)
        );
    }
}
