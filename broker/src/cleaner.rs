//! The cleaner thread: logs every delivery to `log_consumo.txt` (through a double
//! buffer), frees the slots of records that every group has consumed *and* that are
//! persisted and logged, releases the reservations of producers that left without
//! committing, keeps the group-position state file, and samples rates.
//!
//! It runs when a producer short of space asks, and at least every [`PERIOD`].
//!
//! It is also where a scribbled region is found and repaired: each pass checks
//! every group's redelivery table against the broker's book of offers (in the
//! registry), and a reclaim that fails on state that cannot be valid (an index
//! entry below `next_offset` that describes no record, an impossible slot
//! descriptor) makes it rebuild the ring's descriptors from the index. Each kind
//! of fault is reported once, in one line on stderr starting `broker: `.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use audit_format::records::LOG_FILE;
use shm_layout::event::{self, event_id};
use shm_layout::BrokerRegion;

use crate::audit::double_buffer::DoubleBuffer;
use crate::audit::state;
use shm_layout::ring::Rewritten;

use crate::reclaim::{Reclaimer, RingRepairError, RingRepaired};
use crate::registry::{DeadLetterTopic, Registry};
use crate::topics::CreateError;

/// Longest time between two passes.
pub const PERIOD: Duration = Duration::from_millis(5);

/// How long after a repair that did not make reclaiming possible again the next
/// one is tried: each takes the ring lock for a ring's worth of work.
const REPAIR_BACKOFF: Duration = Duration::from_secs(1);

/// What the cleaner has reported of repairs to the ring, and when it may try one.
#[derive(Debug, Default)]
pub struct RingRepairs {
    /// Kinds of fault reported so far: each is reported once.
    reported: HashSet<&'static str>,
    /// No repair before this (after one that left reclaiming impossible).
    not_before: Option<Instant>,
}

impl RingRepairs {
    /// Prints `line` if no fault of `kind` was reported before.
    fn report(&mut self, kind: &'static str, line: impl FnOnce() -> String) {
        if self.reported.insert(kind) {
            eprintln!(
                "broker: {} (later faults of this kind are repaired without a report)",
                line()
            );
        }
    }

    /// Reports what a repair found, once per kind.
    fn report_repair(&mut self, done: &RingRepaired, slots: u32) {
        let more = |n: usize| match n {
            0 | 1 => String::new(),
            n => format!(" ({} more like it)", n - 1),
        };
        let (passed, lost): (Vec<_>, Vec<_>) = done
            .newly_unreadable
            .iter()
            .partition(|&&(_, passed)| passed);
        if let Some(&&(o, _)) = passed.first() {
            self.report("index-passed", || format!(
                "repaired the ring: the index entry of offset {o} no longer described its record, which every group had passed and both files hold; dropped from the ring{}",
                more(passed.len())
            ));
        }
        if let Some(&&(o, _)) = lost.first() {
            let file = if o < done.persisted {
                "persistencia_mensajes.txt holds it"
            } else {
                "it was never persisted"
            };
            self.report("index-lost", || format!(
                "repaired the ring: the index entry of offset {o} no longer described its record; groups that had not read it lose it ({file}){}",
                more(lost.len())
            ));
        }
        let (wrong, freed): (Vec<&Rewritten>, Vec<&Rewritten>) = done
            .rewritten
            .iter()
            .partition(|w| w.was_impossible(slots) || w.described_a_record);
        if let Some(w) = wrong.first() {
            self.report("descriptor", || format!(
                "repaired the ring: the slot descriptor at position {} held {:#x}, which does not describe the allocation there; rewritten from the index{}",
                w.position, w.found, more(wrong.len())
            ));
        }
        // Slots of records found unreadable are freed as a matter of course.
        if let (Some(w), true) = (freed.first(), done.newly_unreadable.is_empty()) {
            self.report("orphan", || format!(
                "repaired the ring: the slot descriptor at position {} held {:#x}, an allocation no record or live producer holds; freed{}",
                w.position, w.found, more(freed.len())
            ));
        }
    }
}

/// The cleaner's state.
pub struct Cleaner {
    pub region: Arc<BrokerRegion>,
    pub registry: Arc<Mutex<Registry>>,
    pub log: DoubleBuffer,
    /// Frees what is persisted, logged and consumed.
    pub reclaimer: Arc<Reclaimer>,
    /// The partitions' rings' consumed marks, waiting for their log lines.
    pub consumed_marks: Arc<crate::reclaim::ConsumedMarks>,
    /// `offsets.txt`: where offsets end and groups resume (and readers' commits).
    pub state_file: Arc<state::StateFile>,
    pub flush_interval: Duration,
    /// Every offset below this has been assigned: what the state file's `end` says.
    pub end: u64,
    /// Repairs of the ring, and what was reported of them.
    pub repairs: RingRepairs,
    /// Whether a repair of the region's identity line was reported (once).
    pub identity_reported: bool,
    /// The rings of the other topic-partitions.
    pub topics: Arc<crate::topics::Topics>,
    /// Gone producers, with the partition rings where their holds are released.
    pub released: std::collections::HashMap<u32, std::collections::HashSet<u32>>,
    /// The end of each partition ring's offsets saved last, by ring number.
    pub partition_ends: std::collections::HashMap<u32, u64>,
    /// Partition rings whose failed repair was reported.
    pub partition_repair_reported: std::collections::HashSet<u32>,
    /// When each partition ring may be repaired again.
    pub partition_repair_after: std::collections::HashMap<u32, Instant>,
}

impl Cleaner {
    /// Runs passes until `stop`; then logs what is left, closes the log and saves the
    /// group positions. Returns the first error that stopped the audit trail, naming
    /// its file.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let in_log = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{LOG_FILE}: {e}"));
        let mut saved_at = Instant::now();
        // The state file's last save failed (reported once, until one succeeds).
        let mut save_failing = false;
        let mut line = Vec::new();
        while !stop.load(Ordering::Acquire) {
            self.pass(&mut line).map_err(in_log)?;
            if saved_at.elapsed() >= self.flush_interval {
                let (ends, groups) = self.positions();
                match self
                    .state_file
                    .save_positions(ends, groups, save_failing, false)
                {
                    Ok(_) if save_failing => {
                        eprintln!("broker: {} saved again", state::STATE_FILE);
                        save_failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if !save_failing => {
                        eprintln!("broker: cannot save {}: {e}; retrying", state::STATE_FILE);
                        save_failing = true;
                    }
                    Err(_) => {}
                }
                saved_at = Instant::now();
            }
            let h = self.region.header();
            event::nap(&h.cleaner, event_id::CLEANER, PERIOD);
        }
        // Either a consumer taking now sees the region closing and hands nothing
        // out, or this last pass sees its take.
        self.region.fence_before_last_look();
        let _ = self.pass(&mut line);
        let (ends, groups) = self.positions();
        self.log.close().map_err(in_log)?;
        self.state_file
            .save_positions(ends, groups, true, true)
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", state::STATE_FILE)))
    }

    /// Where offsets end and groups resume now, for the state file. The end never goes back, and counts
    /// only records that are really there: those readable from what the persister
    /// has written on (neither a scribbled `next_offset` nor a scribbled index
    /// entry is believed). A ring's worth at most.
    fn positions(&mut self) -> (Vec<state::PartitionEnd>, Vec<state::GroupState>) {
        let readable = readable_end(&self.region, self.reclaimer.persisted());
        self.end = self.end.max(readable);
        let mut ends = vec![state::PartitionEnd {
            topic: state::DEFAULT_TOPIC.to_string(),
            partition: state::DEFAULT_PARTITION,
            end: self.end,
        }];
        // Every other topic-partition's the same way.
        for r in self.topics.rings() {
            let readable = readable_end(&r.region, r.persisted.load(Ordering::Acquire));
            let end = self.partition_ends.entry(r.number).or_insert(0);
            *end = (*end).max(readable);
            ends.push(state::PartitionEnd {
                topic: r.partition.topic.clone(),
                partition: r.partition.partition,
                end: *end,
            });
        }
        (ends, self.registry().group_states())
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass. An error is the audit trail's: a corrupt ring is repaired or
    /// reported here.
    fn pass(&mut self, line: &mut Vec<u8>) -> std::io::Result<()> {
        self.restore_identity();
        let next = self.region.next_offset();
        let dead_letter_topics;
        let (consumed, gone_producers, log_wanted) = {
            let mut reg = self.registry();
            let mut consumed = reg.consumed_by_all();
            reg.observe_readers();
            reg.release_quarantined();
            reg.swap_log_text(line);
            reg.sample_rates();
            // A ring an eighth full waits for the lines of its deliveries.
            let filling =
                |r: &shm_layout::BrokerRegion| r.used_slots() * 8 >= r.geometry().slots as u64;
            let partition_filling = consumed
                .partitions
                .iter()
                .any(|m| m.position != u64::MAX && filling(&m.ring.region));
            // Each ring's mark holds once the lines made so far are written, unless
            // a group took a hold there since it was computed.
            let default = (self.reclaimer.hold(), consumed.default.unwrap_or(next));
            self.consumed_marks.push(
                reg.log_end(),
                default,
                std::mem::take(&mut consumed.partitions),
            );
            let log_wanted = reg.take_log_wanted() || partition_filling || filling(&self.region);
            dead_letter_topics = reg.take_wanted_dead_letter_topics(Instant::now());
            (consumed, reg.has_gone_producers(), log_wanted)
        };
        self.create_dead_letter_topics(dead_letter_topics);
        // A rotation, a redelivery slot or a client entry waits for its lines to
        // be written before it is given up, and a ring filling up waits for them
        // to free its slots: write them now.
        let urgent = log_wanted;
        // Every delivery of an offset below the groups' positions is in these lines.
        self.log
            .append_batch(line, consumed.default.unwrap_or(next), urgent)?;
        if gone_producers {
            self.release_gone_producers();
        }
        if let Err(failure) = self.reclaimer.reclaim() {
            self.repair_ring(failure);
        }
        self.repair_partitions();
        let freed = self.region.freed_offset();
        self.registry().release_retired(freed);
        Ok(())
    }

    /// Creates the dead-letter topics dead letters wait for, each on a thread of
    /// its own: reserving a region takes time, and the cleaner's passes free
    /// every ring's slots meanwhile. Their letters are published at a pass after.
    fn create_dead_letter_topics(&mut self, names: Vec<String>) {
        for name in names {
            let (topics, registry) = (self.topics.clone(), self.registry.clone());
            let (region, topic) = (self.region.clone(), name.clone());
            let created = std::thread::Builder::new()
                .name("dlq-topic".into())
                .spawn(move || {
                    let made = match topics.create_unless_busy(&topic) {
                        None | Some(Err(CreateError::Stopping)) => DeadLetterTopic::Later,
                        Some(Ok(_)) => DeadLetterTopic::Created,
                        Some(Err(CreateError::Exists(_))) => DeadLetterTopic::Exists,
                        Some(Err(e)) => DeadLetterTopic::Failed(e.to_string()),
                    };
                    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
                    reg.dead_letter_topic_made(&topic, made);
                    drop(reg);
                    event::wake(&region.header().cleaner);
                });
            if let Err(e) = created {
                let why = format!("cannot start a thread to create it: {e}");
                self.registry()
                    .dead_letter_topic_made(&name, DeadLetterTopic::Failed(why));
            }
        }
    }

    /// Writes back what another process overwrote in the region's identity line
    /// (clients trust it: a stray closing mark would stop them all); says so once.
    fn restore_identity(&mut self) {
        let restored = self.region.restore_identity();
        if !restored.is_empty() && !std::mem::replace(&mut self.identity_reported, true) {
            eprintln!(
                "broker: restored the region's identity line ({}), overwritten by another process",
                restored.join(", ")
            );
        }
    }

    /// Repairs the partition rings whose reclaim failed (see `repair_ring`), each
    /// repair reported once per ring; a ring whose lock is held, or that a repair
    /// cannot mend, is tried again when its next reclaim fails.
    fn repair_partitions(&mut self) {
        let now = Instant::now();
        for ring in self.topics.take_repairs() {
            // A ring a repair could not mend is tried again after a while, not on
            // every pass (its next failed reclaim asks again).
            if self
                .partition_repair_after
                .get(&ring.number)
                .is_some_and(|after| now < *after)
            {
                continue;
            }
            self.partition_repair_after
                .insert(ring.number, now + REPAIR_BACKOFF);
            match ring.reclaimer.try_repair() {
                Ok(done) => {
                    if !done.newly_unreadable.is_empty() || !done.rewritten.is_empty() {
                        eprintln!(
                            "broker: repaired the ring of {}: {} descriptors rewritten, {} unreadable records passed over",
                            ring.partition,
                            done.rewritten.len(),
                            done.newly_unreadable.len()
                        );
                    }
                    ring.reclaim();
                }
                Err(RingRepairError::Busy(_)) => ring.reclaim(),
                Err(RingRepairError::Repair(e)) => {
                    if self.partition_repair_reported.insert(ring.number) {
                        eprintln!(
                            "broker: cannot repair the ring of {}: {e}; its producers wait until the broker restarts",
                            ring.partition
                        );
                    }
                }
            }
        }
    }

    /// Releases the holds of gone producers in every partition's ring: one try at
    /// each ring's lock, holding neither the control ring's lock nor the registry
    /// (a ring whose lock is held is tried on the next pass). After each release the
    /// ring is marked pending and reclaimed: the lock repaired any commit the
    /// producer's death cut short, and freed slots may let the tail move.
    fn release_in_partitions(&mut self) {
        let gone = self.registry().producers_to_release_in_partitions();
        if gone.is_empty() {
            return;
        }
        let rings = self.topics.rings();
        for c in gone {
            let done = self.released.entry(c).or_default();
            for ring in &rings {
                if done.contains(&ring.number) {
                    continue;
                }
                if let Ok(Some(guard)) = ring.region.try_lock_ring() {
                    ring.region.abandon_reservations(&guard, c);
                    drop(guard);
                    done.insert(ring.number);
                    self.region.mark_ring_pending(ring.number);
                    ring.reclaim();
                } else if !ring.region.may_hold_reservation(c) {
                    // Held by another (a stopped producer, say) but holding
                    // nothing of this one's: not a reason to keep it from retiring.
                    done.insert(ring.number);
                }
            }
            if rings.iter().all(|r| done.contains(&r.number)) {
                self.released.remove(&c);
                self.registry().released_in_partitions(c);
            }
        }
    }

    /// A reclaim failed on ring state that cannot be valid: repairs the ring and
    /// reclaims again. The ring lock is taken with a timeout, so a stopped holder
    /// only puts the repair off to a later pass; a repair that cannot help (the
    /// cursors themselves are corrupt) is reported once and retried only after
    /// [`REPAIR_BACKOFF`].
    fn repair_ring(&mut self, failure: shm_layout::ring::ReclaimError) {
        if self.repairs.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let stuck = match self.reclaimer.repair() {
            Ok(done) => {
                self.repairs
                    .report_repair(&done, self.region.geometry().slots);
                match self.reclaimer.reclaim() {
                    Ok(_) => None,
                    Err(again) => Some(format!("{again} even after a repair")),
                }
            }
            // Held by a producer in its hold, or the broker is stopping.
            Err(RingRepairError::Busy(_)) => return,
            Err(RingRepairError::Repair(e)) => Some(format!("{failure}, and {e}")),
        };
        self.repairs.not_before = stuck.as_ref().map(|_| Instant::now() + REPAIR_BACKOFF);
        if let Some(why) = stuck {
            self.repairs.report("unrepaired", || {
                format!(
                    "cleaner refused to reclaim: {why}; producers wait until the broker restarts"
                )
            });
        }
    }

    fn release_gone_producers(&mut self) {
        self.release_in_partitions();
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

/// How far `region`'s committed records reach from `persisted`, counting only
/// records that are really there (neither a scribbled `next_offset` nor a
/// scribbled index entry is believed): a ring's worth at most.
fn readable_end(region: &shm_layout::Region, persisted: u64) -> u64 {
    let next = region.next_offset();
    let limit = persisted + region.geometry().slots as u64;
    let mut readable = persisted;
    while readable < next.min(limit) && region.read_record(readable).is_ok() {
        readable += 1;
    }
    readable
}
