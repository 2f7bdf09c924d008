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

use crate::layout::descriptor;
use crate::region::Region;

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
    /// Its headers as Kafka encodes them (a varint count, then each header);
    /// empty when it has none.
    pub headers: &'r [u8],
    pub timestamp_us: u64,
    pub producer: u32,
    pub producer_generation: u32,
}

/// A committed record copied out of the ring (see [`Region::copy_record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedRecord {
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// As [`Record::headers`].
    pub headers: Vec<u8>,
    pub timestamp_us: u64,
    pub producer: u32,
    pub producer_generation: u32,
}

/// A record to send: its key, its payload and its headers (Kafka's record
/// header encoding, empty for none).
pub trait Outgoing {
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> &[u8];
    fn headers(&self) -> &[u8] {
        &[]
    }
}

impl Outgoing for (Option<&[u8]>, &[u8]) {
    fn key(&self) -> Option<&[u8]> {
        self.0
    }
    fn payload(&self) -> &[u8] {
        self.1
    }
}

/// (key, payload, headers).
impl Outgoing for (Option<&[u8]>, &[u8], &[u8]) {
    fn key(&self) -> Option<&[u8]> {
        self.0
    }
    fn payload(&self) -> &[u8] {
        self.1
    }
    fn headers(&self) -> &[u8] {
        self.2
    }
}

/// A record with headers, to send.
#[derive(Debug, Clone, Copy)]
pub struct WithHeaders<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: &'a [u8],
}

impl Outgoing for WithHeaders<'_> {
    fn key(&self) -> Option<&[u8]> {
        self.key
    }
    fn payload(&self) -> &[u8] {
        self.payload
    }
    fn headers(&self) -> &[u8] {
        self.headers
    }
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

mod lock;
mod read;
mod reclaim;
mod send;

pub use lock::RingGuard;
pub use reclaim::{ReclaimError, RepairError, Rewritten, RingRepair};
pub use send::Loan;

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

#[cfg(test)]
mod test_support {
    use std::time::Instant;

    use super::lock::RingGuard;
    use super::send::RecordMeta;
    use super::{SendError, Sender};
    use crate::layout::NO_KEY;
    use crate::region::BrokerRegion;

    pub(super) const ME: Sender = Sender {
        client: 1,
        generation: 1,
    };

    pub(super) fn send(r: &BrokerRegion, payload: &[u8]) -> Result<u64, SendError> {
        r.send(ME, None, payload, 7, || false, Some(Instant::now()))
    }

    /// Sends "a", "b" and "c" in one hold; `committed` hears each offset as it is
    /// assigned, inside the hold.
    pub(super) fn send_abc_in_one_hold(r: &BrokerRegion, committed: impl FnMut(u64)) {
        let abc: [(Option<&[u8]>, &[u8]); 3] = [(None, b"a"), (None, b"b"), (None, b"c")];
        r.send_batch(ME, &abc, 0, || false, None, committed)
            .unwrap();
    }

    /// Commits `payload` inside the hold `g` (published when `g` is dropped).
    pub(super) fn commit_in_hold(r: &BrokerRegion, g: &RingGuard<'_>, payload: &[u8]) -> u64 {
        let first = r.try_reserve(g, ME.client, 1).unwrap().unwrap();
        r.write_record(first, None, payload, &[]).unwrap();
        let meta = RecordMeta {
            sender: ME,
            timestamp_us: 1,
            key_len: NO_KEY,
            payload_len: payload.len() as u32,
            headers_len: 0,
        };
        r.commit(g, first, &meta)
    }

    /// Whether thread `tid` of this process is asleep (in the kernel, waiting).
    pub(super) fn is_asleep(tid: i32) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::region::tests::{test_geometry, test_region};
    use std::time::Instant;

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
}
