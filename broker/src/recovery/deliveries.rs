//! Deliveries a dead broker made but had not yet written to `log_consumo.txt`.
//!
//! The consumption log is written through a double buffer, so a broker killed
//! between two flushes takes the deliveries of its last moments with it. Its region
//! still tells what they were:
//! - each group's cursor: every offset below it was handed out;
//! - the group's last two rotations and the ranks its members still hold: who was
//!   handed which offset;
//! - the group's redelivery table: redeliveries claimed or acknowledged, with their
//!   claimer and attempt;
//! - what the broker recorded for its successor: the byte of the log where its own
//!   lines begin, and per group the first offset it handed out and the offset below
//!   which its first deliveries were attempt 2.
//!
//! The log is read back from its end, never past the dead broker's first line,
//! until each group's last first delivery already logged is found (first deliveries
//! are logged in offset order, and a redelivery only after the first delivery of
//! its offset). Every first delivery after it gets its line, and so does every
//! redelivery in the table whose line was not found. Nothing already in the log is
//! written again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::sync::Arc;

use audit_format::index::TopicPartition;
use audit_format::records::{parse_timestamp, push_delivery_of, Delivery};
use shm_layout::group::{self, PastRotation, RecordedStart};
use shm_layout::layout::redelivery;
use shm_layout::sys::wall_clock_micros;
use shm_layout::Region;

use crate::audit::files::{read_log_backwards, LogTailEnd};

/// Stands for a consumer or producer the region no longer names.
const UNKNOWN: &str = "unknown";

/// What [`log_lost_deliveries`] wrote, for the operator.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LostDeliveries {
    /// Lines appended to the log.
    pub logged: u64,
    /// Of those, lines whose consumer the region no longer names (`unknown`).
    pub unknown_consumers: u64,
    /// Redeliveries whose line the bounded reading could neither find nor rule out:
    /// not written, so that nothing is logged twice.
    pub undecided: u64,
    /// The region came from a build that did not record where its lines begin:
    /// nothing could be told apart, and nothing was written.
    pub not_recorded: bool,
}

/// A redelivery in the dead region's table that a consumer had claimed.
#[derive(Debug, Clone, Copy)]
struct Claimed {
    offset: u64,
    attempt: u32,
    claimer: u32,
    /// Whether its line is in the log; `None` until the reading tells.
    logged: Option<bool>,
}

/// One group of the dead region, and what the reading of the log found for it.
#[derive(Debug)]
struct GroupGap {
    index: u32,
    name: Arc<str>,
    start: RecordedStart,
    cursor: u64,
    /// Every first delivery below this is in the log.
    logged: u64,
    /// Whether `logged` is final: the last first delivery logged was found, or
    /// there is none among the dead broker's lines.
    settled: bool,
    /// When the last first delivery logged was logged: later deliveries were made
    /// after it.
    last_logged_us: u64,
    claimed: Vec<Claimed>,
}

impl GroupGap {
    fn done(&self) -> bool {
        self.settled && self.claimed.iter().all(|c| c.logged.is_some())
    }

    /// Takes in one of the dead broker's lines for this group (read backwards).
    fn read(&mut self, offset: u64, attempt: u32, timestamp: &str) {
        if offset < self.start.first_offset {
            // A line of an earlier group of the same name, deleted before this one
            // was created: every line before it is older still.
            self.settle_with_none_left();
            return;
        }
        // Below `redeliver_below` first deliveries are attempt 2, and a redelivery
        // taken back from a consumer there is offered as attempt 3.
        let first_delivery = attempt == 1 || (attempt == 2 && offset < self.start.redeliver_below);
        if !first_delivery {
            for c in &mut self.claimed {
                if c.logged.is_none() && c.offset == offset && c.attempt == attempt {
                    c.logged = Some(true);
                }
            }
            return;
        }
        if !self.settled {
            self.logged = self.logged.max(offset + 1);
            self.last_logged_us = parse_timestamp(timestamp).unwrap_or(0);
            self.settled = true;
        }
        // A redelivery of an offset at or above this one was logged after this
        // line, so it has been read if it is there.
        for c in &mut self.claimed {
            if c.logged.is_none() && c.offset >= offset {
                c.logged = Some(false);
            }
        }
    }

    /// Every line of the dead broker's before this point is not this group's.
    fn settle_with_none_left(&mut self) {
        self.settled = true;
        for c in &mut self.claimed {
            c.logged.get_or_insert(false);
        }
    }
}

/// Writes to `log` (opened for appending, every line whole) a line for each
/// delivery of `default`/0 the broker that owned `old` made and did not log.
/// `freed` and `next` are the old region's reclaimed and committed ends; the
/// caller holds its ring lock, and has marked it closing, so no consumer hands
/// out anything more.
pub fn log_lost_deliveries(
    old: &Region,
    freed: u64,
    next: u64,
    log: &mut File,
) -> io::Result<LostDeliveries> {
    let ring = DeadRing {
        ring: old,
        names: old,
        partition: &TopicPartition::default_topic(),
        log_start: old.recorded_log_start(),
    };
    log_lost_deliveries_of(&ring, freed, next, log)
}

/// A dead broker's ring whose deliveries are recovered.
pub struct DeadRing<'a> {
    pub ring: &'a Region,
    /// Where its producers are named: the control region.
    pub names: &'a Region,
    pub partition: &'a TopicPartition,
    /// Where the dead broker's lines begin in the log, as it recorded in its
    /// control region (None: not recorded).
    pub log_start: Option<u64>,
}

/// As [`log_lost_deliveries`], for any ring of the dead broker.
pub fn log_lost_deliveries_of(
    dead: &DeadRing<'_>,
    freed: u64,
    next: u64,
    log: &mut File,
) -> io::Result<LostDeliveries> {
    let old = dead.ring;
    let mut outcome = LostDeliveries::default();
    let Some(log_start) = dead.log_start else {
        outcome.not_recorded = true;
        return Ok(outcome);
    };
    let mut gaps = groups_with_gaps(old, freed, next);
    if gaps.is_empty() {
        return Ok(outcome);
    }
    let by_name: HashMap<Arc<str>, usize> = gaps
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), i))
        .collect();
    // After a group's last first delivery was logged, each group logs at most two
    // rings' worth of first deliveries (the ring holds `slots` offsets past the
    // reclaimed ones), plus redeliveries: a group's last first delivery above
    // `freed`, if any, lies within this many lines of the end.
    let geometry = old.geometry();
    let max_lines = (2 * geometry.slots as u64 + 4 * geometry.redeliveries_per_group as u64)
        * geometry.max_groups as u64
        + 1024;
    let of = (dead.partition.topic.as_str(), dead.partition.partition);
    let end = read_log_backwards(log, log_start, of, max_lines, |line| {
        if let Some(&i) = by_name.get(line.group.as_str()) {
            gaps[i].read(line.offset, line.attempt, &line.timestamp);
            if gaps.iter().all(GroupGap::done) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    for gap in &mut gaps {
        match end {
            LogTailEnd::Stopped => {}
            // Every line of the dead broker's has been read.
            LogTailEnd::ReachedStart => gap.settle_with_none_left(),
            // Its last first delivery is not within reach, so it is below `freed`
            // (see `max_lines`), and `logged` already says so. A redelivery line
            // may still be further back: left out rather than risk a second line.
            LogTailEnd::OutOfLines => gap.settled = true,
        }
    }
    let mut out = Vec::new();
    let now = wall_clock_micros();
    for gap in &gaps {
        write_lines(dead, gap, now, &mut out, &mut outcome);
    }
    if !out.is_empty() {
        log.write_all(&out)?;
        log.sync_data()?;
    }
    Ok(outcome)
}

/// The active groups of `old` that may have deliveries missing from the log.
fn groups_with_gaps(old: &Region, freed: u64, next: u64) -> Vec<GroupGap> {
    let mut gaps = Vec::new();
    for g in 0..old.geometry().max_groups {
        let (Some(name), Some(entry)) = (old.group_name(g), old.group(g)) else {
            continue;
        };
        let Some(start) = group::recorded_start(entry) else {
            continue;
        };
        let cursor = group::cursor(entry).min(next);
        // Offsets below `freed` were reclaimed, which needs every delivery of them
        // logged and written; the broker handed out nothing below `first_offset`.
        let logged = start.first_offset.max(freed);
        let claimed = claimed_redeliveries(old, g, freed, next);
        if cursor <= logged && claimed.is_empty() {
            continue;
        }
        gaps.push(GroupGap {
            index: g,
            name: name.into(),
            start,
            cursor,
            logged,
            settled: cursor <= logged,
            last_logged_us: 0,
            claimed,
        });
    }
    gaps
}

/// The claimed or acknowledged redeliveries in group `g`'s table, for offsets still
/// in the ring (others are corrupt: the group's position never passes one).
fn claimed_redeliveries(old: &Region, g: u32, freed: u64, next: u64) -> Vec<Claimed> {
    (0..old.geometry().redeliveries_per_group)
        .map_while(|slot| old.redelivery_seen(g, slot))
        .filter_map(|e| {
            let state = e.state;
            let kind = redelivery::kind(state);
            let offset = e.offset;
            let attempt = redelivery::attempt_number(redelivery::attempt(state));
            let taken = kind == redelivery::CLAIMED || kind == redelivery::ACKED;
            (taken && (freed..next).contains(&offset) && attempt >= 2).then_some(Claimed {
                offset,
                attempt,
                claimer: redelivery::claimer(state),
                logged: None,
            })
        })
        .collect()
}

/// Appends the lines group `gap` lacks: its first deliveries from `logged` to its
/// cursor, then its redeliveries not found in the log.
fn write_lines(
    dead: &DeadRing<'_>,
    gap: &GroupGap,
    now: u64,
    out: &mut Vec<u8>,
    outcome: &mut LostDeliveries,
) {
    let old = dead.ring;
    let Some(entry) = old.group(gap.index) else {
        return;
    };
    let rotations = Rotations::read(old, gap.index, entry, gap.cursor);
    // The ring holds at most `slots` offsets: a longer stretch is a corrupt cursor.
    let end = gap
        .cursor
        .min(gap.logged.saturating_add(old.geometry().slots as u64));
    outcome.undecided += gap.claimed.iter().filter(|c| c.logged.is_none()).count() as u64;
    let mut line = |offset: u64, consumer: Option<&str>, attempt: u32| {
        let (producer, published_us) = match old.read_record(offset) {
            Ok(r) => (
                dead.names.client_name(r.producer, r.producer_generation),
                r.timestamp_us,
            ),
            Err(_) => (None, 0),
        };
        // The delivery time is not in the region: the earliest it can have been is
        // after the message was published and after the group's last delivery
        // already logged (a live consumer is handed a message within microseconds
        // of its publish); never later than now.
        let timestamp = published_us.max(gap.last_logged_us).min(now);
        outcome.logged += 1;
        if consumer.is_none() {
            outcome.unknown_consumers += 1;
        }
        let delivery = Delivery {
            topic: &dead.partition.topic,
            partition: dead.partition.partition,
            offset,
            producer: producer.as_deref().unwrap_or(UNKNOWN),
            group: &gap.name,
            consumer: consumer.unwrap_or(UNKNOWN),
            attempt,
        };
        push_delivery_of(out, timestamp, &delivery);
    };
    for offset in gap.logged..end {
        let attempt = if offset < gap.start.redeliver_below {
            2
        } else {
            1
        };
        line(offset, rotations.consumer_of(offset), attempt);
    }
    for c in gap.claimed.iter().filter(|c| c.logged == Some(false)) {
        let claimer = consumer_name(old, gap.index, c.claimer);
        line(c.offset, claimer.as_deref(), c.attempt);
    }
}

/// The id of consumer `client` of group `g`, if its entry still holds one.
fn consumer_name(old: &Region, g: u32, client: u32) -> Option<String> {
    let entry = old.client(client)?;
    if !entry.is_consumer_of(g) {
        return None;
    }
    old.client_name(client, entry.generation())
}

/// A rotation whose offsets the region can still attribute: `[start, end)`, and
/// the member of each rank (`None`: its entry no longer holds the rank).
#[derive(Debug)]
struct KnownRotation {
    start: u64,
    end: u64,
    members: Vec<Option<Arc<str>>>,
}

/// Who was handed each offset, as far as a group entry's two rotation halves tell:
/// the rotation in force covers its start to the cursor, the one before it its
/// start to there. Older offsets cannot be attributed.
#[derive(Debug)]
struct Rotations {
    known: Vec<KnownRotation>,
}

impl Rotations {
    fn read(old: &Region, g: u32, entry: &shm_layout::layout::GroupEntry, cursor: u64) -> Self {
        let mut known = Vec::new();
        let mut end = cursor;
        for rotation in group::recent_rotations(entry) {
            let Some(rotation) = rotation else { break };
            if rotation.start > end {
                // Not a rotation before the one after it: corrupt.
                break;
            }
            let plausible = rotation.members <= old.geometry().max_clients;
            if rotation.members > 0 && plausible {
                known.push(KnownRotation {
                    start: rotation.start,
                    end,
                    members: members_of(old, g, rotation),
                });
            }
            end = rotation.start;
        }
        Rotations { known }
    }

    /// The consumer handed `offset` first, if the region still names it.
    fn consumer_of(&self, offset: u64) -> Option<&str> {
        let r = self
            .known
            .iter()
            .find(|r| (r.start..r.end).contains(&offset))?;
        let rank = (offset - r.start) % r.members.len() as u64;
        r.members[rank as usize].as_deref()
    }
}

/// The id of each rank of `rotation`: the consumer of group `g` whose entry holds
/// that rank tagged with the rotation's epoch. A rank two entries claim (only in a
/// corrupt region) names nobody.
fn members_of(old: &Region, g: u32, rotation: PastRotation) -> Vec<Option<Arc<str>>> {
    let n = rotation.members as usize;
    let mut members: Vec<Option<Arc<str>>> = vec![None; n];
    let mut claims = vec![0u32; n];
    for client in 0..old.geometry().max_clients {
        let Some(entry) = old.client(client) else {
            break;
        };
        let Some(rank) = group::rank_in(entry, rotation.epoch) else {
            continue;
        };
        let Some(name) = consumer_name(old, g, client) else {
            continue;
        };
        let Some(count) = claims.get_mut(rank as usize) else {
            continue;
        };
        *count += 1;
        members[rank as usize] = (*count == 1).then(|| name.into());
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_format::records::push_delivery;
    use std::io::{Read, Seek, SeekFrom};
    use std::sync::Mutex;

    use control_protocol::Role;
    use shm_layout::ring::Sender;
    use shm_layout::BrokerRegion;

    use crate::audit::files::open_append;
    use crate::registry::{GroupStart, Registration, Registry, RegistryLimits};
    use crate::test_region::{test_region, TestRegion};
    use audit_format::records::{DeliveryRecord, LOG_HEADER};

    /// A region and a scratch log file, both removed when dropped.
    struct Scratch {
        region: Arc<BrokerRegion>,
        dir: std::path::PathBuf,
        _unlinks: TestRegion,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let t = test_region(&format!("lost-{tag}"), 64);
        let dir = std::env::temp_dir().join(format!("mk-lost-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            region: t.0.clone(),
            dir,
            _unlinks: t,
        }
    }

    fn registry(region: &Arc<BrokerRegion>, groups: &[(&str, u64, u64)]) -> Mutex<Registry> {
        let starts: Vec<GroupStart> = groups
            .iter()
            .map(|&(name, start, redeliver_below)| GroupStart {
                name: name.into(),
                start,
                redeliver_below,
            })
            .collect();
        let limits = RegistryLimits {
            session_timeout: std::time::Duration::from_secs(30),
            spill: false,
            assignment: control_protocol::Assignment::RoundRobin,
            groups_read_default: true,
            max_attempts: None,
        };
        Mutex::new(Registry::new(region.clone(), &starts, limits))
    }

    fn join(reg: &Mutex<Registry>, role: Role, id: &str, group: Option<&str>) -> Registration {
        let mut reg = reg.lock().unwrap();
        let token = [1, 2];
        reg.register(role, id, group, std::process::id(), token)
            .unwrap()
    }

    fn send(region: &Region, producer: &Registration, count: usize) {
        let me = Sender {
            client: producer.client,
            generation: producer.generation,
        };
        for i in 0..count {
            let payload = format!("m{i}");
            region
                .send(
                    me,
                    None,
                    payload.as_bytes(),
                    1_000_000 + i as u64,
                    || false,
                    None,
                )
                .unwrap();
        }
    }

    /// Hands out `count` more offsets of group `g` under the rotation in force.
    fn hand_out(region: &Region, g: u32, count: u64) {
        let entry = region.group(g).unwrap();
        assert!(group::try_advance(entry, entry.turn_word(), count));
    }

    /// A log holding a line of an earlier run, then this run's `lines`; this run's
    /// start recorded in the region. Returns the log opened for appending.
    fn log_with(s: &Scratch, lines: &[(u64, &str, &str, u32)]) -> File {
        let path = s.dir.join("log_consumo.txt");
        let (mut log, _) = open_append(&path, LOG_HEADER).unwrap();
        let mut text = Vec::new();
        // An earlier run handed group-1 offset 9 out: not this run's delivery.
        push_delivery(&mut text, 5, 9, "p", "group-1", "old", 1);
        log.write_all(&text).unwrap();
        s.region.record_log_start(log.metadata().unwrap().len());
        text.clear();
        for &(offset, group, consumer, attempt) in lines {
            push_delivery(&mut text, 7, offset, "p", group, consumer, attempt);
        }
        log.write_all(&text).unwrap();
        log
    }

    /// (group, offset, consumer, attempt) of every line after this run's start.
    fn this_runs_lines(s: &Scratch, log: &mut File) -> Vec<(String, u64, String, u32)> {
        let from = s.region.recorded_log_start().unwrap();
        let mut text = String::new();
        log.seek(SeekFrom::Start(from)).unwrap();
        log.read_to_string(&mut text).unwrap();
        text.lines()
            .map(|l| DeliveryRecord::parse(l).unwrap())
            .map(|d| (d.group, d.offset, d.consumer, d.attempt))
            .collect()
    }

    fn sorted(mut v: Vec<(String, u64, String, u32)>) -> Vec<(String, u64, String, u32)> {
        v.sort();
        v
    }

    fn line(group: &str, offset: u64, consumer: &str, attempt: u32) -> (String, u64, String, u32) {
        (group.into(), offset, consumer.into(), attempt)
    }

    #[test]
    fn every_delivery_after_the_last_logged_gets_one_line_naming_its_member() {
        let s = scratch("gap");
        let reg = registry(&s.region, &[("group-1", 0, 0), ("group-2", 0, 0)]);
        let p = join(&reg, Role::Producer, "p", None);
        join(&reg, Role::Consumer, "c1", Some("group-1"));
        join(&reg, Role::Consumer, "c2", Some("group-1"));
        join(&reg, Role::Consumer, "d1", Some("group-2"));
        send(&s.region, &p, 10);
        hand_out(&s.region, 0, 10);
        hand_out(&s.region, 1, 6);
        let logged = [
            (0, "group-1", "c1", 1),
            (0, "group-2", "d1", 1),
            (1, "group-1", "c2", 1),
            (2, "group-1", "c1", 1),
            (1, "group-2", "d1", 1),
            (3, "group-1", "c2", 1),
        ];
        let mut log = log_with(&s, &logged);
        let outcome = log_lost_deliveries(&s.region, 0, 10, &mut log).unwrap();
        assert_eq!(
            outcome,
            LostDeliveries {
                logged: 6 + 4,
                ..LostDeliveries::default()
            }
        );
        let mut expected: Vec<_> = (0..10)
            .map(|o| line("group-1", o, if o % 2 == 0 { "c1" } else { "c2" }, 1))
            .collect();
        expected.extend((0..6).map(|o| line("group-2", o, "d1", 1)));
        assert_eq!(
            sorted(this_runs_lines(&s, &mut log)),
            sorted(expected.clone())
        );
        // Run again over the completed log: nothing is written twice.
        let again = log_lost_deliveries(&s.region, 0, 10, &mut log).unwrap();
        assert_eq!(again.logged, 0);
        assert_eq!(sorted(this_runs_lines(&s, &mut log)), sorted(expected));
    }

    #[test]
    fn other_partitions_lines_do_not_count_against_how_far_back_the_log_is_read() {
        let s = scratch("others");
        let reg = registry(&s.region, &[("group-1", 0, 0)]);
        let p = join(&reg, Role::Producer, "p", None);
        join(&reg, Role::Consumer, "c1", Some("group-1"));
        send(&s.region, &p, 10);
        hand_out(&s.region, 0, 10);
        let logged: Vec<_> = (0..4).map(|o| (o, "group-1", "c1", 1)).collect();
        let mut log = log_with(&s, &logged);
        // Then more lines of another topic than the reach of the search.
        let geometry = s.region.geometry();
        let reach = (2 * geometry.slots as u64 + 4 * geometry.redeliveries_per_group as u64)
            * geometry.max_groups as u64
            + 1024;
        let mut others = Vec::new();
        for o in 0..=reach {
            let d = Delivery {
                topic: "orders",
                partition: 1,
                offset: o,
                producer: "q",
                group: "group-1",
                consumer: "c9",
                attempt: 1,
            };
            push_delivery_of(&mut others, 8, &d);
        }
        log.write_all(&others).unwrap();
        let outcome = log_lost_deliveries(&s.region, 0, 10, &mut log).unwrap();
        assert_eq!(outcome.logged, 6, "{outcome:?}");
        let mut text = String::new();
        log.seek(SeekFrom::Start(s.region.recorded_log_start().unwrap()))
            .unwrap();
        log.read_to_string(&mut text).unwrap();
        let defaults: Vec<u64> = text
            .lines()
            .map(|l| DeliveryRecord::parse(l).unwrap())
            .filter(|d| d.topic == "default")
            .map(|d| d.offset)
            .collect();
        assert_eq!(defaults, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn attempts_follow_the_recorded_start_and_claimed_redeliveries_are_logged_once() {
        let s = scratch("attempts");
        // The broker restarted with group-1 resuming at 0, having handed out 0..4.
        let reg = registry(&s.region, &[("group-1", 0, 4)]);
        let p = join(&reg, Role::Producer, "p", None);
        let c1 = join(&reg, Role::Consumer, "c1", Some("group-1"));
        let c2 = join(&reg, Role::Consumer, "c2", Some("group-1"));
        send(&s.region, &p, 8);
        hand_out(&s.region, 0, 8);
        // c2 dies holding its share (1, 3, 5, 7): offered again, and c1 claims two
        // of them; the log has the line of the first claim only.
        reg.lock().unwrap().leave(c2.client);
        let first = s
            .region
            .claim_redelivery(0, c1.client, c1.generation)
            .unwrap();
        let second = s
            .region
            .claim_redelivery(0, c1.client, c1.generation)
            .unwrap();
        assert!(s.region.ack_redelivery(0, c1.client, &second));
        assert_eq!(
            (first.offset, first.attempt),
            (1, 3),
            "below redeliver_below"
        );
        let mut log = log_with(&s, &[(1, "group-1", "c1", 3)]);
        let outcome = log_lost_deliveries(&s.region, 0, 8, &mut log).unwrap();
        // c2's entry keeps the rank it had, revoked: its share is still its own.
        let mut expected: Vec<_> = (0..8)
            .map(|o| {
                let consumer = if o % 2 == 0 { "c1" } else { "c2" };
                line("group-1", o, consumer, if o < 4 { 2 } else { 1 })
            })
            .collect();
        expected.push(line("group-1", 1, "c1", 3));
        expected.push(line("group-1", second.offset, "c1", second.attempt));
        assert_eq!(sorted(this_runs_lines(&s, &mut log)), sorted(expected));
        assert_eq!(
            outcome,
            LostDeliveries {
                logged: 9,
                ..LostDeliveries::default()
            }
        );
    }

    #[test]
    fn a_share_whose_member_entry_holds_no_rank_any_more_is_logged_as_unknown() {
        let s = scratch("unknown");
        let reg = registry(&s.region, &[("group-1", 0, 0)]);
        let p = join(&reg, Role::Producer, "p", None);
        join(&reg, Role::Consumer, "c1", Some("group-1"));
        let c2 = join(&reg, Role::Consumer, "c2", Some("group-1"));
        send(&s.region, &p, 4);
        hand_out(&s.region, 0, 4);
        // As when the entry is taken by a newcomer.
        s.region.clear_ranks(s.region.client(c2.client).unwrap());
        let mut log = log_with(&s, &[]);
        let outcome = log_lost_deliveries(&s.region, 0, 4, &mut log).unwrap();
        let expected: Vec<_> = (0..4)
            .map(|o| line("group-1", o, if o % 2 == 0 { "c1" } else { UNKNOWN }, 1))
            .collect();
        assert_eq!(sorted(this_runs_lines(&s, &mut log)), sorted(expected));
        assert_eq!(outcome.unknown_consumers, 2);
    }

    #[test]
    fn a_region_that_did_not_record_its_log_start_gets_no_guessed_lines() {
        let s = scratch("unrecorded");
        let reg = registry(&s.region, &[("group-1", 0, 0)]);
        let p = join(&reg, Role::Producer, "p", None);
        join(&reg, Role::Consumer, "c1", Some("group-1"));
        send(&s.region, &p, 3);
        hand_out(&s.region, 0, 3);
        let path = s.dir.join("log_consumo.txt");
        let (mut log, _) = open_append(&path, LOG_HEADER).unwrap();
        let outcome = log_lost_deliveries(&s.region, 0, 3, &mut log).unwrap();
        assert!(outcome.not_recorded);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), LOG_HEADER);
    }

    #[test]
    fn offsets_reclaimed_or_from_before_the_group_began_are_never_logged_again() {
        let s = scratch("bounds");
        // group-2 began at 4 (it resumed there); offsets below 2 were reclaimed.
        let reg = registry(&s.region, &[("group-1", 0, 0), ("group-2", 4, 4)]);
        let p = join(&reg, Role::Producer, "p", None);
        join(&reg, Role::Consumer, "c1", Some("group-1"));
        join(&reg, Role::Consumer, "d1", Some("group-2"));
        send(&s.region, &p, 6);
        hand_out(&s.region, 0, 6);
        hand_out(&s.region, 1, 2);
        let mut log = log_with(&s, &[]);
        let outcome = log_lost_deliveries(&s.region, 2, 6, &mut log).unwrap();
        let mut expected: Vec<_> = (2..6).map(|o| line("group-1", o, "c1", 1)).collect();
        expected.extend((4..6).map(|o| line("group-2", o, "d1", 1)));
        assert_eq!(sorted(this_runs_lines(&s, &mut log)), sorted(expected));
        assert_eq!(outcome.logged, 6);
    }
}
