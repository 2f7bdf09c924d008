//! Frees ring slots once their records are persisted, logged and consumed by every
//! group. Both audit writers call it as soon as they have written a buffer, and the
//! cleaner on each pass: whichever condition is met last frees the slots at once,
//! rather than at the cleaner's next wake-up (a thread hand-off that, with more
//! busy threads than cores, costs tens of microseconds while producers wait).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shm_layout::ring::ReclaimError;
use shm_layout::Region;

pub struct Reclaimer {
    region: Arc<Region>,
    /// Every offset below this is written to the persistence file (published by
    /// the persister).
    persisted: Arc<AtomicU64>,
    /// Every delivery of an offset below this is written to the consumption log,
    /// and every group has consumed it: the cleaner marks the log's buffers with
    /// what all groups have consumed.
    logged: AtomicU64,
    /// One caller at a time: freeing moves the ring's tail, which must only grow.
    lock: Mutex<()>,
}

impl Reclaimer {
    /// `logged` is where the consumption log's written mark starts.
    pub fn new(region: Arc<Region>, persisted: Arc<AtomicU64>, logged: u64) -> Self {
        Reclaimer {
            region,
            persisted,
            logged: AtomicU64::new(logged),
            lock: Mutex::new(()),
        }
    }

    /// Every offset below this is written to the persistence file.
    pub fn persisted(&self) -> u64 {
        self.persisted.load(Ordering::Acquire)
    }

    /// The consumption log's writer has written everything up to `mark`.
    pub fn note_logged(&self, mark: u64) {
        self.logged.fetch_max(mark, Ordering::AcqRel);
    }

    /// Frees every record below both marks; returns how many were freed.
    pub fn reclaim(&self) -> Result<u64, ReclaimError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let upto = self
            .logged
            .load(Ordering::Acquire)
            .min(self.persisted.load(Ordering::Acquire));
        self.region.reclaim(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::ring::Sender;
    use shm_layout::Geometry;

    #[test]
    fn slots_are_freed_only_below_both_marks() {
        let name = format!("/mk-unit-reclaim-{}", std::process::id());
        let _ = Region::unlink(&name);
        let geometry = Geometry {
            slots: 16,
            slot_size: 64,
            max_message: 512,
            max_clients: 8,
            max_groups: 4,
            redeliveries_per_group: 8,
        };
        let region = Arc::new(Region::create(&name, geometry, [1, 2], std::process::id()).unwrap());
        let me = Sender {
            client: 1,
            generation: 1,
        };
        for _ in 0..8 {
            region.send(me, None, b"m", 0, || false, None).unwrap();
        }
        let persisted = Arc::new(AtomicU64::new(5));
        let reclaimer = Reclaimer::new(region.clone(), persisted.clone(), 0);
        assert_eq!(reclaimer.reclaim().unwrap(), 0, "nothing logged yet");
        reclaimer.note_logged(3);
        assert_eq!(reclaimer.reclaim().unwrap(), 3);
        reclaimer.note_logged(7);
        assert_eq!(reclaimer.reclaim().unwrap(), 2, "persisted stops at 5");
        // A late, smaller mark from the other writer never moves anything back.
        reclaimer.note_logged(4);
        persisted.store(8, Ordering::Release);
        assert_eq!(reclaimer.reclaim().unwrap(), 2);
        assert_eq!(region.used_slots(), 1);
        let _ = Region::unlink(&name);
    }
}
