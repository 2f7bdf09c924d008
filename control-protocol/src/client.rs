//! The client end of the control connection: connect, learn the region from the
//! broker, map it, register with its token, then keep the connection open as the
//! client's lease. A watcher thread notices the broker going away or evicting us.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shm_layout::layout::LAYOUT_VERSION;
use shm_layout::region::{Region, RegionError};

use crate::buffer::FrameBuffer;
use crate::frame::{FrameError, MAX_REPLY_LEN};
use crate::message::{Assignment, ControlFrame, Refusal, Role, TopicInfo};

/// How long a client waits for each handshake reply.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client could not join the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No broker answers at the address.
    #[error("cannot reach the broker at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    /// The broker refused us.
    #[error("the broker refused the registration: {message}")]
    Refused { reason: Refusal, message: String },
    /// The broker said something unexpected or nothing in time.
    #[error("control protocol error with {addr}: {detail}")]
    Protocol { addr: String, detail: String },
    /// The broker speaks another layout version.
    #[error(
        "the broker uses region layout version {found}, this client understands {LAYOUT_VERSION}"
    )]
    LayoutVersion { found: u32 },
    /// The region could not be mapped or is not what the broker described.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The broker has no topic of that name.
    #[error("no topic {0} (broker topics lists them; broker create-topic makes one)")]
    UnknownTopic(String),
    /// The topic has no partition of that number.
    #[error("topic {topic} has {partitions} partition(s), numbered from 0: there is no partition {partition}")]
    NoPartition {
        topic: String,
        partitions: u32,
        partition: u32,
    },
}

/// What the broker told us about the connection since we registered.
#[derive(Debug, Default)]
pub struct Link {
    gone: AtomicBool,
    evicted: AtomicBool,
}

impl Link {
    /// The control connection closed: the broker stopped or died.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
    /// The broker evicted this consumer from its group.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

/// How long a client that finds the region marked closing while its connection is
/// still open waits for one to confirm the other. At a stop the broker marks the
/// region and closes every connection at once; a mark written by a stray process
/// is undone by the broker within one of its passes (milliseconds).
const CLOSING_CONFIRMATION: Duration = Duration::from_secs(2);

/// A registered client: the mapped region, our place in it, and the open lease.
pub struct Session {
    pub region: Region,
    pub client: u32,
    pub generation: u32,
    pub id: String,
    pub role: Role,
    /// Group index and name, for consumers.
    pub group: Option<(u32, String)>,
    /// The group's assignment, for consumers.
    pub assignment: Option<Assignment>,
    /// The broker's data directory: readers read the persistence file there.
    pub data_dir: std::path::PathBuf,
    pub link: Arc<Link>,
    stream: TcpStream,
    replies: Receiver<ControlFrame>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("group", &self.group)
            .finish()
    }
}

/// What a consumer reads as a member of its group.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    /// Its topics; none means `default`.
    pub topics: Vec<String>,
    /// The assignment it wants of its group (None: whatever the group's is).
    pub assignment: Option<Assignment>,
}

/// The id a client uses when none is given: `<role>-<pid>`.
pub fn default_id(role: Role) -> String {
    format!("{}-{}", role.name(), std::process::id())
}

impl Session {
    /// Whether the broker is stopping: its connection closed, or the region is
    /// marked closing and stays so (a stray mark is undone by the broker while the
    /// connection stays open; it waits 2 s at most for either). Without a mark and with
    /// the connection open, returns at once.
    pub fn broker_stopping(&self) -> bool {
        if self.link.is_gone() {
            return true;
        }
        if !self.region.is_closing() {
            return false;
        }
        let deadline = Instant::now() + CLOSING_CONFIRMATION;
        loop {
            if self.link.is_gone() {
                return true;
            }
            if !self.region.is_closing() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Connects to the broker at `addr` and registers as `role`.
    pub fn connect(
        addr: &str,
        role: Role,
        id: &str,
        group: Option<&str>,
    ) -> Result<Session, ConnectError> {
        Session::connect_reading(addr, role, id, group, &Subscription::default())
    }

    /// As [`Session::connect`], for a consumer that reads as a member of its
    /// group what `subscription` says.
    pub fn connect_reading(
        addr: &str,
        role: Role,
        id: &str,
        group: Option<&str>,
        subscription: &Subscription,
    ) -> Result<Session, ConnectError> {
        let proto = |detail: String| ConnectError::Protocol {
            addr: addr.to_string(),
            detail,
        };
        let mut stream = connect_tcp(addr)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| proto(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = FrameReader::new();
        send(&mut stream, &ControlFrame::Hello { role }).map_err(|e| proto(e.to_string()))?;
        let (region_name, geometry) = match conn.next(&mut stream).map_err(proto)? {
            ControlFrame::Welcome {
                region,
                layout_version,
                geometry,
                ..
            } => {
                if layout_version != LAYOUT_VERSION {
                    return Err(ConnectError::LayoutVersion {
                        found: layout_version,
                    });
                }
                (region, geometry)
            }
            ControlFrame::Refused { reason, message } => {
                return Err(ConnectError::Refused { reason, message })
            }
            other => return Err(proto(format!("expected Welcome, got {other:?}"))),
        };
        let region = Region::open_expecting(&region_name, &geometry)?;
        let register = ControlFrame::Register {
            role,
            id: id.to_string(),
            group: group.map(str::to_string),
            pid: std::process::id(),
            token: region.token(),
            topics: subscription.topics.clone(),
            assignment: subscription.assignment,
        };
        send(&mut stream, &register).map_err(|e| proto(e.to_string()))?;
        let (client, generation, group, data_dir, assignment) =
            match conn.next(&mut stream).map_err(proto)? {
                ControlFrame::Registered {
                    client,
                    generation,
                    group,
                    data_dir,
                    assignment,
                } => (client, generation, group, data_dir.into(), assignment),
                ControlFrame::Refused { reason, message } => {
                    return Err(ConnectError::Refused { reason, message })
                }
                other => return Err(proto(format!("expected Registered, got {other:?}"))),
            };
        if role != Role::Admin && region.client(client).is_none() {
            return Err(proto(format!("client index {client} is out of range")));
        }
        let link = Arc::new(Link::default());
        stream
            .set_read_timeout(None)
            .map_err(|e| proto(e.to_string()))?;
        let (reply_tx, replies) = std::sync::mpsc::channel();
        let watcher = {
            let link = link.clone();
            let reader = stream.try_clone().map_err(|e| proto(e.to_string()))?;
            std::thread::Builder::new()
                .name("broker-link".into())
                .spawn(move || watch(reader, conn, &link, reply_tx))
                .map_err(|e| proto(e.to_string()))?
        };
        Ok(Session {
            region,
            client,
            generation,
            id: id.to_string(),
            role,
            group,
            assignment,
            data_dir,
            link,
            stream,
            replies,
            watcher: Some(watcher),
        })
    }

    /// Sends a request over the lease and waits for the broker's reply.
    pub fn request(&self, request: &ControlFrame) -> Result<ControlFrame, ConnectError> {
        self.request_within(request, HANDSHAKE_TIMEOUT)
    }

    /// As [`Session::request`], waiting at most `patience` for the reply: for a
    /// request that takes the broker a while (creating a large topic).
    pub fn request_within(
        &self,
        request: &ControlFrame,
        patience: Duration,
    ) -> Result<ControlFrame, ConnectError> {
        let addr = self
            .stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let proto = |detail: String| ConnectError::Protocol {
            addr: addr.clone(),
            detail,
        };
        send(&mut &self.stream, request).map_err(|e| proto(e.to_string()))?;
        self.replies
            .recv_timeout(patience)
            .map_err(|_| proto("no reply from the broker".into()))
    }
}

impl Session {
    /// Topic `name` as the broker describes it.
    pub fn topic(&self, name: &str) -> Result<TopicInfo, ConnectError> {
        let request = ControlFrame::TopicRequest {
            name: name.to_string(),
        };
        let max_rings = shm_layout::layout::MAX_RINGS;
        match self.request(&request)? {
            // Believed only within what any broker could say: a partition count
            // and ring numbers inside the pending set (`default`: one partition,
            // ring 0).
            ControlFrame::TopicInfo(info)
                if info.name == name
                    && info.partitions >= 1
                    && u64::from(info.first_ring) + u64::from(info.partitions)
                        <= u64::from(max_rings)
                    && (info.id != 0 || (info.partitions == 1 && info.first_ring == 0))
                    && (info.id == 0 || info.first_ring >= 1) =>
            {
                Ok(info)
            }
            ControlFrame::UnknownTopic { .. } => Err(ConnectError::UnknownTopic(name.to_string())),
            other => Err(ConnectError::Protocol {
                addr: String::new(),
                detail: format!("unexpected reply to a topic request: {other:?}"),
            }),
        }
    }

    /// Maps partition `partition` of `topic`'s ring: checks its geometry and token
    /// against what the broker said, and links it to the control region (its
    /// commits then reach the broker's persister). `default`'s one partition is
    /// the control region itself: use [`Session::region`].
    pub fn map_partition(&self, topic: &TopicInfo, partition: u32) -> Result<Region, ConnectError> {
        if partition >= topic.partitions {
            return Err(ConnectError::NoPartition {
                topic: topic.name.clone(),
                partitions: topic.partitions,
                partition,
            });
        }
        let name = shm_layout::names::partition_region(self.region.name(), topic.id, partition);
        let geometry = shm_layout::Geometry {
            slots: topic.slots,
            slot_size: topic.slot_size,
            max_message: topic.max_message,
            ..*self.region.geometry()
        };
        let region = Region::open_expecting(&name, &geometry)?;
        if region.token() != self.region.token() {
            return Err(ConnectError::Region(RegionError::GeometryMismatch {
                name,
                found: "another broker's access token".into(),
                expected: format!("the token of {}", self.region.name()),
            }));
        }
        let ring = topic.first_ring.saturating_add(partition);
        let doorbell = shm_layout::doorbell::Doorbell::open(self.region.name(), ring)?;
        Ok(region.ring_doorbell(doorbell))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing the lease tells the broker we left; it also ends the watcher's read.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

fn connect_tcp(addr: &str) -> Result<TcpStream, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let addrs = addr.to_socket_addrs().map_err(unreachable)?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, HANDSHAKE_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(unreachable(last))
}

fn send(stream: &mut impl Write, frame: &ControlFrame) -> std::io::Result<()> {
    stream.write_all(&frame.encode())
}

/// Yields whole frames from the broker, waiting at most a given time for each.
struct FrameReader {
    buffer: FrameBuffer,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader {
            buffer: FrameBuffer::new(MAX_REPLY_LEN),
        }
    }

    fn next(&mut self, stream: &mut impl Read) -> Result<ControlFrame, String> {
        self.next_within(stream, HANDSHAKE_TIMEOUT)
    }

    /// The next whole frame, waiting at most `limit` (the stream's own read
    /// timeout paces the waiting).
    fn next_within(
        &mut self,
        stream: &mut impl Read,
        limit: Duration,
    ) -> Result<ControlFrame, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(f) = self.buffer.next_frame().map_err(|e| e.to_string())? {
                return Ok(f);
            }
            match self.buffer.read_from(stream) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if Instant::now() >= deadline {
                        return Err(format!("no reply from the broker within {limit:?}"));
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn watch(
    mut stream: TcpStream,
    mut reader: FrameReader,
    link: &Link,
    replies: Sender<ControlFrame>,
) {
    loop {
        match reader.next(&mut stream) {
            Ok(ControlFrame::Evicted { .. }) => link.evicted.store(true, Ordering::Release),
            Ok(other) => {
                let _ = replies.send(other);
            }
            Err(_) => break,
        }
    }
    link.gone.store(true, Ordering::Release);
}

impl From<FrameError> for ConnectError {
    fn from(e: FrameError) -> Self {
        ConnectError::Protocol {
            addr: String::new(),
            detail: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection on which the broker never answers: every read times out.
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }

    #[test]
    fn a_broker_that_never_answers_is_named_not_an_os_error() {
        let err = FrameReader::new()
            .next_within(&mut Silent, Duration::from_millis(20))
            .unwrap_err();
        assert_eq!(err, "no reply from the broker within 20ms");
    }
}
