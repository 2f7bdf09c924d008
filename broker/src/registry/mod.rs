//! The broker's book of clients and groups, and the region state it alone writes:
//! client entries, group rotations, redeliveries. The event loop calls it when
//! clients register and leave; the cleaner asks it how far each group has consumed.
//!
//! One file per job, each an `impl Registry` where the job needs the whole
//! registry: `clients` (registration, leases, quarantine, retiring producers,
//! client entries), `groups` (groups, rotations, auto-join, positions),
//! `history` (the pure arithmetic of who was handed which offset),
//! `redeliveries` (the book of offers, overflow, settling, validation),
//! `delivery_log` (consumption-log lines and the log-written gating), `readers`
//! (standalone readers' journals turned into log lines), `kafka_clients` (Kafka
//! clients' stand-in producers and the log lines of their fetches) and
//! `status` (rates, status snapshots, the state-file view).

mod clients;
mod dead_letters;
mod delivery_log;
mod groups;
mod history;
mod kafka_clients;
mod readers;
mod redeliveries;
mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use control_protocol::{Refusal, Role};
use shm_layout::BrokerRegion;

pub use clients::Eviction;
use clients::{Client, Quarantined, Retiring};
pub use dead_letters::DeadLetterTopic;
use groups::Group;
pub use groups::{Consumed, Departed, GroupStart, PartitionConsumed};
pub use kafka_clients::ProducerOf;
pub use redeliveries::RedeliveryRepair;
pub use status::{
    GroupSnapshot, MemberSnapshot, PartitionSnapshot, ProducerSnapshot, ReaderSnapshot,
    SlowestGroup,
};

/// A refused registration: the reason code and one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub message: String,
}

fn refuse(reason: Refusal, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// What a successful registration hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub client: u32,
    pub generation: u32,
    pub group: Option<(u32, String)>,
    /// The group's assignment.
    pub assignment: Option<control_protocol::Assignment>,
}

/// Limits, timeouts and policies the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    pub session_timeout: Duration,
    /// `--spill`: a group holds the ring only while it has members (SPEC §10).
    pub spill: bool,
    /// `--assignment`: that of the pre-created groups.
    pub assignment: control_protocol::Assignment,
    /// `--group-topics`: whether the pre-created groups read `default` (the
    /// other topics' rings are opened by `pin_group_topics`).
    pub groups_read_default: bool,
    /// `--max-attempts`: a message delivered this many times to a group
    /// without an acknowledgement goes to its topic's dead-letter topic.
    pub max_attempts: Option<u32>,
}

/// Every client and group.
pub struct Registry {
    region: Arc<BrokerRegion>,
    limits: RegistryLimits,
    clients: Vec<Option<Client>>,
    ids: HashMap<(Role, String), u32>,
    groups: Vec<Option<Group>>,
    generation: u32,
    groups_created: u64,
    /// Producers gone with possibly uncommitted reservations, for the cleaner.
    abandoned: Vec<u32>,
    /// Those of them whose holds in the partitions' rings the cleaner released.
    released_in_partitions: std::collections::HashSet<u32>,
    /// Admin sessions (they take no client entry).
    admins: usize,
    /// The client entry handed out last.
    last_slot: u32,
    /// Removed consumers whose entries wait for their processes to end: (entry, pid).
    quarantined: Vec<Quarantined>,
    /// Gone producers whose names (and, while `holds_entry`, client entries) wait
    /// for their messages to be reclaimed.
    retiring: Vec<Retiring>,
    /// Names of producers by (client entry, generation), while their messages live.
    producers: HashMap<(u32, u32), Arc<str>>,
    /// Consumption-log lines observed and not yet taken by the cleaner.
    log_text: Vec<u8>,
    /// Bytes of consumption-log lines taken by the cleaner so far, in the order
    /// the log's writer writes them.
    log_taken: u64,
    /// Bytes of consumption-log lines the writer has written (shared with it).
    log_written: Arc<std::sync::atomic::AtomicU64>,
    /// Something waits for lines to be written: the cleaner asks for them now.
    log_wanted: bool,
    /// Stands for a producer or consumer whose name is no longer known.
    unknown: Arc<str>,
    /// Kinds of redelivery-table faults already reported (each is reported once).
    reported: std::collections::HashSet<&'static str>,
    /// Publish-rate sample: when, and the next offset then.
    sampled_at: std::time::Instant,
    published_at_sample: u64,
    published_per_s: f64,
    /// Every offset below this is persisted (the persister's own count): a group's
    /// cursor can be at most a ring's worth past it.
    persisted: Arc<std::sync::atomic::AtomicU64>,
    /// Consumers evicted for the session timeout, by group name.
    evictions: std::collections::BTreeMap<String, u64>,
    /// When the clients' progress counters were last sampled.
    progress_sampled_at: std::time::Instant,
    /// Groups created by a consumer's `--group` that emptied: where each resumes
    /// when a member joins again under its name (SPEC §10). They hold no slot.
    /// Keyed by group, topic and partition.
    departed: std::collections::BTreeMap<(String, String, u32), groups::Departed>,
    /// Where each group's dead letters are published from: its stand-in
    /// producer's (client entry, generation), `dlq:<group>`.
    dead_letter_senders: HashMap<Arc<str>, (u32, u32)>,
    /// The stand-in producers of Kafka clients, by client id: their client
    /// entry, generation, and how many connections use them.
    kafka_producers: HashMap<String, (u32, u32, usize)>,
    /// Names of the Kafka groups (with members, or with committed offsets): no
    /// shared-memory group may take them (SPEC §12).
    kafka_group_names: std::collections::BTreeSet<String>,
    /// The Kafka groups with members, as their coordinator last showed them.
    kafka_groups: Vec<kafka_listener::coordinator::GroupView>,
    /// Dead-letter topics a dead letter waits for, for the cleaner to create
    /// outside this lock.
    dead_letter_topics_wanted: std::collections::BTreeSet<String>,
    /// Why a dead-letter topic could not be created, by its name, until it is.
    dead_letter_topic_failures: std::collections::BTreeMap<String, String>,
    /// The dead-letter topics being created, or waiting to be tried again.
    dead_letter_creations: std::collections::BTreeMap<String, dead_letters::Creation>,
    /// Partition rings some group stopped reading since the cleaner's last pass.
    released_rings: Vec<Arc<crate::topics::PartitionRing>>,
    /// A group departed since the last look: its position is worth saving now.
    newly_departed: bool,
    /// Where the broker is in each standalone reader's journal, by client entry.
    journals: HashMap<u32, readers::JournalDrain>,
    /// Names the producers of records that left the ring, for readers' lines.
    file_producers: Option<crate::file_producers::FileProducers>,
    /// The rings of the topics besides `default`, where producers also write.
    topics: Option<Arc<crate::topics::Topics>>,
    /// What frees `default`/0's slots: a group starting to read it takes a hold
    /// there (set once the broker's threads start).
    control_reclaimer: Option<Arc<crate::reclaim::Reclaimer>>,
    /// Names the producers of those topics' records that left their rings, by
    /// journal key (`topic id << 32 | partition`).
    partition_producers: HashMap<u64, crate::file_producers::FileProducers>,
}

impl Registry {
    /// A registry over `region`, with `groups` pre-created where they start.
    pub fn new(region: Arc<BrokerRegion>, groups: &[GroupStart], limits: RegistryLimits) -> Self {
        let g = *region.geometry();
        let mut r = Registry {
            clients: (0..g.max_clients).map(|_| None).collect(),
            groups: (0..g.max_groups).map(|_| None).collect(),
            region,
            limits,
            ids: HashMap::new(),
            generation: 0,
            groups_created: 0,
            abandoned: Vec::new(),
            released_in_partitions: std::collections::HashSet::new(),
            admins: 0,
            last_slot: g.max_clients - 1,
            retiring: Vec::new(),
            quarantined: Vec::new(),
            producers: HashMap::new(),
            log_text: Vec::new(),
            log_taken: 0,
            log_written: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            log_wanted: false,
            unknown: Arc::from("unknown"),
            reported: std::collections::HashSet::new(),
            sampled_at: std::time::Instant::now(),
            published_at_sample: 0,
            published_per_s: 0.0,
            persisted: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            evictions: std::collections::BTreeMap::new(),
            progress_sampled_at: std::time::Instant::now(),
            departed: std::collections::BTreeMap::new(),
            newly_departed: false,
            released_rings: Vec::new(),
            dead_letter_senders: HashMap::new(),
            kafka_producers: HashMap::new(),
            kafka_group_names: std::collections::BTreeSet::new(),
            kafka_groups: Vec::new(),
            dead_letter_topics_wanted: Default::default(),
            dead_letter_topic_failures: Default::default(),
            dead_letter_creations: Default::default(),
            journals: HashMap::new(),
            file_producers: None,
            topics: None,
            control_reclaimer: None,
            partition_producers: HashMap::new(),
        };
        r.published_at_sample = r.region.next_offset();
        for g in groups {
            let i = r
                .create_group(&g.name, true, r.limits.assignment)
                .expect("pre-created groups fit: checked at start-up");
            if !r.limits.groups_read_default {
                continue;
            }
            let place = r.default_place();
            r.open_ring(
                i,
                groups::RingStart {
                    place,
                    start: g.start,
                    redeliver_below: g.redeliver_below,
                    pinned: true,
                },
            );
        }
        r
    }
}
