//! Reading: whether offsets are committed, how far a reader may go, records read
//! back by offset with their index entries checked, and cache prefetch hints.

use std::sync::atomic::Ordering;

use crate::layout::NO_KEY;
use crate::region::Region;
use crate::sys::prefetch;

use super::{CopiedRecord, ReadError, Record};

/// How many stamps [`Region::committed_end`] reads before it asks `next_offset`.
const SCAN_LIMIT: u64 = 64;

/// Where a committed record's bytes are, and what its index entry says of it.
struct Located {
    bytes: *mut u8,
    size: usize,
    /// The key's length, if it has one: the key's bytes come first.
    key_len: Option<usize>,
    /// The headers' length: they come last.
    headers_len: usize,
    timestamp_us: u64,
    producer: u32,
    producer_generation: u32,
}

impl Region {
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

    /// Every offset below this has been freed by the broker.
    pub fn freed_offset(&self) -> u64 {
        // Acquire pairs with the Release store of `freed_offset` in `reclaim`.
        self.header().reclaim.freed_offset.load(Ordering::Acquire)
    }

    /// The next offset a commit will take: every offset below it is committed.
    pub fn next_offset(&self) -> u64 {
        self.header().producer.next_offset.load(Ordering::Acquire)
    }

    /// The record the index entry of `offset` describes, its bytes located and
    /// bounds-checked: `NotAvailable` without its stamp, `Corrupt` if the entry
    /// describes bytes that cannot be a record. `read_record`, the consumers' fast
    /// path, keeps its own reading of the entry.
    fn locate(&self, offset: u64) -> Result<Located, ReadError> {
        let e = self.index_entry(offset);
        // Acquire pairs with the Release stamp store in `commit`.
        if e.stamp.load(Ordering::Acquire) != offset.wrapping_add(1) {
            return Err(ReadError::NotAvailable(offset));
        }
        let first = e.first_slot.load(Ordering::Relaxed);
        let key_len = e.key_len.load(Ordering::Relaxed);
        let payload_len = e.payload_len.load(Ordering::Relaxed) as u64;
        let headers_len = e.headers_len.load(Ordering::Relaxed) as u64;
        let stored_key = if key_len == NO_KEY { 0 } else { key_len as u64 };
        let size = stored_key + payload_len + headers_len;
        if size > self.geometry().max_message as u64 {
            return Err(ReadError::Corrupt(offset));
        }
        let bytes = self
            .slot_bytes(first, size)
            .ok_or(ReadError::Corrupt(offset))?;
        Ok(Located {
            bytes,
            size: size as usize,
            key_len: (key_len != NO_KEY).then_some(stored_key as usize),
            headers_len: headers_len as usize,
            timestamp_us: e.timestamp_us.load(Ordering::Relaxed),
            producer: e.producer.load(Ordering::Relaxed),
            producer_generation: e.producer_generation.load(Ordering::Relaxed),
        })
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
        let headers_len = e.headers_len.load(Ordering::Relaxed) as u64;
        let timestamp_us = e.timestamp_us.load(Ordering::Relaxed);
        let producer = e.producer.load(Ordering::Relaxed);
        let producer_generation = e.producer_generation.load(Ordering::Relaxed);
        let stored_key = if key_len == NO_KEY { 0 } else { key_len as u64 };
        let size = stored_key + payload_len + headers_len;
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
        let (key, rest) = bytes.split_at(stored_key as usize);
        let (payload, headers) = rest.split_at(payload_len as usize);
        Ok(Record {
            offset,
            key: (key_len != NO_KEY).then_some(key),
            payload,
            headers,
            timestamp_us,
            producer,
            producer_generation,
        })
    }

    /// Copies the record at `offset` out of the ring, for a reader that holds
    /// nothing back (no group pins the record for it): the cleaner may free the
    /// record's slots, and a producer write them, while it copies. `Ok(None)`: the
    /// record left the ring, before or during the copy; it is in the persistence
    /// file (slots are freed only once persisted). `NotAvailable`: not committed yet.
    ///
    /// A producer writes slots only after the cleaner has moved the reclaim cursor
    /// past their records (it reserves behind the tail, which follows the cursor).
    /// So a copy taken while the record is stamped, and after which the cursor is
    /// still at or below `offset`, is the record: nothing wrote its slots meanwhile.
    pub fn copy_record(&self, offset: u64) -> Result<Option<CopiedRecord>, ReadError> {
        if self.freed_offset() > offset {
            return Ok(None);
        }
        let gone_or = |e: ReadError| {
            // A stamp or entry changed under us: the slot was reused if the
            // cursor passed the offset meanwhile, and is the given error if not.
            if self.freed_offset() > offset {
                Ok(None)
            } else {
                Err(e)
            }
        };
        let l = match self.locate(offset) {
            Ok(l) => l,
            Err(e) => return gone_or(e),
        };
        let key_len = l.key_len.unwrap_or(0);
        let copy = |from: usize, len: usize| {
            let mut v = Vec::with_capacity(len);
            // SAFETY: `locate` checked that `size` bytes from `l.bytes` lie inside
            // the payload area, and `from + len <= size`; the vector has room for
            // `len` bytes, all written before its length is set. A producer may be
            // writing them if the record was freed meanwhile: any byte value is a
            // valid u8, and such a copy is thrown away below.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (l.bytes as *const u8).add(from),
                    v.as_mut_ptr(),
                    len,
                );
                v.set_len(len);
            }
            v
        };
        let key = l.key_len.map(|_| copy(0, key_len));
        let payload_len = l.size - key_len - l.headers_len;
        let payload = copy(key_len, payload_len);
        let headers = if l.headers_len == 0 {
            Vec::new()
        } else {
            copy(key_len + payload_len, l.headers_len)
        };
        // The copy's loads before the cursor's: a cursor still at or below `offset`
        // was so for the whole copy.
        std::sync::atomic::fence(Ordering::Acquire);
        if self.freed_offset() > offset || !self.is_committed(offset) {
            return Ok(None);
        }
        Ok(Some(CopiedRecord {
            offset,
            key,
            payload,
            headers,
            timestamp_us: l.timestamp_us,
            producer: l.producer,
            producer_generation: l.producer_generation,
        }))
    }

    /// The first offset still in the ring, from `from` on, whose record was
    /// published at or after `time_us` (µs since the Unix epoch); None if no
    /// committed record is. Records that leave the ring while this looks are
    /// passed over (they were older than the ones after them).
    pub fn first_published_at_or_after(&self, from: u64, time_us: u64) -> Option<u64> {
        let end = self.next_offset();
        (from.max(self.freed_offset())..end)
            .find(|&o| matches!(self.copy_record(o), Ok(Some(r)) if r.timestamp_us >= time_us))
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
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::region::tests::{test_geometry, test_region};
    use crate::ring::test_support::*;

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

    /// Payload of the n-th record sent: n's bytes, repeated over 7 of the test
    /// ring's 16 slots, so that every other send reuses a record's slots.
    fn payload_of(n: u64) -> Vec<u8> {
        n.to_le_bytes().repeat(56)
    }

    #[test]
    fn a_copy_is_the_record_until_the_record_is_reclaimed() {
        let t = test_region("copy", test_geometry());
        let r = &t.0;
        let key: &[u8] = b"k";
        r.send(ME, Some(key), b"first", 7, || false, None).unwrap();
        send(r, b"second").unwrap();
        let got = r.copy_record(0).unwrap().expect("in the ring");
        assert_eq!(
            (got.key.as_deref(), got.payload.as_slice(), got.timestamp_us),
            (Some(key), &b"first"[..], 7)
        );
        assert_eq!(
            (got.producer, got.producer_generation),
            (ME.client, ME.generation)
        );
        assert_eq!(r.copy_record(1).unwrap().unwrap().key, None);
        assert_eq!(r.copy_record(2), Err(ReadError::NotAvailable(2)));
        r.reclaim(1).unwrap();
        assert_eq!(r.copy_record(0), Ok(None), "left the ring: read the file");
        assert_eq!(r.copy_record(1).unwrap().unwrap().payload, b"second");
    }

    #[test]
    fn a_copy_racing_with_the_reuse_of_its_slots_is_the_record_or_nothing() {
        let t = test_region("copy-race", test_geometry());
        let r = &t.0;
        let stop = AtomicBool::new(false);
        let (mut copied, mut gone) = (0u64, 0u64);
        let mut torn = None;
        std::thread::scope(|s| {
            // Sends and reclaims as fast as it can, so that slots are reused
            // under the copier all the time.
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    send(r, &payload_of(n)).unwrap();
                    n += 1;
                    r.reclaim(n.saturating_sub(1)).unwrap();
                }
            });
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && copied < 20_000 && torn.is_none() {
                let o = r.freed_offset();
                match r.copy_record(o) {
                    Ok(Some(rec)) if rec.offset == o && rec.payload == payload_of(o) => copied += 1,
                    Ok(Some(rec)) => {
                        let at = rec
                            .payload
                            .iter()
                            .zip(payload_of(o))
                            .position(|(a, b)| *a != b);
                        torn = Some(format!(
                            "offset {o}: a torn copy (differs from byte {at:?})"
                        ));
                    }
                    Ok(None) => gone += 1,
                    Err(ReadError::NotAvailable(_)) => {}
                    Err(e) => torn = Some(format!("offset {o}: {e}")),
                }
            }
            // Whatever the copies found, the sender stops.
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(torn, None);
        eprintln!("{copied} copies whole, {gone} found gone");
        assert!(copied > 0, "some copies must have been taken");
    }
}
