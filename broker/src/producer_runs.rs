//! Which producer sent each recent offset, kept as runs by the persister as it
//! writes the records, so that a consumption-log line for a record that has left
//! the ring (a standalone reader's, or a group's reading below the ring) names its
//! producer without reading the file back. Older offsets than the runs kept are
//! named from the file.

use std::collections::VecDeque;
use std::sync::Arc;

/// Runs kept at most: with producers interleaving in batches, a run covers tens of
/// offsets; a single producer's records are one run.
const MAX_RUNS: usize = 1 << 18;

/// Runs of consecutive offsets sent by one producer.
#[derive(Debug, Default)]
pub struct ProducerRuns {
    /// (first offset, producer), in offset order; each run reaches the next one's
    /// first offset, the last one `end`.
    runs: VecDeque<(u64, Arc<str>)>,
    end: u64,
}

impl ProducerRuns {
    /// Records that the offsets from each run's first one up to the next run's
    /// (up to `end` for the last) were sent by its producer. Runs must follow the
    /// ones recorded before; a gap (records not persisted by this broker) is
    /// forgotten rather than guessed.
    /// With no run, the last one recorded goes on to `end`.
    pub fn extend(&mut self, runs: &[(u64, Arc<str>)], end: u64) {
        let Some(&(first, _)) = runs.first() else {
            if !self.runs.is_empty() && end > self.end {
                self.end = end;
            }
            return;
        };
        if first != self.end {
            self.runs.clear();
        }
        for (start, name) in runs {
            let same = self
                .runs
                .back()
                .is_some_and(|(_, last)| Arc::ptr_eq(last, name) || **last == **name);
            if !same {
                self.runs.push_back((*start, name.clone()));
            }
        }
        self.end = end;
        while self.runs.len() > MAX_RUNS {
            self.runs.pop_front();
        }
    }

    /// The kept run that covers `offset`, if any.
    pub fn run_of(&self, offset: u64) -> Option<Run> {
        if offset >= self.end {
            return None;
        }
        let after = self.runs.partition_point(|(start, _)| *start <= offset);
        let i = after.checked_sub(1)?;
        let (start, name) = self.runs.get(i)?;
        let end = self.runs.get(i + 1).map_or(self.end, |(next, _)| *next);
        Some(Run {
            offsets: *start..end,
            name: name.clone(),
        })
    }
}

/// Offsets one producer sent in a row.
#[derive(Debug, Clone)]
pub struct Run {
    pub offsets: std::ops::Range<u64>,
    pub name: Arc<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_named_by_the_run_that_covers_them() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut runs = ProducerRuns::default();
        let name = |runs: &ProducerRuns, o| runs.run_of(o).map(|r| r.name.to_string());
        runs.extend(&[(0, a.clone()), (10, b.clone())], 20);
        runs.extend(&[(20, b.clone()), (25, a.clone())], 30);
        assert_eq!(name(&runs, 0).as_deref(), Some("a"));
        assert_eq!(name(&runs, 9).as_deref(), Some("a"));
        assert_eq!(name(&runs, 10).as_deref(), Some("b"));
        assert_eq!(
            name(&runs, 24).as_deref(),
            Some("b"),
            "runs continue across batches"
        );
        assert_eq!(name(&runs, 29).as_deref(), Some("a"));
        assert_eq!(name(&runs, 30), None, "not persisted yet");
        assert_eq!(runs.runs.len(), 3);
        // A batch of the same producer as the last run carries on.
        runs.extend(&[], 35);
        assert_eq!(name(&runs, 34).as_deref(), Some("a"));
        // A gap: what came before is forgotten, not guessed.
        runs.extend(&[(40, b)], 41);
        assert_eq!(name(&runs, 29), None);
        assert_eq!(name(&runs, 40).as_deref(), Some("b"));
    }
}
