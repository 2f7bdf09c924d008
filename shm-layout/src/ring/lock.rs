//! The ring lock: taking it (in timed steps), the guard that publishes a hold's
//! commits when dropped, and the repair of the commits of a holder that died.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::region::{BrokerRegion, Region};
use crate::sys::LockOutcome;

use super::{mark_committed, SendError, POSITION_LIMIT};

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
    pub(super) next: std::cell::Cell<Option<u64>>,
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

    /// One try at the ring lock, without waiting: None while another holds it. As
    /// [`Region::lock_ring`], repairs the ring first if its last holder died.
    pub fn try_lock_ring(&self) -> Result<Option<RingGuard<'_>>, SendError> {
        self.guard_for(self.header().ring_lock.mutex.try_lock())
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
}

impl BrokerRegion {
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
}

impl Region {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::descriptor;
    use crate::region::tests::{test_geometry, test_region};
    use crate::ring::test_support::*;

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
}
