//! The book of clients: registration, leases, quarantined consumers, retiring
//! producers and the region's client entries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use control_protocol::{Refusal, Role, Subscription};
use shm_layout::client::{ClientRecord, ClientRole};
use shm_layout::group;
use shm_layout::layout::client_state;
use shm_layout::names::check_name;
use shm_layout::ring::REPLAY_GENERATION;
use shm_layout::sys::{monotonic_millis, process_exists};

use super::{refuse, Refused, Registration, Registry};
use crate::topics::PartitionRing;

/// A client the broker knows.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) role: Role,
    pub(super) id: Arc<str>,
    pub(super) group: Option<u32>,
    pub(super) pid: u32,
    pub(super) activity: ActivitySample,
}

/// What the broker last sampled of a client's progress counter (polls made or
/// messages sent): when it last moved, and its rate.
#[derive(Debug, Clone)]
pub(super) struct ActivitySample {
    pub(super) progress: u64,
    pub(super) moved_at: std::time::Instant,
    pub(super) at_rate_sample: u64,
    pub(super) per_s: f64,
}

impl ActivitySample {
    pub(super) fn new() -> Self {
        ActivitySample {
            progress: 0,
            moved_at: std::time::Instant::now(),
            at_rate_sample: 0,
            per_s: 0.0,
        }
    }
}

/// A consumer to evict for exceeding the session timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub client: u32,
    pub group: String,
}

/// A removed consumer whose entry waits to be freed: until its process is gone
/// (an evicted consumer that wakes must find its own entry) and the log holds its
/// deliveries (a broker recovering the region after a crash names it from there).
#[derive(Debug, Clone, Copy)]
pub(super) struct Quarantined {
    pub(super) client: u32,
    pub(super) pid: u32,
    pub(super) log_mark: u64,
}

/// A gone producer whose records are still in the ring.
#[derive(Clone)]
pub(super) struct Retiring {
    client: u32,
    generation: u32,
    /// Every offset of its records is below this.
    mark: u64,
    /// Whether it still holds its client entry (given up when the table is full).
    holds_entry: bool,
    /// The partition rings that may hold its records, each with the offset every
    /// one of them is below: its name is kept until they are reclaimed.
    rings: Vec<(Arc<PartitionRing>, u64)>,
}

impl Registry {
    /// Registers a client that presented `token`.
    pub fn register(
        &mut self,
        role: Role,
        id: &str,
        group: Option<&str>,
        pid: u32,
        token: [u64; 2],
    ) -> Result<Registration, Refused> {
        self.register_reading(role, id, group, &Subscription::default(), pid, token)
    }

    /// Registers a client that presented `token`; a consumer reads what
    /// `subscription` says as a member of its group.
    pub fn register_reading(
        &mut self,
        role: Role,
        id: &str,
        group: Option<&str>,
        subscription: &Subscription,
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
            if role == Role::Consumer && self.kafka_group_names.contains(g) {
                return Err(refuse(
                    Refusal::KafkaGroup,
                    format!("group {g} is a Kafka group: its members join over the Kafka port"),
                ));
            }
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
                assignment: None,
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
        let places = match role {
            Role::Consumer => self.places_of(&subscription.topics)?,
            _ => Vec::new(),
        };
        let group_index = match (role, group) {
            (Role::Consumer, Some(name)) => Some(match self.find_group(name) {
                Some(g) => {
                    self.check_assignment(g, subscription.assignment)?;
                    g
                }
                None => {
                    let assignment = subscription.assignment.unwrap_or_default();
                    self.create_group(name, false, assignment)?
                }
            }),
            (Role::Consumer, None) => Some(self.least_loaded_group(&places).ok_or_else(|| {
                refuse(
                    Refusal::NoGroups,
                    "the broker has no groups: start the consumer with --group NAME",
                )
            })?),
            _ => None,
        };
        self.generation = self.generation.wrapping_add(1).max(1);
        // Its own: joining may give a dead letter's stand-in producer the next.
        let generation = self.generation;
        let record = ClientRecord {
            role: client_role(role),
            generation,
            pid,
            group: group_index,
            id,
        };
        self.region
            .publish_client(slot, &record, client_state::ACTIVE);
        let id: Arc<str> = id.into();
        self.clients[slot as usize] = Some(Client {
            role,
            id: id.clone(),
            group: group_index,
            pid,
            activity: ActivitySample::new(),
        });
        if role == Role::Producer {
            self.producers.insert((slot, generation), id.clone());
        }
        if role == Role::Reader {
            self.follow_journal(slot);
        }
        self.ids.insert((role, id.to_string()), slot);
        let mut assignment = None;
        let group = group_index.map(|g| {
            self.join_rings(g, slot, places);
            let grp = self.groups[g as usize].as_ref().expect("live group");
            assignment = Some(grp.assignment);
            (g, grp.name.to_string())
        });
        Ok(Registration {
            client: slot,
            generation,
            group,
            assignment,
        })
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
        let Some(pid) = self.region.client(client).map(|e| e.pid()) else {
            return;
        };
        // A consumer that claims a redelivery after this sees itself removed and
        // hands the claim back; one that claimed before is found by the scan in
        // `remove_member`.
        self.region.remove_client(client);
        self.region.release_sleeper(client);
        // It may sleep on a partition's ring too (a producer waiting there, a
        // reader of one partition).
        if let Some(topics) = &self.topics {
            for ring in topics.rings() {
                ring.region.release_sleeper(client);
            }
        }
        if c.role == Role::Producer {
            self.abandoned.push(client);
            return;
        }
        if let Some(g) = c.group {
            // Removed in every ring it read too, before the scans for its claims
            // there (see `remove_client`).
            if let Some(grp) = self.groups[g as usize].as_ref() {
                for gr in grp.rings.iter().filter(|gr| gr.partition_ring.is_some()) {
                    if gr.members.contains(&client) {
                        gr.region.remove_client(client);
                    }
                }
            }
            self.remove_member(g, client);
        }
        // Not reused while its process lives: an evicted consumer that wakes up must
        // find its own (removed) entry, not a newcomer's.
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
        let written = self.log_written.load(Ordering::Acquire);
        let mut wanted = false;
        let mut i = 0;
        while let Some(&q) = self.quarantined.get(i) {
            if process_exists(q.pid) {
                i += 1;
                continue;
            }
            // A reader's journal can no longer change: its last lines are made
            // now, and the entry waits for them to be written.
            if self.journals.contains_key(&q.client) {
                self.observe_reader(q.client, true);
                self.journals.remove(&q.client);
                self.quarantined[i].log_mark = self.log_mark();
            }
            if self.quarantined[i].log_mark > written {
                wanted = true;
                i += 1;
                continue;
            }
            self.region.free_client(q.client);
            self.quarantined.swap_remove(i);
        }
        self.log_wanted |= wanted;
    }

    /// Whether producers left with reservations not yet released.
    pub fn has_gone_producers(&self) -> bool {
        !self.abandoned.is_empty()
    }

    /// Under the ring lock: releases the uncommitted reservations of producers
    /// that left and retires them (their entries wait for their records).
    pub fn retire_gone_producers(&mut self, lock: &shm_layout::ring::RingGuard<'_>) {
        for c in std::mem::take(&mut self.abandoned) {
            // Its holds in the partitions' rings are released first (by the
            // cleaner, without holding this lock): until then its entry stays.
            if self.topics.is_some() && !self.released_in_partitions.remove(&c) {
                self.abandoned.push(c);
                continue;
            }
            self.region.abandon_reservations(lock, c);
            // After any repair the lock made: every record of `c` is below this.
            self.retire_producer(c, self.region.next_offset());
        }
    }

    /// Producers gone whose holds in the partitions' rings are still to release.
    pub fn producers_to_release_in_partitions(&self) -> Vec<u32> {
        self.abandoned
            .iter()
            .copied()
            .filter(|c| !self.released_in_partitions.contains(c))
            .collect()
    }

    /// The cleaner released gone producer `c`'s holds in every partition's ring.
    pub fn released_in_partitions(&mut self, c: u32) {
        self.released_in_partitions.insert(c);
    }

    /// Serves the rings of `topics` too: producers' reservations there are
    /// released when they go, and their names kept until their records there
    /// are persisted.
    pub fn serve_topics(&mut self, topics: Arc<crate::topics::Topics>) {
        self.topics = Some(topics);
    }

    /// `default`/0's slots are freed by `reclaimer`: a group that starts to
    /// read the ring from now on takes a hold there, as in a partition's ring,
    /// so that a mark the cleaner computed before never frees what it reads.
    pub fn hold_default_through(&mut self, reclaimer: Arc<crate::reclaim::Reclaimer>) {
        for grp in self.groups.iter_mut().flatten() {
            for gr in grp
                .rings
                .iter_mut()
                .filter(|gr| gr.partition_ring.is_none())
            {
                gr.reclaimer = Some(reclaimer.clone());
            }
        }
        self.control_reclaimer = Some(reclaimer);
    }

    /// After the cleaner released a gone producer's reservations: its entry (which
    /// names it to consumers) is freed once every offset below `mark` is reclaimed.
    pub fn retire_producer(&mut self, client: u32, mark: u64) {
        let generation = self.region.client(client).map_or(0, |e| e.generation());
        let rings = self.topics.as_ref().map_or_else(Vec::new, |t| {
            t.rings()
                .into_iter()
                .filter_map(|r| {
                    let next = r.region.next_offset();
                    (r.region.freed_offset() < next).then_some((r, next))
                })
                .collect()
        });
        self.retiring.push(Retiring {
            client,
            generation,
            mark,
            holds_entry: true,
            rings,
        });
    }

    /// Frees the entries of retired producers whose messages are all reclaimed.
    pub fn release_retired(&mut self, freed_offset: u64) {
        let region = self.region.clone();
        let producers = &mut self.producers;
        self.retiring.retain(|r| {
            // Readers name records in the ring by their producer's entry.
            let reclaimed = r
                .rings
                .iter()
                .all(|(ring, mark)| ring.region.freed_offset() >= *mark);
            if freed_offset < r.mark || !reclaimed {
                return true;
            }
            producers.remove(&(r.client, r.generation));
            if r.holds_entry {
                region.free_client(r.client);
            }
            false
        });
    }

    /// A client entry nobody uses, searching round-robin from the last one handed
    /// out so that an entry is reused as late as possible.
    pub(super) fn free_client_slot(&mut self) -> Option<u32> {
        let n = self.clients.len() as u32;
        for step in 1..=n {
            let i = (self.last_slot + step) % n;
            let entry_free = self.region.client(i).is_some_and(|e| e.is_free());
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
        self.region.free_client(client);
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
            let g = g as u32;
            for &m in &grp.members {
                let Some(c) = self.region.client(m) else {
                    continue;
                };
                let idle = now.saturating_sub(c.last_active_ms());
                if idle <= limit {
                    continue;
                }
                let overdue = grp.rings.iter().any(|gr| {
                    let (Some(entry), Some(mine)) = (gr.region.group(g), gr.region.client(m))
                    else {
                        return false;
                    };
                    let cursor = group::cursor(entry);
                    let holds = gr.first_owned(m, mine.acked_upto(), cursor).is_some()
                        || gr.holds_redelivery(g, m);
                    // Committed offsets wait to be handed out and it could take them.
                    let turn_waits =
                        gr.region.next_offset() > cursor && group::is_member(entry, mine);
                    holds || turn_waits
                });
                if overdue {
                    out.push(Eviction {
                        client: m,
                        group: grp.name.to_string(),
                    });
                }
            }
        }
        out
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
        let record = ClientRecord {
            role: ClientRole::Producer,
            generation: REPLAY_GENERATION,
            pid: std::process::id(),
            group: None,
            id,
        };
        // Removed from the start: it names records, and nobody registers as it.
        if !self
            .region
            .publish_client(slot, &record, client_state::REMOVED)
        {
            return None;
        }
        self.producers.insert((slot, REPLAY_GENERATION), id.into());
        Some(slot)
    }
}

/// What a client of `role` is registered as in its entry.
pub(crate) fn client_role(role: Role) -> ClientRole {
    match role {
        Role::Producer => ClientRole::Producer,
        Role::Consumer => ClientRole::Consumer,
        Role::Admin => ClientRole::Admin,
        Role::Reader => ClientRole::Reader,
    }
}
