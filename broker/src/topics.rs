//! The topics besides `default` (SPEC §11): their directory (`topics.txt`), the
//! region of each of their partitions, and the ring numbers by which the control
//! region's pending set names those regions (`docs/topics.md`).
//!
//! `default`/0 is ring 0 and lives in the control region; every other
//! topic-partition is a ring of its own, numbered from 1 in creation order for the
//! life of this broker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use audit_format::index::TopicPartition;
use audit_format::topics::{self as directory, TopicRecord, DEFAULT_TOPIC};
use shm_layout::doorbell::Doorbell;
use shm_layout::layout::Geometry;
use shm_layout::region::OwnerState;
use shm_layout::{BrokerRegion, Region, RegionError};

use crate::reclaim::Reclaimer;
use crate::{BrokerConfig, BrokerError};

pub use shm_layout::names::partition_region as region_name;

/// One topic-partition's ring other than `default`/0, with what the broker's
/// threads keep of it.
pub struct PartitionRing {
    pub partition: TopicPartition,
    /// Its bit in the control region's pending set.
    pub number: u32,
    pub region: Arc<BrokerRegion>,
    /// Every offset below this is in the persistence file (published by the
    /// persister once written).
    pub persisted: Arc<AtomicU64>,
    pub reclaimer: Arc<Reclaimer>,
    /// Rings whose reclaim failed, for the cleaner to repair (shared by all).
    repairs: Arc<Mutex<Vec<u32>>>,
}

impl PartitionRing {
    /// The persister wrote every record below `mark`: publishes it (waking
    /// `--fsync` senders) and frees the slots no group holds.
    pub fn persisted_through(&self, mark: u64) {
        crate::persister::publish(&self.region, &self.persisted, mark);
        self.reclaim();
    }

    /// Frees what is persisted and, while groups read the ring, what they have
    /// all consumed with its deliveries logged (see `Reclaimer::hold_from`). A
    /// reclaim that fails on state that cannot be valid asks the cleaner to
    /// repair the ring.
    pub fn reclaim(&self) {
        if self.reclaimer.reclaim().is_err() {
            let mut wanted = self.repairs.lock().unwrap_or_else(|p| p.into_inner());
            if !wanted.contains(&self.number) {
                wanted.push(self.number);
            }
        }
    }
}

/// Where a topic-partition's offsets continue at this start.
#[derive(Debug, Clone)]
pub struct PartitionStart {
    pub partition: TopicPartition,
    pub geometry: Geometry,
    pub next: u64,
}

/// Why `create-topic` refused.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("topic {0} exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Failed(String),
    #[error("the broker is stopping")]
    Stopping,
}

/// What a dead-letter topic's name adds to its topic's.
const DEAD_LETTER_SUFFIX: &str = ".dlq";

/// The topic `topic`'s dead letters go to (SPEC §11, `--max-attempts`). A
/// dead-letter topic has none: its messages are offered again without limit.
pub fn dead_letter_topic(topic: &str) -> Option<String> {
    (!topic.ends_with(DEAD_LETTER_SUFFIX)).then(|| format!("{topic}{DEAD_LETTER_SUFFIX}"))
}

/// Under `--max-attempts`, a topic whose dead-letter topic's name would not be
/// valid is refused up front: its dead letters could never be published.
fn check_dead_letter_name(topic: &str) -> Result<(), String> {
    match dead_letter_topic(topic) {
        Some(dlq) => shm_layout::names::check_topic(&dlq).map_err(|_| {
            format!(
                "topic name {topic} is too long to have a dead-letter topic under --max-attempts: {dlq} would be over {} characters",
                shm_layout::names::MAX_TOPIC_LEN
            )
        }),
        None => Ok(()),
    }
}

/// Under `--max-attempts`, whether the topics `--topics` names (name and
/// partitions) have room for their dead-letter topics, names and limits: a
/// usage error otherwise, before any file is read.
pub fn check_dead_letter_room(
    topics: &[(String, u32)],
    max_topics: u32,
    max_partitions: u32,
) -> Result<(), String> {
    let records: Vec<TopicRecord> = topics
        .iter()
        .filter(|(name, _)| name != DEFAULT_TOPIC)
        .map(|(name, partitions)| TopicRecord {
            id: 0,
            name: name.clone(),
            partitions: *partitions,
            slots: 0,
            slot_size: 0,
            max_message: 0,
        })
        .collect();
    for r in &records {
        check_dead_letter_name(&r.name)?;
    }
    check_room(&records, true, max_topics, max_partitions)
}

/// The topics and partitions `records` take with `default`; under
/// `--max-attempts` (`dead_letters`), also the dead-letter topic (one partition)
/// each may yet need, whose room is kept: publishing a dead letter never meets a
/// limit.
fn room_taken(records: &[TopicRecord], dead_letters: bool) -> (u64, u64) {
    let topics = 1 + records.len() as u64;
    let partitions = 1 + records.iter().map(|r| u64::from(r.partitions)).sum::<u64>();
    if !dead_letters {
        return (topics, partitions);
    }
    let names = std::iter::once(DEFAULT_TOPIC).chain(records.iter().map(|r| r.name.as_str()));
    let kept = names
        .filter_map(dead_letter_topic)
        .filter(|dlq| !records.iter().any(|r| &r.name == dlq))
        .count() as u64;
    (topics + kept, partitions + kept)
}

/// Refuses `records` over `--max-topics` or `--max-partitions`.
fn check_room(
    records: &[TopicRecord],
    dead_letters: bool,
    max_topics: u32,
    max_partitions: u32,
) -> Result<(), String> {
    let (topics, partitions) = room_taken(records, dead_letters);
    if topics <= u64::from(max_topics) && partitions <= u64::from(max_partitions) {
        return Ok(());
    }
    let kept = if dead_letters {
        ", counting a dead-letter topic for each (--max-attempts)"
    } else {
        ""
    };
    Err(if topics > u64::from(max_topics) {
        format!("{topics} topics would exist{kept}, over --max-topics {max_topics}")
    } else {
        format!("{partitions} partitions would exist{kept}, over --max-partitions {max_partitions}")
    })
}

/// The topics of a running broker.
pub struct Topics {
    control: String,
    token: [u64; 2],
    /// The broker's geometry: a topic's rings take its client and group limits.
    base: Geometry,
    data_dir: PathBuf,
    max_topics: u32,
    max_partitions: u32,
    /// `--max-attempts` is set: every topic keeps room for its dead-letter topic.
    dead_letters: bool,
    /// `--fsync`: a send to any ring waits until its record is on disk.
    fsync: bool,
    directory: RwLock<Directory>,
    /// One creation at a time: ids and ring numbers are given in order.
    creating: Mutex<()>,
    /// Set at a stop: a creation in progress undoes what it made and gives up.
    closing: std::sync::atomic::AtomicBool,
    /// Rings whose reclaim failed, by number, for the cleaner to repair.
    repairs: Arc<Mutex<Vec<u32>>>,
    /// The control region: who a ring's reservation belongs to is told there.
    clients: Arc<BrokerRegion>,
}

#[derive(Default)]
struct Directory {
    records: Vec<TopicRecord>,
    /// Ring `n` is `rings[n - 1]`.
    rings: Vec<Arc<PartitionRing>>,
}

/// The topics this start serves: those of `topics.txt`, and those `--topics` adds
/// (saved at once). A topic listed with another partition count is refused:
/// partitions are never taken away, and adding some is not supported yet.
pub fn load_directory(config: &BrokerConfig) -> Result<Vec<TopicRecord>, BrokerError> {
    let file_err = |e: directory::TopicsFileError| BrokerError::Topics(e.to_string());
    let mut records = directory::load(&config.data_dir).map_err(file_err)?;
    let mut added = false;
    for (name, partitions) in &config.topics {
        if name == DEFAULT_TOPIC {
            continue;
        }
        match records.iter().find(|r| &r.name == name) {
            Some(r) if r.partitions != *partitions => {
                return Err(BrokerError::Topics(format!(
                    "--topics asks for {partitions} partitions of {name}, which has {} ({})",
                    r.partitions,
                    directory::TOPICS_FILE
                )))
            }
            Some(_) => {}
            None => {
                let id = records.iter().map(|r| r.id).max().unwrap_or(0) + 1;
                records.push(TopicRecord {
                    id,
                    name: name.clone(),
                    partitions: *partitions,
                    slots: config.geometry.slots,
                    slot_size: config.geometry.slot_size,
                    max_message: config.geometry.max_message,
                });
                added = true;
            }
        }
    }
    // Pre-created groups read topics that exist (refused before any region is
    // made).
    if let Some(unknown) = config
        .group_topics
        .iter()
        .find(|t| *t != DEFAULT_TOPIC && !records.iter().any(|r| &r.name == *t))
    {
        return Err(BrokerError::Topics(format!(
            "--group-topics: unknown topic {unknown}"
        )));
    }
    let dead_letters = config.max_attempts.is_some();
    if dead_letters {
        for name in std::iter::once(DEFAULT_TOPIC).chain(records.iter().map(|r| r.name.as_str())) {
            check_dead_letter_name(name).map_err(BrokerError::Topics)?;
        }
    }
    check_room(
        &records,
        dead_letters,
        config.max_topics,
        config.max_partitions,
    )
    .map_err(BrokerError::Topics)?;
    if added {
        directory::save(&config.data_dir, &records).map_err(|source| BrokerError::File {
            path: config.data_dir.join(directory::TOPICS_FILE),
            source,
        })?;
    }
    Ok(records)
}

/// The geometry of `record`'s rings.
pub fn ring_geometry(base: &Geometry, record: &TopicRecord) -> Geometry {
    Geometry {
        slots: record.slots,
        slot_size: record.slot_size,
        max_message: record.max_message,
        ..*base
    }
}

/// The topic-partition `record`'s partition `partition` names.
pub fn topic_partition(record: &TopicRecord, partition: u32) -> TopicPartition {
    TopicPartition::new(&record.name, record.id, partition)
}

impl Topics {
    /// Creates the region of every partition of `records` (their offsets continue
    /// at `starts`), for the control region `control`.
    pub fn start(
        config: &BrokerConfig,
        control: &Arc<BrokerRegion>,
        token: [u64; 2],
        records: Vec<TopicRecord>,
        starts: &[PartitionStart],
    ) -> Result<Topics, BrokerError> {
        let topics = Topics {
            closing: std::sync::atomic::AtomicBool::new(false),
            repairs: Arc::new(Mutex::new(Vec::new())),
            clients: control.clone(),
            control: control.name().to_string(),
            token,
            base: config.geometry,
            data_dir: config.data_dir.clone(),
            max_topics: config.max_topics,
            max_partitions: config.max_partitions,
            dead_letters: config.max_attempts.is_some(),
            fsync: config.fsync,
            directory: RwLock::new(Directory::default()),
            creating: Mutex::new(()),
        };
        let mut rings = Vec::new();
        for start in starts {
            let number = rings.len() as u32 + 1;
            let ring = topics
                .open_ring(start.partition.clone(), start.geometry, number, start.next)
                .map_err(BrokerError::Region)?;
            rings.push(Arc::new(ring));
        }
        *topics.write() = Directory { records, rings };
        Ok(topics)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates partition `partition`'s region, fresh, with offsets from `next`.
    fn open_ring(
        &self,
        partition: TopicPartition,
        geometry: Geometry,
        number: u32,
        next: u64,
    ) -> Result<PartitionRing, RegionError> {
        let name = region_name(&self.control, partition.topic_id, partition.partition);
        let me = std::process::id();
        let region = match Region::create(&name, geometry, self.token, me) {
            Err(RegionError::AlreadyExists(_)) => {
                // Start-up salvaged any region a dead broker left: what is left is
                // garbage, or a region of a broker still alive, never touched.
                if let OwnerState::Alive { pid } = Region::owner_state(&name)? {
                    return Err(RegionError::GeometryMismatch {
                        name,
                        found: format!("a region of the running broker {pid}"),
                        expected: "none".into(),
                    });
                }
                Region::unlink(&name)?;
                Region::create(&name, geometry, self.token, me)?
            }
            other => other?,
        };
        // The broker's own sends into the ring tell its persister, as clients' do.
        let region = region.ring_doorbell(Doorbell::open(&self.control, number)?);
        region.start_at(next, next);
        region.set_fsync(self.fsync);
        let region = Arc::new(region);
        let persisted = Arc::new(AtomicU64::new(next));
        let reclaimer = Arc::new(
            Reclaimer::new(region.clone(), persisted.clone(), u64::MAX)
                .with_clients(self.clients.clone()),
        );
        Ok(PartitionRing {
            partition,
            number,
            region,
            persisted,
            reclaimer,
            repairs: self.repairs.clone(),
        })
    }

    /// The ring numbered `number`, if there is one.
    pub fn ring(&self, number: u32) -> Option<Arc<PartitionRing>> {
        let index = number.checked_sub(1)? as usize;
        self.read().rings.get(index).cloned()
    }

    /// The ring of the topic-partition a reader's journal names by `key`
    /// (`topic id << 32 | partition`), if there is one.
    pub fn ring_of_key(&self, key: u64) -> Option<Arc<PartitionRing>> {
        let (topic_id, partition) = ((key >> 32) as u32, key as u32);
        self.read()
            .rings
            .iter()
            .find(|r| r.partition.topic_id == topic_id && r.partition.partition == partition)
            .cloned()
    }

    /// The ring of `topic`'s partition `partition`, if there is one.
    pub fn ring_of(&self, topic: &str, partition: u32) -> Option<Arc<PartitionRing>> {
        self.read()
            .rings
            .iter()
            .find(|r| r.partition.topic == topic && r.partition.partition == partition)
            .cloned()
    }

    /// How many rings there are besides `default`/0.
    pub fn ring_count(&self) -> u32 {
        self.read().rings.len() as u32
    }

    /// Every ring besides `default`/0, by number.
    pub fn rings(&self) -> Vec<Arc<PartitionRing>> {
        self.read().rings.clone()
    }

    /// Every topic besides `default`, in creation order.
    pub fn records(&self) -> Vec<TopicRecord> {
        self.read().records.clone()
    }

    /// Topic `name` (not `default`), and the number of its partition 0's ring (its
    /// partitions' rings are numbered in a row).
    pub fn find(&self, name: &str) -> Option<(TopicRecord, u32)> {
        let dir = self.read();
        let record = dir.records.iter().find(|r| r.name == name)?.clone();
        let first = dir
            .rings
            .iter()
            .find(|r| r.partition.topic_id == record.id && r.partition.partition == 0)?
            .number;
        Some((record, first))
    }

    /// Creates topic `name` with `partitions` partitions, each a ring of `slots`
    /// slots of `slot_size` bytes (the broker's by default): every region is
    /// created and reserved first, then `topics.txt` is saved, then the topic is
    /// served; a failure at any step undoes the steps before it.
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        slots: Option<u32>,
        slot_size: Option<u32>,
    ) -> Result<TopicRecord, CreateError> {
        let one_at_a_time = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        self.create_holding(one_at_a_time, name, partitions, slots, slot_size)
    }

    /// As [`Topics::create`] with one partition and the broker's geometry,
    /// unless another creation is under way (None: try again later): for the
    /// broker's own threads, which must not wait for a large creation.
    pub fn create_unless_busy(&self, name: &str) -> Option<Result<TopicRecord, CreateError>> {
        let one_at_a_time = match self.creating.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.create_holding(one_at_a_time, name, 1, None, None))
    }

    fn create_holding(
        &self,
        _one_at_a_time: std::sync::MutexGuard<'_, ()>,
        name: &str,
        partitions: u32,
        slots: Option<u32>,
        slot_size: Option<u32>,
    ) -> Result<TopicRecord, CreateError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(CreateError::Stopping);
        }
        shm_layout::names::check_topic(name).map_err(|e| CreateError::Invalid(e.to_string()))?;
        if name == DEFAULT_TOPIC || self.find(name).is_some() {
            return Err(CreateError::Exists(name.to_string()));
        }
        if self.dead_letters {
            check_dead_letter_name(name).map_err(CreateError::Invalid)?;
        }
        let (records, rings) = {
            let dir = self.read();
            (dir.records.clone(), dir.rings.len() as u32)
        };
        if partitions == 0 {
            return Err(CreateError::Invalid(
                "a topic has at least one partition".into(),
            ));
        }
        let with_it: Vec<TopicRecord> = records
            .iter()
            .cloned()
            .chain(std::iter::once(TopicRecord {
                id: 0,
                name: name.to_string(),
                partitions,
                slots: 0,
                slot_size: 0,
                max_message: 0,
            }))
            .collect();
        check_room(
            &with_it,
            self.dead_letters,
            self.max_topics,
            self.max_partitions,
        )
        .map_err(CreateError::Limit)?;
        let mut geometry = Geometry {
            slots: slots.unwrap_or(self.base.slots),
            slot_size: slot_size.unwrap_or(self.base.slot_size),
            ..self.base
        };
        if slots.is_some() || slot_size.is_some() {
            geometry.max_message = geometry
                .largest_message_that_fits()
                .min(u64::from(self.base.max_message)) as u32;
        }
        geometry
            .validate()
            .map_err(|e| CreateError::Invalid(format!("invalid ring geometry: {e}")))?;
        let record = TopicRecord {
            id: records.iter().map(|r| r.id).max().unwrap_or(0) + 1,
            name: name.to_string(),
            partitions,
            slots: geometry.slots,
            slot_size: geometry.slot_size,
            max_message: geometry.max_message,
        };
        let mut created: Vec<Arc<PartitionRing>> = Vec::new();
        let undo = |created: &[Arc<PartitionRing>]| {
            for ring in created {
                let _ = Region::unlink(ring.region.name());
            }
        };
        for p in 0..partitions {
            if self.closing.load(Ordering::Acquire) {
                undo(&created);
                return Err(CreateError::Stopping);
            }
            match self.open_ring(topic_partition(&record, p), geometry, rings + 1 + p, 0) {
                Ok(ring) => created.push(Arc::new(ring)),
                Err(e) => {
                    undo(&created);
                    return Err(CreateError::Failed(e.to_string()));
                }
            }
        }
        let mut all = records;
        all.push(record.clone());
        if let Err(e) = directory::save(&self.data_dir, &all) {
            undo(&created);
            return Err(CreateError::Failed(format!(
                "cannot save {}: {e}",
                directory::TOPICS_FILE
            )));
        }
        let mut dir = self.write();
        dir.records = all;
        dir.rings.extend(created);
        Ok(record)
    }

    /// At a stop, before the rings are closed: no creation starts any more, and
    /// one in progress undoes what it made; returns once none runs.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        drop(self.creating.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The rings whose reclaim failed since the last call, for a repair.
    pub fn take_repairs(&self) -> Vec<Arc<PartitionRing>> {
        let wanted = std::mem::take(&mut *self.repairs.lock().unwrap_or_else(|p| p.into_inner()));
        wanted.into_iter().filter_map(|n| self.ring(n)).collect()
    }

    /// At a stop, once the regions are marked closing and the persister is done:
    /// unlinks every partition region whose records are all persisted; the names
    /// of those kept (the next start recovers them). A region whose lock is still
    /// held (a producer stopped in its send) is kept: what it commits would be in
    /// the region only.
    pub fn unlink_persisted(&self) -> Vec<String> {
        let mut kept = Vec::new();
        for ring in self.rings() {
            // Holds taken from now on see the region closing and commit nothing.
            let free = ring
                .region
                .wait_out_commits(std::time::Duration::from_millis(10));
            if free && ring.persisted.load(Ordering::Acquire) >= ring.region.next_offset() {
                let _ = Region::unlink(ring.region.name());
            } else {
                kept.push(ring.region.name().to_string());
            }
        }
        kept
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn control(&self) -> &str {
        &self.control
    }
}
