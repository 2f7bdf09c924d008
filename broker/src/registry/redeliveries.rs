//! Redeliveries: the broker's book of offers, the overflow waiting for a free
//! slot, settling acknowledged slots, and validating the region's table against
//! the book.

use std::sync::atomic::Ordering;

use shm_layout::event;
use shm_layout::layout::redelivery;

use super::groups::GroupRing;
use super::Registry;

/// A redelivery the broker offered in a slot of a group's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offer {
    pub(super) offset: u64,
    pub(super) attempt: u32,
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

impl Registry {
    /// Moves waiting redeliveries of group `g`'s `r`-th ring into slots of that
    /// ring's table the book says are free, and publishes the hint.
    pub(super) fn offer_overflow(&mut self, g: u32, r: usize) {
        let Some(gr) = self.group_ring_mut(g, r) else {
            return;
        };
        let region = gr.region.clone();
        let freed = region.freed_offset();
        // Lowest offsets first, as members claim them: the table always holds
        // the lowest of what waits (several members' shares may have come).
        gr.overflow.make_contiguous().sort_unstable();
        while let Some(&(offset, attempt)) = gr.overflow.front() {
            let Some(slot) = gr.offered.iter().position(Option::is_none) else {
                break;
            };
            // A group catching up below the ring (SPEC §10): its claimer reads the
            // record from the file.
            let attempt = if offset < freed {
                attempt | redelivery::FROM_FILE
            } else {
                attempt
            };
            if !region.offer_redelivery_at(g, slot as u32, offset, attempt) {
                break;
            }
            gr.offered[slot] = Some(Offer { offset, attempt });
            gr.observed[slot] = None;
            gr.overflow.pop_front();
            gr.redelivered += 1;
        }
        publish_redelivery_hint(g, gr);
    }

    /// Checks the redelivery table of group `g`'s `r`-th ring against the book
    /// of offers and repairs what cannot be valid: an entry in use where nothing
    /// was offered is freed; one whose offset, attempt or kind differ from the
    /// offer is rewritten as the offer; a claim by a client that is no member is
    /// offered again (attempt + 1); an offer whose record the ring no longer
    /// holds is dropped. Each change is a compare-exchange against the word
    /// judged, so a consumer's concurrent claim, acknowledgement or hand-back is
    /// never overwritten (a lost race is retried next pass). Returns what it
    /// repaired.
    pub(super) fn validate_redeliveries(&mut self, g: u32, r: usize) -> Vec<RedeliveryRepair> {
        let mut repairs = Vec::new();
        let max_attempts = self
            .group_ring(g, r)
            .and_then(|gr| self.max_attempts_in(&gr.topic));
        let Registry {
            groups,
            quarantined,
            ..
        } = self;
        let Some(gr) = groups
            .get_mut(g as usize)
            .and_then(Option::as_mut)
            .and_then(|grp| grp.rings.get_mut(r))
        else {
            return repairs;
        };
        let region = gr.region.clone();
        let cas = |slot: u32, from: u64, to: u64| region.replace_redelivery(g, slot, from, to);
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(seen) = region.redelivery_seen(g, slot) else {
                break;
            };
            let (s, kind, offset) = (seen.state, seen.kind(), seen.offset);
            let Some(offer) = gr.offered[slot as usize] else {
                if kind != redelivery::FREE && cas(slot, s, redelivery::FREE) {
                    repairs.push(RedeliveryRepair::NeverOffered { slot, offset });
                }
                continue;
            };
            if !region.is_committed(offer.offset) && !redelivery::is_from_file(offer.attempt) {
                // Freed from the ring since it was offered (a group not holding
                // it): the persistence file has it, and the claimer reads it there.
                if kind == redelivery::PENDING && offer.offset < region.freed_offset() {
                    let attempt = offer.attempt | redelivery::FROM_FILE;
                    if region.rewrite_redelivery(g, slot, s, offer.offset, attempt) {
                        gr.offered[slot as usize] = Some(Offer {
                            offset: offer.offset,
                            attempt,
                        });
                    }
                    continue;
                }
                if cas(slot, s, redelivery::FREE) {
                    gr.offered[slot as usize] = None;
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
                if region.rewrite_redelivery(g, slot, s, offer.offset, offer.attempt) {
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
            let member = gr.members.contains(&claimer);
            if kind == redelivery::CLAIMED && !member {
                let reached = redelivery::attempt_number(offer.attempt);
                if max_attempts.is_some_and(|max| reached >= max) {
                    if cas(slot, s, redelivery::FREE) {
                        gr.offered[slot as usize] = None;
                        gr.dead.push_back((offer.offset, reached));
                    }
                    continue;
                }
                let attempt = offer.attempt + 1;
                if cas(slot, s, redelivery::pack(redelivery::PENDING, attempt, 0)) {
                    gr.offered[slot as usize] = Some(Offer {
                        offset: offer.offset,
                        attempt,
                    });
                    gr.redelivered += 1;
                    // A consumer removed a moment ago may claim before it sees
                    // itself removed (and would hand the claim back): not a fault.
                    let just_removed = quarantined.iter().any(|q| q.client == claimer);
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
        publish_redelivery_hint(g, gr);
        repairs
    }

    /// Reports each kind of repaired fault once, on stderr.
    pub(super) fn report_redelivery_repairs(&mut self, g: u32, repairs: Vec<RedeliveryRepair>) {
        let Some(grp) = self.groups[g as usize].as_ref() else {
            return;
        };
        for repair in repairs {
            if self.reported.insert(repair.kind()) {
                eprintln!("{}", repair.describe(&grp.name));
            }
        }
    }

    /// Frees the acknowledged redelivery slots of group `g`'s `r`-th ring and
    /// refills them from the overflow.
    pub(super) fn settle_redeliveries(&mut self, g: u32, r: usize) {
        let written = self.log_written.load(Ordering::Acquire);
        let Some(gr) = self.group_ring_mut(g, r) else {
            return;
        };
        let region = gr.region.clone();
        let mut wanted = false;
        for slot in 0..region.geometry().redeliveries_per_group {
            let Some(seen) = region.redelivery_seen(g, slot) else {
                break;
            };
            let s = seen.state;
            if redelivery::kind(s) != redelivery::ACKED {
                continue;
            }
            if gr.offered[slot as usize].is_none() {
                continue; // not an offer: the validation frees it
            }
            // Freed only once its delivery is logged; `observe_ring` runs first in
            // every pass, so an unlogged one waits one pass.
            if gr.observed[slot as usize] != Some((redelivery::attempt(s), redelivery::claimer(s)))
            {
                continue;
            }
            // And once that line is written: until then the slot is what a broker
            // recovering the region after a crash would log it from.
            if gr.observed_log_mark[slot as usize] > written {
                wanted = true;
                continue;
            }
            gr.observed[slot as usize] = None;
            gr.offered[slot as usize] = None;
            region.free_redelivery(g, slot);
        }
        self.log_wanted |= wanted;
        self.offer_overflow(g, r);
    }
}

/// Sets the hint of group `g` in `gr`'s ring to the number of offers in its
/// table: consumers scan the table only while it is not zero. The broker alone
/// writes it.
/// The hint counts the offers waiting for a free entry of the table too: a
/// `partition` group's owner takes no first delivery while any is pending.
fn publish_redelivery_hint(g: u32, gr: &GroupRing) {
    let offers = gr.offered.iter().flatten().count() + gr.overflow.len();
    let offers = u32::try_from(offers).unwrap_or(u32::MAX);
    if gr.region.set_redelivery_hint(g, offers) {
        // Members waiting for what the hint counts look again.
        if let Some(entry) = gr.region.group(g) {
            event::wake(&entry.turn_event);
        }
    }
}

impl GroupRing {
    /// What group `g` would offer again here, ascending, each with the attempt
    /// it is at: what waits for the table, what the table offers (an
    /// acknowledged redelivery is done with) and the dead letters not published
    /// yet (past `--max-attempts` again when offered).
    pub(super) fn offered_again(&self, g: u32) -> Vec<(u64, u32)> {
        let offered = (0..self.offered.len()).filter_map(|slot| {
            let offer = self.offered[slot]?;
            let seen = self.region.redelivery_seen(g, slot as u32)?;
            (seen.kind() != redelivery::ACKED)
                .then_some((offer.offset, redelivery::attempt_number(offer.attempt)))
        });
        let dead = self.dead.iter().map(|&(o, reached)| (o, reached + 1));
        let mut unacked: Vec<(u64, u32)> = self
            .overflow
            .iter()
            .copied()
            .chain(offered)
            .chain(dead)
            .collect();
        unacked.sort_unstable();
        unacked
    }

    /// How many redeliveries the broker offered `client` holds claimed here.
    pub(super) fn claimed_redeliveries(&self, g: u32, client: u32) -> u64 {
        (0..self.region.geometry().redeliveries_per_group)
            .filter(|&slot| self.holds_offer(g, slot, client))
            .count() as u64
    }

    /// Whether `client` holds a claim on a redelivery the broker offered here.
    pub(super) fn holds_redelivery(&self, g: u32, client: u32) -> bool {
        (0..self.region.geometry().redeliveries_per_group)
            .any(|slot| self.holds_offer(g, slot, client))
    }

    fn holds_offer(&self, g: u32, slot: u32, client: u32) -> bool {
        self.offered[slot as usize].is_some()
            && self
                .region
                .redelivery_seen(g, slot)
                .is_some_and(|seen| seen.kind() == redelivery::CLAIMED && seen.claimer() == client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{GroupStart, RegistryLimits};
    use crate::test_region::{test_region, TestRegion};
    use control_protocol::Role;
    use shm_layout::group;
    use shm_layout::ring::Sender;
    use shm_layout::Region;
    use std::time::Duration;

    /// A registry with one pre-created group, `records` records in the ring, and
    /// one consumer (client 0) that has acknowledged all of them.
    fn registry_with_consumer(tag: &str, records: u64) -> (TestRegion, Registry) {
        let t = test_region(&format!("registry-{tag}"), 16);
        let region = t.0.clone();
        let start = GroupStart {
            name: "group-1".into(),
            start: 0,
            redeliver_below: 0,
        };
        let limits = RegistryLimits {
            session_timeout: Duration::from_secs(30),
            spill: false,
            assignment: control_protocol::Assignment::RoundRobin,
            groups_read_default: true,
            max_attempts: None,
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
        let word = entry.turn_word();
        assert!(group::try_advance(entry, word, records));
        let c = region.client(0).unwrap();
        c.acknowledge_upto(records);
        (t, reg)
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
        r.redelivery_hint(0)
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
        assert_eq!(
            reg.position(0, 0),
            Some(6),
            "the book decides, not the table"
        );
        assert_eq!(
            reg.validate_redeliveries(0, 0),
            [RedeliveryRepair::NeverOffered { slot: 0, offset: 2 }]
        );
        assert_eq!(redelivery::kind(entry_of(r, 0).1), redelivery::FREE);
        assert_eq!(hint(r), 0, "the hint is recomputed from the book");
        assert!(reg.validate_redeliveries(0, 0).is_empty(), "repaired once");
        // A claimed bogus entry goes too, and is never logged as a delivery.
        scribble(r, 3, 4, redelivery::pack(redelivery::CLAIMED, 2, 0));
        assert_eq!(reg.consumed_by_all().default, Some(6));
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
        let gr = &mut reg.groups[0].as_mut().unwrap().rings[0];
        gr.overflow.push_back((1, 2));
        reg.offer_overflow(0, 0);
        assert_eq!(reg.position(0, 0), Some(1), "an offer holds the group");
        assert_eq!(hint(r), 1);
        let pending = redelivery::pack(redelivery::PENDING, 2, 0);
        assert_eq!(entry_of(r, 0), (1, pending));
        assert!(
            reg.validate_redeliveries(0, 0).is_empty(),
            "a true offer stands"
        );

        scribble(r, 0, 99, pending);
        assert_eq!(
            reg.validate_redeliveries(0, 0),
            [RedeliveryRepair::Altered {
                slot: 0,
                found_offset: 99,
                found_state: pending,
                offered: 1
            }]
        );
        assert_eq!(entry_of(r, 0), (1, pending));
        scribble(r, 0, 1, 0xFF << 56);
        assert_eq!(reg.validate_redeliveries(0, 0).len(), 1, "an unknown kind");
        assert_eq!(entry_of(r, 0), (1, pending));

        // A claim by a client that is no member goes back, as a new attempt.
        scribble(r, 0, 1, redelivery::pack(redelivery::CLAIMED, 2, 5));
        assert_eq!(
            reg.validate_redeliveries(0, 0),
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
        assert!(reg.validate_redeliveries(0, 0).is_empty());
        assert!(r.ack_redelivery(0, 0, &claim));
        assert_eq!(
            reg.consumed_by_all().default,
            Some(6),
            "logged, then settled"
        );
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
        let gr = &mut reg.groups[0].as_mut().unwrap().rings[0];
        gr.overflow.push_back((2, 2));
        reg.offer_overflow(0, 0);
        r.index_entry(2).stamp.store(0, Ordering::Relaxed);
        assert_eq!(
            reg.validate_redeliveries(0, 0),
            [RedeliveryRepair::Unreadable { slot: 0, offset: 2 }]
        );
        assert_eq!(redelivery::kind(entry_of(r, 0).1), redelivery::FREE);
        assert_eq!(reg.position(0, 0), Some(6));
        assert_eq!(hint(r), 0);
    }

    #[test]
    fn an_offer_whose_record_left_the_ring_is_read_from_the_file() {
        let (t, mut reg) = registry_with_consumer("left", 6);
        let r = &t.0;
        let gr = &mut reg.groups[0].as_mut().unwrap().rings[0];
        gr.overflow.push_back((2, 2));
        reg.offer_overflow(0, 0);
        // Freed since it was offered (persisted, and nobody held it), and its
        // place in the ring taken by later records.
        r.reclaim(6).unwrap();
        let me = Sender {
            client: 7,
            generation: 1,
        };
        for _ in 0..16 {
            r.send(me, None, b"n", 0, || false, None).unwrap();
        }
        assert!(!r.is_committed(2));
        assert!(reg.validate_redeliveries(0, 0).is_empty());
        let attempt = 2 | redelivery::FROM_FILE;
        assert_eq!(
            entry_of(r, 0),
            (2, redelivery::pack(redelivery::PENDING, attempt, 0))
        );
        assert_eq!(reg.position(0, 0), Some(2), "still offered");
        assert!(reg.validate_redeliveries(0, 0).is_empty(), "and it stands");
        let claim = r.claim_redelivery(0, 0, 1).unwrap();
        assert_eq!((claim.offset, claim.attempt), (2, attempt));
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
