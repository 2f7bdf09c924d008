//! The cleaner thread: logs every delivery to `log_consumo.txt` (through a double
//! buffer), frees the slots of records that every group has consumed *and* that are
//! persisted and logged, releases the reservations of producers that left without
//! committing, keeps the group-position state file, and samples rates.
//!
//! It runs when a producer short of space asks, and at least every [`PERIOD`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shm_layout::event::{self, event_id};
use shm_layout::Region;

use crate::audit::double_buffer::DoubleBuffer;
use crate::audit::records::LOG_FILE;
use crate::audit::state;
use crate::reclaim::Reclaimer;
use crate::registry::Registry;

/// Longest time between two passes.
pub const PERIOD: Duration = Duration::from_millis(5);

/// The cleaner's state.
pub struct Cleaner {
    pub region: Arc<Region>,
    pub registry: Arc<Mutex<Registry>>,
    pub log: DoubleBuffer,
    /// Frees what is persisted, logged and consumed.
    pub reclaimer: Arc<Reclaimer>,
    pub data_dir: PathBuf,
    pub flush_interval: Duration,
    pub fsync: bool,
    /// Every offset below this has been assigned: what the state file's `end` says.
    pub end: u64,
}

impl Cleaner {
    /// Runs passes until `stop`; then logs what is left, closes the log and saves the
    /// group positions. Returns the first error that stopped the audit trail, naming
    /// its file.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let in_log = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{LOG_FILE}: {e}"));
        let mut reported = false;
        let mut saved = state::State::default();
        let mut saved_at = Instant::now();
        // The state file's last save failed (reported once, until one succeeds).
        let mut save_failing = false;
        let mut line = Vec::new();
        while !stop.load(Ordering::Acquire) {
            if let Err(e) = self.pass(&mut line) {
                if e.kind() != std::io::ErrorKind::InvalidData {
                    return Err(in_log(e));
                }
                if !reported {
                    eprintln!("broker: cleaner refused to reclaim: {e}");
                    reported = true;
                }
            }
            if saved_at.elapsed() >= self.flush_interval {
                let now = self.state();
                if now != saved || save_failing {
                    match state::save(&self.data_dir, &now, self.fsync) {
                        Ok(()) if save_failing => {
                            eprintln!("broker: {} saved again", state::STATE_FILE);
                            save_failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if !save_failing => {
                            eprintln!("broker: cannot save {}: {e}; retrying", state::STATE_FILE);
                            save_failing = true;
                        }
                        Err(_) => {}
                    }
                    saved = now;
                }
                saved_at = Instant::now();
            }
            let h = self.region.header();
            event::nap(&h.cleaner, event_id::CLEANER, PERIOD);
        }
        // Pairs with the fence a consumer takes after a take: either it sees the
        // region closing and hands nothing out, or this last pass sees its take.
        std::sync::atomic::fence(Ordering::SeqCst);
        let _ = self.pass(&mut line);
        let states = self.state();
        self.log.close().map_err(in_log)?;
        state::save(&self.data_dir, &states, true)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", state::STATE_FILE)))
    }

    /// What the state file should say now. The end never goes back, and counts
    /// only records that are really there: those readable from what the persister
    /// has written on (neither a scribbled `next_offset` nor a scribbled index
    /// entry is believed). A ring's worth at most.
    fn state(&mut self) -> state::State {
        let next = self.region.next_offset();
        let mut readable = self.reclaimer.persisted();
        let limit = readable + self.region.geometry().slots as u64;
        while readable < next.min(limit) && self.region.read_record(readable).is_ok() {
            readable += 1;
        }
        self.end = self.end.max(readable);
        state::State {
            ends: vec![state::PartitionEnd {
                topic: state::DEFAULT_TOPIC.to_string(),
                partition: state::DEFAULT_PARTITION,
                end: self.end,
            }],
            groups: self.registry().group_states(),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass. An `InvalidData` error means the region's ring state is corrupt.
    fn pass(&mut self, line: &mut Vec<u8>) -> std::io::Result<()> {
        let next = self.region.next_offset();
        let (consumed, gone_producers) = {
            let mut reg = self.registry();
            let consumed = reg.consumed_by_all();
            reg.swap_log_text(line);
            reg.sample_rates();
            reg.release_quarantined();
            (consumed, reg.has_gone_producers())
        };
        let urgent = self.region.used_slots() * 8 >= self.region.geometry().slots as u64;
        // Every delivery of an offset below the groups' positions is in these lines.
        self.log
            .append_batch(line, consumed.unwrap_or(next), urgent)?;
        if gone_producers {
            self.release_gone_producers();
        }
        let reclaimed = self.reclaimer.reclaim();
        let freed = self
            .region
            .header()
            .reclaim
            .freed_offset
            .load(Ordering::Acquire);
        self.registry().release_retired(freed);
        reclaimed
            .map(|_| ())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }

    fn release_gone_producers(&self) {
        // A timed lock, taken before the registry's: a stopped producer holding the
        // ring lock must stall neither the cleaner nor the event loop; the work is
        // retried on the next pass.
        let mut tries = 0;
        if let Ok(guard) = self.region.lock_ring(|| {
            tries += 1;
            tries > 1
        }) {
            self.registry().retire_gone_producers(&guard);
        }
    }
}
