//! The book of clients: registration, leases, quarantined consumers, retiring
//! producers and the region's client entries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use control_protocol::{Refusal, Role};
use shm_layout::event::{self, event_id};
use shm_layout::group;
use shm_layout::layout::{client_role, client_state, EventWord};
use shm_layout::names::check_name;
use shm_layout::region::write_name;
use shm_layout::ring::REPLAY_GENERATION;
use shm_layout::sys::{monotonic_millis, process_exists};

use super::{refuse, Refused, Registration, Registry};

/// A client the broker knows.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) role: Role,
    pub(super) id: Arc<str>,
    pub(super) group: Option<u32>,
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
#[derive(Debug, Clone, Copy)]
pub(super) struct Retiring {
    client: u32,
    generation: u32,
    /// Every offset of its records is below this.
    mark: u64,
    /// Whether it still holds its client entry (given up when the table is full).
    holds_entry: bool,
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
        self.region.clear_ranks(entry);
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
        self.region.revoke_ranks(entry);
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
}

/// The role code written into a client entry.
pub(crate) fn role_code(role: Role) -> u32 {
    match role {
        Role::Producer => client_role::PRODUCER,
        Role::Consumer => client_role::CONSUMER,
        Role::Admin => client_role::ADMIN,
    }
}
