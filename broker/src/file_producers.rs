//! Names the producers of records that left the ring, from the persistence file:
//! a consumption-log line names its record's producer, and once the record is no
//! longer in the ring the file is the one place that still does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use audit_format::index::TopicPartition;
use audit_format::log_reader::LogReader;

/// Names the producers of records that left the ring, from the persistence file.
#[derive(Debug)]
pub struct FileProducers {
    data_dir: PathBuf,
    reader: Option<LogReader>,
    /// One `Arc` per name, so that the line formatter recognises repeats.
    names: HashMap<String, Arc<str>>,
}

impl FileProducers {
    pub fn new(data_dir: PathBuf) -> Self {
        FileProducers {
            data_dir,
            reader: None,
            names: HashMap::new(),
        }
    }

    /// The producer of the record at `offset`, if the file has it.
    pub fn producer_of(&mut self, offset: u64) -> Option<Arc<str>> {
        if self.reader.is_none() {
            let partition = TopicPartition::default_topic();
            self.reader = Some(LogReader::open_in(&self.data_dir, &partition).ok()?);
        }
        let reader = self.reader.as_mut()?;
        if reader.position() != offset && reader.seek(offset).is_err() {
            // The index may lag a file that grew: look again next time.
            self.reader = None;
            return None;
        }
        let (found, name) = reader.next_producer().ok().flatten()?;
        if found != offset {
            return None;
        }
        if let Some(known) = self.names.get(&name) {
            return Some(known.clone());
        }
        if self.names.len() > 4096 {
            self.names.clear();
        }
        let interned: Arc<str> = Arc::from(name.as_str());
        self.names.insert(name, interned.clone());
        Some(interned)
    }
}
