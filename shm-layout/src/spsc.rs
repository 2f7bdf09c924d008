//! A minimal lock-free single-producer/single-consumer ring in POSIX shared memory,
//! busy-polling on both sides. It is not used by the broker: it is the benchmark's
//! baseline for the physical limit of shared memory on this host (no offsets, no
//! groups, no crash safety, no waiting without burning a core).
//!
//! Layout: a producer line (`head`), a consumer line (`tail`), then `slots` slots
//! of `4 + slot_size` bytes (a u32 length, then the bytes). Each side caches the
//! other's index and reloads it only when the ring looks full (or empty).
//!
//! A mapping becomes one side: [`SpscRing::into_producer`] or
//! [`SpscRing::into_consumer`]. Each side can move to another thread (`Send`) but
//! not be shared by two (not `Sync`), so two threads cannot push at once:
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<shm_layout::spsc::SpscProducer>();
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

#[repr(C, align(128))]
struct Line {
    pos: AtomicU64,
    slots: AtomicU64,
    slot_size: AtomicU64,
}

const HEADER: usize = 2 * std::mem::size_of::<Line>();
const _: () = assert!(std::mem::size_of::<Line>() == 128);

/// A mapped SPSC ring.
pub struct SpscRing {
    map: MmapRaw,
    slots: u64,
    stride: usize,
    name: String,
    owner: bool,
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

impl SpscRing {
    /// Creates the ring `name` with `slots` (a power of two) slots of `slot_size` bytes.
    pub fn create(name: &str, slots: u64, slot_size: u64) -> std::io::Result<SpscRing> {
        if !slots.is_power_of_two() || slot_size == 0 || slot_size > 1 << 20 || slots > 1 << 20 {
            return Err(std::io::Error::other(
                "slots must be a power of two, sizes bounded",
            ));
        }
        let _ = shm_unlink(name);
        let fd = shm_open(
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(io)?;
        let stride = 4 + slot_size as usize;
        let len = HEADER + slots as usize * stride;
        nix::unistd::ftruncate(&fd, len as i64).map_err(io)?;
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(fd.as_raw_fd())?;
        let ring = SpscRing {
            map,
            slots,
            stride,
            name: name.to_string(),
            owner: true,
        };
        ring.consumer_line().slots.store(slots, Ordering::Relaxed);
        // Release pairs with the Acquire load in `open`.
        ring.consumer_line()
            .slot_size
            .store(slot_size, Ordering::Release);
        Ok(ring)
    }

    /// Opens a ring created by another process.
    pub fn open(name: &str) -> std::io::Result<SpscRing> {
        let fd = shm_open(name, OFlag::O_RDWR, Mode::empty()).map_err(io)?;
        let size = nix::sys::stat::fstat(&fd).map_err(io)?.st_size.max(0) as usize;
        if size < HEADER {
            return Err(std::io::Error::other("ring too small"));
        }
        let map = MmapOptions::new()
            .len(size)
            .populate()
            .map_raw(fd.as_raw_fd())?;
        let mut ring = SpscRing {
            map,
            slots: 0,
            stride: 0,
            name: name.to_string(),
            owner: false,
        };
        let line = ring.consumer_line();
        let slot_size = line.slot_size.load(Ordering::Acquire);
        let slots = line.slots.load(Ordering::Relaxed);
        let stride = 4usize.saturating_add(slot_size as usize);
        let fits = slots
            .checked_mul(stride as u64)
            .is_some_and(|b| b + HEADER as u64 <= size as u64);
        if !slots.is_power_of_two() || slot_size == 0 || !fits {
            return Err(std::io::Error::other("ring header is invalid"));
        }
        ring.slots = slots;
        ring.stride = stride;
        Ok(ring)
    }

    fn producer_line(&self) -> &Line {
        // SAFETY: the mapping is at least HEADER bytes and page aligned; Line holds atomics.
        unsafe { &*(self.map.as_ptr() as *const Line) }
    }

    fn consumer_line(&self) -> &Line {
        // SAFETY: as above, the second line of the header.
        unsafe { &*(self.map.as_ptr().add(128) as *const Line) }
    }

    fn slot(&self, pos: u64) -> *mut u8 {
        let i = (pos & (self.slots - 1)) as usize;
        // SAFETY: i < slots, and HEADER + slots * stride <= mapping length (checked).
        unsafe { self.map.as_mut_ptr().add(HEADER + i * self.stride) }
    }

    /// Largest message.
    pub fn slot_size(&self) -> usize {
        self.stride - 4
    }

    /// This mapping as the ring's one producer.
    pub fn into_producer(self) -> SpscProducer {
        SpscProducer {
            ring: self,
            cached_tail: 0,
            not_sync: PhantomData,
        }
    }

    /// This mapping as the ring's one consumer.
    pub fn into_consumer(self) -> SpscConsumer {
        SpscConsumer {
            ring: self,
            cached_head: 0,
            not_sync: PhantomData,
        }
    }

    /// Pushes one message, spinning while the ring is full. `cached_tail` is the
    /// producer's copy of the consumer's index.
    fn push(&self, bytes: &[u8], cached_tail: &mut u64) {
        let len = bytes.len().min(self.slot_size());
        let head = self.producer_line().pos.load(Ordering::Relaxed);
        while head - *cached_tail >= self.slots {
            // Acquire pairs with the Release store of `tail` in `pop`.
            *cached_tail = self.consumer_line().pos.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        let p = self.slot(head);
        // SAFETY: the slot at `head` is free (head - tail < slots) and only this
        // producer writes it; it has room for 4 + slot_size bytes.
        unsafe {
            std::ptr::copy_nonoverlapping((len as u32).to_le_bytes().as_ptr(), p, 4);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(4), len);
        }
        // Release pairs with the Acquire load of `head` in `pop`.
        self.producer_line().pos.store(head + 1, Ordering::Release);
    }

    /// Pops one message into `f`, spinning while the ring is empty. `cached_head` is
    /// the consumer's copy of the producer's index.
    fn pop<R>(&self, cached_head: &mut u64, f: impl FnOnce(&[u8]) -> R) -> R {
        let tail = self.consumer_line().pos.load(Ordering::Relaxed);
        while *cached_head == tail {
            // Acquire pairs with the Release store of `head` in `push`.
            *cached_head = self.producer_line().pos.load(Ordering::Acquire);
            std::hint::spin_loop();
        }
        let p = self.slot(tail);
        // SAFETY: the slot at `tail` was published by the producer (tail < head) and
        // is not rewritten until `tail` moves past it; the length is clamped.
        let r = unsafe {
            let mut len = [0u8; 4];
            std::ptr::copy_nonoverlapping(p, len.as_mut_ptr(), 4);
            let len = (u32::from_le_bytes(len) as usize).min(self.slot_size());
            f(std::slice::from_raw_parts(p.add(4), len))
        };
        // Release pairs with the Acquire load of `tail` in `push`.
        self.consumer_line().pos.store(tail + 1, Ordering::Release);
        r
    }
}

/// The one producer of an SPSC ring: `Send`, not `Sync`.
pub struct SpscProducer {
    ring: SpscRing,
    cached_tail: u64,
    not_sync: PhantomData<Cell<()>>,
}

impl SpscProducer {
    /// Pushes one message (cut to [`SpscProducer::slot_size`]), spinning while the
    /// ring is full.
    pub fn push(&mut self, bytes: &[u8]) {
        self.ring.push(bytes, &mut self.cached_tail);
    }

    /// Largest message.
    pub fn slot_size(&self) -> usize {
        self.ring.slot_size()
    }
}

/// The one consumer of an SPSC ring: `Send`, not `Sync`.
pub struct SpscConsumer {
    ring: SpscRing,
    cached_head: u64,
    not_sync: PhantomData<Cell<()>>,
}

impl SpscConsumer {
    /// Pops one message into `f`, spinning while the ring is empty.
    pub fn pop<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        self.ring.pop(&mut self.cached_head, f)
    }
}

impl Drop for SpscRing {
    fn drop(&mut self) {
        if self.owner {
            let _ = shm_unlink(self.name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_in_order_through_a_small_ring() {
        let name = format!("/mk-spsc-{}", std::process::id());
        let mut producer = SpscRing::create(&name, 4, 16).unwrap().into_producer();
        let mut consumer = SpscRing::open(&name).unwrap().into_consumer();
        let t = std::thread::spawn(move || {
            (0..100u32)
                .map(|_| consumer.pop(|b| b.to_vec()))
                .collect::<Vec<_>>()
        });
        for i in 0..100u32 {
            producer.push(&i.to_le_bytes());
        }
        let got = t.join().unwrap();
        assert_eq!(
            got,
            (0..100u32)
                .map(|i| i.to_le_bytes().to_vec())
                .collect::<Vec<_>>()
        );
    }
}
