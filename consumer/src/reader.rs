//! Reading from any offset as a standalone reader (SPEC §10): in no group, holding
//! nothing back (a producer never waits for a reader), from the ring while a
//! record is there and from the persistence file once it has left.
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
use control_protocol::{default_id, ControlFrame, OwnerKind, Role, Session};
use shm_layout::event::{self, event_id};
use shm_layout::journal::{partition_key, JournalFull};
use shm_layout::layout::ClientEntry;

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
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Publish time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Id of the producer that sent it.
    pub producer: Arc<str>,
}

/// A standalone reader of the topic `default`, partition 0.
pub struct Reader {
    session: Session,
    /// Subscribed (to `default`, the one topic): polls return messages.
    subscribed: bool,
    /// The next offset to return.
    position: u64,
    /// The persistence file, opened when first needed.
    file: FileRecords,
    /// Messages recorded in the journal so far.
    recorded: u64,
    interrupt: Option<Arc<AtomicBool>>,
    /// Names of producers met in the ring, by (client entry, generation).
    producer_names: Vec<((u32, u32), Arc<str>)>,
    batch: Vec<ReadMessage>,
}

impl Reader {
    /// Connects to the broker at `broker` as reader `id` (default `reader-<pid>`),
    /// subscribed to the topic `default` and positioned at its end (the next
    /// message to be published).
    pub fn connect(broker: &str, id: Option<&str>) -> Result<Reader, ConsumerError> {
        let id = id.map_or_else(|| default_id(Role::Reader), str::to_string);
        let session = Session::connect(broker, Role::Reader, &id, None)?;
        let mut reader = Reader {
            session,
            subscribed: true,
            position: 0,
            file: FileRecords::default(),
            recorded: 0,
            interrupt: None,
            producer_names: Vec::new(),
            batch: Vec::new(),
        };
        reader.position = reader.end_offset();
        Ok(reader)
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
        let topic = TopicPartition::default_topic().topic;
        if !topics.contains(&topic.as_str()) {
            return Ok(0);
        }
        self.subscribed = true;
        self.position = self.end_offset();
        Ok(1)
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
        let region = &self.session.region;
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
        let file = self.file_reader()?;
        let found = read_at(file, offset)?;
        // The reader of the file is moved: the next poll seeks back.
        Ok(found
            .filter(|r| r.record.offset == offset)
            .map(|r| r.record.payload.len()))
    }

    /// The offset the next poll returns first.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The offset the next message published will take.
    pub fn end_offset(&self) -> u64 {
        self.session.region.next_offset()
    }

    /// The oldest offset that can be read: the persistence file's first record,
    /// or the ring's oldest when the file has none.
    pub fn earliest_offset(&mut self) -> u64 {
        let ring = self.session.region.freed_offset();
        match self.file_reader() {
            Ok(f) => f.index().first().map_or(ring, |e| e.offset.min(ring)),
            Err(_) => ring,
        }
    }

    /// Moves to `offset`: the next poll returns it first (or, past the end, waits
    /// for it). Like Kafka's `seek`, no check is made until the poll.
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
    }

    /// Moves to where `at` says.
    pub fn seek_to(&mut self, at: StartAt) -> Result<(), ConsumerError> {
        self.position = match at {
            StartAt::Earliest => self.earliest_offset(),
            StartAt::Latest => self.end_offset(),
            StartAt::Offset(o) => o,
            StartAt::Time(t) => self.offset_for_time(t)?,
            StartAt::Committed => match self.committed()? {
                Some(o) => o,
                None => self.earliest_offset(),
            },
        };
        Ok(())
    }

    /// Commits the position under this reader's id, Kafka's way: the next offset
    /// to read. Returns once the broker has written it to its state file.
    pub fn commit(&self) -> Result<(), ConsumerError> {
        self.commit_offset(self.position)
    }

    /// Commits `offset` under this reader's id (Kaska's `commit`).
    pub fn commit_offset(&self, offset: u64) -> Result<(), ConsumerError> {
        let commit = ControlFrame::Commit {
            topic: TopicPartition::default_topic().topic,
            partition: 0,
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

    /// The offset this reader's id last committed, if it ever did.
    pub fn committed(&self) -> Result<Option<u64>, ConsumerError> {
        let ask = ControlFrame::CommittedRequest {
            owner: Some((OwnerKind::Reader, self.session.id.clone())),
        };
        match self.session.request(&ask)? {
            ControlFrame::Committed { offsets } => Ok(offsets
                .iter()
                .find(|o| o.kind == OwnerKind::Reader && o.topic == "default" && o.partition == 0)
                .map(|o| o.offset)),
            other => Err(ConsumerError::Corrupt(format!(
                "the broker answered a request for committed offsets with {other:?}"
            ))),
        }
    }

    /// The first offset published at or after `time_us`, or the end if none is.
    /// Publish times follow offsets (each is taken as its message is committed), so
    /// the file is searched by its index first.
    pub fn offset_for_time(&mut self, time_us: u64) -> Result<u64, ConsumerError> {
        let freed = self.session.region.freed_offset();
        if let Ok(file) = self.file_reader() {
            if let Some(o) = file.first_at_or_after(time_us).map_err(log_error)? {
                return Ok(o);
            }
        }
        // Not in the file: in the ring, or not published yet.
        let region = &self.session.region;
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
        loop {
            self.check_alive()?;
            self.wait_for_log()?;
            self.read_into_batch(max)?;
            if !self.batch.is_empty() {
                break;
            }
            let position = self.position;
            let region = &self.session.region;
            // Below the ring's tail (and not in the file), the reader moves to the
            // oldest offset that can be read.
            if position < region.freed_offset() {
                continue;
            }
            if !self.wait_for_publish(position, deadline)? {
                return Ok(&self.batch);
            }
        }
        self.record_batch()?;
        Ok(&self.batch)
    }

    /// Reads up to `max` messages from the position into the batch: from the ring
    /// while they are there, else from the file.
    fn read_into_batch(&mut self, max: usize) -> Result<(), ConsumerError> {
        while self.batch.len() < max {
            let region = &self.session.region;
            let o = self.position;
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
                                let n: Arc<str> = region
                                    .client_name(key.0, key.1)
                                    .unwrap_or_else(|| "unknown".into())
                                    .into();
                                self.producer_names.push((key, n.clone()));
                                n
                            }
                        };
                        self.batch.push(ReadMessage {
                            offset: o,
                            key: r.key,
                            payload: r.payload,
                            timestamp_us: r.timestamp_us,
                            producer,
                        });
                        self.position = o + 1;
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
            let taken = self.read_file(max, freed)?;
            if taken == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads records below `below` from the file into the batch, up to `max` in
    /// it; how many it read.
    fn read_file(&mut self, max: usize, below: u64) -> Result<usize, ConsumerError> {
        let position = self.position;
        let file = self.file.reader(&self.session)?;
        if file.position() != position {
            match file.seek(position) {
                Ok(()) => {}
                Err(LogError::BeforeFirst { first, .. }) => {
                    // Gone from the file too (it was started afresh): go on from
                    // the oldest offset there is.
                    self.position = first;
                    return Ok(0);
                }
                Err(e) => return Err(log_error(e)),
            }
        }
        let mut taken = 0;
        while self.batch.len() < max && self.position < below {
            let file = self.file.reader(&self.session)?;
            let Some(r) = file.next_record().map_err(log_error)? else {
                break;
            };
            let offset = r.record.offset;
            if offset >= below {
                // The ring has it: read it there (the file reader is moved back).
                let _ = file.seek(offset);
                break;
            }
            let message = self.file.message(r);
            self.batch.push(message);
            self.position = offset + 1;
            taken += 1;
        }
        if taken == 0 && self.position < below {
            // The file does not hold the offset (a gap left by a lost record): go on
            // after it.
            self.position += 1;
        }
        Ok(taken)
    }

    /// The persistence file's reader.
    fn file_reader(&mut self) -> Result<&mut LogReader, ConsumerError> {
        self.file.reader(&self.session)
    }

    /// Records the batch in the journal, a run per stretch of consecutive offsets,
    /// waiting for the broker when the journal has no free run.
    fn record_batch(&mut self) -> Result<(), ConsumerError> {
        let partition = partition_key(0, 0);
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

    /// Waits for `offset` to be published; false if the deadline passed first.
    fn wait_for_publish(
        &self,
        offset: u64,
        deadline: Option<Instant>,
    ) -> Result<bool, ConsumerError> {
        let region = &self.session.region;
        let ready = || region.is_committed(offset) || region.freed_offset() > offset;
        if event::spin_until(|| ready() || region.is_closing()) {
            return Ok(true);
        }
        let step = Instant::now() + event::MAX_SLEEP;
        let until = deadline.map_or(step, |d| d.min(step));
        let flag = &self.me().activity.sleeping_on;
        let _ = event::wait_until(
            &region.header().published,
            event_id::PUBLISHED,
            Some(flag),
            || ready() || region.is_closing(),
            || self.check_alive().is_err(),
            Some(until),
        );
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
