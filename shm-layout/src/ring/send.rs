//! Sending: admission, reserving slots, writing and committing records (one at a
//! time, in batches, or in place through a [`Loan`]), and waiting for space and
//! for persistence.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::event::{self, event_id, WaitError};
use crate::layout::{admission, descriptor, NO_KEY};
use crate::region::{BrokerRegion, Region};

use super::lock::RingGuard;
use super::{as_committed, Outgoing, SendError, Sender, POSITION_LIMIT};

impl Region {
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
    pub(super) fn try_reserve(
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
    pub(super) fn commit(&self, lock: &RingGuard<'_>, first: u64, meta: &RecordMeta) -> u64 {
        let offset = lock
            .next
            .get()
            .unwrap_or_else(|| self.header().producer.next_offset.load(Ordering::Relaxed));
        let e = self.index_entry(offset);
        e.first_slot.store(first, Ordering::Relaxed);
        e.timestamp_us.store(meta.timestamp_us, Ordering::Relaxed);
        e.key_len.store(meta.key_len, Ordering::Relaxed);
        e.payload_len.store(meta.payload_len, Ordering::Relaxed);
        e.headers_len.store(meta.headers_len, Ordering::Relaxed);
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
        records: &[impl Outgoing],
        timestamp_us: u64,
        stop: impl FnMut() -> bool,
        deadline: Option<Instant>,
        committed: impl FnMut(u64),
    ) -> Result<(), (usize, SendError)> {
        let durable = self.waits_for_disk();
        self.send_records(
            sender,
            records,
            timestamp_us,
            stop,
            deadline,
            committed,
            durable,
        )
    }

    /// As [`Region::send_batch`]; `durable`: under `--fsync`, waits until the
    /// records are on disk.
    #[allow(clippy::too_many_arguments)]
    fn send_records<R: Outgoing>(
        &self,
        sender: Sender,
        records: &[R],
        timestamp_us: u64,
        mut stop: impl FnMut() -> bool,
        deadline: Option<Instant>,
        mut committed: impl FnMut(u64),
        durable: bool,
    ) -> Result<(), (usize, SendError)> {
        let max = self.geometry().max_message as u64;
        for r in records {
            let key_len = r.key().map_or(0, |k| k.len() as u64);
            let size = key_len + r.payload().len() as u64 + r.headers().len() as u64;
            if size > max || (r.key().is_some() && key_len >= NO_KEY as u64) {
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
            while let Some(record) = records.get(sent) {
                let (key, payload, headers) = (record.key(), record.payload(), record.headers());
                // Checked under the lock: a broker salvaging this region marks it
                // closing before taking the lock, so nothing commits after its look.
                if self.is_closing() {
                    return Err((sent, SendError::Stopped));
                }
                let size =
                    key.map_or(0, |k| k.len() as u64) + payload.len() as u64 + headers.len() as u64;
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
                        self.mark_pending();
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
                self.write_record(first, key, payload, headers)
                    .map_err(|e| (sent, e))?;
                let meta = RecordMeta {
                    sender,
                    timestamp_us,
                    key_len: key.map_or(NO_KEY, |k| k.len() as u32),
                    payload_len: payload.len() as u32,
                    headers_len: headers.len() as u32,
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
            self.mark_pending();
            event::notify(&self.header().published);
            if let Some((from, to)) = filled.take() {
                self.nudge_cleaner(from, to);
            }
        }
        if let Some(offset) = last {
            if !replay && durable {
                self.wait_until_persisted(offset, sender.client, &mut stop)
                    .map_err(|e| (sent, e))?;
            }
        }
        Ok(())
    }

    /// Copies a key, payload and headers into the slots reserved at `first`.
    pub(super) fn write_record(
        &self,
        first: u64,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[u8],
    ) -> Result<(), SendError> {
        let key_len = key.map_or(0, |k| k.len());
        let dst = self
            .slot_bytes(first, (key_len + payload.len() + headers.len()) as u64)
            .ok_or(SendError::Corrupt("reservation outside the payload area"))?;
        // SAFETY: the slots from `first` were reserved for this producer under the
        // lock and nobody else writes them until they are committed and freed; `dst`
        // has room for key + payload + headers (checked by slot_bytes); sources are
        // valid slices.
        unsafe {
            if let Some(k) = key {
                std::ptr::copy_nonoverlapping(k.as_ptr(), dst, k.len());
            }
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(key_len), payload.len());
            if !headers.is_empty() {
                std::ptr::copy_nonoverlapping(
                    headers.as_ptr(),
                    dst.add(key_len + payload.len()),
                    headers.len(),
                );
            }
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
                    self.write_record(first, key, &[], &[])?;
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
}

impl BrokerRegion {
    /// Broker only: sends one record if it fits now, never waiting (for space,
    /// the lock or, under `--fsync`, the disk: the broker's own persister writes
    /// it, and must not be waited for by the thread that publishes it).
    pub fn send_now(
        &self,
        sender: Sender,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp_us: u64,
    ) -> Result<u64, SendError> {
        let mut offset = 0;
        self.send_records(
            sender,
            &[(key, payload)],
            timestamp_us,
            || true,
            None,
            |o| offset = o,
            false,
        )
        .map_err(|(_, e)| e)?;
        Ok(offset)
    }

    /// Broker only: sends as many of `records`, in order, as fit now, never
    /// waiting (for space, for the lock held by another, or for the disk); the
    /// offset of the first one sent and how many were. For a sender that must
    /// not block, and comes back for the rest later. Every size is checked
    /// first: one record over `max_message` sends nothing.
    pub fn send_batch_now(
        &self,
        sender: Sender,
        records: &[impl Outgoing],
        timestamp_us: u64,
    ) -> Result<(Option<u64>, usize), SendError> {
        let mut first = None;
        let sent = self.send_records(
            sender,
            records,
            timestamp_us,
            || true,
            None,
            |o| {
                first.get_or_insert(o);
            },
            false,
        );
        match sent {
            Ok(()) => Ok((first, records.len())),
            Err((n, SendError::Stopped)) if !self.is_closing() => Ok((first, n)),
            Err((_, e)) => Err(e),
        }
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
}

impl Region {
    /// Producers asleep waiting for free slots now.
    pub fn waiting_for_space(&self) -> u32 {
        self.header().space.sleepers.load(Ordering::Relaxed)
    }

    /// Whether a send waits until its records are on disk (`--fsync`).
    #[inline]
    pub fn waits_for_disk(&self) -> bool {
        self.header().durable.fsync.load(Ordering::Relaxed) != 0
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
        // The broker looks at a partition's ring when it is marked: so that it
        // sees this one waits, even with nothing new to persist.
        self.mark_pending();
        event::notify(self.broker_event());
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
            event::notify(self.broker_event());
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
        // The cleaner frees lazily; a producer short of space asks it to run now
        // (marking a partition's ring, so that the broker looks at it).
        self.mark_pending();
        event::notify(self.broker_event());
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
}

impl BrokerRegion {
    /// Broker only, before any client connects: the next commit takes `next_offset`,
    /// and every offset below `persisted` counts as already persisted.
    pub fn start_at(&self, next_offset: u64, persisted: u64) {
        let h = self.header();
        h.producer.next_offset.store(next_offset, Ordering::Release);
        h.reclaim.freed_offset.store(next_offset, Ordering::Release);
        h.durable.persisted.store(persisted, Ordering::Release);
    }
}

impl Region {
    /// Slots in use (`head - tail`), for status displays.
    pub fn used_slots(&self) -> u64 {
        self.occupancy().map(|(used, _)| used).unwrap_or(0)
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
            headers_len: 0,
        };
        let offset = region.commit(&guard, self.first, &meta);
        self.open = false;
        drop(guard);
        region.mark_pending();
        event::notify(&region.header().published);
        region.nudge_cleaner(self.first, self.first + self.slots);
        if region.waits_for_disk() {
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

pub(super) struct RecordMeta {
    pub(super) sender: Sender,
    pub(super) timestamp_us: u64,
    pub(super) key_len: u32,
    pub(super) payload_len: u32,
    pub(super) headers_len: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};
    use crate::ring::test_support::*;
    use crate::Geometry;

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
}
