//! Rebuilding every index from the persistence file, in one scan.

use std::collections::BTreeMap;
use std::path::Path;

use crate::index::format::{index_file_name, Checkpoint, IndexHeader, CHECKPOINT_FILE};
use crate::index::scan::{open_persistence, scan_record_lines};
use crate::index::writer::PartitionEntries;
use crate::index::{IndexError, IndexedTopics};

/// What [`rebuild`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Index files written (one per indexed partition, records or not).
    pub partitions: usize,
    /// Entries written, over all of them.
    pub entries: u64,
    /// Record lines read.
    pub records: u64,
    /// Record lines of topics or partitions that are not indexed.
    pub unindexed_records: u64,
    /// Where the whole lines of the persistence file end: the checkpoint.
    pub through: u64,
}

/// Reads the persistence file of `data_dir` once and rewrites the index of every
/// partition of `topics` with step `step`, then the checkpoint. Each file is
/// replaced atomically (written to a temporary name, synced, renamed over), and the
/// checkpoint last, once the directory holds the new indexes: a rebuild cut short
/// leaves files that a later open either uses or rebuilds again. Run it only where
/// no [`crate::index::IndexWriter`] has the files open (see the module docs).
pub fn rebuild(data_dir: &Path, topics: &IndexedTopics, step: u64) -> Result<Rebuilt, IndexError> {
    let (persistence_path, mut lines) = open_persistence(data_dir)?;
    let mut partitions: BTreeMap<_, _> = topics
        .partitions()
        .into_iter()
        .map(|tp| (tp.id(), PartitionEntries::new(step, None)))
        .collect();
    let mut anchor = None;
    let (mut records, mut unindexed_records) = (0, 0);
    let through = scan_record_lines(&mut lines, 0, |position, line, head| {
        anchor.get_or_insert_with(|| crate::index::format::Anchor::of_line(position, line));
        records += 1;
        match topics
            .lookup(head.topic, head.partition)
            .and_then(|id| partitions.get_mut(&id))
        {
            Some(entries) => {
                entries.note(head.offset, position, position + line.len() as u64);
            }
            None => unindexed_records += 1,
        }
    })
    .map_err(IndexError::io(&persistence_path))?;

    let mut rebuilt = Rebuilt {
        partitions: partitions.len(),
        entries: 0,
        records,
        unindexed_records,
        through,
    };
    for (id, entries) in partitions {
        let header = IndexHeader {
            topic_id: id.topic_id,
            partition: id.partition,
            step,
        };
        let mut bytes = header.to_bytes().to_vec();
        for entry in entries.into_entries() {
            entry.push_bytes(&mut bytes);
            rebuilt.entries += 1;
        }
        write_atomically(
            data_dir,
            &index_file_name(id.topic_id, id.partition),
            &bytes,
        )?;
    }
    let checkpoint = Checkpoint {
        step,
        through,
        anchor,
    };
    write_atomically(data_dir, CHECKPOINT_FILE, &checkpoint.to_bytes())?;
    Ok(rebuilt)
}

/// [`crate::durable::write_atomically`], for the index's own files.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IndexError> {
    crate::durable::write_atomically(dir, name, bytes).map_err(IndexError::io(&dir.join(name)))
}
