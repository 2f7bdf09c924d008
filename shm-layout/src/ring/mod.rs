//! The ring: producers reserve slots and commit records under the robust ring lock;
//! consumers read committed records by offset; the broker's cleaner frees records
//! every group has consumed and moves the tail.
//!
//! A record occupies consecutive slots and never wraps: when it does not fit before
//! the end of the ring, the remaining slots become a padding allocation. Offsets are
//! assigned at commit, under the lock, so they have no gaps. The commit point is the
//! Release store of `IndexEntry::stamp = offset + 1`; `next_offset` and the slot
//! descriptor follow it and are repaired by the next locker if the committer died.
//!
//! Invariants (checked, never assumed, when read back):
//! - `tail <= head <= tail + slots`, all slot positions monotonic;
//! - every allocation in `[tail, head)` starts with a descriptor whose length keeps
//!   it inside the ring without wrapping;
//! - `freed_offset <= next_offset`, and `index[o % slots].stamp == o + 1` for every
//!   offset in `[freed_offset, next_offset)`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::event::{self, event_id, WaitError};
use crate::layout::{admission, descriptor, NO_KEY};
use crate::region::Region;
use crate::sys::prefetch;
use crate::sys::LockOutcome;

/// Slot positions and offsets at or above this are corrupt (centuries of traffic
/// away), so arithmetic on them never overflows.
pub const POSITION_LIMIT: u64 = 1 << 62;

/// Why a send failed. Nothing was committed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// Key plus payload exceed the region's `max_message`.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    /// The caller's stop condition held while waiting (broker stopping, link lost).
    #[error("stopped while waiting")]
    Stopped,
    /// The deadline passed while the ring stayed full.
    #[error("timed out waiting for free space")]
    TimedOut,
    /// The broker found its region corrupt and takes no new message until it is
    /// restarted.
    #[error("the broker refuses new messages until it is restarted: it found its shared-memory region corrupt")]
    Refused,
    /// The region's ring state breaks an invariant.
    #[error("ring state is corrupt: {0}")]
    Corrupt(&'static str),
    /// A lock call failed.
    #[error("ring lock failed: {0}")]
    Lock(String),
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// The offset has not been committed (or was already reclaimed).
    #[error("offset {0} is not available in the ring")]
    NotAvailable(u64),
    /// The index entry describes a record that cannot exist.
    #[error("index entry of offset {0} is corrupt")]
    Corrupt(u64),
}

/// A committed record, borrowed in place from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Record<'r> {
    pub offset: u64,
    pub key: Option<&'r [u8]>,
    pub payload: &'r [u8],
    pub timestamp_us: u64,
    pub producer: u32,
    pub producer_generation: u32,
}

/// Who is sending: the producer's client index and generation.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    pub client: u32,
    pub generation: u32,
}

impl Sender {
    /// The broker itself, replaying records after a restart: not held by the pause,
    /// and never waiting for durability (the records are already on disk).
    pub fn is_replay(&self) -> bool {
        self.generation == REPLAY_GENERATION
    }
}

/// Generation used by the broker's replay sender.
pub const REPLAY_GENERATION: u32 = u32::MAX;

/// Held while the ring lock is held; unlocks on drop.
///
/// Records committed under one hold become visible together: each is committed by
/// its own stamp, and `next_offset` moves past them all once, when the hold ends
/// (readers poll `next_offset`, so moving it once per batch keeps its cache line
/// from bouncing between processes for every record). A holder that dies before
/// leaves stamped records past `next_offset`, which the next locker finds.
pub struct RingGuard<'r> {
    region: &'r Region,
    /// The next offset to assign in this hold, once the hold has committed any.
    next: std::cell::Cell<Option<u64>>,
}

impl RingGuard<'_> {
    fn new(region: &Region) -> RingGuard<'_> {
        RingGuard {
            region,
            next: std::cell::Cell::new(None),
        }
    }
}

impl Drop for RingGuard<'_> {
    fn drop(&mut self) {
        let h = self.region.header();
        if let Some(next) = self.next.get() {
            // Release pairs with the Acquire load in `next_offset`.
            h.producer.next_offset.store(next, Ordering::Release);
        }
        h.ring_lock.mutex.unlock();
    }
}

/// How many stamps [`Region::committed_end`] reads before it asks `next_offset`.
const SCAN_LIMIT: u64 = 64;

const LOCK_STEP: Duration = Duration::from_millis(100);
/// Tries at the ring lock before sleeping on it.
const LOCK_TRIES: u32 = 128;

impl Region {
    /// Takes the ring lock, in timed steps, checking `stop` between them. If the last
    /// holder died holding it, repairs the ring first.
    pub fn lock_ring(&self, mut stop: impl FnMut() -> bool) -> Result<RingGuard<'_>, SendError> {
        let mutex = &self.header().ring_lock.mutex;
        // A holder keeps the lock for one batch, a few microseconds: trying for about
        // that long first saves a sleep and a wake-up in the kernel. Between tries
        // the core is offered to others (the holder may be waiting for it).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = if attempt <= LOCK_TRIES {
                mutex.try_lock()
            } else {
                mutex.lock_for(LOCK_STEP)
            };
            if let Some(guard) = self.guard_for(outcome)? {
                return Ok(guard);
            }
            if attempt < LOCK_TRIES {
                if attempt % 16 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            } else if stop() || self.is_closing() {
                return Err(SendError::Stopped);
            }
        }
    }

    /// The guard for a lock attempt that got the lock (repairing the ring first if
    /// its last holder died holding it); None if the attempt timed out.
    fn guard_for(
        &self,
        outcome: std::io::Result<LockOutcome>,
    ) -> Result<Option<RingGuard<'_>>, SendError> {
        let lock_error = |e: std::io::Error| SendError::Lock(e.to_string());
        match outcome.map_err(lock_error)? {
            LockOutcome::Acquired => Ok(Some(RingGuard::new(self))),
            LockOutcome::OwnerDied => {
                let guard = RingGuard::new(self);
                self.repair_commit();
                self.header()
                    .ring_lock
                    .mutex
                    .mark_consistent()
                    .map_err(lock_error)?;
                Ok(Some(guard))
            }
            LockOutcome::TimedOut => Ok(None),
        }
    }

    /// At a graceful stop, once the region is marked closing: waits up to `limit` for
    /// a hold of the ring lock in progress to end (repairing after a holder that
    /// died). Holds taken later see the region closing and commit nothing, so when
    /// this returns true `next_offset` covers every commit there will ever be. False
    /// if a holder kept the lock past `limit` (a stopped or starved process): what it
    /// commits then is only in the region.
    pub fn wait_out_commits(&self, limit: Duration) -> bool {
        let mutex = &self.header().ring_lock.mutex;
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.guard_for(mutex.lock_for(left.min(LOCK_STEP))) {
                Ok(Some(_guard)) => return true,
                Ok(None) => {}
                Err(_) => return false,
            }
        }
    }

    /// Finishes the commits of a holder that died: records stamped past
    /// `next_offset` are committed (the stamp is the commit point), so `next_offset`
    /// moves past them and their descriptors are marked committed.
    fn repair_commit(&self) {
        let p = &self.header().producer;
        let start = p.next_offset.load(Ordering::Relaxed);
        if start >= POSITION_LIMIT {
            return;
        }
        let mut next = start;
        // At most a ring's worth of records can be waiting to be published.
        while next - start < self.geometry().slots as u64 {
            let entry = self.index_entry(next);
            // Acquire pairs with the Release stamp store in `commit`.
            if entry.stamp.load(Ordering::Acquire) != next.wrapping_add(1) {
                break;
            }
            mark_committed(self, entry.first_slot.load(Ordering::Relaxed));
            next += 1;
        }
        if next > start {
            p.next_offset.store(next, Ordering::Release);
        } else if next > 0 {
            // The holder may have died after moving `next_offset` but before marking
            // the descriptor: the last committed record must not stay "reserved",
            // or its slots would be given back as abandoned.
            let last = self.index_entry(next - 1);
            if last.stamp.load(Ordering::Acquire) == next {
                mark_committed(self, last.first_slot.load(Ordering::Relaxed));
            }
        }
    }

    /// Occupied slots and the head position, after checking `tail <= head <= tail + slots`.
    fn occupancy(&self) -> Result<(u64, u64), SendError> {
        let h = self.header();
        // Acquire pairs with the Release store of `tail` in `reclaim`.
        let tail = h.reclaim.tail.load(Ordering::Acquire);
        let head = h.producer.head.load(Ordering::Relaxed);
        if head >= POSITION_LIMIT {
            return Err(SendError::Corrupt("head beyond any possible position"));
        }
        match head.checked_sub(tail) {
            Some(used) if used <= self.geometry().slots as u64 => Ok((used, head)),
            _ => Err(SendError::Corrupt("head and tail out of order")),
        }
    }

    /// Slots a reservation of `slots` slots would consume right now, padding included.
    fn reservation_cost(&self, head: u64, slots: u64) -> u64 {
        let ring = self.geometry().slots as u64;
        let to_end = ring - self.ring_index(head);
        if slots > to_end {
            to_end + slots
        } else {
            slots
        }
    }

    /// Whether `slots` slots could be reserved now (a hint for waiters; rechecked
    /// under the lock).
    pub fn has_space_for(&self, slots: u64) -> bool {
        match self.occupancy() {
            Ok((used, head)) => {
                self.geometry().slots as u64 - used >= self.reservation_cost(head, slots)
            }
            Err(_) => true, // let the locked path report the corruption
        }
    }

    /// Reserves `slots` consecutive slots for `owner`, padding at the wrap; returns
    /// the first slot's position, or None if the ring is too full.
    fn try_reserve(
        &self,
        _lock: &RingGuard<'_>,
        owner: u32,
        slots: u64,
    ) -> Result<Option<u64>, SendError> {
        let ring = self.geometry().slots as u64;
        let (used, head) = self.occupancy()?;
        if self.header().producer.next_offset.load(Ordering::Relaxed) >= POSITION_LIMIT {
            return Err(SendError::Corrupt("next offset beyond any possible offset"));
        }
        let cost = self.reservation_cost(head, slots);
        if ring - used < cost {
            return Ok(None);
        }
        let mut first = head;
        if cost > slots {
            let pad = cost - slots;
            self.descriptor(head).store(
                descriptor::pack(descriptor::PADDING, 0, pad as u32),
                Ordering::Release,
            );
            first = head + pad;
        }
        self.descriptor(first).store(
            descriptor::pack(descriptor::RESERVED, owner, slots as u32),
            Ordering::Release,
        );
        // Descriptors are written before head moves, so an allocation in
        // [tail, head) always has a valid descriptor (the cleaner reads up to head).
        self.header()
            .producer
            .head
            .store(first + slots, Ordering::Release);
        Ok(Some(first))
    }

    /// Commits the record at `first`: assigns it the next offset, which readers see
    /// once the hold ends.
    fn commit(&self, lock: &RingGuard<'_>, first: u64, meta: &RecordMeta) -> u64 {
        let offset = lock
            .next
            .get()
            .unwrap_or_else(|| self.header().producer.next_offset.load(Ordering::Relaxed));
        let e = self.index_entry(offset);
        e.first_slot.store(first, Ordering::Relaxed);
        e.timestamp_us.store(meta.timestamp_us, Ordering::Relaxed);
        e.key_len.store(meta.key_len, Ordering::Relaxed);
        e.payload_len.store(meta.payload_len, Ordering::Relaxed);
        e.producer.store(meta.sender.client, Ordering::Relaxed);
        e.producer_generation
            .store(meta.sender.generation, Ordering::Relaxed);
        // The commit point. Release pairs with the Acquire loads in `read_record`,
        // `is_committed` and `repair_commit`.
        e.stamp.store(offset + 1, Ordering::Release);
        crate::fault::point("send-committed");
        // Reserved in this hold (or a loan checked under it), and not yet visible to
        // the cleaner: nobody else changes this descriptor, so a store will do.
        let d = self.descriptor(first);
        if let Some(committed) = as_committed(d.load(Ordering::Relaxed)) {
            d.store(committed, Ordering::Release);
        }
        lock.next.set(Some(offset + 1));
        offset
    }

    /// Sends one record: waits for space (spin, then timed sleeps), copies the key
    /// and payload into the ring, commits, and wakes consumers if any sleep.
    pub fn send(
        &self,
        sender: Sender,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp_us: u64,
        stop: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<u64, SendError> {
        let mut offset = 0;
        self.send_batch(
            sender,
            &[(key, payload)],
            timestamp_us,
            stop,
            deadline,
            |o| offset = o,
        )
        .map_err(|(_, e)| e)?;
        Ok(offset)
    }

    /// Sends records in order, committing as many as fit in the ring under one hold
    /// of the ring lock (and waking consumers once per hold). `committed` hears each
    /// offset as it is assigned. On an error, the first `usize` records were sent.
    /// Every size is checked first: one record over `max_message` sends nothing.
    pub fn send_batch(
        &self,
        sender: Sender,
        records: &[(Option<&[u8]>, &[u8])],
        timestamp_us: u64,
        mut stop: impl FnMut() -> bool,
        deadline: Option<Instant>,
        mut committed: impl FnMut(u64),
    ) -> Result<(), (usize, SendError)> {
        let max = self.geometry().max_message as u64;
        for (key, payload) in records {
            let key_len = key.map_or(0, |k| k.len() as u64);
            let size = key_len + payload.len() as u64;
            if size > max || (key.is_some() && key_len >= NO_KEY as u64) {
                return Err((0, SendError::TooLarge { size, max }));
            }
        }
        let replay = sender.is_replay();
        let mut sent = 0;
        let mut last = None;
        // Ring positions this hold has filled.
        let mut filled: Option<(u64, u64)> = None;
        while sent < records.len() {
            let mut guard = self.lock_ring(&mut stop).map_err(|e| (sent, e))?;
            // A hold commits what fits, then lets others in while it waits for space.
            while let Some(&(key, payload)) = records.get(sent) {
                // Checked under the lock: a broker salvaging this region marks it
                // closing before taking the lock, so nothing commits after its look.
                if self.is_closing() {
                    return Err((sent, SendError::Stopped));
                }
                let size = key.map_or(0, |k| k.len() as u64) + payload.len() as u64;
                let slots = self.geometry().slots_for(size);
                let admission = self.admission();
                if admission == admission::REFUSING {
                    return Err((sent, SendError::Refused));
                }
                let first = if !replay && admission != admission::OPEN {
                    None
                } else {
                    self.try_reserve(&guard, sender.client, slots)
                        .map_err(|e| (sent, e))?
                };
                let Some(first) = first else {
                    drop(guard);
                    if sent > 0 {
                        event::notify(&self.header().published);
                    }
                    if let Some((from, to)) = filled.take() {
                        self.nudge_cleaner(from, to);
                    }
                    self.wait_for_space(slots, sender.client, replay, &mut stop, deadline)
                        .map_err(|e| (sent, e))?;
                    guard = self.lock_ring(&mut stop).map_err(|e| (sent, e))?;
                    continue;
                };
                crate::fault::point("send-reserved");
                self.write_record(first, key, payload)
                    .map_err(|e| (sent, e))?;
                let meta = RecordMeta {
                    sender,
                    timestamp_us,
                    key_len: key.map_or(NO_KEY, |k| k.len() as u32),
                    payload_len: payload.len() as u32,
                };
                let offset = self.commit(&guard, first, &meta);
                committed(offset);
                last = Some(offset);
                sent += 1;
                filled = filled.map_or(Some((first, first + slots)), |(from, _)| {
                    Some((from, first + slots))
                });
            }
            drop(guard);
            event::notify(&self.header().published);
            if let Some((from, to)) = filled.take() {
                self.nudge_cleaner(from, to);
            }
        }
        if let Some(offset) = last {
            if !replay && self.header().durable.fsync.load(Ordering::Relaxed) != 0 {
                self.wait_until_persisted(offset, sender.client, &mut stop)
                    .map_err(|e| (sent, e))?;
            }
        }
        Ok(())
    }

    /// Copies a key and payload into the slots reserved at `first`.
    fn write_record(
        &self,
        first: u64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let key_len = key.map_or(0, |k| k.len());
        let dst = self
            .slot_bytes(first, (key_len + payload.len()) as u64)
            .ok_or(SendError::Corrupt("reservation outside the payload area"))?;
        // SAFETY: the slots from `first` were reserved for this producer under the
        // lock and nobody else writes them until they are committed and freed; `dst`
        // has room for key + payload (checked by slot_bytes); sources are valid slices.
        unsafe {
            if let Some(k) = key {
                std::ptr::copy_nonoverlapping(k.as_ptr(), dst, k.len());
            }
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(key_len), payload.len());
        }
        Ok(())
    }

    /// Zero-copy send: reserves room for a record of `len` payload bytes (after
    /// `key`) and lends it out; write the payload in place, then
    /// [`Loan::commit`]. A loan dropped without commit is released. While a loan is
    /// out, the ring cannot reclaim past it, so keep it short.
    pub fn loan(
        &self,
        sender: Sender,
        key: Option<&[u8]>,
        len: usize,
        mut stop: impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<Loan<'_>, SendError> {
        let key_len = key.map_or(0, |k| k.len());
        let size = (key_len + len) as u64;
        let max = self.geometry().max_message as u64;
        if size > max || key_len as u64 >= NO_KEY as u64 {
            return Err(SendError::TooLarge { size, max });
        }
        let slots = self.geometry().slots_for(size);
        loop {
            let guard = self.lock_ring(&mut stop)?;
            if self.is_closing() {
                return Err(SendError::Stopped);
            }
            if self.is_refusing() {
                return Err(SendError::Refused);
            }
            if !self.is_paused() {
                if let Some(first) = self.try_reserve(&guard, sender.client, slots)? {
                    drop(guard);
                    self.write_record(first, key, &[])?;
                    let payload = self
                        .slot_bytes(first, size)
                        .ok_or(SendError::Corrupt("reservation outside the payload area"))?;
                    return Ok(Loan {
                        region: self,
                        sender,
                        first,
                        key_len: key.map_or(NO_KEY, |k| k.len() as u32),
                        slots,
                        // SAFETY: `payload` points `key_len` bytes into a reservation
                        // of at least `size` bytes (checked by slot_bytes).
                        payload: unsafe { payload.add(key_len) },
                        len,
                        open: true,
                    });
                }
            }
            drop(guard);
            self.wait_for_space(slots, sender.client, false, &mut stop, deadline)?;
        }
    }

    /// Whether producers may send now, one of [`admission`].
    fn admission(&self) -> u32 {
        self.header().identity.paused.load(Ordering::Acquire)
    }

    /// Whether producers are held (while the broker replays records) or refused.
    pub fn is_paused(&self) -> bool {
        self.admission() != admission::OPEN
    }

    /// Whether the broker is publishing records read back from its file again.
    pub fn is_replaying(&self) -> bool {
        self.admission() == admission::REPLAYING
    }

    /// Whether the broker refuses new messages (it found the region corrupt).
    pub fn is_refusing(&self) -> bool {
        self.admission() == admission::REFUSING
    }

    /// Broker only: producers wait while it replays records after a restart.
    pub fn hold_for_replay(&self) {
        if let Some(copy) = self.identity_copy() {
            copy.admission
                .store(admission::REPLAYING, Ordering::Release);
        }
        self.header()
            .identity
            .paused
            .store(admission::REPLAYING, Ordering::Release);
    }

    /// Broker only: the replay is over; producers may send (unless refused).
    pub fn end_replay(&self) {
        if let Some(copy) = self.identity_copy() {
            let _ = copy.admission.compare_exchange(
                admission::REPLAYING,
                admission::OPEN,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        let _ = self.header().identity.paused.compare_exchange(
            admission::REPLAYING,
            admission::OPEN,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        event::wake(&self.header().space);
    }

    /// Broker only: every send fails from now on, until a restart, and waiting
    /// producers are woken to hear it. For a region found corrupt, where a new
    /// commit could overwrite records not yet persisted.
    pub fn refuse_new_work(&self) {
        if let Some(copy) = self.identity_copy() {
            copy.admission.store(admission::REFUSING, Ordering::Release);
        }
        self.header()
            .identity
            .paused
            .store(admission::REFUSING, Ordering::Release);
        event::wake(&self.header().space);
    }

    /// Every offset below this has been persisted by the broker.
    pub fn persisted_offset(&self) -> u64 {
        self.header().durable.persisted.load(Ordering::Acquire)
    }

    /// Under `--fsync`: waits until `offset` is on disk (group commit: the writer
    /// syncs many records at once and wakes every waiter).
    fn wait_until_persisted(
        &self,
        offset: u64,
        client: u32,
        stop: &mut impl FnMut() -> bool,
    ) -> Result<(), SendError> {
        let h = self.header();
        event::notify(&h.cleaner);
        let flag = self.client(client).map(|c| &c.activity.sleeping_on);
        event::wait_until(
            &h.persisted,
            event_id::PERSISTED,
            flag,
            || self.persisted_offset() > offset || self.is_closing(),
            &mut *stop,
            None,
        )
        .map_err(|_| SendError::Stopped)?;
        if self.persisted_offset() > offset {
            Ok(())
        } else {
            Err(SendError::Stopped)
        }
    }

    /// The broker's persister and cleaner work in passes, and sleep between them. A
    /// producer that has filled another quarter of the ring asks for a pass, so that
    /// slots come back while the ring still has room rather than once it is full.
    /// One wake-up per quarter, and only if they sleep.
    fn nudge_cleaner(&self, from: u64, to: u64) {
        let step = (self.geometry().slots as u64 / 4).max(1);
        // Whether they lie in different quarters; without a division for the usual
        // power-of-two ring (this runs for every send).
        let crossed = if step.is_power_of_two() {
            (from ^ to) >= step
        } else {
            from / step != to / step
        };
        if crossed {
            event::notify(&self.header().cleaner);
        }
    }

    fn wait_for_space(
        &self,
        slots: u64,
        client: u32,
        replay: bool,
        stop: &mut impl FnMut() -> bool,
        deadline: Option<Instant>,
    ) -> Result<(), SendError> {
        let h = self.header();
        // The cleaner frees lazily; a producer short of space asks it to run now.
        event::notify(&h.cleaner);
        let flag = self.client(client).map(|c| &c.activity.sleeping_on);
        event::wait_until(
            &h.space,
            event_id::SPACE,
            flag,
            || {
                (self.has_space_for(slots) && (replay || !self.is_paused()))
                    || self.is_closing()
                    || self.is_refusing()
            },
            &mut *stop,
            deadline,
        )
        .map_err(|e| match e {
            WaitError::Stopped => SendError::Stopped,
            WaitError::TimedOut => SendError::TimedOut,
        })?;
        if self.is_closing() {
            return Err(SendError::Stopped);
        }
        if self.is_refusing() {
            return Err(SendError::Refused);
        }
        Ok(())
    }

    /// Whether `offset` has been committed and is still in the ring.
    pub fn is_committed(&self, offset: u64) -> bool {
        // Acquire pairs with the Release stamp store in `commit`.
        self.index_entry(offset).stamp.load(Ordering::Acquire) == offset.wrapping_add(1)
    }

    /// One past the committed offsets from `from`, looking at most `limit` ahead:
    /// what a reader may hand out. A record is committed at its stamp, before
    /// `next_offset` moves past its hold, and a reader that finds the stamp has the
    /// record without touching the line producers write for every reservation.
    /// Without a stamp at `from`, `next_offset` decides.
    pub fn committed_end(&self, from: u64, limit: u64) -> u64 {
        if !self.is_committed(from) {
            return self.next_offset();
        }
        let scan = limit.clamp(1, SCAN_LIMIT);
        let end = self.stamped_end(from + 1, from + scan);
        if end - from == scan && scan < limit {
            // More may be committed than a scan should look at.
            end.max(self.next_offset())
        } else {
            end
        }
    }

    /// The first offset from `from` (a committed position, such as `next_offset`)
    /// up to `upto` whose record is not stamped: records a hold in progress has
    /// committed count, though `next_offset` has not moved past them yet. Looks at
    /// most a ring's worth ahead.
    pub fn stamped_end(&self, from: u64, upto: u64) -> u64 {
        let upto = upto.min(from.saturating_add(self.geometry().slots as u64));
        let mut end = from;
        while end < upto && self.is_committed(end) {
            end += 1;
        }
        end
    }

    /// The next offset a commit will take: every offset below it is committed.
    pub fn next_offset(&self) -> u64 {
        self.header().producer.next_offset.load(Ordering::Acquire)
    }

    /// Reads the committed record at `offset`, validating its index entry.
    ///
    /// The returned slices point into the ring. They stay valid while the record is
    /// held by a group (not yet acknowledged); the caller must not keep them longer.
    pub fn read_record(&self, offset: u64) -> Result<Record<'_>, ReadError> {
        let e = self.index_entry(offset);
        // Acquire pairs with the Release stamp store in `commit`.
        if e.stamp.load(Ordering::Acquire) != offset.wrapping_add(1) {
            return Err(ReadError::NotAvailable(offset));
        }
        let first = e.first_slot.load(Ordering::Relaxed);
        let key_len = e.key_len.load(Ordering::Relaxed);
        let payload_len = e.payload_len.load(Ordering::Relaxed) as u64;
        let timestamp_us = e.timestamp_us.load(Ordering::Relaxed);
        let producer = e.producer.load(Ordering::Relaxed);
        let producer_generation = e.producer_generation.load(Ordering::Relaxed);
        let stored_key = if key_len == NO_KEY { 0 } else { key_len as u64 };
        let size = stored_key + payload_len;
        if size > self.geometry().max_message as u64 {
            return Err(ReadError::Corrupt(offset));
        }
        let ptr = self
            .slot_bytes(first, size)
            .ok_or(ReadError::Corrupt(offset))?;
        // SAFETY: slot_bytes checked that `size` bytes from `ptr` lie inside the
        // payload area. The record is committed and pinned by the caller's group until
        // acknowledged, so no process writes these bytes while the borrow lives.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, size as usize) };
        let (key, payload) = bytes.split_at(stored_key as usize);
        Ok(Record {
            offset,
            key: (key_len != NO_KEY).then_some(key),
            payload,
            timestamp_us,
            producer,
            producer_generation,
        })
    }

    /// Starts fetching, into this core's cache, the lines the next reservation will
    /// write (its first slot and its descriptor) and the tail it checks: for a
    /// producer that sends now and then, so that its next send does not wait for
    /// lines gone cold meanwhile. A hint only: nothing is read or checked.
    pub fn prefetch_next_reservation(&self) {
        let h = self.header();
        let head = h.producer.head.load(Ordering::Relaxed);
        prefetch(self.slot_address(head));
        prefetch(std::ptr::from_ref(self.descriptor(head)).cast());
        prefetch(std::ptr::from_ref(&h.reclaim).cast());
    }

    /// Starts fetching the index entry of `offset` into cache: for a reader that
    /// gets to it in a few records (the entry was last written on another core).
    /// A hint only: nothing is read.
    pub fn prefetch_entry(&self, offset: u64) {
        prefetch(std::ptr::from_ref(self.index_entry(offset)).cast());
    }

    /// Starts fetching the start of the payload of `offset` into cache, from its
    /// index entry (best prefetched a few records earlier). A hint only: the
    /// position read is not checked, and a wrong one costs a wasted fetch.
    pub fn prefetch_payload(&self, offset: u64) {
        let first = self.index_entry(offset).first_slot.load(Ordering::Relaxed);
        prefetch(self.slot_address(first));
    }

    /// The producer (client entry, generation) of the committed record at `offset`:
    /// what the consumption log needs, without the bounds checks of a payload.
    pub fn record_producer(&self, offset: u64) -> Option<(u32, u32)> {
        let e = self.index_entry(offset);
        // Acquire pairs with the Release stamp store in `commit`.
        if e.stamp.load(Ordering::Acquire) != offset.wrapping_add(1) {
            return None;
        }
        Some((
            e.producer.load(Ordering::Relaxed),
            e.producer_generation.load(Ordering::Relaxed),
        ))
    }

    /// Broker only, before any client connects: the next commit takes `next_offset`,
    /// and every offset below `persisted` counts as already persisted.
    pub fn start_at(&self, next_offset: u64, persisted: u64) {
        let h = self.header();
        h.producer.next_offset.store(next_offset, Ordering::Release);
        h.reclaim.freed_offset.store(next_offset, Ordering::Release);
        h.durable.persisted.store(persisted, Ordering::Release);
    }

    /// Slots in use (`head - tail`), for status displays.
    pub fn used_slots(&self) -> u64 {
        self.occupancy().map(|(used, _)| used).unwrap_or(0)
    }

    /// Broker only: frees every committed offset below `upto` and advances the tail
    /// over freed allocations; wakes producers waiting for space. Returns how many
    /// records were freed.
    pub fn reclaim(&self, upto: u64) -> Result<u64, ReclaimError> {
        self.reclaim_skipping(upto, &[])
    }

    /// As [`Region::reclaim`], passing over the offsets in `dropped` (ascending):
    /// offsets a [`Region::repair_ring`] found unreadable, whose slots it already
    /// freed. A record's descriptor must describe the allocation its index entry
    /// implies, so that a scribbled length can never free slots of live records;
    /// on a failure, what was freed before it stays freed.
    pub fn reclaim_skipping(&self, upto: u64, dropped: &[u64]) -> Result<u64, ReclaimError> {
        let h = self.header();
        let freed = h.reclaim.freed_offset.load(Ordering::Relaxed);
        let next = self.next_offset();
        if freed > next {
            return Err(ReclaimError::Corrupt(freed));
        }
        let upto = upto.clamp(freed, next);
        let mut next_dropped = dropped.partition_point(|&d| d < freed);
        let mut o = freed;
        let mut released = 0;
        let mut failure = None;
        while o < upto {
            if dropped.get(next_dropped) == Some(&o) {
                next_dropped += 1;
                o += 1;
                continue;
            }
            let e = self.index_entry(o);
            if e.stamp.load(Ordering::Acquire) != o + 1 {
                failure = Some(ReclaimError::Corrupt(o));
                break;
            }
            let first = e.first_slot.load(Ordering::Relaxed);
            let slots = self.geometry().slots_for(stored_size(e));
            let d = self.descriptor(first);
            let word = d.load(Ordering::Relaxed);
            let describes_it = matches!(
                descriptor::kind(word),
                descriptor::COMMITTED | descriptor::RESERVED
            ) && descriptor::len(word) as u64 == slots;
            if !describes_it {
                failure = Some(ReclaimError::BadDescriptor(first));
                break;
            }
            d.store(
                descriptor::pack(descriptor::FREE, 0, slots as u32),
                Ordering::Release,
            );
            released += 1;
            o += 1;
        }
        // Release pairs with the Acquire load in a later `reclaim` or status read.
        h.reclaim.freed_offset.store(o, Ordering::Release);
        if let Some(e) = failure {
            return Err(e);
        }
        let moved = self.advance_tail()?;
        if moved > 0 {
            event::notify(&h.space);
        }
        Ok(released)
    }

    /// Broker only, under the ring lock and with [`Region::reclaim`] kept from
    /// running: rebuilds the slot descriptors between `tail` and `head` from what
    /// the ring can vouch for, after a reclaim found state that cannot be valid.
    ///
    /// The live records are the offsets in `[freed_offset, next_offset)` whose index
    /// entries are stamped and describe an allocation inside `[tail, head)` that
    /// fits without wrapping or overlapping another; their descriptors are made
    /// to say so. Everything else between tail and head is freed, except a
    /// reservation whose owner `holds_reservation` vouches for (a loan in
    /// progress). Offsets in that range whose entries describe no such record are
    /// returned as unreadable: their records cannot be read from the ring, and
    /// [`Region::reclaim_skipping`] must pass over them. The cursors themselves
    /// are never guessed at: if they are out of order nothing is changed. The work
    /// is a ring's worth of entries and descriptors.
    pub fn repair_ring(
        &self,
        _lock: &RingGuard<'_>,
        holds_reservation: impl Fn(u32) -> bool,
    ) -> Result<RingRepair, RepairError> {
        let h = self.header();
        let ring = self.geometry().slots as u64;
        let head = h.producer.head.load(Ordering::Relaxed);
        let tail = h.reclaim.tail.load(Ordering::Acquire);
        let next = h.producer.next_offset.load(Ordering::Relaxed);
        let freed = h.reclaim.freed_offset.load(Ordering::Acquire);
        if head >= POSITION_LIMIT || next >= POSITION_LIMIT {
            return Err(RepairError::Cursors(
                "a cursor beyond any possible position",
            ));
        }
        if tail > head || head - tail > ring {
            return Err(RepairError::Cursors("head and tail out of order"));
        }
        // Each live record holds a slot, and each dropped one held one before the
        // repair that dropped it: more than two rings' worth cannot happen.
        if freed > next || next - freed > 2 * ring {
            return Err(RepairError::Cursors("freed and next offsets out of order"));
        }
        let mut repair = RingRepair::default();
        // An offset a ring or more below `next` shares its index entry with a
        // later one: only a dropped offset can be that old.
        let shared_from = next.saturating_sub(ring).max(freed);
        repair.unreadable.extend(freed..shared_from);
        let mut records: Vec<LiveRecord> = Vec::new();
        for offset in shared_from..next {
            match self.live_record(offset, tail, head) {
                Some(r) => records.push(r),
                None => repair.unreadable.push(offset),
            }
        }
        records.sort_unstable_by_key(|r| r.first);
        let mut live = Vec::with_capacity(records.len());
        let mut covered = tail;
        for r in records {
            if r.first >= covered {
                covered = r.first + r.slots;
                live.push(r);
            } else {
                repair.unreadable.push(r.offset);
            }
        }
        repair.unreadable.sort_unstable();
        let mut pos = tail;
        for record in live.iter().map(Some).chain(std::iter::once(None)) {
            let gap_end = record.map_or(head, |r| r.first);
            while pos < gap_end {
                let d = self.descriptor(pos);
                let word = d.load(Ordering::Acquire);
                let len = descriptor::len(word) as u64;
                let to_ring_end = ring - self.ring_index(pos);
                let fits = len >= 1 && len <= gap_end - pos && len <= to_ring_end;
                let keep = fits
                    && match descriptor::kind(word) {
                        descriptor::FREE | descriptor::PADDING => true,
                        descriptor::RESERVED => holds_reservation(descriptor::owner(word)),
                        _ => false,
                    };
                if keep {
                    pos += len;
                    continue;
                }
                // Allocations never wrap: a free run stops at the end of the ring.
                let len = (gap_end - pos).min(to_ring_end);
                d.store(
                    descriptor::pack(descriptor::FREE, 0, len as u32),
                    Ordering::Release,
                );
                repair.rewritten.push(Rewritten {
                    position: pos,
                    found: word,
                    described_a_record: false,
                });
                pos += len;
            }
            let Some(r) = record else { break };
            let d = self.descriptor(r.first);
            let word = d.load(Ordering::Acquire);
            let describes_it = matches!(
                descriptor::kind(word),
                descriptor::COMMITTED | descriptor::RESERVED
            ) && descriptor::len(word) as u64 == r.slots;
            if !describes_it {
                d.store(
                    descriptor::pack(descriptor::COMMITTED, r.producer, r.slots as u32),
                    Ordering::Release,
                );
                repair.rewritten.push(Rewritten {
                    position: r.first,
                    found: word,
                    described_a_record: true,
                });
            }
            pos = r.first + r.slots;
        }
        Ok(repair)
    }

    /// The allocation the index entry of `offset` describes, if it is stamped for
    /// `offset` and fits inside `[tail, head)` without wrapping.
    fn live_record(&self, offset: u64, tail: u64, head: u64) -> Option<LiveRecord> {
        let e = self.index_entry(offset);
        // Acquire pairs with the Release stamp store in `commit`.
        if e.stamp.load(Ordering::Acquire) != offset + 1 {
            return None;
        }
        let size = stored_size(e);
        if size > self.geometry().max_message as u64 {
            return None;
        }
        let slots = self.geometry().slots_for(size);
        let first = e.first_slot.load(Ordering::Relaxed);
        let inside = first >= tail
            && first < head
            && slots <= head - first
            && slots <= self.geometry().slots as u64 - self.ring_index(first);
        inside.then(|| LiveRecord {
            offset,
            first,
            slots,
            producer: e.producer.load(Ordering::Relaxed),
        })
    }

    /// Moves the tail over free and padding allocations; returns slots released.
    fn advance_tail(&self) -> Result<u64, ReclaimError> {
        let h = self.header();
        let ring = self.geometry().slots as u64;
        let start = h.reclaim.tail.load(Ordering::Relaxed);
        let head = h.producer.head.load(Ordering::Acquire);
        if head < start || head - start > ring {
            return Err(ReclaimError::Corrupt(start));
        }
        let mut tail = start;
        while tail < head {
            let d = self.descriptor(tail).load(Ordering::Acquire);
            let len = descriptor::len(d) as u64;
            let fits = len >= 1 && len <= ring - tail % ring && len <= head - tail;
            if !fits {
                return Err(ReclaimError::BadDescriptor(tail));
            }
            match descriptor::kind(d) {
                descriptor::FREE | descriptor::PADDING => tail += len,
                _ => break,
            }
        }
        // Release pairs with the Acquire load of `tail` in `occupancy`.
        h.reclaim.tail.store(tail, Ordering::Release);
        Ok(tail - start)
    }

    /// Broker only, under the ring lock: frees the reservations of a producer that
    /// is gone without committing them. Returns how many it freed.
    pub fn abandon_reservations(&self, lock: &RingGuard<'_>, owner: u32) -> u64 {
        let _ = lock;
        let h = self.header();
        let ring = self.geometry().slots as u64;
        let head = h.producer.head.load(Ordering::Relaxed);
        let mut pos = h.reclaim.tail.load(Ordering::Acquire);
        if head < pos || head - pos > ring {
            return 0;
        }
        // Allocations that committed records point at are never abandoned, whatever
        // their descriptor says (a committer may have died before marking it).
        let freed_offset = h.reclaim.freed_offset.load(Ordering::Acquire);
        let next = h.producer.next_offset.load(Ordering::Acquire);
        let committed: std::collections::HashSet<u64> = (freed_offset
            ..next.min(freed_offset + ring))
            .filter_map(|o| {
                let e = self.index_entry(o);
                (e.stamp.load(Ordering::Acquire) == o + 1)
                    .then(|| e.first_slot.load(Ordering::Relaxed))
            })
            .collect();
        let mut freed = 0;
        while pos < head {
            let d = self.descriptor(pos);
            let v = d.load(Ordering::Acquire);
            let len = descriptor::len(v) as u64;
            if len == 0 || len > ring - pos % ring || len > head - pos {
                break;
            }
            if descriptor::kind(v) == descriptor::RESERVED
                && descriptor::owner(v) == owner
                && !committed.contains(&pos)
            {
                d.store(
                    descriptor::pack(descriptor::FREE, 0, len as u32),
                    Ordering::Release,
                );
                freed += 1;
            }
            pos += len;
        }
        freed
    }
}

/// Reserved slots lent out for a zero-copy send: see [`Region::loan`].
pub struct Loan<'r> {
    region: &'r Region,
    sender: Sender,
    first: u64,
    key_len: u32,
    slots: u64,
    payload: *mut u8,
    len: usize,
    open: bool,
}

impl Loan<'_> {
    /// The payload bytes, in place in the ring.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        // SAFETY: `payload..payload + len` lies inside slots reserved for this loan
        // (checked when it was made); nobody else writes them until commit, and the
        // `&mut self` borrow makes this the only slice into them.
        unsafe { std::slice::from_raw_parts_mut(self.payload, self.len) }
    }

    /// Publishes the record; returns its offset.
    pub fn commit(
        mut self,
        timestamp_us: u64,
        mut stop: impl FnMut() -> bool,
    ) -> Result<u64, SendError> {
        let region = self.region;
        let guard = region.lock_ring(&mut stop)?;
        if region.is_closing() {
            return Err(SendError::Stopped);
        }
        // Given back meanwhile (our lease ended and the broker released it)?
        let d = region.descriptor(self.first).load(Ordering::Acquire);
        if descriptor::kind(d) != descriptor::RESERVED || descriptor::owner(d) != self.sender.client
        {
            self.open = false;
            return Err(SendError::Stopped);
        }
        let meta = RecordMeta {
            sender: self.sender,
            timestamp_us,
            key_len: self.key_len,
            payload_len: self.len as u32,
        };
        let offset = region.commit(&guard, self.first, &meta);
        self.open = false;
        drop(guard);
        event::notify(&region.header().published);
        region.nudge_cleaner(self.first, self.first + self.slots);
        if region.header().durable.fsync.load(Ordering::Relaxed) != 0 {
            region.wait_until_persisted(offset, self.sender.client, &mut stop)?;
        }
        Ok(offset)
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // Not committed: give the slots back (the cleaner moves the tail over them).
        let mut tries = 0;
        if let Ok(guard) = self.region.lock_ring(|| {
            tries += 1;
            tries > 10
        }) {
            let d = self.region.descriptor(self.first);
            let v = d.load(Ordering::Acquire);
            if descriptor::kind(v) == descriptor::RESERVED
                && descriptor::owner(v) == self.sender.client
            {
                d.store(
                    descriptor::pack(descriptor::FREE, 0, descriptor::len(v)),
                    Ordering::Release,
                );
            }
            drop(guard);
        }
    }
}

/// Marks the allocation at `first` committed, unless the cleaner already freed it
/// (the compare-exchange keeps a late marker from resurrecting a freed allocation).
fn mark_committed(region: &Region, first: u64) {
    let d = region.descriptor(first);
    let v = d.load(Ordering::Relaxed);
    if let Some(committed) = as_committed(v) {
        let _ = d.compare_exchange(v, committed, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// The committed form of descriptor word `v`, if `v` is a reservation.
fn as_committed(v: u64) -> Option<u64> {
    (descriptor::kind(v) == descriptor::RESERVED).then(|| {
        descriptor::pack(
            descriptor::COMMITTED,
            descriptor::owner(v),
            descriptor::len(v),
        )
    })
}

struct RecordMeta {
    sender: Sender,
    timestamp_us: u64,
    key_len: u32,
    payload_len: u32,
}

/// Why the cleaner refused to reclaim.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReclaimError {
    #[error("index entry of offset {0} is not stamped as committed")]
    Corrupt(u64),
    #[error("slot descriptor at position {0} is invalid")]
    BadDescriptor(u64),
}

/// Key plus payload bytes of the record an index entry describes.
fn stored_size(e: &crate::layout::IndexEntry) -> u64 {
    let key_len = e.key_len.load(Ordering::Relaxed);
    let stored_key = if key_len == NO_KEY { 0 } else { key_len as u64 };
    stored_key + e.payload_len.load(Ordering::Relaxed) as u64
}

/// A record [`Region::repair_ring`] found intact.
#[derive(Debug, Clone, Copy)]
struct LiveRecord {
    offset: u64,
    first: u64,
    slots: u64,
    producer: u32,
}

/// What [`Region::repair_ring`] found and changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RingRepair {
    /// Offsets in `[freed_offset, next_offset)`, ascending, whose index entries
    /// describe no record the ring holds: they cannot be read from the ring.
    pub unreadable: Vec<u64>,
    /// Descriptors rewritten, in ring order.
    pub rewritten: Vec<Rewritten>,
}

/// One slot descriptor [`Region::repair_ring`] rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Slot position of the descriptor.
    pub position: u64,
    /// The word found there.
    pub found: u64,
    /// Whether it now describes a live record (else it now frees its slots).
    pub described_a_record: bool,
}

impl Rewritten {
    /// Whether the word found could not describe any allocation there: an
    /// unknown kind, or a length that is zero or runs past the end of the ring.
    pub fn was_impossible(&self, slots: u32) -> bool {
        let len = descriptor::len(self.found) as u64;
        let to_ring_end = slots as u64 - self.position % slots as u64;
        descriptor::kind(self.found) > descriptor::PADDING || len == 0 || len > to_ring_end
    }
}

/// Why [`Region::repair_ring`] changed nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepairError {
    /// The ring's cursors contradict each other; nothing can be derived from them.
    #[error("the ring's cursors are inconsistent ({0})")]
    Cursors(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};
    use crate::Geometry;

    const ME: Sender = Sender {
        client: 1,
        generation: 1,
    };

    fn send(r: &Region, payload: &[u8]) -> Result<u64, SendError> {
        r.send(ME, None, payload, 7, || false, Some(Instant::now()))
    }

    #[test]
    fn offsets_are_dense_and_records_read_back_exactly() {
        let t = test_region("dense", test_geometry());
        let r = &t.0;
        for i in 0..5u64 {
            let payload = vec![i as u8; (i * 50) as usize];
            assert_eq!(send(r, &payload).unwrap(), i);
        }
        let o = r.send(ME, Some(b"k\0"), b"v", 9, || false, None).unwrap();
        assert_eq!(o, 5);
        for i in 0..5u64 {
            let rec = r.read_record(i).unwrap();
            assert_eq!(rec.payload, vec![i as u8; (i * 50) as usize].as_slice());
            assert_eq!(rec.key, None);
        }
        let rec = r.read_record(5).unwrap();
        assert_eq!(rec.key, Some(&b"k\0"[..]));
        assert_eq!(rec.payload, b"v");
        assert_eq!(rec.timestamp_us, 9);
        assert_eq!(r.read_record(6).unwrap_err(), ReadError::NotAvailable(6));
    }

    #[test]
    fn a_full_ring_refuses_until_reclaimed_and_wraps_with_padding() {
        let t = test_region("full", test_geometry());
        let r = &t.0;
        // 16 slots of 64 bytes; records of 3 slots: 5 fit, the 6th needs padding room.
        let rec = vec![0xAB; 150];
        for i in 0..5 {
            assert_eq!(send(r, &rec).unwrap(), i);
        }
        assert_eq!(send(r, &rec), Err(SendError::TimedOut));
        assert_eq!(r.reclaim(2).unwrap(), 2);
        assert_eq!(r.used_slots(), 9);
        // head is at 15: one slot to the end, so padding 1 + 3 slots.
        assert_eq!(send(r, &rec).unwrap(), 5);
        assert_eq!(r.used_slots(), 13);
        assert_eq!(r.read_record(5).unwrap().payload, rec.as_slice());
        r.reclaim(6).unwrap();
        assert_eq!(r.used_slots(), 0);
    }

    #[test]
    fn rings_of_any_size_wrap_for_laps_and_read_back_exactly() {
        // Power-of-two counts and sizes take masks and shifts, others divisions.
        for (slots, slot_size) in [(16, 64), (13, 48), (16, 48), (13, 64)] {
            let geometry = Geometry {
                slots,
                slot_size,
                max_message: 3 * slot_size,
                ..test_geometry()
            };
            let t = test_region(&format!("laps-{slots}-{slot_size}"), geometry);
            let r = &t.0;
            let mut sizes = (0..200u64).map(|i| (i * 37 % (3 * slot_size as u64 + 1)) as usize);
            let mut next = 0u64;
            for lap in 0..20u64 {
                let batch: Vec<Vec<u8>> = sizes
                    .by_ref()
                    .take(3)
                    .enumerate()
                    .map(|(j, n)| vec![(lap * 3 + j as u64) as u8; n])
                    .collect();
                for payload in &batch {
                    assert_eq!(send(r, payload).unwrap(), next, "{slots}x{slot_size}");
                    next += 1;
                }
                for (j, payload) in batch.iter().enumerate() {
                    let o = next - 3 + j as u64;
                    assert_eq!(r.read_record(o).unwrap().payload, payload.as_slice());
                }
                r.reclaim(next).unwrap();
                assert_eq!(r.used_slots(), 0);
            }
        }
    }

    #[test]
    fn oversized_messages_are_refused_and_nothing_is_written() {
        let t = test_region("big", test_geometry());
        let r = &t.0;
        let before = r.next_offset();
        assert!(matches!(
            send(r, &[0; 513]),
            Err(SendError::TooLarge {
                size: 513,
                max: 512
            })
        ));
        assert!(matches!(
            r.send(ME, Some(&[1; 10]), &[0; 503], 0, || false, None),
            Err(SendError::TooLarge { .. })
        ));
        assert_eq!(r.next_offset(), before);
        assert_eq!(r.used_slots(), 0);
    }

    #[test]
    fn a_committed_record_whose_marker_was_lost_is_repaired() {
        let t = test_region("repair", test_geometry());
        let r = &t.0;
        send(r, b"x").unwrap();
        // Simulate a committer that died right after its commit point.
        let h = r.header();
        h.producer.next_offset.store(0, Ordering::Relaxed);
        r.repair_commit();
        assert_eq!(r.next_offset(), 1);
        assert_eq!(send(r, b"y").unwrap(), 1);
    }

    /// Sends "a", "b" and "c" in one hold; `committed` hears each offset as it is
    /// assigned, inside the hold.
    fn send_abc_in_one_hold(r: &Region, committed: impl FnMut(u64)) {
        let abc: [(Option<&[u8]>, &[u8]); 3] = [(None, b"a"), (None, b"b"), (None, b"c")];
        r.send_batch(ME, &abc, 0, || false, None, committed)
            .unwrap();
    }

    #[test]
    fn records_of_one_hold_become_visible_together_and_survive_a_holder_that_dies() {
        let t = test_region("hold", test_geometry());
        let r = &t.0;
        let mut seen = Vec::new();
        send_abc_in_one_hold(r, |o| seen.push((o, r.next_offset())));
        assert_eq!(
            seen,
            [(0, 0), (1, 0), (2, 0)],
            "published when the hold ends"
        );
        assert_eq!(r.next_offset(), 3);
        // As if the holder had died after stamping all three, before publishing
        // them, and before marking the last two.
        r.header().producer.next_offset.store(0, Ordering::Relaxed);
        for o in 1..3 {
            let first = r.index_entry(o).first_slot.load(Ordering::Relaxed);
            r.descriptor(first).store(
                descriptor::pack(descriptor::RESERVED, ME.client, 1),
                Ordering::Relaxed,
            );
        }
        r.repair_commit();
        assert_eq!(
            r.next_offset(),
            3,
            "the next locker publishes every stamped record"
        );
        for (o, payload) in [b"a", b"b", b"c"].iter().enumerate() {
            let first = r.index_entry(o as u64).first_slot.load(Ordering::Relaxed);
            let d = r.descriptor(first).load(Ordering::Relaxed);
            assert_eq!(descriptor::kind(d), descriptor::COMMITTED);
            assert_eq!(r.read_record(o as u64).unwrap().payload, payload.as_slice());
        }
        assert_eq!(send(r, b"d").unwrap(), 3, "offsets go on without a repeat");
    }

    #[test]
    fn a_producer_asks_for_a_pass_each_time_its_commits_cross_a_quarter_of_the_ring() {
        // Quarters of 4 slots (a power of two, found without a division) and of 5.
        for slots in [16u32, 20] {
            let t = test_region(
                "nudge",
                Geometry {
                    slots,
                    ..test_geometry()
                },
            );
            let r = &t.0;
            let ev = &r.header().cleaner;
            // As if the cleaner slept: a nudge then bumps the event.
            ev.sleepers.store(1, Ordering::Relaxed);
            let step = slots as u64 / 4;
            for from in 0..3 * slots as u64 {
                for to in from + 1..from + slots as u64 {
                    let before = ev.seq.load(Ordering::Relaxed);
                    r.nudge_cleaner(from, to);
                    let nudged = ev.seq.load(Ordering::Relaxed) != before;
                    assert_eq!(
                        nudged,
                        from / step != to / step,
                        "{slots} slots: {from}..{to}"
                    );
                }
            }
        }
    }

    #[test]
    fn readers_find_records_at_their_stamps_before_the_hold_publishes_them() {
        let t = test_region("stamped", test_geometry());
        let r = &t.0;
        let mut seen = Vec::new();
        send_abc_in_one_hold(r, |_| {
            seen.push((
                r.next_offset(),
                r.committed_end(0, 64),
                r.committed_end(0, 2),
            ))
        });
        assert_eq!(
            seen,
            [(0, 1, 1), (0, 2, 2), (0, 3, 2)],
            "every stamped record counts, up to the limit, while next_offset waits"
        );
        assert_eq!(
            r.committed_end(3, 64),
            3,
            "nothing stamped: next_offset decides"
        );
        assert_eq!(r.committed_end(1, 64), 3);
        // A stamp left by an older offset at the same entry is not a commit.
        let slots = test_geometry().slots as u64;
        assert_eq!(r.committed_end(slots, 64), 3);
        // A region whose stamps were lost still hands out what next_offset covers.
        r.index_entry(1).stamp.store(0, Ordering::Relaxed);
        assert_eq!(r.committed_end(1, 64), 3);
        assert_eq!(
            r.committed_end(0, 64),
            1,
            "stamps end the scan where they stop"
        );
    }

    #[test]
    fn a_committer_that_died_before_marking_its_descriptor_keeps_its_record() {
        let t = test_region("died-marking", test_geometry());
        let r = &t.0;
        assert_eq!(send(r, b"committed"), Ok(0));
        // Undo the marker: as if the producer died after `next_offset = 1`.
        let first = r.index_entry(0).first_slot.load(Ordering::Relaxed);
        r.descriptor(first).store(
            descriptor::pack(descriptor::RESERVED, ME.client, 1),
            Ordering::Relaxed,
        );
        let g = r.lock_ring(|| false).unwrap();
        assert_eq!(
            r.abandon_reservations(&g, ME.client),
            0,
            "a committed record is not abandoned"
        );
        drop(g);
        r.repair_commit();
        let d = r.descriptor(first).load(Ordering::Relaxed);
        assert_eq!(
            descriptor::kind(d),
            descriptor::COMMITTED,
            "the next locker marks it"
        );
        r.reclaim(0).unwrap();
        assert_eq!(r.used_slots(), 1, "still held until consumed");
        assert_eq!(r.read_record(0).unwrap().payload, b"committed");
    }

    /// Commits `payload` inside the hold `g` (published when `g` is dropped).
    fn commit_in_hold(r: &Region, g: &RingGuard<'_>, payload: &[u8]) -> u64 {
        let first = r.try_reserve(g, ME.client, 1).unwrap().unwrap();
        r.write_record(first, None, payload).unwrap();
        let meta = RecordMeta {
            sender: ME,
            timestamp_us: 1,
            key_len: NO_KEY,
            payload_len: payload.len() as u32,
        };
        r.commit(g, first, &meta)
    }

    /// Whether thread `tid` of this process is asleep (in the kernel, waiting).
    fn is_asleep(tid: i32) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    }

    #[test]
    fn a_stop_waits_out_a_hold_in_progress_and_then_sees_its_commits() {
        let t = test_region("wait-out", test_geometry());
        let r = &t.0;
        assert_eq!(send(r, b"before"), Ok(0));
        let g = r.lock_ring(|| false).unwrap();
        assert_eq!(commit_in_hold(r, &g, b"in the hold"), 1);
        r.header().identity.closing.store(1, Ordering::Release);
        std::thread::scope(|s| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let waiter = s.spawn(move || {
                tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
                let settled = r.wait_out_commits(Duration::from_secs(30));
                (settled, r.next_offset())
            });
            let tid = tid_rx.recv().unwrap();
            // The hold ends only once the waiter sleeps on the lock: a waiter that
            // gave up at once (the region is closing) would have missed offset 1.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !is_asleep(tid) && !waiter.is_finished() {
                assert!(Instant::now() < deadline, "the waiter never slept");
                std::thread::yield_now();
            }
            drop(g);
            assert_eq!(waiter.join().unwrap(), (true, 2));
        });
        // Holds taken from now on commit nothing.
        assert_eq!(send(r, b"after"), Err(SendError::Stopped));
        assert_eq!(r.next_offset(), 2);
    }

    #[test]
    fn a_hold_kept_past_the_patience_is_reported() {
        let t = test_region("stuck-holder", test_geometry());
        let r = &t.0;
        let g = r.lock_ring(|| false).unwrap();
        r.header().identity.closing.store(1, Ordering::Release);
        let started = Instant::now();
        let settled = std::thread::scope(|s| {
            s.spawn(|| r.wait_out_commits(Duration::from_millis(50)))
                .join()
                .unwrap()
        });
        assert!(!settled);
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(g);
        assert!(r.wait_out_commits(Duration::from_secs(10)), "free again");
    }

    #[test]
    fn abandoned_reservations_are_freed_for_reuse() {
        let t = test_region("abandon", test_geometry());
        let r = &t.0;
        let g = r.lock_ring(|| false).unwrap();
        assert!(r.try_reserve(&g, 3, 4).unwrap().is_some());
        assert_eq!(r.abandon_reservations(&g, 2), 0);
        assert_eq!(r.abandon_reservations(&g, 3), 1);
        drop(g);
        r.reclaim(0).unwrap();
        assert_eq!(r.used_slots(), 0);
    }

    #[test]
    fn a_batch_commits_in_order_and_waits_for_space_between_holds() {
        let t = test_region("batch", test_geometry());
        let r = &t.0;
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            payloads.iter().map(|p| (None, p.as_slice())).collect();
        let mut offsets = Vec::new();
        r.send_batch(ME, &records, 1, || false, None, |o| offsets.push(o))
            .unwrap();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
        // 16 slots of 64 bytes: five 2-slot records fit, the next five need space.
        let err = r
            .send_batch(
                ME,
                &[(None, &[0u8; 100][..]); 5],
                1,
                || false,
                Some(Instant::now()),
                |_| {},
            )
            .unwrap_err();
        assert_eq!(
            err,
            (3, SendError::TimedOut),
            "three fit before the ring was full"
        );
        let too_big = [(None, &[0u8; 10][..]), (None, &[0u8; 513][..])];
        assert!(matches!(
            r.send_batch(ME, &too_big, 1, || false, None, |_| {}),
            Err((0, SendError::TooLarge { .. }))
        ));
        assert_eq!(r.next_offset(), 8, "nothing of the refused batch was sent");
    }

    #[test]
    fn a_loan_is_written_in_place_and_committed_or_given_back() {
        let t = test_region("loan", test_geometry());
        let r = &t.0;
        let mut loan = r.loan(ME, Some(b"k"), 100, || false, None).unwrap();
        loan.payload_mut().copy_from_slice(&[7; 100]);
        assert_eq!(loan.commit(5, || false).unwrap(), 0);
        let rec = r.read_record(0).unwrap();
        assert_eq!(
            (rec.key, rec.payload, rec.timestamp_us),
            (Some(&b"k"[..]), &[7u8; 100][..], 5)
        );
        drop(r.loan(ME, None, 50, || false, None).unwrap());
        assert_eq!(r.used_slots(), 3);
        r.reclaim(1).unwrap();
        assert_eq!(r.used_slots(), 0, "an uncommitted loan is given back");
        assert_eq!(r.next_offset(), 1);
        assert!(matches!(
            r.loan(ME, None, 513, || false, None),
            Err(SendError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_freed_offset_beyond_the_next_offset_is_refused() {
        let t = test_region("freed", test_geometry());
        let r = &t.0;
        r.header().reclaim.freed_offset.store(5, Ordering::Relaxed);
        assert_eq!(r.reclaim(10), Err(ReclaimError::Corrupt(5)));
    }

    #[test]
    fn an_impossible_next_offset_is_refused_not_overflowed() {
        let t = test_region("maxoff", test_geometry());
        let r = &t.0;
        r.header()
            .producer
            .next_offset
            .store(u64::MAX, Ordering::Relaxed);
        assert!(matches!(send(r, b"x"), Err(SendError::Corrupt(_))));
        r.repair_commit();
        assert_eq!(r.next_offset(), u64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The `ring_state` fuzz target's property, on stable: scribbled cursors,
        /// index entries and descriptors make operations fail, never panic.
        #[test]
        fn scribbled_ring_state_is_refused_never_trusted(
            writes in proptest::collection::vec((0u8..9, 0u64..32, proptest::prelude::any::<u64>()), 0..24)
        ) {
            let t = test_region("scribble", test_geometry());
            let r = &t.0;
            for (which, index, v) in writes {
                let h = r.header();
                let e = r.index_entry(index);
                match which {
                    0 => h.producer.head.store(v, Ordering::Relaxed),
                    1 => h.reclaim.tail.store(v, Ordering::Relaxed),
                    2 => h.producer.next_offset.store(v, Ordering::Relaxed),
                    3 => h.reclaim.freed_offset.store(v, Ordering::Relaxed),
                    4 => e.stamp.store(v, Ordering::Relaxed),
                    5 => e.first_slot.store(v, Ordering::Relaxed),
                    6 => e.key_len.store(v as u32, Ordering::Relaxed),
                    7 => e.payload_len.store(v as u32, Ordering::Relaxed),
                    _ => r.descriptor(index).store(v, Ordering::Relaxed),
                }
            }
            let next = r.next_offset();
            // Whatever is returned lies inside the payload area.
            let area = r.slot_address(0) as usize
                ..r.slot_address(0) as usize + (r.geometry().slots * r.geometry().slot_size) as usize;
            for o in next.saturating_sub(20)..next.saturating_add(4) {
                if let Ok(rec) = r.read_record(o) {
                    for bytes in [rec.payload].into_iter().chain(rec.key) {
                        let at = bytes.as_ptr() as usize;
                        proptest::prop_assert!(
                            at >= area.start && at + bytes.len() <= area.end,
                            "offset {o}: {} bytes at {at:#x}, outside the payload area {area:x?}",
                            bytes.len()
                        );
                    }
                }
            }
            let _ = r.used_slots();
            let _ = send(r, b"payload");
            let _ = r.reclaim(next);
            let g = r.lock_ring(|| true).unwrap();
            let _ = r.abandon_reservations(&g, 1);
        }
    }

    /// One step of a well-formed use of the ring.
    #[derive(Debug, Clone)]
    enum Op {
        /// Send a record of this many payload bytes (with a key when `keyed`).
        Send { len: usize, keyed: bool },
        /// Free the oldest `n` records that are still in the ring.
        Reclaim { n: u64 },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0usize..300, any::<bool>()).prop_map(|(len, keyed)| Op::Send { len, keyed }),
            1 => (0u64..6).prop_map(|n| Op::Reclaim { n }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Against a model (a queue of what was sent): offsets are dense from 0,
        /// a send fails only for want of space, and every record not yet freed
        /// reads back exactly, key and payload, whatever the sizes, the wraps and
        /// the reclaims in between.
        #[test]
        fn sends_and_reclaims_match_a_queue_of_records(ops in proptest::collection::vec(op(), 1..80)) {
            let t = test_region("ring-model", test_geometry());
            let r = &t.0;
            let mut live: std::collections::VecDeque<(u64, Option<Vec<u8>>, Vec<u8>)> =
                std::collections::VecDeque::new();
            let mut next = 0u64;
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Send { len, keyed } => {
                        let payload: Vec<u8> = (0..len).map(|i| (i + step) as u8).collect();
                        let key = keyed.then(|| format!("k{step}").into_bytes());
                        match r.send(ME, key.as_deref(), &payload, 7, || false, Some(Instant::now())) {
                            Ok(o) => {
                                proptest::prop_assert_eq!(o, next, "offsets are dense");
                                live.push_back((o, key, payload));
                                next += 1;
                            }
                            Err(e) => proptest::prop_assert_eq!(e, SendError::TimedOut),
                        }
                    }
                    Op::Reclaim { n } => {
                        let upto = live.front().map_or(next, |f| f.0) + n;
                        r.reclaim(upto.min(next)).unwrap();
                        while live.front().is_some_and(|f| f.0 < upto) {
                            live.pop_front();
                        }
                    }
                }
                proptest::prop_assert_eq!(r.next_offset(), next);
                for (o, key, payload) in &live {
                    let rec = r.read_record(*o).unwrap();
                    proptest::prop_assert_eq!(rec.key, key.as_deref());
                    proptest::prop_assert_eq!(rec.payload, &payload[..]);
                }
            }
            // Freeing everything empties the ring.
            r.reclaim(next).unwrap();
            proptest::prop_assert_eq!(r.used_slots(), 0);
        }
    }

    /// Takes the ring lock and repairs, vouching for the reservations of `live`.
    fn repair(r: &Region, live: &[u32]) -> Result<RingRepair, RepairError> {
        let g = r.lock_ring(|| false).unwrap();
        r.repair_ring(&g, |owner| live.contains(&owner))
    }

    #[test]
    fn an_unstamped_entry_below_next_offset_is_dropped_and_its_slots_freed() {
        let t = test_region("repair-stamp", test_geometry());
        let r = &t.0;
        for i in 0..6u8 {
            send(r, &[i; 10]).unwrap();
        }
        r.index_entry(2).stamp.store(0, Ordering::Relaxed);
        assert_eq!(r.reclaim(6), Err(ReclaimError::Corrupt(2)));
        assert_eq!(
            r.header().reclaim.freed_offset.load(Ordering::Relaxed),
            2,
            "what was freed before the bad entry stays freed"
        );
        assert_eq!(r.reclaim(6), Err(ReclaimError::Corrupt(2)), "every pass");
        let done = repair(r, &[]).unwrap();
        assert_eq!(done.unreadable, [2]);
        assert_eq!(done.rewritten.len(), 1, "{done:?}");
        let freed = done.rewritten[0];
        assert_eq!(freed.position, 2);
        assert!(!freed.described_a_record && !freed.was_impossible(16));
        assert_eq!(
            r.read_record(3).unwrap().payload,
            [3; 10],
            "the others are intact"
        );
        assert_eq!(r.reclaim_skipping(6, &done.unreadable), Ok(3));
        assert_eq!(r.used_slots(), 0);
        // Traffic goes on over a whole lap and more.
        for i in 0..40u8 {
            let o = send(r, &[i; 10]).unwrap();
            assert_eq!(r.read_record(o).unwrap().payload, [i; 10]);
            r.reclaim(o + 1).unwrap();
        }
    }

    #[test]
    fn an_impossible_descriptor_is_rewritten_from_the_index_entry() {
        let t = test_region("repair-desc", test_geometry());
        let r = &t.0;
        for i in 0..3u8 {
            send(r, &[i; 100]).unwrap(); // 2 slots each
        }
        r.descriptor(2).store(u64::MAX, Ordering::Relaxed);
        assert_eq!(r.reclaim(3), Err(ReclaimError::BadDescriptor(2)));
        let done = repair(r, &[]).unwrap();
        assert!(done.unreadable.is_empty());
        assert_eq!(done.rewritten.len(), 1);
        let w = done.rewritten[0];
        assert_eq!((w.position, w.found), (2, u64::MAX));
        assert!(w.described_a_record && w.was_impossible(16));
        assert_eq!(r.read_record(1).unwrap().payload, [1; 100]);
        assert_eq!(r.reclaim(3), Ok(2));
        assert_eq!(r.used_slots(), 0);
    }

    #[test]
    fn a_scribbled_length_never_frees_the_slots_of_live_records() {
        let t = test_region("repair-len", test_geometry());
        let r = &t.0;
        for i in 0..4u8 {
            send(r, &[i; 10]).unwrap();
        }
        // Offset 0's descriptor claims four slots: freeing by it would free 1..3.
        r.descriptor(0).store(
            descriptor::pack(descriptor::COMMITTED, 1, 4),
            Ordering::Relaxed,
        );
        assert_eq!(r.reclaim(1), Err(ReclaimError::BadDescriptor(0)));
        assert_eq!(r.used_slots(), 4);
        let done = repair(r, &[]).unwrap();
        assert_eq!(done.rewritten.len(), 1);
        assert!(
            !done.rewritten[0].was_impossible(16),
            "a possible word, but wrong"
        );
        assert_eq!(r.reclaim(1), Ok(1));
        assert_eq!(r.used_slots(), 3, "only offset 0's slot is freed");
    }

    #[test]
    fn a_live_producers_reservation_is_kept_and_everything_else_unowned_is_freed() {
        let t = test_region("repair-reserved", test_geometry());
        let r = &t.0;
        send(r, b"kept").unwrap();
        let g = r.lock_ring(|| false).unwrap();
        let live = r.try_reserve(&g, 3, 2).unwrap().unwrap();
        let dead = r.try_reserve(&g, 4, 2).unwrap().unwrap();
        drop(g);
        send(r, b"after").unwrap();
        // Garbage over the dead producer's reservation, as a scribble would leave.
        r.descriptor(dead).store(0xDEAD << 40, Ordering::Relaxed);
        let done = repair(r, &[3]).unwrap();
        assert!(done.unreadable.is_empty());
        let positions: Vec<u64> = done.rewritten.iter().map(|w| w.position).collect();
        assert_eq!(positions, [dead]);
        let d = r.descriptor(live).load(Ordering::Relaxed);
        assert_eq!(
            (descriptor::kind(d), descriptor::owner(d)),
            (descriptor::RESERVED, 3)
        );
        let d = r.descriptor(dead).load(Ordering::Relaxed);
        assert_eq!(
            (descriptor::kind(d), descriptor::len(d)),
            (descriptor::FREE, 2)
        );
        assert_eq!(r.read_record(1).unwrap().payload, b"after");
    }

    #[test]
    fn entries_that_overlap_or_fall_outside_the_ring_are_unreadable() {
        let t = test_region("repair-overlap", test_geometry());
        let r = &t.0;
        for i in 0..5u8 {
            send(r, &[i; 10]).unwrap();
        }
        // Offset 3 points at offset 1's slot, offset 4 beyond the head.
        r.index_entry(3).first_slot.store(1, Ordering::Relaxed);
        r.index_entry(4).first_slot.store(9, Ordering::Relaxed);
        let done = repair(r, &[]).unwrap();
        assert_eq!(done.unreadable, [3, 4]);
        assert_eq!(r.reclaim_skipping(5, &done.unreadable), Ok(3));
        assert_eq!(r.used_slots(), 0);
    }

    #[test]
    fn cursors_out_of_order_are_refused_and_nothing_changes() {
        let t = test_region("repair-cursors", test_geometry());
        let r = &t.0;
        send(r, b"x").unwrap();
        r.descriptor(0).store(u64::MAX, Ordering::Relaxed);
        r.header().reclaim.tail.store(5, Ordering::Relaxed);
        assert!(matches!(repair(r, &[]), Err(RepairError::Cursors(_))));
        assert_eq!(r.descriptor(0).load(Ordering::Relaxed), u64::MAX);
        r.header().reclaim.tail.store(0, Ordering::Relaxed);
        r.header().reclaim.freed_offset.store(2, Ordering::Relaxed);
        assert!(matches!(repair(r, &[]), Err(RepairError::Cursors(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Whatever is scribbled over index entries and descriptors, a repair
        /// leaves a ring that reclaims to empty and goes on carrying records, and
        /// every record it still calls readable reads back exactly.
        #[test]
        fn after_any_scribble_over_entries_and_descriptors_a_repair_lets_traffic_resume(
            sizes in proptest::collection::vec(0usize..200, 1..12),
            freed_first in 0usize..12,
            writes in proptest::collection::vec((0u8..5, 0u64..16, proptest::prelude::any::<u64>()), 1..8),
        ) {
            let t = test_region("repair-prop", test_geometry());
            let r = &t.0;
            let mut payloads = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                match send(r, &vec![i as u8; *n]) {
                    Ok(_) => payloads.push(vec![i as u8; *n]),
                    Err(_) => break,
                }
            }
            let next = payloads.len() as u64;
            let _ = r.reclaim((freed_first as u64).min(next));
            for (which, index, v) in writes {
                let e = r.index_entry(index);
                match which {
                    0 => e.stamp.store(v % 20, Ordering::Relaxed),
                    1 => e.first_slot.store(v % 40, Ordering::Relaxed),
                    2 => e.payload_len.store(v as u32 % 300, Ordering::Relaxed),
                    3 => r.descriptor(index).store(v, Ordering::Relaxed),
                    _ => r.descriptor(index).store(
                        descriptor::pack(v % 4, 1, (v >> 8) as u32 % 20),
                        Ordering::Relaxed,
                    ),
                }
            }
            let done = repair(r, &[]).unwrap();
            let freed = r.header().reclaim.freed_offset.load(Ordering::Relaxed);
            for o in freed..next {
                if done.unreadable.contains(&o) {
                    continue;
                }
                let rec = r.read_record(o);
                proptest::prop_assert!(rec.is_ok(), "offset {} readable after the repair", o);
            }
            proptest::prop_assert_eq!(r.reclaim_skipping(next, &done.unreadable), Ok(next - freed - done.unreadable.iter().filter(|&&o| o >= freed).count() as u64));
            proptest::prop_assert_eq!(r.used_slots(), 0);
            for i in 0..40u8 {
                let o = send(r, &[i; 70]).unwrap();
                proptest::prop_assert_eq!(r.read_record(o).unwrap().payload, &[i; 70][..]);
                r.reclaim(o + 1).unwrap();
            }
        }
    }

    #[test]
    fn corrupt_head_is_reported_not_trusted() {
        let t = test_region("corrupt", test_geometry());
        let r = &t.0;
        r.header().producer.head.store(1000, Ordering::Relaxed);
        assert!(matches!(send(r, b"x"), Err(SendError::Corrupt(_))));
        assert!(r.reclaim(0).is_err());
        r.header().producer.head.store(0, Ordering::Relaxed);
        // A stamped entry pointing outside the payload area is refused on read.
        let e = r.index_entry(0);
        e.first_slot.store(15, Ordering::Relaxed);
        e.payload_len.store(500, Ordering::Relaxed);
        e.key_len.store(NO_KEY, Ordering::Relaxed);
        e.stamp.store(1, Ordering::Release);
        assert_eq!(r.read_record(0).unwrap_err(), ReadError::Corrupt(0));
    }
}
