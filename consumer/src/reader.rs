//! Reading from any offset as a standalone reader (SPEC §10): in no group, holding
//! nothing back (a producer never waits for a reader), from the ring while a
//! record is there and from the persistence file once it has left. A reader reads
//! one topic-partition or all of a topic's (SPEC §11), each in offset order and
//! fairly across them; waiting, it sleeps on all their rings at once.
//!
//! Every message a poll returns is first recorded in the reader's journal in the
//! region (see `shm_layout::journal`), which the broker turns into
//! `log_consumo.txt` lines (group `-`, attempt 1): a reader killed at any instant
//! loses no line. A reader that runs far ahead of the log's writer waits for it.
//!
//! ```no_run
//! use consumer::reader::{Reader, StartAt};
//! let mut reader = Reader::connect("127.0.0.1:4444", None)?;
//! reader.seek_to(StartAt::Earliest)?;
//! while let Some(msg) = reader.poll(None)? {
//!     println!("{} {:?}", msg.offset, msg.payload);
//! }
//! # Ok::<(), consumer::ConsumerError>(())
//! ```

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_format::index::TopicPartition;
use audit_format::log_reader::{LogError, LogReader};
use control_protocol::{default_id, ControlFrame, OwnerKind, Role, Session, TopicInfo};
use shm_layout::event::{self, event_id};
use shm_layout::journal::{partition_key, JournalFull};
use shm_layout::layout::ClientEntry;
use shm_layout::Region;

use crate::file_records::{log_error, read_at, FileRecords};
use crate::ConsumerError;

/// A reader more than this many messages ahead of the broker's log lines waits:
/// the log's writer paces readers (SPEC §10).
const MAX_UNLOGGED: u64 = 1 << 18;

/// The longest a wait for the broker sleeps before it looks again.
const BROKER_WAIT_STEP: Duration = Duration::from_millis(5);

/// Where a reader starts (`consumer --from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest message still in the persistence file (or the ring).
    Earliest,
    /// The next message to be published.
    Latest,
    /// This offset (past the end: wait for it).
    Offset(u64),
    /// The first message published at or after this time, µs since the Unix epoch.
    Time(u64),
    /// Where this reader's id last committed (earliest if it never did).
    Committed,
}

/// A message a reader returned: its own copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMessage {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Publish time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Id of the producer that sent it.
    pub producer: Arc<str>,
}

/// A standalone reader of topic-partitions (`default`/0 until told otherwise).
pub struct Reader {
    session: Session,
    /// Subscribed: polls return messages.
    subscribed: bool,
    /// What it reads; the first is the one the single-partition calls
    /// ([`Reader::position`], [`Reader::end_offset`], ...) are about.
    parts: Vec<Part>,
    /// The part a poll looks at first: each poll starts after the last one that
    /// returned messages, so that no partition starves the others.
    turn: usize,
    /// Messages recorded in the journal so far.
    recorded: u64,
    interrupt: Option<Arc<AtomicBool>>,
    /// Names of producers met in the rings, by (client entry, generation).
    producer_names: Vec<((u32, u32), Arc<str>)>,
    batch: Vec<ReadMessage>,
}

/// One topic-partition a reader reads, and where it is in it.
struct Part {
    topic: Arc<str>,
    topic_id: u32,
    partition: u32,
    /// Its ring, for a partition other than `default`/0 (whose ring is the
    /// control region's).
    ring: Option<Region>,
    /// The next offset to return.
    position: u64,
    /// Its records in the persistence file, opened when first needed.
    file: FileRecords,
}

impl Part {
    fn of(topic: &TopicInfo, partition: u32, ring: Option<Region>) -> Part {
        Part {
            topic: topic.name.as_str().into(),
            topic_id: topic.id,
            partition,
            ring,
            position: 0,
            file: FileRecords::of(TopicPartition::new(&topic.name, topic.id, partition)),
        }
    }

    fn region<'a>(&'a self, session: &'a Session) -> &'a Region {
        self.ring.as_ref().unwrap_or(&session.region)
    }
}

/// `default`, as the broker describes it without being asked.
fn default_topic(session: &Session) -> TopicInfo {
    let g = session.region.geometry();
    TopicInfo {
        id: 0,
        name: TopicPartition::default_topic().topic,
        partitions: 1,
        first_ring: 0,
        slots: g.slots,
        slot_size: g.slot_size,
        max_message: g.max_message,
    }
}

impl Reader {
    /// Connects to the broker at `broker` as reader `id` (default `reader-<pid>`),
    /// subscribed to the topic `default` and positioned at its end (the next
    /// message to be published).
    pub fn connect(broker: &str, id: Option<&str>) -> Result<Reader, ConsumerError> {
        let id = id.map_or_else(|| default_id(Role::Reader), str::to_string);
        let session = Session::connect(broker, Role::Reader, &id, None)?;
        let default = Part::of(&default_topic(&session), 0, None);
        let mut reader = Reader {
            session,
            subscribed: true,
            parts: vec![default],
            turn: 0,
            recorded: 0,
            interrupt: None,
            producer_names: Vec::new(),
            batch: Vec::new(),
        };
        reader.parts[0].position = reader.end_offset();
        Ok(reader)
    }

    /// Reads `topic` from now on: its partition `partition`, or all of its
    /// partitions; each from its end. An unknown topic or partition is an error
    /// and changes nothing.
    pub fn assign(&mut self, topic: &str, partition: Option<u32>) -> Result<(), ConsumerError> {
        let info = self.session.topic(topic)?;
        let wanted: Vec<u32> = match partition {
            Some(p) => vec![p],
            None => (0..info.partitions).collect(),
        };
        let mut parts = Vec::with_capacity(wanted.len());
        for p in wanted {
            parts.push(self.part_of(&info, p)?);
        }
        self.parts = parts;
        self.turn = 0;
        self.subscribed = true;
        for i in 0..self.parts.len() {
            self.parts[i].position = self.parts[i].region(&self.session).next_offset();
        }
        Ok(())
    }

    /// Partition `p` of `topic`, its ring mapped.
    fn part_of(&self, topic: &TopicInfo, p: u32) -> Result<Part, ConsumerError> {
        let ring = match (topic.id, p) {
            (0, 0) => None,
            (0, _) => {
                return Err(ConsumerError::Connect(
                    control_protocol::ConnectError::NoPartition {
                        topic: topic.name.clone(),
                        partitions: 1,
                        partition: p,
                    },
                ))
            }
            _ => Some(self.session.map_partition(topic, p)?),
        };
        Ok(Part::of(topic, p, ring))
    }

    /// The topic-partitions read, each with the offset its next poll returns first.
    pub fn positions(&self) -> Vec<(Arc<str>, u32, u64)> {
        self.parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.position))
            .collect()
    }

    /// A flag that, once raised (e.g. by a signal handler), makes a waiting poll
    /// return [`ConsumerError::Interrupted`].
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.interrupt = Some(flag);
    }

    /// The id this reader registered with.
    pub fn id(&self) -> &str {
        &self.session.id
    }

    /// Subscribes to `topics` (Kaska's `subscribe`): all at once, not
    /// incrementally; topics that do not exist, and repeats, are ignored. Each
    /// topic subscribed to is read from its end. Returns how many it subscribed
    /// to; an error if already subscribed.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<usize, ConsumerError> {
        if self.subscribed {
            return Err(ConsumerError::AlreadySubscribed);
        }
        let mut parts = Vec::new();
        let mut count = 0;
        for (i, name) in topics.iter().enumerate() {
            if topics[..i].contains(name) {
                continue;
            }
            let info = match self.session.topic(name) {
                Ok(info) => info,
                Err(control_protocol::ConnectError::UnknownTopic(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for p in 0..info.partitions {
                parts.push(self.part_of(&info, p)?);
            }
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        self.parts = parts;
        self.turn = 0;
        self.subscribed = true;
        for i in 0..self.parts.len() {
            self.parts[i].position = self.parts[i].region(&self.session).next_offset();
        }
        Ok(count)
    }

    /// Drops every subscription: polls fail until the next `subscribe`. An error
    /// if there was none.
    pub fn unsubscribe(&mut self) -> Result<(), ConsumerError> {
        if !std::mem::replace(&mut self.subscribed, false) {
            return Err(ConsumerError::NotSubscribed);
        }
        Ok(())
    }

    /// The length of the payload of the message at `offset`, from the ring or the
    /// file (Kaska's `msg_length`); None if there is no such message (yet).
    pub fn msg_length(&mut self, offset: u64) -> Result<Option<usize>, ConsumerError> {
        let region = self.parts[0].region(&self.session);
        if offset >= region.freed_offset() {
            match region.copy_record(offset) {
                Ok(Some(r)) => return Ok(Some(r.payload.len())),
                Ok(None) => {}
                Err(_) if offset >= region.next_offset() => return Ok(None),
                Err(_) => {}
            }
            if offset >= region.freed_offset() {
                return Ok(None);
            }
        }
        let file = self.file_reader(0)?;
        let found = read_at(file, offset)?;
        // The reader of the file is moved: the next poll seeks back.
        Ok(found
            .filter(|r| r.record.offset == offset)
            .map(|r| r.record.payload.len()))
    }

    /// The offset the next poll returns first (of the first partition read).
    pub fn position(&self) -> u64 {
        self.parts[0].position
    }

    /// The offset the next message published will take (in the first partition
    /// read).
    pub fn end_offset(&self) -> u64 {
        self.parts[0].region(&self.session).next_offset()
    }

    /// The oldest offset that can be read (in the first partition read): the
    /// persistence file's first record, or the ring's oldest when the file has
    /// none.
    pub fn earliest_offset(&mut self) -> u64 {
        self.earliest_of(0)
    }

    fn earliest_of(&mut self, i: usize) -> u64 {
        let ring = self.parts[i].region(&self.session).freed_offset();
        // Slots are freed once persisted: what left the ring is in the file,
        // whether or not its index covers it yet.
        match self.file_reader(i).map(|f| f.first_offset()) {
            Ok(Ok(Some(first))) => first.min(ring),
            _ => ring,
        }
    }

    /// Moves every partition read to `offset`: the next poll returns it first (or,
    /// past the end, waits for it). Like Kafka's `seek`, no check is made until
    /// the poll.
    pub fn seek(&mut self, offset: u64) {
        for part in &mut self.parts {
            part.position = offset;
        }
    }

    /// Moves each partition read to where `at` says.
    pub fn seek_to(&mut self, at: StartAt) -> Result<(), ConsumerError> {
        let committed = match at {
            StartAt::Committed => self.committed_all()?,
            _ => Vec::new(),
        };
        for i in 0..self.parts.len() {
            let end = self.parts[i].region(&self.session).next_offset();
            self.parts[i].position = match at {
                StartAt::Earliest => self.earliest_of(i),
                StartAt::Latest => end,
                StartAt::Offset(o) => o,
                StartAt::Time(t) => self.offset_for_time_in(i, t)?,
                StartAt::Committed => {
                    let part = &self.parts[i];
                    match committed
                        .iter()
                        .find(|(t, p, _)| **t == *part.topic && *p == part.partition)
                    {
                        Some((_, _, o)) => *o,
                        None => self.earliest_of(i),
                    }
                }
            };
        }
        Ok(())
    }

    /// Commits the position of every partition read under this reader's id,
    /// Kafka's way: the next offset to read. Returns once the broker has written
    /// them to its state file.
    pub fn commit(&self) -> Result<(), ConsumerError> {
        for part in &self.parts {
            self.commit_in(part, part.position)?;
        }
        Ok(())
    }

    /// Commits `offset` under this reader's id (Kaska's `commit`), in the first
    /// partition read.
    pub fn commit_offset(&self, offset: u64) -> Result<(), ConsumerError> {
        self.commit_in(&self.parts[0], offset)
    }

    fn commit_in(&self, part: &Part, offset: u64) -> Result<(), ConsumerError> {
        let commit = ControlFrame::Commit {
            topic: part.topic.to_string(),
            partition: part.partition,
            offset,
        };
        match self.session.request(&commit)? {
            ControlFrame::CommitDone => Ok(()),
            ControlFrame::CommitFailed { reason } => Err(ConsumerError::CommitFailed(reason)),
            other => Err(ConsumerError::Corrupt(format!(
                "the broker answered a commit with {other:?}"
            ))),
        }
    }

    /// The offset this reader's id last committed in the first partition read, if
    /// it ever did.
    pub fn committed(&self) -> Result<Option<u64>, ConsumerError> {
        let first = &self.parts[0];
        Ok(self
            .committed_all()?
            .into_iter()
            .find(|(t, p, _)| *t == *first.topic && *p == first.partition)
            .map(|(_, _, o)| o))
    }

    /// Every offset this reader's id committed: topic, partition, offset.
    fn committed_all(&self) -> Result<Vec<(String, u32, u64)>, ConsumerError> {
        let ask = ControlFrame::CommittedRequest {
            owner: Some((OwnerKind::Reader, self.session.id.clone())),
        };
        match self.session.request(&ask)? {
            ControlFrame::Committed { offsets } => Ok(offsets
                .into_iter()
                .filter(|o| o.kind == OwnerKind::Reader)
                .map(|o| (o.topic, o.partition, o.offset))
                .collect()),
            other => Err(ConsumerError::Corrupt(format!(
                "the broker answered a request for committed offsets with {other:?}"
            ))),
        }
    }

    /// The first offset published at or after `time_us` in the first partition
    /// read, or its end if none is.
    pub fn offset_for_time(&mut self, time_us: u64) -> Result<u64, ConsumerError> {
        self.offset_for_time_in(0, time_us)
    }

    /// As [`Reader::offset_for_time`], in part `i`. Publish times follow offsets
    /// (each is taken as its message is committed), so the file is searched by
    /// its index first.
    fn offset_for_time_in(&mut self, i: usize, time_us: u64) -> Result<u64, ConsumerError> {
        let freed = self.parts[i].region(&self.session).freed_offset();
        if let Ok(file) = self.file_reader(i) {
            if let Some(o) = file.first_at_or_after(time_us).map_err(log_error)? {
                return Ok(o);
            }
        }
        // Not in the file: in the ring, or not published yet.
        let region = self.parts[i].region(&self.session);
        Ok(region
            .first_published_at_or_after(freed, time_us)
            .unwrap_or_else(|| region.next_offset()))
    }

    /// Waits for the next message, at most `timeout` (forever if None): `Ok(None)`
    /// on timeout.
    pub fn poll(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<&ReadMessage>, ConsumerError> {
        let batch = self.poll_batch(1, timeout)?;
        Ok(batch.first())
    }

    /// Waits for messages from the position on, and returns up to `max` of them in
    /// offset order (none on timeout); the position moves past them. Each is in
    /// the reader's journal before this returns.
    pub fn poll_batch(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<&[ReadMessage], ConsumerError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let max = max.max(1);
        self.batch.clear();
        if !self.subscribed {
            return Err(ConsumerError::NotSubscribed);
        }
        let n = self.parts.len();
        let read = 'polled: loop {
            self.check_alive()?;
            self.wait_for_log()?;
            let mut moved = false;
            for k in 0..n {
                let i = (self.turn + k) % n;
                let before = self.parts[i].position;
                self.read_into_batch(i, max)?;
                if !self.batch.is_empty() {
                    self.turn = (i + 1) % n;
                    break 'polled i;
                }
                // Below the ring's tail (and not in the file), the reader moved to
                // the oldest offset that can be read: look again.
                moved |= self.parts[i].position != before;
            }
            if moved {
                continue;
            }
            if !self.wait_for_publish(deadline)? {
                return Ok(&self.batch);
            }
        };
        self.record_batch(read)?;
        Ok(&self.batch)
    }

    /// Reads up to `max` messages of part `i` from its position into the batch:
    /// from the ring while they are there, else from the file.
    fn read_into_batch(&mut self, i: usize, max: usize) -> Result<(), ConsumerError> {
        while self.batch.len() < max {
            let part = &self.parts[i];
            let region = part.region(&self.session);
            let o = part.position;
            if o >= region.freed_offset() {
                if !region.is_committed(o) {
                    return Ok(());
                }
                match region.copy_record(o) {
                    Ok(Some(r)) => {
                        let key = (r.producer, r.producer_generation);
                        let producer = match self.producer_names.iter().find(|(k, _)| *k == key) {
                            Some((_, n)) => n.clone(),
                            None => {
                                if self.producer_names.len() > 64 {
                                    self.producer_names.clear();
                                }
                                // Producers are named in the control region.
                                let n: Arc<str> = self
                                    .session
                                    .region
                                    .client_name(key.0, key.1)
                                    .unwrap_or_else(|| "unknown".into())
                                    .into();
                                self.producer_names.push((key, n.clone()));
                                n
                            }
                        };
                        self.batch.push(ReadMessage {
                            topic: part.topic.clone(),
                            partition: part.partition,
                            offset: o,
                            key: r.key,
                            payload: r.payload,
                            timestamp_us: r.timestamp_us,
                            producer,
                        });
                        self.parts[i].position = o + 1;
                        continue;
                    }
                    // Left the ring while it was copied: read the file.
                    Ok(None) => {}
                    Err(e) if region.freed_offset() <= o => {
                        return Err(ConsumerError::Corrupt(format!(
                            "the record at offset {o} cannot be read from the region: {e}"
                        )))
                    }
                    Err(_) => {}
                }
            }
            // Only records that left the ring are read from the file: every one of
            // them is there (slots are freed only once persisted).
            let freed = region.freed_offset();
            let taken = self.read_file(i, max, freed)?;
            if taken == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads records below `below` from the file into the batch, up to `max` in
    /// it; how many it read.
    fn read_file(&mut self, i: usize, max: usize, below: u64) -> Result<usize, ConsumerError> {
        let part = &mut self.parts[i];
        let position = part.position;
        let file = part.file.reader(&self.session)?;
        if file.position() != position {
            match file.seek(position) {
                Ok(()) => {}
                Err(LogError::BeforeFirst { first, .. }) => {
                    // Gone from the file too (it was started afresh): go on from
                    // the oldest offset there is.
                    part.position = first;
                    return Ok(0);
                }
                Err(e) => return Err(log_error(e)),
            }
        }
        let mut taken = 0;
        while self.batch.len() < max && part.position < below {
            let file = part.file.reader(&self.session)?;
            let Some(r) = file.next_record().map_err(log_error)? else {
                break;
            };
            let offset = r.record.offset;
            if offset >= below {
                // The ring has it: read it there (the file reader is moved back).
                let _ = file.seek(offset);
                break;
            }
            let message = part.file.message(r);
            self.batch.push(message);
            part.position = offset + 1;
            taken += 1;
        }
        if taken == 0 && part.position < below {
            // The file does not hold the offset (a gap left by a lost record): go on
            // after it.
            part.position += 1;
        }
        Ok(taken)
    }

    /// Part `i`'s reader of the persistence file.
    fn file_reader(&mut self, i: usize) -> Result<&mut LogReader, ConsumerError> {
        self.parts[i].file.reader(&self.session)
    }

    /// Records the batch, read from part `i`, in the journal, a run per stretch
    /// of consecutive offsets, waiting for the broker when the journal has no
    /// free run.
    fn record_batch(&mut self, i: usize) -> Result<(), ConsumerError> {
        let partition = partition_key(self.parts[i].topic_id, self.parts[i].partition);
        let mut i = 0;
        while i < self.batch.len() {
            let from = self.batch[i].offset;
            let mut upto = from + 1;
            let mut j = i + 1;
            while j < self.batch.len() && self.batch[j].offset == upto {
                upto += 1;
                j += 1;
            }
            loop {
                match self.me().record_read(partition, from, upto) {
                    Ok(()) => break,
                    Err(JournalFull) => {
                        // The messages are read but not returned until recorded:
                        // no deadline applies here, only liveness.
                        self.wait_for_broker(|r| {
                            let (logged, _) = r.me().journal_logged();
                            r.me().journal_opened() - logged
                                < shm_layout::layout::JOURNAL_RUNS as u64
                        })?;
                    }
                }
            }
            self.recorded += upto - from;
            i = j;
        }
        // For the broker's status and rates: a store to its own line.
        self.me().publish_progress(self.recorded);
        Ok(())
    }

    /// Waits while this reader is more than [`MAX_UNLOGGED`] messages ahead of the
    /// log lines the broker has made of its journal.
    fn wait_for_log(&self) -> Result<(), ConsumerError> {
        let recorded = self.recorded;
        self.wait_for_broker(|r| recorded - r.me().journal_drained().min(recorded) <= MAX_UNLOGGED)
    }

    /// Waits until `ready`, waking the broker's cleaner and looking again every
    /// [`BROKER_WAIT_STEP`].
    fn wait_for_broker(&self, ready: impl Fn(&Reader) -> bool) -> Result<(), ConsumerError> {
        let h = self.session.region.header();
        while !ready(self) {
            self.check_alive()?;
            event::notify(&h.cleaner);
            let flag = &self.me().activity.sleeping_on;
            let _ = event::wait_until(
                &h.space,
                event_id::SPACE,
                Some(flag),
                || ready(self),
                || self.check_alive().is_err(),
                Some(Instant::now() + BROKER_WAIT_STEP),
            );
        }
        Ok(())
    }

    /// Waits for the next offset of any part to be published; false if the
    /// deadline passed first. A reader of one ring sleeps on its published event
    /// (uncounted by the broker if it dies asleep); a reader of several sleeps on
    /// all of theirs at once.
    fn wait_for_publish(&self, deadline: Option<Instant>) -> Result<bool, ConsumerError> {
        let session = &self.session;
        let ready = || {
            self.parts.iter().any(|p| {
                let region = p.region(session);
                region.is_committed(p.position) || region.freed_offset() > p.position
            })
        };
        let closing = || session.region.is_closing();
        if event::spin_until(|| ready() || closing()) {
            return Ok(true);
        }
        let step = Instant::now() + event::MAX_SLEEP;
        let until = deadline.map_or(step, |d| d.min(step));
        if let [only] = &self.parts[..] {
            // Marked in its entry in the ring's own region, where the broker
            // uncounts it if it dies asleep.
            let region = only.region(session);
            let flag = region
                .client(session.client)
                .map(|c| &c.activity.sleeping_on);
            let _ = event::wait_until(
                &region.header().published,
                event_id::PUBLISHED,
                flag,
                || ready() || closing(),
                || self.check_alive().is_err(),
                Some(until),
            );
        } else {
            // Each marked in its entry in that ring's region, where the broker
            // uncounts it if it dies asleep.
            let events: Vec<_> = self
                .parts
                .iter()
                .map(|p| {
                    let region = p.region(session);
                    let flag = region
                        .client(session.client)
                        .map(|c| &c.activity.sleeping_on);
                    (&region.header().published, event_id::PUBLISHED, flag)
                })
                .collect();
            let left = until.saturating_duration_since(Instant::now());
            event::sleep_on_any(&events, || ready() || closing(), left);
        }
        self.check_alive()?;
        Ok(deadline.is_none_or(|d| Instant::now() < d))
    }

    fn me(&self) -> &ClientEntry {
        self.session
            .region
            .client(self.session.client)
            .expect("checked at connect")
    }

    /// Whether the broker still runs, this reader is still registered, and no
    /// interrupt was raised.
    fn check_alive(&self) -> Result<(), ConsumerError> {
        let s = &self.session;
        if s.broker_stopping() || !self.me().is_active_as(s.generation) {
            return Err(ConsumerError::BrokerStopped);
        }
        crate::check_interrupt(&self.interrupt)
    }
}
