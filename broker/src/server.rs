//! The control port: one mio event loop for every connection. A connection says
//! Hello, is told where the region is, registers with the region's token, and then
//! stays open as the client's lease; when it closes, the client has left.
//!
//! Every connection's memory is bounded: requests longer than
//! [`MAX_REQUEST_LEN`] are refused before allocation, replies queue up to
//! [`MAX_OUTPUT`], and a connection must register within [`REGISTRATION_DEADLINE`].

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_format::index::TopicPartition;
use control_protocol::frame::MAX_REQUEST_LEN;
use control_protocol::{ControlFrame, FrameBuffer, Refusal, ResetTo, Role, TopicInfo};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use shm_layout::layout::LAYOUT_VERSION;

use crate::audit::state::DEFAULT_TOPIC;
use shm_layout::{BrokerRegion, Region};

use crate::event_loop::{EventLoop, LISTENER};
use crate::partition_offsets;
use crate::registry::Registry;
use crate::status;
use crate::wait_reason::WaitReasons;

/// Time allowed between accepting a connection and its registration.
pub const REGISTRATION_DEADLINE: Duration = Duration::from_secs(5);
/// Largest reply backlog kept for one connection (a status report is well below);
/// a client that does not read its replies is disconnected past it.
pub const MAX_OUTPUT: usize = control_protocol::frame::MAX_REPLY_LEN;
/// How often the loop wakes to check deadlines, evictions and the stop flag.
const TICK: Duration = Duration::from_millis(50);

enum Stage {
    AwaitHello,
    AwaitRegister,
    Client(u32),
    Admin,
}

struct Connection {
    /// Its token in the event loop: where a reply made elsewhere is delivered.
    token: Token,
    stream: TcpStream,
    stage: Stage,
    accepted: Instant,
    input: FrameBuffer,
    output: Vec<u8>,
    /// Close once the output is flushed.
    closing: bool,
    /// A reply is being made aside: its later frames wait in its input, so that
    /// replies keep the order of requests.
    awaiting_reply: bool,
}

/// A reply made aside: the connection it answers, and the frame.
pub type DeferredReply = (Token, Vec<u8>);

/// Shared state the loop needs.
pub struct Server {
    pub region: Arc<BrokerRegion>,
    pub topics: Arc<crate::topics::Topics>,
    /// Replies made aside, for the loop to deliver.
    pub deferred: Arc<std::sync::Mutex<Vec<DeferredReply>>>,
    pub registry: Arc<Mutex<Registry>>,
    pub max_connections: usize,
    pub started: Instant,
    pub wait_reasons: Arc<WaitReasons>,
    /// The data directory, absolute, told to every client that registers.
    pub data_dir: String,
    /// `offsets.txt`: readers' commits are written there before they are answered.
    pub state_file: Arc<crate::audit::state::StateFile>,
}

impl Server {
    /// Serves until `stop` is set. Then marks the region closing and wakes every
    /// waiter before closing the connections, so clients learn that the broker
    /// stopped whichever they notice first.
    pub fn run(&self, listener: std::net::TcpListener, stop: &AtomicBool) -> std::io::Result<()> {
        let mut lp = EventLoop::new(listener, 256)?;
        let mut conns: HashMap<Token, Connection> = HashMap::new();
        let mut next_token = 0usize;
        while !stop.load(Ordering::Acquire) {
            lp.turn(TICK)?;
            let (poll, listener) = (&lp.poll, &lp.listener);
            for ev in lp.events.iter() {
                if ev.token() == LISTENER {
                    self.accept_all(listener, poll, &mut conns, &mut next_token);
                    continue;
                }
                let token = ev.token();
                let Some(conn) = conns.get_mut(&token) else {
                    continue;
                };
                let mut alive = true;
                if ev.is_readable() {
                    alive = self.read_from(conn);
                }
                if alive && !conn.output.is_empty() {
                    alive = flush(conn);
                }
                if !alive || (conn.closing && conn.output.is_empty()) {
                    self.close(poll, &mut conns, token);
                } else {
                    let interest = if conn.output.is_empty() {
                        Interest::READABLE
                    } else {
                        Interest::READABLE | Interest::WRITABLE
                    };
                    let _ = poll
                        .registry()
                        .reregister(&mut conn.stream, token, interest);
                }
            }
            self.deliver_deferred(&lp.poll, &mut conns);
            self.housekeeping(&lp.poll, &mut conns);
        }
        self.region.mark_closing();
        for (_, mut c) in conns.drain() {
            let _ = lp.poll.registry().deregister(&mut c.stream);
        }
        Ok(())
    }

    fn accept_all(
        &self,
        listener: &TcpListener,
        poll: &Poll,
        conns: &mut HashMap<Token, Connection>,
        next_token: &mut usize,
    ) {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if conns.len() >= self.max_connections {
                        let refusal = ControlFrame::Refused {
                            reason: Refusal::TooManyClients,
                            message: format!(
                                "the broker's limit of {} connections is reached",
                                self.max_connections
                            ),
                        };
                        let _ = stream.write(&refusal.encode());
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(*next_token);
                    *next_token = (*next_token + 1) % (usize::MAX - 1);
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        conns.insert(
                            token,
                            Connection {
                                token,
                                stream,
                                stage: Stage::AwaitHello,
                                accepted: Instant::now(),
                                input: FrameBuffer::new(MAX_REQUEST_LEN),
                                output: Vec::new(),
                                closing: false,
                                awaiting_reply: false,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Out of descriptors or a reset: drop this accept, keep serving.
                Err(_) => return,
            }
        }
    }

    /// Reads what is available and handles every whole frame; false to close.
    fn read_from(&self, conn: &mut Connection) -> bool {
        loop {
            if conn.closing {
                // Ignore anything sent after a refusal; just drain.
                let mut chunk = [0u8; 4096];
                match conn.stream.read(&mut chunk) {
                    Ok(0) => return false,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
            match conn.input.read_from(&mut conn.stream) {
                Ok(0) => return false,
                Ok(_) => {
                    if !self.handle_frames(conn) {
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Handles every whole frame in the input; false once the connection is refused.
    fn handle_frames(&self, conn: &mut Connection) -> bool {
        loop {
            if conn.awaiting_reply {
                return true;
            }
            match conn.input.next_frame() {
                Ok(None) => return true,
                Ok(Some(f)) => {
                    self.handle(conn, f);
                    if conn.closing {
                        return false;
                    }
                }
                Err(e) => {
                    refuse(conn, Refusal::ProtocolError, e.to_string());
                    return false;
                }
            }
        }
    }

    fn handle(&self, conn: &mut Connection, frame: ControlFrame) {
        match (&conn.stage, frame) {
            (Stage::AwaitHello, ControlFrame::Hello { .. }) => {
                let welcome = ControlFrame::Welcome {
                    broker_pid: std::process::id(),
                    region: self.region.name().to_string(),
                    layout_version: LAYOUT_VERSION,
                    geometry: *self.region.geometry(),
                };
                conn.output.extend_from_slice(&welcome.encode());
                conn.stage = Stage::AwaitRegister;
            }
            (
                Stage::AwaitRegister,
                ControlFrame::Register {
                    role,
                    id,
                    group,
                    pid,
                    token,
                    topics,
                    assignment,
                },
            ) => {
                let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                let subscription = control_protocol::Subscription { topics, assignment };
                match reg.register_reading(role, &id, group.as_deref(), &subscription, pid, token) {
                    Ok(r) => {
                        conn.stage = if role == Role::Admin {
                            Stage::Admin
                        } else {
                            Stage::Client(r.client)
                        };
                        let reply = ControlFrame::Registered {
                            client: r.client,
                            generation: r.generation,
                            group: r.group,
                            data_dir: self.data_dir.clone(),
                            assignment: r.assignment,
                        };
                        conn.output.extend_from_slice(&reply.encode());
                    }
                    Err(refused) => refuse(conn, refused.reason, refused.message),
                }
            }
            (Stage::Client(_) | Stage::Admin, ControlFrame::StatusRequest) => {
                let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                let json = status::report(
                    &self.region,
                    &self.topics,
                    &reg,
                    &self.wait_reasons,
                    self.started,
                    &self.state_file.snapshot().kafka_groups,
                );
                conn.output
                    .extend_from_slice(&ControlFrame::Status { json }.encode());
            }
            (
                Stage::Client(_) | Stage::Admin,
                ControlFrame::WaitReasonRequest {
                    topic,
                    partition,
                    waiting_for,
                },
            ) => {
                let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                let reason = if topic == DEFAULT_TOPIC {
                    self.wait_reasons.holder(&reg, waiting_for).to_string()
                } else {
                    match self.topics.ring_of(&topic, partition) {
                        Some(ring) => self
                            .wait_reasons
                            .ring_holder(&ring, &reg, waiting_for)
                            .to_string(),
                        None => format!("there is no topic-partition {topic}/{partition}"),
                    }
                };
                drop(reg);
                conn.output
                    .extend_from_slice(&ControlFrame::WaitReason { reason }.encode());
            }
            (
                Stage::Client(c),
                ControlFrame::Commit {
                    topic,
                    partition,
                    offset,
                },
            ) => {
                let reader = self
                    .registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .reader_id(*c);
                let reply = match reader {
                    None => ControlFrame::CommitFailed {
                        reason: "only a standalone reader commits offsets".into(),
                    },
                    Some(_)
                        if self
                            .topic_info(&topic)
                            .is_none_or(|t| partition >= t.partitions) =>
                    {
                        ControlFrame::CommitFailed {
                            reason: format!("no topic-partition {topic}/{partition}"),
                        }
                    }
                    // Written before the answer: a commit returns once it is in the file.
                    Some(id) => match self
                        .state_file
                        .commit_reader(&id, &topic, partition, offset)
                    {
                        Ok(()) => ControlFrame::CommitDone,
                        Err(e) => ControlFrame::CommitFailed {
                            reason: format!(
                                "cannot write {}: {e}",
                                crate::audit::state::STATE_FILE
                            ),
                        },
                    },
                };
                conn.output.extend_from_slice(&reply.encode());
            }
            (Stage::Client(_) | Stage::Admin, ControlFrame::CommittedRequest { owner }) => {
                let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
                let offsets =
                    crate::committed::committed_offsets(&reg, &self.state_file, owner.as_ref());
                conn.output
                    .extend_from_slice(&ControlFrame::Committed { offsets }.encode());
            }
            (Stage::Client(_) | Stage::Admin, ControlFrame::TopicRequest { name }) => {
                let reply = match self.topic_info(&name) {
                    Some(info) => ControlFrame::TopicInfo(info),
                    None => ControlFrame::UnknownTopic { name },
                };
                conn.output.extend_from_slice(&reply.encode());
            }
            (
                Stage::Admin,
                ControlFrame::CreateTopic {
                    name,
                    partitions,
                    slots,
                    slot_size,
                },
            ) => {
                // Reserving a topic's regions and syncing the directory can take a
                // while for a large topic: done aside, so that registrations,
                // commits and status go on meanwhile; the reply comes when done.
                let (topics, control, deferred) = (
                    self.topics.clone(),
                    self.region.clone(),
                    self.deferred.clone(),
                );
                let token = conn.token;
                conn.awaiting_reply = true;
                let spawned = std::thread::Builder::new()
                    .name("create-topic".into())
                    .spawn(move || {
                        let reply =
                            create_topic(&topics, &control, &name, partitions, slots, slot_size);
                        deferred
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((token, reply.encode()));
                    });
                if let Err(e) = spawned {
                    conn.awaiting_reply = false;
                    let reply = ControlFrame::CreateRefused {
                        reason: format!("cannot start creating it: {e}"),
                        exists: false,
                    };
                    conn.output.extend_from_slice(&reply.encode());
                }
            }
            (Stage::Client(_) | Stage::Admin, ControlFrame::TopicsRequest) => {
                let json = crate::topics_report::report(&self.region, &self.topics);
                conn.output
                    .extend_from_slice(&ControlFrame::Topics { json }.encode());
            }
            (Stage::Admin, ControlFrame::ResetOffsets { group, topic, to }) => {
                let reply = match self.reset_offsets(&group, &topic, to) {
                    Ok(offsets) => ControlFrame::ResetDone { offsets },
                    Err(reason) => ControlFrame::ResetRefused { reason },
                };
                conn.output.extend_from_slice(&reply.encode());
            }
            (_, other) => refuse(
                conn,
                Refusal::ProtocolError,
                format!(
                    "unexpected {} at this point of the handshake",
                    kind_name(&other)
                ),
            ),
        }
        if conn.output.len() > MAX_OUTPUT {
            conn.output.clear();
            conn.closing = true;
        }
    }

    /// What clients are told of topic `name`, if it exists.
    fn topic_info(&self, name: &str) -> Option<TopicInfo> {
        topic_info(&self.topics, &self.region, name)
    }

    /// Hands the replies made aside (see `CreateTopic`) to their connections.
    fn deliver_deferred(&self, poll: &Poll, conns: &mut HashMap<Token, Connection>) {
        let ready = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        for (token, reply) in ready {
            // Gone meanwhile: the topic is created all the same.
            let Some(conn) = conns.get_mut(&token) else {
                continue;
            };
            conn.output.extend_from_slice(&reply);
            conn.awaiting_reply = false;
            // Frames that came meanwhile are handled now, in order.
            if !self.handle_frames(conn) {
                conn.closing = true;
            }
            let _ = poll.registry().reregister(
                &mut conn.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            );
        }
    }

    /// `broker reset-offsets`: moves a group without members, in each partition
    /// of `topic`, to where `to` says (an offset is kept between the earliest
    /// one still in the file and the end), and saves the state file at once.
    fn reset_offsets(&self, group: &str, topic: &str, to: ResetTo) -> Result<Vec<u64>, String> {
        shm_layout::names::check_name("group name", group).map_err(|e| e.to_string())?;
        let partitions: Vec<(TopicPartition, Arc<BrokerRegion>)> = if topic == DEFAULT_TOPIC {
            vec![(TopicPartition::default_topic(), self.region.clone())]
        } else {
            let (record, first) = self
                .topics
                .find(topic)
                .ok_or_else(|| format!("unknown topic {topic}"))?;
            (0..record.partitions)
                .map(|p| {
                    let ring = self
                        .topics
                        .ring(first + p)
                        .ok_or_else(|| format!("unknown topic {topic}"))?;
                    Ok((ring.partition.clone(), ring.region.clone()))
                })
                .collect::<Result<_, String>>()?
        };
        let offsets: Vec<u64> = partitions
            .iter()
            .map(|(tp, region)| self.reset_point(tp, region, to))
            .collect();
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        reg.reset_group(group, topic, &offsets)?;
        self.state_file
            .save_groups(reg.group_states())
            .map_err(|e| format!("cannot save {}: {e}", crate::audit::state::STATE_FILE))?;
        // Members that join now start there: wake nobody, nothing is held.
        Ok(offsets)
    }

    /// Where `to` is in partition `tp`, whose ring is in `region`.
    fn reset_point(&self, tp: &TopicPartition, region: &BrokerRegion, to: ResetTo) -> u64 {
        let data_dir = std::path::Path::new(&self.data_dir);
        let end = region.next_offset();
        let earliest =
            partition_offsets::earliest(partition_offsets::first_in_file(data_dir, tp), region);
        match to {
            ResetTo::Earliest => earliest,
            ResetTo::Latest => end,
            ResetTo::Offset(o) => o.clamp(earliest, end),
            ResetTo::Time(t) => {
                partition_offsets::first_at_or_after(data_dir, tp, region, t).unwrap_or(end)
            }
        }
    }

    fn close(&self, poll: &Poll, conns: &mut HashMap<Token, Connection>, token: Token) {
        let Some(mut conn) = conns.remove(&token) else {
            return;
        };
        let _ = poll.registry().deregister(&mut conn.stream);
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match conn.stage {
            Stage::Client(c) => reg.leave(c),
            Stage::Admin => reg.admin_left(),
            _ => {}
        }
        // A group its last member left keeps its position by name (SPEC §10):
        // saved now, so that a broker killed next resumes it there.
        if reg.take_newly_departed() {
            if let Err(e) = self.state_file.save_groups(reg.group_states()) {
                eprintln!(
                    "broker: cannot save {}: {e}; it is saved again at the next flush",
                    crate::audit::state::STATE_FILE
                );
            }
        }
        drop(reg);
        // Wake the cleaner: the leaver may have released slots or redeliveries.
        shm_layout::event::wake(&self.region.header().cleaner);
    }

    /// Registration deadlines and session-timeout evictions.
    fn housekeeping(&self, poll: &Poll, conns: &mut HashMap<Token, Connection>) {
        let late: Vec<Token> = conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.stage, Stage::AwaitHello | Stage::AwaitRegister)
                    && c.accepted.elapsed() > REGISTRATION_DEADLINE
            })
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(c) = conns.get_mut(&t) {
                refuse(
                    c,
                    Refusal::ProtocolError,
                    "registration did not complete in time".into(),
                );
                let _ = flush(c);
            }
            self.close(poll, conns, t);
        }
        let overdue = {
            let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            reg.overdue_consumers()
        };
        for ev in overdue {
            let token = conns
                .iter()
                .find(|(_, c)| matches!(c.stage, Stage::Client(x) if x == ev.client))
                .map(|(t, _)| *t);
            eprintln!(
                "broker: evicting consumer from group {} after the session timeout",
                ev.group
            );
            if let Some(t) = token {
                self.registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .note_eviction(&ev.group);
                if let Some(c) = conns.get_mut(&t) {
                    let f = ControlFrame::Evicted { group: ev.group };
                    c.output.extend_from_slice(&f.encode());
                    let _ = flush(c);
                }
                self.close(poll, conns, t);
            }
        }
    }
}

fn refuse(conn: &mut Connection, reason: Refusal, message: String) {
    let f = ControlFrame::Refused { reason, message };
    conn.output.extend_from_slice(&f.encode());
    conn.input.clear();
    conn.closing = true;
}

/// Writes as much output as the socket takes; false if the connection is dead.
fn flush(conn: &mut Connection) -> bool {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return false,
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn kind_name(f: &ControlFrame) -> &'static str {
    match f {
        ControlFrame::Hello { .. } => "Hello",
        ControlFrame::Welcome { .. } => "Welcome",
        ControlFrame::Register { .. } => "Register",
        ControlFrame::Registered { .. } => "Registered",
        ControlFrame::Refused { .. } => "Refused",
        ControlFrame::Evicted { .. } => "Evicted",
        ControlFrame::StatusRequest => "StatusRequest",
        ControlFrame::Status { .. } => "Status",
        ControlFrame::WaitReasonRequest { .. } => "WaitReasonRequest",
        ControlFrame::WaitReason { .. } => "WaitReason",
        ControlFrame::Commit { .. } => "Commit",
        ControlFrame::CommitDone => "CommitDone",
        ControlFrame::CommitFailed { .. } => "CommitFailed",
        ControlFrame::CommittedRequest { .. } => "CommittedRequest",
        ControlFrame::Committed { .. } => "Committed",
        ControlFrame::ResetOffsets { .. } => "ResetOffsets",
        ControlFrame::ResetDone { .. } => "ResetDone",
        ControlFrame::ResetRefused { .. } => "ResetRefused",
        ControlFrame::TopicRequest { .. } => "TopicRequest",
        ControlFrame::TopicInfo(_) => "TopicInfo",
        ControlFrame::UnknownTopic { .. } => "UnknownTopic",
        ControlFrame::CreateTopic { .. } => "CreateTopic",
        ControlFrame::TopicCreated(_) => "TopicCreated",
        ControlFrame::CreateRefused { .. } => "CreateRefused",
        ControlFrame::TopicsRequest => "TopicsRequest",
        ControlFrame::Topics { .. } => "Topics",
    }
}

/// `broker create-topic`'s answer: the topic as clients will see it, or why not.
fn create_topic(
    topics: &crate::topics::Topics,
    control: &Region,
    name: &str,
    partitions: u32,
    slots: Option<u32>,
    slot_size: Option<u32>,
) -> ControlFrame {
    match topics.create(name, partitions, slots, slot_size) {
        Ok(record) => {
            eprintln!(
                "broker: created topic {} with {} partitions",
                record.name, record.partitions
            );
            match topic_info(topics, control, &record.name) {
                Some(info) => ControlFrame::TopicCreated(info),
                None => ControlFrame::CreateRefused {
                    reason: "the topic vanished".into(),
                    exists: false,
                },
            }
        }
        Err(e) => ControlFrame::CreateRefused {
            exists: matches!(e, crate::topics::CreateError::Exists(_)),
            reason: e.to_string(),
        },
    }
}

/// What clients are told of topic `name`, if it exists.
fn topic_info(topics: &crate::topics::Topics, control: &Region, name: &str) -> Option<TopicInfo> {
    if name == DEFAULT_TOPIC {
        let g = control.geometry();
        return Some(TopicInfo {
            id: 0,
            name: DEFAULT_TOPIC.to_string(),
            partitions: 1,
            first_ring: 0,
            slots: g.slots,
            slot_size: g.slot_size,
            max_message: g.max_message,
        });
    }
    let (record, first_ring) = topics.find(name)?;
    Some(TopicInfo {
        id: record.id,
        name: record.name,
        partitions: record.partitions,
        first_ring,
        slots: record.slots,
        slot_size: record.slot_size,
        max_message: record.max_message,
    })
}
