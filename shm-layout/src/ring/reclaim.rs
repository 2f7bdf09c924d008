//! Reclaiming: freeing consumed records and moving the tail, giving back the
//! reservations of producers gone, and the repair walk over a ring found corrupt.

use std::sync::atomic::Ordering;

use crate::event;
use crate::layout::{descriptor, NO_KEY};
use crate::region::{BrokerRegion, Region};

use super::lock::RingGuard;
use super::POSITION_LIMIT;

impl BrokerRegion {
    /// Broker only: frees every committed offset below `upto` and advances the tail
    /// over freed allocations; wakes producers waiting for space. Returns how many
    /// records were freed.
    pub fn reclaim(&self, upto: u64) -> Result<u64, ReclaimError> {
        self.reclaim_skipping(upto, &[])
    }

    /// As `Region::reclaim`, passing over the offsets in `dropped` (ascending):
    /// offsets a `Region::repair_ring` found unreadable, whose slots it already
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

    /// Broker only, under the ring lock and with `Region::reclaim` kept from
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
    /// `Region::reclaim_skipping` must pass over them. The cursors themselves
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
}

impl Region {
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
}

impl BrokerRegion {
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

    /// Without the ring lock: whether `owner` may still hold a reservation here.
    /// For a producer that is gone, whose descriptors nobody else writes: false
    /// only when a walk of the ring from its tail to its head, descriptor after
    /// descriptor, finds none reserved by it. A walk that meets a descriptor it
    /// cannot follow (the tail or head moved under it) answers true: look again
    /// later, under the lock.
    pub fn may_hold_reservation(&self, owner: u32) -> bool {
        let h = self.header();
        let ring = self.geometry().slots as u64;
        let mut pos = h.reclaim.tail.load(Ordering::Acquire);
        let head = h.producer.head.load(Ordering::Acquire);
        if head < pos || head - pos > ring {
            return true;
        }
        while pos < head {
            let v = self.descriptor(pos).load(Ordering::Acquire);
            let len = descriptor::len(v) as u64;
            if len == 0 || len > ring - pos % ring || len > head - pos {
                return true;
            }
            if descriptor::kind(v) == descriptor::RESERVED && descriptor::owner(v) == owner {
                return true;
            }
            pos += len;
        }
        false
    }
}

/// Why the cleaner refused to reclaim.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReclaimError {
    #[error("index entry of offset {0} is not stamped as committed")]
    Corrupt(u64),
    #[error("slot descriptor at position {0} is invalid")]
    BadDescriptor(u64),
}

/// Key, payload and header bytes of the record an index entry describes.
fn stored_size(e: &crate::layout::IndexEntry) -> u64 {
    let key_len = e.key_len.load(Ordering::Relaxed);
    let stored_key = if key_len == NO_KEY { 0 } else { key_len as u64 };
    stored_key
        + e.payload_len.load(Ordering::Relaxed) as u64
        + e.headers_len.load(Ordering::Relaxed) as u64
}

/// A record [`Region::repair_ring`] found intact.
#[derive(Debug, Clone, Copy)]
struct LiveRecord {
    offset: u64,
    first: u64,
    slots: u64,
    producer: u32,
}

/// What `Region::repair_ring` found and changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RingRepair {
    /// Offsets in `[freed_offset, next_offset)`, ascending, whose index entries
    /// describe no record the ring holds: they cannot be read from the ring.
    pub unreadable: Vec<u64>,
    /// Descriptors rewritten, in ring order.
    pub rewritten: Vec<Rewritten>,
}

/// One slot descriptor `Region::repair_ring` rewrote.
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

/// Why `Region::repair_ring` changed nothing.
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
    use crate::ring::test_support::*;
    use crate::ring::{ReadError, SendError};

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
    fn a_walk_without_the_lock_tells_whose_reservations_remain() {
        let t = test_region("may-hold", test_geometry());
        let r = &t.0;
        let g = r.lock_ring(|| false).unwrap();
        assert!(r.try_reserve(&g, 3, 4).unwrap().is_some());
        assert!(r.try_reserve(&g, 5, 2).unwrap().is_some());
        // Looked at while the lock is still held (by "someone else").
        assert!(r.may_hold_reservation(3));
        assert!(r.may_hold_reservation(5));
        assert!(!r.may_hold_reservation(2), "holds nothing");
        assert_eq!(r.abandon_reservations(&g, 3), 1);
        assert!(!r.may_hold_reservation(3), "released");
        // A head it cannot believe: look again later.
        r.header().producer.head.store(u64::MAX, Ordering::Relaxed);
        assert!(r.may_hold_reservation(2));
        drop(g);
    }

    #[test]
    fn a_freed_offset_beyond_the_next_offset_is_refused() {
        let t = test_region("freed", test_geometry());
        let r = &t.0;
        r.header().reclaim.freed_offset.store(5, Ordering::Relaxed);
        assert_eq!(r.reclaim(10), Err(ReclaimError::Corrupt(5)));
    }

    /// Takes the ring lock and repairs, vouching for the reservations of `live`.
    fn repair(r: &BrokerRegion, live: &[u32]) -> Result<RingRepair, RepairError> {
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
