//! Consumer groups in the region: who gets which offset.
//!
//! A group's `turn` word packs `(cursor << 16) | epoch`: `cursor` is the next offset
//! the group hands out, `epoch` (16 bits, wrapping) names the rotation in force.
//! Under a rotation `{start, n}` the offset `c` belongs to the member of rank
//! `(c - start) % n`. Any member moves the cursor over committed offsets, many at a
//! time, by a compare-exchange of `(c, epoch) -> (c + k, epoch)`: that hands every
//! member its share of `c..c + k` at once, and each member then reads its own
//! offsets (`start + rank`, every `n`-th after it) below the cursor without asking
//! anyone. Offsets below the cursor are exactly those handed out; a member holds
//! those of its own that it has not acknowledged (`ack_upto`).
//!
//! Membership changes in two steps, both by the broker. It first *freezes* the group:
//! an empty rotation at the cursor (`(c, e) -> (c, e + 1)`), under which nobody can
//! move the cursor, while the members finish what the old rotation handed them (they
//! find where it ended in the frozen rotation's start). Once every remaining member
//! has acknowledged its share below the cursor, the broker installs the new
//! rotation, starting at that same cursor (`e + 2`). Frozen and real rotations
//! therefore alternate, and a member never needs a rotation older than the one before
//! the one in force: the two halves of the double buffer are enough. A claim made
//! against an old epoch fails instead of slipping through, so a stalled consumer that
//! wakes up after being removed cannot move the cursor.
//!
//! Cursors are 48 bits: a group can hand out 2^48 offsets (years at millions per
//! second); epochs are 16 bits, so a member must not sleep through 2^15 membership
//! changes between two reads of one poll.

use std::sync::atomic::Ordering;

use crate::layout::{ClientEntry, GroupEntry};
use crate::region::{write_name, BrokerRegion};

/// Largest cursor the turn word can hold.
pub const MAX_CURSOR: u64 = (1 << 48) - 1;
/// Set in rank and rotation words that hold a value (0 means "none").
const VALID: u64 = 1 << 63;
/// Set, instead of [`VALID`], in the rank words of a client the broker removed: no
/// longer a rank for anyone, but a record of who was handed which offsets, for
/// the broker that recovers the region after a crash (see [`revoke_ranks`]).
const REVOKED: u64 = 1 << 62;

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

/// The rotation in force, as one member sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `me` has rank `rank` among `members`; the rotation began at `start`.
    Member {
        word: u64,
        start: u64,
        members: u32,
        rank: u32,
    },
    /// Between two rotations: nobody may move the cursor, which is where the frozen
    /// rotation began.
    Frozen { word: u64 },
    /// `me` has no rank in the rotation in force (or there is none yet).
    NotMember { word: u64 },
}

/// A rotation as one member read it: (members, start, rank), each `None` unless
/// tagged with the epoch asked for.
struct HalfRead {
    members: Option<u32>,
    start: u64,
    rank: Option<u32>,
}

/// Reads the half of the double buffer holding rotation `epoch` (and `me`'s rank in
/// it), provided the turn word still shows epoch `valid_while` afterwards. A half is
/// rewritten only once the epoch has moved past the one after it, so a read that
/// finds the epoch unchanged did not see a torn rotation.
fn read_half(
    group: &GroupEntry,
    me: &ClientEntry,
    epoch: u16,
    valid_while: u16,
) -> Option<HalfRead> {
    let half = (epoch & 1) as usize;
    let rotation = &group.meta.rotation[half];
    // Acquire pairs with the Release stores of the next rewrite of this half, so
    // that seeing any of them makes the epoch check below fail.
    let meta = rotation.meta.load(Ordering::Acquire);
    let start = rotation.start.load(Ordering::Acquire);
    let rank = me.identity.rank[half].load(Ordering::Acquire);
    if unpack_turn(group.turn.turn.load(Ordering::Acquire)).1 != valid_while {
        return None;
    }
    Some(HalfRead {
        members: unpack_tagged(meta, epoch),
        start,
        rank: unpack_tagged(rank, epoch),
    })
}

/// Reads the rotation in force from `me`'s point of view, consistently.
pub fn view(group: &GroupEntry, me: &ClientEntry) -> View {
    loop {
        // Acquire pairs with the Release compare-exchange in `install_rotation`: the
        // rotation and ranks written before it are visible.
        let word = group.turn.turn.load(Ordering::Acquire);
        let (_, epoch) = unpack_turn(word);
        let Some(read) = read_half(group, me, epoch, epoch) else {
            continue;
        };
        return match (read.members, read.rank) {
            (Some(0), _) => View::Frozen { word },
            (Some(members), Some(rank)) if rank < members => View::Member {
                word,
                start: read.start,
                members,
                rank,
            },
            _ => View::NotMember { word },
        };
    }
}

/// Whether `me` is a member of the rotation in force (not frozen).
pub fn is_member(group: &GroupEntry, me: &ClientEntry) -> bool {
    matches!(view(group, me), View::Member { .. })
}

/// Offsets one member takes at once: `start`, `start + stride`, ... (`len` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub stride: u64,
    pub len: u64,
}

impl Run {
    /// The `i`-th offset of the run.
    pub fn offset(&self, i: u64) -> u64 {
        self.start + i * self.stride
    }

    /// One past the last offset: what acknowledging the run stores in `ack_upto`.
    pub fn end(&self) -> u64 {
        match self.len {
            0 => self.start,
            n => self.offset(n - 1) + 1,
        }
    }
}

/// What a member does next, from [`Member::next_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// These offsets were handed to this member: read, then acknowledge them.
    Take(Run),
    /// Nothing is handed to this member and every committed offset is handed out:
    /// wait for a commit at or beyond `cursor`, or for `word` to change.
    AwaitMessages { word: u64, cursor: u64 },
    /// This member is in no rotation in force (`frozen`: the group is between two):
    /// wait for `word` to change.
    AwaitRotation { word: u64, frozen: bool },
    /// This member has just started on the rotation in force and took nothing yet
    /// (only when asked for, see [`Member::next_step_with`]): look again.
    Started,
}

/// The rotation a member last took offsets under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assignment {
    epoch: u16,
    stride: u64,
    /// This member's next offset under the rotation.
    next: u64,
    /// Where the rotation ended, once the epoch has moved on.
    end: Option<u64>,
}

impl Assignment {
    /// Takes up to `max` of this member's offsets below `handed_out`, if it has any.
    #[inline]
    fn take_below(&mut self, handed_out: u64, max: u64) -> Option<Run> {
        if self.next >= handed_out {
            return None;
        }
        let len = (handed_out - self.next).div_ceil(self.stride).min(max);
        let run = Run {
            start: self.next,
            stride: self.stride,
            len,
        };
        self.next = self.next.saturating_add(len * self.stride);
        Some(run)
    }
}

/// One consumer's side of its group: the rotation it reads its offsets under.
#[derive(Debug, Default, Clone)]
pub struct Member {
    /// None until the member first finds a rotation.
    assignment: Option<Assignment>,
    /// The last step's run was handed out by this member's own advance of the cursor.
    advanced: bool,
}

impl Member {
    /// Finds the next offsets handed to `me` (at most `max`), moving the group's
    /// cursor over committed offsets (every offset below `committed` is) when nothing
    /// handed out is left for it.
    pub fn next_step(
        &mut self,
        group: &GroupEntry,
        me: &ClientEntry,
        committed: u64,
        max: u64,
    ) -> Step {
        self.next_step_with(group, me, |_, _| committed, max, false)
    }

    /// As [`Member::next_step`], with `committed(cursor, limit)` telling how far the
    /// committed offsets reach from the cursor (it need not look past `limit` more).
    /// With `pause_when_started`, a member that starts on the rotation in force
    /// returns [`Step::Started`] before it takes anything under it: what the broker
    /// published before installing that rotation is then visible to the caller.
    pub fn next_step_with(
        &mut self,
        group: &GroupEntry,
        me: &ClientEntry,
        committed: impl Fn(u64, u64) -> u64,
        max: u64,
        pause_when_started: bool,
    ) -> Step {
        let max = max.max(1);
        self.advanced = false;
        loop {
            let word = group.turn.turn.load(Ordering::Acquire);
            let (cursor, epoch) = unpack_turn(word);
            let Some(a) = self.assignment.as_mut() else {
                match self.catch_up(group, me) {
                    CaughtUp::Wait(step) => return step,
                    CaughtUp::InForce if pause_when_started => return Step::Started,
                    _ => continue,
                }
            };
            if a.end.is_none() && a.epoch != epoch {
                // The rotation ended where the next one (frozen, then real at the same
                // cursor) began. Two rotations later, the broker has seen this member
                // acknowledge all it was handed under it: nothing is left.
                match epoch.wrapping_sub(a.epoch) {
                    1 | 2 => match current_start(group, me, epoch) {
                        Some(end) => a.end = Some(end),
                        None => continue,
                    },
                    _ => a.end = Some(a.next),
                }
            }
            let handed_out = a.end.map_or(cursor, |end| end.min(cursor));
            if let Some(run) = a.take_below(handed_out, max) {
                return Step::Take(run);
            }
            if a.end.is_some() {
                match self.catch_up(group, me) {
                    CaughtUp::Wait(step) => return step,
                    CaughtUp::InForce if pause_when_started => return Step::Started,
                    _ => continue,
                }
            }
            // Hand out at most `max` offsets to each member: every member reads its
            // share at the same pace.
            let limit = max.saturating_mul(a.stride);
            let count = committed(cursor, limit)
                .saturating_sub(cursor)
                .min(limit)
                .min(MAX_CURSOR - cursor.min(MAX_CURSOR));
            if count == 0 {
                return Step::AwaitMessages { word, cursor };
            }
            if try_advance(group, word, count) {
                // This member's share of what it just handed out, without another
                // look at the turn word.
                if let Some(run) = a.take_below(cursor + count, max) {
                    self.advanced = true;
                    return Step::Take(run);
                }
            }
        }
    }

    /// Whether the run the last [`Member::next_step`] returned was handed out by this
    /// member's own advance of the cursor, a SeqCst read-modify-write of the turn
    /// word: what the member does next is ordered after it as by a SeqCst fence.
    pub fn advanced_last_step(&self) -> bool {
        self.advanced
    }

    /// With no rotation to read from (none yet, or the last one is over and read to
    /// its end): starts on the rotation in force, or, while the group is frozen, on
    /// the rotation before the freeze if this member has not read it yet (then it
    /// has taken nothing under it). Says which, or what to wait for if there is none.
    fn catch_up(&mut self, group: &GroupEntry, me: &ClientEntry) -> CaughtUp {
        let read = self.assignment.map(|a| a.epoch);
        match view(group, me) {
            View::Member {
                word,
                start,
                members,
                rank,
            } => {
                self.assignment = Some(Assignment {
                    epoch: unpack_turn(word).1,
                    stride: members as u64,
                    next: start.saturating_add(rank as u64),
                    end: None,
                });
                CaughtUp::InForce
            }
            View::Frozen { word } => match previous_rotation(group, me, word) {
                Some(before) if Some(before.epoch) != read => {
                    self.assignment = Some(before);
                    CaughtUp::Before
                }
                _ => CaughtUp::Wait(Step::AwaitRotation { word, frozen: true }),
            },
            View::NotMember { word } => CaughtUp::Wait(Step::AwaitRotation {
                word,
                frozen: false,
            }),
        }
    }
}

/// What [`Member::catch_up`] found to read from.
enum CaughtUp {
    /// The rotation in force.
    InForce,
    /// The member's share of the rotation before a freeze.
    Before,
    /// Nothing yet: this.
    Wait(Step),
}

/// Where the rotation of `epoch` began, if it is still the one in force.
fn current_start(group: &GroupEntry, me: &ClientEntry, epoch: u16) -> Option<u64> {
    let read = read_half(group, me, epoch, epoch)?;
    read.members.map(|_| read.start)
}

/// While the group is frozen (judged on `frozen`): `me`'s share of the rotation
/// before, from its start, ending where the freeze began.
fn previous_rotation(group: &GroupEntry, me: &ClientEntry, frozen: u64) -> Option<Assignment> {
    let (end, epoch) = unpack_turn(frozen);
    let before = epoch.wrapping_sub(1);
    // That half is rewritten only once the freeze is over.
    let read = read_half(group, me, before, epoch)?;
    let (members, rank) = (read.members?, read.rank?);
    (rank < members).then_some(Assignment {
        epoch: before,
        stride: members as u64,
        next: read.start.saturating_add(rank as u64),
        end: Some(end),
    })
}

/// Moves the cursor judged in `word` over `count` offsets, handing them out; false if
/// the turn word changed meanwhile (another member moved it, or the rotation ended).
pub fn try_advance(group: &GroupEntry, word: u64, count: u64) -> bool {
    let (cursor, epoch) = unpack_turn(word);
    if count == 0 || cursor.saturating_add(count) > MAX_CURSOR {
        return false;
    }
    group
        .turn
        .turn
        // Release extends the release sequence of the broker's install, so later
        // viewers still see the rotation; Acquire pairs with earlier advances.
        // SeqCst orders the advance before the member's check of the closing mark
        // (see `Member::advanced_last_step`); on x86 it costs nothing more.
        .compare_exchange(
            word,
            pack_turn(cursor + count, epoch),
            Ordering::SeqCst,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// The group's cursor: every offset below it has been handed out.
pub fn cursor(group: &GroupEntry) -> u64 {
    unpack_turn(group.turn_word()).0
}

/// Broker only: resets a free group entry to hand out offsets from `start`, with no
/// rotation (nobody can claim until [`install_rotation`]).
pub(crate) fn reset_group(group: &GroupEntry, start: u64) {
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
/// group's current cursor; with no members, freezes the group. Returns
/// `(start, epoch)` of the new rotation.
pub(crate) fn install_rotation(group: &GroupEntry, members: &[&ClientEntry]) -> (u64, u16) {
    loop {
        let word = group.turn.turn.load(Ordering::Acquire);
        let (cursor, epoch) = unpack_turn(word);
        let next = epoch.wrapping_add(1);
        let half = (next & 1) as usize;
        let rotation = &group.meta.rotation[half];
        // Release on each store: a member reading this half for the epoch before
        // `next - 1` sees the epoch moved on if it sees any of them (see `view`).
        rotation.start.store(cursor, Ordering::Release);
        rotation
            .meta
            .store(pack_tagged(next, members.len() as u32), Ordering::Release);
        for (rank, m) in members.iter().enumerate() {
            m.identity.rank[half].store(pack_tagged(next, rank as u32), Ordering::Release);
        }
        // Release publishes the rotation and ranks above to `view`.
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

/// Where a broker began handing out a group, recorded in its entry for the broker
/// that recovers the region after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedStart {
    /// The first offset this broker handed the group.
    pub first_offset: u64,
    /// First deliveries below this offset are attempt 2: the group had been handed
    /// them before the restart.
    pub redeliver_below: u64,
}

/// Broker only, when it creates a group: records where it starts handing it out.
pub(crate) fn record_start(group: &GroupEntry, start: RecordedStart) {
    use crate::region::RECORDED;
    let meta = &group.meta;
    meta.first_offset.store(
        RECORDED | start.first_offset.min(MAX_CURSOR),
        Ordering::Release,
    );
    meta.redeliver_below.store(
        RECORDED | start.redeliver_below.min(MAX_CURSOR),
        Ordering::Release,
    );
}

/// What `record_start` recorded, if anything (a region from an earlier build
/// holds nothing there).
pub fn recorded_start(group: &GroupEntry) -> Option<RecordedStart> {
    use crate::region::RECORDED;
    let first = group.meta.first_offset.load(Ordering::Acquire);
    let below = group.meta.redeliver_below.load(Ordering::Acquire);
    (first & RECORDED != 0 && below & RECORDED != 0).then_some(RecordedStart {
        first_offset: first & !RECORDED,
        redeliver_below: below & !RECORDED,
    })
}

/// A rotation read back from a group entry that nobody changes any more (a dead
/// broker's region, at recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastRotation {
    pub epoch: u16,
    /// First offset handed out under it.
    pub start: u64,
    /// 0 for a frozen rotation.
    pub members: u32,
}

/// The rotation in force and the one before it (newest first), each `None` if its
/// half of the double buffer does not hold it (never installed, or corrupt). Older
/// rotations are gone: their half has been rewritten.
pub fn recent_rotations(group: &GroupEntry) -> [Option<PastRotation>; 2] {
    let (_, epoch) = unpack_turn(group.turn.turn.load(Ordering::Acquire));
    [epoch, epoch.wrapping_sub(1)].map(|epoch| {
        let rotation = &group.meta.rotation[(epoch & 1) as usize];
        let members = unpack_tagged(rotation.meta.load(Ordering::Acquire), epoch)?;
        Some(PastRotation {
            epoch,
            start: rotation.start.load(Ordering::Acquire),
            members,
        })
    })
}

/// `client`'s rank in the rotation of `epoch`, held or revoked when it left, if its
/// entry still records one.
pub fn rank_in(client: &ClientEntry, epoch: u16) -> Option<u32> {
    let word = client.identity.rank[(epoch & 1) as usize].load(Ordering::Acquire);
    let recorded = word & (VALID | REVOKED) != 0;
    (recorded && (word >> 32) as u16 == epoch).then_some(word as u32)
}

/// Broker only: clears a client's ranks when it joins, so stale ranks from a previous
/// holder of the entry never match an epoch.
pub(crate) fn clear_ranks(client: &ClientEntry) {
    for r in &client.identity.rank {
        r.store(0, Ordering::Relaxed);
    }
}

/// Broker only, when it removes a client: its ranks stop being ranks (a member
/// reads a rank word only with [`VALID`] set), so a removed consumer that wakes up
/// can read no share, while its entry keeps which ranks it had for [`rank_in`].
pub(crate) fn revoke_ranks(client: &ClientEntry) {
    for r in &client.identity.rank {
        let word = r.load(Ordering::Relaxed);
        if word & VALID != 0 {
            r.store((word & !VALID) | REVOKED, Ordering::Relaxed);
        }
    }
}

impl GroupEntry {
    /// The group's turn word: its cursor and rotation epoch (see [`unpack_turn`]).
    #[inline]
    pub fn turn_word(&self) -> u64 {
        self.turn.turn.load(Ordering::Acquire)
    }
}

/// What the broker alone does to groups: through its [`BrokerRegion`], so that a
/// client cannot.
impl BrokerRegion {
    /// Names group entry `g` and marks it active, once it is set up.
    pub fn activate_group(&self, g: u32, name: &str) {
        if let Some(entry) = self.group(g) {
            write_name(&entry.meta.name, &entry.meta.name_len, name);
            // Release: whoever sees it active sees its name and set-up.
            entry
                .meta
                .state
                .store(crate::layout::group_state::ACTIVE, Ordering::Release);
        }
    }

    /// Frees group entry `g` (the group was deleted).
    pub fn free_group(&self, g: u32) {
        if let Some(entry) = self.group(g) {
            entry
                .meta
                .state
                .store(crate::layout::group_state::FREE, Ordering::Release);
        }
    }

    /// Resets a free group entry to hand out offsets from `start` (see
    /// `reset_group`).
    pub fn reset_group(&self, group: &GroupEntry, start: u64) {
        reset_group(group, start);
    }

    /// Records where this broker starts handing out `group` (see `record_start`).
    pub fn record_group_start(&self, group: &GroupEntry, start: RecordedStart) {
        record_start(group, start);
    }

    /// Installs a rotation over `members`, or freezes the group with none (see
    /// `install_rotation`).
    pub fn install_rotation(&self, group: &GroupEntry, members: &[&ClientEntry]) -> (u64, u16) {
        install_rotation(group, members)
    }

    /// Clears a joining client's ranks (see `clear_ranks`).
    pub fn clear_ranks(&self, client: &ClientEntry) {
        clear_ranks(client);
    }

    /// Revokes a removed client's ranks (see `revoke_ranks`).
    pub fn revoke_ranks(&self, client: &ClientEntry) {
        revoke_ranks(client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{test_geometry, test_region};
    use crate::region::BrokerRegion;
    use proptest::prelude::*;

    fn take(step: Step) -> Vec<u64> {
        let Step::Take(run) = step else {
            panic!("expected offsets, got {step:?}")
        };
        (0..run.len).map(|i| run.offset(i)).collect()
    }

    /// Group 0, reset to hand out from `start`, and clients 0..N in no rotation.
    fn fresh_group<const N: usize>(
        r: &BrokerRegion,
        start: u64,
    ) -> (&GroupEntry, [&ClientEntry; N]) {
        let g = r.group(0).unwrap();
        reset_group(g, start);
        let clients = std::array::from_fn(|i| r.client(i as u32).unwrap());
        for c in clients {
            clear_ranks(c);
        }
        (g, clients)
    }

    #[test]
    fn recovery_reads_back_the_last_two_rotations_the_ranks_still_held_and_the_start() {
        let t = test_region("recent", test_geometry());
        let r = &t.0;
        let (g, [a, b]) = fresh_group(r, 10);
        assert_eq!(
            recorded_start(g),
            None,
            "nothing recorded in a fresh region"
        );
        record_start(
            g,
            RecordedStart {
                first_offset: 10,
                redeliver_below: 12,
            },
        );
        assert_eq!(
            recorded_start(g),
            Some(RecordedStart {
                first_offset: 10,
                redeliver_below: 12,
            })
        );
        let (_, real) = install_rotation(g, &[a, b]);
        assert!(try_advance(g, g.turn.turn.load(Ordering::Acquire), 5));
        let (frozen_at, frozen) = install_rotation(g, &[]);
        assert_eq!(frozen_at, 15);
        assert_eq!(
            recent_rotations(g),
            [
                Some(PastRotation {
                    epoch: frozen,
                    start: 15,
                    members: 0
                }),
                Some(PastRotation {
                    epoch: real,
                    start: 10,
                    members: 2
                }),
            ]
        );
        assert_eq!((rank_in(a, real), rank_in(b, real)), (Some(0), Some(1)));
        assert_eq!(rank_in(a, frozen), None);
        // A client that leaves has its ranks revoked: it is no member any more, but
        // its entry still says which share it had.
        revoke_ranks(a);
        assert!(!matches!(view(g, a), View::Member { .. }));
        assert_eq!(
            previous_rotation(g, a, g.turn.turn.load(Ordering::Acquire)),
            None
        );
        assert_eq!(
            previous_rotation(g, b, g.turn.turn.load(Ordering::Acquire)).map(|p| p.next),
            Some(11)
        );
        assert_eq!(rank_in(a, real), Some(0));
        // A newcomer in the entry clears them: then nothing is recorded.
        clear_ranks(a);
        assert_eq!(rank_in(a, real), None);
        // Two rotations later the real one's half is rewritten and gone.
        let (_, next) = install_rotation(g, &[b]);
        assert_eq!(recent_rotations(g)[0].map(|p| p.epoch), Some(next));
        assert_eq!(recent_rotations(g)[1].map(|p| p.members), Some(0));
    }

    #[test]
    fn a_member_asked_to_pause_takes_nothing_under_a_rotation_it_just_started_on() {
        let t = test_region("pause", test_geometry());
        let r = &t.0;
        let (g, [a, b]) = fresh_group(r, 10);
        let mut ma = Member::default();
        install_rotation(g, &[a]);
        let committed = |_: u64, _: u64| 16;
        assert_eq!(ma.next_step_with(g, a, committed, 8, true), Step::Started);
        assert_eq!(cursor(g), 10, "nothing handed out");
        assert_eq!(
            take(ma.next_step_with(g, a, committed, 4, true)),
            [10, 11, 12, 13]
        );
        // The next rotation: again.
        install_rotation(g, &[]);
        install_rotation(g, &[a, b]);
        assert_eq!(ma.next_step_with(g, a, committed, 8, true), Step::Started);
        assert_eq!(take(ma.next_step_with(g, a, committed, 8, true)), [14]);
        // Without the pause it starts and goes on at once, as `next_step` does.
        install_rotation(g, &[]);
        install_rotation(g, &[a]);
        assert!(matches!(
            ma.next_step_with(g, a, committed, 8, false),
            Step::AwaitMessages { cursor: 16, .. }
        ));
    }

    #[test]
    fn one_member_hands_out_a_batch_and_each_reads_its_own_share() {
        let t = test_region("share", test_geometry());
        let r = &t.0;
        let (g, [a, b]) = fresh_group(r, 10);
        let (mut ma, mut mb) = (Member::default(), Member::default());
        assert!(matches!(
            ma.next_step(g, a, 16, 8),
            Step::AwaitRotation { frozen: false, .. }
        ));
        assert_eq!(install_rotation(g, &[a, b]).0, 10);
        assert_eq!(take(ma.next_step(g, a, 16, 8)), [10, 12, 14]);
        assert_eq!(cursor(g), 16, "a handed out every committed offset");
        assert_eq!(take(mb.next_step(g, b, 16, 8)), [11, 13, 15]);
        assert!(matches!(
            mb.next_step(g, b, 16, 8),
            Step::AwaitMessages { cursor: 16, .. }
        ));
        // At most `max` offsets per member are handed out at once.
        assert_eq!(take(mb.next_step(g, b, 100, 2)), [17, 19]);
        assert_eq!(cursor(g), 20);
        assert_eq!(take(ma.next_step(g, a, 100, 8)), [16, 18]);
    }

    #[test]
    fn a_member_knows_whether_its_own_advance_handed_out_its_run() {
        let t = test_region("advanced", test_geometry());
        let r = &t.0;
        let (g, [a, b]) = fresh_group(r, 0);
        install_rotation(g, &[a, b]);
        let (mut ma, mut mb) = (Member::default(), Member::default());
        assert_eq!(take(ma.next_step(g, a, 4, 8)), [0, 2]);
        assert!(ma.advanced_last_step(), "a moved the cursor for its run");
        assert_eq!(take(mb.next_step(g, b, 4, 8)), [1, 3]);
        assert!(!mb.advanced_last_step(), "b's run was handed out by a");
        assert!(matches!(
            mb.next_step(g, b, 4, 8),
            Step::AwaitMessages { .. }
        ));
        assert!(!mb.advanced_last_step());
        assert_eq!(take(mb.next_step(g, b, 6, 8)), [5]);
        assert!(mb.advanced_last_step());
    }

    #[test]
    fn a_frozen_group_hands_out_nothing_while_members_finish_the_old_rotation() {
        let t = test_region("freeze", test_geometry());
        let r = &t.0;
        let (g, [a, b]) = fresh_group(r, 0);
        let (mut ma, mut mb) = (Member::default(), Member::default());
        install_rotation(g, &[a, b]);
        assert_eq!(take(ma.next_step(g, a, 8, 4)), [0, 2, 4, 6]);
        let Step::AwaitMessages { word: stale, .. } = ma.next_step(g, a, 8, 4) else {
            panic!("a has nothing left")
        };
        assert_eq!(install_rotation(g, &[]).0, 8, "frozen at the cursor");
        assert!(
            !try_advance(g, stale, 4),
            "an old epoch cannot move the cursor"
        );
        assert!(matches!(
            ma.next_step(g, a, 20, 4),
            Step::AwaitRotation { frozen: true, .. }
        ));
        assert_eq!(take(mb.next_step(g, b, 20, 2)), [1, 3], "b's leftovers");
        assert_eq!(take(mb.next_step(g, b, 20, 2)), [5, 7]);
        assert!(matches!(
            mb.next_step(g, b, 20, 2),
            Step::AwaitRotation { frozen: true, .. }
        ));
        assert_eq!(cursor(g), 8);
        // a leaves; b alone carries on from the frozen cursor.
        assert_eq!(install_rotation(g, &[b]).0, 8);
        assert_eq!(take(mb.next_step(g, b, 20, 4)), [8, 9, 10, 11]);
        assert!(matches!(
            ma.next_step(g, a, 20, 4),
            Step::AwaitRotation { frozen: false, .. }
        ));
    }

    #[test]
    fn a_member_that_has_not_looked_yet_finds_its_share_of_a_frozen_rotation() {
        let t = test_region("late", test_geometry());
        let r = &t.0;
        let (g, [a, b, c]) = fresh_group(r, 0);
        let (mut ma, mut mb, mut mc) = (Member::default(), Member::default(), Member::default());
        install_rotation(g, &[a, b]);
        assert_eq!(take(ma.next_step(g, a, 6, 8)), [0, 2, 4]);
        // b has not polled yet when c joins.
        install_rotation(g, &[]);
        assert!(matches!(
            mc.next_step(g, c, 6, 8),
            Step::AwaitRotation { frozen: true, .. }
        ));
        assert_eq!(take(mb.next_step(g, b, 6, 8)), [1, 3, 5]);
        install_rotation(g, &[a, b, c]);
        // a finished long ago: it goes straight on to the new rotation.
        assert_eq!(take(ma.next_step(g, a, 12, 8)), [6, 9]);
        assert_eq!(take(mb.next_step(g, b, 12, 8)), [7, 10]);
        assert_eq!(take(mc.next_step(g, c, 12, 8)), [8, 11]);
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
        assert!(matches!(view(g, a), View::NotMember { .. }));
        assert!(is_member(g, b));
    }

    /// What the model broker and members do, one step at a time.
    #[derive(Debug, Clone)]
    enum Op {
        Commit(u64),
        Poll {
            member: usize,
            max: u64,
        },
        /// Start a membership change: freeze, then install `members` (a bit set)
        /// once everyone has finished the old rotation.
        Change {
            members: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..20).prop_map(Op::Commit),
            8 => (0usize..3, 1u64..6).prop_map(|(member, max)| Op::Poll { member, max }),
            1 => (1u8..8).prop_map(|members| Op::Change { members }),
        ]
    }

    proptest! {
        /// Any interleaving of commits, polls and membership changes hands every
        /// offset to exactly one member, the one whose turn it is under the rotation
        /// in force, and each member takes its offsets in increasing order.
        #[test]
        fn every_offset_goes_once_to_its_owner_in_order(ops in proptest::collection::vec(op(), 1..200)) {
            let t = test_region("model", test_geometry());
            let r = &t.0;
            let g = r.group(0).unwrap();
            reset_group(g, 0);
            let clients: Vec<_> = (0..3).map(|i| r.client(i).unwrap()).collect();
            for c in &clients {
                clear_ranks(c);
            }
            let mut members = vec![Member::default(); 3];
            let mut acked = [0u64; 3];
            let mut committed = 0u64;
            // (start, members in rank order) of every real rotation.
            let mut rotations: Vec<(u64, Vec<usize>)> = Vec::new();
            let mut pending: Option<Vec<usize>> = None;
            let mut taken: Vec<Option<usize>> = Vec::new();
            let install = |who: &[usize], rotations: &mut Vec<(u64, Vec<usize>)>| {
                let entries: Vec<_> = who.iter().map(|&i| clients[i]).collect();
                let (start, _) = install_rotation(g, &entries);
                rotations.push((start, who.to_vec()));
            };
            install(&[0], &mut rotations);
            let owner = |rotations: &[(u64, Vec<usize>)], o: u64| {
                let (start, who) = rotations.iter().rev().find(|(s, _)| *s <= o).unwrap();
                who[((o - start) % who.len() as u64) as usize]
            };
            let drained = |rotations: &[(u64, Vec<usize>)], acked: &[u64; 3]| {
                let c = cursor(g);
                (rotations.last().unwrap().0..c).all(|o| acked[owner(rotations, o)] > o)
            };
            for op in ops {
                match op {
                    Op::Commit(k) => committed += k,
                    Op::Poll { member, max } => {
                        if let Step::Take(run) = members[member].next_step(g, clients[member], committed, max) {
                            prop_assert!(run.len >= 1 && run.len <= max);
                            prop_assert!(run.end() <= committed);
                            prop_assert!(run.start >= acked[member], "in order");
                            for i in 0..run.len {
                                let o = run.offset(i);
                                if taken.len() <= o as usize {
                                    taken.resize(o as usize + 1, None);
                                }
                                prop_assert_eq!(taken[o as usize], None, "offset {} taken twice", o);
                                prop_assert_eq!(owner(&rotations, o), member, "offset {}", o);
                                taken[o as usize] = Some(member);
                            }
                            acked[member] = run.end();
                        }
                    }
                    Op::Change { members: mask } => {
                        if pending.is_none() {
                            install_rotation(g, &[]);
                        }
                        pending = Some((0..3).filter(|i| mask & (1 << i) != 0).collect());
                    }
                }
                if pending.is_some() && drained(&rotations, &acked) {
                    install(&pending.take().unwrap(), &mut rotations);
                }
            }
            // Everyone finishes what it was handed; nothing below the cursor is lost.
            for _ in 0..64 {
                for (i, m) in members.iter_mut().enumerate() {
                    if let Step::Take(run) = m.next_step(g, clients[i], cursor(g), u64::MAX) {
                        for j in 0..run.len {
                            let o = run.offset(j) as usize;
                            if taken.len() <= o {
                                taken.resize(o + 1, None);
                            }
                            prop_assert_eq!(taken[o], None);
                            taken[o] = Some(i);
                        }
                    }
                }
            }
            let c = cursor(g) as usize;
            prop_assert!(taken.len() <= c);
            prop_assert!(taken.iter().all(Option::is_some), "every handed-out offset taken");
        }
    }
}
