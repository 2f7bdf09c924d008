//! A small region for the broker's unit tests, unlinked when dropped.

use std::sync::Arc;

use shm_layout::{BrokerRegion, Geometry, Region};

/// A region created for a test; unlinked when dropped.
pub(crate) struct TestRegion(pub Arc<BrokerRegion>);

impl Drop for TestRegion {
    fn drop(&mut self) {
        let _ = Region::unlink(self.0.name());
    }
}

/// A fresh region named after `tag` and this process, with `slots` slots of 64
/// bytes, 8 clients, 4 groups and 8 redelivery entries per group.
pub(crate) fn test_region(tag: &str, slots: u32) -> TestRegion {
    let name = format!("/mk-unit-{tag}-{}", std::process::id());
    let _ = Region::unlink(&name);
    let geometry = Geometry {
        slots,
        slot_size: 64,
        max_message: 512,
        max_clients: 8,
        max_groups: 4,
        redeliveries_per_group: 8,
    };
    TestRegion(Arc::new(
        Region::create(&name, geometry, [1, 2], std::process::id()).unwrap(),
    ))
}
