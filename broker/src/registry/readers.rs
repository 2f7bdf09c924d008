//! Standalone readers' consumption-log lines (SPEC §10): each cleaner pass turns
//! what every reader recorded in its journal (see `shm_layout::journal`) into log
//! lines, group `-`, attempt 1, and tells the reader how far it got; once the log
//! file holds the lines, it tells the journal so (its runs may then be reused).
//!
//! A line names the record's producer: from the ring while the record is there
//! (the cleaner, which alone frees slots, is the one looking), otherwise from the
//! persistence file, where every record that left the ring is.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use audit_format::records::DeliveryLines;
use shm_layout::layout::JOURNAL_RUNS;
use shm_layout::sys::wall_clock_micros;

use super::Registry;
use crate::file_producers::FileProducers;

/// Most lines one pass makes of one reader's journal: a reader far ahead waits
/// (it paces itself by what is drained), and the registry is not held for long.
const LINES_PER_PASS: u64 = 1 << 16;

/// Where the broker is in one reader's journal.
#[derive(Debug, Default)]
pub(super) struct JournalDrain {
    /// The run it reads next.
    run: u64,
    /// In that run, every offset below this has its line (None: none yet).
    upto: Option<u64>,
    /// Messages turned into lines so far.
    drained: u64,
    /// What the journal may be told once the log's writer has written this many
    /// bytes: (log mark, run, upto in that run).
    unwritten: VecDeque<(u64, u64, u64)>,
    /// Formats this reader's lines.
    lines: DeliveryLines,
}

impl Registry {
    /// Names records that left the ring from the persistence file in `data_dir`.
    /// Names records that left the ring from the persister's runs, or else from
    /// the persistence file in `data_dir`.
    pub fn name_producers_from(
        &mut self,
        data_dir: PathBuf,
        runs: Arc<std::sync::Mutex<crate::producer_runs::ProducerRuns>>,
    ) {
        self.file_producers = Some(FileProducers::new(data_dir, Some(runs)));
    }

    /// Turns what every reader recorded since the last look into log lines, and
    /// tells the journals what the log file now holds.
    pub fn observe_readers(&mut self) {
        let slots: Vec<u32> = self.journals.keys().copied().collect();
        for slot in slots {
            self.observe_reader(slot, false);
        }
        self.publish_logged_journals();
    }

    /// Lines for reader `slot`'s journal since the last look; with `finished` (its
    /// process is gone), its last run too is read to its end. True once every run
    /// it opened is turned into lines.
    pub(super) fn observe_reader(&mut self, slot: u32, finished: bool) -> bool {
        let Registry {
            region,
            clients,
            journals,
            log_text,
            log_taken,
            producers,
            unknown,
            file_producers,
            ..
        } = self;
        let (Some(entry), Some(drain)) = (region.client(slot), journals.get_mut(&slot)) else {
            return true;
        };
        let consumer: Arc<str> = clients
            .get(slot as usize)
            .and_then(|c| c.as_ref())
            .map(|c| c.id.clone())
            .or_else(|| {
                let e = region.client(slot)?;
                region.client_name(slot, e.generation()).map(Arc::from)
            })
            .unwrap_or_else(|| unknown.clone());
        let group: Arc<str> = Arc::from("-");
        let opened = entry.journal_opened();
        // A reader opens a run only once the one JOURNAL_RUNS before it is logged:
        // more is a scribble, read no further than that.
        let opened = opened.min(drain.run + JOURNAL_RUNS as u64);
        let next = region.next_offset();
        let freed = region.freed_offset();
        drain.lines.set_time(wall_clock_micros());
        let mut budget = if finished { u64::MAX } else { LINES_PER_PASS };
        let before = drain.drained;
        while drain.run < opened && budget > 0 {
            let run = entry.journal_run(drain.run);
            let last = drain.run + 1 == opened && !finished;
            let start = drain.upto.unwrap_or(run.from).max(run.from);
            // A reader returns only committed records: beyond `next`, only those a
            // hold in progress has stamped (it reads them at their stamps).
            let available = if run.upto > next {
                region.stamped_end(next, run.upto)
            } else {
                run.upto
            };
            let end = available.max(start);
            let stop = end.min(start.saturating_add(budget));
            let mut last_key = None;
            let mut last_name = unknown.clone();
            for o in start..stop {
                let name = if o >= freed {
                    match region.record_producer(o) {
                        Some(key) if last_key == Some(key) => last_name.clone(),
                        Some(key) => {
                            last_key = Some(key);
                            last_name = producers.get(&key).unwrap_or(unknown).clone();
                            last_name.clone()
                        }
                        None => unknown.clone(),
                    }
                } else {
                    file_producers
                        .as_mut()
                        .and_then(|f| f.producer_of(o))
                        .unwrap_or_else(|| unknown.clone())
                };
                drain.lines.push(log_text, o, &name, &group, &consumer, 1);
            }
            budget -= stop - start;
            drain.drained += stop - start;
            drain.upto = Some(stop);
            // The next run only once this one is done: a run that reaches past
            // what is committed (its records are being committed, or its end is
            // a scribble) is looked at again next pass.
            if last || stop < run.upto {
                break;
            }
            drain.run += 1;
            drain.upto = None;
        }
        if drain.drained != before || drain.unwritten.is_empty() {
            region.publish_journal_drained(slot, drain.drained);
            let mark = *log_taken + log_text.len() as u64;
            drain
                .unwritten
                .push_back((mark, drain.run, drain.upto.unwrap_or(0)));
        }
        drain.run >= opened
    }

    /// Tells each journal how far the log file holds its lines; asks for the log
    /// to be written now when a reader may be waiting for a run to reuse.
    fn publish_logged_journals(&mut self) {
        let written = self.log_written.load(Ordering::Acquire);
        let mut wanted = false;
        for (&slot, drain) in &mut self.journals {
            let mut told = None;
            while let Some(&(mark, run, upto)) = drain.unwritten.front() {
                if mark > written {
                    break;
                }
                told = Some((run, upto));
                drain.unwritten.pop_front();
            }
            if let Some((run, upto)) = told {
                self.region.publish_journal_logged(slot, run, upto);
            }
            if let Some(e) = self.region.client(slot) {
                let (logged_runs, _) = e.journal_logged();
                wanted |= e.journal_opened().saturating_sub(logged_runs) + 1 >= JOURNAL_RUNS as u64
                    && !drain.unwritten.is_empty();
            }
        }
        self.log_wanted |= wanted;
    }

    /// The id of the standalone reader registered in client entry `slot`.
    pub fn reader_id(&self, slot: u32) -> Option<Arc<str>> {
        let c = self.clients.get(slot as usize)?.as_ref()?;
        (c.role == control_protocol::Role::Reader).then(|| c.id.clone())
    }

    /// Starts following reader `slot`'s journal (it registered now).
    pub(super) fn follow_journal(&mut self, slot: u32) {
        self.journals.insert(slot, JournalDrain::default());
    }
}
