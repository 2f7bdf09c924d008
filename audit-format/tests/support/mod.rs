//! What the index and log-reader tests share: a scratch data directory, and a
//! persistence file written as the broker writes it (the real line formatter, lines
//! appended in buffers, each record noted in an `IndexWriter` that is flushed after
//! each buffer reaches the file).

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use audit_format::index::{IndexConfig, IndexWriter, IndexedTopics, TopicPartition, WriterStart};
use audit_format::records::{PersistedLines, PERSIST_FILE, PERSIST_HEADER, TOPIC};

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A data directory of its own, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "mk-log-index-{tag}-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn persistence(&self) -> PathBuf {
        self.0.join(PERSIST_FILE)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A message as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_us: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A message as written: where its line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub message: Message,
    pub position: u64,
    pub line_len: u64,
}

/// The topic `default` with `partitions` partitions.
pub fn default_topic(partitions: u32) -> IndexedTopics {
    let mut topics = IndexedTopics::new();
    topics.add(TOPIC, 0, partitions).unwrap();
    topics
}

pub fn partition(p: u32) -> TopicPartition {
    TopicPartition::new(TOPIC, 0, p)
}

/// Appends records to a data directory's persistence file the way the broker's
/// persister does.
pub struct LogWriter {
    pub file: File,
    /// Bytes in the file.
    pub len: u64,
    pub index: IndexWriter,
    formats: HashMap<u32, PersistedLines>,
    producer: Arc<str>,
    /// Lines formatted, not yet written.
    pub buffer: Vec<u8>,
    pub written: Vec<Written>,
}

impl LogWriter {
    /// Creates the persistence file with its header if it is not there, and opens
    /// the indexes.
    pub fn open(
        dir: &Path,
        topics: &IndexedTopics,
        config: IndexConfig,
    ) -> (LogWriter, WriterStart) {
        let path = dir.join(PERSIST_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut len = file.metadata().unwrap().len();
        if len == 0 {
            file.write_all(PERSIST_HEADER.as_bytes()).unwrap();
            len = PERSIST_HEADER.len() as u64;
        }
        let (index, start) = IndexWriter::open(dir, topics, config).unwrap();
        let writer = LogWriter {
            file,
            len,
            index,
            formats: HashMap::new(),
            producer: Arc::from("producer-1"),
            buffer: Vec::new(),
            written: Vec::new(),
        };
        (writer, start)
    }

    /// Formats `message` into the buffer: where its line starts in the file, and
    /// its length.
    fn format(&mut self, message: &Message) -> (u64, u64) {
        let position = self.len + self.buffer.len() as u64;
        let before = self.buffer.len();
        self.formats
            .entry(message.partition)
            .or_insert_with(|| PersistedLines::for_partition(TOPIC, message.partition))
            .push(
                &mut self.buffer,
                message.offset,
                message.timestamp_us,
                &self.producer,
                message.key.as_deref(),
                &message.payload,
                &[],
            );
        (position, (self.buffer.len() - before) as u64)
    }

    /// Formats `message` into the buffer and notes it in the index.
    pub fn append(&mut self, message: Message) {
        let (position, line_len) = self.format(&message);
        self.index
            .note(
                partition(message.partition).id(),
                message.offset,
                position,
                line_len,
            )
            .unwrap();
        self.written.push(Written {
            message,
            position,
            line_len,
        });
    }

    /// Formats `messages`, all of one partition, into the buffer and notes them in
    /// the index as one batch of lines, the way the broker's persister does.
    pub fn append_batch(&mut self, messages: &[Message]) {
        let Some(first) = messages.first() else {
            return;
        };
        let start = self.buffer.len();
        let batch_position = self.len + start as u64;
        for m in messages {
            assert_eq!(m.partition, first.partition, "one partition a batch");
            let (position, line_len) = self.format(m);
            self.written.push(Written {
                message: m.clone(),
                position,
                line_len,
            });
        }
        self.index
            .note_lines(
                partition(first.partition).id(),
                batch_position,
                &self.buffer[start..],
            )
            .unwrap();
    }

    /// Writes the buffer to the file, then flushes the index up to it.
    pub fn write_buffer(&mut self) {
        self.file.write_all(&self.buffer).unwrap();
        self.len += self.buffer.len() as u64;
        self.buffer.clear();
        self.index.flush(self.len).unwrap();
    }

    /// Writes what is buffered and closes the index writer.
    pub fn close(mut self) -> Vec<Written> {
        self.write_buffer();
        self.index.close(self.len).unwrap();
        self.written
    }
}

/// Messages of `partitions` partitions, round-robin, offsets from 0 in each.
pub fn messages(count: u64, partitions: u32, payload_len: usize) -> Vec<Message> {
    let mut next = vec![0u64; partitions as usize];
    (0..count)
        .map(|i| {
            let p = (i % u64::from(partitions)) as u32;
            let offset = next[p as usize];
            next[p as usize] += 1;
            Message {
                partition: p,
                offset,
                timestamp_us: 1_795_832_687_000_000 + i * 7,
                key: (i % 3 == 0).then(|| format!("key-{i}").into_bytes()),
                payload: (0..payload_len).map(|j| (i as usize + j) as u8).collect(),
            }
        })
        .collect()
}

/// Writes `messages` to a new persistence file in `dir`, `per_buffer` lines per
/// buffer, and closes the writer.
pub fn write_log(
    dir: &Path,
    topics: &IndexedTopics,
    config: IndexConfig,
    messages: &[Message],
    per_buffer: usize,
) -> Vec<Written> {
    let (mut log, _) = LogWriter::open(dir, topics, config);
    for chunk in messages.chunks(per_buffer.max(1)) {
        for m in chunk {
            log.append(m.clone());
        }
        log.write_buffer();
    }
    log.close()
}

/// The entries the step rule gives `partition`'s lines among `written`: its first
/// record, then each record at least `step` bytes after the last entry.
pub fn expected_entries(written: &[Written], partition: u32, step: u64) -> Vec<(u64, u64)> {
    let mut entries: Vec<(u64, u64)> = Vec::new();
    for w in written.iter().filter(|w| w.message.partition == partition) {
        if entries
            .last()
            .is_none_or(|&(_, last)| w.position - last >= step)
        {
            entries.push((w.message.offset, w.position));
        }
    }
    entries
}
