//! The redelivery table of a group: offsets the broker offers again (left
//! unacknowledged by a consumer that left or died, or by a broker that restarted),
//! each claimed by one member at a time, then acknowledged or handed back.

use std::sync::atomic::Ordering;

use crate::layout::{client_state, redelivery};
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
    /// their records could not be read).
    pub fn claim_redelivery_skipping(
        &self,
        g: u32,
        me: u32,
        generation: u32,
        skip: impl Fn(u32, u64, u64) -> bool,
    ) -> Option<ClaimedRedelivery> {
        let group = self.group(g)?;
        if group.meta.redeliveries.load(Ordering::Acquire) == 0 {
            return None;
        }
        for slot in 0..self.geometry().redeliveries_per_group {
            let e = self.redelivery(g, slot)?;
            let s = e.state.load(Ordering::Acquire);
            if redelivery::kind(s) != redelivery::PENDING
                || skip(slot, e.offset.load(Ordering::Relaxed), s)
            {
                continue;
            }
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
                let still_member = self.client(me).is_some_and(|c| {
                    c.identity.state.load(Ordering::Acquire) == client_state::ACTIVE
                        && c.identity.generation.load(Ordering::Acquire) == generation
                });
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

impl BrokerRegion {
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
