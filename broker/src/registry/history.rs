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

/// The first offset in `[from, cursor)` handed to `client`, if any.
pub(super) fn first_owned(
    segments: &VecDeque<Segment>,
    client: u32,
    from: u64,
    cursor: u64,
) -> Option<u64> {
    let n_segments = segments.len();
    for (i, seg) in segments.iter().enumerate() {
        let end = if i + 1 < n_segments {
            segments[i + 1].start
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
