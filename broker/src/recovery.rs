//! Start-up recovery of a region left behind under the broker's name.
//!
//! - No region: nothing to do.
//! - Garbage (bad magic, unknown version, impossible geometry, truncated): replaced.
//! - A region whose broker is alive: never touched; this broker refuses to start.
//! - A region whose broker died: it is marked closing (so clients still attached
//!   stop), its ring lock is taken (repairing a commit cut short), and every record
//!   it holds that `persistencia_mensajes.txt` lacks is appended there, so that no
//!   message whose send returned is lost. Each group's cursor tells how far the
//!   group had been handed messages; the deliveries the dead broker had not yet
//!   written to `log_consumo.txt` are appended there ([`deliveries`]). Then the
//!   region is unlinked and a fresh one is built; the normal restart path replays
//!   from the file what groups had not acknowledged.
//! - A region of another geometry that still holds records: the broker refuses to
//!   start and names that geometry (nothing is discarded silently).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use audit_format::records::PersistedLines;
use shm_layout::region::OwnerState;
use shm_layout::{BrokerRegion, Geometry, Region, RegionError};

use crate::BrokerError;

pub mod deliveries;
pub mod reads;

use deliveries::LostDeliveries;

/// What recovery found and did.
#[derive(Debug, Default)]
pub struct Salvage {
    /// Records appended to the persistence file.
    pub appended: u64,
    /// Delivery lines appended to the consumption log.
    pub deliveries: LostDeliveries,
    /// Standalone readers' lines appended to the consumption log.
    pub reads: u64,
    /// Per group name: every offset below this had been handed out.
    pub handed_out: HashMap<String, u64>,
    /// Per group name: a lower bound of what the group had acknowledged.
    pub acknowledged: HashMap<String, u64>,
    /// One line for the operator, if anything happened.
    pub report: Option<String>,
}

/// Recovers the region `name` (see the module docs). `file_next` is the offset
/// after the last record of `default`/0 in the persistence file, `partitions`
/// the other topic-partitions with where their records there end (their regions
/// salvaged already), `persist` that file and `log` the consumption log, both
/// opened for appending with no line cut short, in `data_dir`.
pub fn salvage(
    name: &str,
    geometry: &Geometry,
    data_dir: &std::path::Path,
    file_next: u64,
    partitions: &[(audit_format::index::TopicPartition, u64)],
    persist: &mut File,
    log: &mut File,
) -> Result<Salvage, BrokerError> {
    let old = match left_behind(name)? {
        Left::Nothing => return Ok(Salvage::default()),
        Left::Garbage(e) => {
            return Ok(Salvage {
                report: Some(format!("replaced an unusable region: {e}")),
                ..Salvage::default()
            });
        }
        Left::Dead(old) => old,
    };
    let pid = old.broker_pid();
    let guard = hold_closed(&old, name)?;
    let next = old.next_offset();
    let freed = old.freed_offset();
    let holds = next > freed;
    if old.geometry() != geometry && holds {
        let g = old.geometry();
        return Err(BrokerError::ForeignRegion {
            name: name.to_string(),
            detail: format!(
                "--slots {} --slot-size {} --max-message {} --max-clients {} --max-groups {}, holding offsets {freed}..{next}",
                g.slots, g.slot_size, g.max_message, g.max_clients, g.max_groups
            ),
        });
    }
    let mut salvage = Salvage {
        appended: persist_lost_records(
            &old,
            &old,
            PersistedLines::default(),
            file_next.max(freed)..next,
            persist,
        )?,
        ..Salvage::default()
    };
    // Its consumers may have printed deliveries it had not yet logged.
    salvage.deliveries =
        deliveries::log_lost_deliveries(&old, freed, next, log).map_err(BrokerError::Audit)?;
    // And its standalone readers, reads it had not logged.
    salvage.reads = reads::log_lost_reads(&old, freed, next, data_dir, partitions, log)
        .map_err(BrokerError::Audit)?;
    for g in 0..old.geometry().max_groups {
        if let (Some(name), Some(entry)) = (old.group_name(g), old.group(g)) {
            let cursor = shm_layout::group::cursor(entry).min(next);
            let acked = acknowledged_lower_bound(&old, g, cursor).max(freed);
            salvage.handed_out.insert(name.clone(), cursor);
            salvage.acknowledged.insert(name, acked);
        }
    }
    drop(guard);
    drop(old);
    Region::unlink(name)?;
    salvage.report = Some(format!(
        "recovered the region of a broker that died (pid {pid}): {} records persisted from it, {}{}",
        salvage.appended,
        describe(&salvage.deliveries),
        match salvage.reads {
            0 => String::new(),
            n => format!(", and {n} reads of standalone readers logged"),
        }
    ));
    Ok(salvage)
}

/// What a dead broker may have left under a region's name.
enum Left {
    Nothing,
    /// Not a region this build can read: unlinked.
    Garbage(RegionError),
    /// Its broker is gone: this one takes the region over, to recover it.
    Dead(BrokerRegion),
}

/// What is under `name`; a region whose broker is alive is never touched.
fn left_behind(name: &str) -> Result<Left, BrokerError> {
    match Region::owner_state(name)? {
        OwnerState::Absent => Ok(Left::Nothing),
        OwnerState::Garbage(e) => {
            Region::unlink(name)?;
            Ok(Left::Garbage(e))
        }
        OwnerState::Alive { pid } => Err(BrokerError::RegionInUse {
            name: name.to_string(),
            pid,
        }),
        OwnerState::Dead(old) => Ok(Left::Dead(BrokerRegion::take_over(old))),
    }
}

/// Holds the ring lock of `old` (repairing a commit its holder's death cut short),
/// then marks the region closing: a send re-checks `closing` under the lock, so
/// nothing commits after this look. A live process stopped while holding the lock
/// would keep it; then this refuses rather than read a ring it may still change.
fn hold_closed<'r>(
    old: &'r BrokerRegion,
    name: &str,
) -> Result<shm_layout::ring::RingGuard<'r>, BrokerError> {
    let mut tries = 0;
    let guard = old
        .lock_ring(|| {
            tries += 1;
            tries > 20
        })
        .map_err(|_| BrokerError::RegionLocked(name.to_string()))?;
    old.mark_closing();
    Ok(guard)
}

/// Appends to the persistence file the records `offsets` of `ring` (whose lines
/// `format` writes), naming their producers from the client table of `clients`
/// (the control region); returns how many. Stops at a record it cannot read.
fn persist_lost_records(
    ring: &Region,
    clients: &Region,
    mut format: PersistedLines,
    offsets: std::ops::Range<u64>,
    persist: &mut File,
) -> Result<u64, BrokerError> {
    let mut out = Vec::new();
    let mut appended = 0;
    // One name per producer, so lines of a run share their formatted start.
    let mut last_producer: Option<((u32, u32), Arc<str>)> = None;
    for o in offsets {
        match ring.read_record(o) {
            Ok(r) => {
                let who = (r.producer, r.producer_generation);
                let producer = match &last_producer {
                    Some((w, name)) if *w == who => name.clone(),
                    _ => {
                        let name = clients.client_name(who.0, who.1);
                        let name: Arc<str> = Arc::from(name.as_deref().unwrap_or("unknown"));
                        last_producer = Some((who, name.clone()));
                        name
                    }
                };
                format.push(
                    &mut out,
                    o,
                    r.timestamp_us,
                    &producer,
                    r.key,
                    r.payload,
                    r.headers,
                );
                appended += 1;
            }
            Err(e) => {
                eprintln!("broker: cannot recover offset {o} from the old region: {e}");
                break;
            }
        }
    }
    persist
        .write_all(&out)
        .and_then(|_| persist.sync_data())
        .map_err(BrokerError::Audit)?;
    Ok(appended)
}

/// Recovers the region `name` of a topic-partition other than `default`/0, left
/// by a dead broker (the control region, `control`, not yet replaced): appends
/// to the persistence file the records it holds that the file lacks (the file's
/// records of the partition end before `file_next`), and to the consumption log
/// the deliveries its groups made there that the log lacks, then unlinks it;
/// returns how many records, and how far each group had acknowledged there.
/// Garbage is unlinked; a region of a live broker is refused; one of another
/// geometry that still holds records is refused, naming it.
pub fn salvage_partition(
    name: &str,
    control: &str,
    partition: &audit_format::index::TopicPartition,
    geometry: &Geometry,
    file_next: u64,
    persist: &mut File,
    log: &mut File,
) -> Result<PartitionSalvage, BrokerError> {
    let Left::Dead(old) = left_behind(name)? else {
        return Ok(PartitionSalvage::default());
    };
    let guard = hold_closed(&old, name)?;
    let next = old.next_offset();
    let freed = old.freed_offset();
    if old.geometry() != geometry && next > freed {
        let g = old.geometry();
        return Err(BrokerError::ForeignRegion {
            name: name.to_string(),
            detail: format!(
                "--slots {} --slot-size {} for {partition}, holding offsets {freed}..{next}",
                g.slots, g.slot_size
            ),
        });
    }
    // Producers are named by the control region the dead broker left, if it is
    // still there (it is recovered after its partitions).
    let clients = Region::open(control).ok();
    let names = clients.as_ref().unwrap_or(&old);
    let appended = persist_lost_records(
        &old,
        names,
        PersistedLines::for_partition(&partition.topic, partition.partition),
        file_next.max(freed)..next,
        persist,
    )?;
    // Its groups' consumers may have printed deliveries it had not yet logged.
    let dead = deliveries::DeadRing {
        ring: &old,
        names,
        partition,
        log_start: clients.as_ref().and_then(|c| c.recorded_log_start()),
    };
    let lost =
        deliveries::log_lost_deliveries_of(&dead, freed, next, log).map_err(BrokerError::Audit)?;
    // What the groups reading it had acknowledged there, which the state file
    // may not have caught up with (it is saved every --flush-interval). A group
    // reading the ring has its entry active there, under its name.
    let groups = (0..old.geometry().max_groups)
        .filter_map(|g| {
            let name = old.group_name(g)?;
            let entry = old.group(g)?;
            let cursor = shm_layout::group::cursor(entry).min(next);
            Some(RecoveredGroup {
                name,
                acknowledged: acknowledged_lower_bound(&old, g, cursor).max(freed),
                handed_out: cursor,
            })
        })
        .collect();
    drop(guard);
    drop(old);
    Region::unlink(name)?;
    if appended > 0 || lost.logged > 0 {
        eprintln!(
            "broker: recovered {appended} records of {partition} from the region of a broker that died, {}",
            describe(&lost)
        );
    }
    Ok(PartitionSalvage { appended, groups })
}

/// What [`salvage_partition`] recovered.
#[derive(Debug, Default)]
pub struct PartitionSalvage {
    /// Records appended to the persistence file.
    pub appended: u64,
    /// Each group that read the partition.
    pub groups: Vec<RecoveredGroup>,
}

/// How far a group had got in a salvaged partition: every offset below
/// `acknowledged` was acknowledged (a lower bound), every one below
/// `handed_out` handed to a member.
#[derive(Debug)]
pub struct RecoveredGroup {
    pub name: String,
    pub acknowledged: u64,
    pub handed_out: u64,
}

/// What recovery did for the consumption log, for the operator's line.
fn describe(d: &LostDeliveries) -> String {
    if d.not_recorded {
        return "but not the deliveries it had not logged (its region does not say where its log lines begin)".into();
    }
    let mut text = format!("{} deliveries logged from it", d.logged);
    if d.unknown_consumers > 0 {
        text += &format!(
            " ({} to a consumer it no longer names)",
            d.unknown_consumers
        );
    }
    if d.undecided > 0 {
        text += &format!(
            "; {} redeliveries may lack a log line (too far back to tell)",
            d.undecided
        );
    }
    text
}

/// Every offset below the result was acknowledged by group `g`: nothing below the
/// cursor is held except by a registered or just-removed member (at or above its
/// `ack_upto`) or by a pending redelivery. (Redeliveries waiting in the broker's
/// memory because the region's table was full are not visible here.)
fn acknowledged_lower_bound(region: &Region, g: u32, cursor: u64) -> u64 {
    use shm_layout::layout::redelivery;
    let mut bound = cursor;
    for c in 0..region.geometry().max_clients {
        let Some(e) = region.client(c) else { break };
        // Removed consumers count too: the broker may have died before offering
        // what they held. A lower bound only costs redeliveries, never a loss.
        if e.is_consumer_of(g) {
            bound = bound.min(e.acked_upto());
        }
    }
    for slot in 0..region.geometry().redeliveries_per_group {
        let Some(seen) = region.redelivery_seen(g, slot) else {
            break;
        };
        if seen.kind() != redelivery::FREE {
            bound = bound.min(seen.offset);
        }
    }
    bound
}
