//! The byte layout of the region: `#[repr(C)]` structs of fixed-width atomics, their
//! sizes checked at compile time, and the offset of every table computed from the
//! [`Geometry`]. `docs/shm-layout.md` is the same table in prose; keep them in step.
//!
//! Every field another process may write concurrently is an atomic, so reading a
//! field can never be undefined behaviour, only a wrong value, which the readers
//! validate before use.

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::RobustMutex;

/// `"MINIKAFK"` read as a little-endian u64: the first word of every region.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MINIKAFK");
/// Bumped whenever any offset or field meaning below changes.
pub const LAYOUT_VERSION: u32 = 4;
/// Hot fields written by different processes sit on lines of their own; 128 bytes
/// because adjacent-line prefetch makes 64-byte neighbours share traffic on x86.
pub const LINE: usize = 128;
/// Longest client id or group name, in bytes.
pub const NAME_CAPACITY: usize = 64;

/// Upper bounds on the geometry, so that every size computation fits comfortably in
/// a u64 and a hostile header cannot ask for an absurd mapping.
pub mod limits {
    pub const MAX_SLOTS: u32 = 1 << 24;
    pub const MAX_SLOT_SIZE: u32 = 1 << 20;
    pub const MAX_MESSAGE: u32 = 1 << 30;
    pub const MAX_CLIENTS: u32 = 1 << 16;
    pub const MAX_GROUPS: u32 = 4096;
    pub const MAX_REDELIVERIES: u32 = 1 << 16;
    pub const MAX_REGION_BYTES: u64 = 64 << 30;
}

/// The shape of a region: everything needed to compute its offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Number of slots in the ring.
    pub slots: u32,
    /// Payload bytes per slot.
    pub slot_size: u32,
    /// Largest key + payload accepted, in bytes.
    pub max_message: u32,
    /// Entries in the client table.
    pub max_clients: u32,
    /// Entries in the group table.
    pub max_groups: u32,
    /// Redelivery entries per group.
    pub redeliveries_per_group: u32,
}

/// Why a geometry cannot describe a region.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    #[error("{field} must be between {min} and {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("a message of {max_message} bytes needs {needed} slots of {slot_size} bytes, but a ring of {slots} slots holds messages of at most {fits} slots")]
    MessageDoesNotFit {
        max_message: u32,
        slot_size: u32,
        slots: u32,
        needed: u64,
        fits: u64,
    },
    #[error("the region would need {0} bytes, more than the limit")]
    TooLarge(u64),
}

impl Geometry {
    /// Slots occupied by a record of `bytes` bytes (key + payload); at least one, so
    /// that every message, even an empty one, has a place and an offset.
    pub fn slots_for(&self, bytes: u64) -> u64 {
        let size = self.slot_size as u64;
        // A shift for the usual power-of-two slot size: this runs for every send.
        let slots = if size.is_power_of_two() {
            (bytes >> size.trailing_zeros()) + u64::from(bytes & (size - 1) != 0)
        } else {
            bytes.div_ceil(size)
        };
        slots.max(1)
    }

    /// The largest record, in slots, that can always be placed: at the wrap a
    /// reservation may have to skip up to `n - 1` slots, so `2n - 1 <= slots`.
    pub fn max_record_slots(&self) -> u64 {
        (self.slots as u64).div_ceil(2)
    }

    /// The largest `max_message` this ring can hold.
    pub fn largest_message_that_fits(&self) -> u64 {
        self.max_record_slots() * self.slot_size as u64
    }

    /// Checks every field's range and that `max_message` fits in the ring.
    pub fn validate(&self) -> Result<Layout, GeometryError> {
        use limits::*;
        range("slots", self.slots as u64, 2, MAX_SLOTS as u64)?;
        range("slot size", self.slot_size as u64, 8, MAX_SLOT_SIZE as u64)?;
        range(
            "max message",
            self.max_message as u64,
            0,
            MAX_MESSAGE as u64,
        )?;
        range(
            "max clients",
            self.max_clients as u64,
            1,
            MAX_CLIENTS as u64,
        )?;
        range("max groups", self.max_groups as u64, 1, MAX_GROUPS as u64)?;
        range(
            "redeliveries per group",
            self.redeliveries_per_group as u64,
            1,
            MAX_REDELIVERIES as u64,
        )?;
        let needed = self.slots_for(self.max_message as u64);
        if needed > self.max_record_slots() {
            return Err(GeometryError::MessageDoesNotFit {
                max_message: self.max_message,
                slot_size: self.slot_size,
                slots: self.slots,
                needed,
                fits: self.max_record_slots(),
            });
        }
        Layout::compute(self)
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), GeometryError> {
    if value < min || value > max {
        return Err(GeometryError::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Byte offsets of each table, derived from a validated [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub clients: u64,
    pub groups: u64,
    pub redeliveries: u64,
    pub index: u64,
    pub descriptors: u64,
    pub payload: u64,
    pub total: u64,
}

impl Layout {
    fn compute(g: &Geometry) -> Result<Layout, GeometryError> {
        let align = |x: u64| x.div_ceil(LINE as u64) * LINE as u64;
        let clients = align(size_of::<Header>() as u64);
        let groups = align(clients + g.max_clients as u64 * size_of::<ClientEntry>() as u64);
        let redeliveries = align(groups + g.max_groups as u64 * size_of::<GroupEntry>() as u64);
        let index = align(
            redeliveries
                + g.max_groups as u64
                    * g.redeliveries_per_group as u64
                    * size_of::<RedeliveryEntry>() as u64,
        );
        let descriptors = align(index + g.slots as u64 * size_of::<IndexEntry>() as u64);
        let payload = align(descriptors + g.slots as u64 * size_of::<AtomicU64>() as u64);
        let end = payload + g.slots as u64 * g.slot_size as u64;
        let total = end.div_ceil(4096) * 4096;
        if total > limits::MAX_REGION_BYTES {
            return Err(GeometryError::TooLarge(total));
        }
        Ok(Layout {
            clients,
            groups,
            redeliveries,
            index,
            descriptors,
            payload,
            total,
        })
    }
}

/// A futex word and the number of processes asleep on it. Posters skip the wake
/// syscall while `sleepers` is zero; see [`crate::event`].
#[repr(C, align(128))]
pub struct EventWord {
    pub seq: AtomicU32,
    pub sleepers: AtomicU32,
}

/// Identity and geometry: written once by the broker before `version` is published.
#[repr(C, align(128))]
pub struct Identity {
    pub magic: AtomicU64,
    /// Written last, with Release; pairs with the Acquire load in `Region::open`.
    pub version: AtomicU32,
    pub broker_pid: AtomicU32,
    pub slots: AtomicU32,
    pub slot_size: AtomicU32,
    pub max_message: AtomicU32,
    pub max_clients: AtomicU32,
    pub max_groups: AtomicU32,
    pub redeliveries_per_group: AtomicU32,
    pub region_size: AtomicU64,
    /// Incremented each time a broker (re)initialises or reattaches the region.
    pub generation: AtomicU64,
    /// Random secret a TCP peer presents at registration to prove it can map the region.
    pub token: [AtomicU64; 2],
    /// Non-zero once the broker is stopping: every waiter gives up.
    pub closing: AtomicU32,
    /// Whether producers may send, one of [`admission`]: they wait while the broker
    /// replays records after a restart, and are refused once it found the region
    /// corrupt.
    pub paused: AtomicU32,
    /// Broker only: where this broker's lines in `log_consumo.txt` begin (see
    /// `Region::record_log_start`); 0 when not
    /// recorded.
    pub log_start: AtomicU64,
}

/// Values of `Identity::paused`.
pub mod admission {
    pub const OPEN: u32 = 0;
    /// The broker replays records after a restart: producers wait.
    pub const REPLAYING: u32 = 1;
    /// The broker found the region corrupt: every send fails until it restarts.
    pub const REFUSING: u32 = 2;
}

/// The ring's producer side, protected by `Header::ring_lock`.
#[repr(C, align(128))]
pub struct ProducerCursor {
    /// Next slot position to reserve (monotonic; slot index = position % slots).
    pub head: AtomicU64,
    /// Next offset to assign; all offsets below it are committed.
    pub next_offset: AtomicU64,
}

/// The ring's reclaim side, written by the broker only: by whichever of its
/// threads frees slots (the cleaner, or a writer that just wrote a buffer), one at
/// a time.
#[repr(C, align(128))]
pub struct ReclaimCursor {
    /// Oldest slot position still in use; `head - tail` slots are occupied.
    pub tail: AtomicU64,
    /// Every offset below this has been freed.
    pub freed_offset: AtomicU64,
}

#[repr(C, align(128))]
pub struct LockLine {
    pub mutex: RobustMutex,
}

/// Written by the broker's persistence writer.
#[repr(C, align(128))]
pub struct DurableCursor {
    /// Every offset below this is in `persistencia_mensajes.txt` (on disk under `--fsync`).
    pub persisted: AtomicU64,
    /// Non-zero when the broker runs with `--fsync`: a send waits for `persisted`.
    pub fsync: AtomicU32,
}

/// How many rings (topic-partitions) the pending set can name: the most
/// `--max-partitions` allows.
pub const MAX_RINGS: u32 = 4096;

/// The rings with records the broker has not looked at yet, one bit per ring
/// number (the broker numbers topic-partitions; ring 0, `default`/0, is never
/// marked: the broker always looks at it). Producers of other rings set their
/// ring's bit after a commit, the broker's persister takes the bits: an idle ring
/// costs it nothing. Only meaningful in the control region.
#[repr(C, align(128))]
pub struct PendingRings {
    pub words: [AtomicU64; MAX_RINGS as usize / 64],
}

/// The first bytes of the region.
#[repr(C)]
pub struct Header {
    pub identity: Identity,
    pub ring_lock: LockLine,
    pub producer: ProducerCursor,
    pub reclaim: ReclaimCursor,
    /// Consumers sleep here waiting for a commit.
    pub published: EventWord,
    /// Producers sleep here waiting for free slots.
    pub space: EventWord,
    /// The cleaner sleeps here; producers short of space wake it.
    pub cleaner: EventWord,
    pub durable: DurableCursor,
    /// Producers under `--fsync` sleep here waiting for `durable.persisted`.
    pub persisted: EventWord,
    pub pending: PendingRings,
}

/// Client table entry roles (`ClientIdentity::role`).
pub mod client_role {
    pub const PRODUCER: u32 = 1;
    pub const CONSUMER: u32 = 2;
    pub const ADMIN: u32 = 3;
    /// A standalone reader (SPEC §10): no group, holds nothing back.
    pub const READER: u32 = 4;
}

/// Client table entry states.
pub mod client_state {
    pub const FREE: u32 = 0;
    pub const ACTIVE: u32 = 1;
    /// Removed by the broker (gone or evicted); the process must stop using the region.
    pub const REMOVED: u32 = 2;
}

/// Written by the broker when a client registers.
#[repr(C, align(128))]
pub struct ClientIdentity {
    pub state: AtomicU32,
    pub role: AtomicU32,
    pub generation: AtomicU32,
    pub pid: AtomicU32,
    pub group: AtomicU32,
    pub id_len: AtomicU32,
    /// Per epoch parity: `VALID(1) << 63 | (epoch << 32) | rank` of this consumer in
    /// its group's rotation (0: none; `REVOKED(1) << 62` instead of `VALID` once the
    /// broker removed it); see [`crate::group`].
    pub rank: [AtomicU64; 2],
    pub id: [AtomicU64; 8],
}

/// Written by the client itself.
#[repr(C, align(128))]
pub struct ClientActivity {
    /// Consumers: every offset this consumer was handed first below this is acknowledged.
    pub ack_upto: AtomicU64,
    /// CLOCK_MONOTONIC milliseconds of the last poll (consumers) or send (producers).
    pub last_active_ms: AtomicU64,
    /// 1 + the event this client is asleep on, or 0: lets the broker repair sleeper
    /// counts when a client dies asleep.
    pub sleeping_on: AtomicU32,
    /// Polls made (consumers) or messages sent (producers) so far: the broker
    /// samples it for rates and the age of a consumer's last poll, so that the
    /// poll path reads no clock for them.
    pub progress: AtomicU64,
}

/// Runs a reader's journal holds (see [`crate::journal`]).
pub const JOURNAL_RUNS: usize = 4;

/// One run of offsets a standalone reader returned: `[from, upto)` of one
/// topic-partition.
#[repr(C)]
pub struct JournalRun {
    /// `topic id << 32 | partition`.
    pub partition: AtomicU64,
    pub from: AtomicU64,
    /// Extended by the reader, with Release, as its polls return more.
    pub upto: AtomicU64,
}

/// A standalone reader's journal of what its polls returned, which the broker turns
/// into consumption-log lines (see [`crate::journal`]). Unused by other roles.
#[repr(C, align(128))]
pub struct ReadJournal {
    /// Reader: runs opened so far; run `n` lives at `runs[n % JOURNAL_RUNS]`.
    pub opened: AtomicU64,
    /// Broker: every run below this is in the log file (its slot may be reused).
    pub logged_runs: AtomicU64,
    /// Broker: in run `logged_runs`, every offset below this is in the log file.
    pub logged_upto: AtomicU64,
    /// Broker: messages of this journal turned into log lines so far (written or
    /// not): the reader paces itself by it.
    pub drained: AtomicU64,
    pub runs: [JournalRun; JOURNAL_RUNS],
}

#[repr(C)]
pub struct ClientEntry {
    pub identity: ClientIdentity,
    pub activity: ClientActivity,
    pub journal: ReadJournal,
}

/// One half of a group's double-buffered rotation; which half is live is the parity
/// of the epoch in `GroupEntry::turn`.
#[repr(C)]
pub struct Rotation {
    /// `VALID(1) << 63 | (epoch << 32) | member count` (0: none; see [`crate::group`]).
    pub meta: AtomicU64,
    /// First offset handed out under this rotation.
    pub start: AtomicU64,
}

pub mod group_state {
    pub const FREE: u32 = 0;
    pub const ACTIVE: u32 = 1;
}

/// Claimed by consumers; packs `(cursor << 16) | epoch`, see [`crate::group`].
#[repr(C, align(128))]
pub struct TurnLine {
    pub turn: AtomicU64,
}

#[repr(C, align(128))]
pub struct GroupMeta {
    pub rotation: [Rotation; 2],
    pub state: AtomicU32,
    pub name_len: AtomicU32,
    /// Number of redelivery entries that may be pending: a hint that lets consumers
    /// skip scanning the redelivery table while it is zero.
    pub redeliveries: AtomicU32,
    pub name: [AtomicU64; 8],
    /// Broker only: the first offset this broker hands the group, and the offset
    /// below which its first deliveries are redeliveries (attempt 2); see
    /// `crate::group::record_start`. 0 when not recorded.
    pub first_offset: AtomicU64,
    pub redeliver_below: AtomicU64,
}

#[repr(C)]
pub struct GroupEntry {
    pub turn: TurnLine,
    pub meta: GroupMeta,
    /// Consumers of this group sleep here waiting for their turn.
    pub turn_event: EventWord,
}

/// A message handed to a group again after the consumer holding it left.
#[repr(C)]
pub struct RedeliveryEntry {
    pub offset: AtomicU64,
    /// `(kind << 56) | (attempt << 32) | claimer`, kinds in [`redelivery`].
    pub state: AtomicU64,
}

pub mod redelivery {
    pub const FREE: u64 = 0;
    pub const PENDING: u64 = 1;
    pub const CLAIMED: u64 = 2;
    pub const ACKED: u64 = 3;

    pub fn pack(kind: u64, attempt: u32, claimer: u32) -> u64 {
        (kind << 56) | ((attempt as u64 & 0xFF_FFFF) << 32) | claimer as u64
    }
    pub fn kind(state: u64) -> u64 {
        state >> 56
    }
    pub fn attempt(state: u64) -> u32 {
        ((state >> 32) & 0xFF_FFFF) as u32
    }
    pub fn claimer(state: u64) -> u32 {
        state as u32
    }
    /// Marks an offer's attempt when its record had left the ring when offered (a
    /// group catching up from the file): a claimer reads it from the persistence
    /// file. Kept with the attempt through claims, acknowledgements and offers
    /// again; never shown (see [`attempt_number`]).
    pub const FROM_FILE: u32 = 1 << 23;
    /// The attempt as logged and shown: without [`FROM_FILE`].
    pub fn attempt_number(attempt: u32) -> u32 {
        attempt & !FROM_FILE
    }
    /// Whether an offer's record is to be read from the persistence file.
    pub fn is_from_file(attempt: u32) -> bool {
        attempt & FROM_FILE != 0
    }
}

/// Where offset `o` lives: `index[o % slots]`, valid while `stamp == o + 1`.
#[repr(C, align(64))]
pub struct IndexEntry {
    /// `offset + 1` once committed: the commit point, written last with Release.
    pub stamp: AtomicU64,
    /// Slot position of the record's first slot.
    pub first_slot: AtomicU64,
    pub timestamp_us: AtomicU64,
    /// Key length, or [`NO_KEY`].
    pub key_len: AtomicU32,
    pub payload_len: AtomicU32,
    pub producer: AtomicU32,
    pub producer_generation: AtomicU32,
    /// Bytes of the record's headers, after its payload (Kafka's record header
    /// encoding: a varint count, then each header); 0 without headers. Was
    /// padding before headers existed, so an older region reads as none.
    pub headers_len: AtomicU32,
}

/// `IndexEntry::key_len` of a message sent without a key.
pub const NO_KEY: u32 = u32::MAX;

/// Slot descriptors: one `AtomicU64` per slot, meaningful at the first slot of each
/// allocation: `(kind << 56) | (owner << 32) | length in slots`.
pub mod descriptor {
    pub const FREE: u64 = 0;
    pub const RESERVED: u64 = 1;
    pub const COMMITTED: u64 = 2;
    pub const PADDING: u64 = 3;

    pub fn pack(kind: u64, owner: u32, len: u32) -> u64 {
        (kind << 56) | ((owner as u64 & 0xFF_FFFF) << 32) | len as u64
    }
    pub fn kind(d: u64) -> u64 {
        d >> 56
    }
    pub fn owner(d: u64) -> u32 {
        ((d >> 32) & 0xFF_FFFF) as u32
    }
    pub fn len(d: u64) -> u32 {
        d as u32
    }
}

const _: () = assert!(size_of::<EventWord>() == LINE);
const _: () = assert!(size_of::<Identity>() == LINE);
const _: () = assert!(size_of::<LockLine>() == LINE);
const _: () = assert!(size_of::<ProducerCursor>() == LINE);
const _: () = assert!(size_of::<ReclaimCursor>() == LINE);
const _: () = assert!(size_of::<Header>() == 13 * LINE);
const _: () = assert!(std::mem::offset_of!(Header, pending) == 9 * LINE);
const _: () = assert!(size_of::<PendingRings>() == 4 * LINE);
const _: () = assert!(std::mem::offset_of!(Header, durable) == 7 * LINE);
const _: () = assert!(std::mem::offset_of!(Identity, paused) == 76);
const _: () = assert!(std::mem::offset_of!(Header, producer) == 2 * LINE);
const _: () = assert!(std::mem::offset_of!(Header, reclaim) == 3 * LINE);
const _: () = assert!(std::mem::offset_of!(Header, published) == 4 * LINE);
const _: () = assert!(size_of::<ClientEntry>() == 3 * LINE);
const _: () = assert!(size_of::<ReadJournal>() == LINE);
const _: () = assert!(std::mem::offset_of!(ClientEntry, journal) == 2 * LINE);
const _: () = assert!(std::mem::offset_of!(ReadJournal, runs) == 32);
const _: () = assert!(size_of::<JournalRun>() == 24);
const _: () = assert!(std::mem::offset_of!(ClientEntry, activity) == LINE);
const _: () = assert!(size_of::<GroupEntry>() == 3 * LINE);
const _: () = assert!(std::mem::offset_of!(GroupEntry, turn_event) == 2 * LINE);
const _: () = assert!(size_of::<RedeliveryEntry>() == 16);
const _: () = assert!(size_of::<IndexEntry>() == 64);
const _: () = assert!(align_of::<Header>() == LINE);
// Field offsets documented in docs/shm-layout.md.
const _: () = assert!(std::mem::offset_of!(Identity, version) == 8);
const _: () = assert!(std::mem::offset_of!(Identity, region_size) == 40);
const _: () = assert!(std::mem::offset_of!(Identity, token) == 56);
const _: () = assert!(std::mem::offset_of!(Identity, closing) == 72);
const _: () = assert!(std::mem::offset_of!(Identity, log_start) == 80);
const _: () = assert!(std::mem::offset_of!(GroupEntry, meta) == LINE);
const _: () = assert!(std::mem::offset_of!(GroupMeta, first_offset) == 112);
const _: () = assert!(std::mem::offset_of!(GroupMeta, redeliver_below) == 120);
const _: () = assert!(std::mem::offset_of!(ClientIdentity, rank) == 24);
const _: () = assert!(std::mem::offset_of!(ClientIdentity, id) == 40);
const _: () = assert!(std::mem::offset_of!(ClientActivity, sleeping_on) == 16);
const _: () = assert!(std::mem::offset_of!(ClientActivity, progress) == 24);
const _: () = assert!(std::mem::offset_of!(GroupEntry, meta) == LINE);
const _: () = assert!(std::mem::offset_of!(GroupMeta, state) == 32);
const _: () = assert!(std::mem::offset_of!(GroupMeta, name) == 48);
const _: () = assert!(std::mem::offset_of!(IndexEntry, key_len) == 24);
const _: () = assert!(std::mem::offset_of!(IndexEntry, producer) == 32);
const _: () = assert!(std::mem::offset_of!(IndexEntry, headers_len) == 40);
const _: () = assert!(size_of::<libc::pthread_mutex_t>() <= LINE);

#[cfg(test)]
mod tests {
    use super::*;

    fn default_geometry() -> Geometry {
        Geometry {
            slots: 4096,
            slot_size: 1024,
            max_message: 1 << 20,
            max_clients: 1024,
            max_groups: 64,
            redeliveries_per_group: 256,
        }
    }

    proptest::proptest! {
        #[test]
        fn slots_for_rounds_up_for_every_slot_size(bytes in 0u64..1 << 40, size in 8u32..5000) {
            let g = Geometry { slot_size: size, ..default_geometry() };
            proptest::prop_assert_eq!(g.slots_for(bytes), bytes.div_ceil(size as u64).max(1));
            let p = Geometry { slot_size: size.next_power_of_two(), ..default_geometry() };
            let expected = bytes.div_ceil(p.slot_size as u64).max(1);
            proptest::prop_assert_eq!(p.slots_for(bytes), expected);
        }
    }

    #[test]
    fn the_documented_layout_version_is_the_one_in_the_code() {
        let doc = include_str!("../../docs/shm-layout.md");
        let title = doc.lines().next().unwrap_or("");
        assert_eq!(
            title,
            format!("# The shared-memory region, layout version {LAYOUT_VERSION}"),
            "docs/shm-layout.md describes another layout version"
        );
    }

    #[test]
    fn default_geometry_is_valid_and_tables_do_not_overlap() {
        let g = default_geometry();
        let l = g.validate().unwrap();
        assert!(l.clients >= size_of::<Header>() as u64);
        assert!(l.groups >= l.clients + 1024 * size_of::<ClientEntry>() as u64);
        assert!(l.payload >= l.descriptors + 4096 * 8);
        assert_eq!(l.total % 4096, 0);
        assert!(l.total >= l.payload + 4096 * 1024);
        assert_eq!(l.payload % LINE as u64, 0);
    }

    #[test]
    fn a_message_larger_than_half_the_ring_does_not_fit() {
        let mut g = default_geometry();
        g.slots = 16;
        assert!(matches!(
            g.validate(),
            Err(GeometryError::MessageDoesNotFit { .. })
        ));
        g.max_message = 8 * 1024;
        assert!(g.validate().is_ok());
        g.max_message = 8 * 1024 + 1;
        assert!(g.validate().is_err());
    }

    #[test]
    fn empty_messages_take_one_slot() {
        let g = default_geometry();
        assert_eq!(g.slots_for(0), 1);
        assert_eq!(g.slots_for(1024), 1);
        assert_eq!(g.slots_for(1025), 2);
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let mut g = default_geometry();
        g.slots = 0;
        assert!(matches!(
            g.validate(),
            Err(GeometryError::OutOfRange { .. })
        ));
        let mut g = default_geometry();
        g.slot_size = u32::MAX;
        assert!(g.validate().is_err());
    }

    #[test]
    fn descriptor_and_redelivery_packing_round_trip() {
        let d = descriptor::pack(descriptor::RESERVED, 1023, 77);
        assert_eq!(descriptor::kind(d), descriptor::RESERVED);
        assert_eq!(descriptor::owner(d), 1023);
        assert_eq!(descriptor::len(d), 77);
        let r = redelivery::pack(redelivery::CLAIMED, 3, 9);
        assert_eq!(redelivery::kind(r), redelivery::CLAIMED);
        assert_eq!(redelivery::attempt(r), 3);
        assert_eq!(redelivery::claimer(r), 9);
    }
}
