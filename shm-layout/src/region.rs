//! The mapped region: creating it (broker), opening it (clients), and bounds-checked
//! access to its tables. Geometry is read once, validated, and cached here, so a
//! later scribble over the header cannot move any bound.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use crate::doorbell::Doorbell;
use crate::identity::{FieldName, IdentityCopy};
use crate::layout::{
    ClientEntry, EventWord, Geometry, GeometryError, GroupEntry, Header, IndexEntry, Layout,
    RedeliveryEntry, LAYOUT_VERSION, MAGIC, NAME_CAPACITY,
};
use crate::names::valid_shm_name;

/// Why a region could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The name is not `/` followed by 1–200 characters of `A-Z a-z 0-9 . _ -`.
    #[error("invalid shared-memory name {0:?} (expected '/' and up to 200 of A-Z a-z 0-9 . _ -)")]
    InvalidName(String),
    /// The geometry is out of range.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// A region with this name already exists.
    #[error("shared-memory region {0} already exists")]
    AlreadyExists(String),
    /// No region with this name exists.
    #[error("shared-memory region {0} does not exist")]
    NotFound(String),
    /// A system call failed.
    #[error("{op} {name}: {source}")]
    Io {
        op: &'static str,
        name: String,
        source: std::io::Error,
    },
    /// The region does not start with the magic word.
    #[error("region {0} is not a mini-kafka region (bad magic)")]
    BadMagic(String),
    /// The region has a layout version this build does not understand.
    #[error("region {name} has layout version {found}, this build understands {expected}")]
    VersionMismatch {
        name: String,
        found: u32,
        expected: u32,
    },
    /// The region's geometry differs from what the broker announced, or is invalid.
    #[error("region {name} has geometry {found}, expected {expected}")]
    GeometryMismatch {
        name: String,
        found: String,
        expected: String,
    },
    /// The shared-memory file system cannot hold the region: nothing was created.
    #[error("cannot create shared-memory region {name}: it needs {needed} bytes and /dev/shm has less free ({source}); free space there or use smaller --slots/--slot-size/--max-clients")]
    NoSpace {
        name: String,
        needed: u64,
        source: std::io::Error,
    },
    /// The file is smaller than its geometry requires.
    #[error("region {name} is {actual} bytes, its geometry needs {needed}")]
    Truncated {
        name: String,
        actual: u64,
        needed: u64,
    },
}

/// Who owns a region found under a name (see [`Region::owner_state`]).
#[derive(Debug)]
pub enum OwnerState {
    /// No region has that name.
    Absent,
    /// A running broker (this pid) owns it: it must not be touched.
    Alive { pid: u32 },
    /// Its broker is gone (or stopped, leaving it closing): it can be recovered.
    Dead(Region),
    /// It is not a region this build understands (bad magic, version or geometry,
    /// or too short): nothing in it can be read.
    Garbage(RegionError),
}

/// The broker's mapping of the region: the one it created, or the one a dead
/// broker left that it took over. The operations only the broker may do (closing,
/// admission, reclaiming, repairs, offering redeliveries, the identity line) are
/// methods of this type alone; everything else is the [`Region`]'s it derefs to.
/// Clients open a `Region`, so they cannot call them:
///
/// ```compile_fail
/// fn client(region: &shm_layout::Region) {
///     region.mark_closing();
/// }
/// ```
#[derive(Debug)]
pub struct BrokerRegion(Region);

impl std::ops::Deref for BrokerRegion {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.0
    }
}

impl BrokerRegion {
    /// Takes over a region whose broker died (see [`Region::owner_state`]), to
    /// recover it.
    pub fn take_over(region: Region) -> BrokerRegion {
        BrokerRegion(region)
    }

    /// The control region's pending set: the numbers of the rings marked since the
    /// last take, ascending, into `rings` (see [`crate::doorbell`]).
    pub fn take_pending(&self, rings: &mut Vec<u32>) {
        crate::doorbell::take_pending(self.header(), rings);
    }

    /// Marks ring `ring` in the control region's pending set (see
    /// [`crate::doorbell`]): the persister looks at it on its next pass.
    pub fn mark_ring_pending(&self, ring: u32) {
        crate::doorbell::mark_pending(self.header(), ring);
    }
}

/// A mapping of the region.
pub struct Region {
    map: MmapRaw,
    geometry: Geometry,
    layout: Layout,
    name: String,
    /// The identity line as the broker that created this mapping wrote it (None in
    /// a mapping that opened an existing region: clients, or a recovering broker).
    identity: Option<IdentityCopy>,
    /// In a topic-partition's region other than the control region: the link to
    /// the broker's pending set and wake-up word (see [`crate::doorbell`]).
    doorbell: Option<Doorbell>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("geometry", &self.geometry)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(nix::Error) -> RegionError + 'a {
    move |e| RegionError::Io {
        op,
        name: name.to_string(),
        source: std::io::Error::from(e),
    }
}

impl Region {
    /// Creates a new region owner-only (0600), sizes and maps it, initialises every
    /// table and the ring lock, writes the random access `token`, and publishes the
    /// layout version last.
    pub fn create(
        name: &str,
        geometry: Geometry,
        token: [u64; 2],
        broker_pid: u32,
    ) -> Result<BrokerRegion, RegionError> {
        if !valid_shm_name(name) {
            return Err(RegionError::InvalidName(name.to_string()));
        }
        let layout = geometry.validate()?;
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| match e {
            nix::Error::EEXIST => RegionError::AlreadyExists(name.to_string()),
            other => io_err("shm_open", name)(other),
        })?;
        let built = (|| {
            nix::sys::stat::fchmod(&fd, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(io_err("fchmod", name))?;
            reserve(&fd, layout.total, name)?;
            let map = map_fd(&fd, layout.total, name)?;
            let mut region = Region {
                map,
                geometry,
                layout,
                name: name.to_string(),
                identity: None,
                doorbell: None,
            };
            region.initialise(token, broker_pid)?;
            region.identity = Some(IdentityCopy::of(&region.header().identity));
            Ok(BrokerRegion(region))
        })();
        if built.is_err() {
            let _ = shm_unlink(name);
        }
        built
    }

    /// Opens an existing region and checks its magic, version and geometry.
    pub fn open(name: &str) -> Result<Region, RegionError> {
        if !valid_shm_name(name) {
            return Err(RegionError::InvalidName(name.to_string()));
        }
        let fd = shm_open(name, OFlag::O_RDWR, Mode::empty()).map_err(|e| match e {
            nix::Error::ENOENT => RegionError::NotFound(name.to_string()),
            other => io_err("shm_open", name)(other),
        })?;
        let stat = nix::sys::stat::fstat(&fd).map_err(io_err("fstat", name))?;
        let actual = stat.st_size.max(0) as u64;
        let header_size = std::mem::size_of::<Header>() as u64;
        if actual < header_size {
            return Err(RegionError::Truncated {
                name: name.to_string(),
                actual,
                needed: header_size,
            });
        }
        let map = map_fd(&fd, actual, name)?;
        // SAFETY: the mapping is at least one header long and page aligned.
        let header = unsafe { &*(map.as_ptr() as *const Header) };
        let id = &header.identity;
        // Acquire pairs with the Release store of `version` in `initialise`: once the
        // version is visible, so is every field written before it.
        let version = id.version.load(Ordering::Acquire);
        if id.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(RegionError::BadMagic(name.to_string()));
        }
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch {
                name: name.to_string(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let geometry = Geometry {
            slots: id.slots.load(Ordering::Relaxed),
            slot_size: id.slot_size.load(Ordering::Relaxed),
            max_message: id.max_message.load(Ordering::Relaxed),
            max_clients: id.max_clients.load(Ordering::Relaxed),
            max_groups: id.max_groups.load(Ordering::Relaxed),
            redeliveries_per_group: id.redeliveries_per_group.load(Ordering::Relaxed),
        };
        let layout = geometry
            .validate()
            .map_err(|e| RegionError::GeometryMismatch {
                name: name.to_string(),
                found: format!("{geometry:?}"),
                expected: format!("a valid geometry ({e})"),
            })?;
        if actual < layout.total {
            return Err(RegionError::Truncated {
                name: name.to_string(),
                actual,
                needed: layout.total,
            });
        }
        Ok(Region {
            map,
            geometry,
            layout,
            name: name.to_string(),
            identity: None,
            doorbell: None,
        })
    }

    /// Who owns the region named `name`: the one check, before a broker touches a
    /// region it did not create, of whether the broker that did is still running.
    /// A region marked closing belongs to nobody (its broker stopped, or is
    /// stopping, and left it for the next start).
    pub fn owner_state(name: &str) -> Result<OwnerState, RegionError> {
        let region = match Region::open(name) {
            Ok(r) => r,
            Err(RegionError::NotFound(_)) => return Ok(OwnerState::Absent),
            Err(
                e @ (RegionError::BadMagic(_)
                | RegionError::VersionMismatch { .. }
                | RegionError::GeometryMismatch { .. }
                | RegionError::Truncated { .. }),
            ) => return Ok(OwnerState::Garbage(e)),
            Err(e) => return Err(e),
        };
        let pid = region.broker_pid();
        if pid != std::process::id() && crate::sys::process_exists(pid) && !region.is_closing() {
            return Ok(OwnerState::Alive { pid });
        }
        Ok(OwnerState::Dead(region))
    }

    /// Opens a region and insists on the geometry the broker announced.
    pub fn open_expecting(name: &str, expected: &Geometry) -> Result<Region, RegionError> {
        let region = Region::open(name)?;
        if region.geometry != *expected {
            return Err(RegionError::GeometryMismatch {
                name: name.to_string(),
                found: format!("{:?}", region.geometry),
                expected: format!("{expected:?}"),
            });
        }
        Ok(region)
    }

    /// Removes the name; existing mappings stay valid until unmapped.
    pub fn unlink(name: &str) -> Result<(), RegionError> {
        shm_unlink(name).map_err(|e| match e {
            nix::Error::ENOENT => RegionError::NotFound(name.to_string()),
            other => io_err("shm_unlink", name)(other),
        })
    }

    fn initialise(&self, token: [u64; 2], broker_pid: u32) -> Result<(), RegionError> {
        let id = &self.header().identity;
        let g = &self.geometry;
        id.magic.store(MAGIC, Ordering::Relaxed);
        id.broker_pid.store(broker_pid, Ordering::Relaxed);
        id.slots.store(g.slots, Ordering::Relaxed);
        id.slot_size.store(g.slot_size, Ordering::Relaxed);
        id.max_message.store(g.max_message, Ordering::Relaxed);
        id.max_clients.store(g.max_clients, Ordering::Relaxed);
        id.max_groups.store(g.max_groups, Ordering::Relaxed);
        id.redeliveries_per_group
            .store(g.redeliveries_per_group, Ordering::Relaxed);
        id.region_size.store(self.layout.total, Ordering::Relaxed);
        id.generation.fetch_add(1, Ordering::Relaxed);
        id.token[0].store(token[0], Ordering::Relaxed);
        id.token[1].store(token[1], Ordering::Relaxed);
        // SAFETY: the region was just created with O_EXCL and is not yet published
        // (version is still 0), so no other process can be using the mutex.
        unsafe { self.header().ring_lock.mutex.init() }.map_err(|source| RegionError::Io {
            op: "pthread_mutex_init",
            name: self.name.clone(),
            source,
        })?;
        // Release pairs with the Acquire load in `open`: publishes everything above.
        id.version.store(LAYOUT_VERSION, Ordering::Release);
        Ok(())
    }

    /// The region's name, e.g. `/minikafka-4444`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The geometry validated when the region was created or opened.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The table offsets.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The region's header.
    /// Links this mapping, the region of a topic-partition other than the control
    /// region's own, to the control region: its commits mark the ring pending and
    /// its nudges wake the broker there.
    pub fn ring_doorbell(mut self, doorbell: Doorbell) -> Region {
        self.doorbell = Some(doorbell);
        self
    }

    /// After commits, or before waiting for the broker: tells it to look at this
    /// ring (a partition region only; the broker always looks at the control
    /// region's).
    pub(crate) fn mark_pending(&self) {
        if let Some(d) = &self.doorbell {
            d.ring();
        }
    }

    /// The event the broker's persister and cleaner sleep on, which producers of
    /// this ring bump to ask for a pass.
    pub(crate) fn broker_event(&self) -> &EventWord {
        match &self.doorbell {
            Some(d) => d.broker_event(),
            None => &self.header().cleaner,
        }
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `layout.total >= size_of::<Header>()` bytes,
        // page aligned, and every field of Header is an atomic or the pthread mutex,
        // so shared references are sound while other processes write it.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The access token written by the broker.
    pub fn token(&self) -> [u64; 2] {
        let t = &self.header().identity.token;
        [t[0].load(Ordering::Relaxed), t[1].load(Ordering::Relaxed)]
    }

    /// The pid of the broker that created the region.
    pub fn broker_pid(&self) -> u32 {
        self.header().identity.broker_pid.load(Ordering::Relaxed)
    }

    /// Whether the broker has started stopping.
    pub fn is_closing(&self) -> bool {
        // SeqCst: a consumer's check after a take pairs with the broker's fence
        // before its last pass (see the consumer's `poll_batch`).
        self.header().identity.closing.load(Ordering::SeqCst) != 0
    }
}

impl BrokerRegion {
    /// As [`Region::ring_doorbell`], for the broker's own mapping of a
    /// partition's ring: its sends there (dead letters, Kafka produces) mark the
    /// ring pending and nudge the persister as a producer's do.
    pub fn ring_doorbell(self, doorbell: Doorbell) -> BrokerRegion {
        BrokerRegion(self.0.ring_doorbell(doorbell))
    }

    /// Broker only, before it writes its first consumption-log line: records that
    /// its lines begin at byte `log_len` of `log_consumo.txt`. The broker that
    /// recovers this region after a crash reads the log back only to there, so it
    /// never mistakes an earlier run's line for one of this broker's.
    pub fn record_log_start(&self, log_len: u64) {
        if let Some(copy) = &self.0.identity {
            copy.log_start.store(RECORDED | log_len, Ordering::Release);
        }
        self.header()
            .identity
            .log_start
            .store(RECORDED | log_len, Ordering::Release);
    }

    /// Broker only: whether a send waits until its record is on disk (`--fsync`).
    pub fn set_fsync(&self, on: bool) {
        self.header()
            .durable
            .fsync
            .store(on as u32, Ordering::Release);
    }

    /// Broker only: every offset below `mark` is now in the persistence file (on
    /// disk under `--fsync`); wakes producers waiting for it.
    pub fn publish_persisted(&self, mark: u64) {
        let h = self.header();
        h.durable.persisted.store(mark, Ordering::Release);
        crate::event::notify(&h.persisted);
    }

    /// Broker only: marks the region closing (every waiter gives up, and clients
    /// whose connection closes too stop) and wakes every waiter in it.
    pub fn mark_closing(&self) {
        if let Some(copy) = &self.0.identity {
            copy.closing.store(1, Ordering::Release);
        }
        let h = self.header();
        // SeqCst pairs with the fence a consumer takes before handing out what it took.
        h.identity.closing.store(1, Ordering::SeqCst);
        crate::event::wake(&h.published);
        crate::event::wake(&h.space);
        crate::event::wake(&h.cleaner);
        crate::event::wake(&h.persisted);
        for g in 0..self.geometry().max_groups {
            if let Some(e) = self.group(g) {
                crate::event::wake(&e.turn_event);
            }
        }
    }

    /// Broker only, once the region is marked closing and before its last look at
    /// what consumers took: the other half of [`Region::order_take_before_closing_check`].
    /// Either a consumer's check sees the closing mark (and hands nothing out), or
    /// the broker's last look sees its take (and logs it).
    pub fn fence_before_last_look(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

impl Region {
    /// Consumer, after a take and before checking the closing mark
    /// ([`Region::is_closing`], SeqCst): orders the two, pairing with
    /// `Region::fence_before_last_look`. Not needed when the take was the
    /// consumer's own SeqCst advance of its group's cursor, which orders them
    /// already (a fence costs tens of cycles on every message).
    #[inline]
    pub fn order_take_before_closing_check(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

impl BrokerRegion {
    /// Broker only, in the mapping that created the region: writes back every field
    /// of the identity line that another process overwrote (see
    /// [`crate::identity`]); returns their names.
    pub fn restore_identity(&self) -> Vec<FieldName> {
        match &self.0.identity {
            Some(copy) => copy.restore(&self.header().identity),
            None => Vec::new(),
        }
    }
}

impl Region {
    /// The broker's copy of the identity line, in the mapping that created it.
    pub(crate) fn identity_copy(&self) -> Option<&IdentityCopy> {
        self.identity.as_ref()
    }

    /// Where the broker that owned this region began writing `log_consumo.txt`, if
    /// it recorded it (a region from an earlier build did not).
    pub fn recorded_log_start(&self) -> Option<u64> {
        let word = self.header().identity.log_start.load(Ordering::Acquire);
        (word & RECORDED != 0).then_some(word & !RECORDED)
    }

    /// Client table entry `i`, if `i < max_clients`.
    pub fn client(&self, i: u32) -> Option<&ClientEntry> {
        if i >= self.geometry.max_clients {
            return None;
        }
        let off = self.layout.clients + i as u64 * std::mem::size_of::<ClientEntry>() as u64;
        // SAFETY: `i` is in bounds, so the entry lies inside the client table, which
        // lies inside the mapping; the offset is 128-aligned; all fields are atomics.
        Some(unsafe { &*(self.map.as_ptr().add(off as usize) as *const ClientEntry) })
    }

    /// Group table entry `i`, if `i < max_groups`.
    pub fn group(&self, i: u32) -> Option<&GroupEntry> {
        if i >= self.geometry.max_groups {
            return None;
        }
        let off = self.layout.groups + i as u64 * std::mem::size_of::<GroupEntry>() as u64;
        // SAFETY: as for `client`: in bounds, aligned, atomics only.
        Some(unsafe { &*(self.map.as_ptr().add(off as usize) as *const GroupEntry) })
    }

    /// Redelivery entry `i` of group `g`, if both are in bounds.
    pub fn redelivery(&self, g: u32, i: u32) -> Option<&RedeliveryEntry> {
        if g >= self.geometry.max_groups || i >= self.geometry.redeliveries_per_group {
            return None;
        }
        let n = g as u64 * self.geometry.redeliveries_per_group as u64 + i as u64;
        let off = self.layout.redeliveries + n * std::mem::size_of::<RedeliveryEntry>() as u64;
        // SAFETY: as for `client`: in bounds, aligned, atomics only.
        Some(unsafe { &*(self.map.as_ptr().add(off as usize) as *const RedeliveryEntry) })
    }

    /// `position` modulo the ring's slot count: a mask when the count is a power of
    /// two (as by default), since a division costs tens of cycles and this runs
    /// several times per message.
    #[inline]
    pub(crate) fn ring_index(&self, position: u64) -> u64 {
        let slots = self.geometry.slots as u64;
        if slots.is_power_of_two() {
            position & (slots - 1)
        } else {
            position % slots
        }
    }

    /// The index entry where `offset` lives (or will live).
    pub fn index_entry(&self, offset: u64) -> &IndexEntry {
        let i = self.ring_index(offset);
        let off = self.layout.index + i * std::mem::size_of::<IndexEntry>() as u64;
        // SAFETY: `i < slots`, so the entry is inside the index table; 64-aligned.
        unsafe { &*(self.map.as_ptr().add(off as usize) as *const IndexEntry) }
    }

    /// The descriptor of the slot at `position`.
    pub fn descriptor(&self, position: u64) -> &AtomicU64 {
        let i = self.ring_index(position);
        let off = self.layout.descriptors + i * 8;
        // SAFETY: `i < slots`, so the word is inside the descriptor table; 8-aligned.
        unsafe { &*(self.map.as_ptr().add(off as usize) as *const AtomicU64) }
    }

    /// The id in client entry `client`, if it still belongs to the registration of
    /// `generation` and holds a valid name.
    pub fn client_name(&self, client: u32, generation: u32) -> Option<String> {
        let idn = &self.client(client)?.identity;
        if idn.generation.load(Ordering::Acquire) != generation {
            return None;
        }
        // A client's, or a producer the broker stands in for (dead letters).
        let name = read_raw_name(&idn.id, idn.id_len.load(Ordering::Acquire))?;
        let valid = crate::names::check_name("id", &name).is_ok()
            || crate::names::check_stand_in_id(&name).is_ok();
        valid.then_some(name)
    }

    /// The name of group entry `g`, if it is active and holds a valid name.
    pub fn group_name(&self, g: u32) -> Option<String> {
        let meta = &self.group(g)?.meta;
        if meta.state.load(Ordering::Acquire) != crate::layout::group_state::ACTIVE {
            return None;
        }
        read_name(&meta.name, meta.name_len.load(Ordering::Acquire))
    }

    /// Address of the slot at `position` (any position: it is taken modulo the
    /// ring), for prefetching only.
    pub(crate) fn slot_address(&self, position: u64) -> *const u8 {
        let start = self.ring_index(position) * self.geometry.slot_size as u64;
        self.map
            .as_ptr()
            .wrapping_add((self.layout.payload + start) as usize)
    }

    /// Pointer to `len` payload bytes starting at the slot at `position`, if they do
    /// not run past the end of the payload area (records never wrap).
    pub(crate) fn slot_bytes(&self, position: u64, len: u64) -> Option<*mut u8> {
        let slot = self.ring_index(position);
        let start = slot * self.geometry.slot_size as u64;
        let area = self.geometry.slots as u64 * self.geometry.slot_size as u64;
        if len > area - start {
            return None;
        }
        // SAFETY: start + len <= payload area size, which lies inside the mapping.
        Some(unsafe {
            self.map
                .as_mut_ptr()
                .add((self.layout.payload + start) as usize)
        })
    }
}

/// Stores `name` (at most [`NAME_CAPACITY`] bytes) as 8 little-endian words, its
/// length last with Release: what `read_name` decodes.
pub(crate) fn write_name(words: &[AtomicU64; 8], len: &AtomicU32, name: &str) {
    let mut bytes = [0u8; NAME_CAPACITY];
    let n = name.len().min(NAME_CAPACITY);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    for (w, chunk) in words.iter().zip(bytes.chunks_exact(8)) {
        w.store(
            u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            Ordering::Relaxed,
        );
    }
    // Release pairs with the Acquire loads of the length in `client_name` and
    // `group_name`: the words are visible once the length is.
    len.store(n as u32, Ordering::Release);
}

/// Decodes a name stored as 8 little-endian words, refusing anything that is not a
/// valid id or group name.
fn read_name(words: &[AtomicU64; 8], len: u32) -> Option<String> {
    let s = read_raw_name(words, len)?;
    crate::names::check_name("name", &s).ok()?;
    Some(s)
}

/// As [`read_name`], checking only that it is UTF-8: the caller checks the rest.
fn read_raw_name(words: &[AtomicU64; 8], len: u32) -> Option<String> {
    let mut bytes = Vec::with_capacity(64);
    for w in words {
        bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    bytes.truncate((len as usize).min(64));
    String::from_utf8(bytes).ok()
}

/// Set in the words a broker records for the next one (see
/// [`Region::record_log_start`]): a region from an earlier build holds 0 there.
pub(crate) const RECORDED: u64 = 1 << 63;

/// Sizes the region's file and allocates every page of it now: on a tmpfs that
/// cannot hold it, the creator gets a clear refusal instead of a SIGBUS at the first
/// write to a page that could not be found later.
fn reserve(fd: &OwnedFd, len: u64, name: &str) -> Result<(), RegionError> {
    nix::unistd::ftruncate(fd, len as i64).map_err(io_err("ftruncate", name))?;
    match nix::fcntl::posix_fallocate(fd, 0, len as i64) {
        Ok(()) => Ok(()),
        Err(e @ (nix::Error::ENOSPC | nix::Error::EFBIG)) => Err(RegionError::NoSpace {
            name: name.to_string(),
            needed: len,
            source: std::io::Error::from(e),
        }),
        // A file system that cannot preallocate at all: the size alone must do.
        Err(nix::Error::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io_err("posix_fallocate", name)(e)),
    }
}

fn map_fd(fd: &OwnedFd, len: u64, name: &str) -> Result<MmapRaw, RegionError> {
    MmapOptions::new()
        .len(len as usize)
        .populate()
        .map_raw(fd.as_raw_fd())
        .map_err(|source| RegionError::Io {
            op: "mmap",
            name: name.to_string(),
            source,
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn test_geometry() -> Geometry {
        Geometry {
            slots: 16,
            slot_size: 64,
            max_message: 512,
            max_clients: 8,
            max_groups: 4,
            redeliveries_per_group: 8,
        }
    }

    /// A region that unlinks itself when dropped.
    pub struct TestRegion(pub BrokerRegion);
    impl Drop for TestRegion {
        fn drop(&mut self) {
            let _ = Region::unlink(self.0.name());
        }
    }

    pub fn test_region(tag: &str, geometry: Geometry) -> TestRegion {
        let name = format!("/mk-unit-{}-{}", tag, std::process::id());
        let _ = Region::unlink(&name);
        TestRegion(Region::create(&name, geometry, [1, 2], std::process::id()).unwrap())
    }

    #[test]
    fn create_then_open_sees_the_same_geometry_and_token() {
        let r = test_region("open", test_geometry());
        let opened = Region::open_expecting(r.0.name(), &test_geometry()).unwrap();
        assert_eq!(opened.token(), [1, 2]);
        assert_eq!(opened.layout(), r.0.layout());
    }

    #[test]
    fn the_log_start_is_recorded_for_the_next_broker_and_absent_until_then() {
        let r = test_region("log-start", test_geometry());
        assert_eq!(r.0.recorded_log_start(), None);
        r.0.record_log_start(0);
        assert_eq!(r.0.recorded_log_start(), Some(0));
        r.0.record_log_start(12_345);
        let opened = Region::open_expecting(r.0.name(), &test_geometry()).unwrap();
        assert_eq!(opened.recorded_log_start(), Some(12_345));
    }

    #[test]
    fn region_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let r = test_region("mode", test_geometry());
        let path = format!("/dev/shm{}", r.0.name());
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn creating_twice_is_refused_and_other_geometry_is_a_mismatch() {
        let r = test_region("twice", test_geometry());
        assert!(matches!(
            Region::create(r.0.name(), test_geometry(), [0, 0], 1),
            Err(RegionError::AlreadyExists(_))
        ));
        let mut other = test_geometry();
        other.slots = 32;
        assert!(matches!(
            Region::open_expecting(r.0.name(), &other),
            Err(RegionError::GeometryMismatch { .. })
        ));
    }

    #[test]
    fn garbage_magic_and_wrong_version_are_refused() {
        let r = test_region("magic", test_geometry());
        r.0.header().identity.version.store(99, Ordering::Release);
        assert!(matches!(
            Region::open(r.0.name()),
            Err(RegionError::VersionMismatch { found: 99, .. })
        ));
        r.0.header().identity.magic.store(7, Ordering::Relaxed);
        assert!(matches!(
            Region::open(r.0.name()),
            Err(RegionError::BadMagic(_))
        ));
    }

    #[test]
    fn hostile_geometry_in_the_header_is_refused() {
        let r = test_region("hostile", test_geometry());
        r.0.header()
            .identity
            .slots
            .store(u32::MAX, Ordering::Relaxed);
        assert!(matches!(
            Region::open(r.0.name()),
            Err(RegionError::GeometryMismatch { .. })
        ));
    }

    #[test]
    fn the_owner_of_a_region_is_absent_alive_dead_or_garbage() {
        let name = format!("/mk-unit-owner-{}", std::process::id());
        let _ = Region::unlink(&name);
        assert!(matches!(Region::owner_state(&name), Ok(OwnerState::Absent)));
        // pid 1 is always alive.
        let r = TestRegion(Region::create(&name, test_geometry(), [1, 2], 1).unwrap());
        assert!(matches!(
            Region::owner_state(&name),
            Ok(OwnerState::Alive { pid: 1 })
        ));
        // A broker that stops marks its region closing: nobody's any more.
        r.0.mark_closing();
        assert!(matches!(
            Region::owner_state(&name),
            Ok(OwnerState::Dead(_))
        ));
        r.0.header().identity.closing.store(0, Ordering::SeqCst);
        let gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        let _ = { gone }.wait();
        r.0.header()
            .identity
            .broker_pid
            .store(gone_pid, Ordering::Relaxed);
        assert!(matches!(
            Region::owner_state(&name),
            Ok(OwnerState::Dead(_))
        ));
        r.0.header().identity.magic.store(0, Ordering::Relaxed);
        assert!(matches!(
            Region::owner_state(&name),
            Ok(OwnerState::Garbage(RegionError::BadMagic(_)))
        ));
    }

    #[test]
    fn accessors_refuse_out_of_range_indices() {
        let r = test_region("bounds", test_geometry());
        assert!(r.0.client(8).is_none());
        assert!(r.0.group(4).is_none());
        assert!(r.0.redelivery(0, 8).is_none());
        assert!(r.0.slot_bytes(15, 64).is_some());
        assert!(r.0.slot_bytes(15, 65).is_none());
    }
}
