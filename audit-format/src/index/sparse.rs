//! One partition's index, for reading: loaded and checked against the persistence
//! file, then looked up by offset, and topped up with the entries its writer
//! appends meanwhile.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::index::format::{append_entries, IndexEntry, ENTRY_LEN};
use crate::index::scan::{load_checkpoint, load_index, open_persistence, scan_record_lines};
use crate::index::writer::PartitionEntries;
use crate::index::{IndexError, TopicPartition};

/// The entries of one topic-partition's index, in memory.
#[derive(Debug)]
pub struct SparseIndex {
    partition: TopicPartition,
    data_dir: PathBuf,
    /// The index file; for an index built by a scan, the persistence file.
    path: PathBuf,
    /// The index file, to read the entries appended to it; None when built by a scan.
    file: Option<File>,
    /// How much of `file` is loaded.
    loaded_len: u64,
    step: u64,
    entries: Vec<IndexEntry>,
    /// The file holds no record of the partition before this byte.
    scan_from: u64,
}

impl SparseIndex {
    /// Opens `partition`'s index in `data_dir` and checks it against the
    /// persistence file there (see the module docs of [`crate::index`] for what
    /// is checked). An index that cannot be used is an
    /// [`IndexError::NeedsRebuild`] naming the problem.
    pub fn open(data_dir: &Path, partition: &TopicPartition) -> Result<SparseIndex, IndexError> {
        let (_, mut lines) = open_persistence(data_dir)?;
        let (checkpoint, _) = load_checkpoint(data_dir, &mut lines, false)?;
        let loaded = load_index(data_dir, partition, checkpoint.step, &mut lines, false)?;
        Ok(SparseIndex {
            partition: partition.clone(),
            data_dir: data_dir.to_path_buf(),
            path: loaded.path,
            file: Some(loaded.file),
            loaded_len: loaded.len,
            step: loaded.step,
            // Without entries, the partition had no record before the checkpoint.
            scan_from: loaded
                .entries
                .first()
                .map_or(checkpoint.through, |e| e.position),
            entries: loaded.entries,
        })
    }

    /// Builds `partition`'s index in memory by one scan of the persistence file in
    /// `data_dir`, writing nothing: for a reader that finds the index unusable
    /// while its writer runs (only the writer may replace the files).
    pub fn from_scan(
        data_dir: &Path,
        partition: &TopicPartition,
        step: u64,
    ) -> Result<SparseIndex, IndexError> {
        let (path, mut lines) = open_persistence(data_dir)?;
        let field = partition.topic_field();
        let mut entries = PartitionEntries::new(step, None);
        let end = scan_record_lines(&mut lines, 0, |position, line, head| {
            if head.topic == field && head.partition == partition.partition {
                entries.note(head.offset, position, position + line.len() as u64);
            }
        })
        .map_err(IndexError::io(&path))?;
        let entries = entries.into_entries();
        Ok(SparseIndex {
            partition: partition.clone(),
            data_dir: data_dir.to_path_buf(),
            path,
            file: None,
            loaded_len: 0,
            step,
            scan_from: entries.first().map_or(end, |e| e.position),
            entries,
        })
    }

    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The data directory whose persistence file this indexes.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The index file (the persistence file, for an index built by a scan).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// S: at most this many bytes of file lie between an entry and the next record
    /// of the partition without an entry.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The partition's first record in the file, if it has one.
    pub fn first(&self) -> Option<IndexEntry> {
        self.entries.first().copied()
    }

    /// The last entry at or below `offset`, and its number.
    pub fn floor(&self, offset: u64) -> Option<(usize, IndexEntry)> {
        let above = self.entries.partition_point(|e| e.offset <= offset);
        let number = above.checked_sub(1)?;
        Some((number, self.entries[number]))
    }

    /// Where a reader starts when no entry is at or below its offset: the file holds
    /// no record of the partition before this byte.
    pub fn scan_from(&self) -> u64 {
        self.scan_from
    }

    /// Loads the entries appended to the index file since it was loaded; how many.
    /// A last entry being appended is left for a later call.
    pub fn refresh(&mut self) -> Result<usize, IndexError> {
        let Some(file) = &self.file else {
            return Ok(0);
        };
        let io_error = IndexError::io(&self.path);
        let len = file.metadata().map_err(io_error)?.len();
        let whole = len.saturating_sub(self.loaded_len) / ENTRY_LEN as u64 * ENTRY_LEN as u64;
        if whole == 0 {
            return Ok(0);
        }
        let mut bytes = vec![0; whole as usize];
        file.read_exact_at(&mut bytes, self.loaded_len)
            .map_err(IndexError::io(&self.path))?;
        let before = self.entries.len();
        if let Err(problem) = append_entries(&mut self.entries, &bytes) {
            self.entries.truncate(before);
            return Err(IndexError::rebuild(&self.path, problem));
        }
        self.loaded_len += whole;
        if before == 0 {
            if let Some(first) = self.entries.first() {
                self.scan_from = first.position;
            }
        }
        Ok(self.entries.len() - before)
    }
}
