//! Records read back from the persistence file, for the readers and the group
//! members whose offsets have left the ring (SPEC §10): every reclaimed record is
//! in the file, since slots are freed only once persisted.

use std::sync::Arc;

use audit_format::index::TopicPartition;
use audit_format::log_reader::{LogError, LogReader, LogRecord};
use control_protocol::Session;

use crate::reader::ReadMessage;
use crate::ConsumerError;

/// How far ahead of the reader's place an offset may be for it to read on rather
/// than seek (a seek reads up to one step of the index).
const READ_ON_WITHIN: u64 = 1024;

/// One topic-partition's records in the persistence file, opened when first
/// needed, and the producer names met in it (one `Arc` each).
pub(crate) struct FileRecords {
    partition: TopicPartition,
    topic: Arc<str>,
    reader: Option<LogReader>,
    names: Vec<Arc<str>>,
}

impl Default for FileRecords {
    /// The records of `default`/0.
    fn default() -> Self {
        FileRecords::of(TopicPartition::default_topic())
    }
}

impl FileRecords {
    /// The records of `partition`.
    pub(crate) fn of(partition: TopicPartition) -> Self {
        FileRecords {
            topic: partition.topic.as_str().into(),
            partition,
            reader: None,
            names: Vec::new(),
        }
    }

    /// The file's reader, opened through its index (built by a scan when the
    /// index cannot be used).
    pub(crate) fn reader(&mut self, session: &Session) -> Result<&mut LogReader, ConsumerError> {
        if self.reader.is_none() {
            self.reader =
                Some(LogReader::open_in(&session.data_dir, &self.partition).map_err(log_error)?);
        }
        Ok(self.reader.as_mut().expect("opened above"))
    }

    /// The message of a record read from the file.
    pub(crate) fn message(&mut self, r: LogRecord) -> ReadMessage {
        let name = r.record.producer;
        let producer = match self.names.iter().find(|n| ***n == *name) {
            Some(n) => n.clone(),
            None => {
                if self.names.len() > 64 {
                    self.names.clear();
                }
                let n: Arc<str> = name.into();
                self.names.push(n.clone());
                n
            }
        };
        ReadMessage {
            topic: self.topic.clone(),
            partition: self.partition.partition,
            offset: r.record.offset,
            key: r.record.key,
            payload: r.record.payload,
            timestamp_us: r.timestamp_us,
            producer,
        }
    }

    /// Appends to `out` the records at `offsets` (increasing) that the file
    /// holds; an offset it lacks (a record lost before it was persisted) is passed
    /// over.
    pub(crate) fn read_offsets(
        &mut self,
        session: &Session,
        offsets: impl Iterator<Item = u64>,
        out: &mut Vec<ReadMessage>,
    ) -> Result<(), ConsumerError> {
        for o in offsets {
            let file = self.reader(session)?;
            let at = file.position();
            if o < at || o - at > READ_ON_WITHIN {
                match file.seek(o) {
                    Ok(()) => {}
                    Err(LogError::BeforeFirst { .. }) => continue,
                    Err(e) => return Err(log_error(e)),
                }
            }
            while let Some(r) = file.next_record().map_err(log_error)? {
                match r.record.offset.cmp(&o) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => {
                        let m = self.message(r);
                        out.push(m);
                    }
                    // The file lacks `o`; the reader is now past it.
                    std::cmp::Ordering::Greater => {
                        let _ = self.reader(session)?.seek(r.record.offset);
                    }
                }
                break;
            }
        }
        Ok(())
    }
}

/// The record at `offset` in the file, if it is there.
pub(crate) fn read_at(
    file: &mut LogReader,
    offset: u64,
) -> Result<Option<LogRecord>, ConsumerError> {
    match file.seek(offset) {
        Ok(()) => file.next_record().map_err(log_error),
        Err(LogError::BeforeFirst { .. }) => Ok(None),
        Err(e) => Err(log_error(e)),
    }
}

pub(crate) fn log_error(e: LogError) -> ConsumerError {
    ConsumerError::File(e.to_string())
}
