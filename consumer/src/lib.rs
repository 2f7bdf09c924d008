//! Receiving messages from a mini-kafka broker on this host, as a member of a
//! consumer group.
//!
//! Within a group, offsets rotate over the members in join order; a [`Consumer`]
//! hands out committed offsets and reads its own share directly in the
//! shared-memory region (no broker round trip), borrowing each payload in place. Polling again acknowledges the
//! previous message; [`Consumer::ack`] does it explicitly, and [`Consumer::close`]
//! acknowledges the last one before leaving. A message that was not acknowledged
//! when its consumer left is redelivered to another member of the group.
//!
//! ```no_run
//! let mut consumer = consumer::Consumer::connect("127.0.0.1:4444", None, Some("billing"))?;
//! while let Some(msg) = consumer.poll(None)? {
//!     println!("{} {:?}", msg.offset, msg.payload);
//! }
//! # Ok::<(), consumer::ConsumerError>(())
//! ```
#![forbid(unsafe_code)]

mod file_records;
pub mod reader;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_format::index::TopicPartition;
use audit_format::records::TOPIC as DEFAULT_TOPIC;
use control_protocol::{default_id, Assignment, ConnectError, Role, Session, Subscription};
use shm_layout::event::{self, event_id};
use shm_layout::group::{Member, Run, Step};
use shm_layout::layout::{redelivery, ClientEntry};
use shm_layout::redelivery::ClaimedRedelivery;
use shm_layout::sys::monotonic_millis;
use shm_layout::Region;

/// Why polling failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Could not reach or register with the broker.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The broker stopped or its control connection was lost.
    #[error("broker stopped")]
    BrokerStopped,
    /// The broker removed this consumer from its group (session timeout).
    #[error("evicted from group {0}")]
    Evicted(String),
    /// The caller's interrupt flag was raised while waiting.
    #[error("interrupted")]
    Interrupted,
    /// The region holds something the consumer refuses to read.
    #[error("the shared-memory region is corrupt: {0}")]
    Corrupt(String),
    /// The record at this offset, handed to this consumer, cannot be read from
    /// the region (its index entry was overwritten). It is passed over: the
    /// broker finds it when it reclaims and reports it. Poll again to go on.
    #[error("the record at offset {0} cannot be read from the region; skipped")]
    Unreadable(u64),
    /// A reader polled, or unsubscribed, with no subscription.
    #[error("not subscribed to any topic")]
    NotSubscribed,
    /// A reader subscribed while already subscribed (subscriptions are not
    /// incremental: unsubscribe first).
    #[error("already subscribed: unsubscribe first")]
    AlreadySubscribed,
    /// The broker could not write a reader's commit.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// A reader could not read the persistence file (SPEC §10).
    #[error("cannot read the persistence file: {0}")]
    File(String),
}

/// [`ConsumerError::Interrupted`] once the caller's interrupt flag is raised.
pub(crate) fn check_interrupt(flag: &Option<Arc<AtomicBool>>) -> Result<(), ConsumerError> {
    if flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Err(ConsumerError::Interrupted);
    }
    Ok(())
}

/// A message borrowed in place from the ring until the next poll or ack.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Publish time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Id of the producer that sent it.
    pub producer: &'a str,
    /// 1 for a first delivery, 2, 3, ... for redeliveries.
    pub attempt: u32,
}

/// How a wait ended.
enum Waited {
    /// The awaited change came within the spin.
    Spun,
    /// After a sleep: woken, or a sleep step ended.
    Woken,
    /// The caller's deadline passed.
    TimedOut,
}

/// Waits that end within their spin, in a row, before the liveness checks and the
/// activity stamp are redone anyway (each is at most [`event::SPIN`] long).
const SPINS_PER_CHECK: u32 = 1024;

#[derive(Debug, Clone, Copy)]
enum Held {
    /// First deliveries, acknowledged together.
    First(Run),
    Redelivered(ClaimedRedelivery),
}

/// Messages returned by one poll, borrowed in place from the ring until the next
/// poll (which acknowledges them all).
pub struct Batch<'c> {
    consumer: &'c Consumer,
    /// The part they come from.
    part: usize,
    run: Run,
}

impl<'c> Batch<'c> {
    /// How many messages.
    pub fn len(&self) -> usize {
        self.run.len as usize
    }

    /// Whether the poll timed out with nothing.
    pub fn is_empty(&self) -> bool {
        self.run.len == 0
    }

    /// Message `i` (in offset order).
    pub fn get(&self, i: usize) -> Result<Message<'c>, ConsumerError> {
        let c = self.consumer;
        if i as u64 >= self.run.len {
            return Err(ConsumerError::Corrupt(format!(
                "batch index {i} out of range"
            )));
        }
        let part = &c.parts[self.part];
        let offset = self.run.offset(i as u64);
        let attempt = match c.held {
            Some((_, Held::Redelivered(claim))) => redelivery::attempt_number(claim.attempt),
            _ if offset < part.redeliver_below => 2,
            _ => 1,
        };
        // Read back from the file: the group resumed below the ring (SPEC §10).
        if let Some(m) = c.from_file.iter().find(|m| m.offset == offset) {
            return Ok(Message {
                topic: &part.topic,
                partition: part.partition,
                offset,
                key: m.key.as_deref(),
                payload: &m.payload,
                timestamp_us: m.timestamp_us,
                producer: &m.producer,
                attempt,
            });
        }
        let r = part
            .region(&c.session)
            .read_record(offset)
            .map_err(|_| ConsumerError::Unreadable(offset))?;
        let key = (r.producer, r.producer_generation);
        let producer = c
            .producer_names
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("unknown", |(_, n)| n.as_str());
        Ok(Message {
            topic: &part.topic,
            partition: part.partition,
            offset,
            key: r.key,
            payload: r.payload,
            timestamp_us: r.timestamp_us,
            producer,
            attempt,
        })
    }
}

/// One ring this consumer reads as a member of its group: `default`/0, or a
/// partition of one of its topics.
struct GroupPart {
    topic: Arc<str>,
    partition: u32,
    /// Its ring, for a partition other than `default`/0 (whose ring is the
    /// control region's).
    ring: Option<Region>,
    /// Where this consumer reads its share of the group's offsets here.
    member: Member,
    /// Redeliveries handed back because their records could not be read:
    /// (slot, offset, state word), passed over until the next liveness check.
    declined: Vec<(u32, u64, u64)>,
    /// First deliveries below this offset are attempt 2: the group had been handed
    /// them before the broker restarted (as the broker logs them).
    redeliver_below: u64,
    /// The persistence file, for offsets handed out after they left the ring.
    file: file_records::FileRecords,
    /// Until a batch starts at or above the ring's reclaim cursor, batches may
    /// hold offsets that left the ring.
    may_be_below_ring: bool,
}

impl GroupPart {
    fn region<'a>(&'a self, session: &'a Session) -> &'a Region {
        self.ring.as_ref().unwrap_or(&session.region)
    }
}

/// What one part of the group waits for, judged in a poll.
#[derive(Clone, Copy)]
struct Awaited {
    part: usize,
    /// The group's turn word there when judged.
    word: u64,
    /// The redelivery hint there when judged.
    pending: u32,
    /// Waiting for a commit at this offset (None: for the rotation to change).
    cursor: Option<u64>,
}

/// A member of a consumer group.
pub struct Consumer {
    session: Session,
    group: u32,
    group_name: String,
    /// Every ring it reads, `default`/0 alone unless it named topics.
    parts: Vec<GroupPart>,
    /// The part looked at first by the next poll: the parts take turns.
    turn: usize,
    held: Option<(usize, Held)>,
    interrupt: Option<Arc<AtomicBool>>,
    /// Names of the producers of the current batch's records.
    producer_names: Vec<((u32, u32), String)>,
    /// Polls made so far, and checks of its standing while a poll waits:
    /// published in the client entry for the broker to sample.
    polls: u64,
    /// The records of the current batch read back from the file.
    from_file: Vec<reader::ReadMessage>,
    /// What each part waited for in the last look (kept for its allocation).
    awaited: Vec<Awaited>,
}

impl Consumer {
    /// Connects to the broker at `broker` as `id` (default `consumer-<pid>`), joining
    /// `group` (created if new) or, without one, the group with fewest consumers.
    pub fn connect(
        broker: &str,
        id: Option<&str>,
        group: Option<&str>,
    ) -> Result<Consumer, ConsumerError> {
        Consumer::connect_reading(broker, id, group, &Subscription::default())
    }

    /// As [`Consumer::connect`], reading the topics of `subscription` (none:
    /// `default`), every partition of each (SPEC §11). Without a group, it joins
    /// the group with fewest consumers among those already reading all of them,
    /// else among all. A group it creates gives out messages as
    /// `subscription.assignment` says (round-robin by default); a group that
    /// exists refuses another assignment than its own.
    pub fn connect_reading(
        broker: &str,
        id: Option<&str>,
        group: Option<&str>,
        subscription: &Subscription,
    ) -> Result<Consumer, ConsumerError> {
        let id = id.map_or_else(|| default_id(Role::Consumer), str::to_string);
        let session = Session::connect_reading(broker, Role::Consumer, &id, group, subscription)?;
        let topics = &subscription.topics;
        let (g, name) = session.group.clone().ok_or_else(|| {
            ConsumerError::Corrupt("the broker registered us without a group".into())
        })?;
        let mut parts = Vec::new();
        let default = [DEFAULT_TOPIC.to_string()];
        let topics = if topics.is_empty() {
            &default[..]
        } else {
            topics
        };
        for name in topics {
            if parts.iter().any(|p: &GroupPart| &*p.topic == name.as_str()) {
                continue;
            }
            if name == DEFAULT_TOPIC {
                parts.push(GroupPart::of(&session, g, name, 0, 0, None)?);
                continue;
            }
            let info = session.topic(name)?;
            for p in 0..info.partitions {
                let ring = session.map_partition(&info, p)?;
                parts.push(GroupPart::of(&session, g, name, info.id, p, Some(ring))?);
            }
        }
        Ok(Consumer {
            session,
            group: g,
            group_name: name,
            parts,
            turn: 0,
            held: None,
            interrupt: None,
            producer_names: Vec::new(),
            polls: 0,
            from_file: Vec::new(),
            awaited: Vec::new(),
        })
    }

    /// A flag that, once raised (e.g. by a signal handler), makes a waiting poll
    /// return [`ConsumerError::Interrupted`].
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// The group this consumer belongs to.
    pub fn group(&self) -> &str {
        &self.group_name
    }

    /// The id this consumer registered with.
    pub fn id(&self) -> &str {
        &self.session.id
    }

    fn me(&self) -> &ClientEntry {
        self.session
            .region
            .client(self.session.client)
            .expect("checked at connect")
    }

    /// Records that this consumer is polling (its session timeout starts again),
    /// and moves the counter the broker samples for the age of its last poll.
    fn stamp_activity(&mut self) {
        self.polls += 1;
        let me = self.me();
        me.touch(monotonic_millis());
        me.publish_progress(self.polls);
    }

    /// Acknowledges the message returned by the last poll, if any.
    pub fn ack(&mut self) {
        let Some((part, held)) = self.held.take() else {
            return;
        };
        let region = self.parts[part].region(&self.session);
        match held {
            Held::First(run) => {
                if let Some(me) = region.client(self.session.client) {
                    me.acknowledge_upto(run.end());
                }
            }
            Held::Redelivered(claim) => {
                region.ack_redelivery(self.group, self.session.client, &claim);
            }
        }
    }

    /// Acknowledges the last message and leaves the group.
    pub fn close(mut self) {
        self.ack();
    }

    fn check_alive(&self) -> Result<(), ConsumerError> {
        self.check_standing()?;
        check_interrupt(&self.interrupt)
    }

    /// Whether this consumer is still a member and the broker still runs.
    fn check_standing(&self) -> Result<(), ConsumerError> {
        let s = &self.session;
        // `gone` first: the watcher sets `evicted` before `gone`, so an eviction
        // followed by the close is never mistaken for the broker stopping.
        let gone = s.broker_stopping();
        let removed = !self.me().is_active_as(s.generation);
        if s.link.is_evicted() || (removed && !gone) {
            return Err(ConsumerError::Evicted(self.group_name.clone()));
        }
        if gone {
            return Err(ConsumerError::BrokerStopped);
        }
        Ok(())
    }

    /// Acknowledges the previous message and waits for the next one for this
    /// consumer, at most `timeout` (forever if None); `Ok(None)` on timeout.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<Message<'_>>, ConsumerError> {
        let batch = self.poll_batch(1, timeout)?;
        if batch.is_empty() {
            return Ok(None);
        }
        batch.get(0).map(Some)
    }

    /// Looks at part `i` once: what it hands this consumer, or what to wait for
    /// there.
    fn look_at(&mut self, i: usize, max: u64) -> Result<Held, Awaited> {
        let g = self.group;
        let region = self.parts[i].region(&self.session);
        let pending = region.redelivery_hint(g);
        // In a `partition` group only the ring's owner takes its redeliveries,
        // so that each key's messages stay with one member, in order.
        let by_partition = self.session.assignment == Some(Assignment::Partition);
        let may_claim = pending != 0
            && (!by_partition || {
                let me = region
                    .client(self.session.client)
                    .expect("checked at connect");
                shm_layout::group::is_member(region.group(g).expect("checked at connect"), me)
            });
        if may_claim {
            if let Some(claim) = self.claim_readable_redelivery(i) {
                return Ok(Held::Redelivered(claim));
            }
            // Nor does it take the offsets after them while any is pending (a
            // previous owner's, still acknowledged by nobody), unless all it
            // counts are ones it passed over as unreadable: those wait for the
            // broker's repair.
            if by_partition && pending as usize > self.parts[i].declined.len() {
                let region = self.parts[i].region(&self.session);
                let group = region.group(g).expect("checked at connect");
                return Err(Awaited {
                    part: i,
                    word: group.turn_word(),
                    pending,
                    cursor: None,
                });
            }
        }
        let Consumer { session, parts, .. } = self;
        let part = &mut parts[i];
        let region = part.ring.as_ref().unwrap_or(&session.region);
        let group = region.group(g).expect("checked at connect");
        let me = region.client(session.client).expect("checked at connect");
        shm_layout::fault::point("poll-taking");
        // A `partition` group's new owner looks at the redeliveries again once it
        // sees the rotation that made it the owner: the broker offered the old
        // owner's share before installing it.
        match part.member.next_step_with(
            group,
            me,
            |cursor, limit| region.committed_end(cursor, limit),
            max,
            by_partition,
        ) {
            Step::Started => self.look_at(i, max),
            Step::Take(run) => {
                shm_layout::fault::point("poll-claimed");
                Ok(Held::First(run))
            }
            Step::AwaitMessages { word, cursor } => {
                // Taking `cursor` looks at the entry after it: fetch it now. The
                // producer writes that entry only in its send after the next,
                // when this consumer waits on it anyway.
                region.prefetch_entry(cursor + 1);
                Err(Awaited {
                    part: i,
                    word,
                    pending,
                    cursor: Some(cursor),
                })
            }
            Step::AwaitRotation { word, .. } => Err(Awaited {
                part: i,
                word,
                pending,
                cursor: None,
            }),
        }
    }

    /// Whether what `a` waited for happened (or something else worth a new look
    /// there): a commit at its cursor, a changed turn word (another member handed
    /// out offsets, or the rotation changed), or a change in pending
    /// redeliveries (not their presence: a claimed one is not ours to wait for).
    fn came(&self, a: &Awaited) -> bool {
        let region = self.parts[a.part].region(&self.session);
        let group = region.group(self.group).expect("checked at connect");
        group.turn_word() != a.word
            || a.cursor.is_some_and(|c| region.is_committed(c))
            || region.redelivery_hint(self.group) != a.pending
    }

    /// Acknowledges what the previous poll returned and waits for up to `max`
    /// messages for this consumer (an empty batch on timeout). Messages committed
    /// and not yet handed out are handed to every member at once, up to `max` each;
    /// the batch holds this consumer's share, every n-th offset with n members,
    /// from one partition (the partitions take turns).
    pub fn poll_batch(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Batch<'_>, ConsumerError> {
        // A consumer removed by the broker must not write into what may now be
        // another client's entry: check before acknowledging.
        if let Err(e) = self.check_alive() {
            if matches!(e, ConsumerError::Evicted(_)) {
                self.held = None;
            }
            return Err(e);
        }
        self.ack();
        self.stamp_activity();
        let deadline = timeout.map(|t| Instant::now() + t);
        let max = max.max(1) as u64;
        // The liveness checks and the activity stamp are redone after every sleep,
        // not after a wait that ended within its spin: such a wait is too short to
        // matter to either, and redoing them there would delay every message taken
        // at once.
        let mut spins_since_check = 0;
        let mut awaited = std::mem::take(&mut self.awaited);
        let (part, next) = 'found: loop {
            if spins_since_check >= SPINS_PER_CHECK {
                self.check_alive()?;
                self.stamp_activity();
                spins_since_check = 0;
                // The broker has had time to repair what was declined: look again.
                for p in &mut self.parts {
                    p.declined.clear();
                }
            }
            awaited.clear();
            let n = self.parts.len();
            for k in 0..n {
                let i = (self.turn + k) % n;
                match self.look_at(i, max) {
                    Ok(held) => {
                        self.turn = (i + 1) % n;
                        break 'found (i, held);
                    }
                    Err(a) => awaited.push(a),
                }
            }
            let waited = self.wait_for(deadline, &awaited);
            let waited = match waited {
                Ok(w) => w,
                Err(e) => {
                    self.awaited = awaited;
                    return Err(e);
                }
            };
            match waited {
                Waited::Spun => spins_since_check += 1,
                Waited::Woken => spins_since_check = SPINS_PER_CHECK,
                Waited::TimedOut => {
                    self.awaited = awaited;
                    return Ok(self.empty_batch());
                }
            }
        };
        self.awaited = awaited;
        // The broker logs deliveries for the last time after it marks the region
        // closing: a take it may not have seen is not handed out (what is taken and
        // not acknowledged is delivered again after a restart). Either the SeqCst
        // load of the closing mark below sees it, or the cleaner's last pass, behind
        // its SeqCst fence, sees the take: when this consumer's own SeqCst advance
        // of the cursor handed the run out, that advance orders the two; otherwise
        // a fence does (a fence costs tens of cycles on every message).
        if !(matches!(next, Held::First(_)) && self.parts[part].member.advanced_last_step()) {
            self.session.region.order_take_before_closing_check();
        }
        // A consumer evicted while it waited (stopped, say) finds its old share
        // still below the cursor, and the broker has offered that share to the
        // others: it hands out nothing. Checked after every take, since the checks
        // before it may be a spin's worth old.
        self.check_standing()?;
        self.held = Some((part, next));
        let run = match next {
            Held::First(run) => run,
            Held::Redelivered(c) => Run {
                start: c.offset,
                stride: 1,
                len: 1,
            },
        };
        // A group that resumed where it had left (SPEC §10) may be handed offsets
        // that left the ring: they are read back from the file now. Offsets at or
        // above the reclaim cursor stay in the ring until the group acknowledges
        // them (it holds the ring again), so they are read there.
        // Once a run starts at or above the cursor, every later one does (the
        // group holds the ring while this consumer is a member): no more looking.
        self.from_file.clear();
        let redelivered = matches!(next, Held::Redelivered(_));
        let Consumer {
            session,
            parts,
            from_file,
            producer_names,
            ..
        } = self;
        let p = &mut parts[part];
        let region = p.ring.as_ref().unwrap_or(&session.region);
        if p.may_be_below_ring || redelivered {
            let freed = region.freed_offset();
            if run.start < freed {
                let below = (0..run.len)
                    .map(|i| run.offset(i))
                    .take_while(|&o| o < freed);
                p.file.read_offsets(session, below, from_file)?;
            } else if !redelivered {
                p.may_be_below_ring = false;
            }
        }
        // Producer names are resolved now, so that messages borrow only from us.
        if producer_names.len() > 64 {
            producer_names.clear();
        }
        let mut last = None;
        for i in 0..run.len {
            let offset = run.offset(i);
            // An unreadable record is reported by `Batch::get`, and passed over.
            let Some(key) = region.record_producer(offset) else {
                continue;
            };
            // The payloads were written on another core: have them on their way
            // before the caller reads them.
            region.prefetch_payload(offset);
            // Runs of one producer's records are the common case.
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            if !producer_names.iter().any(|(k, _)| *k == key) {
                // Producers are named in the control region, whatever the ring.
                let name = session
                    .region
                    .client_name(key.0, key.1)
                    .unwrap_or_else(|| "unknown".into());
                producer_names.push((key, name));
            }
        }
        Ok(Batch {
            consumer: self,
            part,
            run,
        })
    }

    /// Claims a pending redelivery whose record can be read. One that cannot is
    /// handed back rather than delivered or acknowledged: only the broker knows
    /// whether the entry is a true offer (then it drops it and reports the record
    /// lost) or a scribble (then it frees it), and a claim this consumer kept
    /// would hold the group until the session timeout. It is passed over until
    /// the next liveness check, so this consumer goes on with its own share.
    fn claim_readable_redelivery(&mut self, part: usize) -> Option<ClaimedRedelivery> {
        let Consumer {
            session,
            parts,
            group,
            ..
        } = self;
        let p = &mut parts[part];
        let region = p.ring.as_ref().unwrap_or(&session.region);
        // Each refusal adds one entry to pass over: at most a table's worth.
        for _ in 0..=region.geometry().redeliveries_per_group {
            let declined = &p.declined;
            let claim = region.claim_redelivery_skipping(
                *group,
                session.client,
                session.generation,
                |slot, offset, state| declined.contains(&(slot, offset, state)),
            )?;
            // An offer the broker made of a record that had left the ring is read
            // from the file; any other must be readable in the ring.
            let in_file =
                redelivery::is_from_file(claim.attempt) && claim.offset < region.freed_offset();
            if in_file || region.read_record(claim.offset).is_ok() {
                return Some(claim);
            }
            region.hand_back_redelivery(*group, session.client, &claim);
            let pending = redelivery::pack(redelivery::PENDING, claim.attempt, 0);
            p.declined.push((claim.slot, claim.offset, pending));
        }
        None
    }

    fn empty_batch(&self) -> Batch<'_> {
        Batch {
            consumer: self,
            part: 0,
            run: Run {
                start: 0,
                stride: 1,
                len: 0,
            },
        }
    }

    /// Waits until one of `awaited` comes (or something else worth a new look
    /// happens), or the deadline passes. A consumer reading one ring sleeps on
    /// its event there (a commit, or the group's turn); one reading several
    /// sleeps on all of theirs at once.
    fn wait_for(
        &self,
        deadline: Option<Instant>,
        awaited: &[Awaited],
    ) -> Result<Waited, ConsumerError> {
        let closing = || self.session.region.is_closing();
        let ready = || awaited.iter().any(|a| self.came(a)) || closing();
        // Most waits end within the spin: no clock read, no sleep.
        if event::spin_until(ready) {
            shm_layout::fault::point("poll-spun");
            // The broker stopping is for the liveness checks to report.
            return Ok(if closing() {
                Waited::Woken
            } else {
                Waited::Spun
            });
        }
        let event_of = |a: &Awaited| {
            let region = self.parts[a.part].region(&self.session);
            let flag = region
                .client(self.session.client)
                .map(|c| &c.activity.sleeping_on);
            let group = region.group(self.group).expect("checked at connect");
            if a.cursor.is_some() {
                (&region.header().published, event_id::PUBLISHED, flag)
            } else {
                (&group.turn_event, event_id::GROUP_BASE + self.group, flag)
            }
        };
        let step_deadline = Instant::now() + event::MAX_SLEEP;
        let until = deadline.map_or(step_deadline, |d| d.min(step_deadline));
        let woken = if let [only] = awaited {
            let (ev, id, flag) = event_of(only);
            event::wait_until(
                ev,
                id,
                flag,
                ready,
                || self.check_alive().is_err(),
                Some(until),
            )
            .is_ok()
        } else {
            let events: Vec<_> = awaited.iter().map(event_of).collect();
            let left = until.saturating_duration_since(Instant::now());
            event::sleep_on_any(&events, ready, left);
            ready()
        };
        if woken {
            return Ok(Waited::Woken);
        }
        self.check_alive()?;
        if deadline.is_none_or(|d| Instant::now() < d) {
            Ok(Waited::Woken)
        } else {
            Ok(Waited::TimedOut)
        }
    }
}

impl GroupPart {
    /// Partition `partition` of topic `topic` (id `topic_id`), read in `ring`
    /// (None: `default`/0, the control region's) as a member of group `g`.
    fn of(
        session: &Session,
        g: u32,
        topic: &str,
        topic_id: u32,
        partition: u32,
        ring: Option<Region>,
    ) -> Result<GroupPart, ConsumerError> {
        let region = ring.as_ref().unwrap_or(&session.region);
        let Some(entry) = region.group(g) else {
            return Err(ConsumerError::Corrupt(format!(
                "group index {g} is out of range"
            )));
        };
        if region.client(session.client).is_none() {
            return Err(ConsumerError::Corrupt(format!(
                "client index {} is out of range",
                session.client
            )));
        }
        let redeliver_below =
            shm_layout::group::recorded_start(entry).map_or(0, |s| s.redeliver_below);
        Ok(GroupPart {
            topic: topic.into(),
            partition,
            ring,
            member: Member::default(),
            declined: Vec::new(),
            redeliver_below,
            file: file_records::FileRecords::of(TopicPartition::new(topic, topic_id, partition)),
            may_be_below_ring: true,
        })
    }
}
