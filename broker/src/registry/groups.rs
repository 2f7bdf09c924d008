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
use control_protocol::{Assignment, Refusal};
use shm_layout::event;
use shm_layout::group;
use shm_layout::layout::redelivery;
use shm_layout::BrokerRegion;

use crate::topics::PartitionRing;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// Every offset below this was acknowledged.
    pub position: u64,
    /// Every offset below this had been handed out: delivered again as attempt 2.
    pub handed_out: u64,
    /// Exactly what below `handed_out` was not acknowledged, each with the
    /// attempt it is offered at next, while the broker that saw the group
    /// leave runs (None after a restart: everything from `position` is
    /// delivered again).
    pub unacked: Option<Vec<(u64, u32)>>,
}

/// A group's book in one ring.
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
    /// Read by the group for as long as it lives (a pre-created group's topics),
    /// not only while a member reads it.
    pub(super) pinned: bool,
    /// In a `partition` group: the member the ring is assigned to, the only
    /// one in its rotations.
    pub(super) owner: Option<u32>,
    /// A partition's ring, whose slots the group's position holds (None for
    /// `default`/0, whose slots the cleaner frees by its own mark).
    pub(super) partition_ring: Option<Arc<PartitionRing>>,
    /// Takes the group's hold on the ring (see `RingPlace::reclaimer`).
    pub(super) reclaimer: Option<Arc<crate::reclaim::Reclaimer>>,
    /// Frozen between two rotations: the members are finishing what the last one
    /// handed them before the next is installed (see `shm_layout::group`).
    pub(super) frozen: bool,
    /// Rotations still needed to know who holds an offset, oldest first.
    pub(super) segments: VecDeque<Segment>,
    /// Redeliveries waiting for a free slot in the region's redelivery table.
    pub(super) overflow: VecDeque<(u64, u32)>,
    /// Messages delivered `--max-attempts` times without an acknowledgement,
    /// with that count, waiting to be published to the dead-letter topic.
    pub(super) dead: VecDeque<(u64, u32)>,
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
    /// Messages published to the dead-letter topic since the broker started.
    pub(super) dead_lettered: u64,
}

/// A ring a group can read.
#[derive(Clone)]
pub(super) struct RingPlace {
    pub(super) ring: u32,
    pub(super) region: Arc<BrokerRegion>,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) file_key: u64,
    /// None for `default`/0.
    pub(super) partition_ring: Option<Arc<PartitionRing>>,
    /// What frees the ring's slots, and takes a group's hold (None: `default`/0
    /// before the broker's threads start, when no mark can be stale).
    pub(super) reclaimer: Option<Arc<crate::reclaim::Reclaimer>>,
}

/// Where a group's book in a ring starts.
pub(super) struct RingStart {
    pub(super) place: RingPlace,
    pub(super) start: u64,
    pub(super) redeliver_below: u64,
    pub(super) pinned: bool,
}

impl GroupRing {
    /// Sets up group `g`'s entry in the ring's region, named `name`, to hand
    /// out offsets from `at.start`.
    fn open(g: u32, name: &str, at: RingStart) -> GroupRing {
        let RingStart {
            place,
            start,
            redeliver_below,
            pinned,
        } = at;
        let region = place.region;
        let entry = region.group(g).expect("index below max_groups");
        region.clear_redeliveries(g);
        region.reset_group(entry, start);
        // For the broker that recovers this region if this one dies: which of its
        // delivery lines it may have to write, and with which attempt.
        region.record_group_start(
            entry,
            group::RecordedStart {
                first_offset: start,
                redeliver_below,
            },
        );
        region.activate_group(g, name);
        // Its slots are held from where the group starts.
        if let Some(reclaimer) = &place.reclaimer {
            reclaimer.hold_from(start);
        }
        let table = region.geometry().redeliveries_per_group as usize;
        let delivery_lines = if place.ring == 0 {
            DeliveryLines::default()
        } else {
            DeliveryLines::for_partition(&place.topic, place.partition)
        };
        GroupRing {
            ring: place.ring,
            region,
            topic: place.topic,
            partition: place.partition,
            file_key: place.file_key,
            members: Vec::new(),
            pinned,
            owner: None,
            partition_ring: place.partition_ring,
            reclaimer: place.reclaimer,
            // A fresh entry has no rotation: nobody can take anything from it.
            frozen: true,
            segments: VecDeque::new(),
            overflow: VecDeque::new(),
            dead: VecDeque::new(),
            offered: vec![None; table],
            logged: start,
            redeliver_below,
            observed: vec![None; table],
            observed_log_mark: vec![0; table],
            frozen_log_mark: 0,
            delivery_lines,
            delivered: 0,
            delivered_at_sample: 0,
            delivered_per_s: 0.0,
            redelivered: 0,
            dead_lettered: 0,
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

pub(super) struct Group {
    pub(super) name: Arc<str>,
    /// Pre-created groups live as long as the broker; others while they have members.
    pub(super) permanent: bool,
    /// Creation order, for auto-join ties.
    pub(super) created: u64,
    /// Members in join order.
    pub(super) members: Vec<u32>,
    /// How it gives out each ring's offsets among its members.
    pub(super) assignment: Assignment,
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
    /// Creates group `name`, reading no ring yet (see `open_ring`).
    pub(super) fn create_group(
        &mut self,
        name: &str,
        permanent: bool,
        assignment: Assignment,
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
        self.groups_created += 1;
        self.groups[i] = Some(Group {
            name: name.into(),
            permanent,
            created: self.groups_created,
            members: Vec::new(),
            assignment,
            rings: Vec::new(),
        });
        Ok(i as u32)
    }

    /// Group `g` starts reading a ring; returns where its book is.
    pub(super) fn open_ring(&mut self, g: u32, at: RingStart) -> usize {
        let grp = self.groups[g as usize].as_mut().expect("live group");
        grp.rings.push(GroupRing::open(g, &grp.name, at));
        grp.rings.len() - 1
    }

    /// `default`/0, the control region's ring.
    pub(super) fn default_place(&self) -> RingPlace {
        RingPlace {
            ring: 0,
            region: self.region.clone(),
            topic: Arc::from(crate::audit::state::DEFAULT_TOPIC),
            partition: crate::audit::state::DEFAULT_PARTITION,
            file_key: 0,
            partition_ring: None,
            reclaimer: self.control_reclaimer.clone(),
        }
    }

    /// Where group `name` starts reading `place` now: where it departed from it,
    /// or at the ring's next offset (it sees every message from now on).
    /// With the departed group's exact list of what it had not acknowledged,
    /// it resumes at the offset after what it had been handed, with that list
    /// to offer again (each at its attempt, so that `--max-attempts` counts
    /// across a member's restarts).
    pub(super) fn start_in(
        &mut self,
        name: &str,
        place: &RingPlace,
    ) -> (u64, u64, Vec<(u64, u32)>) {
        let key = (name.to_string(), place.topic.to_string(), place.partition);
        if let Some(d) = self.departed.remove(&key) {
            return match d.unacked {
                Some(unacked) => (d.handed_out, d.handed_out, unacked),
                None => (d.position, d.handed_out.max(d.position), Vec::new()),
            };
        }
        // During a replay, offsets below the persisted end are old records.
        let r = &place.region;
        let start = r.next_offset().max(r.persisted_offset());
        (start, start, Vec::new())
    }

    /// A group resuming in its `r`-th ring offers `unacked` again (each at the
    /// attempt it is at; past `--max-attempts`, a dead letter), holding the
    /// ring from `held_from`.
    fn offer_again(&mut self, g: u32, r: usize, unacked: Vec<(u64, u32)>, held_from: u64) {
        if unacked.is_empty() {
            return;
        }
        let Some(topic) = self.group_ring(g, r).map(|gr| gr.topic.clone()) else {
            return;
        };
        let max_attempts = self.max_attempts_in(&topic);
        let holds = self.holds_ring(g, r);
        let Some(gr) = self.group_ring_mut(g, r) else {
            return;
        };
        if let (Some(reclaimer), true) = (&gr.reclaimer, holds) {
            reclaimer.hold_from(held_from);
        }
        for (o, attempt) in unacked {
            if max_attempts.is_some_and(|max| attempt > max) {
                gr.dead.push_back((o, attempt - 1));
            } else {
                gr.overflow.push_back((o, attempt));
            }
        }
        self.publish_dead_letters(g, r);
        self.offer_overflow(g, r);
    }

    /// Refuses a consumer that wants another assignment than group `g`'s.
    pub(super) fn check_assignment(
        &self,
        g: u32,
        wanted: Option<Assignment>,
    ) -> Result<(), Refused> {
        let Some(grp) = self.groups[g as usize].as_ref() else {
            return Ok(());
        };
        match wanted {
            Some(w) if w != grp.assignment => Err(refuse(
                Refusal::AssignmentMismatch,
                format!(
                    "group {} uses {} assignment, not {}",
                    grp.name,
                    grp.assignment.name(),
                    w.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn find_group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .position(|g| g.as_ref().is_some_and(|g| &*g.name == name))
            .map(|i| i as u32)
    }

    /// The pre-created groups read `topics` (`default` they read from their
    /// creation, if it is among them): each partition from where `saved` says
    /// the group was, else from the ring's next offset. An unknown topic is
    /// refused.
    pub fn pin_group_topics(
        &mut self,
        topics: &[String],
        saved: impl Fn(&str, &str, u32) -> Option<Departed>,
    ) -> Result<(), String> {
        let default = crate::audit::state::DEFAULT_TOPIC;
        let others: Vec<String> = topics.iter().filter(|t| *t != default).cloned().collect();
        if others.is_empty() {
            return Ok(());
        }
        let places = self
            .places_of(&others)
            .map_err(|r| format!("--group-topics: {}", r.message))?;
        for g in 0..self.groups.len() as u32 {
            let Some(name) = self.groups[g as usize]
                .as_ref()
                .filter(|grp| grp.permanent)
                .map(|grp| grp.name.clone())
            else {
                continue;
            };
            for place in &places {
                let next = place.region.next_offset();
                let (start, redeliver_below) = match saved(&name, &place.topic, place.partition) {
                    Some(d) => {
                        let start = d.position.min(next);
                        (start, d.handed_out.min(next).max(start))
                    }
                    None => (next, next),
                };
                let at = RingStart {
                    place: place.clone(),
                    start,
                    redeliver_below,
                    pinned: true,
                };
                self.open_ring(g, at);
            }
        }
        Ok(())
    }

    /// The live group with the fewest members (ties: first created) among those
    /// already reading every ring of `places`, else among all.
    pub(super) fn least_loaded_group(&self, places: &[RingPlace]) -> Option<u32> {
        let least = |reads_all: bool| {
            self.groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| g.as_ref().map(|g| (g, i)))
                .filter(|(g, _)| !reads_all || places.iter().all(|p| g.ring_at(p.ring).is_some()))
                .map(|(g, i)| (g.members.len(), g.created, i))
                .min()
                .map(|(_, _, i)| i as u32)
        };
        least(true).or_else(|| least(false))
    }

    /// The rings of `topics` (none: `default`), each once; an unknown topic is
    /// refused.
    pub(super) fn places_of(&self, topics: &[String]) -> Result<Vec<RingPlace>, Refused> {
        let default = [crate::audit::state::DEFAULT_TOPIC.to_string()];
        let topics = if topics.is_empty() {
            &default[..]
        } else {
            topics
        };
        let mut places: Vec<RingPlace> = Vec::new();
        for name in topics {
            shm_layout::names::check_topic(name)
                .map_err(|e| refuse(Refusal::InvalidName, e.to_string()))?;
            if name == crate::audit::state::DEFAULT_TOPIC {
                if !places.iter().any(|p| p.ring == 0) {
                    places.push(self.default_place());
                }
                continue;
            }
            let unknown = || refuse(Refusal::UnknownTopic, format!("unknown topic {name}"));
            let topics = self.topics.as_ref().ok_or_else(unknown)?;
            let (record, first) = topics.find(name).ok_or_else(unknown)?;
            for p in 0..record.partitions {
                let ring = topics.ring(first + p).ok_or_else(unknown)?;
                if places.iter().any(|x| x.ring == ring.number) {
                    continue;
                }
                places.push(RingPlace {
                    ring: ring.number,
                    region: ring.region.clone(),
                    topic: Arc::from(name.as_str()),
                    partition: p,
                    file_key: shm_layout::journal::partition_key(record.id, p),
                    reclaimer: Some(ring.reclaimer.clone()),
                    partition_ring: Some(ring),
                });
            }
        }
        Ok(places)
    }

    /// Client `slot` joins group `g` in each ring of `places`: the group starts
    /// reading those it did not, and each gets a new rotation.
    pub(super) fn join_rings(&mut self, g: u32, slot: u32, places: Vec<RingPlace>) {
        let Some(name) = self.groups[g as usize].as_ref().map(|grp| grp.name.clone()) else {
            return;
        };
        let record = self.region.client(slot).map(|e| {
            (
                e.generation(),
                e.pid(),
                self.region
                    .client_name(slot, e.generation())
                    .unwrap_or_default(),
            )
        });
        let mut joined = Vec::new();
        for place in places {
            let r = match self.groups[g as usize]
                .as_ref()
                .and_then(|grp| grp.ring_at(place.ring))
            {
                Some(r) => {
                    // A pinned ring it stopped holding (under `--spill`): held
                    // again from its position, or the ring could free what it has
                    // yet to read.
                    if !self.holds_ring(g, r) {
                        let gr = self.group_ring(g, r).expect("found above");
                        if let (Some(reclaimer), Some(position)) =
                            (&gr.reclaimer, self.position(g, r))
                        {
                            reclaimer.hold_from(position);
                        }
                    }
                    r
                }
                None => {
                    let (start, redeliver_below, unacked) = self.start_in(&name, &place);
                    // Its hold covers what it offers again.
                    let held_from = unacked.first().map_or(start, |&(o, _)| o.min(start));
                    let at = RingStart {
                        place,
                        start,
                        redeliver_below,
                        pinned: false,
                    };
                    let r = self.open_ring(g, at);
                    self.offer_again(g, r, unacked, held_from);
                    r
                }
            };
            let gr = self.group_ring_mut(g, r).expect("ring opened");
            // In a partition's region its entry mirrors the control region's:
            // what a claim of a redelivery there checks.
            if let (Some(_), Some((generation, pid, id))) = (&gr.partition_ring, &record) {
                let mirrored = shm_layout::client::ClientRecord {
                    role: shm_layout::client::ClientRole::Consumer,
                    generation: *generation,
                    pid: *pid,
                    group: Some(g),
                    id,
                };
                gr.region
                    .publish_client(slot, &mirrored, shm_layout::layout::client_state::ACTIVE);
            }
            // It has nothing to acknowledge below the group's cursor there.
            let cursor = gr.cursor(g);
            gr.region.start_acknowledged_at(slot, cursor);
            gr.members.push(slot);
            joined.push(r);
        }
        if let Some(grp) = self.groups[g as usize].as_mut() {
            grp.members.push(slot);
        }
        let changed = match self.assign_partitions(g) {
            Some(moved) => moved,
            None => joined,
        };
        for r in changed {
            self.change_ring_membership(g, r);
        }
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

    /// The members reading the group's `r`-th ring changed: freezes it there
    /// (nobody hands out offsets there any more), then installs the new
    /// rotation if the members have finished the old one.
    fn change_ring_membership(&mut self, g: u32, r: usize) {
        self.freeze_ring(g, r);
        self.install_when_finished(g, r);
    }

    /// Nobody hands out offsets in group `g`'s `r`-th ring any more, until
    /// `install_when_finished` installs the next rotation.
    fn freeze_ring(&mut self, g: u32, r: usize) {
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
        // In a `partition` group the ring's old owner also finishes the
        // redelivery it holds there: the new owner's messages of the same keys
        // come after it.
        let by_partition = self.groups[g as usize]
            .as_ref()
            .is_some_and(|grp| grp.assignment == Assignment::Partition);
        let finished = gr.members.iter().all(|&m| {
            let holds_claim = by_partition && gr.owner != Some(m) && gr.holds_redelivery(g, m);
            gr.first_owned(m, gr.acked_upto(m), cursor).is_none() && !holds_claim
        });
        if !finished {
            return;
        }
        if gr.frozen_log_mark > self.log_written.load(Ordering::Acquire) {
            self.log_wanted = true;
            return;
        }
        // A `partition` group's ring turns over its owner alone.
        let turns: Vec<u32> = match self.groups[g as usize].as_ref().map(|grp| grp.assignment) {
            Some(Assignment::Partition) => gr
                .owner
                .filter(|o| gr.members.contains(o))
                .into_iter()
                .collect(),
            _ => gr.members.clone(),
        };
        if turns.is_empty() {
            return;
        }
        let members: Vec<_> = turns
            .iter()
            .map(|&m| region.client(m).expect("member index below max_clients"))
            .collect();
        let (start, _) = region.install_rotation(entry, &members);
        let ids = turns
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

    /// In a `partition` group, gives each ring an owner among the members
    /// reading it, as Kafka's range assignor does per topic: the members in join
    /// order, each given a run of consecutive partitions, the first ones one more
    /// when they do not divide evenly. Returns the rings whose owner changed
    /// (None for a `round-robin` group).
    fn assign_partitions(&mut self, g: u32) -> Option<Vec<usize>> {
        let grp = self.groups[g as usize].as_mut()?;
        if grp.assignment != Assignment::Partition {
            return None;
        }
        let mut moved = Vec::new();
        let mut topics: Vec<Arc<str>> = Vec::new();
        for gr in &grp.rings {
            if !topics.contains(&gr.topic) {
                topics.push(gr.topic.clone());
            }
        }
        for topic in topics {
            let mut rings: Vec<usize> = (0..grp.rings.len())
                .filter(|&r| grp.rings[r].topic == topic)
                .collect();
            rings.sort_by_key(|&r| grp.rings[r].partition);
            // Every partition of a topic is read by the same members.
            let readers: Vec<u32> = grp
                .members
                .iter()
                .copied()
                .filter(|m| grp.rings[rings[0]].members.contains(m))
                .collect();
            let (n, k) = (rings.len(), readers.len());
            let mut at = 0;
            for (i, &member) in readers.iter().enumerate() {
                let count = n / k + usize::from(i < n % k);
                for &r in &rings[at..at + count] {
                    if grp.rings[r].owner != Some(member) {
                        grp.rings[r].owner = Some(member);
                        moved.push(r);
                    }
                }
                at += count;
            }
            if k == 0 {
                for &r in &rings {
                    grp.rings[r].owner = None;
                }
            }
        }
        Some(moved)
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
        // next rotation, and the stalled member can never move it. The next
        // rotation comes once its share is offered: a `partition` group's new
        // owner must see those redeliveries before anything after the cursor.
        self.freeze_ring(g, r);
        let gr = self.group_ring(g, r).expect("live group ring");
        let region = gr.region.clone();
        let cursor = gr.cursor(g);
        let max_attempts = self.max_attempts_in(&gr.topic.clone());
        let gr = self.group_ring_mut(g, r).expect("live group ring");
        let mut from = ack_upto;
        while let Some(o) = gr.first_owned(client, from, cursor) {
            // Its first delivery here was attempt 2 if it had been handed out before a restart.
            let attempt = if o < gr.redeliver_below { 3 } else { 2 };
            if max_attempts.is_some_and(|max| attempt > max) {
                gr.dead.push_back((o, attempt - 1));
            } else {
                gr.overflow.push_back((o, attempt));
            }
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
                let reached = redelivery::attempt_number(offer.attempt);
                // Delivered as often as allowed: a dead letter, not an offer.
                if max_attempts.is_some_and(|max| reached >= max) {
                    if region.replace_redelivery(g, slot, seen.state, redelivery::FREE) {
                        gr.dead.push_back((offer.offset, reached));
                        gr.offered[slot as usize] = None;
                        gr.observed[slot as usize] = None;
                    }
                    continue;
                }
                let again = redelivery::pack(redelivery::PENDING, attempt, 0);
                if region.replace_redelivery(g, slot, seen.state, again) {
                    offer.attempt = attempt;
                    gr.redelivered += 1;
                }
            }
        }
        self.publish_dead_letters(g, r);
        self.offer_overflow(g, r);
        self.install_when_finished(g, r);
    }

    /// `client` left group `g`: in each ring it read, what it held goes to the
    /// others; a ring nobody reads any more is given up (unless pinned), and a
    /// group created by `--group` goes once its last member left.
    pub(super) fn remove_member(&mut self, g: u32, client: u32) {
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        grp.members.retain(|&m| m != client);
        let read: Vec<usize> = (0..grp.rings.len())
            .filter(|&r| grp.rings[r].members.contains(&client))
            .collect();
        for &r in &read {
            grp.rings[r].members.retain(|&m| m != client);
        }
        // In a `partition` group its partitions get new owners first: the
        // freezes below then install them.
        let moved = self.assign_partitions(g).unwrap_or_default();
        for &r in &read {
            self.release_share(g, r, client);
        }
        for r in moved.into_iter().filter(|r| !read.contains(r)) {
            self.change_ring_membership(g, r);
        }
        // From the last, so that giving one up leaves the others where they are.
        for &r in read.iter().rev() {
            let grp = self.groups[g as usize].as_ref().expect("live group");
            let gr = &grp.rings[r];
            if !gr.members.is_empty() {
                if let Some(entry) = gr.region.group(g) {
                    event::wake(&entry.turn_event);
                }
                event::wake(&gr.region.header().published);
            } else if !gr.pinned {
                self.give_up_ring(g, r);
            } else if self.limits.spill {
                self.spill_ring(g, r);
            }
        }
        let grp = self.groups[g as usize].as_ref().expect("live group");
        if grp.members.is_empty() && !grp.permanent {
            for r in (0..grp.rings.len()).rev() {
                self.give_up_ring(g, r);
            }
            self.delete_group(g);
        }
    }

    /// Group `g` stops reading its `r`-th ring, and holding it: what it had not
    /// acknowledged there (offered again, or never taken) is where it resumes
    /// if it reads the ring again.
    fn give_up_ring(&mut self, g: u32, r: usize) {
        let Some(gr) = self.group_ring(g, r) else {
            return;
        };
        let cursor = gr.cursor(g);
        let unacked = gr.offered_again(g);
        let at = Departed {
            position: self.position(g, r).unwrap_or(cursor),
            handed_out: cursor,
            unacked: Some(unacked),
        };
        let grp = self.groups[g as usize].as_mut().expect("live group");
        let gr = grp.rings.remove(r);
        gr.region.free_group(g);
        if let Some(ring) = gr.partition_ring {
            // Only a partition's region: the control region's entries are the
            // clients' own, freed when their processes are gone.
            gr.region.free_consumers_of(g);
            self.released_rings.push(ring);
        }
        self.departed.insert(
            (grp.name.to_string(), gr.topic.to_string(), gr.partition),
            at,
        );
        self.newly_departed = true;
    }

    /// Under `--spill`, a pinned ring nobody reads stops being held (see
    /// `holds_ring`): the group resumes there from where it had handed out,
    /// offering again what it had not acknowledged, each at the attempt it is
    /// at (read from the file if it leaves the ring meanwhile).
    fn spill_ring(&mut self, g: u32, r: usize) {
        let Some(gr) = self.group_ring(g, r) else {
            return;
        };
        let cursor = gr.cursor(g);
        let unacked = gr.offered_again(g);
        let held_from = unacked.first().map_or(cursor, |&(o, _)| o);
        let place = RingPlace {
            ring: gr.ring,
            region: gr.region.clone(),
            topic: gr.topic.clone(),
            partition: gr.partition,
            file_key: gr.file_key,
            partition_ring: gr.partition_ring.clone(),
            reclaimer: gr.reclaimer.clone(),
        };
        let grp = self.groups[g as usize].as_mut().expect("live group");
        grp.rings[r] = GroupRing::open(
            g,
            &grp.name,
            RingStart {
                place,
                start: cursor,
                redeliver_below: cursor,
                pinned: true,
            },
        );
        self.offer_again(g, r, unacked, held_from);
        self.newly_departed = true;
    }

    /// Moves group `name`, which must have no member, to resume at `offsets`
    /// in the partitions of `topic` (one each, in partition order) (`broker
    /// reset-offsets`); what it was handed there before is forgotten (no
    /// attempt 2). Where the group does not read the topic (or the broker does
    /// not know the group), it is remembered as departed there, so that it
    /// starts there when a member reads the topic under its name.
    pub fn reset_group(&mut self, name: &str, topic: &str, offsets: &[u64]) -> Result<(), String> {
        if self.is_kafka_group(name) {
            return Err(format!(
                "group {name} is a Kafka group: move it with a Kafka client's commit while it has no members (kafka-consumer-groups --reset-offsets)"
            ));
        }
        let places = self
            .places_of(&[topic.to_string()])
            .map_err(|r| r.message)?;
        let g = self.find_group(name);
        if let Some(grp) = g.and_then(|g| self.groups[g as usize].as_ref()) {
            match grp.members.len() {
                0 => {}
                1 => return Err(format!("group {name} has a member: stop it first")),
                n => return Err(format!("group {name} has {n} members: stop them first")),
            }
        }
        for (place, &offset) in places.into_iter().zip(offsets) {
            let reads = g.and_then(|g| {
                let r = self.groups[g as usize].as_ref()?.ring_at(place.ring)?;
                Some((g, r))
            });
            let Some((g, r)) = reads else {
                let key = (name.to_string(), place.topic.to_string(), place.partition);
                let at = Departed {
                    position: offset,
                    handed_out: offset,
                    unacked: None,
                };
                self.departed.insert(key, at);
                continue;
            };
            let grp = self.groups[g as usize].as_mut().expect("found above");
            let pinned = grp.rings[r].pinned;
            grp.rings[r] = GroupRing::open(
                g,
                &grp.name,
                RingStart {
                    place,
                    start: offset,
                    redeliver_below: offset,
                    pinned,
                },
            );
        }
        Ok(())
    }

    /// Whether group `g` holds its `r`-th ring: it has members there, or it was
    /// pre-created and the broker runs without `--spill` (SPEC §10).
    pub(super) fn holds_ring(&self, g: u32, r: usize) -> bool {
        self.group_ring(g, r)
            .is_some_and(|gr| !gr.members.is_empty() || (gr.pinned && !self.limits.spill))
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
            // A pre-created group already reads `default` and its --group-topics,
            // from there; its other topics wait for a member, as anyone's do.
            let (name, topic, partition) = (&key.0, key.1.as_str(), key.2);
            let reads_it = self.find_group(name).is_some_and(|g| {
                self.groups[g as usize].as_ref().is_some_and(|grp| {
                    grp.rings
                        .iter()
                        .any(|gr| &*gr.topic == topic && gr.partition == partition)
                })
            });
            if !reads_it {
                self.departed.insert(key, departed);
            }
        }
    }

    fn delete_group(&mut self, g: u32) {
        if let Some(grp) = self.groups[g as usize].take() {
            for gr in &grp.rings {
                gr.region.free_group(g);
                if let Some(ring) = &gr.partition_ring {
                    gr.region.free_consumers_of(g);
                    self.released_rings.push(ring.clone());
                }
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
        let dead = gr.dead.iter().map(|&(o, _)| o);
        Some(history::position(
            &gr.segments,
            cursor,
            acks,
            offered.chain(overflow).chain(dead),
        ))
    }

    /// Cleaner pass: settles redeliveries, forgets rotations nobody needs, and
    /// says how far every group holding each ring has consumed it.
    pub fn consumed_by_all(&mut self) -> Consumed {
        let mut consumed = Consumed::default();
        let mut held: std::collections::BTreeMap<u32, (Arc<PartitionRing>, u64)> =
            Default::default();
        for g in 0..self.groups.len() as u32 {
            for r in 0..self.ring_count(g) {
                let pos = self.pass_over_ring(g, r);
                let gr = self.group_ring(g, r).expect("ring passed over");
                match (&gr.partition_ring, pos) {
                    (None, Some(pos)) => {
                        consumed.default = Some(consumed.default.map_or(pos, |a| a.min(pos)));
                    }
                    (Some(ring), pos) => {
                        let pos = pos.unwrap_or(u64::MAX);
                        let e = held.entry(ring.number).or_insert((ring.clone(), pos));
                        e.1 = e.1.min(pos);
                    }
                    (None, None) => {}
                }
            }
        }
        // Rings no group reads any more are free again.
        for ring in std::mem::take(&mut self.released_rings) {
            held.entry(ring.number).or_insert((ring, u64::MAX));
        }
        consumed.partitions = held
            .into_values()
            .map(|(ring, position)| PartitionConsumed {
                hold: ring.reclaimer.hold(),
                ring,
                position,
            })
            .collect();
        consumed
    }

    /// The cleaner's pass over group `g`'s `r`-th ring; returns its position
    /// there if it holds the ring.
    fn pass_over_ring(&mut self, g: u32, r: usize) -> Option<u64> {
        // Validated first, so that nothing the broker did not offer is logged.
        let repairs = self.validate_redeliveries(g, r);
        self.report_redelivery_repairs(g, repairs);
        self.observe_ring(g, r);
        self.settle_redeliveries(g, r);
        self.publish_dead_letters(g, r);
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

/// How far the groups holding each ring have consumed it, from the cleaner's pass.
#[derive(Default)]
pub struct Consumed {
    /// `default`/0 (None: no group holds it).
    pub default: Option<u64>,
    /// The partitions' rings groups read or stopped reading.
    pub partitions: Vec<PartitionConsumed>,
}

/// Every group holding a partition's ring has consumed every offset below
/// `position` there (`u64::MAX`: none holds it), as of `hold` (see
/// `Reclaimer::hold`).
pub struct PartitionConsumed {
    pub ring: Arc<PartitionRing>,
    pub hold: u64,
    pub position: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reclaim::Reclaimer;
    use crate::registry::{GroupStart, RegistryLimits};
    use crate::test_region::test_region;
    use control_protocol::Role;
    use shm_layout::ring::Sender;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    #[test]
    fn a_member_returning_to_a_spilled_ring_holds_it_against_a_mark_made_before() {
        let t = test_region("spill-default", 16);
        let region = t.0.clone();
        let limits = RegistryLimits {
            session_timeout: Duration::from_secs(30),
            spill: true,
            assignment: control_protocol::Assignment::RoundRobin,
            groups_read_default: true,
            max_attempts: None,
        };
        let start = GroupStart {
            name: "audit".into(),
            start: 0,
            redeliver_below: 0,
        };
        let mut reg = Registry::new(region.clone(), &[start], limits);
        let persisted = Arc::new(AtomicU64::new(u64::MAX));
        let reclaimer = Arc::new(Reclaimer::new(region.clone(), persisted, 0));
        reg.hold_default_through(reclaimer.clone());
        let me = Sender {
            client: 9,
            generation: 1,
        };
        for _ in 0..8 {
            region.send(me, None, b"m", 0, || false, None).unwrap();
        }
        // Under --spill the group, without a member, holds nothing: the cleaner's
        // mark frees all of it...
        assert_eq!(reg.consumed_by_all().default, None);
        let (hold, mark) = (reclaimer.hold(), region.next_offset());
        // ...but a member joins before that mark is applied.
        let joined = reg
            .register(Role::Consumer, "c", Some("audit"), 1, region.token())
            .unwrap();
        assert!(joined.group.is_some());
        reclaimer.note_consumed(hold, mark);
        reclaimer.reclaim().unwrap();
        assert_eq!(region.freed_offset(), 0, "what the member is to read stays");
        // The next pass's mark knows of it.
        assert_eq!(reg.consumed_by_all().default, Some(0));
    }
}
