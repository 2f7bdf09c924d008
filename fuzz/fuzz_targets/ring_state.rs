//! A hostile process scribbling over the ring's cursors, index and descriptors:
//! reads, sends and reclaims must fail cleanly, never panic or touch memory outside
//! the mapping (run under AddressSanitizer by cargo-fuzz).
#![no_main]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use shm_layout::layout::Geometry;
use shm_layout::ring::Sender;
use shm_layout::{BrokerRegion, Region};

const SLOTS: u32 = 16;

fn region() -> &'static BrokerRegion {
    static REGION: OnceLock<BrokerRegion> = OnceLock::new();
    REGION.get_or_init(|| {
        let name = format!("/mk-fuzz-ring-{}", std::process::id());
        let _ = Region::unlink(&name);
        let geometry = Geometry {
            slots: SLOTS,
            slot_size: 32,
            max_message: 256,
            max_clients: 4,
            max_groups: 2,
            redeliveries_per_group: 2,
        };
        let r = Region::create(&name, geometry, [1, 2], 1).expect("create region");
        // The name is not needed once mapped; do not leave it behind.
        let _ = Region::unlink(&name);
        r
    })
}

fn reset(r: &BrokerRegion) {
    let h = r.header();
    h.producer.head.store(0, Relaxed);
    h.producer.next_offset.store(0, Relaxed);
    h.reclaim.tail.store(0, Relaxed);
    h.reclaim.freed_offset.store(0, Relaxed);
    for i in 0..SLOTS as u64 {
        let e = r.index_entry(i);
        e.stamp.store(0, Relaxed);
        e.first_slot.store(0, Relaxed);
        e.key_len.store(0, Relaxed);
        e.payload_len.store(0, Relaxed);
        r.descriptor(i).store(0, Relaxed);
    }
}

fuzz_target!(|data: &[u8]| {
    let r = region();
    reset(r);
    for w in data.chunks_exact(10) {
        let (which, index) = (w[0], w[1] as u64);
        let v = u64::from_le_bytes(w[2..10].try_into().unwrap());
        let h = r.header();
        let e = r.index_entry(index);
        match which % 9 {
            0 => h.producer.head.store(v, Relaxed),
            1 => h.reclaim.tail.store(v, Relaxed),
            2 => h.producer.next_offset.store(v, Relaxed),
            3 => h.reclaim.freed_offset.store(v, Relaxed),
            4 => e.stamp.store(v, Relaxed),
            5 => e.first_slot.store(v, Relaxed),
            6 => e.key_len.store(v as u32, Relaxed),
            7 => e.payload_len.store(v as u32, Relaxed),
            _ => r.descriptor(index).store(v, Relaxed),
        }
    }
    let next = r.next_offset();
    for o in next.saturating_sub(20)..next.saturating_add(4) {
        if let Ok(rec) = r.read_record(o) {
            // Touch every byte: out-of-bounds reads would be caught here.
            let _ = rec.payload.iter().fold(0u8, |a, b| a ^ b);
        }
    }
    let _ = r.used_slots();
    let _ = r.has_space_for(3);
    let sender = Sender {
        client: 1,
        generation: 1,
    };
    let _ = r.send(
        sender,
        Some(b"k"),
        b"payload",
        0,
        || true,
        Some(Instant::now()),
    );
    let _ = r.reclaim(next);
    if let Ok(g) = r.lock_ring(|| true) {
        let _ = r.abandon_reservations(&g, 1);
    }
});
