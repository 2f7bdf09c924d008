//! Who was handed which offset: the rotations a group went through and the
//! arithmetic over them. Pure: it reads neither the region nor the registry.

use std::collections::VecDeque;
use std::sync::Arc;

/// A run of offsets handed out under one rotation.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) start: u64,
    pub(super) members: Vec<(u32, Arc<str>)>,
}

/// The member that was handed `offset` first, if any.
pub(super) fn owner_of(segments: &VecDeque<Segment>, offset: u64) -> Option<&(u32, Arc<str>)> {
    let seg = segments.iter().rev().find(|s| s.start <= offset)?;
    if seg.members.is_empty() {
        return None;
    }
    Some(&seg.members[((offset - seg.start) % seg.members.len() as u64) as usize])
}

/// Per rotation, the turns of `client` within `[from, cursor)`: the first offset it
/// was handed there, the end of the range in that rotation, and the member count
/// (its turns are every n-th offset from the first, below the end).
fn turns(
    segments: &VecDeque<Segment>,
    client: u32,
    from: u64,
    cursor: u64,
) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    segments.iter().enumerate().filter_map(move |(i, seg)| {
        let end = segments.get(i + 1).map_or(cursor, |next| next.start);
        let (lo, hi) = (from.max(seg.start), end.min(cursor));
        let rank = seg.members.iter().position(|&(m, _)| m == client)?;
        if lo >= hi {
            return None;
        }
        let n = seg.members.len() as u64;
        let first_in_seg = seg.start + rank as u64;
        let first = if lo <= first_in_seg {
            first_in_seg
        } else {
            first_in_seg + (lo - first_in_seg).div_ceil(n) * n
        };
        (first < hi).then_some((first, hi, n))
    })
}

/// The first offset in `[from, cursor)` handed to `client`, if any.
pub(super) fn first_owned(
    segments: &VecDeque<Segment>,
    client: u32,
    from: u64,
    cursor: u64,
) -> Option<u64> {
    turns(segments, client, from, cursor)
        .next()
        .map(|(first, _, _)| first)
}

/// How many offsets in `[from, cursor)` were handed to `client`.
pub(super) fn owned_count(
    segments: &VecDeque<Segment>,
    client: u32,
    from: u64,
    cursor: u64,
) -> u64 {
    turns(segments, client, from, cursor)
        .map(|(first, hi, n)| (hi - 1 - first) / n + 1)
        .sum()
}

/// How far a group whose cursor is at `cursor` has consumed, given each member's
/// acknowledged position (`acks`: member, `ack_upto`) and the offsets of the
/// redeliveries it still owes (`pending`): every offset below it is acknowledged.
pub(super) fn position(
    segments: &VecDeque<Segment>,
    cursor: u64,
    acks: impl IntoIterator<Item = (u32, u64)>,
    pending: impl IntoIterator<Item = u64>,
) -> u64 {
    let mut pos = cursor;
    for (m, ack) in acks {
        if let Some(o) = first_owned(segments, m, ack, cursor) {
            pos = pos.min(o);
        }
    }
    for o in pending {
        pos = pos.min(o);
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Rotations from (start, members in join order); a member's id is `c<n>`.
    fn segments(rotations: &[(u64, Vec<u32>)]) -> VecDeque<Segment> {
        rotations
            .iter()
            .map(|(start, members)| Segment {
                start: *start,
                members: members
                    .iter()
                    .map(|&m| (m, Arc::from(format!("c{m}"))))
                    .collect(),
            })
            .collect()
    }

    /// The model: offset `o` went to member `(o - start) % n` of the last rotation
    /// starting at or below it; nobody if there is none or it has no members.
    fn model_owner(rotations: &[(u64, Vec<u32>)], o: u64) -> Option<u32> {
        let (start, members) = rotations.iter().rev().find(|(s, _)| *s <= o)?;
        if members.is_empty() {
            return None;
        }
        Some(members[((o - start) % members.len() as u64) as usize])
    }

    /// The model: the lowest offset in `[from, cursor)` handed to `client`.
    fn model_first_owned(
        rotations: &[(u64, Vec<u32>)],
        client: u32,
        from: u64,
        cursor: u64,
    ) -> Option<u64> {
        (from..cursor).find(|&o| model_owner(rotations, o) == Some(client))
    }

    /// The model: the lowest offset below `cursor` a member holds at or above its
    /// `ack_upto`, or a pending redelivery; `cursor` if there is none.
    fn model_position(
        rotations: &[(u64, Vec<u32>)],
        cursor: u64,
        acks: &[(u32, u64)],
        pending: &[u64],
    ) -> u64 {
        let held = (0..cursor).find(|&o| {
            acks.iter()
                .any(|&(m, ack)| o >= ack && model_owner(rotations, o) == Some(m))
        });
        pending.iter().copied().chain(held).fold(cursor, u64::min)
    }

    /// Rotations a, b, c from 10; b alone from 16; a frozen one (no members) from 20.
    fn example() -> Vec<(u64, Vec<u32>)> {
        vec![(10, vec![1, 2, 3]), (16, vec![2]), (20, vec![])]
    }

    #[test]
    fn each_offset_goes_to_the_member_whose_turn_it_was() {
        let segs = segments(&example());
        let owner = |o| owner_of(&segs, o).map(|(m, _)| *m);
        assert_eq!(owner(9), None, "before the first rotation");
        assert_eq!(
            (10..16).map(owner).collect::<Vec<_>>(),
            [1, 2, 3, 1, 2, 3].map(Some)
        );
        assert_eq!(owner(16), Some(2));
        assert_eq!(owner(19), Some(2));
        assert_eq!(owner(20), None, "a frozen rotation hands out nothing");
        assert_eq!(owner(1000), None);
        assert_eq!(owner_of(&segs, 12).map(|(_, id)| &**id), Some("c3"));
        assert_eq!(owner_of(&VecDeque::new(), 0), None, "no rotation");
    }

    #[test]
    fn first_owned_looks_only_in_the_range_and_the_rotations_that_cover_it() {
        let segs = segments(&example());
        assert_eq!(first_owned(&segs, 1, 0, 30), Some(10));
        assert_eq!(first_owned(&segs, 1, 11, 30), Some(13));
        assert_eq!(first_owned(&segs, 1, 14, 30), None, "b alone from 16");
        assert_eq!(first_owned(&segs, 2, 12, 30), Some(14));
        assert_eq!(first_owned(&segs, 2, 15, 30), Some(16));
        assert_eq!(first_owned(&segs, 2, 17, 18), Some(17));
        assert_eq!(first_owned(&segs, 2, 18, 18), None, "an empty range");
        assert_eq!(first_owned(&segs, 3, 0, 12), None, "12 is the cursor");
        assert_eq!(first_owned(&segs, 4, 0, 30), None, "never a member");
        assert_eq!(first_owned(&VecDeque::new(), 1, 0, 30), None);
    }

    #[test]
    fn owned_count_counts_each_turn_in_the_range() {
        let segs = segments(&example());
        assert_eq!(owned_count(&segs, 1, 0, 30), 2, "10 and 13");
        assert_eq!(owned_count(&segs, 2, 0, 30), 6, "11, 14, then 16..20");
        assert_eq!(owned_count(&segs, 2, 15, 18), 2, "16 and 17");
        assert_eq!(owned_count(&segs, 3, 13, 30), 1, "15");
        assert_eq!(owned_count(&segs, 4, 0, 30), 0, "never a member");
    }

    #[test]
    fn the_position_is_the_lowest_offset_not_acknowledged() {
        let segs = segments(&example());
        let acks = [(1, 11), (2, 20), (3, 0)];
        assert_eq!(position(&segs, 20, acks, []), 12, "c holds 12");
        assert_eq!(position(&segs, 20, acks, [5]), 5, "a redelivery holds 5");
        assert_eq!(position(&segs, 20, [(1, 14), (2, 20), (3, 16)], []), 20);
        assert_eq!(position(&segs, 20, [], [25]), 20, "never past the cursor");
        assert_eq!(position(&VecDeque::new(), 7, [(1, 0)], []), 7);
    }

    /// Up to six rotations over clients 0..5, starts non-decreasing (equal starts
    /// included), some with no members.
    fn rotations() -> impl Strategy<Value = Vec<(u64, Vec<u32>)>> {
        let members =
            proptest::sample::subsequence((0u32..5).collect::<Vec<_>>(), 0..=5).prop_shuffle();
        (
            0u64..10,
            proptest::collection::vec((0u64..20, members), 0..6),
        )
            .prop_map(|(base, steps)| {
                let mut start = base;
                steps
                    .into_iter()
                    .map(|(step, members)| {
                        start += step;
                        (start, members)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn owner_of_agrees_with_the_model(rot in rotations(), offset in 0u64..150) {
            let segs = segments(&rot);
            let got = owner_of(&segs, offset);
            prop_assert_eq!(got.map(|(m, _)| *m), model_owner(&rot, offset));
            if let Some((m, id)) = got {
                prop_assert_eq!(&**id, format!("c{m}"));
            }
        }

        #[test]
        fn first_owned_agrees_with_the_model(
            rot in rotations(),
            client in 0u32..6,
            from in 0u64..150,
            cursor in 0u64..150,
        ) {
            prop_assert_eq!(
                first_owned(&segments(&rot), client, from, cursor),
                model_first_owned(&rot, client, from, cursor)
            );
        }

        #[test]
        fn owned_count_agrees_with_the_model(
            rot in rotations(),
            client in 0u32..6,
            from in 0u64..150,
            cursor in 0u64..150,
        ) {
            let model = (from..cursor)
                .filter(|&o| model_owner(&rot, o) == Some(client))
                .count() as u64;
            prop_assert_eq!(owned_count(&segments(&rot), client, from, cursor), model);
        }

        #[test]
        fn position_agrees_with_the_model(
            rot in rotations(),
            cursor in 0u64..150,
            acks in proptest::collection::btree_map(0u32..6, 0u64..150, 0..6),
            pending in proptest::collection::vec(0u64..150, 0..4),
        ) {
            let acks: Vec<(u32, u64)> = acks.into_iter().collect();
            prop_assert_eq!(
                position(&segments(&rot), cursor, acks.iter().copied(), pending.iter().copied()),
                model_position(&rot, cursor, &acks, &pending)
            );
        }
    }
}
