//! Fault injection for tests. In debug builds, `MINIKAFKA_FAULT=<point>:<n>` makes
//! the process SIGKILL itself the n-th time it reaches `<point>` (n defaults to 1):
//! a death at exactly that instruction, as an external `kill -9` could cause.
//! `<point>:<n>:stop` sends SIGSTOP instead: the process halts there until a
//! SIGCONT, like one stopped by a debugger or starved of CPU.
//! Release builds compile the points away.
//!
//! Points: `send-reserved` (a producer holding the ring lock with a reserved,
//! unwritten record), `send-committed` (holding the lock just after the commit
//! point), `poll-claimed` (a consumer that claimed an offset and has not returned it),
//! `poll-taking` (a consumer about to claim offsets), `poll-spun` (a consumer whose
//! wait just ended within its spin), `consumer-printed` (the consumer binary,
//! once per message it printed and has not acknowledged: a process that dies
//! handling a message).

#[cfg(debug_assertions)]
mod enabled {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The point, how many hits are left before it acts, and whether it stops
    /// (rather than kills) the process.
    static PLAN: OnceLock<Option<(String, AtomicU64, bool)>> = OnceLock::new();

    pub fn hit(point: &str) {
        let plan = PLAN.get_or_init(|| {
            let spec = std::env::var("MINIKAFKA_FAULT").ok()?;
            let mut parts = spec.split(':');
            let name = parts.next()?.to_string();
            let n = parts.next().map_or(Some(1), |n| n.parse().ok())?;
            let stop = match parts.next() {
                None => false,
                Some("stop") => true,
                Some(_) => return None,
            };
            Some((name, AtomicU64::new(n), stop))
        });
        if let Some((name, left, stop)) = plan {
            if name == point && left.fetch_sub(1, Ordering::Relaxed) == 1 {
                if *stop {
                    crate::sys::stop_self();
                } else {
                    crate::sys::kill_self();
                }
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
