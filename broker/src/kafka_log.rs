//! The broker as the Kafka listener sees it ([`KafkaLog`]): a Kafka produce
//! appends to a partition's ring as a local producer does (as the stand-in
//! producer `kafka:<client id>`), and a Kafka fetch reads the ring, or the
//! persistence file below it, as a standalone reader does, its reads logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use audit_format::index::TopicPartition;
use audit_format::log_reader::LogReader;
use control_protocol::OwnerKind;
use kafka_listener::coordinator::GroupView;
use kafka_listener::log::{
    AppendError, Appended, Committed, CreateTopicError, GroupClaimError, GroupCommit, GroupSummary,
    KafkaLog, Offsets, ProducerHandle, ReadError, RecordToAppend, StoredRecord, TopicSummary,
};
use shm_layout::ring::{ReadError as RingReadError, SendError, Sender};
use shm_layout::sys::wall_clock_micros;
use shm_layout::BrokerRegion;

use crate::audit::state::{Commit, StateFile, DEFAULT_TOPIC};
use crate::partition_offsets;
use crate::registry::{ProducerOf, Registry};
use crate::topics::{CreateError, Topics};

pub struct BrokerLog {
    pub region: Arc<BrokerRegion>,
    pub topics: Arc<Topics>,
    pub registry: Arc<Mutex<Registry>>,
    /// Where Kafka groups' commits are written (SPEC §10's state file).
    pub state_file: Arc<StateFile>,
    pub data_dir: PathBuf,
    pub fsync: bool,
    /// Stand-in producers handed out: their client ids.
    producers: Mutex<HashMap<ProducerHandle, String>>,
    /// Each partition's first offset in the file, once found (it never
    /// changes), or the ring's freed offset when it was last looked for in
    /// vain: while that has not moved, no record left the ring for the file.
    first_in_file: Mutex<HashMap<(u32, u32), Result<u64, u64>>>,
    /// Readers of the file, left where the last fetch of each partition
    /// stopped (the next one usually starts there).
    file_readers: Mutex<HashMap<(u32, u32), LogReader>>,
}

impl BrokerLog {
    pub fn new(
        region: Arc<BrokerRegion>,
        topics: Arc<Topics>,
        registry: Arc<Mutex<Registry>>,
        state_file: Arc<StateFile>,
        data_dir: PathBuf,
        fsync: bool,
    ) -> Self {
        BrokerLog {
            region,
            topics,
            registry,
            state_file,
            data_dir,
            fsync,
            producers: Mutex::default(),
            first_in_file: Mutex::default(),
            file_readers: Mutex::default(),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ring and the names of a topic-partition, if it exists.
    fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Option<(Arc<BrokerRegion>, TopicPartition)> {
        if topic == DEFAULT_TOPIC {
            return (partition == 0)
                .then(|| (self.region.clone(), TopicPartition::default_topic()));
        }
        let ring = self.topics.ring_of(topic, partition)?;
        Some((ring.region.clone(), ring.partition.clone()))
    }

    fn first_in_file(&self, tp: &TopicPartition, region: &BrokerRegion) -> Option<u64> {
        let key = (tp.topic_id, tp.partition);
        let mut known = self.first_in_file.lock().unwrap_or_else(|p| p.into_inner());
        let freed = region.freed_offset();
        match known.get(&key) {
            Some(Ok(first)) => return Some(*first),
            Some(Err(then)) if *then == freed => return None,
            _ => {}
        }
        let found = partition_offsets::first_in_file(&self.data_dir, tp);
        known.insert(key, found.ok_or(freed));
        found
    }
}

fn handle_of(sender: Sender) -> ProducerHandle {
    ProducerHandle(u64::from(sender.client) << 32 | u64::from(sender.generation))
}

fn sender_of(handle: ProducerHandle) -> Sender {
    Sender {
        client: (handle.0 >> 32) as u32,
        generation: handle.0 as u32,
    }
}

impl KafkaLog for BrokerLog {
    fn topics(&self) -> Vec<TopicSummary> {
        let mut all = vec![TopicSummary {
            name: DEFAULT_TOPIC.to_string(),
            partitions: 1,
        }];
        all.extend(self.topics.records().into_iter().map(|t| TopicSummary {
            name: t.name,
            partitions: t.partitions,
        }));
        all
    }

    fn groups(&self) -> Vec<GroupSummary> {
        self.registry()
            .group_summaries()
            .into_iter()
            .map(|(name, members, assignment)| GroupSummary {
                name,
                members,
                assignment: assignment.name().to_string(),
            })
            .collect()
    }

    fn partitions(&self, topic: &str) -> Option<u32> {
        if topic == DEFAULT_TOPIC {
            return Some(1);
        }
        self.topics.find(topic).map(|(t, _)| t.partitions)
    }

    fn producer(&self, client_id: &str) -> Result<ProducerHandle, String> {
        let sender = self.registry().kafka_producer(client_id).ok_or_else(|| {
            "the broker's client table is full (--max-clients): no producer entry is free"
                .to_string()
        })?;
        let handle = handle_of(sender);
        self.producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle, client_id.to_string());
        Ok(handle)
    }

    fn release_producer(&self, producer: ProducerHandle) {
        let id = self
            .producers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&producer)
            .cloned();
        if let Some(id) = id {
            let mut reg = self.registry();
            reg.release_kafka_producer(&id);
            if !reg.has_kafka_producer(&id) {
                drop(reg);
                self.producers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&producer);
            }
        }
    }

    fn append(
        &self,
        producer: ProducerHandle,
        topic: &str,
        partition: u32,
        records: &[RecordToAppend<'_>],
    ) -> Result<Appended, AppendError> {
        let (region, _) = self
            .partition(topic, partition)
            .ok_or(AppendError::UnknownPartition)?;
        let sent = region.send_batch_now(sender_of(producer), records, wall_clock_micros());
        match sent {
            Ok((first_offset, count)) => Ok(Appended {
                first_offset,
                count,
            }),
            Err(SendError::TooLarge { size, max }) => Err(AppendError::TooLarge { size, max }),
            Err(SendError::Stopped) => Err(AppendError::Refused("the broker is stopping".into())),
            Err(e) => Err(AppendError::Refused(e.to_string())),
        }
    }

    fn on_disk(&self, topic: &str, partition: u32, end: u64) -> bool {
        !self.fsync
            || self
                .partition(topic, partition)
                .is_none_or(|(region, _)| region.persisted_offset() >= end)
    }

    fn offsets(&self, topic: &str, partition: u32) -> Option<Offsets> {
        let (region, tp) = self.partition(topic, partition)?;
        let end = region.next_offset();
        let earliest = partition_offsets::earliest(self.first_in_file(&tp, &region), &region);
        Some(Offsets { earliest, end })
    }

    fn offset_for_time(&self, topic: &str, partition: u32, time_us: u64) -> Option<u64> {
        let (region, tp) = self.partition(topic, partition)?;
        partition_offsets::first_at_or_after(&self.data_dir, &tp, &region, time_us)
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        group: Option<&str>,
        reader: &str,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> bool,
    ) -> Result<Option<u64>, ReadError> {
        let (region, tp) = self
            .partition(topic, partition)
            .ok_or(ReadError::UnknownPartition)?;
        let end = region.next_offset();
        let mut reads: Vec<(u64, ProducerOf)> = Vec::new();
        let mut next = from;
        let mut readers = self.file_readers.lock().unwrap_or_else(|p| p.into_inner());
        while next < end {
            if next >= region.freed_offset() {
                match region.copy_record(next) {
                    Ok(Some(r)) => {
                        let stored = StoredRecord {
                            offset: next,
                            timestamp_us: r.timestamp_us,
                            key: r.key.as_deref(),
                            payload: &r.payload,
                            headers: &r.headers,
                        };
                        if !visit(stored) {
                            break;
                        }
                        reads.push((next, ProducerOf::Entry(r.producer, r.producer_generation)));
                        next += 1;
                    }
                    // It left the ring meanwhile: it is in the file.
                    Ok(None) => continue,
                    // Not committed yet (a hold in progress): the end for now.
                    Err(RingReadError::NotAvailable(_)) => break,
                    Err(e @ RingReadError::Corrupt(_)) => {
                        return Err(ReadError::Failed(e.to_string()))
                    }
                }
                continue;
            }
            let key = (tp.topic_id, tp.partition);
            let file = match readers.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(
                    LogReader::open_in(&self.data_dir, &tp)
                        .map_err(|e| ReadError::Failed(e.to_string()))?,
                ),
            };
            if file.position() != next {
                file.seek(next).map_err(|e| match e {
                    audit_format::log_reader::LogError::BeforeFirst { .. } => {
                        ReadError::OutOfRange(next)
                    }
                    other => ReadError::Failed(other.to_string()),
                })?;
            }
            let record = match file.next_record() {
                Ok(Some(r)) => r,
                // Not in the file yet: it was freed from the ring, so it is
                // persisted; the writer is only behind the reader's view.
                Ok(None) => break,
                Err(e) => {
                    readers.remove(&key);
                    return Err(ReadError::Failed(e.to_string()));
                }
            };
            let r = &record.record;
            if r.offset != next {
                return Err(ReadError::Failed(format!(
                    "{topic}/{partition}: the file holds offset {} where {next} was expected",
                    r.offset
                )));
            }
            let stored = StoredRecord {
                offset: next,
                timestamp_us: record.timestamp_us,
                key: r.key.as_deref(),
                payload: &r.payload,
                headers: &r.headers,
            };
            if !visit(stored) {
                // Read again by the next fetch, from here.
                file.seek(next).ok();
                break;
            }
            reads.push((next, ProducerOf::Named(Arc::from(r.producer.as_str()))));
            next += 1;
        }
        drop(readers);
        let log_mark = (!reads.is_empty())
            .then(|| self.registry().log_kafka_reads(&tp, group, reader, &reads));
        Ok(log_mark)
    }

    fn log_written(&self, mark: u64) -> bool {
        let written = self.registry().log_written_through(mark);
        if !written {
            shm_layout::event::wake(&self.region.header().cleaner);
        }
        written
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        validate_only: bool,
    ) -> Result<(), CreateTopicError> {
        if validate_only {
            shm_layout::names::check_topic(name)
                .map_err(|e| CreateTopicError::InvalidName(e.to_string()))?;
            if self.partitions(name).is_some() {
                return Err(CreateTopicError::Exists(format!("topic {name} exists")));
            }
            return Ok(());
        }
        match self.topics.create(name, partitions, None, None) {
            Ok(record) => {
                eprintln!(
                    "broker: created topic {} with {} partitions (kafka)",
                    record.name, record.partitions
                );
                Ok(())
            }
            Err(CreateError::Exists(n)) => {
                Err(CreateTopicError::Exists(format!("topic {n} exists")))
            }
            Err(CreateError::Invalid(why)) => Err(CreateTopicError::InvalidName(why)),
            Err(CreateError::Limit(why)) => Err(CreateTopicError::InvalidPartitions(why)),
            Err(e) => Err(CreateTopicError::Failed(e.to_string())),
        }
    }

    fn claim_group(&self, group: &str) -> Result<(), GroupClaimError> {
        self.registry().claim_kafka_group(group)
    }

    fn release_group(&self, group: &str) {
        let has_offsets = self
            .state_file
            .snapshot()
            .kafka_groups
            .iter()
            .any(|c| c.name == group);
        if !has_offsets {
            self.registry().release_kafka_group(group);
        }
    }

    fn commit_offsets(&self, commits: &[GroupCommit]) -> Result<(), String> {
        let lines = commits
            .iter()
            .map(|c| Commit {
                name: c.group.clone(),
                topic: c.topic.clone(),
                partition: c.partition,
                offset: c.offset,
            })
            .collect();
        self.state_file
            .commit_kafka_groups(lines)
            .map_err(|e| format!("cannot write {}: {e}", crate::audit::state::STATE_FILE))?;
        // A group emptied while its commit was being written gave its name
        // back: offsets on file keep it a Kafka group's.
        let mut registry = self.registry();
        for c in commits {
            let _ = registry.claim_kafka_group(&c.group);
        }
        Ok(())
    }

    fn committed_offsets(&self, group: &str) -> Vec<Committed> {
        let owner = (OwnerKind::Group, group.to_string());
        let registry = self.registry();
        crate::committed::committed_offsets(&registry, &self.state_file, Some(&owner))
            .into_iter()
            .map(|c| Committed {
                topic: c.topic,
                partition: c.partition,
                offset: c.offset,
            })
            .collect()
    }

    fn kafka_groups_with_offsets(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state_file
            .snapshot()
            .kafka_groups
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn kafka_groups_changed(&self, groups: Vec<GroupView>) {
        self.registry().set_kafka_groups(groups);
    }
}
