//! Names the producers of records that left the ring: a consumption-log line names
//! its record's producer, and once the record is no longer in the ring the
//! persister's runs (recent offsets) and the persistence file (all of them) are
//! the places that still do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::producer_runs::{ProducerRuns, Run};

use audit_format::index::TopicPartition;
use audit_format::log_reader::LogReader;

/// Names the producers of records that left the ring, from the persistence file.
#[derive(Debug)]
pub struct FileProducers {
    data_dir: PathBuf,
    partition: TopicPartition,
    /// The persister's runs of who sent what: looked up first.
    runs: Option<Arc<Mutex<ProducerRuns>>>,
    /// The run found last: lines of consecutive offsets take the lock once a run.
    last_run: Option<Run>,
    reader: Option<LogReader>,
    /// One `Arc` per name, so that the line formatter recognises repeats.
    names: HashMap<String, Arc<str>>,
}

impl FileProducers {
    pub fn new(data_dir: PathBuf, runs: Option<Arc<Mutex<ProducerRuns>>>) -> Self {
        FileProducers::of(data_dir, TopicPartition::default_topic(), runs)
    }

    /// The producers of `partition`'s records, looked up in `runs` first if given.
    pub fn of(
        data_dir: PathBuf,
        partition: TopicPartition,
        runs: Option<Arc<Mutex<ProducerRuns>>>,
    ) -> Self {
        FileProducers {
            data_dir,
            partition,
            runs,
            last_run: None,
            reader: None,
            names: HashMap::new(),
        }
    }

    /// The data directory whose persistence file it reads.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The producer of the record at `offset`, if the file has it.
    pub fn producer_of(&mut self, offset: u64) -> Option<Arc<str>> {
        if let Some(run) = self
            .last_run
            .as_ref()
            .filter(|r| r.offsets.contains(&offset))
        {
            return Some(run.name.clone());
        }
        if let Some(runs) = &self.runs {
            let found = runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .run_of(offset);
            if let Some(run) = found {
                let name = run.name.clone();
                self.last_run = Some(run);
                return Some(name);
            }
        }
        if self.reader.is_none() {
            self.reader = Some(LogReader::open_in(&self.data_dir, &self.partition).ok()?);
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
