//! Fault injection for tests. In debug builds, `MINIKAFKA_FAULT=<point>:<n>` makes
//! the process SIGKILL itself the n-th time it reaches `<point>` (n defaults to 1):
//! a death at exactly that instruction, as an external `kill -9` could cause.
//! Release builds compile the points away.
//!
//! Points: `send-reserved` (a producer holding the ring lock with a reserved,
//! unwritten record), `send-committed` (holding the lock just after the commit
//! point), `poll-claimed` (a consumer that claimed an offset and has not returned it).

#[cfg(debug_assertions)]
mod enabled {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static PLAN: OnceLock<Option<(String, AtomicU64)>> = OnceLock::new();

    pub fn hit(point: &str) {
        let plan = PLAN.get_or_init(|| {
            let spec = std::env::var("MINIKAFKA_FAULT").ok()?;
            let (name, n) = match spec.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().ok()?),
                None => (spec, 1),
            };
            Some((name, AtomicU64::new(n)))
        });
        if let Some((name, left)) = plan {
            if name == point && left.fetch_sub(1, Ordering::Relaxed) == 1 {
                crate::sys::kill_self();
            }
        }
    }
}

/// Marks a point where a test may kill this process (see the module docs).
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    enabled::hit(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}
