//! Consumer groups in the region: who gets which offset.
//!
//! A group's `turn` word packs `(cursor << 16) | epoch`: `cursor` is the next offset
//! the group hands out, `epoch` (16 bits, wrapping) names the rotation in force.
//! Under a rotation `{start, n}` the offset `c` belongs to the member of rank
//! `(c - start) % n`. That member claims it by a compare-exchange of
//! `(c, epoch) -> (c + 1, epoch)`: every offset is handed out once, in order, and
//! offsets below the cursor are exactly those already handed out.
//!
//! The broker changes membership by writing the next rotation into the other half of
//! the double buffer (and each member's rank for it), then compare-exchanging
//! `(c, e) -> (c, e + 1)`: the new rotation starts at the cursor it swapped, and a
//! claim made against the old epoch fails instead of slipping through. A stalled
//! consumer that wakes up after being removed therefore cannot claim anything.
//!
//! Cursors are 48 bits: a group can hand out 2^48 offsets (years at millions per
//! second).

use std::sync::atomic::Ordering;

use crate::layout::{client_state, redelivery, ClientEntry, GroupEntry};
use crate::region::Region;

/// Largest cursor the turn word can hold.
pub const MAX_CURSOR: u64 = (1 << 48) - 1;
/// Set in rank and rotation words that hold a value (0 means "none").
const VALID: u64 = 1 << 63;

pub fn pack_turn(cursor: u64, epoch: u16) -> u64 {
    (cursor << 16) | epoch as u64
}

pub fn unpack_turn(word: u64) -> (u64, u16) {
    (word >> 16, word as u16)
}

fn pack_tagged(epoch: u16, value: u32) -> u64 {
    VALID | ((epoch as u64) << 32) | value as u64
}

fn unpack_tagged(word: u64, epoch: u16) -> Option<u32> {
    (word & VALID != 0 && (word >> 32) as u16 == epoch).then_some(word as u32)
}

/// What a consumer sees when it looks at its group's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The offset at the cursor is this consumer's; claim it with [`try_claim`].
    /// `alone`: this consumer is the rotation's only member, so every following
    /// offset is its own too and [`try_claim_run`] may take several at once.
    Mine { offset: u64, word: u64, alone: bool },
    /// Another member's turn; `word` is the turn word this was judged on (wait
    /// for it to change).
    Other { offset: u64, word: u64 },
    /// This consumer has no rank in the rotation in force (judged on `word`).
    NotMember { word: u64 },
}

/// Reads the group's turn from `me`'s point of view.
pub fn view_turn(group: &GroupEntry, me: &ClientEntry) -> Turn {
    // Acquire pairs with the Release compare-exchanges in `install_rotation` and
    // `try_claim`: the rotation and ranks written before them are visible.
    let word = group.turn.turn.load(Ordering::Acquire);
    let (cursor, epoch) = unpack_turn(word);
    let half = (epoch & 1) as usize;
    let rotation = &group.meta.rotation[half];
    let Some(n) = unpack_tagged(rotation.meta.load(Ordering::Relaxed), epoch) else {
        return Turn::NotMember { word };
    };
    let start = rotation.start.load(Ordering::Relaxed);
    let Some(rank) = unpack_tagged(me.identity.rank[half].load(Ordering::Relaxed), epoch) else {
        return Turn::NotMember { word };
    };
    if n == 0 || rank >= n || cursor < start {
        return Turn::NotMember { word };
    }
    if (cursor - start) % n as u64 == rank as u64 {
        Turn::Mine {
            offset: cursor,
            word,
            alone: n == 1,
        }
    } else {
        Turn::Other {
            offset: cursor,
            word,
        }
    }
}

/// Claims the offset seen in [`Turn::Mine`]; false if the turn moved meanwhile.
pub fn try_claim(group: &GroupEntry, word: u64) -> bool {
    try_claim_run(group, word, 1)
}

/// Claims `count` consecutive offsets from the one seen in [`Turn::Mine`] (only
/// when `alone`: otherwise the next offsets are other members' turns); false if the
/// turn moved meanwhile.
pub fn try_claim_run(group: &GroupEntry, word: u64, count: u64) -> bool {
    let (cursor, epoch) = unpack_turn(word);
    if count == 0 || cursor.saturating_add(count) > MAX_CURSOR {
        return false;
    }
    group
        .turn
        .turn
        // Release extends the release sequence of the broker's install, so later
        // viewers still see the rotation; Acquire pairs with earlier claims.
        .compare_exchange(
            word,
            pack_turn(cursor + count, epoch),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// The group's cursor: every offset below it has been handed out.
pub fn cursor(group: &GroupEntry) -> u64 {
    unpack_turn(group.turn.turn.load(Ordering::Acquire)).0
}

/// Broker only: resets a free group entry to hand out offsets from `start`, with no
/// rotation (nobody can claim until [`install_rotation`]).
pub fn reset_group(group: &GroupEntry, start: u64) {
    for r in &group.meta.rotation {
        r.meta.store(0, Ordering::Relaxed);
        r.start.store(0, Ordering::Relaxed);
    }
    group.meta.redeliveries.store(0, Ordering::Relaxed);
    // The epoch carries on from the entry's previous life, so that a stale rank or
    // claim word from a deleted group can never match the new one.
    let (_, epoch) = unpack_turn(group.turn.turn.load(Ordering::Acquire));
    group.turn.turn.store(
        pack_turn(start.min(MAX_CURSOR), epoch.wrapping_add(2)),
        Ordering::Release,
    );
}

/// Broker only: installs a rotation over `members` (in join order) starting at the
/// group's current cursor. Returns `(start, epoch)` of the new rotation.
pub fn install_rotation(group: &GroupEntry, members: &[&ClientEntry]) -> (u64, u16) {
    loop {
        let word = group.turn.turn.load(Ordering::Acquire);
        let (cursor, epoch) = unpack_turn(word);
        let next = epoch.wrapping_add(1);
        let half = (next & 1) as usize;
        let rotation = &group.meta.rotation[half];
        rotation.start.store(cursor, Ordering::Relaxed);
        rotation
            .meta
            .store(pack_tagged(next, members.len() as u32), Ordering::Relaxed);
        for (rank, m) in members.iter().enumerate() {
            m.identity.rank[half].store(pack_tagged(next, rank as u32), Ordering::Relaxed);
        }
        // Release publishes the rotation and ranks above to `view_turn`.
        if group
            .turn
            .turn
            .compare_exchange(
                word,
                pack_turn(cursor, next),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            return (cursor, next);
        }
    }
}

/// Broker only: clears a client's ranks when it joins, so stale ranks from a previous
/// holder of the entry never match an epoch.
pub fn clear_ranks(client: &ClientEntry) {
    for r in &client.identity.rank {
        r.store(0, Ordering::Relaxed);
    }
}

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
        let group = self.group(g)?;
        if group.meta.redeliveries.load(Ordering::Acquire) == 0 {
            return None;
        }
        for slot in 0..self.geometry().redeliveries_per_group {
            let e = self.redelivery(g, slot)?;
            let s = e.state.load(Ordering::Acquire);
            if redelivery::kind(s) != redelivery::PENDING {
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
    fn members_take_turns_in_rank_order_and_claims_are_exclusive() {
        let t = test_region("turns", test_geometry());
        let r = &t.0;
        let g = r.group(0).unwrap();
        reset_group(g, 10);
        let (a, b) = (r.client(0).unwrap(), r.client(1).unwrap());
        clear_ranks(a);
        clear_ranks(b);
        assert!(matches!(view_turn(g, a), Turn::NotMember { .. }));
        let (start, _) = install_rotation(g, &[a, b]);
        assert_eq!(start, 10);
        let Turn::Mine {
            offset: 10, word, ..
        } = view_turn(g, a)
        else {
            panic!("offset 10 should be a's")
        };
        assert!(matches!(view_turn(g, b), Turn::Other { offset: 10, .. }));
        assert!(try_claim(g, word));
        assert!(!try_claim(g, word), "a claim succeeds once");
        let Turn::Mine {
            offset: 11, word, ..
        } = view_turn(g, b)
        else {
            panic!("offset 11 should be b's")
        };
        assert!(try_claim(g, word));
        assert_eq!(cursor(g), 12);
    }

    #[test]
    fn a_lone_member_claims_a_run_and_others_one_at_a_time() {
        let t = test_region("run", test_geometry());
        let r = &t.0;
        let g = r.group(0).unwrap();
        reset_group(g, 0);
        let (a, b) = (r.client(0).unwrap(), r.client(1).unwrap());
        clear_ranks(a);
        clear_ranks(b);
        install_rotation(g, &[a]);
        let Turn::Mine {
            word, alone: true, ..
        } = view_turn(g, a)
        else {
            panic!("a alone owns every offset")
        };
        assert!(try_claim_run(g, word, 5));
        assert_eq!(cursor(g), 5);
        install_rotation(g, &[a, b]);
        assert!(
            matches!(view_turn(g, b), Turn::Mine { alone: false, .. })
                || matches!(view_turn(g, a), Turn::Mine { alone: false, .. })
        );
    }

    #[test]
    fn a_claim_against_an_old_rotation_fails() {
        let t = test_region("epoch", test_geometry());
        let r = &t.0;
        let g = r.group(0).unwrap();
        reset_group(g, 0);
        let (a, b) = (r.client(0).unwrap(), r.client(1).unwrap());
        clear_ranks(a);
        clear_ranks(b);
        install_rotation(g, &[a, b]);
        let Turn::Mine { word, .. } = view_turn(g, a) else {
            panic!()
        };
        // a stalls; the broker removes it and b alone takes over at the same cursor.
        assert_eq!(install_rotation(g, &[b]).0, 0);
        assert!(!try_claim(g, word));
        assert!(matches!(view_turn(g, a), Turn::NotMember { .. }));
        assert!(matches!(view_turn(g, b), Turn::Mine { offset: 0, .. }));
    }

    #[test]
    fn a_reused_group_entry_never_repeats_an_epoch() {
        let t = test_region("reuse", test_geometry());
        let r = &t.0;
        let g = r.group(0).unwrap();
        let a = r.client(0).unwrap();
        reset_group(g, 0);
        clear_ranks(a);
        let (_, first) = install_rotation(g, &[a]);
        // The group is deleted and its entry reused; a's stale rank must not match.
        reset_group(g, 0);
        let b = r.client(1).unwrap();
        clear_ranks(b);
        let (_, second) = install_rotation(g, &[b]);
        assert_ne!(first, second);
        assert!(matches!(view_turn(g, a), Turn::NotMember { .. }));
    }

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
}
