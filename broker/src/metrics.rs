//! `broker --metrics ADDR`: Prometheus' text format on `GET /metrics`, for existing
//! dashboards. Every value is read when a scrape comes (the region's offsets, the
//! registry's groups and clients) or kept by the threads that already do the work
//! (the writers' write times, the disk waits under `--fsync`): a scrape adds no
//! work per message, and no scrape costs nothing.
//!
//! The HTTP side is a small HTTP/1.1 responder on its own thread and event loop:
//! one request per connection, a bounded request head, a deadline per connection;
//! anything else gets a 4xx and costs only that connection.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry as MetricRegistry, Unit};
use shm_layout::sys::wall_clock_micros;
use shm_layout::BrokerRegion;

use crate::audit::state::{DEFAULT_PARTITION, DEFAULT_TOPIC};
use crate::event_loop::{EventLoop, LISTENER};
use crate::registry::Registry;

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// Buckets for write and disk-wait times: 50 µs to about 13 s.
fn time_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 19)
}

/// How long each write of one audit file took (one per buffer, not per record).
#[derive(Clone)]
pub struct WriteTimes(Histogram);

impl Default for WriteTimes {
    fn default() -> Self {
        WriteTimes(Histogram::new(time_buckets()))
    }
}

impl WriteTimes {
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// The write times of both audit files, labelled by file.
#[derive(Clone)]
pub struct FileWrites(Family<Labels, Histogram, fn() -> Histogram>);

impl Default for FileWrites {
    fn default() -> Self {
        FileWrites(Family::new_with_constructor(|| {
            Histogram::new(time_buckets())
        }))
    }
}

impl FileWrites {
    /// The write times of `file` (`persistence` or `delivery_log`).
    pub fn of(&self, file: &str) -> WriteTimes {
        WriteTimes(
            self.0
                .get_or_create_owned(&vec![("file", file.to_string())]),
        )
    }
}

/// Under `--fsync`: how long each record waited, from its commit to its line being
/// on disk (what its send waits for). The persister notes the records it hands to
/// the writer; the writer's mark settles them.
#[derive(Default)]
pub struct DiskWaits {
    /// (offset, commit time in wall-clock µs), in offset order.
    pending: Mutex<VecDeque<(u64, u64)>>,
    histogram: WriteTimes,
}

impl DiskWaits {
    /// Records handed to the writer: (offset, commit time in wall-clock µs).
    pub fn handed(&self, records: &mut Vec<(u64, u64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(records.drain(..));
    }

    /// Every record below `mark` is on disk.
    pub fn persisted(&self, mark: u64) {
        let now = wall_clock_micros();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(offset, committed_us)) = pending.front() {
            if offset >= mark {
                break;
            }
            pending.pop_front();
            let waited = Duration::from_micros(now.saturating_sub(committed_us));
            self.histogram.observe(waited);
        }
    }
}

/// Where a scrape reads its values.
pub struct MetricSources {
    pub region: Arc<BrokerRegion>,
    /// The other topic-partitions' rings.
    pub topics: Arc<crate::topics::Topics>,
    pub registry: Arc<Mutex<Registry>>,
    /// The Kafka groups' committed offsets.
    pub state_file: Arc<crate::audit::state::StateFile>,
    pub file_writes: FileWrites,
    /// Under `--fsync` only.
    pub disk_waits: Option<Arc<DiskWaits>>,
}

/// A gauge's value: offsets and counts fit in an i64 for any real broker.
fn signed(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

fn partition_labels() -> Labels {
    vec![
        ("topic", DEFAULT_TOPIC.to_string()),
        ("partition", DEFAULT_PARTITION.to_string()),
    ]
}

impl MetricSources {
    /// The exposition, in Prometheus' text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut reg = MetricRegistry::with_prefix("minikafka");
        let region = &self.region;
        // Every topic-partition's ring: `default`/0's, then the others'.
        let partition_rings = self.topics.rings();
        let mut rings: Vec<(Labels, &shm_layout::Region)> = vec![(partition_labels(), region)];
        rings.extend(partition_rings.iter().map(|r| {
            let labels = vec![
                ("topic", r.partition.topic.clone()),
                ("partition", r.partition.partition.to_string()),
            ];
            (labels, &**r.region)
        }));
        let per_partition = |reg: &mut MetricRegistry,
                             name: &str,
                             help: &str,
                             value: fn(&shm_layout::Region) -> u64| {
            let family = Family::<Labels, Gauge>::default();
            for (labels, ring) in &rings {
                family.get_or_create(labels).set(signed(value(ring)));
            }
            reg.register(name, help, family);
        };
        let per_partition_total =
            |reg: &mut MetricRegistry,
             name: &str,
             help: &str,
             value: fn(&shm_layout::Region) -> u64| {
                let family = Family::<Labels, Counter>::default();
                for (labels, ring) in &rings {
                    family.get_or_create(labels).inc_by(value(ring));
                }
                reg.register(name, help, family);
            };
        per_partition_total(
            &mut reg,
            "messages_published",
            "Messages published (the partition's end offset)",
            |r| r.next_offset(),
        );
        per_partition_total(
            &mut reg,
            "messages_persisted",
            "Messages written to the persistence file",
            |r| r.persisted_offset().min(r.next_offset()),
        );
        per_partition(
            &mut reg,
            "ring_slots_used",
            "Ring slots holding records not yet reclaimed",
            |r| r.used_slots(),
        );
        per_partition(&mut reg, "ring_slots", "Ring slots in all", |r| {
            r.geometry().slots as u64
        });
        per_partition(
            &mut reg,
            "producers_waiting",
            "Producers asleep waiting for space in the ring",
            |r| r.waiting_for_space() as u64,
        );

        let commits = self.state_file.snapshot().kafka_groups;
        let (groups, counts, evictions, kafka_groups) = {
            let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            let kafka_groups = crate::kafka_groups::kafka_groups(
                &r,
                &commits,
                &self.topics,
                self.region.next_offset(),
            );
            (
                r.group_snapshot(),
                r.counts(),
                r.evictions().clone(),
                kafka_groups,
            )
        };
        let position = Family::<Labels, Gauge>::default();
        let lag = Family::<Labels, Gauge>::default();
        let deliveries = Family::<Labels, Counter>::default();
        let redeliveries = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let members = Family::<Labels, Gauge>::default();
        let labels_of = |group: &str, topic: &str, partition: u32| -> Labels {
            vec![
                ("group", group.to_string()),
                ("topic", topic.to_string()),
                ("partition", partition.to_string()),
            ]
        };
        for g in &groups {
            members
                .get_or_create(&vec![("group", g.name.clone())])
                .set(g.members.len() as i64);
            for p in &g.partitions {
                let labels = labels_of(&g.name, &p.topic, p.partition);
                position.get_or_create(&labels).set(signed(p.position));
                lag.get_or_create(&labels)
                    .set(signed(p.end_offset.saturating_sub(p.position)));
                deliveries.get_or_create(&labels).inc_by(p.delivered);
                redeliveries.get_or_create(&labels).inc_by(p.redelivered);
                dead_letters.get_or_create(&labels).inc_by(p.dead_lettered);
            }
        }
        // Kafka groups: their committed offsets are their positions.
        for g in &kafka_groups {
            members
                .get_or_create(&vec![("group", g.name.clone())])
                .set(g.members.len() as i64);
            for p in &g.partitions {
                let labels = labels_of(&g.name, &p.topic, p.partition);
                position.get_or_create(&labels).set(signed(p.committed));
                if let Some(l) = p.lag() {
                    lag.get_or_create(&labels).set(signed(l));
                }
            }
        }
        reg.register(
            "group_position",
            "Offset below which the group has acknowledged every message (a Kafka group: its committed offset)",
            position,
        );
        reg.register(
            "group_lag",
            "Messages published and not yet acknowledged by the group",
            lag,
        );
        reg.register(
            "group_deliveries",
            "Deliveries to the group's members logged since the broker started",
            deliveries,
        );
        reg.register(
            "group_redeliveries",
            "Messages offered to the group again since the broker started",
            redeliveries,
        );
        reg.register(
            "group_dead_letters",
            "Messages published to the dead-letter topic since the broker started",
            dead_letters,
        );
        reg.register(
            "group_members",
            "Consumers in the group (for a Kafka group, its members)",
            members,
        );
        let evicted = Family::<Labels, Counter>::default();
        // Live groups show 0 rather than nothing, as counters should.
        for g in &groups {
            let _ = evicted.get_or_create(&vec![("group", g.name.clone())]);
        }
        for (group, n) in &evictions {
            evicted
                .get_or_create(&vec![("group", group.clone())])
                .inc_by(*n);
        }
        reg.register(
            "evictions",
            "Consumers evicted for exceeding the session timeout",
            evicted,
        );
        let clients = Family::<Labels, Gauge>::default();
        let (producers, consumers, admins) = counts;
        for (role, n) in [
            ("producer", producers),
            ("consumer", consumers),
            ("admin", admins),
        ] {
            clients
                .get_or_create(&vec![("role", role.to_string())])
                .set(n as i64);
        }
        reg.register("clients", "Connected clients", clients);

        reg.register_with_unit(
            "file_write",
            "Time each write of an audit file's buffer took",
            Unit::Seconds,
            self.file_writes.0.clone(),
        );
        if let Some(waits) = &self.disk_waits {
            reg.register_with_unit(
                "disk_wait",
                "Under --fsync: time from a message's commit until it is on disk",
                Unit::Seconds,
                waits.histogram.0.clone(),
            );
        }
        let mut out = String::new();
        let _ = prometheus_text::encode(&mut out, &reg);
        out
    }
}

/// Longest request head read (request line and headers).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A connection that has not sent its request head by then is closed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Most connections open at once; more are refused at accept.
const MAX_CONNECTIONS: usize = 64;
const TICK: Duration = Duration::from_millis(100);

/// A scrape in progress.
struct Conn {
    stream: TcpStream,
    accepted: Instant,
    request: Vec<u8>,
    /// The response, once the request is read, and how much of it is sent.
    response: Option<(Vec<u8>, usize)>,
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Metrics,
    /// A 4xx: status line and a one-line body.
    Refuse(&'static str, &'static str),
}

/// Reads the request line of a complete head (`\r\n\r\n` seen).
fn judge(head: &[u8]) -> Ask {
    let Ok(text) = std::str::from_utf8(head) else {
        return Ask::Refuse("400 Bad Request", "the request is not text\n");
    };
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ask::Refuse("400 Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Ask::Refuse("400 Bad Request", "only HTTP/1.x is served\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Ask::Metrics,
        (_, "/metrics") => Ask::Refuse("405 Method Not Allowed", "only GET /metrics\n"),
        _ => Ask::Refuse("404 Not Found", "metrics are at /metrics\n"),
    }
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl MetricSources {
    /// Serves `GET /metrics` on `listener` until `stop` is set.
    pub fn serve(&self, listener: std::net::TcpListener, stop: &AtomicBool) -> std::io::Result<()> {
        let mut lp = EventLoop::new(listener, 64)?;
        let mut conns: HashMap<Token, Conn> = HashMap::new();
        let mut next_token = 0usize;
        while !stop.load(Ordering::Acquire) {
            lp.turn(TICK)?;
            let (poll, listener) = (&lp.poll, &lp.listener);
            for ev in lp.events.iter() {
                if ev.token() == LISTENER {
                    while let Ok((mut stream, _)) = listener.accept() {
                        if conns.len() >= MAX_CONNECTIONS {
                            continue; // dropped: closes it
                        }
                        let token = Token(next_token);
                        next_token = (next_token + 1) % (usize::MAX - 1);
                        if poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                            .is_ok()
                        {
                            let conn = Conn {
                                stream,
                                accepted: Instant::now(),
                                request: Vec::new(),
                                response: None,
                            };
                            conns.insert(token, conn);
                        }
                    }
                    continue;
                }
                let token = ev.token();
                let Some(conn) = conns.get_mut(&token) else {
                    continue;
                };
                if self.advance(conn) {
                    let _ = poll.registry().reregister(
                        &mut conn.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                } else if let Some(mut c) = conns.remove(&token) {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
            // Slow or silent clients cost their own connection only.
            conns.retain(|_, c| c.accepted.elapsed() < REQUEST_DEADLINE);
        }
        Ok(())
    }

    /// Reads what the client sent, answers once the head is whole, writes what
    /// the socket takes; false once the connection is done with.
    fn advance(&self, conn: &mut Conn) -> bool {
        if conn.response.is_none() {
            let mut buf = [0u8; 2048];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => conn.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
                if conn.request.len() > MAX_REQUEST_HEAD {
                    break;
                }
            }
            let head_end = conn.request.windows(4).position(|w| w == b"\r\n\r\n");
            let answer = match head_end {
                Some(end) => match judge(&conn.request[..end]) {
                    Ask::Metrics => {
                        response("200 OK", prometheus_text::CONTENT_TYPE, &self.render())
                    }
                    Ask::Refuse(status, body) => response(status, "text/plain", body),
                },
                None if conn.request.len() > MAX_REQUEST_HEAD => response(
                    "431 Request Header Fields Too Large",
                    "text/plain",
                    "request head too large\n",
                ),
                None => return true,
            };
            conn.response = Some((answer, 0));
        }
        let Some((bytes, sent)) = conn.response.as_mut() else {
            return true;
        };
        while *sent < bytes.len() {
            match conn.stream.write(&bytes[*sent..]) {
                Ok(0) => return false,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served_and_the_rest_is_a_4xx() {
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x"), Ask::Metrics);
        assert_eq!(judge(b"GET /metrics?x=1 HTTP/1.0"), Ask::Metrics);
        let status = |head: &[u8]| match judge(head) {
            Ask::Refuse(status, _) => status,
            Ask::Metrics => "200",
        };
        assert_eq!(status(b"POST /metrics HTTP/1.1"), "405 Method Not Allowed");
        assert_eq!(status(b"GET / HTTP/1.1"), "404 Not Found");
        assert_eq!(status(b"GET /metrics"), "400 Bad Request");
        assert_eq!(status(b"GET /metrics SPDY/3"), "400 Bad Request");
        assert_eq!(status(b"\xff\xfe"), "400 Bad Request");
    }

    #[test]
    fn disk_waits_settle_in_offset_order_up_to_the_mark() {
        let waits = DiskWaits::default();
        let now = wall_clock_micros();
        waits.handed(&mut vec![(0, now), (1, now), (2, now)]);
        waits.persisted(2);
        let left: Vec<u64> = waits.pending.lock().unwrap().iter().map(|p| p.0).collect();
        assert_eq!(left, [2]);
    }
}
