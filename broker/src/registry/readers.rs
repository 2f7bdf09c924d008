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

use shm_layout::journal::partition_key;

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
    /// Formats this reader's lines of `default`/0.
    lines: DeliveryLines,
    /// The line formatters of the other topic-partitions it read, by journal key.
    other_lines: Vec<(u64, DeliveryLines)>,
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
            partition_producers,
            topics,
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
        let now = wall_clock_micros();
        drain.lines.set_time(now);
        let mut budget = if finished { u64::MAX } else { LINES_PER_PASS };
        let before = drain.drained;
        while drain.run < opened && budget > 0 {
            let run = entry.journal_run(drain.run);
            let last = drain.run + 1 == opened && !finished;
            // The run's topic-partition: its ring, its lines' fields, and where
            // the names of its records that left the ring are found.
            let ring;
            let (ring_region, lines, mut names_in_file) = if run.partition == partition_key(0, 0) {
                (&**region, &mut drain.lines, file_producers.as_mut())
            } else {
                let Some(found) = topics.as_ref().and_then(|t| t.ring_of_key(run.partition)) else {
                    // A partition that does not exist (a scribbled journal): nothing
                    // was read there to log.
                    drain.run += 1;
                    drain.upto = None;
                    continue;
                };
                ring = found;
                let tp = &ring.partition;
                let at = match drain
                    .other_lines
                    .iter()
                    .position(|(k, _)| *k == run.partition)
                {
                    Some(at) => at,
                    None => {
                        let lines = DeliveryLines::for_partition(&tp.topic, tp.partition);
                        drain.other_lines.push((run.partition, lines));
                        drain.other_lines.len() - 1
                    }
                };
                let lines = &mut drain.other_lines[at].1;
                lines.set_time(now);
                let data_dir = data_dir_of(file_producers);
                let names = partition_producers
                    .entry(run.partition)
                    .or_insert_with(|| FileProducers::of(data_dir, tp.clone(), None));
                (&*ring.region, lines, Some(names))
            };
            let next = ring_region.next_offset();
            let freed = ring_region.freed_offset();
            let start = drain.upto.unwrap_or(run.from).max(run.from);
            // A reader returns only committed records: beyond `next`, only those a
            // hold in progress has stamped (it reads them at their stamps).
            let available = if run.upto > next {
                ring_region.stamped_end(next, run.upto)
            } else {
                run.upto
            };
            let end = available.max(start);
            let stop = end.min(start.saturating_add(budget));
            let mut last_key = None;
            let mut last_name = unknown.clone();
            for o in start..stop {
                let name = if o >= freed {
                    match ring_region.record_producer(o) {
                        Some(key) if last_key == Some(key) => last_name.clone(),
                        Some(key) => {
                            last_key = Some(key);
                            last_name = producers.get(&key).unwrap_or(unknown).clone();
                            last_name.clone()
                        }
                        None => unknown.clone(),
                    }
                } else {
                    names_in_file
                        .as_mut()
                        .and_then(|f| f.producer_of(o))
                        .unwrap_or_else(|| unknown.clone())
                };
                lines.push(log_text, o, &name, &group, &consumer, 1);
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

/// The data directory the file's producers are read from.
pub(super) fn data_dir_of(file_producers: &Option<FileProducers>) -> PathBuf {
    file_producers
        .as_ref()
        .map_or_else(|| PathBuf::from("."), |f| f.data_dir().to_path_buf())
}
