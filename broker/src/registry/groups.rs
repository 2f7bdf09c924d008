//! Groups and their rotations: creation, auto-join, membership changes (freezing
//! a group's ring and installing its next rotation there), positions, and the
//! cleaner's pass.
//!
//! A group reads one or more rings (`default`/0 in the control region, and the
//! partitions of the topics it is subscribed to). In each it has a book of its
//! own, a [`GroupRing`]: its group entry at the group's index in that ring's
//! region, the members reading that ring, its rotations there, its redeliveries
//! and the consumption-log lines of its deliveries there.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use audit_format::records::DeliveryLines;
use control_protocol::Refusal;
use shm_layout::event;
use shm_layout::group;
use shm_layout::layout::redelivery;
use shm_layout::BrokerRegion;

use super::history::{self, Segment};
use super::redeliveries::Offer;
use super::{refuse, Refused, Registry};

/// Where a pre-created group starts after a (re)start.
#[derive(Debug, Clone)]
pub struct GroupStart {
    pub name: String,
    /// First offset the group is handed (its acknowledged position).
    pub start: u64,
    /// First deliveries below this offset are redeliveries (attempt 2): the group had
    /// been handed them before the restart.
    pub redeliver_below: u64,
}

/// A group created by a consumer's `--group` that has no member now: it holds no
/// slot, and resumes here when a member joins again under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Departed {
    /// Every offset below this was acknowledged.
    pub position: u64,
    /// Every offset below this had been handed out: delivered again as attempt 2.
    pub handed_out: u64,
}

/// A group's book in one ring.
#[derive(Debug)]
pub(super) struct GroupRing {
    /// 0 for `default`/0 (the control region's ring), else the topic-partition's
    /// ring number.
    pub(super) ring: u32,
    pub(super) region: Arc<BrokerRegion>,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    /// Its key among the namers of producers of records that left a ring
    /// (`topic id << 32 | partition`).
    pub(super) file_key: u64,
    /// The group's members that read this ring, in join order.
    pub(super) members: Vec<u32>,
    /// Frozen between two rotations: the members are finishing what the last one
    /// handed them before the next is installed (see `shm_layout::group`).
    pub(super) frozen: bool,
    /// Rotations still needed to know who holds an offset, oldest first.
    pub(super) segments: VecDeque<Segment>,
    /// Redeliveries waiting for a free slot in the region's redelivery table.
    pub(super) overflow: VecDeque<(u64, u32)>,
    /// Per redelivery slot: what the broker offered there and has not settled.
    /// The region's table is checked against it, never trusted over it.
    pub(super) offered: Vec<Option<Offer>>,
    /// First deliveries below this offset have been logged.
    pub(super) logged: u64,
    /// First deliveries below this offset are attempt 2 (handed out before a restart).
    pub(super) redeliver_below: u64,
    /// Per redelivery slot: the (attempt, claimer) already logged, and the log
    /// mark that covers its line.
    pub(super) observed: Vec<Option<(u32, u32)>>,
    pub(super) observed_log_mark: Vec<u64>,
    /// While frozen: the log mark that covers every delivery of the rotation
    /// before (the next one is installed once it is written).
    pub(super) frozen_log_mark: u64,
    /// Formats this group's consumption-log lines of this ring.
    pub(super) delivery_lines: DeliveryLines,
    /// Deliveries seen so far, and at the last rate sample.
    pub(super) delivered: u64,
    pub(super) delivered_at_sample: u64,
    pub(super) delivered_per_s: f64,
    /// Messages offered again since the broker started.
    pub(super) redelivered: u64,
}

/// Where a group's book in a ring starts.
#[derive(Debug, Clone)]
pub(super) struct RingStart {
    pub(super) ring: u32,
    pub(super) region: Arc<BrokerRegion>,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) file_key: u64,
    pub(super) start: u64,
    pub(super) redeliver_below: u64,
}

impl GroupRing {
    /// Sets up group `g`'s entry in the ring's region, named `name`, to hand
    /// out offsets from `at.start`.
    fn open(g: u32, name: &str, at: RingStart) -> GroupRing {
        let region = at.region;
        let entry = region.group(g).expect("index below max_groups");
        region.clear_redeliveries(g);
        region.reset_group(entry, at.start);
        // For the broker that recovers this region if this one dies: which of its
        // delivery lines it may have to write, and with which attempt.
        region.record_group_start(
            entry,
            group::RecordedStart {
                first_offset: at.start,
                redeliver_below: at.redeliver_below,
            },
        );
        region.activate_group(g, name);
        let table = region.geometry().redeliveries_per_group as usize;
        let delivery_lines = if at.ring == 0 {
            DeliveryLines::default()
        } else {
            DeliveryLines::for_partition(&at.topic, at.partition)
        };
        GroupRing {
            ring: at.ring,
            region,
            topic: at.topic,
            partition: at.partition,
            file_key: at.file_key,
            members: Vec::new(),
            // A fresh entry has no rotation: nobody can take anything from it.
            frozen: true,
            segments: VecDeque::new(),
            overflow: VecDeque::new(),
            offered: vec![None; table],
            logged: at.start,
            redeliver_below: at.redeliver_below,
            observed: vec![None; table],
            observed_log_mark: vec![0; table],
            frozen_log_mark: 0,
            delivery_lines,
            delivered: 0,
            delivered_at_sample: 0,
            delivered_per_s: 0.0,
            redelivered: 0,
        }
    }

    /// The member that was handed `offset` first, if any.
    pub(super) fn owner_of(&self, offset: u64) -> Option<&(u32, Arc<str>)> {
        history::owner_of(&self.segments, offset)
    }

    /// How many offsets in `[from, cursor)` were handed to `client`.
    pub(super) fn owned_count(&self, client: u32, from: u64, cursor: u64) -> u64 {
        history::owned_count(&self.segments, client, from, cursor)
    }

    /// The first offset in `[from, cursor)` handed to `client`, if any.
    pub(super) fn first_owned(&self, client: u32, from: u64, cursor: u64) -> Option<u64> {
        history::first_owned(&self.segments, client, from, cursor)
    }

    /// The group's cursor in this ring.
    pub(super) fn cursor(&self, g: u32) -> u64 {
        self.region.group(g).map_or(0, group::cursor)
    }

    /// Where `client` has acknowledged up to in this ring.
    pub(super) fn acked_upto(&self, client: u32) -> u64 {
        self.region.client(client).map_or(0, |c| c.acked_upto())
    }
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: Arc<str>,
    /// Pre-created groups live as long as the broker; others while they have members.
    pub(super) permanent: bool,
    /// Creation order, for auto-join ties.
    pub(super) created: u64,
    /// Members in join order.
    pub(super) members: Vec<u32>,
    /// Its book in each ring it reads.
    pub(super) rings: Vec<GroupRing>,
}

impl Group {
    /// Where its book in ring `ring` is, if it reads that ring.
    pub(super) fn ring_at(&self, ring: u32) -> Option<usize> {
        self.rings.iter().position(|r| r.ring == ring)
    }
}

impl Registry {
    /// Creates group `name` reading `default`/0 from `start`.
    pub(super) fn create_group(
        &mut self,
        name: &str,
        permanent: bool,
        start: u64,
        redeliver_below: u64,
    ) -> Result<u32, Refused> {
        let Some(i) = self.groups.iter().position(Option::is_none) else {
            return Err(refuse(
                Refusal::TooManyGroups,
                format!(
                    "cannot create group {name}: the broker's limit of {} groups is reached",
                    self.groups.len()
                ),
            ));
        };
        let g = i as u32;
        let default = GroupRing::open(
            g,
            name,
            RingStart {
                ring: 0,
                region: self.region.clone(),
                topic: Arc::from(crate::audit::state::DEFAULT_TOPIC),
                partition: crate::audit::state::DEFAULT_PARTITION,
                file_key: 0,
                start,
                redeliver_below,
            },
        );
        self.groups_created += 1;
        self.groups[i] = Some(Group {
            name: name.into(),
            permanent,
            created: self.groups_created,
            members: Vec::new(),
            rings: vec![default],
        });
        Ok(g)
    }

    pub(super) fn find_group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .position(|g| g.as_ref().is_some_and(|g| &*g.name == name))
            .map(|i| i as u32)
    }

    /// The live group with the fewest members (ties: first created).
    pub(super) fn least_loaded_group(&self) -> Option<u32> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (g.members.len(), g.created, i)))
            .min()
            .map(|(_, _, i)| i as u32)
    }

    /// The group's book in its `r`-th ring.
    pub(super) fn group_ring(&self, g: u32, r: usize) -> Option<&GroupRing> {
        self.groups.get(g as usize)?.as_ref()?.rings.get(r)
    }

    pub(super) fn group_ring_mut(&mut self, g: u32, r: usize) -> Option<&mut GroupRing> {
        self.groups.get_mut(g as usize)?.as_mut()?.rings.get_mut(r)
    }

    /// How many rings group `g` reads.
    pub(super) fn ring_count(&self, g: u32) -> usize {
        self.groups
            .get(g as usize)
            .and_then(Option::as_ref)
            .map_or(0, |grp| grp.rings.len())
    }

    /// The group's members changed: in each of its rings, freezes it (nobody
    /// hands out offsets there any more), then installs the new rotation if the
    /// members have finished the old one.
    pub(super) fn change_membership(&mut self, g: u32) {
        for r in 0..self.ring_count(g) {
            self.change_ring_membership(g, r);
        }
    }

    /// The members reading the group's `r`-th ring changed (see `change_membership`).
    fn change_ring_membership(&mut self, g: u32, r: usize) {
        let Some(gr) = self.group_ring_mut(g, r) else {
            return;
        };
        if !gr.frozen {
            let region = gr.region.clone();
            if let Some(entry) = region.group(g) {
                region.install_rotation(entry, &[]);
            }
            gr.frozen = true;
            // Everything the old rotation handed out is below the frozen cursor:
            // its lines are made now, and the next rotation waits until they are
            // written. The region keeps only the rotation in force and the one
            // before it, which is what a broker recovering it after a crash has to
            // name the consumer of each delivery the log lacks.
            self.observe_ring(g, r);
            let mark = self.log_mark();
            if let Some(gr) = self.group_ring_mut(g, r) {
                gr.frozen_log_mark = mark;
            }
        }
        self.install_when_finished(g, r);
    }

    /// For a frozen ring of a group: installs a rotation over its members there at
    /// its cursor, once every one of them has acknowledged all the last rotation
    /// handed it (a member never needs a rotation older than the one before the
    /// one in force).
    fn install_when_finished(&mut self, g: u32, r: usize) {
        let Some(gr) = self.group_ring(g, r) else {
            return;
        };
        if !gr.frozen || gr.members.is_empty() {
            return;
        }
        let region = gr.region.clone();
        let Some(entry) = region.group(g) else {
            return;
        };
        let cursor = group::cursor(entry);
        let finished = gr
            .members
            .iter()
            .all(|&m| gr.first_owned(m, gr.acked_upto(m), cursor).is_none());
        if !finished {
            return;
        }
        if gr.frozen_log_mark > self.log_written.load(Ordering::Acquire) {
            self.log_wanted = true;
            return;
        }
        let members: Vec<_> = gr
            .members
            .iter()
            .map(|&m| region.client(m).expect("member index below max_clients"))
            .collect();
        let (start, _) = region.install_rotation(entry, &members);
        let ids = gr
            .members
            .iter()
            .map(|&m| {
                let id = self.clients[m as usize]
                    .as_ref()
                    .map_or_else(|| Arc::from("unknown"), |c| c.id.clone());
                (m, id)
            })
            .collect();
        let gr = self.group_ring_mut(g, r).expect("live group ring");
        if gr.segments.back().is_some_and(|s| s.start == start) {
            gr.segments.pop_back();
        }
        gr.segments.push_back(Segment {
            start,
            members: ids,
        });
        gr.frozen = false;
        // Members wait for a commit or for the group's turn event.
        event::wake(&entry.turn_event);
        event::wake(&region.header().published);
    }

    /// In the group's `r`-th ring, `client` (no longer a member there) hands
    /// what it held to the others: its unacknowledged offsets and its claimed
    /// redeliveries are offered again.
    fn release_share(&mut self, g: u32, r: usize, client: u32) {
        let Some(gr) = self.group_ring_mut(g, r) else {
            return;
        };
        gr.members.retain(|&m| m != client);
        let ack_upto = gr.acked_upto(client);
        // Stop handing out offsets first: after this the cursor stays put until the
        // next rotation, and the stalled member can never move it.
        self.change_ring_membership(g, r);
        let gr = self.group_ring_mut(g, r).expect("live group ring");
        let region = gr.region.clone();
        let cursor = gr.cursor(g);
        let mut held = Vec::new();
        let mut from = ack_upto;
        while let Some(o) = gr.first_owned(client, from, cursor) {
            // Its first delivery here was attempt 2 if it had been handed out before a restart.
            held.push((o, if o < gr.redeliver_below { 3 } else { 2 }));
            from = o + 1;
        }
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(seen) = region.redelivery_seen(g, slot) else {
                break;
            };
            let Some(offer) = gr.offered[slot as usize].as_mut() else {
                continue;
            };
            if seen.kind() == redelivery::CLAIMED && seen.claimer() == client {
                let attempt = offer.attempt + 1;
                let again = redelivery::pack(redelivery::PENDING, attempt, 0);
                if region.replace_redelivery(g, slot, seen.state, again) {
                    offer.attempt = attempt;
                    gr.redelivered += 1;
                }
            }
        }
        gr.overflow.extend(held);
        self.offer_overflow(g, r);
    }

    pub(super) fn remove_member(&mut self, g: u32, client: u32) {
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        grp.members.retain(|&m| m != client);
        for r in 0..self.ring_count(g) {
            self.release_share(g, r, client);
        }
        let grp = self.groups[g as usize].as_ref().expect("live group");
        if grp.members.is_empty() && !grp.permanent {
            // It stops holding the rings; what it had not acknowledged (offered
            // again, or never taken) is where it resumes.
            let departed: Vec<_> = (0..grp.rings.len())
                .map(|r| {
                    let gr = &grp.rings[r];
                    let cursor = gr.cursor(g);
                    let at = Departed {
                        position: self.position(g, r).unwrap_or(cursor),
                        handed_out: cursor,
                    };
                    let key = (grp.name.to_string(), gr.topic.to_string(), gr.partition);
                    (key, at)
                })
                .collect();
            self.departed.extend(departed);
            self.newly_departed = true;
            self.delete_group(g);
        } else if grp.members.is_empty() && self.limits.spill {
            // Under --spill it stops holding the rings too (see `holds_ring`): what it
            // had not acknowledged is delivered again from its position, read from
            // the file if it left the ring, rather than offered from the table.
            let (name, permanent) = (grp.name.to_string(), grp.permanent);
            let cursor = grp.rings[0].cursor(g);
            let position = self.position(g, 0).unwrap_or(cursor);
            self.delete_group(g);
            if self
                .create_group(&name, permanent, position, cursor)
                .is_ok()
            {
                self.newly_departed = true;
            }
        } else {
            for gr in &grp.rings {
                if let Some(entry) = gr.region.group(g) {
                    event::wake(&entry.turn_event);
                }
                event::wake(&gr.region.header().published);
            }
        }
    }

    /// Moves group `name`, which must have no member, to resume at `offset`
    /// (`broker reset-offsets`); what it was handed before is forgotten (no
    /// attempt 2). A group the broker does not know is remembered as departed
    /// there, so that a consumer creating it with `--group` starts there.
    pub fn reset_group(&mut self, name: &str, offset: u64) -> Result<(), String> {
        let at = Departed {
            position: offset,
            handed_out: offset,
        };
        let Some(g) = self.find_group(name) else {
            self.departed.insert(default_key(name), at);
            return Ok(());
        };
        let grp = self.groups[g as usize].as_ref().expect("found above");
        match grp.members.len() {
            0 => {}
            1 => return Err(format!("group {name} has a member: stop it first")),
            n => return Err(format!("group {name} has {n} members: stop them first")),
        }
        let permanent = grp.permanent;
        self.delete_group(g);
        if let Err(refused) = self.create_group(name, permanent, offset, offset) {
            return Err(refused.message);
        }
        Ok(())
    }

    /// Whether group `g` holds its `r`-th ring: it has members there, or it was
    /// pre-created and the broker runs without `--spill` (SPEC §10).
    pub(super) fn holds_ring(&self, g: u32, r: usize) -> bool {
        self.groups[g as usize].as_ref().is_some_and(|grp| {
            grp.rings.get(r).is_some_and(|gr| !gr.members.is_empty())
                || (grp.permanent && !self.limits.spill)
        })
    }

    /// Whether a group departed since the last call: its position is saved at once
    /// (a member that left cleanly acknowledged it), not at the next flush.
    pub fn take_newly_departed(&mut self) -> bool {
        std::mem::take(&mut self.newly_departed)
    }

    /// Remembers groups that had departed when the broker last stopped (from the
    /// state file), by group, topic and partition: each resumes where it was
    /// when a member joins again.
    pub fn remember_departed(
        &mut self,
        groups: impl IntoIterator<Item = ((String, String, u32), Departed)>,
    ) {
        for (key, departed) in groups {
            if self.find_group(&key.0).is_none() {
                self.departed.insert(key, departed);
            }
        }
    }

    /// Where a group created now under `name` starts: where it departed, or at
    /// the next offset.
    pub(super) fn start_of_new_group(&self, name: &str) -> (u64, u64) {
        if let Some(d) = self.departed.get(&default_key(name)) {
            return (d.position, d.handed_out.max(d.position));
        }
        // During a replay, offsets below the persisted end are old records.
        let start = self
            .region
            .next_offset()
            .max(self.region.persisted_offset());
        (start, start)
    }

    fn delete_group(&mut self, g: u32) {
        if let Some(grp) = self.groups[g as usize].take() {
            for gr in &grp.rings {
                gr.region.free_group(g);
            }
        }
    }

    /// How far group `g` has consumed its `r`-th ring: every offset below it is
    /// acknowledged.
    pub(super) fn position(&self, g: u32, r: usize) -> Option<u64> {
        let gr = self.group_ring(g, r)?;
        let cursor = group::cursor(gr.region.group(g)?);
        let acks = gr.members.iter().map(|&m| (m, gr.acked_upto(m)));
        // The broker's own book, not the region's table, which any process with
        // the mapping can write: a bogus entry must never pin the position.
        let offered = gr.offered.iter().flatten().map(|offer| offer.offset);
        let overflow = gr.overflow.iter().map(|&(o, _)| o);
        Some(history::position(
            &gr.segments,
            cursor,
            acks,
            offered.chain(overflow),
        ))
    }

    /// Cleaner pass: settles redeliveries, forgets rotations nobody needs, and returns
    /// the offset below which every group has consumed `default`/0 (None: no group
    /// holds anything there).
    pub fn consumed_by_all(&mut self) -> Option<u64> {
        let mut all: Option<u64> = None;
        for g in 0..self.groups.len() as u32 {
            for r in 0..self.ring_count(g) {
                let Some(pos) = self.pass_over_ring(g, r) else {
                    continue;
                };
                if self.group_ring(g, r).is_some_and(|gr| gr.ring == 0) {
                    all = Some(all.map_or(pos, |a: u64| a.min(pos)));
                }
            }
        }
        all
    }

    /// The cleaner's pass over group `g`'s `r`-th ring; returns its position
    /// there if it holds the ring.
    fn pass_over_ring(&mut self, g: u32, r: usize) -> Option<u64> {
        // Validated first, so that nothing the broker did not offer is logged.
        let repairs = self.validate_redeliveries(g, r);
        self.report_redelivery_repairs(g, repairs);
        self.observe_ring(g, r);
        self.settle_redeliveries(g, r);
        self.install_when_finished(g, r);
        if !self.holds_ring(g, r) {
            return None;
        }
        let pos = self.position(g, r)?;
        let gr = self.group_ring_mut(g, r)?;
        // Consumers may have moved on since `observe_ring` looked: the position
        // used to free slots never passes what has been logged.
        let pos = pos.min(gr.logged);
        while gr.segments.len() > 1 && gr.segments[1].start <= pos {
            gr.segments.pop_front();
        }
        Some(pos)
    }
}

/// The key of group `name`'s departed position in `default`/0.
pub(super) fn default_key(name: &str) -> (String, String, u32) {
    (
        name.to_string(),
        crate::audit::state::DEFAULT_TOPIC.to_string(),
        crate::audit::state::DEFAULT_PARTITION,
    )
}
