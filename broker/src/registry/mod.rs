//! The broker's book of clients and groups, and the region state it alone writes:
//! client entries, group rotations, redeliveries. The event loop calls it when
//! clients register and leave; the cleaner asks it how far each group has consumed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use audit_format::records::DeliveryLines;
use control_protocol::{Refusal, Role};
use shm_layout::event::{self, event_id};
use shm_layout::group;
use shm_layout::layout::{client_role, client_state, group_state, redelivery, EventWord};
use shm_layout::names::check_name;
use shm_layout::region::write_name;
use shm_layout::ring::REPLAY_GENERATION;
use shm_layout::sys::{monotonic_millis, process_exists, wall_clock_micros};
use shm_layout::Region;

use crate::audit::state::{GroupState, DEFAULT_PARTITION, DEFAULT_TOPIC};

/// A refused registration: the reason code and one line for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub message: String,
}

fn refuse(reason: Refusal, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// What a successful registration hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub client: u32,
    pub generation: u32,
    pub group: Option<(u32, String)>,
}

/// A client the broker knows.
#[derive(Debug)]
struct Client {
    role: Role,
    id: Arc<str>,
    group: Option<u32>,
}

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

/// A run of offsets handed out under one rotation.
#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    members: Vec<(u32, Arc<str>)>,
}

#[derive(Debug)]
struct Group {
    name: Arc<str>,
    /// Pre-created groups live as long as the broker; others while they have members.
    permanent: bool,
    /// Creation order, for auto-join ties.
    created: u64,
    /// Members in join order.
    members: Vec<u32>,
    /// Frozen between two rotations: the members are finishing what the last one
    /// handed them before the next is installed (see `shm_layout::group`).
    frozen: bool,
    /// Rotations still needed to know who holds an offset, oldest first.
    segments: VecDeque<Segment>,
    /// Redeliveries waiting for a free slot in the region's redelivery table.
    overflow: VecDeque<(u64, u32)>,
    /// Per redelivery slot: what the broker offered there and has not settled.
    /// The region's table is checked against it, never trusted over it.
    offered: Vec<Option<Offer>>,
    /// First deliveries below this offset have been logged.
    logged: u64,
    /// First deliveries below this offset are attempt 2 (handed out before a restart).
    redeliver_below: u64,
    /// Per redelivery slot: the (attempt, claimer) already logged, and the log
    /// mark that covers its line.
    observed: Vec<Option<(u32, u32)>>,
    observed_log_mark: Vec<u64>,
    /// While frozen: the log mark that covers every delivery of the rotation
    /// before (the next one is installed once it is written).
    frozen_log_mark: u64,
    /// Formats this group's consumption-log lines.
    delivery_lines: DeliveryLines,
    /// Deliveries seen so far, and at the last rate sample.
    delivered: u64,
    delivered_at_sample: u64,
    delivered_per_s: f64,
}

/// A redelivery the broker offered in a slot of a group's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Offer {
    offset: u64,
    attempt: u32,
}

/// A fault the broker found in a group's redelivery table and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeliveryRepair {
    /// The entry was in use, but the broker offered nothing there: reset to free.
    NeverOffered { slot: u32, offset: u64 },
    /// The entry's offset, attempt or kind differed from the offer: rewritten as
    /// the offer, pending.
    Altered {
        slot: u32,
        found_offset: u64,
        found_state: u64,
        offered: u64,
    },
    /// Claimed by a client that is no member of the group: pending again.
    ClaimedByStranger {
        slot: u32,
        offset: u64,
        claimer: u32,
    },
    /// The offered record can no longer be read from the ring: dropped.
    Unreadable { slot: u32, offset: u64 },
}

impl RedeliveryRepair {
    /// Faults of one kind are reported once.
    fn kind(&self) -> &'static str {
        match self {
            RedeliveryRepair::NeverOffered { .. } => "never offered",
            RedeliveryRepair::Altered { .. } => "altered",
            RedeliveryRepair::ClaimedByStranger { .. } => "claimed by a stranger",
            RedeliveryRepair::Unreadable { .. } => "unreadable",
        }
    }

    /// The report line for group `group`.
    fn describe(&self, group: &str) -> String {
        let what = match self {
            RedeliveryRepair::NeverOffered { slot, offset } => format!(
                "entry {slot} held offset {offset}, which the broker never offered; dropped"
            ),
            RedeliveryRepair::Altered {
                slot,
                found_offset,
                found_state,
                offered,
            } => format!(
                "entry {slot} held offset {found_offset} in state {found_state:#x}, not the redelivery of offset {offered} the broker offered there; offered again"
            ),
            RedeliveryRepair::ClaimedByStranger {
                slot,
                offset,
                claimer,
            } => format!(
                "entry {slot} (offset {offset}) was claimed by client {claimer}, which is not a member; offered again"
            ),
            RedeliveryRepair::Unreadable { slot, offset } => format!(
                "entry {slot} offered offset {offset}, whose record the ring no longer holds intact; dropped"
            ),
        };
        format!(
            "broker: repaired group {group}'s redelivery table: {what} (later faults of this kind are repaired without a report)"
        )
    }
}

impl Group {
    /// The member that was handed `offset` first, if any.
    fn owner_of(&self, offset: u64) -> Option<&(u32, Arc<str>)> {
        let seg = self.segments.iter().rev().find(|s| s.start <= offset)?;
        if seg.members.is_empty() {
            return None;
        }
        Some(&seg.members[((offset - seg.start) % seg.members.len() as u64) as usize])
    }

    /// The first offset in `[from, cursor)` handed to `client`, if any.
    fn first_owned(&self, client: u32, from: u64, cursor: u64) -> Option<u64> {
        let n_segments = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            let end = if i + 1 < n_segments {
                self.segments[i + 1].start
            } else {
                cursor
            };
            let lo = from.max(seg.start);
            if lo >= end.min(cursor) {
                continue;
            }
            let Some(rank) = seg.members.iter().position(|&(m, _)| m == client) else {
                continue;
            };
            let n = seg.members.len() as u64;
            let first_in_seg = seg.start + rank as u64;
            let candidate = if lo <= first_in_seg {
                first_in_seg
            } else {
                first_in_seg + (lo - first_in_seg).div_ceil(n) * n
            };
            if candidate < end.min(cursor) {
                return Some(candidate);
            }
        }
        None
    }
}

/// Limits and timeouts the registry enforces.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    pub session_timeout: Duration,
}

/// Every client and group.
pub struct Registry {
    region: Arc<Region>,
    limits: RegistryLimits,
    clients: Vec<Option<Client>>,
    ids: HashMap<(Role, String), u32>,
    groups: Vec<Option<Group>>,
    generation: u32,
    groups_created: u64,
    /// Producers gone with possibly uncommitted reservations, for the cleaner.
    abandoned: Vec<u32>,
    /// Admin sessions (they take no client entry).
    admins: usize,
    /// The client entry handed out last.
    last_slot: u32,
    /// Removed consumers whose entries wait for their processes to end: (entry, pid).
    quarantined: Vec<Quarantined>,
    /// Gone producers whose names (and, while `holds_entry`, client entries) wait
    /// for their messages to be reclaimed.
    retiring: Vec<Retiring>,
    /// Names of producers by (client entry, generation), while their messages live.
    producers: HashMap<(u32, u32), Arc<str>>,
    /// Consumption-log lines observed and not yet taken by the cleaner.
    log_text: Vec<u8>,
    /// Bytes of consumption-log lines taken by the cleaner so far, in the order
    /// the log's writer writes them.
    log_taken: u64,
    /// Bytes of consumption-log lines the writer has written (shared with it).
    log_written: Arc<std::sync::atomic::AtomicU64>,
    /// Something waits for lines to be written: the cleaner asks for them now.
    log_wanted: bool,
    /// Stands for a producer or consumer whose name is no longer known.
    unknown: Arc<str>,
    /// Kinds of redelivery-table faults already reported (each is reported once).
    reported: std::collections::HashSet<&'static str>,
    /// Publish-rate sample: when, and the next offset then.
    sampled_at: std::time::Instant,
    published_at_sample: u64,
    published_per_s: f64,
    /// Every offset below this is persisted (the persister's own count): a group's
    /// cursor can be at most a ring's worth past it.
    persisted: Arc<std::sync::atomic::AtomicU64>,
}

/// A consumer to evict for exceeding the session timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub client: u32,
    pub group: String,
}

impl Registry {
    /// A registry over `region`, with `groups` pre-created where they start.
    pub fn new(region: Arc<Region>, groups: &[GroupStart], limits: RegistryLimits) -> Self {
        let g = *region.geometry();
        let mut r = Registry {
            clients: (0..g.max_clients).map(|_| None).collect(),
            groups: (0..g.max_groups).map(|_| None).collect(),
            region,
            limits,
            ids: HashMap::new(),
            generation: 0,
            groups_created: 0,
            abandoned: Vec::new(),
            admins: 0,
            last_slot: g.max_clients - 1,
            retiring: Vec::new(),
            quarantined: Vec::new(),
            producers: HashMap::new(),
            log_text: Vec::new(),
            log_taken: 0,
            log_written: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            log_wanted: false,
            unknown: Arc::from("unknown"),
            reported: std::collections::HashSet::new(),
            sampled_at: std::time::Instant::now(),
            published_at_sample: 0,
            published_per_s: 0.0,
            persisted: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        };
        r.published_at_sample = r.region.next_offset();
        for g in groups {
            r.create_group(&g.name, true, g.start, g.redeliver_below)
                .expect("pre-created groups fit: checked at start-up");
        }
        r
    }

    fn create_group(
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
        for slot in 0..self.region.geometry().redeliveries_per_group {
            if let Some(e) = self.region.redelivery(i as u32, slot) {
                e.state.store(redelivery::FREE, Ordering::Relaxed);
            }
        }
        group::reset_group(entry, start);
        // For the broker that recovers this region if this one dies: which of its
        // delivery lines it may have to write, and with which attempt.
        group::record_start(
            entry,
            group::RecordedStart {
                first_offset: start,
                redeliver_below,
            },
        );
        write_name(&entry.meta.name, &entry.meta.name_len, name);
        entry
            .meta
            .state
            .store(group_state::ACTIVE, Ordering::Release);
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
        });
        Ok(i as u32)
    }

    fn find_group(&self, name: &str) -> Option<u32> {
        self.groups
            .iter()
            .position(|g| g.as_ref().is_some_and(|g| &*g.name == name))
            .map(|i| i as u32)
    }

    /// The live group with the fewest members (ties: first created).
    fn least_loaded_group(&self) -> Option<u32> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (g.members.len(), g.created, i)))
            .min()
            .map(|(_, _, i)| i as u32)
    }

    /// Registers a client that presented `token`.
    pub fn register(
        &mut self,
        role: Role,
        id: &str,
        group: Option<&str>,
        pid: u32,
        token: [u64; 2],
    ) -> Result<Registration, Refused> {
        if token != self.region.token() {
            return Err(refuse(
                Refusal::BadToken,
                "wrong access token: only a process that can map the broker's region may register",
            ));
        }
        check_name("id", id).map_err(|e| refuse(Refusal::InvalidName, e.to_string()))?;
        if let Some(g) = group {
            check_name("group name", g).map_err(|e| refuse(Refusal::InvalidName, e.to_string()))?;
        }
        if self.ids.contains_key(&(role, id.to_string())) {
            return Err(refuse(
                Refusal::IdInUse,
                format!("a live {} already uses the id {id}", role.name()),
            ));
        }
        if role == Role::Admin {
            self.admins += 1;
            return Ok(Registration {
                client: u32::MAX,
                generation: 0,
                group: None,
            });
        }
        let Some(slot) = self.free_client_slot() else {
            return Err(refuse(
                Refusal::TooManyClients,
                format!(
                    "the broker's limit of {} clients is reached",
                    self.clients.len()
                ),
            ));
        };
        let group_index = match (role, group) {
            (Role::Consumer, Some(name)) => Some(match self.find_group(name) {
                Some(g) => g,
                None => {
                    // During a replay, offsets below the persisted end are old records.
                    let start = self
                        .region
                        .next_offset()
                        .max(self.region.persisted_offset());
                    self.create_group(name, false, start, start)?
                }
            }),
            (Role::Consumer, None) => Some(self.least_loaded_group().ok_or_else(|| {
                refuse(
                    Refusal::NoGroups,
                    "the broker has no groups: start the consumer with --group NAME",
                )
            })?),
            _ => None,
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        let region = self.region.clone();
        let entry = region.client(slot).expect("slot below max_clients");
        let idn = &entry.identity;
        idn.role.store(role_code(role), Ordering::Relaxed);
        idn.generation.store(self.generation, Ordering::Relaxed);
        idn.pid.store(pid, Ordering::Relaxed);
        idn.group
            .store(group_index.unwrap_or(u32::MAX), Ordering::Relaxed);
        write_name(&idn.id, &idn.id_len, id);
        group::clear_ranks(entry);
        entry.activity.sleeping_on.store(0, Ordering::Relaxed);
        entry
            .activity
            .last_active_ms
            .store(monotonic_millis(), Ordering::Relaxed);
        idn.state.store(client_state::ACTIVE, Ordering::Release);
        let id: Arc<str> = id.into();
        self.clients[slot as usize] = Some(Client {
            role,
            id: id.clone(),
            group: group_index,
        });
        if role == Role::Producer {
            self.producers.insert((slot, self.generation), id.clone());
        }
        self.ids.insert((role, id.to_string()), slot);
        let group = group_index.map(|g| {
            let entry_group = region.group(g).expect("live group index");
            entry
                .activity
                .ack_upto
                .store(group::cursor(entry_group), Ordering::Release);
            let grp = self.groups[g as usize].as_mut().expect("live group");
            grp.members.push(slot);
            let name = grp.name.to_string();
            self.change_membership(g);
            (g, name)
        });
        Ok(Registration {
            client: slot,
            generation: self.generation,
            group,
        })
    }

    /// The group's members changed: freezes it (nobody hands out offsets any more),
    /// then installs the new rotation if the members have finished the old one.
    fn change_membership(&mut self, g: u32) {
        let Some(entry) = self.region.group(g) else {
            return;
        };
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        if !grp.frozen {
            group::install_rotation(entry, &[]);
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
            let ack = self
                .region
                .client(m)
                .map_or(0, |c| c.activity.ack_upto.load(Ordering::Acquire));
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
        let (start, _) = group::install_rotation(entry, &members);
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

    /// An admin session ended.
    pub fn admin_left(&mut self) {
        self.admins = self.admins.saturating_sub(1);
    }

    /// A client's lease ended (disconnect, death or eviction): removes it at once and
    /// hands what it held to the survivors.
    pub fn leave(&mut self, client: u32) {
        // Log what it was handed before it disappears from the books.
        if let Some(g) = self
            .clients
            .get(client as usize)
            .and_then(|c| c.as_ref()?.group)
        {
            self.observe_group(g);
        }
        let Some(c) = self.clients.get_mut(client as usize).and_then(Option::take) else {
            return;
        };
        self.ids.remove(&(c.role, c.id.to_string()));
        let region = self.region.clone();
        let Some(entry) = region.client(client) else {
            return;
        };
        entry
            .identity
            .state
            .store(client_state::REMOVED, Ordering::Release);
        // Pairs with the fence after a redelivery claim: a consumer that claims after
        // this sees itself removed and hands the claim back; one that claimed before
        // is found by the scan in `remove_member`.
        std::sync::atomic::fence(Ordering::SeqCst);
        group::revoke_ranks(entry);
        self.uncount_sleeper(client);
        if c.role == Role::Producer {
            self.abandoned.push(client);
            return;
        }
        if let Some(g) = c.group {
            self.remove_member(g, client);
        }
        // Not reused while its process lives: an evicted consumer that wakes up must
        // find its own (removed) entry, not a newcomer's.
        let pid = entry.identity.pid.load(Ordering::Relaxed);
        let log_mark = self.log_mark();
        self.quarantined.push(Quarantined {
            client,
            pid,
            log_mark,
        });
    }

    /// Frees the entries of removed consumers whose processes are gone, once the
    /// log holds their deliveries: until then a broker recovering the region after
    /// a crash may need the entry to name them.
    pub fn release_quarantined(&mut self) {
        let region = self.region.clone();
        let written = self.log_written.load(Ordering::Acquire);
        let mut wanted = false;
        self.quarantined.retain(|q| {
            if process_exists(q.pid) {
                return true;
            }
            if q.log_mark > written {
                wanted = true;
                return true;
            }
            let client = q.client;
            if let Some(e) = region.client(client) {
                e.identity
                    .state
                    .store(client_state::FREE, Ordering::Release);
            }
            false
        });
        self.log_wanted |= wanted;
    }

    /// Every line observed so far is written once the log's writer has written
    /// this many bytes.
    fn log_mark(&self) -> u64 {
        self.log_taken + self.log_text.len() as u64
    }

    /// Counts the log's bytes with the writer's own count (shared with it): what
    /// waits for lines to be written waits for that count.
    pub fn count_log_written_by(&mut self, written: Arc<std::sync::atomic::AtomicU64>) {
        self.log_written = written;
    }

    /// Whether something waits for the log's lines to be written (then they are
    /// wanted now rather than at the next flush); clears the wish.
    pub fn take_log_wanted(&mut self) -> bool {
        std::mem::take(&mut self.log_wanted)
    }

    fn uncount_sleeper(&self, client: u32) {
        let Some(entry) = self.region.client(client) else {
            return;
        };
        let on = entry.activity.sleeping_on.swap(0, Ordering::AcqRel);
        if on == 0 {
            return;
        }
        if let Some(ev) = self.event_word(on - 1) {
            ev.sleepers.fetch_sub(1, Ordering::Relaxed);
            event::wake(ev);
        }
    }

    fn event_word(&self, id: u32) -> Option<&EventWord> {
        let h = self.region.header();
        match id {
            event_id::PUBLISHED => Some(&h.published),
            event_id::SPACE => Some(&h.space),
            event_id::CLEANER => Some(&h.cleaner),
            event_id::PERSISTED => Some(&h.persisted),
            g => self
                .region
                .group(g.checked_sub(event_id::GROUP_BASE)?)
                .map(|e| &e.turn_event),
        }
    }

    fn remove_member(&mut self, g: u32, client: u32) {
        let region = self.region.clone();
        let Some(entry) = region.group(g) else {
            return;
        };
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        grp.members.retain(|&m| m != client);
        let ack_upto = region
            .client(client)
            .map_or(0, |c| c.activity.ack_upto.load(Ordering::Acquire));
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
            let Some(e) = region.redelivery(g, slot) else {
                break;
            };
            let Some(offer) = grp.offered[slot as usize].as_mut() else {
                continue;
            };
            let s = e.state.load(Ordering::Acquire);
            if redelivery::kind(s) == redelivery::CLAIMED && redelivery::claimer(s) == client {
                let attempt = offer.attempt + 1;
                let again = redelivery::pack(redelivery::PENDING, attempt, 0);
                if e.state
                    .compare_exchange(s, again, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    offer.attempt = attempt;
                }
            }
        }
        grp.overflow.extend(held);
        self.offer_overflow(g);
        let grp = self.groups[g as usize].as_ref().expect("live group");
        if grp.members.is_empty() && !grp.permanent {
            self.delete_group(g);
        } else {
            event::wake(&entry.turn_event);
            event::wake(&region.header().published);
        }
    }

    fn delete_group(&mut self, g: u32) {
        if let Some(entry) = self.region.group(g) {
            entry.meta.state.store(group_state::FREE, Ordering::Release);
        }
        self.groups[g as usize] = None;
    }

    /// Moves waiting redeliveries into slots of the region's table the book
    /// says are free, and publishes the hint.
    fn offer_overflow(&mut self, g: u32) {
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return;
        };
        while let Some(&(offset, attempt)) = grp.overflow.front() {
            let Some(slot) = grp.offered.iter().position(Option::is_none) else {
                break;
            };
            if !self
                .region
                .offer_redelivery_at(g, slot as u32, offset, attempt)
            {
                break;
            }
            grp.offered[slot] = Some(Offer { offset, attempt });
            grp.observed[slot] = None;
            grp.overflow.pop_front();
        }
        self.publish_redelivery_hint(g);
    }

    /// Sets group `g`'s hint to the number of offers in its table: consumers scan
    /// the table only while it is not zero. The broker alone writes it.
    fn publish_redelivery_hint(&self, g: u32) {
        let (Some(entry), Some(grp)) = (self.region.group(g), self.groups[g as usize].as_ref())
        else {
            return;
        };
        let offers = grp.offered.iter().flatten().count() as u32;
        if entry.meta.redeliveries.load(Ordering::Acquire) != offers {
            // Release pairs with the consumers' Acquire load before they scan.
            entry.meta.redeliveries.store(offers, Ordering::Release);
        }
    }

    /// Checks group `g`'s redelivery table against the book of offers and repairs
    /// what cannot be valid: an entry in use where nothing was offered is freed;
    /// one whose offset, attempt or kind differ from the offer is rewritten as the
    /// offer; a claim by a client that is no member is offered again (attempt + 1);
    /// an offer whose record the ring no longer holds is dropped. Each change is a
    /// compare-exchange against the word judged, so a consumer's concurrent claim,
    /// acknowledgement or hand-back is never overwritten (a lost race is retried
    /// next pass). Returns what it repaired.
    fn validate_redeliveries(&mut self, g: u32) -> Vec<RedeliveryRepair> {
        let region = self.region.clone();
        let mut repairs = Vec::new();
        let Some(grp) = self.groups[g as usize].as_mut() else {
            return repairs;
        };
        let cas = |e: &shm_layout::layout::RedeliveryEntry, from: u64, to: u64| {
            e.state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        };
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(e) = region.redelivery(g, slot) else {
                break;
            };
            let s = e.state.load(Ordering::Acquire);
            let kind = redelivery::kind(s);
            let offset = e.offset.load(Ordering::Relaxed);
            let Some(offer) = grp.offered[slot as usize] else {
                if kind != redelivery::FREE && cas(e, s, redelivery::FREE) {
                    repairs.push(RedeliveryRepair::NeverOffered { slot, offset });
                }
                continue;
            };
            if !region.is_committed(offer.offset) {
                if cas(e, s, redelivery::FREE) {
                    grp.offered[slot as usize] = None;
                    repairs.push(RedeliveryRepair::Unreadable {
                        slot,
                        offset: offer.offset,
                    });
                }
                continue;
            }
            let in_use = matches!(
                kind,
                redelivery::PENDING | redelivery::CLAIMED | redelivery::ACKED
            );
            if !in_use || offset != offer.offset || redelivery::attempt(s) != offer.attempt {
                // The offset first: a consumer claims by the state word, and reads
                // the offset after its claim (Release below, Acquire there).
                e.offset.store(offer.offset, Ordering::Relaxed);
                let pending = redelivery::pack(redelivery::PENDING, offer.attempt, 0);
                if cas(e, s, pending) {
                    repairs.push(RedeliveryRepair::Altered {
                        slot,
                        found_offset: offset,
                        found_state: s,
                        offered: offer.offset,
                    });
                }
                continue;
            }
            let claimer = redelivery::claimer(s);
            let member = grp.members.contains(&claimer);
            if kind == redelivery::CLAIMED && !member {
                let attempt = offer.attempt + 1;
                if cas(e, s, redelivery::pack(redelivery::PENDING, attempt, 0)) {
                    grp.offered[slot as usize] = Some(Offer {
                        offset: offer.offset,
                        attempt,
                    });
                    // A consumer removed a moment ago may claim before it sees
                    // itself removed (and would hand the claim back): not a fault.
                    let just_removed = self.quarantined.iter().any(|q| q.client == claimer);
                    if !just_removed {
                        repairs.push(RedeliveryRepair::ClaimedByStranger {
                            slot,
                            offset: offer.offset,
                            claimer,
                        });
                    }
                }
            }
        }
        self.publish_redelivery_hint(g);
        repairs
    }

    /// Reports each kind of repaired fault once, on stderr.
    fn report_redelivery_repairs(&mut self, g: u32, repairs: Vec<RedeliveryRepair>) {
        let Some(grp) = self.groups[g as usize].as_ref() else {
            return;
        };
        for repair in repairs {
            if self.reported.insert(repair.kind()) {
                eprintln!("{}", repair.describe(&grp.name));
            }
        }
    }

    /// Frees acknowledged redelivery slots and refills them from the overflow.
    fn settle_redeliveries(&mut self, g: u32) {
        for slot in 0..self.region.geometry().redeliveries_per_group {
            let Some(e) = self.region.redelivery(g, slot) else {
                break;
            };
            let s = e.state.load(Ordering::Acquire);
            if redelivery::kind(s) != redelivery::ACKED {
                continue;
            }
            let grp = self.groups[g as usize].as_mut().expect("live group");
            if grp.offered[slot as usize].is_none() {
                continue; // not an offer: the validation frees it
            }
            // Freed only once its delivery is logged; `observe_group` runs first in
            // every pass, so an unlogged one waits one pass.
            if grp.observed[slot as usize] != Some((redelivery::attempt(s), redelivery::claimer(s)))
            {
                continue;
            }
            // And once that line is written: until then the slot is what a broker
            // recovering the region after a crash would log it from.
            if grp.observed_log_mark[slot as usize] > self.log_written.load(Ordering::Acquire) {
                self.log_wanted = true;
                continue;
            }
            grp.observed[slot as usize] = None;
            grp.offered[slot as usize] = None;
            e.state.store(redelivery::FREE, Ordering::Release);
        }
        self.offer_overflow(g);
    }

    /// How far group `g` has consumed: every offset below it is acknowledged.
    fn position(&self, g: u32) -> Option<u64> {
        let grp = self.groups[g as usize].as_ref()?;
        let entry = self.region.group(g)?;
        let cursor = group::cursor(entry);
        let mut pos = cursor;
        for &m in &grp.members {
            let ack = self
                .region
                .client(m)
                .map_or(0, |c| c.activity.ack_upto.load(Ordering::Acquire));
            if let Some(o) = grp.first_owned(m, ack, cursor) {
                pos = pos.min(o);
            }
        }
        // The broker's own book, not the region's table, which any process with
        // the mapping can write: a bogus entry must never pin the position.
        for offer in grp.offered.iter().flatten() {
            pos = pos.min(offer.offset);
        }
        for &(o, _) in &grp.overflow {
            pos = pos.min(o);
        }
        Some(pos)
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

    /// Whether producers left with reservations not yet released.
    pub fn has_gone_producers(&self) -> bool {
        !self.abandoned.is_empty()
    }

    /// Under the ring lock: releases the uncommitted reservations of producers
    /// that left and retires them (their entries wait for their records).
    pub fn retire_gone_producers(&mut self, lock: &shm_layout::ring::RingGuard<'_>) {
        for c in std::mem::take(&mut self.abandoned) {
            self.region.abandon_reservations(lock, c);
            // After any repair the lock made: every record of `c` is below this.
            self.retire_producer(c, self.region.next_offset());
        }
    }

    /// After the cleaner released a gone producer's reservations: its entry (which
    /// names it to consumers) is freed once every offset below `mark` is reclaimed.
    pub fn retire_producer(&mut self, client: u32, mark: u64) {
        let generation = self
            .region
            .client(client)
            .map_or(0, |e| e.identity.generation.load(Ordering::Relaxed));
        self.retiring.push(Retiring {
            client,
            generation,
            mark,
            holds_entry: true,
        });
    }

    /// Frees the entries of retired producers whose messages are all reclaimed.
    pub fn release_retired(&mut self, freed_offset: u64) {
        let region = self.region.clone();
        let producers = &mut self.producers;
        self.retiring.retain(|r| {
            if freed_offset < r.mark {
                return true;
            }
            producers.remove(&(r.client, r.generation));
            if r.holds_entry {
                if let Some(e) = region.client(r.client) {
                    e.identity
                        .state
                        .store(client_state::FREE, Ordering::Release);
                }
            }
            false
        });
    }

    /// A client entry nobody uses, searching round-robin from the last one handed
    /// out so that an entry is reused as late as possible.
    fn free_client_slot(&mut self) -> Option<u32> {
        let n = self.clients.len() as u32;
        for step in 1..=n {
            let i = (self.last_slot + step) % n;
            let entry_free = self
                .region
                .client(i)
                .is_some_and(|e| e.identity.state.load(Ordering::Acquire) == client_state::FREE);
            if self.clients[i as usize].is_none() && entry_free {
                self.last_slot = i;
                return Some(i);
            }
        }
        // No free entry: producers that left and still wait for the cleaner are
        // released now, so that what follows does not depend on its timing.
        if !self.abandoned.is_empty() && !self.retiring.iter().any(|r| r.holds_entry) {
            let region = self.region.clone();
            let mut tries = 0;
            let locked = region.lock_ring(|| {
                tries += 1;
                tries > 1
            });
            if let Ok(guard) = locked {
                self.retire_gone_producers(&guard);
                drop(guard);
            }
        }
        // Still none: rather than refuse (a lagging group could then never get
        // the consumer that would drain it), reuse the entry of the oldest gone
        // producer. Its records stay in the files under its name; consumers reading
        // them see the producer as "unknown".
        let oldest = self.retiring.iter_mut().find(|r| r.holds_entry)?;
        oldest.holds_entry = false;
        let client = oldest.client;
        self.region
            .client(client)?
            .identity
            .state
            .store(client_state::FREE, Ordering::Release);
        self.last_slot = client;
        Some(client)
    }

    /// Consumers that held a message or let their turn wait past the session timeout.
    pub fn overdue_consumers(&self) -> Vec<Eviction> {
        let now = monotonic_millis();
        let limit = self.limits.session_timeout.as_millis() as u64;
        let mut out = Vec::new();
        for (g, grp) in self.groups.iter().enumerate() {
            let Some(grp) = grp else { continue };
            let Some(entry) = self.region.group(g as u32) else {
                continue;
            };
            let cursor = group::cursor(entry);
            for &m in &grp.members {
                let Some(c) = self.region.client(m) else {
                    continue;
                };
                let idle = now.saturating_sub(c.activity.last_active_ms.load(Ordering::Acquire));
                if idle <= limit {
                    continue;
                }
                let ack = c.activity.ack_upto.load(Ordering::Acquire);
                let holds = grp.first_owned(m, ack, cursor).is_some()
                    || self.holds_redelivery(g as u32, grp, m);
                // Committed offsets wait to be handed out and it could take them.
                let turn_waits = self.region.next_offset() > cursor && group::is_member(entry, c);
                if holds || turn_waits {
                    out.push(Eviction {
                        client: m,
                        group: grp.name.to_string(),
                    });
                }
            }
        }
        out
    }

    /// Whether `client` holds a claim on a redelivery the broker offered.
    fn holds_redelivery(&self, g: u32, grp: &Group, client: u32) -> bool {
        (0..self.region.geometry().redeliveries_per_group).any(|slot| {
            grp.offered[slot as usize].is_some()
                && self.region.redelivery(g, slot).is_some_and(|e| {
                    let s = e.state.load(Ordering::Acquire);
                    redelivery::kind(s) == redelivery::CLAIMED && redelivery::claimer(s) == client
                })
        })
    }

    /// Number of registered clients of each role (producers, consumers, admins).
    pub fn counts(&self) -> (usize, usize, usize) {
        let producers = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.role == Role::Producer)
            .count();
        let consumers = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.role == Role::Consumer)
            .count();
        (producers, consumers, self.admins)
    }

    /// A snapshot of every group for status reports: name, member ids, position.
    pub fn group_snapshot(&self) -> Vec<GroupSnapshot> {
        let mut out: Vec<_> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| {
                let grp = grp.as_ref()?;
                Some(GroupSnapshot {
                    name: grp.name.to_string(),
                    created: grp.created,
                    members: grp
                        .members
                        .iter()
                        .filter_map(|&m| {
                            self.clients[m as usize].as_ref().map(|c| c.id.to_string())
                        })
                        .collect(),
                    delivered_per_s: grp.delivered_per_s,
                    position: self.position(g as u32).unwrap_or(0),
                    cursor: self.region.group(g as u32).map_or(0, group::cursor),
                })
            })
            .collect();
        out.sort_by_key(|g| g.created);
        out
    }
}

/// A removed consumer whose entry waits to be freed: until its process is gone
/// (an evicted consumer that wakes must find its own entry) and the log holds its
/// deliveries (a broker recovering the region after a crash names it from there).
#[derive(Debug, Clone, Copy)]
struct Quarantined {
    client: u32,
    pid: u32,
    log_mark: u64,
}

/// A gone producer whose records are still in the ring.
#[derive(Debug, Clone, Copy)]
struct Retiring {
    client: u32,
    generation: u32,
    /// Every offset of its records is below this.
    mark: u64,
    /// Whether it still holds its client entry (given up when the table is full).
    holds_entry: bool,
}

/// What `broker status` shows of a group.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub name: String,
    pub delivered_per_s: f64,
    pub created: u64,
    pub members: Vec<String>,
    pub position: u64,
    pub cursor: u64,
}

impl Registry {
    /// Logs what group `g` handed out since the last look: first deliveries (from
    /// its cursor and rotations) and redelivery claims (from the region's table),
    /// formatted straight into the pending consumption-log text.
    /// Bounds what groups are believed to have handed out by what the persister
    /// has written (see `observe_group`).
    pub fn bound_by_persisted(&mut self, persisted: Arc<std::sync::atomic::AtomicU64>) {
        self.persisted = persisted;
    }

    fn observe_group(&mut self, g: u32) {
        let Registry {
            region,
            groups,
            clients,
            producers,
            log_text,
            log_taken,
            unknown,
            persisted,
            ..
        } = self;
        let Some(entry) = region.group(g) else {
            return;
        };
        let Some(grp) = groups[g as usize].as_mut() else {
            return;
        };
        // Consumers take records at their stamps, so the cursor may pass
        // `next_offset` while a hold is in progress; beyond the stamped records, it
        // can only come from a corrupt region. So can a cursor more than a ring's
        // worth past what is persisted, or past what this group has logged (slots
        // are freed only once both are done): it is followed no further, so that a
        // scribble costs a bounded number of lines, never an endless loop.
        let next = region.next_offset();
        let ring = region.geometry().slots as u64;
        let bound = (persisted.load(Ordering::Acquire).saturating_add(ring))
            .min(grp.logged.saturating_add(ring));
        let cursor = match group::cursor(entry) {
            c if c <= next => c,
            c => region.stamped_end(next, c),
        }
        .min(bound);
        // Taken out while the group is looked at, and put back at the end.
        let mut lines = std::mem::take(&mut grp.delivery_lines);
        lines.set_time(wall_clock_micros());
        // Runs of records from one producer are the common case: one lookup a run.
        let mut last: Option<((u32, u32), &Arc<str>)> = None;
        let mut producer_of = |o: u64| -> &Arc<str> {
            let Some(key) = region.record_producer(o) else {
                return unknown;
            };
            match last {
                Some((k, name)) if k == key => name,
                _ => {
                    let name = producers.get(&key).unwrap_or(unknown);
                    last = Some((key, name));
                    name
                }
            }
        };
        while grp.logged < cursor {
            let o = grp.logged;
            region.prefetch_entry(o + 16);
            if let Some((_, consumer)) = grp.owner_of(o) {
                let attempt = if o < grp.redeliver_below { 2 } else { 1 };
                lines.push(log_text, o, producer_of(o), &grp.name, consumer, attempt);
                grp.delivered += 1;
            }
            grp.logged += 1;
        }
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(e) = region.redelivery(g, slot) else {
                break;
            };
            let s = e.state.load(Ordering::Acquire);
            let kind = redelivery::kind(s);
            let seen = &mut grp.observed[slot as usize];
            // Only the broker's own offers are logged: what else the table holds
            // is a scribble, which the validation undoes.
            let Some(offer) = grp.offered[slot as usize] else {
                *seen = None;
                continue;
            };
            let taken = kind == redelivery::CLAIMED || kind == redelivery::ACKED;
            if !taken
                || redelivery::attempt(s) != offer.attempt
                || e.offset.load(Ordering::Relaxed) != offer.offset
            {
                *seen = None;
                continue;
            }
            let key = (redelivery::attempt(s), redelivery::claimer(s));
            if *seen == Some(key) {
                continue;
            }
            *seen = Some(key);
            let consumer = clients
                .get(key.1 as usize)
                .and_then(|c| c.as_ref())
                .map_or(&*unknown, |c| &c.id);
            let o = offer.offset;
            lines.push(log_text, o, producer_of(o), &grp.name, consumer, key.0);
            grp.observed_log_mark[slot as usize] = *log_taken + log_text.len() as u64;
            grp.delivered += 1;
        }
        grp.delivery_lines = lines;
    }

    /// Hands over the consumption-log lines observed since the last call (whole
    /// lines), taking `into`'s allocation in exchange.
    pub fn swap_log_text(&mut self, into: &mut Vec<u8>) {
        into.clear();
        self.log_taken += self.log_text.len() as u64;
        std::mem::swap(into, &mut self.log_text);
    }

    /// The id of the producer in client entry `client` with `generation`.
    pub fn producer_name(&self, client: u32, generation: u32) -> Arc<str> {
        self.producers
            .get(&(client, generation))
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"))
    }

    /// Registers a stand-in producer entry named `id`, for records the broker
    /// replays from the persistence file after a restart. Returns its client entry.
    pub fn register_ghost(&mut self, id: &str) -> Option<u32> {
        let slot = self.free_client_slot()?;
        let entry = self.region.client(slot)?;
        let idn = &entry.identity;
        idn.role.store(role_code(Role::Producer), Ordering::Relaxed);
        idn.generation.store(REPLAY_GENERATION, Ordering::Relaxed);
        idn.pid.store(std::process::id(), Ordering::Relaxed);
        write_name(&idn.id, &idn.id_len, id);
        idn.state.store(client_state::REMOVED, Ordering::Release);
        self.producers.insert((slot, REPLAY_GENERATION), id.into());
        Some(slot)
    }

    /// Recomputes message rates, at most once a second.
    pub fn sample_rates(&mut self) {
        let elapsed = self.sampled_at.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let next = self.region.next_offset();
        self.published_per_s = (next - self.published_at_sample) as f64 / elapsed;
        self.published_at_sample = next;
        for grp in self.groups.iter_mut().flatten() {
            grp.delivered_per_s = (grp.delivered - grp.delivered_at_sample) as f64 / elapsed;
            grp.delivered_at_sample = grp.delivered;
        }
        self.sampled_at = std::time::Instant::now();
    }

    /// Messages published per second at the last sample.
    pub fn published_per_s(&self) -> f64 {
        self.published_per_s
    }

    /// Positions of every live group, for the state file.
    pub fn group_states(&self) -> Vec<GroupState> {
        (0..self.groups.len() as u32)
            .filter_map(|g| {
                let grp = self.groups[g as usize].as_ref()?;
                let position = self.position(g)?;
                let cursor = group::cursor(self.region.group(g)?);
                Some(GroupState {
                    name: grp.name.to_string(),
                    topic: DEFAULT_TOPIC.to_string(),
                    partition: DEFAULT_PARTITION,
                    position,
                    handed_out: cursor.max(position),
                })
            })
            .collect()
    }
}

/// The role code written into a client entry.
pub(crate) fn role_code(role: Role) -> u32 {
    match role {
        Role::Producer => client_role::PRODUCER,
        Role::Consumer => client_role::CONSUMER,
        Role::Admin => client_role::ADMIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shm_layout::ring::Sender;
    use shm_layout::Geometry;

    /// A region that unlinks itself when dropped.
    struct TestRegion(Arc<Region>);
    impl Drop for TestRegion {
        fn drop(&mut self) {
            let _ = Region::unlink(self.0.name());
        }
    }

    /// A registry with one pre-created group, `records` records in the ring, and
    /// one consumer (client 0) that has acknowledged all of them.
    fn registry_with_consumer(tag: &str, records: u64) -> (TestRegion, Registry) {
        let name = format!("/mk-unit-registry-{tag}-{}", std::process::id());
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
        let start = GroupStart {
            name: "group-1".into(),
            start: 0,
            redeliver_below: 0,
        };
        let limits = RegistryLimits {
            session_timeout: Duration::from_secs(30),
        };
        let mut reg = Registry::new(region.clone(), &[start], limits);
        let me = Sender {
            client: 7,
            generation: 1,
        };
        for _ in 0..records {
            region.send(me, None, b"m", 0, || false, None).unwrap();
        }
        let joined = reg
            .register(
                Role::Consumer,
                "c",
                None,
                std::process::id(),
                region.token(),
            )
            .unwrap();
        assert_eq!(joined.client, 0);
        let entry = region.group(0).unwrap();
        let word = entry.turn.turn.load(Ordering::Acquire);
        assert!(group::try_advance(entry, word, records));
        let c = region.client(0).unwrap();
        c.activity.ack_upto.store(records, Ordering::Release);
        (TestRegion(region), reg)
    }

    fn entry_of(r: &Region, slot: u32) -> (u64, u64) {
        let e = r.redelivery(0, slot).unwrap();
        (
            e.offset.load(Ordering::Relaxed),
            e.state.load(Ordering::Relaxed),
        )
    }

    fn scribble(r: &Region, slot: u32, offset: u64, state: u64) {
        let e = r.redelivery(0, slot).unwrap();
        e.offset.store(offset, Ordering::Relaxed);
        e.state.store(state, Ordering::Relaxed);
    }

    fn hint(r: &Region) -> u32 {
        r.group(0)
            .unwrap()
            .meta
            .redeliveries
            .load(Ordering::Relaxed)
    }

    #[test]
    fn an_entry_the_broker_never_offered_neither_pins_the_position_nor_survives_a_pass() {
        let (t, mut reg) = registry_with_consumer("never-offered", 6);
        let r = &t.0;
        scribble(r, 0, 2, redelivery::pack(redelivery::PENDING, 2, 0));
        r.group(0)
            .unwrap()
            .meta
            .redeliveries
            .store(1, Ordering::Relaxed);
        assert_eq!(reg.position(0), Some(6), "the book decides, not the table");
        assert_eq!(
            reg.validate_redeliveries(0),
            [RedeliveryRepair::NeverOffered { slot: 0, offset: 2 }]
        );
        assert_eq!(redelivery::kind(entry_of(r, 0).1), redelivery::FREE);
        assert_eq!(hint(r), 0, "the hint is recomputed from the book");
        assert!(reg.validate_redeliveries(0).is_empty(), "repaired once");
        // A claimed bogus entry goes too, and is never logged as a delivery.
        scribble(r, 3, 4, redelivery::pack(redelivery::CLAIMED, 2, 0));
        assert_eq!(reg.consumed_by_all(), Some(6));
        assert_eq!(redelivery::kind(entry_of(r, 3).1), redelivery::FREE);
        let mut lines = Vec::new();
        reg.swap_log_text(&mut lines);
        assert!(
            !String::from_utf8(lines).unwrap().contains("\t2\n"),
            "no redelivery line"
        );
    }

    #[test]
    fn an_offer_is_kept_and_what_differs_from_it_is_rewritten_from_the_book() {
        let (t, mut reg) = registry_with_consumer("offer", 6);
        let r = &t.0;
        let grp = reg.groups[0].as_mut().unwrap();
        grp.overflow.push_back((1, 2));
        reg.offer_overflow(0);
        assert_eq!(reg.position(0), Some(1), "an offer holds the group");
        assert_eq!(hint(r), 1);
        let pending = redelivery::pack(redelivery::PENDING, 2, 0);
        assert_eq!(entry_of(r, 0), (1, pending));
        assert!(
            reg.validate_redeliveries(0).is_empty(),
            "a true offer stands"
        );

        scribble(r, 0, 99, pending);
        assert_eq!(
            reg.validate_redeliveries(0),
            [RedeliveryRepair::Altered {
                slot: 0,
                found_offset: 99,
                found_state: pending,
                offered: 1
            }]
        );
        assert_eq!(entry_of(r, 0), (1, pending));
        scribble(r, 0, 1, 0xFF << 56);
        assert_eq!(reg.validate_redeliveries(0).len(), 1, "an unknown kind");
        assert_eq!(entry_of(r, 0), (1, pending));

        // A claim by a client that is no member goes back, as a new attempt.
        scribble(r, 0, 1, redelivery::pack(redelivery::CLAIMED, 2, 5));
        assert_eq!(
            reg.validate_redeliveries(0),
            [RedeliveryRepair::ClaimedByStranger {
                slot: 0,
                offset: 1,
                claimer: 5
            }]
        );
        assert_eq!(
            entry_of(r, 0),
            (1, redelivery::pack(redelivery::PENDING, 3, 0))
        );
        // The member's own claim stands.
        let claim = r.claim_redelivery(0, 0, 1).unwrap();
        assert_eq!((claim.offset, claim.attempt), (1, 3));
        assert!(reg.validate_redeliveries(0).is_empty());
        assert!(r.ack_redelivery(0, 0, &claim));
        assert_eq!(reg.consumed_by_all(), Some(6), "logged, then settled");
        let mut lines = Vec::new();
        reg.swap_log_text(&mut lines);
        let lines = String::from_utf8(lines).unwrap();
        assert!(lines.contains("\tgroup-1\tc\t3\n"), "{lines:?}");
        assert_eq!(hint(r), 0);
    }

    #[test]
    fn an_offer_whose_record_is_gone_is_dropped() {
        let (t, mut reg) = registry_with_consumer("gone", 6);
        let r = &t.0;
        let grp = reg.groups[0].as_mut().unwrap();
        grp.overflow.push_back((2, 2));
        reg.offer_overflow(0);
        r.index_entry(2).stamp.store(0, Ordering::Relaxed);
        assert_eq!(
            reg.validate_redeliveries(0),
            [RedeliveryRepair::Unreadable { slot: 0, offset: 2 }]
        );
        assert_eq!(redelivery::kind(entry_of(r, 0).1), redelivery::FREE);
        assert_eq!(reg.position(0), Some(6));
        assert_eq!(hint(r), 0);
    }

    #[test]
    fn each_kind_of_fault_is_reported_once_in_one_line() {
        let line = RedeliveryRepair::NeverOffered {
            slot: 0,
            offset: 10,
        }
        .describe("group-1");
        assert!(line.starts_with(
            "broker: repaired group group-1's redelivery table: entry 0 held offset 10, which the broker never offered; dropped"
        ));
        assert!(!line.contains('\n'));
        let (_t, mut reg) = registry_with_consumer("report", 1);
        let twice = vec![
            RedeliveryRepair::NeverOffered { slot: 0, offset: 1 },
            RedeliveryRepair::NeverOffered { slot: 1, offset: 2 },
        ];
        reg.report_redelivery_repairs(0, twice);
        assert_eq!(reg.reported.len(), 1);
    }
}
