//! How a producer of a topic-partition's ring tells the broker it has work: the
//! ring's bit in the control region's pending set, and the broker's wake-up word.
//!
//! The broker runs one persister for every ring, sleeping on the control region's
//! cleaner event; it looks only at the rings whose bits it takes, so an idle
//! topic costs it nothing. A partition region's mapping carries a doorbell, a
//! second small mapping of the control region's header, so that its producers'
//! nudges (another quarter of the ring filled, short of space, waiting for the
//! disk) reach the thread that serves them.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::shm_open;
use nix::sys::stat::Mode;

use crate::event;
use crate::layout::{EventWord, Header, LAYOUT_VERSION, MAGIC, MAX_RINGS};
use crate::names::valid_shm_name;
use crate::region::RegionError;

/// A partition ring's link to the control region (see the module docs).
pub struct Doorbell {
    map: MmapRaw,
    ring: u32,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("ring", &self.ring)
            .finish()
    }
}

impl Doorbell {
    /// Maps the header of the control region `control` for ring number `ring`
    /// (1 to [`MAX_RINGS`] − 1: ring 0 is the control region's own).
    pub fn open(control: &str, ring: u32) -> Result<Doorbell, RegionError> {
        if !valid_shm_name(control) {
            return Err(RegionError::InvalidName(control.to_string()));
        }
        if ring == 0 || ring >= MAX_RINGS {
            return Err(RegionError::GeometryMismatch {
                name: control.to_string(),
                found: format!("ring number {ring}"),
                expected: format!("a ring number from 1 to {}", MAX_RINGS - 1),
            });
        }
        let fd = shm_open(control, OFlag::O_RDWR, Mode::empty()).map_err(|e| match e {
            nix::Error::ENOENT => RegionError::NotFound(control.to_string()),
            other => RegionError::Io {
                op: "shm_open",
                name: control.to_string(),
                source: other.into(),
            },
        })?;
        let len = size_of::<Header>() as u64;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| RegionError::Io {
            op: "fstat",
            name: control.to_string(),
            source: e.into(),
        })?;
        if (stat.st_size.max(0) as u64) < len {
            return Err(RegionError::Truncated {
                name: control.to_string(),
                actual: stat.st_size.max(0) as u64,
                needed: len,
            });
        }
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(fd.as_raw_fd())
            .map_err(|source| RegionError::Io {
                op: "mmap",
                name: control.to_string(),
                source,
            })?;
        let bell = Doorbell { map, ring };
        let id = &bell.header().identity;
        if id.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(RegionError::BadMagic(control.to_string()));
        }
        let version = id.version.load(Ordering::Acquire);
        if version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch {
                name: control.to_string(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        Ok(bell)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is one header long (checked against the file's size
        // in `open`), page aligned, and every field of Header is an atomic or the
        // pthread mutex, so shared references are sound while others write it.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// After a commit: marks the ring pending, unless it already is (one load).
    pub fn ring(&self) {
        // Pairs with the SeqCst swap in `take_pending`: either the broker's take
        // comes after this look and sees the commit made before it, or this look
        // sees the bit cleared and sets it again.
        fence(Ordering::SeqCst);
        let word = &self.header().pending.words[(self.ring / 64) as usize];
        let bit = 1u64 << (self.ring % 64);
        if word.load(Ordering::Relaxed) & bit == 0 {
            word.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// The event the broker's persister and cleaner sleep on.
    pub fn broker_event(&self) -> &EventWord {
        &self.header().cleaner
    }

    /// Wakes the broker's persister and cleaner if they sleep.
    pub fn wake_broker(&self) {
        event::notify(self.broker_event());
    }
}

/// Marks ring `ring` pending in the control region whose header is `header`, as a
/// producer's doorbell does: for the broker itself, after it repaired a ring's
/// commit or released a dead producer's hold there. Ring numbers outside the set
/// are ignored.
pub(crate) fn mark_pending(header: &Header, ring: u32) {
    if ring == 0 || ring >= MAX_RINGS {
        return;
    }
    header.pending.words[(ring / 64) as usize].fetch_or(1 << (ring % 64), Ordering::SeqCst);
}

/// Takes the pending set of the control region whose header is `header`: every
/// ring number marked since the last take, in ascending order, into `rings`.
pub(crate) fn take_pending(header: &Header, rings: &mut Vec<u32>) {
    rings.clear();
    for (w, word) in header.pending.words.iter().enumerate() {
        if word.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut bits = word.swap(0, Ordering::SeqCst);
        while bits != 0 {
            rings.push(w as u32 * 64 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    // With the fence in `Doorbell::ring`: what the caller reads of the rings taken
    // includes every commit made before a producer found its bit set.
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::region::tests::{test_geometry, test_region};
    use crate::ring::Sender;
    use crate::Region;

    use super::Doorbell;

    #[test]
    fn a_commit_marks_its_ring_once_and_nudges_reach_the_control_region() {
        let control = test_region("bell-control", test_geometry());
        let partition = test_region("bell-partition", test_geometry());
        let producer = Region::open(partition.0.name())
            .unwrap()
            .ring_doorbell(Doorbell::open(control.0.name(), 70).unwrap());
        let me = Sender {
            client: 1,
            generation: 1,
        };
        let mut rings = Vec::new();
        control.0.take_pending(&mut rings);
        assert!(rings.is_empty(), "nothing sent yet");
        producer.send(me, None, b"a", 0, || false, None).unwrap();
        producer.send(me, None, b"b", 0, || false, None).unwrap();
        control.0.take_pending(&mut rings);
        assert_eq!(rings, [70]);
        control.0.take_pending(&mut rings);
        assert!(rings.is_empty(), "taken: an idle ring is not marked again");
        producer.send(me, None, b"c", 0, || false, None).unwrap();
        control.0.take_pending(&mut rings);
        assert_eq!(rings, [70], "marked again by the next commit");

        // Filling a quarter of the ring asks the broker's threads for a pass: in
        // the control region, where they sleep, not in the partition's.
        let asked = control.0.header().cleaner.seq.load(Ordering::Relaxed);
        let own = partition.0.header().cleaner.seq.load(Ordering::Relaxed);
        control
            .0
            .header()
            .cleaner
            .sleepers
            .store(1, Ordering::Relaxed);
        for _ in 0..test_geometry().slots / 2 {
            producer.send(me, None, b"d", 0, || false, None).unwrap();
        }
        assert!(control.0.header().cleaner.seq.load(Ordering::Relaxed) > asked);
        assert_eq!(
            partition.0.header().cleaner.seq.load(Ordering::Relaxed),
            own
        );
    }

    #[test]
    fn ring_numbers_outside_the_pending_set_are_refused() {
        let control = test_region("bell-range", test_geometry());
        assert!(Doorbell::open(control.0.name(), 0).is_err());
        assert!(Doorbell::open(control.0.name(), crate::layout::MAX_RINGS).is_err());
        assert!(Doorbell::open(control.0.name(), crate::layout::MAX_RINGS - 1).is_ok());
    }
}
