//! Groups and their rotations: creation, auto-join, membership changes (freezing
//! a group and installing its next rotation), positions, and the cleaner's pass.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use audit_format::records::DeliveryLines;
use control_protocol::Refusal;
use shm_layout::event;
use shm_layout::group;
use shm_layout::layout::redelivery;

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

#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: Arc<str>,
    /// Pre-created groups live as long as the broker; others while they have members.
    pub(super) permanent: bool,
    /// Creation order, for auto-join ties.
    pub(super) created: u64,
    /// Members in join order.
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
    /// Formats this group's consumption-log lines.
    pub(super) delivery_lines: DeliveryLines,
    /// Deliveries seen so far, and at the last rate sample.
    pub(super) delivered: u64,
    pub(super) delivered_at_sample: u64,
    pub(super) delivered_per_s: f64,
    /// Messages offered again since the broker started.
    pub(super) redelivered: u64,
}

impl Group {
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
}

impl Registry {
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
        let entry = self.region.group(i as u32).expect("index below max_groups");
        self.region.clear_redeliveries(i as u32);
        self.region.reset_group(entry, start);
        // For the broker that recovers this region if this one dies: which of its
        // delivery lines it may have to write, and with which attempt.
        self.region.record_group_start(
            entry,
            group::RecordedStart {
                first_offset: start,
                redeliver_below,
            },
        );
        self.region.activate_group(i as u32, name);
        self.groups_created += 1;
        self.groups[i] = Some(Group {
            name: name.into(),
            permanent,
            created: self.groups_created,
            members: Vec::new(),
            // A fresh entry has no rotation: nobody can take anything from it.
            frozen: true,
            segments: VecDeque::new(),
            overflow: VecDeque::new(),
            offered: vec![None; self.region.geometry().redeliveries_per_group as usize],
            logged: start,
            redeliver_below,
            observed: vec![None; self.region.geometry().redeliveries_per_group as usize],
            observed_log_mark: vec![0; self.region.geometry().redeliveries_per_group as usize],
            frozen_log_mark: 0,
            delivery_lines: DeliveryLines::default(),
            delivered: 0,
            delivered_at_sample: 0,
            delivered_per_s: 0.0,
            redelivered: 0,
        });
        Ok(i as u32)
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

    /// The group's members changed: freezes it (nobody hands out offsets any more),
    /// then installs the new rotation if the members have finished the old one.
    pub(super) fn change_membership(&mut self, g: u32) {
        let Some(entry) = self.region.group(g) else {
            return;
        };
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        if !grp.frozen {
            self.region.install_rotation(entry, &[]);
            grp.frozen = true;
            // Everything the old rotation handed out is below the frozen cursor:
            // its lines are made now, and the next rotation waits until they are
            // written. The region keeps only the rotation in force and the one
            // before it, which is what a broker recovering it after a crash has to
            // name the consumer of each delivery the log lacks.
            self.observe_group(g);
            let mark = self.log_mark();
            if let Some(grp) = self.groups[g as usize].as_mut() {
                grp.frozen_log_mark = mark;
            }
        }
        self.install_when_finished(g);
    }

    /// For a frozen group: installs a rotation over its members at its cursor, once
    /// every member has acknowledged all the last rotation handed it (a member never
    /// needs a rotation older than the one before the one in force).
    fn install_when_finished(&mut self, g: u32) {
        let Some(entry) = self.region.group(g) else {
            return;
        };
        let Some(grp) = self.groups[g as usize].as_ref() else {
            return;
        };
        if !grp.frozen || grp.members.is_empty() {
            return;
        }
        let cursor = group::cursor(entry);
        let finished = grp.members.iter().all(|&m| {
            let ack = self.region.client(m).map_or(0, |c| c.acked_upto());
            grp.first_owned(m, ack, cursor).is_none()
        });
        if !finished {
            return;
        }
        if grp.frozen_log_mark > self.log_written.load(Ordering::Acquire) {
            self.log_wanted = true;
            return;
        }
        let members: Vec<_> = grp
            .members
            .iter()
            .map(|&m| {
                self.region
                    .client(m)
                    .expect("member index below max_clients")
            })
            .collect();
        let (start, _) = self.region.install_rotation(entry, &members);
        let ids = grp
            .members
            .iter()
            .map(|&m| {
                let id = self.clients[m as usize]
                    .as_ref()
                    .map_or_else(|| Arc::from("unknown"), |c| c.id.clone());
                (m, id)
            })
            .collect();
        let grp = self.groups[g as usize].as_mut().expect("live group");
        if grp.segments.back().is_some_and(|s| s.start == start) {
            grp.segments.pop_back();
        }
        grp.segments.push_back(Segment {
            start,
            members: ids,
        });
        grp.frozen = false;
        // Members wait for a commit or for the group's turn event.
        event::wake(&entry.turn_event);
        event::wake(&self.region.header().published);
    }

    pub(super) fn remove_member(&mut self, g: u32, client: u32) {
        let region = self.region.clone();
        let Some(entry) = region.group(g) else {
            return;
        };
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        grp.members.retain(|&m| m != client);
        let ack_upto = region.client(client).map_or(0, |c| c.acked_upto());
        // Stop handing out offsets first: after this the cursor stays put until the
        // next rotation, and the stalled member can never move it.
        self.change_membership(g);
        let grp = self.groups[g as usize].as_mut().expect("live group");
        let cursor = group::cursor(entry);
        let mut held = Vec::new();
        let mut from = ack_upto;
        while let Some(o) = grp.first_owned(client, from, cursor) {
            // Its first delivery here was attempt 2 if it had been handed out before a restart.
            held.push((o, if o < grp.redeliver_below { 3 } else { 2 }));
            from = o + 1;
        }
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(seen) = region.redelivery_seen(g, slot) else {
                break;
            };
            let Some(offer) = grp.offered[slot as usize].as_mut() else {
                continue;
            };
            if seen.kind() == redelivery::CLAIMED && seen.claimer() == client {
                let attempt = offer.attempt + 1;
                let again = redelivery::pack(redelivery::PENDING, attempt, 0);
                if region.replace_redelivery(g, slot, seen.state, again) {
                    offer.attempt = attempt;
                    grp.redelivered += 1;
                }
            }
        }
        grp.overflow.extend(held);
        self.offer_overflow(g);
        let grp = self.groups[g as usize].as_ref().expect("live group");
        if grp.members.is_empty() && !grp.permanent {
            // It stops holding the ring; what it had not acknowledged (offered
            // again, or never taken) is where it resumes.
            let name = grp.name.to_string();
            let departed = Departed {
                position: self.position(g).unwrap_or(cursor),
                handed_out: cursor,
            };
            self.departed.insert(name, departed);
            self.newly_departed = true;
            self.delete_group(g);
        } else if grp.members.is_empty() && self.limits.spill {
            // Under --spill it stops holding the ring too (see `holds_ring`): what it
            // had not acknowledged is delivered again from its position, read from
            // the file if it left the ring, rather than offered from the table.
            let (name, permanent) = (grp.name.to_string(), grp.permanent);
            let position = self.position(g).unwrap_or(cursor);
            self.delete_group(g);
            if self
                .create_group(&name, permanent, position, cursor)
                .is_ok()
            {
                self.newly_departed = true;
            }
        } else {
            event::wake(&entry.turn_event);
            event::wake(&region.header().published);
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
            self.departed.insert(name.to_string(), at);
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

    /// Whether group `g` holds the ring: it has members, or it was pre-created
    /// and the broker runs without `--spill` (SPEC §10).
    pub(super) fn holds_ring(&self, g: u32) -> bool {
        self.groups[g as usize]
            .as_ref()
            .is_some_and(|grp| !grp.members.is_empty() || (grp.permanent && !self.limits.spill))
    }

    /// Whether a group departed since the last call: its position is saved at once
    /// (a member that left cleanly acknowledged it), not at the next flush.
    pub fn take_newly_departed(&mut self) -> bool {
        std::mem::take(&mut self.newly_departed)
    }

    /// Remembers groups that had departed when the broker last stopped (from the
    /// state file): each resumes where it was when a member joins again.
    pub fn remember_departed(&mut self, groups: impl IntoIterator<Item = (String, Departed)>) {
        for (name, departed) in groups {
            if self.find_group(&name).is_none() {
                self.departed.insert(name, departed);
            }
        }
    }

    /// Where a group created now under `name` starts: where it departed, or at
    /// the next offset.
    pub(super) fn start_of_new_group(&self, name: &str) -> (u64, u64) {
        if let Some(d) = self.departed.get(name) {
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
        self.region.free_group(g);
        self.groups[g as usize] = None;
    }

    /// How far group `g` has consumed: every offset below it is acknowledged.
    pub(super) fn position(&self, g: u32) -> Option<u64> {
        let grp = self.groups[g as usize].as_ref()?;
        let entry = self.region.group(g)?;
        let cursor = group::cursor(entry);
        let acks = grp.members.iter().map(|&m| {
            let ack = self.region.client(m).map_or(0, |c| c.acked_upto());
            (m, ack)
        });
        // The broker's own book, not the region's table, which any process with
        // the mapping can write: a bogus entry must never pin the position.
        let offered = grp.offered.iter().flatten().map(|offer| offer.offset);
        let overflow = grp.overflow.iter().map(|&(o, _)| o);
        Some(history::position(
            &grp.segments,
            cursor,
            acks,
            offered.chain(overflow),
        ))
    }

    /// Cleaner pass: settles redeliveries, forgets rotations nobody needs, and returns
    /// the offset below which every group has consumed (None: no group holds anything).
    pub fn consumed_by_all(&mut self) -> Option<u64> {
        let mut all: Option<u64> = None;
        for g in 0..self.groups.len() as u32 {
            if self.groups[g as usize].is_none() {
                continue;
            }
            // Validated first, so that nothing the broker did not offer is logged.
            let repairs = self.validate_redeliveries(g);
            self.report_redelivery_repairs(g, repairs);
            self.observe_group(g);
            self.settle_redeliveries(g);
            self.install_when_finished(g);
            if !self.holds_ring(g) {
                continue;
            }
            let Some(pos) = self.position(g) else {
                continue;
            };
            let grp = self.groups[g as usize].as_mut().expect("checked above");
            // Consumers may have moved on since `observe_group` looked: the position
            // used to free slots never passes what has been logged.
            let pos = pos.min(grp.logged);
            while grp.segments.len() > 1 && grp.segments[1].start <= pos {
                grp.segments.pop_front();
            }
            all = Some(all.map_or(pos, |a: u64| a.min(pos)));
        }
        all
    }
}
