//! A client's entry in the region: what the broker publishes about a client (its
//! role, generation, pid, group, id and state) and what the client keeps there
//! itself (how far it acknowledged, when it last polled, which event it sleeps on).
//!
//! The broker writes the identity fields, then the state last with Release; a
//! reader loads the state with Acquire before it trusts the rest. A client writes
//! only its activity fields.

use std::sync::atomic::Ordering;

use crate::event::event_id;
use crate::layout::{client_role, client_state, ClientEntry, EventWord};
use crate::region::{write_name, BrokerRegion, Region};

/// What a client entry is registered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    Producer,
    Consumer,
    Admin,
    Reader,
}

impl ClientRole {
    /// The code stored in the entry.
    pub fn code(self) -> u32 {
        match self {
            ClientRole::Producer => client_role::PRODUCER,
            ClientRole::Consumer => client_role::CONSUMER,
            ClientRole::Admin => client_role::ADMIN,
            ClientRole::Reader => client_role::READER,
        }
    }
}

/// What the broker publishes in a client entry.
#[derive(Debug, Clone, Copy)]
pub struct ClientRecord<'a> {
    pub role: ClientRole,
    pub generation: u32,
    pub pid: u32,
    /// The consumer's group entry, if it has one.
    pub group: Option<u32>,
    pub id: &'a str,
}

impl ClientEntry {
    /// The entry's state, one of [`client_state`]; Acquire, so the fields the
    /// broker wrote before it are visible.
    #[inline]
    pub fn state(&self) -> u32 {
        self.identity.state.load(Ordering::Acquire)
    }

    /// Whether nobody holds the entry.
    pub fn is_free(&self) -> bool {
        self.state() == client_state::FREE
    }

    /// Whether the entry holds a live registration of `generation`: false once the
    /// broker removed it (or reused the entry for another client).
    #[inline]
    pub fn is_active_as(&self, generation: u32) -> bool {
        self.state() == client_state::ACTIVE
            && self.identity.generation.load(Ordering::Acquire) == generation
    }

    /// Whether the entry holds a live producer.
    pub fn is_live_producer(&self) -> bool {
        self.state() == client_state::ACTIVE
            && self.identity.role.load(Ordering::Acquire) == client_role::PRODUCER
    }

    /// Whether the entry holds a consumer of group `g`, live or removed (a removed
    /// one may still hold what the broker never got to offer again).
    pub fn is_consumer_of(&self, g: u32) -> bool {
        let state = self.state();
        (state == client_state::ACTIVE || state == client_state::REMOVED)
            && self.identity.role.load(Ordering::Relaxed) == client_role::CONSUMER
            && self.identity.group.load(Ordering::Relaxed) == g
    }

    /// The generation of the registration the entry holds.
    pub fn generation(&self) -> u32 {
        self.identity.generation.load(Ordering::Acquire)
    }

    /// The process id the client registered with.
    pub fn pid(&self) -> u32 {
        self.identity.pid.load(Ordering::Relaxed)
    }

    /// Every offset below this is acknowledged by the consumer (of those it was
    /// handed in its group's rotations).
    #[inline]
    pub fn acked_upto(&self) -> u64 {
        // Acquire pairs with the consumer's Release in `acknowledge_upto`.
        self.activity.ack_upto.load(Ordering::Acquire)
    }

    /// When the client last polled, in [`crate::sys::monotonic_millis`].
    pub fn last_active_ms(&self) -> u64 {
        self.activity.last_active_ms.load(Ordering::Acquire)
    }

    /// Polls made (consumers) or messages sent (producers), as the client last
    /// published it.
    pub fn progress(&self) -> u64 {
        self.activity.progress.load(Ordering::Relaxed)
    }

    /// Client: publishes its running count of polls (consumers) or messages sent
    /// (producers). A plain store to its own line: no read-modify-write, no clock.
    #[inline]
    pub fn publish_progress(&self, count: u64) {
        self.activity.progress.store(count, Ordering::Relaxed);
    }

    /// Consumer: records that it is polling, at `now_ms` (its session timeout
    /// starts again).
    #[inline]
    pub fn touch(&self, now_ms: u64) {
        self.activity
            .last_active_ms
            .store(now_ms, Ordering::Relaxed);
    }

    /// Consumer: acknowledges every offset it was handed below `end`.
    #[inline]
    pub fn acknowledge_upto(&self, end: u64) {
        // Release pairs with the broker's Acquire in `acked_upto`.
        self.activity.ack_upto.store(end, Ordering::Release);
    }
}

impl Region {
    /// The event word with id `id` (see [`event_id`]).
    pub fn event_word(&self, id: u32) -> Option<&EventWord> {
        let h = self.header();
        match id {
            event_id::PUBLISHED => Some(&h.published),
            event_id::SPACE => Some(&h.space),
            event_id::CLEANER => Some(&h.cleaner),
            event_id::PERSISTED => Some(&h.persisted),
            g => self
                .group(g.checked_sub(event_id::GROUP_BASE)?)
                .map(|e| &e.turn_event),
        }
    }
}

/// What the broker alone does to client entries.
impl BrokerRegion {
    /// Publishes `record` in client entry `slot` with `state` (`ACTIVE` for a
    /// registration; `REMOVED` for a stand-in that only names records). Its ranks
    /// are cleared, so stale ones from the entry's previous holder never match.
    /// False if `slot` is out of bounds.
    pub fn publish_client(&self, slot: u32, record: &ClientRecord<'_>, state: u32) -> bool {
        let Some(entry) = self.client(slot) else {
            return false;
        };
        let idn = &entry.identity;
        idn.role.store(record.role.code(), Ordering::Relaxed);
        idn.generation.store(record.generation, Ordering::Relaxed);
        idn.pid.store(record.pid, Ordering::Relaxed);
        idn.group
            .store(record.group.unwrap_or(u32::MAX), Ordering::Relaxed);
        write_name(&idn.id, &idn.id_len, record.id);
        self.clear_ranks(entry);
        self.clear_journal(entry);
        entry.activity.sleeping_on.store(0, Ordering::Relaxed);
        entry.activity.progress.store(0, Ordering::Relaxed);
        entry
            .activity
            .last_active_ms
            .store(crate::sys::monotonic_millis(), Ordering::Relaxed);
        // Release: whoever sees the state sees the fields above.
        idn.state.store(state, Ordering::Release);
        true
    }

    /// Sets where a joining consumer starts: it has nothing to acknowledge below
    /// `offset` (its group's cursor).
    pub fn start_acknowledged_at(&self, slot: u32, offset: u64) {
        if let Some(entry) = self.client(slot) {
            entry.acknowledge_upto(offset);
        }
    }

    /// Marks client `slot` removed and revokes its ranks. After this, a consumer
    /// that claims a redelivery sees itself removed and hands the claim back; one
    /// that claimed before is found by the broker's scan of the table, which must
    /// follow this call.
    pub fn remove_client(&self, slot: u32) {
        let Some(entry) = self.client(slot) else {
            return;
        };
        entry
            .identity
            .state
            .store(client_state::REMOVED, Ordering::Release);
        // Pairs with the fence after a claim in `claim_redelivery_skipping`: one of
        // us sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        self.revoke_ranks(entry);
    }

    /// Frees client entry `slot` for a new registration.
    pub fn free_client(&self, slot: u32) {
        if let Some(entry) = self.client(slot) {
            entry
                .identity
                .state
                .store(client_state::FREE, Ordering::Release);
        }
    }

    /// Frees the entries of group `g`'s consumers: in a partition's region, once
    /// the group stops reading the ring there (its position is saved), so that
    /// a broker recovering the region after a crash never takes what those
    /// members had acknowledged for the group's progress when it read the ring
    /// again.
    pub fn free_consumers_of(&self, g: u32) {
        for slot in 0..self.geometry().max_clients {
            if self.client(slot).is_some_and(|e| e.is_consumer_of(g)) {
                self.free_client(slot);
            }
        }
    }

    /// Uncounts client `slot` from the event it sleeps on, if any, and wakes that
    /// event's other sleepers: for a client that left or died asleep. Exactly once,
    /// whoever (the client waking, or this) swaps its flag back to zero.
    pub fn release_sleeper(&self, slot: u32) {
        let Some(entry) = self.client(slot) else {
            return;
        };
        let on = entry.activity.sleeping_on.swap(0, Ordering::AcqRel);
        if on == 0 {
            return;
        }
        if let Some(ev) = self.event_word(on - 1) {
            ev.sleepers.fetch_sub(1, Ordering::Relaxed);
            crate::event::wake(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};

    #[test]
    fn a_published_client_is_active_until_removed_and_its_id_reads_back() {
        let t = test_region("client-publish", test_geometry());
        let r = &t.0;
        let record = ClientRecord {
            role: ClientRole::Consumer,
            generation: 9,
            pid: 1234,
            group: Some(1),
            id: "consumer-a",
        };
        assert!(r.client(0).unwrap().is_free());
        assert!(r.publish_client(0, &record, client_state::ACTIVE));
        let e = r.client(0).unwrap();
        assert!(e.is_active_as(9));
        assert!(!e.is_active_as(8), "another generation is not this client");
        assert!(e.is_consumer_of(1) && !e.is_consumer_of(0));
        assert!(!e.is_live_producer());
        assert_eq!((e.pid(), e.generation()), (1234, 9));
        assert_eq!(r.client_name(0, 9).as_deref(), Some("consumer-a"));
        r.remove_client(0);
        assert!(!e.is_active_as(9));
        assert!(
            e.is_consumer_of(1),
            "a removed consumer still counts for recovery"
        );
        r.free_client(0);
        assert!(e.is_free() && !e.is_consumer_of(1));
        assert!(!r.publish_client(u32::MAX, &record, client_state::ACTIVE));
    }

    #[test]
    fn a_sleeper_is_uncounted_once_whoever_releases_it() {
        let t = test_region("client-sleeper", test_geometry());
        let r = &t.0;
        let e = r.client(2).unwrap();
        let space = &r.header().space;
        space.sleepers.store(1, Ordering::Relaxed);
        e.activity
            .sleeping_on
            .store(event_id::SPACE + 1, Ordering::Relaxed);
        r.release_sleeper(2);
        assert_eq!(space.sleepers.load(Ordering::Relaxed), 0);
        r.release_sleeper(2);
        assert_eq!(space.sleepers.load(Ordering::Relaxed), 0, "not twice");
        e.activity.sleeping_on.store(999, Ordering::Relaxed);
        r.release_sleeper(2);
        assert_eq!(
            e.activity.sleeping_on.load(Ordering::Relaxed),
            0,
            "a scribbled event id is dropped"
        );
    }

    #[test]
    fn acknowledgements_and_activity_read_back() {
        let t = test_region("client-activity", test_geometry());
        let r = &t.0;
        r.start_acknowledged_at(3, 40);
        let e = r.client(3).unwrap();
        assert_eq!(e.acked_upto(), 40);
        e.acknowledge_upto(45);
        e.touch(777);
        assert_eq!((e.acked_upto(), e.last_active_ms()), (45, 777));
    }
}
