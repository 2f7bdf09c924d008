//! The writer side of the indexes, for the process that appends to the persistence
//! file (the broker's persister).
//!
//! # What the caller must do
//! - Open the writer once the persistence file ends with a whole line (the broker
//!   removes a cut last line at start-up), and before appending to it.
//! - [`IndexWriter::note`] every record line it appends, in file order, with the
//!   byte position where the line starts: each line starts where the last one
//!   ended. Noting costs no system call.
//! - [`IndexWriter::flush`] with `written` only once every byte of the persistence
//!   file before `written` is written (and, when the owner syncs the file, synced):
//!   only entries whose lines end at or before `written` are appended, so an entry
//!   never points past what the file holds. Calling it after each buffer written
//!   to the file keeps the indexes a buffer behind at most.
//! - [`IndexWriter::close`] at a clean stop, after the last write: it writes a
//!   checkpoint, so the next start reads nothing to catch up.
//!
//! A writer that dies between a write of the file and the flush leaves indexes
//! that lag the file: still usable, and brought up to date by the next
//! [`IndexWriter::open`], which reads the file from the checkpoint on.

use rustc_hash::FxHashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::file_lines::FileLines;
use crate::index::format::{index_file_name, Checkpoint, IndexEntry, IndexHeader, CHECKPOINT_FILE};
use crate::index::rebuild::{rebuild, write_atomically, Rebuilt};
use crate::index::scan::{
    first_record_line, load_checkpoint, load_index, open_persistence, scan_record_lines,
};
use crate::index::{IndexConfig, IndexError, IndexProblem, IndexedTopics, PartitionId};
use crate::records::PersistedLineHead;

/// Where the step rule puts one partition's entries, and the entries made and not
/// yet written. The one place the rule lives: the writer, [`rebuild`] and scans
/// all place entries through it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionEntries {
    step: u64,
    last_entry: Option<IndexEntry>,
    /// The highest offset noted.
    last_offset: Option<u64>,
    /// Entries not yet written, each with the end of its line.
    pending: Vec<(IndexEntry, u64)>,
}

impl PartitionEntries {
    /// Entries that follow `last_entry` (None: the partition has no record yet).
    pub(crate) fn new(step: u64, last_entry: Option<IndexEntry>) -> Self {
        PartitionEntries {
            step,
            last_entry,
            last_offset: last_entry.map(|e| e.offset),
            pending: Vec::new(),
        }
    }

    /// The record at `offset` is the line from `position` to `line_end`. It gets an
    /// entry if it is the partition's first record, or if at least a step of file
    /// has passed since the last entry; true if it did. A line that would not
    /// follow the last entry (never, in a file written in order) gets none, so
    /// entries always increase.
    #[inline]
    pub(crate) fn note(&mut self, offset: u64, position: u64, line_end: u64) -> bool {
        let due = match self.last_entry {
            None => true,
            Some(last) => {
                position > last.position
                    && offset > last.offset
                    && position - last.position >= self.step
            }
        };
        if due {
            let entry = IndexEntry { offset, position };
            self.pending.push((entry, line_end));
            self.last_entry = Some(entry);
        }
        self.last_offset = Some(self.last_offset.map_or(offset, |l| l.max(offset)));
        due
    }

    /// Whether the line at `position` is already covered by the entries (at or
    /// before the last one): a writer catching up after a crash passes over it.
    fn covers(&self, position: u64) -> bool {
        self.last_entry.is_some_and(|e| position <= e.position)
    }

    /// The entries made, written or not (for a whole-file scan).
    pub(crate) fn into_entries(self) -> Vec<IndexEntry> {
        self.pending.into_iter().map(|(e, _)| e).collect()
    }
}

/// One partition's index file, open for appending.
#[derive(Debug)]
struct PartitionFile {
    path: PathBuf,
    file: File,
    /// Its length: the header and the entries written.
    len: u64,
    entries: PartitionEntries,
    /// Entries were appended since the last checkpoint.
    unsynced: bool,
    /// It is in the writer's list of partitions with pending entries.
    queued: bool,
}

impl PartitionFile {
    /// Appends the pending entries whose lines end at or before `written`, in one
    /// write. A failed write is cut back off, so the file never keeps part of one.
    fn write_due(&mut self, written: u64) -> Result<(), IndexError> {
        let pending = &mut self.entries.pending;
        let due = pending
            .iter()
            .take_while(|(_, end)| *end <= written)
            .count();
        if due == 0 {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(due * 16);
        for (entry, _) in &pending[..due] {
            entry.push_bytes(&mut bytes);
        }
        if let Err(e) = self.file.write_all(&bytes) {
            // Best effort: should the cut fail too, the next open finds the
            // partial entry and rebuilds.
            let _ = self.file.set_len(self.len);
            return Err(IndexError::io(&self.path)(e));
        }
        pending.drain(..due);
        self.len += bytes.len() as u64;
        self.unsynced = true;
        Ok(())
    }
}

/// How [`IndexWriter::open`] found the indexes.
#[derive(Debug)]
pub enum WriterStart {
    /// They were usable; `caught_up_bytes` of the persistence file, after the
    /// checkpoint, were read to bring them up to date.
    Resumed { caught_up_bytes: u64 },
    /// An index or the checkpoint could not be used (`reason`), so every index was
    /// rebuilt from the persistence file (a new data directory starts this way).
    Rebuilt {
        reason: IndexError,
        rebuilt: Rebuilt,
    },
}

/// Appends index entries for the record lines appended to the persistence file
/// (see the module docs for what the caller must do).
#[derive(Debug)]
pub struct IndexWriter {
    data_dir: PathBuf,
    config: IndexConfig,
    topics: IndexedTopics,
    /// The persistence file, read for its first record line.
    persistence: FileLines,
    persistence_path: PathBuf,
    /// Looked up for every record line: a fast hash, not the default SipHash.
    partitions: FxHashMap<PartitionId, PartitionFile>,
    /// Partitions with pending entries.
    queued: Vec<PartitionId>,
    /// Every record line before this byte has been noted.
    noted_through: u64,
    /// As written in the checkpoint file.
    checkpoint: Checkpoint,
    checkpoint_file: File,
}

impl IndexWriter {
    /// Opens the indexes of `topics`' partitions in `data_dir`: checks each one and
    /// the checkpoint against the persistence file and reads the file from the
    /// checkpoint on to catch up; if any cannot be used, rebuilds them all first.
    pub fn open(
        data_dir: &Path,
        topics: &IndexedTopics,
        config: IndexConfig,
    ) -> Result<(IndexWriter, WriterStart), IndexError> {
        match IndexWriter::resume(data_dir, topics, config) {
            Ok((writer, caught_up_bytes)) => Ok((writer, WriterStart::Resumed { caught_up_bytes })),
            Err(reason) if reason.needs_rebuild() => {
                let rebuilt = rebuild(data_dir, topics, config.step)?;
                let (writer, _) = IndexWriter::resume(data_dir, topics, config)?;
                Ok((writer, WriterStart::Rebuilt { reason, rebuilt }))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens usable indexes and catches up; how many bytes that read.
    fn resume(
        data_dir: &Path,
        topics: &IndexedTopics,
        config: IndexConfig,
    ) -> Result<(IndexWriter, u64), IndexError> {
        let (persistence_path, mut persistence) = open_persistence(data_dir)?;
        let (checkpoint, checkpoint_file) = load_checkpoint(data_dir, &mut persistence, true)?;
        if checkpoint.step != config.step {
            return Err(IndexError::rebuild(
                data_dir.join(CHECKPOINT_FILE),
                IndexProblem::Step {
                    found: checkpoint.step,
                    expected: config.step,
                },
            ));
        }
        let mut partitions = FxHashMap::default();
        for tp in topics.partitions() {
            let loaded = load_index(data_dir, &tp, config.step, &mut persistence, true)?;
            partitions.insert(
                tp.id(),
                PartitionFile {
                    path: loaded.path,
                    file: loaded.file,
                    len: loaded.len,
                    entries: PartitionEntries::new(config.step, loaded.entries.last().copied()),
                    unsynced: false,
                    queued: false,
                },
            );
        }
        let end = scan_record_lines(
            &mut persistence,
            checkpoint.through,
            |position, line, head| {
                let Some(p) = topics
                    .lookup(head.topic, head.partition)
                    .and_then(|id| partitions.get_mut(&id))
                else {
                    return;
                };
                if !p.entries.covers(position) {
                    p.entries
                        .note(head.offset, position, position + line.len() as u64);
                }
            },
        )
        .map_err(IndexError::io(&persistence_path))?;
        let mut writer = IndexWriter {
            data_dir: data_dir.to_path_buf(),
            config,
            topics: topics.clone(),
            persistence,
            persistence_path,
            partitions,
            queued: Vec::new(),
            noted_through: end,
            checkpoint,
            checkpoint_file,
        };
        let caught_up = end - checkpoint.through;
        if caught_up > 0 {
            for (id, p) in &mut writer.partitions {
                if !p.entries.pending.is_empty() {
                    p.queued = true;
                    writer.queued.push(*id);
                }
            }
            writer.flush(end)?;
            writer.write_checkpoint(end)?;
        }
        Ok((writer, caught_up))
    }

    /// Adds a topic created now (it has no record in the persistence file yet):
    /// creates an empty index for each of its partitions not indexed yet. A topic
    /// already indexed may grow its partition count this way.
    pub fn add_topic(&mut self, name: &str, id: u32, partitions: u32) -> Result<(), IndexError> {
        self.topics.add(name, id, partitions)?;
        for partition in 0..partitions {
            let key = PartitionId {
                topic_id: id,
                partition,
            };
            if self.partitions.contains_key(&key) {
                continue;
            }
            let header = IndexHeader {
                topic_id: id,
                partition,
                step: self.config.step,
            };
            let name = index_file_name(id, partition);
            write_atomically(&self.data_dir, &name, &header.to_bytes())?;
            let path = self.data_dir.join(&name);
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(IndexError::io(&path))?;
            self.partitions.insert(
                key,
                PartitionFile {
                    path,
                    file,
                    len: header.to_bytes().len() as u64,
                    entries: PartitionEntries::new(self.config.step, None),
                    unsynced: false,
                    queued: false,
                },
            );
        }
        Ok(())
    }

    /// The record at `offset` of `partition` was appended to the persistence file
    /// as the line of `line_len` bytes (newline included) at byte `position`. Takes
    /// no system call; the entry it may make is appended by a later
    /// [`IndexWriter::flush`].
    #[inline]
    pub fn note(
        &mut self,
        partition: PartitionId,
        offset: u64,
        position: u64,
        line_len: u64,
    ) -> Result<(), IndexError> {
        if position != self.noted_through {
            return Err(IndexError::LineOutOfOrder {
                position,
                expected: self.noted_through,
            });
        }
        if line_len == 0 {
            return Err(IndexError::EmptyLine { position });
        }
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Err(IndexError::UnknownPartition {
                topic_id: partition.topic_id,
                partition: partition.partition,
            });
        };
        if let Some(last) = p.entries.last_offset.filter(|&last| offset <= last) {
            return Err(IndexError::OffsetOutOfOrder {
                topic_id: partition.topic_id,
                partition: partition.partition,
                offset,
                last,
            });
        }
        if p.entries.note(offset, position, position + line_len) && !p.queued {
            p.queued = true;
            self.queued.push(partition);
        }
        self.noted_through = position + line_len;
        Ok(())
    }

    /// The record lines in `lines`, all of `partition`, were appended to the
    /// persistence file at byte `position`: the same entries as noting each line
    /// in turn, for the cost of one look at the batch. Only the lines where the
    /// step rule puts an entry, and the last line, are read (for their offsets),
    /// so a persister that hands over a batch of lines at a time pays nothing per
    /// record. `lines` holds whole lines, each ending with its newline.
    pub fn note_lines(
        &mut self,
        partition: PartitionId,
        position: u64,
        lines: &[u8],
    ) -> Result<(), IndexError> {
        if position != self.noted_through {
            return Err(IndexError::LineOutOfOrder {
                position,
                expected: self.noted_through,
            });
        }
        if lines.is_empty() {
            return Ok(());
        }
        if lines.last() != Some(&b'\n') {
            return Err(IndexError::NotWholeLines { position });
        }
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Err(IndexError::UnknownPartition {
                topic_id: partition.topic_id,
                partition: partition.partition,
            });
        };
        let end = position + lines.len() as u64;
        let offset_at = |start: u64| -> Result<(u64, u64), IndexError> {
            let at = (start - position) as usize;
            let len = memchr::memchr(b'\n', &lines[at..]).map_or(lines.len() - at, |n| n + 1);
            PersistedLineHead::parse(&lines[at..at + len])
                .map(|head| (head.offset, start + len as u64))
                .map_err(|_| IndexError::NotWholeLines { position: start })
        };
        let last_line = memchr::memrchr(b'\n', &lines[..lines.len() - 1]).map_or(0, |n| n + 1);
        let (last_offset, _) = offset_at(position + last_line as u64)?;
        if let Some(last) = p.entries.last_offset.filter(|&last| last_offset <= last) {
            return Err(IndexError::OffsetOutOfOrder {
                topic_id: partition.topic_id,
                partition: partition.partition,
                offset: last_offset,
                last,
            });
        }
        let mut queue = false;
        loop {
            // The first line starting at or after the step from the last entry.
            let due = p
                .entries
                .last_entry
                .map_or(position, |e| e.position.saturating_add(p.entries.step));
            let start = if due <= position {
                position
            } else if due >= end {
                break;
            } else {
                let from = (due - position - 1) as usize;
                match memchr::memchr(b'\n', &lines[from..]) {
                    Some(n) if from + n + 1 < lines.len() => position + (from + n + 1) as u64,
                    _ => break,
                }
            };
            let (offset, line_end) = offset_at(start)?;
            if !p.entries.note(offset, start, line_end) {
                break;
            }
            queue = true;
        }
        p.entries.last_offset = Some(
            p.entries
                .last_offset
                .map_or(last_offset, |l| l.max(last_offset)),
        );
        if queue && !p.queued {
            p.queued = true;
            self.queued.push(partition);
        }
        self.noted_through = end;
        Ok(())
    }

    /// Every byte of the persistence file before `written` is written (synced, if
    /// the owner syncs it): appends the entries whose lines end there or before,
    /// one write per partition that has any, and writes a checkpoint when
    /// [`IndexConfig::checkpoint_every`] more bytes are indexed.
    pub fn flush(&mut self, written: u64) -> Result<(), IndexError> {
        let mut i = 0;
        while let Some(&id) = self.queued.get(i) {
            let Some(p) = self.partitions.get_mut(&id) else {
                self.queued.swap_remove(i);
                continue;
            };
            p.write_due(written)?;
            if p.entries.pending.is_empty() {
                p.queued = false;
                self.queued.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let through = written.min(self.noted_through);
        if through
            >= self
                .checkpoint
                .through
                .saturating_add(self.config.checkpoint_every)
        {
            self.write_checkpoint(through)?;
        }
        Ok(())
    }

    /// Flushes with `written` (see [`IndexWriter::flush`]) and writes a
    /// checkpoint: the next [`IndexWriter::open`] has nothing to catch up.
    pub fn close(mut self, written: u64) -> Result<(), IndexError> {
        self.flush(written)?;
        let through = written.min(self.noted_through);
        if through != self.checkpoint.through || self.partitions.values().any(|p| p.unsynced) {
            self.write_checkpoint(through)?;
        }
        Ok(())
    }

    /// The indexes are complete for the lines before `through`: syncs the entries
    /// appended since the last checkpoint, then records `through` (and the
    /// persistence file's first record line, once there is one) in the checkpoint,
    /// synced. Syncing first keeps a checkpoint from ever covering entries a power
    /// cut could lose.
    fn write_checkpoint(&mut self, through: u64) -> Result<(), IndexError> {
        for p in self.partitions.values_mut().filter(|p| p.unsynced) {
            p.file.sync_data().map_err(IndexError::io(&p.path))?;
            p.unsynced = false;
        }
        let anchor = match self.checkpoint.anchor {
            Some(anchor) => Some(anchor),
            None => first_record_line(&mut self.persistence, through)
                .map_err(IndexError::io(&self.persistence_path))?,
        };
        let checkpoint = Checkpoint {
            step: self.config.step,
            through,
            anchor,
        };
        let path = self.data_dir.join(CHECKPOINT_FILE);
        self.checkpoint_file
            .write_all_at(&checkpoint.to_bytes(), 0)
            .and_then(|()| self.checkpoint_file.sync_data())
            .map_err(IndexError::io(&path))?;
        self.checkpoint = checkpoint;
        Ok(())
    }

    /// The byte up to which every record line has been noted.
    pub fn noted_through(&self) -> u64 {
        self.noted_through
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes records at `(offset, position, len)` and returns the entries made.
    fn entries_for(step: u64, lines: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
        let mut entries = PartitionEntries::new(step, None);
        for &(offset, position, len) in lines {
            entries.note(offset, position, position + len);
        }
        entries
            .into_entries()
            .into_iter()
            .map(|e| (e.offset, e.position))
            .collect()
    }

    #[test]
    fn the_first_record_and_each_one_a_step_after_the_last_entry_get_entries() {
        // Records of this partition at 100, 150, 199 (99 bytes after the entry at
        // 100), 200 (exactly 100 after), 250, 320 (120 after 200), ...
        let lines = [
            (5, 100, 10),
            (6, 150, 10),
            (7, 199, 1),
            (8, 200, 10),
            (9, 250, 10),
            (10, 320, 10),
            (11, 1000, 10),
        ];
        assert_eq!(
            entries_for(100, &lines),
            [(5, 100), (8, 200), (10, 320), (11, 1000)]
        );
        // A step of 0 indexes every record; a huge one only the first.
        assert_eq!(entries_for(0, &lines).len(), lines.len());
        assert_eq!(entries_for(u64::MAX, &lines), [(5, 100)]);
    }

    #[test]
    fn a_line_out_of_order_never_makes_entries_decrease() {
        assert_eq!(
            entries_for(10, &[(5, 100, 10), (4, 200, 10), (6, 150, 10), (7, 300, 1)]),
            [(5, 100), (6, 150), (7, 300)]
        );
    }

    #[test]
    fn lines_at_or_before_the_last_entry_are_covered() {
        let e = PartitionEntries::new(
            64,
            Some(IndexEntry {
                offset: 3,
                position: 500,
            }),
        );
        assert!(e.covers(500) && e.covers(20) && !e.covers(501));
        assert!(!PartitionEntries::new(64, None).covers(0));
    }
}
