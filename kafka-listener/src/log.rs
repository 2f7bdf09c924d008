//! What the listener sees of the broker: its topics and partitions, appending
//! records, reading them back from any offset, and creating topics. The broker
//! implements [`KafkaLog`] over its rings and its persistence file; the
//! listener knows nothing of either.

/// A group as ListGroups and DescribeGroups show it: today a shared-memory
/// group, with its consumers' ids and its assignment (`round-robin` or
/// `partition`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub name: String,
    pub members: Vec<String>,
    pub assignment: String,
}

/// A Kafka group's committed offset, to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommit {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// The next offset the group reads (Kafka's committed offset).
    pub offset: u64,
}

/// A committed offset of a group, either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// Why a name cannot be a Kafka group's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupClaimError {
    #[error("{0}")]
    InvalidName(String),
    #[error("group {0} is a shared-memory group")]
    SharedMemoryGroup(String),
}

/// A topic as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
}

/// Where a partition's records are: `earliest` is the first still readable (in
/// the file or the ring), `end` the next to be assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub earliest: u64,
    pub end: u64,
}

/// A stand-in producer the broker keeps for a Kafka client id, named
/// `kafka:<client id>` in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerHandle(pub u64);

/// What an append committed: the offset of its first record, and how many of
/// the records it was given (fewer when the ring had no room for the rest; they
/// are to be appended again later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: Option<u64>,
    pub count: usize,
}

/// Why records could not be appended; nothing of them was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("no such topic-partition")]
    UnknownPartition,
    #[error("a record of {size} bytes exceeds the partition's maximum of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("{0}")]
    Refused(String),
}

/// A record to append: its key, its payload, and its headers in Kafka's
/// encoding (their count first; empty for none).
pub type RecordToAppend<'a> = (Option<&'a [u8]>, &'a [u8], &'a [u8]);

/// A record read back, borrowed for the visit.
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord<'a> {
    pub offset: u64,
    /// When the broker appended it: microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Its headers in Kafka's encoding, their count first; empty for none.
    pub headers: &'a [u8],
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("no such topic-partition")]
    UnknownPartition,
    #[error("offset {0} is no longer readable")]
    OutOfRange(u64),
    #[error("{0}")]
    Failed(String),
}

/// Why a topic was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateTopicError {
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    Failed(String),
}

/// The broker, as the Kafka listener uses it. Called from the listener's
/// thread, except [`KafkaLog::create_topic`], which runs on a thread of its own.
pub trait KafkaLog: Send + Sync + 'static {
    /// Every topic, `default` included, in creation order.
    fn topics(&self) -> Vec<TopicSummary>;

    /// Every live group, oldest first.
    fn groups(&self) -> Vec<GroupSummary>;

    /// How many partitions `topic` has, if it exists.
    fn partitions(&self, topic: &str) -> Option<u32>;

    /// The stand-in producer for `client_id`, made on first need; each call is
    /// matched by a [`KafkaLog::release_producer`].
    fn producer(&self, client_id: &str) -> Result<ProducerHandle, String>;

    /// One user of the stand-in producer is gone; the last one's leaving frees it.
    fn release_producer(&self, producer: ProducerHandle);

    /// Appends `records` (key, payload, headers in Kafka's encoding or empty)
    /// to a partition, as many as fit now, without waiting.
    fn append(
        &self,
        producer: ProducerHandle,
        topic: &str,
        partition: u32,
        records: &[RecordToAppend<'_>],
    ) -> Result<Appended, AppendError>;

    /// Under `--fsync`, whether every offset below `end` of the partition is on
    /// disk; without it, always true.
    fn on_disk(&self, topic: &str, partition: u32, end: u64) -> bool;

    /// The partition's earliest readable offset and its end.
    fn offsets(&self, topic: &str, partition: u32) -> Option<Offsets>;

    /// The first offset of the partition published at or after `time_us`, if any.
    fn offset_for_time(&self, topic: &str, partition: u32, time_us: u64) -> Option<u64>;

    /// Visits the partition's records from `from` on, in order, while `visit`
    /// returns true, up to the end; logs each visited one as read by `reader`
    /// (the consumption log's consumer column) for `group` (its group column;
    /// `-` for none). The visited records
    /// are in the consumption log once [`KafkaLog::log_written`] says the mark
    /// returned is written; None when none was visited.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        group: Option<&str>,
        reader: &str,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> bool,
    ) -> Result<Option<u64>, ReadError>;

    /// Whether the consumption log has written everything up to `mark`; if not,
    /// asks for it to be written now.
    fn log_written(&self, mark: u64) -> bool;

    /// Creates a topic with the broker's ring geometry; with `validate_only`,
    /// only says whether it would.
    fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        validate_only: bool,
    ) -> Result<(), CreateTopicError>;

    /// Makes `group` a Kafka group's name, if it is not one already: refused
    /// when a shared-memory group has it (live, or with a saved position), or
    /// when it is not a valid group name.
    fn claim_group(&self, group: &str) -> Result<(), GroupClaimError>;

    /// Kafka group `group` has no members left: its name is free again unless
    /// it has committed offsets.
    fn release_group(&self, group: &str);

    /// Writes Kafka groups' committed offsets into the state file; returns
    /// once it is written. Called beside the listener's loop.
    fn commit_offsets(&self, commits: &[GroupCommit]) -> Result<(), String>;

    /// Group `group`'s committed offsets: a Kafka group's as committed, a
    /// shared-memory group's acknowledged positions.
    fn committed_offsets(&self, group: &str) -> Vec<Committed>;

    /// The Kafka groups that have committed offsets, by name.
    fn kafka_groups_with_offsets(&self) -> Vec<String>;

    /// The Kafka groups with members changed: what `broker status` and the
    /// metrics show of them.
    fn kafka_groups_changed(&self, groups: Vec<crate::coordinator::GroupView>);
}
