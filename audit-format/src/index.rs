//! The sparse index of `persistencia_mensajes.txt` (SPEC §10): for each
//! topic-partition, where some of its records start in the file, so that a reader
//! can start at any offset after reading at most one step of the file (S bytes,
//! 64 KiB by default) plus one record, never the file from its start.
//! `docs/files.md` ("The index files") describes the files byte by byte.
//!
//! # Layout
//! - [`format`](mod@format): file names, and the bytes of an index file (a header, then
//!   fixed-size entries `(offset, byte position)`) and of the checkpoint.
//! - [`SparseIndex`] (`sparse.rs`): one partition's index, opened and validated
//!   for reading against the persistence file, or built in memory by a scan.
//! - [`IndexWriter`] (`writer.rs`): the writer side, for the broker's persister:
//!   told of each record line it appends, it appends entries to the indexes after
//!   the file bytes they point to are written.
//! - [`rebuild`] (`rebuild.rs`): one scan of the persistence file that rewrites
//!   every partition's index and the checkpoint, each atomically.
//! - `scan.rs`: reading record lines of the persistence file for the above.
//!
//! # The files
//! - `index-<topic id>-<partition>.idx` ([`index_file_name`]), one per indexed
//!   topic-partition, even one without records yet: a header (magic, format
//!   version, topic id, partition, the step S), then entries. The first record of
//!   the partition always has an entry; after that, a record line gets one when at
//!   least S bytes of file have passed since the partition's last entry. Entries
//!   strictly increase in offset and position. The file only grows by whole
//!   entries while its writer runs; a rebuild replaces it.
//! - `index-checkpoint.idx` ([`CHECKPOINT_FILE`]): the byte `through` which every
//!   index is complete, the step, and the persistence file's first record line
//!   (its position, length and CRC-32), which tells that file from a replacement.
//!   The writer rewrites it only after syncing the indexes it covers, so a writer
//!   that restarts after a crash only reads the file from `through` on to catch
//!   up, and an index never misses its partition's first record.
//!
//! # What makes an index unusable ("rebuild needed")
//! A missing index or checkpoint; a header that is not this partition's, or of
//! another format version or step; a length that ends inside an entry; entries
//! that do not increase; a checkpoint whose checksum fails, that reaches past the
//! end of the persistence file, or whose first record line is not the file's (the
//! file was replaced); an entry whose line is not its offset's record of this
//! partition, starting a line, whole in the file (the file was cut shorter, or the
//! entry was scribbled on). Opening checks the first and last entries; a reader
//! checks the entry it starts from at each seek. An index that lags the file (its
//! writer died before appending the last entries) is usable: a reader scans
//! forward from the last entry.
//!
//! # Who writes
//! One [`IndexWriter`] per data directory, owned by the process that appends to
//! the persistence file. [`rebuild`] replaces the index files, so it runs only
//! where no writer has them open: [`IndexWriter::open`] calls it when it must,
//! and a reader with no writer running may. A reader that finds an index unusable
//! while a writer runs uses [`SparseIndex::from_scan`] instead.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use crate::escape::escape_into;
use crate::records::{TOPIC, TOPIC_ID};

pub mod format;
mod rebuild;
pub(crate) mod scan;
mod sparse;
mod writer;

pub use format::{index_file_name, IndexEntry, CHECKPOINT_FILE};
pub use rebuild::{rebuild, Rebuilt};
pub use sparse::SparseIndex;
pub use writer::{IndexWriter, WriterStart};

/// S by default: an index entry per partition at least every 64 KiB of file.
pub const DEFAULT_STEP: u64 = 64 * 1024;
/// How much of the file the writer indexes between two checkpoints by default: a
/// writer restarted after a crash reads at most about this much to catch up.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 64 * 1024 * 1024;

/// How the indexes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// S, in bytes of the persistence file (see the module docs).
    pub step: u64,
    /// The writer writes a checkpoint each time it has indexed this many more
    /// bytes of the persistence file (and when it closes).
    pub checkpoint_every: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            step: DEFAULT_STEP,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }
}

/// A topic-partition as the files name it: record lines by the topic's name,
/// index files by its numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub topic_id: u32,
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of `topic`, whose id is `topic_id`.
    pub fn new(topic: &str, topic_id: u32, partition: u32) -> Self {
        TopicPartition {
            topic: topic.to_string(),
            topic_id,
            partition,
        }
    }

    /// The topic `default`'s single partition: today's only one.
    pub fn default_topic() -> Self {
        TopicPartition::new(TOPIC, TOPIC_ID, 0)
    }

    /// How index files name it.
    pub fn id(&self) -> PartitionId {
        PartitionId {
            topic_id: self.topic_id,
            partition: self.partition,
        }
    }

    /// The topic field of its record lines.
    pub(crate) fn topic_field(&self) -> Vec<u8> {
        let mut field = Vec::new();
        escape_into(self.topic.as_bytes(), &mut field);
        field
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A topic-partition by numbers: how the writer is told which partition a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic_id: u32,
    pub partition: u32,
}

/// The topics whose partitions are indexed: each one's name (as record lines name
/// it), id (as index files are named) and number of partitions.
#[derive(Debug, Clone, Default)]
pub struct IndexedTopics {
    /// Keyed by the topic field of record lines.
    by_field: HashMap<Vec<u8>, Topic>,
}

#[derive(Debug, Clone)]
struct Topic {
    name: String,
    id: u32,
    partitions: u32,
}

impl IndexedTopics {
    /// No topics.
    pub fn new() -> Self {
        IndexedTopics::default()
    }

    /// Only the topic `default` (id 0, one partition), as today.
    pub fn default_topic() -> Self {
        let mut topics = IndexedTopics::new();
        topics
            .add(TOPIC, TOPIC_ID, 1)
            .expect("the first topic has a free id");
        topics
    }

    /// Adds `name` with id `id` and `partitions` partitions (or sets the count of a
    /// topic already there, which keeps its id). Fails if another topic has the id.
    pub fn add(&mut self, name: &str, id: u32, partitions: u32) -> Result<(), IndexError> {
        if let Some(other) = self
            .by_field
            .values()
            .find(|t| t.id == id && t.name != name)
        {
            return Err(IndexError::TopicIdTaken {
                id,
                topic: name.to_string(),
                taken_by: other.name.clone(),
            });
        }
        let mut field = Vec::new();
        escape_into(name.as_bytes(), &mut field);
        self.by_field.insert(
            field,
            Topic {
                name: name.to_string(),
                id,
                partitions,
            },
        );
        Ok(())
    }

    /// Every indexed topic-partition, ordered by topic id and partition.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut all: Vec<TopicPartition> = self
            .by_field
            .values()
            .flat_map(|t| (0..t.partitions).map(|p| TopicPartition::new(&t.name, t.id, p)))
            .collect();
        all.sort_by_key(|tp| tp.id());
        all
    }

    /// The partition a record line belongs to, from its topic field and partition,
    /// if it is indexed.
    pub(crate) fn lookup(&self, topic_field: &[u8], partition: u32) -> Option<PartitionId> {
        let topic = self.by_field.get(topic_field)?;
        (partition < topic.partitions).then_some(PartitionId {
            topic_id: topic.id,
            partition,
        })
    }
}

/// Why an index file or the checkpoint cannot be used as it is. Each is fixed by
/// rebuilding the indexes from the persistence file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexProblem {
    /// The file does not exist.
    #[error("it does not exist")]
    Missing,
    /// Shorter than an index header.
    #[error("it is {len} bytes, shorter than an index header")]
    TooShort { len: u64 },
    /// The checkpoint is not exactly as long as a checkpoint.
    #[error("it is {len} bytes, and a checkpoint is 64")]
    CheckpointLength { len: u64 },
    /// It does not start with its kind of file's magic bytes.
    #[error("it does not start with the magic bytes of its kind of file")]
    Magic,
    /// Another format version.
    #[error("it has format version {found}, not {}", format::FORMAT_VERSION)]
    Version { found: u32 },
    /// The checkpoint's checksum does not match its bytes.
    #[error("its checksum does not match its contents")]
    CheckpointChecksum,
    /// An index header of another topic-partition.
    #[error("its header is that of topic id {topic_id}, partition {partition}")]
    OtherPartition { topic_id: u32, partition: u32 },
    /// Made with another step than the one asked for, or than the checkpoint's.
    #[error("it was made with a step of {found} bytes, not {expected}")]
    Step { found: u64, expected: u64 },
    /// The file ends inside an entry.
    #[error("its length ({len} bytes) ends inside an entry")]
    PartialEntry { len: u64 },
    /// An entry does not follow the one before it in offset and position.
    #[error("entry {entry} does not follow the one before it in both offset and byte position")]
    NotIncreasing { entry: usize },
    /// An entry points past the whole lines of the persistence file: the file was
    /// cut shorter, or replaced by a shorter one.
    #[error("entry {entry} points at byte {position}, and the persistence file holds no whole line there")]
    EntryPastEnd { entry: usize, position: u64 },
    /// An entry's line is not its record: the file was replaced, or the entry
    /// scribbled on.
    #[error("entry {entry} says offset {offset} starts at byte {position}, but no line of this partition with that offset starts there")]
    EntryMismatch {
        entry: usize,
        offset: u64,
        position: u64,
    },
    /// The checkpoint reaches past the end of the persistence file.
    #[error("it covers {through} bytes, and the persistence file has {file_len}")]
    CheckpointPastEnd { through: u64, file_len: u64 },
    /// The persistence file's first record line is not the one the checkpoint was
    /// made for: the file was replaced.
    #[error("it was made for another persistence file (the first record line differs)")]
    OtherFile,
}

/// Why an index operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A file of the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// An index file or the checkpoint cannot be used: [`rebuild`] fixes it.
    #[error(
        "{path} cannot be used ({problem}); the indexes must be rebuilt from the persistence file"
    )]
    NeedsRebuild {
        path: PathBuf,
        problem: IndexProblem,
    },
    /// Two topics were given one id.
    #[error("topic {topic} cannot have id {id}: topic {taken_by} has it")]
    TopicIdTaken {
        id: u32,
        topic: String,
        taken_by: String,
    },
    /// The writer was told of a line of a partition it does not index.
    #[error("topic id {topic_id} partition {partition} is not indexed")]
    UnknownPartition { topic_id: u32, partition: u32 },
    /// The writer was told of a line that does not start where the lines it was
    /// told of end: every record line must be noted, in file order.
    #[error("a record line was noted at byte {position}, but the lines noted so far end at byte {expected}")]
    LineOutOfOrder { position: u64, expected: u64 },
    /// The writer was handed lines that are not whole record lines (one does not
    /// end with its newline, or does not start with a topic, partition and offset).
    #[error("the lines handed to the index writer at byte {position} are not whole record lines")]
    NotWholeLines { position: u64 },
    /// The writer was told of a line of no bytes (a line holds at least its newline).
    #[error("a record line of no bytes was noted at byte {position}")]
    EmptyLine { position: u64 },
    /// The writer was told of an offset not above the partition's last one.
    #[error("offset {offset} of topic id {topic_id} partition {partition} was noted after offset {last}")]
    OffsetOutOfOrder {
        topic_id: u32,
        partition: u32,
        offset: u64,
        last: u64,
    },
}

impl IndexError {
    /// Whether rebuilding the indexes from the persistence file fixes this.
    pub fn needs_rebuild(&self) -> bool {
        matches!(self, IndexError::NeedsRebuild { .. })
    }

    /// The problem that makes a rebuild needed, if that is the error.
    pub fn problem(&self) -> Option<&IndexProblem> {
        match self {
            IndexError::NeedsRebuild { problem, .. } => Some(problem),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> IndexError {
        let path = path.into();
        move |source| IndexError::Io { path, source }
    }

    pub(crate) fn rebuild(path: impl Into<PathBuf>, problem: IndexProblem) -> IndexError {
        IndexError::NeedsRebuild {
            path: path.into(),
            problem,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_line_fields_to_index_names_and_refuse_a_shared_id() {
        let mut topics = IndexedTopics::default_topic();
        topics.add("orders", 3, 2).unwrap();
        assert_eq!(
            topics.lookup(b"orders", 1),
            Some(PartitionId {
                topic_id: 3,
                partition: 1
            })
        );
        assert_eq!(topics.lookup(b"orders", 2), None);
        assert_eq!(topics.lookup(b"default", 0).map(|p| p.topic_id), Some(0));
        assert_eq!(topics.lookup(b"other", 0), None);
        assert_eq!(
            topics
                .partitions()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["default/0", "orders/0", "orders/1"]
        );
        let err = topics.add("logs", 3, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic logs cannot have id 3: topic orders has it"
        );
        // A topic's partition count can grow.
        topics.add("orders", 3, 4).unwrap();
        assert_eq!(topics.partitions().len(), 5);
    }
}
