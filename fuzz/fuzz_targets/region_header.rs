//! A hostile header: opening a region must check magic, version and geometry and
//! refuse what it cannot trust, never panic or map something it then misreads.
#![no_main]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shm_layout::layout::{Geometry, LAYOUT_VERSION, MAGIC};
use shm_layout::Region;

fn name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| format!("/mk-fuzz-header-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let _ = Region::unlink(name());
    let geometry = Geometry {
        slots: 8,
        slot_size: 16,
        max_message: 64,
        max_clients: 2,
        max_groups: 1,
        redeliveries_per_group: 1,
    };
    let Ok(r) = Region::create(name(), geometry, [0, 0], 1) else {
        return;
    };
    let mut words = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()));
    let id = &r.header().identity;
    let mut next = |default: u32| words.next().unwrap_or(default);
    id.magic
        .store(if next(0) % 4 == 0 { 0 } else { MAGIC }, Relaxed);
    id.version.store(
        if next(0) % 4 == 0 {
            next(0)
        } else {
            LAYOUT_VERSION
        },
        Relaxed,
    );
    id.slots.store(next(8), Relaxed);
    id.slot_size.store(next(16), Relaxed);
    id.max_message.store(next(64), Relaxed);
    id.max_clients.store(next(2), Relaxed);
    id.max_groups.store(next(1), Relaxed);
    id.redeliveries_per_group.store(next(1), Relaxed);
    if let Ok(opened) = Region::open(name()) {
        let g = *opened.geometry();
        assert!(opened.layout().total <= (64u64 << 30));
        let _ = opened.client(g.max_clients.saturating_sub(1));
        let _ = opened.group(g.max_groups.saturating_sub(1));
        let _ = opened.read_record(0);
        let _ = opened.used_slots();
    }
    drop(r);
    let _ = Region::unlink(name());
});
