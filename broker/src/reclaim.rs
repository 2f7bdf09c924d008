//! Frees ring slots once their records are persisted, logged and consumed by every
//! group. Both audit writers call it as soon as they have written a buffer, and the
//! cleaner on each pass: whichever condition is met last frees the slots at once,
//! rather than at the cleaner's next wake-up (a thread hand-off that, with more
//! busy threads than cores, costs tens of microseconds while producers wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shm_layout::ring::{ReclaimError, RepairError, Rewritten};
use shm_layout::BrokerRegion;

use crate::registry::PartitionConsumed;
use crate::when_written::WhenWritten;

pub struct Reclaimer {
    region: Arc<BrokerRegion>,
    /// Every offset below this is written to the persistence file (published by
    /// the persister).
    persisted: Arc<AtomicU64>,
    /// Every delivery of an offset below this is written to the consumption log,
    /// and every group has consumed it: the cleaner marks the log's buffers with
    /// what all groups have consumed.
    logged: AtomicU64,
    /// Where a reservation's owner is looked up in a repair: the control region,
    /// for a partition's ring (None: this ring's own region).
    clients: Option<Arc<BrokerRegion>>,
    /// The holds groups took on this ring (see [`Reclaimer::hold_from`]), under
    /// a lock, so that a mark computed before a hold never lifts it.
    holds: Mutex<Holds>,
    /// One caller at a time: freeing moves the ring's tail, which must only grow,
    /// and a repair must not race a reclaim. Holds the offsets repairs found
    /// unreadable and reclaim has not passed yet (ascending).
    dropped: Mutex<Vec<u64>>,
}

/// The holds taken on a ring: how many, and where the recent ones start.
#[derive(Default)]
struct Holds {
    taken: u64,
    /// (number, start) of the holds no applied mark knew of yet.
    recent: std::collections::VecDeque<(u64, u64)>,
}

/// What a repair of the ring found, for the broker to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingRepaired {
    /// Unreadable offsets this repair found that no earlier one had, each with
    /// whether every group had passed it and it was persisted and logged.
    pub newly_unreadable: Vec<(u64, bool)>,
    /// Every offset below this was persisted when the repair ran.
    pub persisted: u64,
    /// Descriptors rewritten.
    pub rewritten: Vec<Rewritten>,
}

/// Why a repair could not run or changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RingRepairError {
    /// The ring lock stayed held (a producer stopped in its hold?): try later.
    #[error("the ring lock is held: {0}")]
    Busy(shm_layout::ring::SendError),
    #[error(transparent)]
    Repair(#[from] RepairError),
}

impl Reclaimer {
    /// `logged` is where the consumption log's written mark starts.
    pub fn new(region: Arc<BrokerRegion>, persisted: Arc<AtomicU64>, logged: u64) -> Self {
        Reclaimer {
            region,
            persisted,
            clients: None,
            logged: AtomicU64::new(logged),
            holds: Mutex::new(Holds::default()),
            dropped: Mutex::new(Vec::new()),
        }
    }

    /// For a partition's ring: repairs keep a reservation while its owner is a
    /// live producer in `clients`, the control region.
    pub fn with_clients(mut self, clients: Arc<BrokerRegion>) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Every offset below this is written to the persistence file.
    pub fn persisted(&self) -> u64 {
        self.persisted.load(Ordering::Acquire)
    }

    /// Every delivery of an offset below this is in the consumption log, and
    /// every group has consumed it.
    pub fn logged(&self) -> u64 {
        self.logged.load(Ordering::Acquire)
    }

    /// A group starts holding this ring (a partition's) from `start`: nothing at
    /// or above it is freed until [`Reclaimer::note_consumed`] says so. The
    /// mark only comes down: other groups may hold the ring from further back.
    pub fn hold_from(&self, start: u64) {
        // Not while a reclaim runs: one that read the mark before this hold would
        // free what the group is about to read from the ring.
        let _reclaiming = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.taken += 1;
        let taken = holds.taken;
        holds.recent.push_back((taken, start));
        self.logged.fetch_min(start, Ordering::AcqRel);
    }

    /// Which holds a mark computed now knows of, for [`Reclaimer::note_consumed`].
    pub fn hold(&self) -> u64 {
        self.holds.lock().unwrap_or_else(|p| p.into_inner()).taken
    }

    /// Every group holding this ring as of `hold` has consumed every offset
    /// below `mark`, and their deliveries are in the log. A group that took its
    /// hold since is not covered: the mark then frees nothing at or past where
    /// that hold starts. Marks come in the order they were computed.
    pub fn note_consumed(&self, hold: u64, mark: u64) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let unknown = holds.recent.iter().filter(|&&(n, _)| n > hold);
        let mark = unknown.map(|&(_, start)| start).fold(mark, u64::min);
        self.logged.fetch_max(mark, Ordering::AcqRel);
        // Later marks know of the holds this one knew of.
        while holds.recent.front().is_some_and(|&(n, _)| n <= hold) {
            holds.recent.pop_front();
        }
    }

    /// Every offset below this is persisted, logged and consumed by every group.
    fn mark(&self) -> u64 {
        self.logged
            .load(Ordering::Acquire)
            .min(self.persisted.load(Ordering::Acquire))
    }

    /// Frees every record below both marks; returns how many were freed.
    pub fn reclaim(&self) -> Result<u64, ReclaimError> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.region.reclaim_skipping(self.mark(), &dropped);
        if !dropped.is_empty() {
            let freed = self.region.freed_offset();
            dropped.retain(|&o| o >= freed);
        }
        result
    }

    /// After a reclaim failed: takes the ring lock (timed: a stopped holder only
    /// delays the repair to a later pass) and rebuilds the ring's descriptors
    /// from the index (see `Region::repair_ring`). A reservation is kept only
    /// while its owner's client entry is an active producer. Offsets found
    /// unreadable are passed over by every later reclaim.
    pub fn repair(&self) -> Result<RingRepaired, RingRepairError> {
        self.repair_with(false)
    }

    /// As [`Reclaimer::repair`], with one try at the ring lock: Busy at once while
    /// another holds it (for the rings a thread serves many of, where one ring's
    /// stopped holder must not make the others wait).
    pub fn try_repair(&self) -> Result<RingRepaired, RingRepairError> {
        self.repair_with(true)
    }

    fn repair_with(&self, one_try: bool) -> Result<RingRepaired, RingRepairError> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let guard = if one_try {
            self.region
                .try_lock_ring()
                .map_err(RingRepairError::Busy)?
                .ok_or(RingRepairError::Busy(shm_layout::ring::SendError::Stopped))?
        } else {
            let mut tries = 0;
            self.region
                .lock_ring(|| {
                    tries += 1;
                    tries > 1
                })
                .map_err(RingRepairError::Busy)?
        };
        let region = &self.region;
        let clients = self.clients.as_deref().unwrap_or(region);
        let repair = region.repair_ring(&guard, |owner| {
            clients.client(owner).is_some_and(|c| c.is_live_producer())
        })?;
        drop(guard);
        let mark = self.mark();
        let mut newly_unreadable = Vec::new();
        for &o in &repair.unreadable {
            if dropped.binary_search(&o).is_err() {
                newly_unreadable.push((o, o < mark));
            }
        }
        dropped.extend(newly_unreadable.iter().map(|&(o, _)| o));
        dropped.sort_unstable();
        Ok(RingRepaired {
            newly_unreadable,
            persisted: self.persisted.load(Ordering::Acquire),
            rewritten: repair.rewritten,
        })
    }
}

/// How far the groups holding each ring have consumed it, each mark waiting
/// for the consumption log to hold the lines of those deliveries before it
/// frees slots.
pub struct ConsumedMarks {
    partitions: WhenWritten<Vec<PartitionConsumed>>,
    /// `default`/0's: (hold, mark), for `control`.
    default: WhenWritten<(u64, u64)>,
    /// What frees `default`/0's slots.
    control: Arc<Reclaimer>,
}

impl ConsumedMarks {
    /// Marks of the rings, `default`/0's freed by `control`.
    pub fn new(control: Arc<Reclaimer>) -> Self {
        ConsumedMarks {
            partitions: WhenWritten::default(),
            default: WhenWritten::default(),
            control,
        }
    }

    /// Settles against `written`, the log's count of bytes written.
    pub fn watch(&self, written: Arc<AtomicU64>) {
        self.partitions.watch(written.clone());
        self.default.watch(written);
    }

    /// `default` (`default`/0's hold and mark) and `marks` hold once the log has
    /// written `end` bytes.
    pub fn push(&self, end: u64, default: (u64, u64), marks: Vec<PartitionConsumed>) {
        self.default.push(end, default);
        if !marks.is_empty() {
            self.partitions.push(end, marks);
        }
        self.settle();
    }

    /// Applies the marks whose lines are written, freeing slots.
    pub fn settle(&self) {
        let mut freed_default = false;
        for (hold, mark) in self.default.take_due() {
            self.control.note_consumed(hold, mark);
            freed_default = true;
        }
        if freed_default {
            // A failure is the cleaner's to repair, at its next pass.
            let _ = self.control.reclaim();
        }
        for m in self.partitions.take_due().into_iter().flatten() {
            m.ring.reclaimer.note_consumed(m.hold, m.position);
            m.ring.reclaim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_region::test_region;
    use shm_layout::ring::{ReclaimError, Sender};

    /// Eight one-slot records, offsets 0..8.
    fn send_eight(region: &BrokerRegion) {
        let me = Sender {
            client: 1,
            generation: 1,
        };
        for _ in 0..8 {
            region.send(me, None, b"m", 0, || false, None).unwrap();
        }
    }

    #[test]
    fn slots_are_freed_only_below_both_marks() {
        let t = test_region("reclaim", 16);
        let region = &t.0;
        send_eight(region);
        let persisted = Arc::new(AtomicU64::new(5));
        let reclaimer = Reclaimer::new(region.clone(), persisted.clone(), 0);
        assert_eq!(reclaimer.reclaim().unwrap(), 0, "nothing logged yet");
        let hold = reclaimer.hold();
        reclaimer.note_consumed(hold, 3);
        assert_eq!(reclaimer.reclaim().unwrap(), 3);
        reclaimer.note_consumed(hold, 7);
        assert_eq!(reclaimer.reclaim().unwrap(), 2, "persisted stops at 5");
        // A late, smaller mark from the other writer never moves anything back.
        reclaimer.note_consumed(hold, 4);
        persisted.store(8, Ordering::Release);
        assert_eq!(reclaimer.reclaim().unwrap(), 2);
        assert_eq!(region.used_slots(), 1);
    }

    #[test]
    fn a_hold_keeps_what_a_group_reads_and_a_mark_made_before_it_never_lifts_it() {
        let t = test_region("holds", 16);
        let region = &t.0;
        send_eight(region);
        let reclaimer = Reclaimer::new(region.clone(), Arc::new(AtomicU64::new(8)), u64::MAX);
        // Nobody holds it: whatever is persisted may go.
        reclaimer.hold_from(2);
        assert_eq!(reclaimer.reclaim().unwrap(), 2, "held from offset 2");
        // A second group joining from further on does not lift the first's hold.
        let before = reclaimer.hold();
        reclaimer.hold_from(6);
        assert_eq!(reclaimer.logged(), 2);
        // A mark made before that hold (knowing only the first group, which had
        // consumed below 7) frees nothing of what the second reads.
        reclaimer.note_consumed(before, 7);
        assert_eq!(reclaimer.reclaim().unwrap(), 4, "offsets 2 to 5");
        // One made since counts in full.
        reclaimer.note_consumed(reclaimer.hold(), 7);
        assert_eq!(reclaimer.reclaim().unwrap(), 1);
        // And once no group holds it, everything persisted goes.
        reclaimer.note_consumed(reclaimer.hold(), u64::MAX);
        assert_eq!(reclaimer.reclaim().unwrap(), 1);
        assert_eq!(region.used_slots(), 0);
    }

    #[test]
    fn a_repair_drops_unreadable_offsets_once_and_says_which_every_group_had_passed() {
        let t = test_region("repair", 16);
        let region = &t.0;
        send_eight(region);
        let reclaimer = Reclaimer::new(region.clone(), Arc::new(AtomicU64::new(8)), 5);
        region.index_entry(3).stamp.store(0, Ordering::Relaxed);
        region.index_entry(6).stamp.store(0, Ordering::Relaxed);
        assert_eq!(reclaimer.reclaim(), Err(ReclaimError::Corrupt(3)));
        let done = reclaimer.repair().unwrap();
        assert_eq!(done.newly_unreadable, [(3, true), (6, false)]);
        assert_eq!(done.persisted, 8);
        assert_eq!(reclaimer.reclaim(), Ok(1), "offset 4; 3 is passed over");
        assert!(
            reclaimer.repair().unwrap().newly_unreadable.is_empty(),
            "reported once"
        );
        reclaimer.note_consumed(reclaimer.hold(), 8);
        assert_eq!(reclaimer.reclaim(), Ok(2), "5 and 7; 6 is passed over");
        assert_eq!(region.used_slots(), 0);
        assert!(
            reclaimer.dropped.lock().unwrap().is_empty(),
            "forgotten once passed"
        );
    }
}
