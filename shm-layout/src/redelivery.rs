//! The redelivery table of a group: offsets the broker offers again (left
//! unacknowledged by a consumer that left or died, or by a broker that restarted),
//! each claimed by one member at a time, then acknowledged or handed back.

use std::sync::atomic::Ordering;

use crate::layout::redelivery;
use crate::region::{BrokerRegion, Region};

/// A redelivery a consumer has claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimedRedelivery {
    pub slot: u32,
    pub offset: u64,
    pub attempt: u32,
}

impl Region {
    /// Consumer: claims a pending redelivery of group `g`, if any. A consumer the
    /// broker removed meanwhile (its entry no longer `ACTIVE` with `generation`)
    /// hands the claim straight back.
    pub fn claim_redelivery(&self, g: u32, me: u32, generation: u32) -> Option<ClaimedRedelivery> {
        self.claim_redelivery_skipping(g, me, generation, |_, _, _| false)
    }

    /// As [`Region::claim_redelivery`], passing over the pending entries for which
    /// `skip(slot, offset, state)` holds (ones this consumer handed back because
    /// their records could not be read). The lowest offset pending is claimed
    /// first: a `partition` group's owner gets each key's messages in order.
    pub fn claim_redelivery_skipping(
        &self,
        g: u32,
        me: u32,
        generation: u32,
        skip: impl Fn(u32, u64, u64) -> bool,
    ) -> Option<ClaimedRedelivery> {
        if self.redelivery_hint(g) == 0 {
            return None;
        }
        // Each lost race is another's claim or the broker's change: a table's
        // worth of them at most before there is nothing left to claim.
        for _ in 0..=self.geometry().redeliveries_per_group {
            let mut lowest: Option<(u32, u64, u64)> = None;
            for slot in 0..self.geometry().redeliveries_per_group {
                let e = self.redelivery(g, slot)?;
                let s = e.state.load(Ordering::Acquire);
                let offset = e.offset.load(Ordering::Relaxed);
                if redelivery::kind(s) == redelivery::PENDING
                    && !skip(slot, offset, s)
                    && lowest.is_none_or(|(_, o, _)| offset < o)
                {
                    lowest = Some((slot, offset, s));
                }
            }
            let (slot, _, s) = lowest?;
            let e = self.redelivery(g, slot)?;
            let attempt = redelivery::attempt(s);
            let claimed = redelivery::pack(redelivery::CLAIMED, attempt, me);
            // Acquire pairs with the Release store of PENDING in `offer_redelivery`,
            // making the offset written before it visible.
            if e.state
                .compare_exchange(s, claimed, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // SeqCst fence pairs with the broker's between marking a client
                // removed and scanning for its claims: one of us sees the other.
                std::sync::atomic::fence(Ordering::SeqCst);
                let still_member = self.client(me).is_some_and(|c| c.is_active_as(generation));
                if !still_member {
                    let _ =
                        e.state
                            .compare_exchange(claimed, s, Ordering::AcqRel, Ordering::Relaxed);
                    return None;
                }
                return Some(ClaimedRedelivery {
                    slot,
                    offset: e.offset.load(Ordering::Relaxed),
                    attempt,
                });
            }
        }
        None
    }

    /// Consumer: acknowledges a claimed redelivery; false if it was taken back.
    pub fn ack_redelivery(&self, g: u32, me: u32, claim: &ClaimedRedelivery) -> bool {
        let Some(e) = self.redelivery(g, claim.slot) else {
            return false;
        };
        let claimed = redelivery::pack(redelivery::CLAIMED, claim.attempt, me);
        let acked = redelivery::pack(redelivery::ACKED, claim.attempt, me);
        e.state
            .compare_exchange(claimed, acked, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Consumer: gives a claimed redelivery back, pending as before, for another
    /// member (or the broker) to deal with; false if it was taken back meanwhile.
    pub fn hand_back_redelivery(&self, g: u32, me: u32, claim: &ClaimedRedelivery) -> bool {
        let Some(e) = self.redelivery(g, claim.slot) else {
            return false;
        };
        let claimed = redelivery::pack(redelivery::CLAIMED, claim.attempt, me);
        let pending = redelivery::pack(redelivery::PENDING, claim.attempt, 0);
        e.state
            .compare_exchange(claimed, pending, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// A redelivery entry as read at one moment: its state word (Acquire) and the
/// offset next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedeliverySeen {
    pub offset: u64,
    /// `(kind << 56) | (attempt << 32) | claimer`, decoded by the methods below.
    pub state: u64,
}

impl RedeliverySeen {
    /// One of the kinds in [`redelivery`].
    pub fn kind(&self) -> u64 {
        redelivery::kind(self.state)
    }
    pub fn attempt(&self) -> u32 {
        redelivery::attempt(self.state)
    }
    pub fn claimer(&self) -> u32 {
        redelivery::claimer(self.state)
    }
    /// Whether a member claimed or acknowledged it.
    pub fn is_taken(&self) -> bool {
        matches!(self.kind(), redelivery::CLAIMED | redelivery::ACKED)
    }
}

impl Region {
    /// Redelivery entry `slot` of group `g` as it is now.
    pub fn redelivery_seen(&self, g: u32, slot: u32) -> Option<RedeliverySeen> {
        let e = self.redelivery(g, slot)?;
        // Acquire pairs with the Release that published the state, and the offset
        // written before it.
        let state = e.state.load(Ordering::Acquire);
        Some(RedeliverySeen {
            offset: e.offset.load(Ordering::Relaxed),
            state,
        })
    }

    /// Group `g`'s hint of how many offers its table holds: members scan the table
    /// only while it is not zero, and wait for it to change.
    #[inline]
    pub fn redelivery_hint(&self, g: u32) -> u32 {
        self.group(g)
            .map_or(0, |e| e.meta.redeliveries.load(Ordering::Acquire))
    }
}

impl BrokerRegion {
    /// Broker only: replaces the state of redelivery `slot` of group `g` with `to`
    /// if it still is `seen` (a member's concurrent claim, acknowledgement or
    /// hand-back is never overwritten); false if it changed meanwhile.
    pub fn replace_redelivery(&self, g: u32, slot: u32, seen: u64, to: u64) -> bool {
        self.redelivery(g, slot).is_some_and(|e| {
            e.state
                .compare_exchange(seen, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Broker only: rewrites redelivery `slot` of group `g` as a pending offer of
    /// `offset` for attempt `attempt`, if its state still is `seen`.
    pub fn rewrite_redelivery(
        &self,
        g: u32,
        slot: u32,
        seen: u64,
        offset: u64,
        attempt: u32,
    ) -> bool {
        let Some(e) = self.redelivery(g, slot) else {
            return false;
        };
        // The offset first: a member claims by the state word, and reads the
        // offset after its claim (Release below, Acquire there).
        e.offset.store(offset, Ordering::Relaxed);
        let pending = redelivery::pack(redelivery::PENDING, attempt, 0);
        e.state
            .compare_exchange(seen, pending, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Broker only: frees redelivery `slot` of group `g` (acknowledged and logged).
    pub fn free_redelivery(&self, g: u32, slot: u32) {
        if let Some(e) = self.redelivery(g, slot) {
            e.state.store(redelivery::FREE, Ordering::Release);
        }
    }

    /// Broker only: frees every redelivery entry of group `g`, which nobody uses
    /// (a group entry being set up).
    pub fn clear_redeliveries(&self, g: u32) {
        for slot in 0..self.geometry().redeliveries_per_group {
            if let Some(e) = self.redelivery(g, slot) {
                e.state.store(redelivery::FREE, Ordering::Relaxed);
            }
        }
    }

    /// Broker only: sets group `g`'s hint to `offers`, the number of offers its
    /// own book holds; whether it changed.
    pub fn set_redelivery_hint(&self, g: u32, offers: u32) -> bool {
        let Some(entry) = self.group(g) else {
            return false;
        };
        let hint = &entry.meta.redeliveries;
        if hint.load(Ordering::Acquire) == offers {
            return false;
        }
        // Release pairs with the members' Acquire in `redelivery_hint`.
        hint.store(offers, Ordering::Release);
        true
    }

    /// Broker only: writes an offer of `offset` for delivery attempt `attempt` into
    /// redelivery `slot` of group `g`, whatever the entry held (the broker's own
    /// book says the slot is free). The caller keeps the group's hint in step.
    pub fn offer_redelivery_at(&self, g: u32, slot: u32, offset: u64, attempt: u32) -> bool {
        let Some(e) = self.redelivery(g, slot) else {
            return false;
        };
        e.offset.store(offset, Ordering::Relaxed);
        // Release pairs with the Acquire compare-exchange in `claim_redelivery`.
        e.state.store(
            redelivery::pack(redelivery::PENDING, attempt, 0),
            Ordering::Release,
        );
        true
    }

    /// Broker only: offers `offset` to group `g` for delivery attempt `attempt` in a
    /// free redelivery slot; false if every slot is busy.
    pub fn offer_redelivery(&self, g: u32, offset: u64, attempt: u32) -> bool {
        let Some(group) = self.group(g) else {
            return false;
        };
        for slot in 0..self.geometry().redeliveries_per_group {
            let Some(e) = self.redelivery(g, slot) else {
                return false;
            };
            if redelivery::kind(e.state.load(Ordering::Acquire)) != redelivery::FREE {
                continue;
            }
            e.offset.store(offset, Ordering::Relaxed);
            // Release pairs with the Acquire compare-exchange in `claim_redelivery`.
            e.state.store(
                redelivery::pack(redelivery::PENDING, attempt, 0),
                Ordering::Release,
            );
            group.meta.redeliveries.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};

    #[test]
    fn redeliveries_are_claimed_once_and_acked_by_their_claimer_only() {
        let t = test_region("redeliver", test_geometry());
        let r = &t.0;
        let active = |c: u32| {
            let e = r.client(c).unwrap();
            e.identity
                .state
                .store(crate::layout::client_state::ACTIVE, Ordering::Relaxed);
            e.identity.generation.store(7, Ordering::Relaxed);
        };
        active(1);
        active(2);
        assert_eq!(r.claim_redelivery(0, 1, 7), None);
        assert!(r.offer_redelivery(0, 42, 2));
        // A removed consumer's claim is handed back.
        assert_eq!(r.claim_redelivery(0, 3, 7), None);
        assert_eq!(
            r.claim_redelivery(0, 1, 6),
            None,
            "a stale generation is not a member"
        );
        let c = r.claim_redelivery(0, 1, 7).unwrap();
        assert_eq!((c.offset, c.attempt), (42, 2));
        assert_eq!(r.claim_redelivery(0, 2, 7), None);
        assert!(!r.ack_redelivery(0, 2, &c));
        assert!(r.ack_redelivery(0, 1, &c));
    }

    #[test]
    fn a_handed_back_redelivery_is_pending_again_and_can_be_passed_over() {
        let t = test_region("hand-back", test_geometry());
        let r = &t.0;
        let e = r.client(1).unwrap();
        e.identity
            .state
            .store(crate::layout::client_state::ACTIVE, Ordering::Relaxed);
        e.identity.generation.store(7, Ordering::Relaxed);
        assert!(r.offer_redelivery_at(0, 3, 42, 2));
        r.group(0)
            .unwrap()
            .meta
            .redeliveries
            .store(1, Ordering::Relaxed);
        let c = r.claim_redelivery(0, 1, 7).unwrap();
        assert_eq!((c.slot, c.offset, c.attempt), (3, 42, 2));
        assert!(r.hand_back_redelivery(0, 1, &c));
        assert!(
            !r.hand_back_redelivery(0, 1, &c),
            "only a claim is handed back"
        );
        let declined = |slot, offset, _| (slot, offset) == (3, 42);
        assert_eq!(r.claim_redelivery_skipping(0, 1, 7, declined), None);
        assert_eq!(r.claim_redelivery(0, 1, 7), Some(c), "pending as before");
    }
}
