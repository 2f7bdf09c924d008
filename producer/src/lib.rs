//! Sending messages to a mini-kafka broker on this host.
//!
//! A [`Producer`] registers with the broker over its control port, maps the broker's
//! shared-memory region, and writes each message straight into the ring: no payload
//! crosses a socket. A send returns once the message is committed and has its
//! offset; it blocks while the ring is full (backpressure from the slowest group).
//!
//! ```no_run
//! let mut producer = producer::Producer::connect("127.0.0.1:4444", None)?;
//! let offset = producer.send(b"hello")?;
//! producer.send_keyed(Some(b"user-7"), b"world")?;
//! // Many at once: one lock for as many as fit.
//! producer.send_batch(&[(None, b"a"), (None, b"b")]).map_err(|(_, e)| e)?;
//! // Zero-copy: write the payload in place in the ring, then publish it.
//! let mut loan = producer.loan(None, 5)?;
//! loan.payload_mut().copy_from_slice(b"in pl");
//! loan.commit()?;
//! println!("hello is at offset {offset}");
//! # Ok::<(), producer::ProducerError>(())
//! ```
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use control_protocol::{default_id, ConnectError, Role, Session, TopicInfo};
use partitioner::RoundRobin;
use shm_layout::Region;

mod waiting;
use shm_layout::ring::{SendError, Sender};
use shm_layout::sys::wall_clock_micros;
pub use waiting::SendNotice;
use waiting::{NoticeFn, WaitWatch};

/// Why a send or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Could not reach or register with the broker.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The topic or partition asked for does not exist.
    #[error("{0}")]
    Topic(ConnectError),
    /// The message is larger than the broker accepts; nothing was written.
    #[error("message of {size} bytes is over the broker's maximum of {max} bytes (--max-message); nothing was sent")]
    TooLarge { size: u64, max: u64 },
    /// The broker stopped or its control connection was lost.
    #[error("broker stopped")]
    BrokerStopped,
    /// The caller's interrupt flag was raised while the send waited.
    #[error("interrupted")]
    Interrupted,
    /// The region is in a state the producer refuses to use.
    #[error("the shared-memory region is corrupt: {0}")]
    Corrupt(String),
    /// A send waited longer than the send timeout; nothing of the message it could
    /// not place was written.
    #[error("gave up after {:.1} s {reason}", waited.as_secs_f64())]
    TimedOut { waited: Duration, reason: String },
    /// The broker found its region corrupt and takes no new message until it is
    /// restarted.
    #[error("the broker refuses new messages until it is restarted (it found its shared-memory region corrupt)")]
    Refused,
}

/// Bytes in the ring lent for a zero-copy send (see [`Producer::loan`]).
pub struct PayloadLoan<'p> {
    inner: shm_layout::ring::Loan<'p>,
    stop: Box<dyn FnMut() -> bool + 'p>,
    watch: Rc<RefCell<WaitWatch<'p>>>,
    totals: (&'p mut u64, &'p mut u64),
    len: u64,
}

impl PayloadLoan<'_> {
    /// The payload, in place in the shared ring.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.inner.payload_mut()
    }

    /// Publishes the message; returns its offset.
    pub fn commit(mut self) -> Result<u64, ProducerError> {
        let result = self.inner.commit(wall_clock_micros(), &mut self.stop);
        let mut watch = self.watch.borrow_mut();
        let offset = result.map_err(|e| match e {
            SendError::Corrupt(_) | SendError::Lock(_) => ProducerError::Corrupt(e.to_string()),
            SendError::Refused => ProducerError::Refused,
            _ => watch.timed_out().unwrap_or(ProducerError::BrokerStopped),
        })?;
        watch.moved();
        *self.totals.0 += 1;
        *self.totals.1 += self.len;
        watch.publish_sent(*self.totals.0);
        Ok(offset)
    }
}

/// A registered producer.
pub struct Producer {
    session: Session,
    interrupt: Option<Arc<AtomicBool>>,
    sent: u64,
    bytes: u64,
    /// Wall-clock µs of the last send.
    last_send_us: u64,
    /// Longest a send waits for space (or the disk) before it gives up.
    send_timeout: Option<Duration>,
    /// Hears when a send has waited a while, and when it moves again.
    on_notice: Option<NoticeFn>,
    /// Where sends go when not to `default`.
    target: Option<Target>,
}

/// A topic other than `default` (or a partition chosen), with its partitions'
/// rings, each mapped when first sent to.
struct Target {
    topic: TopicInfo,
    chosen: Option<u32>,
    rings: Vec<Option<Region>>,
    round_robin: RoundRobin,
}

/// Sends this far apart (µs) count as spaced: the lines of the next one go cold.
const SPACED_SEND_US: u64 = 5;

impl Producer {
    /// Connects to the broker at `broker` (`HOST:PORT`) as `id` (default
    /// `producer-<pid>`).
    pub fn connect(broker: &str, id: Option<&str>) -> Result<Producer, ProducerError> {
        let id = id.map_or_else(|| default_id(Role::Producer), str::to_string);
        let session = Session::connect(broker, Role::Producer, &id, None)?;
        Ok(Producer {
            session,
            interrupt: None,
            last_send_us: 0,
            sent: 0,
            bytes: 0,
            send_timeout: None,
            on_notice: None,
            target: None,
        })
    }

    /// Sends to `topic` from now on (SPEC §11): to partition `partition` if given,
    /// else by key with Kafka's partitioner, and keyless messages round-robin.
    /// An unknown topic or partition is an error and changes nothing.
    pub fn use_topic(&mut self, topic: &str, partition: Option<u32>) -> Result<(), ProducerError> {
        let info = self.session.topic(topic).map_err(ProducerError::Topic)?;
        if let Some(p) = partition.filter(|&p| p >= info.partitions) {
            return Err(ProducerError::Topic(ConnectError::NoPartition {
                topic: info.name,
                partitions: info.partitions,
                partition: p,
            }));
        }
        self.target = if info.id == 0 {
            None
        } else {
            Some(Target {
                rings: (0..info.partitions).map(|_| None).collect(),
                topic: info,
                chosen: partition,
                // Producers started together begin at different partitions.
                round_robin: RoundRobin::starting_at(std::process::id()),
            })
        };
        Ok(())
    }

    /// The partition the next message with `key` goes to.
    fn place(&mut self, key: Option<&[u8]>) -> Option<usize> {
        let t = self.target.as_mut()?;
        Some(partitioner::place(t.chosen, key, t.topic.partitions, &mut t.round_robin) as usize)
    }

    /// Maps partition `p`'s ring if it is not yet.
    fn map(&mut self, p: usize) -> Result<(), ProducerError> {
        let Some(t) = self.target.as_mut() else {
            return Ok(());
        };
        if t.rings[p].is_none() {
            let ring = self
                .session
                .map_partition(&t.topic, p as u32)
                .map_err(ProducerError::Connect)?;
            t.rings[p] = Some(ring);
        }
        Ok(())
    }

    /// Makes a send that waits longer than `timeout` for space in the ring (or,
    /// under `--fsync`, for the disk) give up with [`ProducerError::TimedOut`],
    /// naming what held it. Default: wait as long as it takes.
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
    }

    /// Calls `f` once when a send has waited [`waiting::REPORT_AFTER`], with what
    /// the broker says holds it, and once when it moves again.
    pub fn on_send_notice(&mut self, f: impl FnMut(&SendNotice) + Send + 'static) {
        self.on_notice = Some(Box::new(f));
    }

    /// A flag that, once raised (e.g. by a signal handler), makes a blocked send give
    /// up with [`ProducerError::Interrupted`].
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// The id this producer registered with.
    pub fn id(&self) -> &str {
        &self.session.id
    }

    /// Largest key + payload the broker accepts (in the topic sent to).
    pub fn max_message(&self) -> u64 {
        match &self.target {
            Some(t) => u64::from(t.topic.max_message),
            None => self.session.region.geometry().max_message as u64,
        }
    }

    /// Messages and payload bytes sent so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.sent, self.bytes)
    }

    /// Sends one message without a key; returns its offset.
    pub fn send(&mut self, payload: &[u8]) -> Result<u64, ProducerError> {
        self.send_keyed(None, payload)
    }

    /// Sends one message with an optional key; returns its offset.
    pub fn send_keyed(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<u64, ProducerError> {
        self.send_record(key, payload).map(|(_, offset)| offset)
    }

    /// Sends one message with an optional key; returns its partition and offset.
    pub fn send_record(
        &mut self,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(u32, u64), ProducerError> {
        let mut placed = (0, 0);
        self.send_placed(&[(key, payload)], |p, o| placed = (p, o))
            .map_err(|(_, e)| e)?;
        Ok(placed)
    }

    /// Sends several messages in order, taking a ring's lock once for as many as
    /// fit; returns their offsets (each in its partition). On an error, the first
    /// `usize` were sent. A message over the maximum refuses the whole batch before
    /// anything is sent.
    pub fn send_batch(
        &mut self,
        messages: &[(Option<&[u8]>, &[u8])],
    ) -> Result<Vec<u64>, (usize, ProducerError)> {
        let mut offsets = Vec::with_capacity(messages.len());
        self.send_placed(messages, |_, o| offsets.push(o))?;
        Ok(offsets)
    }

    /// Sends `messages` in order, each to its partition, in runs of messages of
    /// one partition; `committed` hears each partition and offset.
    fn send_placed(
        &mut self,
        messages: &[(Option<&[u8]>, &[u8])],
        mut committed: impl FnMut(u32, u64),
    ) -> Result<(), (usize, ProducerError)> {
        if self.target.is_none() {
            return self.send_each(None, messages, |o| committed(0, o));
        }
        // Placed first: a message too large for the broker sends nothing of them.
        if let Some(t) = &self.target {
            let max = u64::from(t.topic.max_message);
            for (key, payload) in messages {
                let size = key.map_or(0, |k| k.len() as u64) + payload.len() as u64;
                if size > max {
                    return Err((0, ProducerError::TooLarge { size, max }));
                }
            }
        }
        let placed: Vec<usize> = messages
            .iter()
            .map(|(key, _)| self.place(*key).unwrap_or(0))
            .collect();
        let mut sent = 0;
        while sent < messages.len() {
            let p = placed[sent];
            let run = placed[sent..].iter().take_while(|&&q| q == p).count();
            self.map(p).map_err(|e| (sent, e))?;
            self.send_each(Some(p), &messages[sent..sent + run], |o| {
                committed(p as u32, o)
            })
            .map_err(|(n, e)| (sent + n, e))?;
            sent += run;
        }
        Ok(())
    }

    /// Sends `messages` in order to one ring: partition `partition` of the target
    /// topic, or `default`'s (see [`Producer::send_batch`]); `committed` hears
    /// each offset as it is assigned.
    fn send_each(
        &mut self,
        partition: Option<usize>,
        messages: &[(Option<&[u8]>, &[u8])],
        mut committed: impl FnMut(u64),
    ) -> Result<(), (usize, ProducerError)> {
        if self.should_stop() {
            return Err((0, self.stop_reason()));
        }
        let s = &self.session;
        let (region, topic, number): (&Region, &str, u32) = match (partition, &self.target) {
            (Some(p), Some(t)) => (
                t.rings[p]
                    .as_ref()
                    .expect("a partition's ring is mapped before it is sent to"),
                &t.topic.name,
                p as u32,
            ),
            _ => (&s.region, "default", 0),
        };
        let sender = Sender {
            client: s.client,
            generation: s.generation,
        };
        let interrupt = &self.interrupt;
        let watch = RefCell::new(WaitWatch::new(
            s,
            (region, topic, number),
            self.send_timeout,
            self.on_notice.as_mut(),
        ));
        // Called only while a send waits (for space, the lock or the disk).
        let stop = || {
            s.link.is_gone()
                || interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::Relaxed))
                || watch.borrow_mut().still_waiting()
        };
        let mut sent = 0;
        let now_us = wall_clock_micros();
        let mut result;
        loop {
            result = region
                .send_batch(sender, &messages[sent..], now_us, stop, None, |o| {
                    sent += 1;
                    if let Ok(mut w) = watch.try_borrow_mut() {
                        w.moved();
                    }
                    committed(o)
                })
                .map_err(|(_, e)| (sent, e));
            // The region marked closing while the broker runs on: a stray mark,
            // which the broker undoes. Send the rest.
            let stray_mark =
                matches!(result, Err((_, SendError::Stopped))) && !stop() && !s.broker_stopping();
            if !stray_mark {
                break;
            }
        }
        let mut watch = watch.into_inner();
        // A send that stopped (interrupted, or the broker gone) did not move again.
        if result.is_ok() {
            watch.moved();
        }
        let timed_out = watch.timed_out();
        // A producer sending single messages with pauses between them would find
        // the lines of its next send gone cold: fetch them now, while it waits.
        // Not for batches or back-to-back sends, where several producers would pull
        // the same lines from each other.
        if messages.len() == 1 && now_us.saturating_sub(self.last_send_us) >= SPACED_SEND_US {
            region.prefetch_next_reservation();
        }
        self.last_send_us = now_us;
        self.sent += sent as u64;
        publish_sent(s, self.sent);
        self.bytes += messages[..sent]
            .iter()
            .map(|(_, p)| p.len() as u64)
            .sum::<u64>();
        match (result, timed_out) {
            (Ok(()), _) => Ok(()),
            (Err((n, SendError::Stopped | SendError::TimedOut)), Some(e)) => Err((n, e)),
            (Err((n, e)), _) => Err((n, self.error_from(e))),
        }
    }

    /// Zero-copy send: lends `len` bytes in the ring to write the payload in place;
    /// [`PayloadLoan::commit`] publishes it. Dropping the loan sends nothing.
    pub fn loan(
        &mut self,
        key: Option<&[u8]>,
        len: usize,
    ) -> Result<PayloadLoan<'_>, ProducerError> {
        if self.should_stop() {
            return Err(self.stop_reason());
        }
        let s = &self.session;
        let sender = Sender {
            client: s.client,
            generation: s.generation,
        };
        let (link, interrupt) = (s.link.clone(), self.interrupt.clone());
        let watch = Rc::new(RefCell::new(WaitWatch::new(
            s,
            (&s.region, "default", 0),
            self.send_timeout,
            self.on_notice.as_mut(),
        )));
        let stop = {
            let watch = watch.clone();
            move || {
                link.is_gone()
                    || interrupt
                        .as_ref()
                        .is_some_and(|f| f.load(Ordering::Relaxed))
                    || watch.borrow_mut().still_waiting()
            }
        };
        let loaned = s.region.loan(sender, key, len, stop.clone(), None);
        if loaned.is_ok() {
            watch.borrow_mut().moved();
        }
        match loaned {
            Ok(inner) => Ok(PayloadLoan {
                inner,
                stop: Box::new(stop),
                watch,
                totals: (&mut self.sent, &mut self.bytes),
                len: len as u64,
            }),
            Err(e) => {
                let timed_out = watch.borrow_mut().timed_out();
                drop((watch, stop));
                Err(match (e, timed_out) {
                    (SendError::Stopped | SendError::TimedOut, Some(t)) => t,
                    (e, _) => error_from(e, s, &self.interrupt),
                })
            }
        }
    }

    fn should_stop(&self) -> bool {
        self.session.broker_stopping()
            || self
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn error_from(&self, e: SendError) -> ProducerError {
        error_from(e, &self.session, &self.interrupt)
    }

    fn stop_reason(&self) -> ProducerError {
        stop_reason(&self.session, &self.interrupt)
    }
}

/// The error for a send that failed with `e`.
fn error_from(
    e: SendError,
    session: &Session,
    interrupt: &Option<Arc<AtomicBool>>,
) -> ProducerError {
    match e {
        SendError::TooLarge { size, max } => ProducerError::TooLarge { size, max },
        SendError::Stopped | SendError::TimedOut => stop_reason(session, interrupt),
        SendError::Refused => ProducerError::Refused,
        e @ (SendError::Corrupt(_) | SendError::Lock(_)) => ProducerError::Corrupt(e.to_string()),
    }
}

/// Why a send stopped: the caller's interrupt, or the broker stopping.
fn stop_reason(session: &Session, interrupt: &Option<Arc<AtomicBool>>) -> ProducerError {
    if interrupt
        .as_ref()
        .is_some_and(|f| f.load(Ordering::Relaxed))
        && !session.link.is_gone()
        && !session.region.is_closing()
    {
        ProducerError::Interrupted
    } else {
        ProducerError::BrokerStopped
    }
}

/// Publishes how many messages the producer has sent in its client entry, for the
/// broker to sample (its rate in `broker status`).
fn publish_sent(session: &Session, sent: u64) {
    if let Some(me) = session.region.client(session.client) {
        me.publish_progress(sent);
    }
}
