//! One file per request: each parses its body, applies it to the [`KafkaLog`],
//! and encodes its response. A request that cannot be answered at once (a
//! fetch waiting for data, a produce waiting for room or for the disk) is a
//! [`Pending`] the listener polls again until it answers.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kacrab_protocol::generated::request_header::RequestHeaderData;

use std::sync::Arc;

use crate::committer::Committer;
use crate::coordinator::Coordinator;
use crate::log::{GroupClaimError, KafkaLog, ProducerHandle};

mod api_versions;
mod create_topics;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod produce;
pub mod sasl;
mod sync_group;
mod unsupported;

/// Kafka's API keys the listener serves, with the versions it serves.
pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const LIST_OFFSETS: i16 = 2;
pub const METADATA: i16 = 3;
pub const OFFSET_COMMIT: i16 = 8;
pub const OFFSET_FETCH: i16 = 9;
pub const FIND_COORDINATOR: i16 = 10;
pub const JOIN_GROUP: i16 = 11;
pub const HEARTBEAT: i16 = 12;
pub const LEAVE_GROUP: i16 = 13;
pub const SYNC_GROUP: i16 = 14;
pub const DESCRIBE_GROUPS: i16 = 15;
pub const LIST_GROUPS: i16 = 16;
pub const API_VERSIONS: i16 = 18;
pub const CREATE_TOPICS: i16 = 19;

/// An API served: its key, its versions, and the first of them that is
/// "flexible" (compact strings and tagged fields, header v2).
#[derive(Debug, Clone, Copy)]
pub struct Served {
    pub key: i16,
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub flexible_from: i16,
}

/// Every API served, as ApiVersions advertises them. Fetch stops before 13
/// (topic ids), ListOffsets before 7, Metadata before 10 (topic ids),
/// OffsetFetch before 8 (several groups in one request).
pub const SERVED: &[Served] = &[
    Served {
        key: PRODUCE,
        name: "Produce",
        min: 3,
        max: 9,
        flexible_from: 9,
    },
    Served {
        key: FETCH,
        name: "Fetch",
        min: 4,
        max: 12,
        flexible_from: 12,
    },
    Served {
        key: LIST_OFFSETS,
        name: "ListOffsets",
        min: 1,
        max: 6,
        flexible_from: 6,
    },
    Served {
        key: METADATA,
        name: "Metadata",
        min: 0,
        max: 9,
        flexible_from: 9,
    },
    Served {
        key: OFFSET_COMMIT,
        name: "OffsetCommit",
        min: 2,
        max: 8,
        flexible_from: 8,
    },
    Served {
        key: OFFSET_FETCH,
        name: "OffsetFetch",
        min: 1,
        max: 7,
        flexible_from: 6,
    },
    Served {
        key: FIND_COORDINATOR,
        name: "FindCoordinator",
        min: 0,
        max: 3,
        flexible_from: 3,
    },
    Served {
        key: JOIN_GROUP,
        name: "JoinGroup",
        min: 0,
        max: 9,
        flexible_from: 6,
    },
    Served {
        key: HEARTBEAT,
        name: "Heartbeat",
        min: 0,
        max: 4,
        flexible_from: 4,
    },
    Served {
        key: LEAVE_GROUP,
        name: "LeaveGroup",
        min: 0,
        max: 5,
        flexible_from: 4,
    },
    Served {
        key: SYNC_GROUP,
        name: "SyncGroup",
        min: 0,
        max: 5,
        flexible_from: 4,
    },
    Served {
        key: DESCRIBE_GROUPS,
        name: "DescribeGroups",
        min: 0,
        max: 5,
        flexible_from: 5,
    },
    Served {
        key: LIST_GROUPS,
        name: "ListGroups",
        min: 0,
        max: 4,
        flexible_from: 3,
    },
    Served {
        key: sasl::SASL_HANDSHAKE,
        name: "SaslHandshake",
        min: 0,
        max: 1,
        flexible_from: i16::MAX,
    },
    Served {
        key: API_VERSIONS,
        name: "ApiVersions",
        min: 0,
        max: 3,
        flexible_from: 3,
    },
    Served {
        key: CREATE_TOPICS,
        name: "CreateTopics",
        min: 2,
        max: 5,
        flexible_from: 5,
    },
    Served {
        key: sasl::SASL_AUTHENTICATE,
        name: "SaslAuthenticate",
        min: 0,
        max: 2,
        flexible_from: 2,
    },
];

/// The entry of `key` in [`SERVED`].
pub fn served(key: i16) -> Option<&'static Served> {
    SERVED.iter().find(|s| s.key == key)
}

/// A request's header, decoded, and its body.
#[derive(Debug, Clone)]
pub struct Request {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    /// The client's id, `-` when it sent none.
    pub client_id: String,
    pub body: Bytes,
}

/// Why a request could not even be read: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Undecodable(pub String);

impl Request {
    /// Splits a frame into its header and body. The header's shape depends on
    /// the API and version; for an API or version not served, the fixed part
    /// (key, version, correlation id) is all that is read, and the rest is the
    /// unsupported request's own business.
    pub fn parse(frame: Bytes) -> Result<Request, Undecodable> {
        let fixed = |at: usize| i16::from_be_bytes([frame[at], frame[at + 1]]);
        let (api_key, version) = (fixed(0), fixed(2));
        let correlation_id = i32::from_be_bytes(frame[4..8].try_into().expect("8 bytes"));
        let flexible = match served(api_key) {
            // An ApiVersions of a version too new is answered in v0 (Kafka's rule),
            // and its header is read as the newest one known.
            Some(s) if api_key == API_VERSIONS => version >= s.flexible_from,
            Some(s) if (s.min..=s.max).contains(&version) => version >= s.flexible_from,
            _ => unsupported::is_flexible(api_key, version),
        };
        let mut body = frame;
        let header = RequestHeaderData::read(&mut body, if flexible { 2 } else { 1 })
            .map_err(|e| Undecodable(format!("request header: {e}")))?;
        Ok(Request {
            api_key,
            version,
            correlation_id,
            client_id: header
                .client_id
                .map_or_else(|| "-".to_string(), |c| c.as_str().to_string()),
            body,
        })
    }
}

/// What the listener knows of the connection a request came on, and lends to
/// its requests.
pub struct ConnectionState {
    /// The stand-in producer this connection's produce requests use, once one
    /// was asked for, with the client id it was made for.
    pub producer: Option<(String, ProducerHandle)>,
    /// Where a compressed batch is inflated (kept from one request to the next).
    pub inflated: Vec<u8>,
    /// The Kafka group this connection last spoke for: its fetches are read
    /// for that group.
    pub group: Option<String>,
    pub auth: sasl::Auth,
    /// Close once the answer is written (a failed authentication).
    pub close_after_answer: bool,
    /// A line for the broker's log about this connection, once answered.
    pub report: Option<String>,
}

impl ConnectionState {
    /// A new connection's state; `authenticate` when the listener asks for
    /// credentials.
    pub fn new(authenticate: bool) -> Self {
        ConnectionState {
            producer: None,
            inflated: Vec::new(),
            group: None,
            auth: if authenticate {
                sasl::Auth::Required
            } else {
                sasl::Auth::NotRequired
            },
            close_after_answer: false,
            report: None,
        }
    }
}

/// The broker as requests see it.
pub struct Context<'a> {
    pub log: &'a Arc<dyn KafkaLog>,
    /// The host and port Metadata hands out.
    pub advertised: (&'a str, u16),
    pub connection: &'a mut ConnectionState,
    /// Topic creations run aside: each is started through this.
    pub spawn_creation: &'a dyn Fn(Box<dyn FnOnce() + Send>),
    pub coordinator: &'a mut Coordinator,
    /// Offset commits are written aside, through this.
    pub committer: &'a Committer,
    /// The client's address, as Kafka's tools show a member's host.
    pub peer: Option<std::net::SocketAddr>,
    /// Who may connect, when the listener asks for credentials.
    pub users: Option<&'a crate::scram::Users>,
}

impl Context<'_> {
    /// Claims `group` as a Kafka group's name: Kafka's error code if it cannot be.
    fn claim_group(&self, group: &str) -> Result<(), i16> {
        self.log.claim_group(group).map_err(|e| match e {
            GroupClaimError::InvalidName(_) => code::INVALID_GROUP_ID,
            GroupClaimError::SharedMemoryGroup(_) => code::INCONSISTENT_GROUP_PROTOCOL,
        })
    }

    /// Frees `group`'s name if the coordinator has no members of it.
    fn release_group_if_unused(&self, group: &str) {
        if self.coordinator.view(group).is_none() {
            self.log.release_group(group);
        }
    }

    /// The client's host as Kafka writes it (`/127.0.0.1`).
    fn client_host(&self) -> String {
        self.peer
            .map_or_else(|| "/unknown".to_string(), |p| format!("/{}", p.ip()))
    }

    /// The group a fetch on this connection reads for, if any.
    fn fetching_group(&self, client_id: &str) -> Option<String> {
        self.connection.group.clone().or_else(|| {
            self.coordinator
                .group_of_client(client_id)
                .map(str::to_string)
        })
    }
}

/// What a request's turn produced.
#[derive(Debug)]
pub enum Answer {
    /// The response frame (size prefix included), or nothing for a produce
    /// with `acks` 0.
    Done(Option<Vec<u8>>),
    /// Not yet: poll again (when data comes, room frees up, the log or the disk
    /// catches up, or at the deadline).
    NotYet,
}

/// A request being answered.
pub trait Pending: Send {
    /// Goes as far as it can now: a request that waits answers by itself once
    /// its deadline (a fetch's `max_wait_ms`, a produce's timeout) has passed.
    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<Answer, Undecodable>;
}

/// A request answered at once.
struct Ready(Option<Vec<u8>>);

impl Pending for Ready {
    fn poll(&mut self, _: &mut Context<'_>, _: Instant) -> Result<Answer, Undecodable> {
        Ok(Answer::Done(self.0.take()))
    }
}

/// Starts answering a frame: a request, or a raw SCRAM message after a
/// SaslHandshake v0.
pub fn start_frame(
    frame: Bytes,
    cx: &mut Context<'_>,
    now: Instant,
) -> Result<Box<dyn Pending>, Undecodable> {
    if cx.connection.auth.wants_raw_token() {
        let answer = sasl::raw_token(&frame, cx)?;
        return Ok(Box::new(Ready(Some(answer))));
    }
    let request = Request::parse(frame)?;
    if !cx.connection.auth.allows(request.api_key) {
        return Err(Undecodable(format!(
            "{} (key {}) before authenticating",
            served(request.api_key).map_or("a request", |s| s.name),
            request.api_key
        )));
    }
    start(request, cx, now)
}

/// Starts answering `request`.
fn start(
    request: Request,
    cx: &mut Context<'_>,
    now: Instant,
) -> Result<Box<dyn Pending>, Undecodable> {
    let is_served = served(request.api_key).is_some_and(|s| {
        request.api_key == API_VERSIONS || (s.min..=s.max).contains(&request.version)
    });
    if !is_served {
        return unsupported::answer(&request).map(|r| Box::new(Ready(Some(r))) as Box<dyn Pending>);
    }
    match request.api_key {
        API_VERSIONS => Ok(Box::new(Ready(Some(api_versions::answer(&request)?)))),
        METADATA => Ok(Box::new(Ready(Some(metadata::answer(&request, cx)?)))),
        LIST_OFFSETS => Ok(Box::new(Ready(Some(list_offsets::answer(&request, cx)?)))),
        FIND_COORDINATOR => Ok(Box::new(Ready(Some(find_coordinator::answer(
            &request, cx,
        )?)))),
        LIST_GROUPS => Ok(Box::new(Ready(Some(list_groups::answer(&request, cx)?)))),
        DESCRIBE_GROUPS => Ok(Box::new(Ready(Some(describe_groups::answer(
            &request, cx,
        )?)))),
        HEARTBEAT => Ok(Box::new(Ready(Some(heartbeat::answer(&request, cx)?)))),
        LEAVE_GROUP => Ok(Box::new(Ready(Some(leave_group::answer(&request, cx)?)))),
        OFFSET_FETCH => Ok(Box::new(Ready(Some(offset_fetch::answer(&request, cx)?)))),
        JOIN_GROUP => join_group::start(request, cx),
        SYNC_GROUP => sync_group::start(request, cx),
        OFFSET_COMMIT => offset_commit::start(request, cx),
        PRODUCE => produce::start(request, now),
        FETCH => fetch::start(request, now),
        CREATE_TOPICS => create_topics::start(request, cx),
        sasl::SASL_HANDSHAKE => Ok(Box::new(Ready(Some(sasl::handshake(&request, cx)?)))),
        sasl::SASL_AUTHENTICATE => Ok(Box::new(Ready(Some(sasl::authenticate(&request, cx)?)))),
        _ => unreachable!("every served key is matched"),
    }
}

/// A response frame: the size, the header (correlation id, and an empty tagged
/// field section in a flexible version), then the body `write` encodes.
pub fn respond(
    request: &Request,
    write: impl FnOnce(&mut BytesMut, i16) -> kacrab_protocol::Result<()>,
) -> Result<Vec<u8>, Undecodable> {
    let flexible_header = request.api_key != API_VERSIONS
        && served(request.api_key).is_some_and(|s| request.version >= s.flexible_from);
    respond_with_header(request, flexible_header, request.version, write)
}

fn respond_with_header(
    request: &Request,
    flexible_header: bool,
    version: i16,
    write: impl FnOnce(&mut BytesMut, i16) -> kacrab_protocol::Result<()>,
) -> Result<Vec<u8>, Undecodable> {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&request.correlation_id.to_be_bytes());
    if flexible_header {
        out.extend_from_slice(&[0]);
    }
    write(&mut out, version).map_err(|e| Undecodable(format!("encoding the response: {e}")))?;
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.to_vec())
}

/// Kafka's error codes the listener answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const INVALID_TOPIC: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const INVALID_RECORD: i16 = 87;
}

/// A topic name from the wire, as the broker's own str.
fn name(s: &kacrab_protocol::KafkaString) -> &str {
    s.as_str()
}

/// Decodes a request body with the codec, or says why not.
fn decode<T>(
    request: &Request,
    read: impl FnOnce(&mut Bytes, i16) -> kacrab_protocol::Result<T>,
) -> Result<T, Undecodable> {
    let mut body = request.body.clone();
    read(&mut body, request.version).map_err(|e| {
        Undecodable(format!(
            "{} v{}: {e}",
            served(request.api_key).map_or("request", |s| s.name),
            request.version
        ))
    })
}
