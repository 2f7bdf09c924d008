//! A standalone reader's journal (SPEC §10): every message a reader's poll returns
//! gets a consumption-log line, and the reader records it in its client entry
//! *before* the poll returns, so that a reader killed at any instant loses no line.
//!
//! The journal is [`JOURNAL_RUNS`] runs `[from, upto)` of one topic-partition each.
//! A poll that returns the offsets right after the open run's end extends it (one
//! Release store per poll); one that returns anything else (after a seek, or from
//! another partition) opens the next run, if the broker has logged the run whose
//! slot it takes. The broker reads the runs on every cleaner pass and turns them
//! into log lines; it publishes how many messages it has turned into lines
//! (`drained`, which paces the reader) and, once the log file holds them, how far
//! the lines reach (`logged_runs`, `logged_upto`), which frees runs for reuse and
//! tells a broker recovering the region after a crash where to go on.
//!
//! Only the reader writes `opened` and the runs; only the broker writes the rest.
//! A run below `opened - 1` is final: the reader's last store to it came before
//! its Release of `opened`, which the broker loads with Acquire first.

use std::sync::atomic::Ordering;

use crate::layout::{ClientEntry, JOURNAL_RUNS};
use crate::region::BrokerRegion;

/// How a journal names a topic-partition.
pub fn partition_key(topic_id: u32, partition: u32) -> u64 {
    (u64::from(topic_id) << 32) | u64::from(partition)
}

/// Every run of the journal holds offsets the broker has not logged yet: the
/// reader waits for the broker before it opens another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalFull;

/// One run as the broker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRunSeen {
    pub partition: u64,
    pub from: u64,
    pub upto: u64,
}

impl ClientEntry {
    /// Reader: records that its poll returns offsets `[from, upto)` of `partition`,
    /// before it returns them.
    pub fn record_read(&self, partition: u64, from: u64, upto: u64) -> Result<(), JournalFull> {
        let j = &self.journal;
        // The reader is the only writer of `opened` and the runs: its own values.
        let opened = j.opened.load(Ordering::Relaxed);
        if let Some(last) = opened.checked_sub(1) {
            let run = &j.runs[(last % JOURNAL_RUNS as u64) as usize];
            if run.partition.load(Ordering::Relaxed) == partition
                && run.upto.load(Ordering::Relaxed) == from
            {
                // Release: the broker that sees the new end sees nothing older.
                run.upto.store(upto, Ordering::Release);
                return Ok(());
            }
        }
        if opened - j.logged_runs.load(Ordering::Acquire) >= JOURNAL_RUNS as u64 {
            return Err(JournalFull);
        }
        let run = &j.runs[(opened % JOURNAL_RUNS as u64) as usize];
        run.partition.store(partition, Ordering::Relaxed);
        run.from.store(from, Ordering::Relaxed);
        run.upto.store(upto, Ordering::Relaxed);
        // Release: the broker that sees the run counted sees its fields.
        j.opened.store(opened + 1, Ordering::Release);
        Ok(())
    }

    /// Reader: how many of its messages the broker has turned into log lines.
    pub fn journal_drained(&self) -> u64 {
        self.journal.drained.load(Ordering::Acquire)
    }

    /// Broker: how many runs the reader has opened.
    pub fn journal_opened(&self) -> u64 {
        self.journal.opened.load(Ordering::Acquire)
    }

    /// Broker: run `n` as it is now (final once `n + 1 < journal_opened()`, loaded
    /// before). Runs are not checked here: they come from another process.
    pub fn journal_run(&self, n: u64) -> JournalRunSeen {
        let run = &self.journal.runs[(n % JOURNAL_RUNS as u64) as usize];
        JournalRunSeen {
            partition: run.partition.load(Ordering::Relaxed),
            from: run.from.load(Ordering::Relaxed),
            upto: run.upto.load(Ordering::Acquire),
        }
    }

    /// How far the log file holds the journal's lines: every run below the first
    /// value, and the offsets of the run at it below the second.
    pub fn journal_logged(&self) -> (u64, u64) {
        let j = &self.journal;
        (
            j.logged_runs.load(Ordering::Acquire),
            j.logged_upto.load(Ordering::Acquire),
        )
    }
}

/// What the broker alone writes in a journal.
impl BrokerRegion {
    /// Publishes that `drained` messages of client `slot`'s journal are log lines.
    pub fn publish_journal_drained(&self, slot: u32, drained: u64) {
        if let Some(e) = self.client(slot) {
            e.journal.drained.store(drained, Ordering::Release);
        }
    }

    /// Publishes that the log file holds client `slot`'s lines of every run below
    /// `runs`, and of run `runs` below offset `upto`. Run slots below `runs` may be
    /// reused by the reader after this.
    pub fn publish_journal_logged(&self, slot: u32, runs: u64, upto: u64) {
        if let Some(e) = self.client(slot) {
            let j = &e.journal;
            j.logged_upto.store(upto, Ordering::Relaxed);
            j.logged_runs.store(runs, Ordering::Release);
        }
    }

    /// Empties client `slot`'s journal for a new registration.
    pub(crate) fn clear_journal(&self, entry: &ClientEntry) {
        let j = &entry.journal;
        for word in [&j.opened, &j.logged_runs, &j.logged_upto, &j.drained] {
            word.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};

    #[test]
    fn contiguous_reads_extend_one_run_and_a_seek_opens_another() {
        let t = test_region("journal-runs", test_geometry());
        let r = &t.0;
        let e = r.client(1).unwrap();
        let p = partition_key(0, 0);
        e.record_read(p, 10, 12).unwrap();
        e.record_read(p, 12, 20).unwrap();
        assert_eq!(e.journal_opened(), 1);
        assert_eq!(
            e.journal_run(0),
            JournalRunSeen {
                partition: p,
                from: 10,
                upto: 20
            }
        );
        // A seek back, and another partition, each open a run.
        e.record_read(p, 5, 6).unwrap();
        e.record_read(partition_key(0, 1), 6, 7).unwrap();
        assert_eq!(e.journal_opened(), 3);
        assert_eq!(e.journal_run(1).from, 5);
        assert_eq!(e.journal_run(2).partition, partition_key(0, 1));
    }

    #[test]
    fn a_run_slot_is_reused_only_once_the_broker_logged_its_run() {
        let t = test_region("journal-full", test_geometry());
        let r = &t.0;
        let e = r.client(0).unwrap();
        let p = partition_key(0, 0);
        for n in 0..JOURNAL_RUNS as u64 {
            e.record_read(p, n * 100, n * 100 + 1).unwrap();
        }
        assert_eq!(e.record_read(p, 7, 8), Err(JournalFull));
        // Extending the open run needs no new slot.
        e.record_read(p, 301, 302).unwrap();
        r.publish_journal_logged(0, 1, 0);
        assert_eq!(e.journal_logged(), (1, 0));
        e.record_read(p, 7, 8).unwrap();
        assert_eq!(e.journal_run(4).from, 7);
        assert_eq!(e.record_read(p, 1, 2), Err(JournalFull));
    }

    #[test]
    fn a_new_registration_finds_an_empty_journal() {
        let t = test_region("journal-clear", test_geometry());
        let r = &t.0;
        let e = r.client(2).unwrap();
        e.record_read(partition_key(0, 0), 0, 9).unwrap();
        r.publish_journal_drained(2, 9);
        r.publish_journal_logged(2, 0, 9);
        let record = crate::client::ClientRecord {
            role: crate::client::ClientRole::Reader,
            generation: 3,
            pid: 1,
            group: None,
            id: "reader-a",
        };
        r.publish_client(2, &record, crate::layout::client_state::ACTIVE);
        assert_eq!(
            (e.journal_opened(), e.journal_drained(), e.journal_logged()),
            (0, 0, (0, 0))
        );
    }
}
