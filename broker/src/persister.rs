//! The persistence thread: copies every committed record, in offset order, into
//! `persistencia_mensajes.txt` through a double buffer. It publishes the persisted
//! offset only once the writer has written (under `--fsync`, synced) the records,
//! and wakes producers waiting for it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_format::index::{IndexError, IndexWriter, PartitionId};
use audit_format::records::{PersistedLines, PERSIST_FILE};
use shm_layout::event::{self, event_id};
use shm_layout::BrokerRegion;

use crate::metrics::DiskWaits;
use crate::producer_runs::ProducerRuns;
use crate::topics::{PartitionRing, Topics};
use crate::when_written::WhenWritten;

use crate::audit::double_buffer::DoubleBuffer;
use crate::registry::Registry;

/// The pause between passes while records are wanted at once (the ring filling
/// up, or a producer waiting), and the shortest pause of all.
const BUSY_PAUSE: Duration = Duration::from_millis(1);
/// The pause after a pass that found records while nothing is urgent: the
/// records can wait for the next flush, and a producer's nudge (every quarter of
/// the ring) cuts the pause short if they come faster.
const PROGRESS_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause: an idle persister doubles its pause up to this (and to half
/// the flush interval).
const IDLE_PAUSE: Duration = Duration::from_millis(20);

/// How many records ahead of the one being formatted its payload is prefetched
/// (and twice as far, its index entry).
const PREFETCH_AHEAD: u64 = 8;

/// How many bytes of lines are formatted before they go to the buffer.
const BATCH_BYTES: usize = 64 * 1024;

/// How often the persister looks at every partition ring, marked or not.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long the final drain waits for a producer's hold of the ring to end.
const STOP_PATIENCE: Duration = Duration::from_secs(1);

/// How the persister's final drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalDrain {
    /// Every record committed is in the file, and no more can be committed.
    Complete,
    /// A producer held the ring lock through the stop: what it commits is only in
    /// the region, so the region must stay for the next start to salvage.
    HolderStuck,
    /// The record at this offset could not be read (a corrupt index entry): it and
    /// the records after it are only in the region, which must stay.
    Unreadable(u64),
}

/// Faults of the region the persister finds, each reported once.
#[derive(Debug, Default)]
struct Faults {
    next_offset: bool,
    record: bool,
}

/// How far committed records of `region` reach from `from`, the next offset to
/// persist. Its `next_offset` is believed only as far as it can be true: a ring's
/// worth of records at most waits to be persisted (slots are freed only once
/// persisted), and offsets never go back. Past that, the region is corrupt: the
/// broker says so once (`reported`, naming it `whose`) and refuses new messages
/// there (a commit at a wrong offset could overwrite a record not yet persisted),
/// and persists what is stamped.
fn committed_end(region: &BrokerRegion, from: u64, reported: &mut bool, whose: &str) -> u64 {
    let next = region.next_offset();
    let ring = region.geometry().slots as u64;
    if next >= from && next - from <= ring {
        return next;
    }
    if next < from && region.is_replaying() {
        // Records read back from the file are published again below what is
        // persisted: nothing new to persist yet.
        return from;
    }
    let stamped = region.stamped_end(from, from + ring);
    if !std::mem::replace(reported, true) {
        region.refuse_new_work();
        eprintln!(
            "broker: {whose} ({next}) is corrupt: records are committed up to {stamped}; refusing new messages until the broker restarts"
        );
    }
    stamped
}

/// Whether records of `region`, a partition's ring, are wanted now: it is filling
/// up, or a producer waits on it (for space, or for the disk).
fn ring_is_urgent(region: &shm_layout::BrokerRegion) -> bool {
    let h = region.header();
    region.used_slots() * 8 >= region.geometry().slots as u64
        || h.space.has_sleepers()
        || h.persisted.has_sleepers()
}

/// Publishes a new persisted offset and wakes producers waiting for it (`--fsync`).
pub fn publish(region: &BrokerRegion, persisted: &AtomicU64, mark: u64) {
    if persisted.fetch_max(mark, Ordering::AcqRel) < mark {
        region.publish_persisted(mark);
    }
}

/// The persistence thread's state.
pub struct Persister {
    pub region: Arc<BrokerRegion>,
    pub registry: Arc<Mutex<Registry>>,
    pub buffer: DoubleBuffer,
    /// Next offset to persist.
    pub next: u64,
    /// Every offset below this is written; read by the cleaner.
    pub persisted: Arc<AtomicU64>,
    pub flush_interval: Duration,
    /// Under `--fsync`: where the records handed to the writer wait to be timed.
    pub disk_waits: Option<Arc<DiskWaits>>,
    /// Records of the batch being formatted, for `disk_waits`: (offset, commit µs).
    pub handed: Vec<(u64, u64)>,
    /// Who sent the records persisted, as runs, for naming them once they left the
    /// ring; and the runs of the batch being formatted.
    pub producer_runs: Arc<Mutex<ProducerRuns>>,
    pub batch_runs: Vec<(u64, Arc<str>)>,
    /// The sparse index of the persistence file (SPEC §10); None once it failed,
    /// after saying so: the next start rebuilds it.
    pub index: Option<FileIndex>,
    /// The rings of the other topic-partitions, what was appended of them, and
    /// where the persister is in each (by ring number).
    pub topics: Arc<Topics>,
    pub marks: Arc<PartitionMarks>,
    /// Bytes handed to the buffer in this run.
    pub appended: u64,
    pub cursors: Vec<Option<RingCursor>>,
    /// Rings to look at again on the next pass (a producer waits on them).
    pub carry: Vec<u32>,
    /// When every ring was last looked at (see `drain_partitions`).
    pub swept_at: std::time::Instant,
}

/// Where the persister is in a topic-partition's ring other than `default`/0.
pub struct RingCursor {
    /// The next offset to persist.
    next: u64,
    format: PersistedLines,
    faults: Faults,
}

/// The partition rings' records handed to the buffer, each with the byte count
/// of this run's buffers that covers it: once the writer has written that many
/// bytes, the ring's persisted offset moves (see [`PartitionMarks::settle`]).
#[derive(Default)]
pub struct PartitionMarks(WhenWritten<(Arc<PartitionRing>, u64)>);

impl PartitionMarks {
    /// Settles against `written`, the buffer's count of bytes written.
    pub fn watch(&self, written: Arc<AtomicU64>) {
        self.0.watch(written);
    }

    fn push(&self, end: u64, ring: Arc<PartitionRing>, upto: u64) {
        self.0.push(end, (ring, upto));
    }

    /// Publishes the persisted offset of every ring whose records are written,
    /// freeing their slots.
    pub fn settle(&self) {
        for (ring, upto) in self.0.take_due() {
            ring.persisted_through(upto);
        }
    }
}

/// The persistence file's index, and where the lines the persister appends start.
pub struct FileIndex {
    pub writer: IndexWriter,
    /// The file's length when the writer opened it: where this buffer's bytes go.
    pub base: u64,
    /// Where the next line appended starts.
    pub next_line: u64,
    /// `default`/0, the control region's ring.
    pub partition: PartitionId,
    /// Topics the writer indexes besides `default`, by id.
    pub topics: std::collections::HashSet<u32>,
}

impl FileIndex {
    /// `lines`, whole record lines of `partition`, go to the file next: one look
    /// per batch, so indexing costs nothing per record.
    fn note_lines(index: &mut Option<FileIndex>, partition: PartitionId, lines: &[u8]) {
        let Some(ix) = index else { return };
        match ix.writer.note_lines(partition, ix.next_line, lines) {
            Ok(()) => ix.next_line += lines.len() as u64,
            Err(e) => FileIndex::drop(index, e),
        }
    }

    /// Appends the entries whose lines the file now holds (`written` bytes of
    /// this run).
    fn flush(index: &mut Option<FileIndex>, written: u64) {
        let Some(ix) = index else { return };
        if let Err(e) = ix.writer.flush(ix.base + written) {
            FileIndex::drop(index, e);
        }
    }

    fn drop(index: &mut Option<FileIndex>, e: IndexError) {
        *index = None;
        eprintln!(
            "broker: stopped indexing {PERSIST_FILE}: {e}; readers scan it instead, and the next start rebuilds the index"
        );
    }
}

/// What the persister knows of the region's state beyond its own position.
#[derive(Debug, Default)]
pub struct Findings {
    faults: Faults,
    /// The first committed offset it could not read, while it cannot.
    unreadable: Option<u64>,
}

impl Persister {
    /// Runs until `stop`; then persists every committed record and closes the file.
    /// An error names the file.
    pub fn run(self, stop: Arc<AtomicBool>) -> io::Result<FinalDrain> {
        self.serve(stop)
            .map_err(|e| io::Error::new(e.kind(), format!("{PERSIST_FILE}: {e}")))
    }

    fn serve(mut self, stop: Arc<AtomicBool>) -> io::Result<FinalDrain> {
        let mut names: HashMap<(u32, u32), Arc<str>> = HashMap::new();
        let mut lines = Vec::new();
        let mut format = PersistedLines::default();
        let mut pause = BUSY_PAUSE;
        let mut findings = Findings::default();
        loop {
            let stopping = stop.load(Ordering::Acquire);
            // The region is closing: once a hold in progress ends, nothing more is
            // committed, and the final drain sees every record.
            let complete = stopping && self.region.wait_out_commits(STOP_PATIENCE);
            let progressed = self.drain(&mut names, &mut format, &mut lines, &mut findings)?;
            let (partitions_progressed, partitions_urgent) =
                self.drain_partitions(&mut names, &mut lines, stopping)?;
            let progressed = progressed || partitions_progressed;
            if progressed {
                // Their deliveries are next to log: a slot is freed only once both
                // files hold its record.
                event::notify(&self.region.header().cleaner);
            }
            if stopping {
                let mark = self.next;
                self.buffer.set_mark(mark);
                let (region, persisted) = (self.region.clone(), self.persisted.clone());
                let written = self.buffer.bytes_written();
                self.buffer.close()?;
                self.marks.settle();
                if let Some(ix) = self.index.take() {
                    let end = ix.base + written.load(Ordering::Acquire);
                    if let Err(e) = ix.writer.close(end) {
                        eprintln!("broker: could not close the index of {PERSIST_FILE}: {e}; the next start rebuilds it");
                    }
                }
                publish(&region, &persisted, mark);
                return Ok(match findings.unreadable {
                    Some(offset) => FinalDrain::Unreadable(offset),
                    None if complete => FinalDrain::Complete,
                    None => FinalDrain::HolderStuck,
                });
            }
            let h = self.region.header();
            let urgent = self.urgent() || partitions_urgent;
            self.buffer.tick(urgent)?;
            let written = self.buffer.bytes_written().load(Ordering::Acquire);
            FileIndex::flush(&mut self.index, written);
            publish(&self.region, &self.persisted, self.buffer.written_mark());
            self.marks.settle();
            pause = if urgent {
                BUSY_PAUSE
            } else if progressed {
                PROGRESS_PAUSE.min(self.flush_interval / 2).max(BUSY_PAUSE)
            } else {
                (pause * 2)
                    .min(IDLE_PAUSE)
                    .min(self.flush_interval / 2)
                    .max(BUSY_PAUSE)
            };
            // Under pressure (the ring filling up, or a producer waiting for space),
            // look again as soon as records come rather than after a wake-up, which
            // costs tens of microseconds on a busy host; the writers and the cleaner
            // work after it, so it offers them the core often.
            if progressed
                && urgent
                && event::spin_until_offering_often(|| self.region.next_offset() > self.next)
            {
                continue;
            }
            event::nap(&h.cleaner, event_id::CLEANER, pause);
        }
    }

    /// Whether written records are wanted now: the ring is filling up, or a producer
    /// waits (for space, or for its records to be on disk).
    fn urgent(&self) -> bool {
        let h = self.region.header();
        self.region.used_slots() * 8 >= self.region.geometry().slots as u64
            || h.space.has_sleepers()
            || h.persisted.has_sleepers()
    }

    /// How far `default`/0's committed records reach from the next offset to
    /// persist (see the free function).
    fn committed_end(&self, findings: &mut Findings) -> u64 {
        committed_end(
            &self.region,
            self.next,
            &mut findings.faults.next_offset,
            "the region's next offset",
        )
    }

    /// The name of producer `key` (client entry, generation), from `names` or
    /// else the registry (one lock per producer met).
    fn producer_name(
        &self,
        names: &mut HashMap<(u32, u32), Arc<str>>,
        key: (u32, u32),
    ) -> Arc<str> {
        if let Some(n) = names.get(&key) {
            return n.clone();
        }
        let n = self
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .producer_name(key.0, key.1);
        names.insert(key, n.clone());
        n
    }

    /// Before a batch of `default`/0's lines goes to the writer: its index entries
    /// and its bytes.
    fn note_default_lines(&mut self, lines: &[u8]) {
        if let Some(partition) = self.index.as_ref().map(|ix| ix.partition) {
            FileIndex::note_lines(&mut self.index, partition, lines);
        }
        self.appended += lines.len() as u64;
    }

    /// Before a batch goes to the writer: who sent its records, for the cleaner
    /// (one lock a batch).
    fn note_runs(&mut self) {
        let mut runs = self.producer_runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.extend(&self.batch_runs, self.next);
        drop(runs);
        self.batch_runs.clear();
    }

    /// Under `--fsync`, before a batch goes to the writer: its records start waiting
    /// for the disk (settled by the writer's mark).
    fn note_handed(&mut self) {
        if let Some(waits) = &self.disk_waits {
            waits.handed(&mut self.handed);
        }
    }

    /// Persists what the marked partition rings hold (every ring with `all`, at
    /// the final drain); whether any had records, and whether a producer waits on
    /// one of them (the buffer is then written at once).
    fn drain_partitions(
        &mut self,
        names: &mut HashMap<(u32, u32), Arc<str>>,
        lines: &mut Vec<u8>,
        all: bool,
    ) -> io::Result<(bool, bool)> {
        let mut numbers = Vec::new();
        // Once a second, every ring: one whose mark was never set (its producer
        // died between its commit and its mark) is persisted all the same, and a
        // tail held back by a freed reservation moves on.
        let sweep = !all && self.swept_at.elapsed() >= SWEEP_EVERY;
        if sweep {
            self.swept_at = std::time::Instant::now();
            for ring in self.topics.rings() {
                ring.reclaim();
            }
        }
        if all {
            // The regions are marked closing: once each hold in progress ends,
            // nothing more is committed, and this drain sees every record. A holder
            // stopped past the patience leaves its ring's region for the next start.
            let deadline = std::time::Instant::now() + STOP_PATIENCE;
            for ring in self.topics.rings() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                ring.region.wait_out_commits(left);
            }
        } else {
            self.region.take_pending(&mut numbers);
            numbers.append(&mut self.carry);
        }
        if all || sweep {
            numbers.extend(1..=self.topics.ring_count());
        }
        numbers.sort_unstable();
        numbers.dedup();
        let (mut progressed, mut urgent) = (false, false);
        for number in numbers {
            let Some(ring) = self.topics.ring(number) else {
                continue;
            };
            let slot = number as usize - 1;
            if self.cursors.len() <= slot {
                self.cursors.resize_with(slot + 1, || None);
            }
            let mut cursor = self.cursors[slot].take().unwrap_or_else(|| RingCursor {
                next: ring.persisted.load(Ordering::Acquire),
                format: PersistedLines::for_partition(
                    &ring.partition.topic,
                    ring.partition.partition,
                ),
                faults: Faults::default(),
            });
            self.index_topic_of(&ring);
            let ring_urgent = ring_is_urgent(&ring.region);
            let drained = self.drain_ring(&ring, &mut cursor, names, lines, ring_urgent);
            self.cursors[slot] = Some(cursor);
            progressed |= drained?;
            if ring_urgent {
                urgent = true;
                // Looked at again next pass, until its producers stop waiting.
                self.carry.push(number);
            }
        }
        Ok((progressed, urgent))
    }

    /// Makes sure the index knows the topic of `ring` (created since it opened).
    fn index_topic_of(&mut self, ring: &PartitionRing) {
        let Some(ix) = &mut self.index else { return };
        let tp = &ring.partition;
        if ix.topics.contains(&tp.topic_id) {
            return;
        }
        let partitions = self
            .topics
            .records()
            .iter()
            .find(|r| r.id == tp.topic_id)
            .map_or(tp.partition + 1, |r| r.partitions);
        match ix.writer.add_topic(&tp.topic, tp.topic_id, partitions) {
            Ok(()) => {
                ix.topics.insert(tp.topic_id);
            }
            Err(e) => FileIndex::drop(&mut self.index, e),
        }
    }

    /// Formats the committed records of `ring` not yet persisted, in batches of
    /// about [`BATCH_BYTES`]; true if there were any. A record it cannot read
    /// stops it there (said once, and the ring refuses new messages).
    fn drain_ring(
        &mut self,
        ring: &Arc<PartitionRing>,
        cursor: &mut RingCursor,
        names: &mut HashMap<(u32, u32), Arc<str>>,
        lines: &mut Vec<u8>,
        urgent: bool,
    ) -> io::Result<bool> {
        let region = &ring.region;
        let committed = committed_end(
            region,
            cursor.next,
            &mut cursor.faults.next_offset,
            &format!("the next offset of {}", ring.partition),
        );
        let start = cursor.next;
        let partition = ring.partition.id();
        while cursor.next < committed {
            let o = cursor.next;
            let record = match region.read_record(o) {
                Ok(r) => r,
                Err(e) => {
                    if !std::mem::replace(&mut cursor.faults.record, true) {
                        region.refuse_new_work();
                        eprintln!(
                            "broker: cannot persist offset {o} of {}: {e}; it refuses new messages until the broker restarts",
                            ring.partition
                        );
                    }
                    break;
                }
            };
            let key = (record.producer, record.producer_generation);
            let producer = self.producer_name(names, key);
            cursor.format.push(
                lines,
                o,
                record.timestamp_us,
                &producer,
                record.key,
                record.payload,
                record.headers,
            );
            cursor.next += 1;
            if lines.len() >= BATCH_BYTES {
                self.hand_partition_lines(ring, partition, cursor.next, lines, urgent)?;
            }
        }
        if !lines.is_empty() {
            self.hand_partition_lines(ring, partition, cursor.next, lines, urgent)?;
        }
        Ok(cursor.next > start)
    }

    /// Hands a batch of `ring`'s lines, which complete its offsets below `upto`,
    /// to the buffer.
    fn hand_partition_lines(
        &mut self,
        ring: &Arc<PartitionRing>,
        partition: PartitionId,
        upto: u64,
        lines: &mut Vec<u8>,
        urgent: bool,
    ) -> io::Result<()> {
        FileIndex::note_lines(&mut self.index, partition, lines);
        self.appended += lines.len() as u64;
        self.marks.push(self.appended, ring.clone(), upto);
        // The mark of `default`/0 does not move.
        self.buffer.append_batch(lines, self.next, urgent)
    }

    /// Formats every committed record not yet persisted; true if there were any.
    /// Lines are formatted in batches of about [`BATCH_BYTES`] and handed to the
    /// buffer a batch at a time. Stops at a record it cannot read (said once).
    fn drain(
        &mut self,
        names: &mut HashMap<(u32, u32), Arc<str>>,
        format: &mut PersistedLines,
        lines: &mut Vec<u8>,
        findings: &mut Findings,
    ) -> io::Result<bool> {
        let committed = self.committed_end(findings);
        let start = self.next;
        findings.unreadable = None;
        let mut last: Option<((u32, u32), Arc<str>)> = None;
        while self.next < committed {
            let o = self.next;
            // The records were written on another core: ask for them early.
            self.region.prefetch_entry(o + 2 * PREFETCH_AHEAD);
            if o + PREFETCH_AHEAD < committed {
                self.region.prefetch_payload(o + PREFETCH_AHEAD);
            }
            match self.region.read_record(o) {
                Ok(r) => {
                    let key = (r.producer, r.producer_generation);
                    // Runs of records from one producer are the common case.
                    let producer = match &last {
                        Some((k, n)) if *k == key => n,
                        _ => {
                            let n = self.producer_name(names, key);
                            self.batch_runs.push((o, n.clone()));
                            &last.insert((key, n)).1
                        }
                    };
                    format.push(
                        lines,
                        o,
                        r.timestamp_us,
                        producer,
                        r.key,
                        r.payload,
                        r.headers,
                    );
                    if self.disk_waits.is_some() {
                        self.handed.push((o, r.timestamp_us));
                    }
                }
                Err(e) => {
                    // Below `next_offset`, every record is stamped: this index
                    // entry was overwritten. Nothing after it is persisted either,
                    // so that the file never has a gap.
                    findings.unreadable = Some(o);
                    if !std::mem::replace(&mut findings.faults.record, true) {
                        self.region.refuse_new_work();
                        eprintln!(
                            "broker: cannot persist offset {o}: {e}; refusing new messages until the broker restarts, which recovers what the region holds"
                        );
                    }
                    if !lines.is_empty() {
                        self.note_default_lines(lines);
                        self.note_runs();
                        self.note_handed();
                        let urgent = self.urgent();
                        self.buffer.append_batch(lines, self.next, urgent)?;
                    }
                    break;
                }
            }
            self.next += 1;
            if lines.len() >= BATCH_BYTES || self.next == committed {
                self.note_default_lines(lines);
                self.note_runs();
                self.note_handed();
                let urgent = self.urgent();
                self.buffer.append_batch(lines, self.next, urgent)?;
            }
        }
        if names.len() > 4096 {
            names.clear();
        }
        Ok(self.next > start)
    }
}
