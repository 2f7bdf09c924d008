//! The cleaner thread: frees the slots of records every group has consumed, releases
//! the reservations of producers that left without committing, and wakes producers
//! waiting for space. It runs when a producer short of space asks, and at least
//! every [`PERIOD`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shm_layout::event::{self, event_id};
use shm_layout::Region;

use crate::registry::Registry;

/// Longest time between two passes.
pub const PERIOD: Duration = Duration::from_millis(10);

/// Runs passes until `stop` is set.
pub fn run(region: Arc<Region>, registry: Arc<Mutex<Registry>>, stop: Arc<AtomicBool>) {
    let mut reported = false;
    while !stop.load(Ordering::Acquire) {
        if let Err(e) = pass(&region, &registry) {
            if !reported {
                eprintln!("broker: cleaner refused to reclaim: {e}");
                reported = true;
            }
        }
        let h = region.header();
        let seq = h.cleaner.seq.load(Ordering::Acquire);
        event::sleep_once(
            &h.cleaner,
            event_id::CLEANER,
            None,
            || h.cleaner.seq.load(Ordering::Acquire) != seq,
            PERIOD,
        );
    }
}

/// One pass: returns an error when the region's ring state is corrupt.
pub fn pass(region: &Region, registry: &Mutex<Registry>) -> Result<(), String> {
    let (upto, abandoned) = {
        let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
        (reg.consumed_by_all(), reg.take_abandoned())
    };
    if !abandoned.is_empty() {
        release_abandoned(region, registry, abandoned);
    }
    let upto = upto.unwrap_or_else(|| region.next_offset());
    let reclaimed = region.reclaim(upto).map_err(|e| e.to_string());
    let freed = region.header().reclaim.freed_offset.load(Ordering::Acquire);
    registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release_retired(freed);
    reclaimed.map(|_| ())
}

fn release_abandoned(region: &Region, registry: &Mutex<Registry>, clients: Vec<u32>) {
    // A timed lock: a stopped producer holding the ring lock must not stall the
    // cleaner forever; the work is retried on the next pass.
    let mut tries = 0;
    let guard = region.lock_ring(|| {
        tries += 1;
        tries > 1
    });
    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    match guard {
        Ok(guard) => {
            for c in clients {
                region.abandon_reservations(&guard, c);
                // Under the lock, after any repair: every record of `c` is below this.
                reg.retire_producer(c, region.next_offset());
            }
        }
        Err(_) => reg.requeue_abandoned(clients),
    }
}
