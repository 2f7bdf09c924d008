//! Frames ⇄ typed control messages. Bodies are big-endian fixed-width integers and
//! length-prefixed (u16) UTF-8 strings; every read is bounds-checked and a body must
//! be consumed exactly.

use crate::frame::MAX_TOPICS_PER_CONSUMER;
use crate::frame::{self, FrameError};
use shm_layout::layout::Geometry;

/// What a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Producer,
    Consumer,
    /// `broker status` and other read-only tools.
    Admin,
    /// A standalone reader (SPEC §10): in no group, holding nothing back.
    Reader,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Producer => 1,
            Role::Consumer => 2,
            Role::Admin => 3,
            Role::Reader => 4,
        }
    }
    fn from_code(c: u8) -> Result<Role, FrameError> {
        match c {
            1 => Ok(Role::Producer),
            2 => Ok(Role::Consumer),
            3 => Ok(Role::Admin),
            4 => Ok(Role::Reader),
            _ => Err(FrameError::Malformed("unknown role")),
        }
    }
    /// The word used in default ids and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }
}

/// How a group gives out a topic's messages among its members (SPEC §11),
/// fixed when the group is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignment {
    /// Each partition's offsets dealt in turn over the members reading it.
    #[default]
    RoundRobin,
    /// Each partition owned by one member at a time (Kafka's).
    Partition,
}

impl Assignment {
    fn code(self) -> u8 {
        match self {
            Assignment::RoundRobin => 1,
            Assignment::Partition => 2,
        }
    }
    fn from_code(c: u8) -> Result<Option<Assignment>, FrameError> {
        match c {
            0 => Ok(None),
            1 => Ok(Some(Assignment::RoundRobin)),
            2 => Ok(Some(Assignment::Partition)),
            _ => Err(FrameError::Malformed("unknown assignment")),
        }
    }
    /// Reads the word `--assignment` takes.
    pub fn parse(s: &str) -> Result<Assignment, String> {
        match s {
            "round-robin" => Ok(Assignment::RoundRobin),
            "partition" => Ok(Assignment::Partition),
            _ => Err(format!("{s:?} is not round-robin or partition")),
        }
    }

    /// The word `--assignment` takes.
    pub fn name(self) -> &'static str {
        match self {
            Assignment::RoundRobin => "round-robin",
            Assignment::Partition => "partition",
        }
    }
}

/// Why the broker refused a registration or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadToken,
    IdInUse,
    TooManyClients,
    TooManyGroups,
    InvalidName,
    ProtocolError,
    // 7 is reserved: it once meant "broker stopping", which no broker sends (a
    // stopping broker closes every connection instead).
    NoGroups,
    /// A consumer named a topic the broker does not have.
    UnknownTopic,
    /// A consumer asked for another assignment than its group's.
    AssignmentMismatch,
    /// A consumer named a group whose members join over the Kafka port.
    KafkaGroup,
}

impl Refusal {
    fn code(self) -> u16 {
        match self {
            Refusal::BadToken => 1,
            Refusal::IdInUse => 2,
            Refusal::TooManyClients => 3,
            Refusal::TooManyGroups => 4,
            Refusal::InvalidName => 5,
            Refusal::ProtocolError => 6,
            Refusal::NoGroups => 8,
            Refusal::UnknownTopic => 9,
            Refusal::AssignmentMismatch => 10,
            Refusal::KafkaGroup => 11,
        }
    }
    fn from_code(c: u16) -> Result<Refusal, FrameError> {
        Ok(match c {
            1 => Refusal::BadToken,
            2 => Refusal::IdInUse,
            3 => Refusal::TooManyClients,
            4 => Refusal::TooManyGroups,
            5 => Refusal::InvalidName,
            6 => Refusal::ProtocolError,
            8 => Refusal::NoGroups,
            9 => Refusal::UnknownTopic,
            10 => Refusal::AssignmentMismatch,
            11 => Refusal::KafkaGroup,
            _ => return Err(FrameError::Malformed("unknown refusal code")),
        })
    }
}

/// Every control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlFrame {
    /// Client → broker, first frame.
    Hello { role: Role },
    /// Broker → client: where the region is and its shape.
    Welcome {
        broker_pid: u32,
        region: String,
        layout_version: u32,
        geometry: Geometry,
    },
    /// Client → broker: join, proving access with the region's token.
    Register {
        role: Role,
        id: String,
        group: Option<String>,
        pid: u32,
        token: [u64; 2],
        /// A consumer's topics (SPEC §11); none means `default`.
        topics: Vec<String>,
        /// The assignment a consumer wants of the group it creates or joins
        /// (None: whatever the group's is).
        assignment: Option<Assignment>,
    },
    /// Broker → client: registration accepted.
    Registered {
        client: u32,
        generation: u32,
        group: Option<(u32, String)>,
        /// The broker's data directory (absolute): readers read the persistence
        /// file there.
        data_dir: String,
        /// The group's assignment (None for a client in no group).
        assignment: Option<Assignment>,
    },
    /// Broker → client: request refused; the connection closes after it.
    Refused { reason: Refusal, message: String },
    /// Broker → consumer: removed from its group for not polling in time.
    Evicted { group: String },
    /// Admin → broker: ask for the status report.
    StatusRequest,
    /// Broker → admin: the status report, as JSON.
    Status { json: String },
    /// Producer → broker: it has waited a while for `waiting_for` in a
    /// topic-partition; what holds it?
    WaitReasonRequest {
        topic: String,
        partition: u32,
        waiting_for: WaitingFor,
    },
    /// Broker → producer: what holds it, in words (`group group-2 is 4096
    /// messages behind and has no consumers`).
    WaitReason { reason: String },
    /// Reader → broker: commit `offset` (the next one to read) in a
    /// topic-partition under the reader's id (SPEC §10).
    Commit {
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// Broker → reader: the commit is in the state file.
    CommitDone,
    /// Broker → reader: the commit could not be written, and why.
    CommitFailed { reason: String },
    /// Client or admin → broker: the committed offsets of one owner, or of all.
    CommittedRequest { owner: Option<(OwnerKind, String)> },
    /// Broker → client: the committed offsets asked for.
    Committed { offsets: Vec<CommittedOffset> },
    /// Admin → broker: move group `group`, which must have no member, to `to`.
    ResetOffsets {
        group: String,
        topic: String,
        to: ResetTo,
    },
    /// Broker → admin: the group now resumes at these offsets, one per
    /// partition of the topic.
    ResetDone { offsets: Vec<u64> },
    /// Broker → admin: the group was not moved, and why.
    ResetRefused { reason: String },
    /// Client → broker: where is topic `name`?
    TopicRequest { name: String },
    /// Broker → client: topic `name`'s id, partitions and ring geometry. Its
    /// partition `p`'s ring is number `first_ring + p` in the control region's
    /// pending set, in the region `names::partition_region(control, id, p)`
    /// (`default`'s one partition is the control region's own ring, number 0).
    TopicInfo(TopicInfo),
    /// Broker → client: there is no topic `name`.
    UnknownTopic { name: String },
    /// Admin → broker: create topic `name` (SPEC §11).
    CreateTopic {
        name: String,
        partitions: u32,
        slots: Option<u32>,
        slot_size: Option<u32>,
    },
    /// Broker → admin: created.
    TopicCreated(TopicInfo),
    /// Broker → admin: not created, and why; `exists` when the name is taken.
    CreateRefused { reason: String, exists: bool },
    /// Admin → broker: list the topics.
    TopicsRequest,
    /// Broker → admin: the topics, as JSON.
    Topics { json: String },
}

/// A topic, as the broker describes it to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: u32,
    pub name: String,
    pub partitions: u32,
    pub first_ring: u32,
    pub slots: u32,
    pub slot_size: u32,
    pub max_message: u32,
}

impl TopicInfo {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.id)
            .str(&self.name)
            .u32(self.partitions)
            .u32(self.first_ring)
            .u32(self.slots)
            .u32(self.slot_size)
            .u32(self.max_message);
    }

    fn decode(r: &mut Reader<'_>) -> Result<TopicInfo, FrameError> {
        Ok(TopicInfo {
            id: r.u32()?,
            name: r.str()?,
            partitions: r.u32()?,
            first_ring: r.u32()?,
            slots: r.u32()?,
            slot_size: r.u32()?,
            max_message: r.u32()?,
        })
    }
}

/// Where `broker reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The oldest offset still in the persistence file (or the ring).
    Earliest,
    /// The next offset to be published.
    Latest,
    Offset(u64),
    /// The first offset published at or after this time (µs since the Unix epoch).
    Time(u64),
}

impl ResetTo {
    /// Parses a place in a partition as users type it: `earliest`, `latest`, an
    /// offset, or an RFC 3339 time (`2026-12-04T10:00:00Z`).
    pub fn parse(s: &str) -> Result<ResetTo, String> {
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
                .parse()
                .map(ResetTo::Offset)
                .map_err(|_| format!("offset {s} is too large")),
            _ => {
                let time = humantime::parse_rfc3339_weak(s).map_err(|_| {
                    format!("expected earliest, latest, an offset or an RFC 3339 time, got {s:?}")
                })?;
                let us = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{s} is before 1970"))?
                    .as_micros();
                Ok(ResetTo::Time(us as u64))
            }
        }
    }

    fn encode(self, w: &mut Writer) {
        let (code, value) = match self {
            ResetTo::Earliest => (1, 0),
            ResetTo::Latest => (2, 0),
            ResetTo::Offset(o) => (3, o),
            ResetTo::Time(t) => (4, t),
        };
        w.u8(code).u64(value);
    }
    fn decode(r: &mut Reader<'_>) -> Result<ResetTo, FrameError> {
        let code = r.u8()?;
        let value = r.u64()?;
        Ok(match code {
            1 => ResetTo::Earliest,
            2 => ResetTo::Latest,
            3 => ResetTo::Offset(value),
            4 => ResetTo::Time(value),
            _ => return Err(FrameError::Malformed("unknown reset target")),
        })
    }
}

/// Who owns committed offsets: a group (its acknowledged position) or a
/// standalone reader (what it committed under its id). A group and a reader may
/// share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnerKind {
    Group,
    Reader,
}

impl OwnerKind {
    fn code(self) -> u8 {
        match self {
            OwnerKind::Group => 1,
            OwnerKind::Reader => 2,
        }
    }
    fn from_code(c: u8) -> Result<OwnerKind, FrameError> {
        match c {
            1 => Ok(OwnerKind::Group),
            2 => Ok(OwnerKind::Reader),
            _ => Err(FrameError::Malformed("unknown owner kind")),
        }
    }
    /// The word the state file and `broker committed` use.
    pub fn name(self) -> &'static str {
        match self {
            OwnerKind::Group => "group",
            OwnerKind::Reader => "reader",
        }
    }
}

/// One committed offset: the next offset its owner reads in a topic-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub kind: OwnerKind,
    pub owner: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// What a waiting producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingFor {
    /// Free slots in a full ring.
    Space,
    /// Its records on disk (`--fsync`).
    Disk,
}

impl WaitingFor {
    fn code(self) -> u8 {
        match self {
            WaitingFor::Space => 1,
            WaitingFor::Disk => 2,
        }
    }
    fn from_code(c: u8) -> Result<WaitingFor, FrameError> {
        match c {
            1 => Ok(WaitingFor::Space),
            2 => Ok(WaitingFor::Disk),
            _ => Err(FrameError::Malformed("unknown wait kind")),
        }
    }
    /// How a waiting line names it.
    pub fn name(self) -> &'static str {
        match self {
            WaitingFor::Space => "space",
            WaitingFor::Disk => "the disk",
        }
    }
}

mod kind {
    pub const HELLO: u8 = 1;
    pub const WELCOME: u8 = 2;
    pub const REGISTER: u8 = 3;
    pub const REGISTERED: u8 = 4;
    pub const REFUSED: u8 = 5;
    pub const EVICTED: u8 = 6;
    pub const STATUS_REQUEST: u8 = 7;
    pub const STATUS: u8 = 8;
    pub const WAIT_REASON_REQUEST: u8 = 9;
    pub const WAIT_REASON: u8 = 10;
    pub const COMMIT: u8 = 11;
    pub const COMMIT_DONE: u8 = 12;
    pub const COMMIT_FAILED: u8 = 13;
    pub const COMMITTED_REQUEST: u8 = 14;
    pub const COMMITTED: u8 = 15;
    pub const RESET_OFFSETS: u8 = 16;
    pub const RESET_DONE: u8 = 17;
    pub const RESET_REFUSED: u8 = 18;
    pub const TOPIC_REQUEST: u8 = 19;
    pub const TOPIC_INFO: u8 = 20;
    pub const UNKNOWN_TOPIC: u8 = 21;
    pub const CREATE_TOPIC: u8 = 22;
    pub const TOPIC_CREATED: u8 = 23;
    pub const CREATE_REFUSED: u8 = 24;
    pub const TOPICS_REQUEST: u8 = 25;
    pub const TOPICS: u8 = 26;
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }
    fn long_str(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError::Malformed("body too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, FrameError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed("string is not UTF-8"))
    }
    fn long_str(&mut self) -> Result<String, FrameError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed("string is not UTF-8"))
    }
    fn opt_str(&mut self) -> Result<Option<String>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(FrameError::Malformed("bad option flag")),
        }
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, FrameError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            _ => Err(FrameError::Malformed("bad option flag")),
        }
    }
    fn finish(self) -> Result<(), FrameError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed("trailing bytes"))
        }
    }
}

impl ControlFrame {
    /// Encodes the message as a whole frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        let kind = match self {
            ControlFrame::Hello { role } => {
                w.u8(role.code());
                kind::HELLO
            }
            ControlFrame::Welcome {
                broker_pid,
                region,
                layout_version,
                geometry: g,
            } => {
                w.u32(*broker_pid)
                    .str(region)
                    .u32(*layout_version)
                    .u32(g.slots)
                    .u32(g.slot_size)
                    .u32(g.max_message)
                    .u32(g.max_clients)
                    .u32(g.max_groups)
                    .u32(g.redeliveries_per_group);
                kind::WELCOME
            }
            ControlFrame::Register {
                role,
                id,
                group,
                pid,
                token,
                topics,
                assignment,
            } => {
                w.u8(role.code()).str(id);
                match group {
                    Some(g) => w.u8(1).str(g),
                    None => w.u8(0),
                };
                w.u32(*pid).u64(token[0]).u64(token[1]);
                w.u16(topics.len().min(MAX_TOPICS_PER_CONSUMER) as u16);
                for t in topics.iter().take(MAX_TOPICS_PER_CONSUMER) {
                    w.str(t);
                }
                w.u8(assignment.map_or(0, Assignment::code));
                kind::REGISTER
            }
            ControlFrame::Registered {
                client,
                generation,
                group,
                data_dir,
                assignment,
            } => {
                w.u32(*client).u32(*generation);
                match group {
                    Some((i, name)) => w.u8(1).u32(*i).str(name),
                    None => w.u8(0),
                };
                w.long_str(data_dir);
                w.u8(assignment.map_or(0, Assignment::code));
                kind::REGISTERED
            }
            ControlFrame::Refused { reason, message } => {
                w.u16(reason.code()).str(message);
                kind::REFUSED
            }
            ControlFrame::Evicted { group } => {
                w.str(group);
                kind::EVICTED
            }
            ControlFrame::StatusRequest => kind::STATUS_REQUEST,
            ControlFrame::Status { json } => {
                w.long_str(json);
                kind::STATUS
            }
            ControlFrame::WaitReasonRequest {
                topic,
                partition,
                waiting_for,
            } => {
                w.str(topic).u32(*partition).u8(waiting_for.code());
                kind::WAIT_REASON_REQUEST
            }
            ControlFrame::WaitReason { reason } => {
                w.str(reason);
                kind::WAIT_REASON
            }
            ControlFrame::Commit {
                topic,
                partition,
                offset,
            } => {
                w.str(topic).u32(*partition).u64(*offset);
                kind::COMMIT
            }
            ControlFrame::CommitDone => kind::COMMIT_DONE,
            ControlFrame::CommitFailed { reason } => {
                w.str(reason);
                kind::COMMIT_FAILED
            }
            ControlFrame::CommittedRequest { owner } => {
                match owner {
                    Some((k, name)) => w.u8(1).u8(k.code()).str(name),
                    None => w.u8(0),
                };
                kind::COMMITTED_REQUEST
            }
            ControlFrame::Committed { offsets } => {
                w.u32(offsets.len() as u32);
                for o in offsets {
                    w.u8(o.kind.code())
                        .str(&o.owner)
                        .str(&o.topic)
                        .u32(o.partition)
                        .u64(o.offset);
                }
                kind::COMMITTED
            }
            ControlFrame::ResetOffsets { group, topic, to } => {
                w.str(group).str(topic);
                to.encode(&mut w);
                kind::RESET_OFFSETS
            }
            ControlFrame::ResetDone { offsets } => {
                let n = offsets.len().min(shm_layout::layout::MAX_RINGS as usize);
                w.u32(n as u32);
                for o in &offsets[..n] {
                    w.u64(*o);
                }
                kind::RESET_DONE
            }
            ControlFrame::ResetRefused { reason } => {
                w.str(reason);
                kind::RESET_REFUSED
            }
            ControlFrame::TopicRequest { name } => {
                w.str(name);
                kind::TOPIC_REQUEST
            }
            ControlFrame::TopicInfo(info) => {
                info.encode(&mut w);
                kind::TOPIC_INFO
            }
            ControlFrame::UnknownTopic { name } => {
                w.str(name);
                kind::UNKNOWN_TOPIC
            }
            ControlFrame::CreateTopic {
                name,
                partitions,
                slots,
                slot_size,
            } => {
                w.str(name).u32(*partitions);
                for v in [slots, slot_size] {
                    match v {
                        Some(v) => w.u8(1).u32(*v),
                        None => w.u8(0),
                    };
                }
                kind::CREATE_TOPIC
            }
            ControlFrame::TopicCreated(info) => {
                info.encode(&mut w);
                kind::TOPIC_CREATED
            }
            ControlFrame::CreateRefused { reason, exists } => {
                w.str(reason).u8(u8::from(*exists));
                kind::CREATE_REFUSED
            }
            ControlFrame::TopicsRequest => kind::TOPICS_REQUEST,
            ControlFrame::Topics { json } => {
                w.long_str(json);
                kind::TOPICS
            }
        };
        frame::build(kind, &w.0)
    }

    /// Decodes a whole frame (as measured by [`frame::check`]).
    pub fn decode(whole: &[u8]) -> Result<ControlFrame, FrameError> {
        let (k, body) = frame::split(whole)?;
        let mut r = Reader(body);
        let msg = match k {
            kind::HELLO => ControlFrame::Hello {
                role: Role::from_code(r.u8()?)?,
            },
            kind::WELCOME => ControlFrame::Welcome {
                broker_pid: r.u32()?,
                region: r.str()?,
                layout_version: r.u32()?,
                geometry: Geometry {
                    slots: r.u32()?,
                    slot_size: r.u32()?,
                    max_message: r.u32()?,
                    max_clients: r.u32()?,
                    max_groups: r.u32()?,
                    redeliveries_per_group: r.u32()?,
                },
            },
            kind::REGISTER => ControlFrame::Register {
                role: Role::from_code(r.u8()?)?,
                id: r.str()?,
                group: r.opt_str()?,
                pid: r.u32()?,
                token: [r.u64()?, r.u64()?],
                topics: {
                    let n = r.u16()? as usize;
                    if n > MAX_TOPICS_PER_CONSUMER {
                        return Err(FrameError::Malformed("too many topics"));
                    }
                    (0..n).map(|_| r.str()).collect::<Result<_, _>>()?
                },
                assignment: Assignment::from_code(r.u8()?)?,
            },
            kind::REGISTERED => {
                let client = r.u32()?;
                let generation = r.u32()?;
                let group = match r.u8()? {
                    0 => None,
                    1 => Some((r.u32()?, r.str()?)),
                    _ => return Err(FrameError::Malformed("bad option flag")),
                };
                ControlFrame::Registered {
                    client,
                    generation,
                    group,
                    data_dir: r.long_str()?,
                    assignment: Assignment::from_code(r.u8()?)?,
                }
            }
            kind::REFUSED => ControlFrame::Refused {
                reason: Refusal::from_code(r.u16()?)?,
                message: r.str()?,
            },
            kind::EVICTED => ControlFrame::Evicted { group: r.str()? },
            kind::STATUS_REQUEST => ControlFrame::StatusRequest,
            kind::STATUS => ControlFrame::Status {
                json: r.long_str()?,
            },
            kind::WAIT_REASON_REQUEST => ControlFrame::WaitReasonRequest {
                topic: r.str()?,
                partition: r.u32()?,
                waiting_for: WaitingFor::from_code(r.u8()?)?,
            },
            kind::WAIT_REASON => ControlFrame::WaitReason { reason: r.str()? },
            kind::COMMIT => ControlFrame::Commit {
                topic: r.str()?,
                partition: r.u32()?,
                offset: r.u64()?,
            },
            kind::COMMIT_DONE => ControlFrame::CommitDone,
            kind::COMMIT_FAILED => ControlFrame::CommitFailed { reason: r.str()? },
            kind::COMMITTED_REQUEST => ControlFrame::CommittedRequest {
                owner: match r.u8()? {
                    0 => None,
                    1 => Some((OwnerKind::from_code(r.u8()?)?, r.str()?)),
                    _ => return Err(FrameError::Malformed("bad option flag")),
                },
            },
            kind::COMMITTED => {
                let n = r.u32()?;
                // Each entry takes at least 17 bytes: the count is checked against
                // the body as the entries are read, never trusted for an allocation.
                let mut offsets = Vec::new();
                for _ in 0..n {
                    offsets.push(CommittedOffset {
                        kind: OwnerKind::from_code(r.u8()?)?,
                        owner: r.str()?,
                        topic: r.str()?,
                        partition: r.u32()?,
                        offset: r.u64()?,
                    });
                }
                ControlFrame::Committed { offsets }
            }
            kind::RESET_OFFSETS => ControlFrame::ResetOffsets {
                group: r.str()?,
                topic: r.str()?,
                to: ResetTo::decode(&mut r)?,
            },
            kind::RESET_DONE => {
                let n = r.u32()?;
                if n > shm_layout::layout::MAX_RINGS {
                    return Err(FrameError::Malformed("more offsets than partitions"));
                }
                ControlFrame::ResetDone {
                    offsets: (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?,
                }
            }
            kind::RESET_REFUSED => ControlFrame::ResetRefused { reason: r.str()? },
            kind::TOPIC_REQUEST => ControlFrame::TopicRequest { name: r.str()? },
            kind::TOPIC_INFO => ControlFrame::TopicInfo(TopicInfo::decode(&mut r)?),
            kind::UNKNOWN_TOPIC => ControlFrame::UnknownTopic { name: r.str()? },
            kind::CREATE_TOPIC => ControlFrame::CreateTopic {
                name: r.str()?,
                partitions: r.u32()?,
                slots: r.opt_u32()?,
                slot_size: r.opt_u32()?,
            },
            kind::TOPIC_CREATED => ControlFrame::TopicCreated(TopicInfo::decode(&mut r)?),
            kind::CREATE_REFUSED => ControlFrame::CreateRefused {
                reason: r.str()?,
                exists: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(FrameError::Malformed("bad flag")),
                },
            },
            kind::TOPICS_REQUEST => ControlFrame::TopicsRequest,
            kind::TOPICS => ControlFrame::Topics {
                json: r.long_str()?,
            },
            other => return Err(FrameError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{check, MAX_REPLY_LEN};
    use proptest::prelude::*;

    fn samples() -> Vec<ControlFrame> {
        vec![
            ControlFrame::Hello {
                role: Role::Consumer,
            },
            ControlFrame::Welcome {
                broker_pid: 42,
                region: "/minikafka-4444".into(),
                layout_version: 1,
                geometry: Geometry {
                    slots: 4096,
                    slot_size: 1024,
                    max_message: 1 << 20,
                    max_clients: 1024,
                    max_groups: 64,
                    redeliveries_per_group: 256,
                },
            },
            ControlFrame::Register {
                role: Role::Producer,
                id: "p-1".into(),
                group: Some("g".into()),
                pid: 7,
                token: [1, u64::MAX],
                topics: vec!["orders".into(), "logs".into()],
                assignment: Some(Assignment::Partition),
            },
            ControlFrame::Registered {
                client: 3,
                generation: 9,
                group: Some((1, "group-2".into())),
                data_dir: "/var/lib/mini-kafka".into(),
                assignment: Some(Assignment::RoundRobin),
            },
            ControlFrame::Hello { role: Role::Reader },
            ControlFrame::Refused {
                reason: Refusal::BadToken,
                message: "no".into(),
            },
            ControlFrame::Evicted { group: "g".into() },
            ControlFrame::StatusRequest,
            ControlFrame::Status { json: "{}".into() },
            ControlFrame::WaitReasonRequest {
                topic: "default".into(),
                partition: 0,
                waiting_for: WaitingFor::Disk,
            },
            ControlFrame::WaitReason {
                reason: "group g is 3 messages behind".into(),
            },
            ControlFrame::Commit {
                topic: "default".into(),
                partition: 0,
                offset: 1200,
            },
            ControlFrame::CommitDone,
            ControlFrame::CommitFailed {
                reason: "No space left on device".into(),
            },
            ControlFrame::CommittedRequest { owner: None },
            ControlFrame::ResetOffsets {
                group: "billing".into(),
                topic: "default".into(),
                to: ResetTo::Time(1_795_832_687_000_000),
            },
            ControlFrame::ResetOffsets {
                group: "billing".into(),
                topic: "orders".into(),
                to: ResetTo::Earliest,
            },
            ControlFrame::ResetDone {
                offsets: vec![42, 7],
            },
            ControlFrame::ResetRefused {
                reason: "group billing has 2 members".into(),
            },
            ControlFrame::CommittedRequest {
                owner: Some((OwnerKind::Reader, "audit".into())),
            },
            ControlFrame::TopicRequest {
                name: "orders".into(),
            },
            ControlFrame::TopicInfo(TopicInfo {
                id: 3,
                name: "orders".into(),
                partitions: 4,
                first_ring: 7,
                slots: 256,
                slot_size: 128,
                max_message: 16384,
            }),
            ControlFrame::UnknownTopic {
                name: "nope".into(),
            },
            ControlFrame::CreateTopic {
                name: "orders".into(),
                partitions: 4,
                slots: Some(256),
                slot_size: None,
            },
            ControlFrame::TopicCreated(TopicInfo {
                id: 1,
                name: "logs".into(),
                partitions: 1,
                first_ring: 1,
                slots: 4096,
                slot_size: 1024,
                max_message: 1 << 20,
            }),
            ControlFrame::CreateRefused {
                reason: "topic orders exists".into(),
                exists: true,
            },
            ControlFrame::TopicsRequest,
            ControlFrame::Topics { json: "[]".into() },
            ControlFrame::Committed {
                offsets: vec![
                    CommittedOffset {
                        kind: OwnerKind::Group,
                        owner: "billing".into(),
                        topic: "default".into(),
                        partition: 0,
                        offset: 7,
                    },
                    CommittedOffset {
                        kind: OwnerKind::Reader,
                        owner: "billing".into(),
                        topic: "default".into(),
                        partition: 0,
                        offset: u64::MAX,
                    },
                ],
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let bytes = m.encode();
            assert_eq!(check(&bytes, MAX_REPLY_LEN), Ok(Some(bytes.len())));
            assert_eq!(ControlFrame::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_malformed() {
        for m in samples() {
            let bytes = m.encode();
            let body_len = bytes.len() - 6;
            for cut in 0..body_len {
                let mut short = bytes[..6 + cut].to_vec();
                short[..4].copy_from_slice(&((cut + 2) as u32).to_be_bytes());
                if let Ok(decoded) = ControlFrame::decode(&short) {
                    panic!("a {cut}-byte prefix of {m:?} decoded as {decoded:?}");
                }
            }
            let mut long = bytes.clone();
            long.push(0);
            long[..4].copy_from_slice(&((body_len + 3) as u32).to_be_bytes());
            assert!(ControlFrame::decode(&long).is_err());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(n)) = check(&bytes, MAX_REPLY_LEN) {
                let _ = ControlFrame::decode(&bytes[..n]);
            }
        }
    }
}
