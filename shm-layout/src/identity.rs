//! The broker's own copy of its region's identity line (magic, version, geometry,
//! pid, generation, token, closing mark, admission, log start), kept in its own
//! memory. Clients trust that line: a closing mark written by a stray process would
//! make every client give up while the broker runs, a changed token would refuse
//! every new client. So the broker compares the line with its copy now and then,
//! and writes back what differs.
//!
//! The fields the broker itself changes (closing mark, admission, log start) are
//! changed in the copy first and in the region next; the repair writes back with a
//! compare-exchange against what it read. So a repair racing with one of the
//! broker's own changes either writes the value the change is about to write, or
//! fails because the change came first: it never undoes the change.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::layout::{admission, Identity};

/// A field of the identity line that a repair wrote back.
pub type FieldName = &'static str;

/// The broker's copy of the identity line of the region it created.
#[derive(Debug)]
pub struct IdentityCopy {
    magic: u64,
    version: u32,
    broker_pid: u32,
    geometry: [u32; 6],
    region_size: u64,
    generation: u64,
    token: [u64; 2],
    pub(crate) closing: AtomicU32,
    pub(crate) admission: AtomicU32,
    pub(crate) log_start: AtomicU64,
}

impl IdentityCopy {
    /// A copy of `line` as the broker has just written it.
    pub(crate) fn of(line: &Identity) -> IdentityCopy {
        let r = |a: &AtomicU32| a.load(Ordering::Acquire);
        IdentityCopy {
            magic: line.magic.load(Ordering::Acquire),
            version: r(&line.version),
            broker_pid: r(&line.broker_pid),
            geometry: [
                r(&line.slots),
                r(&line.slot_size),
                r(&line.max_message),
                r(&line.max_clients),
                r(&line.max_groups),
                r(&line.redeliveries_per_group),
            ],
            region_size: line.region_size.load(Ordering::Acquire),
            generation: line.generation.load(Ordering::Acquire),
            token: [
                line.token[0].load(Ordering::Acquire),
                line.token[1].load(Ordering::Acquire),
            ],
            closing: AtomicU32::new(r(&line.closing)),
            admission: AtomicU32::new(admission::OPEN),
            log_start: AtomicU64::new(line.log_start.load(Ordering::Acquire)),
        }
    }

    /// Writes back every field of `line` that differs from this copy; returns
    /// their names.
    pub(crate) fn restore(&self, line: &Identity) -> Vec<FieldName> {
        let mut restored = Vec::new();
        let mut word = |name: FieldName, field: &AtomicU64, want: u64| {
            if write_back(field, want) {
                restored.push(name);
            }
        };
        word("magic", &line.magic, self.magic);
        word("region_size", &line.region_size, self.region_size);
        word("generation", &line.generation, self.generation);
        word("token", &line.token[0], self.token[0]);
        word("token", &line.token[1], self.token[1]);
        word(
            "log_start",
            &line.log_start,
            self.log_start.load(Ordering::Acquire),
        );
        let mut half = |name: FieldName, field: &AtomicU32, want: u32| {
            if write_back(field, want) {
                restored.push(name);
            }
        };
        half("version", &line.version, self.version);
        half("broker_pid", &line.broker_pid, self.broker_pid);
        let geometry = [
            &line.slots,
            &line.slot_size,
            &line.max_message,
            &line.max_clients,
            &line.max_groups,
            &line.redeliveries_per_group,
        ];
        for (field, want) in geometry.into_iter().zip(self.geometry) {
            half("geometry", field, want);
        }
        half(
            "closing",
            &line.closing,
            self.closing.load(Ordering::Acquire),
        );
        half(
            "admission",
            &line.paused,
            self.admission.load(Ordering::Acquire),
        );
        restored.dedup();
        restored
    }
}

/// A word or half-word of the line: what it holds, and how to write it back.
trait Field {
    type Value: Copy + PartialEq;
    fn load(&self) -> Self::Value;
    fn replace(&self, seen: Self::Value, want: Self::Value) -> bool;
}

impl Field for AtomicU64 {
    type Value = u64;
    fn load(&self) -> u64 {
        AtomicU64::load(self, Ordering::Acquire)
    }
    fn replace(&self, seen: u64, want: u64) -> bool {
        self.compare_exchange(seen, want, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

impl Field for AtomicU32 {
    type Value = u32;
    fn load(&self) -> u32 {
        AtomicU32::load(self, Ordering::Acquire)
    }
    fn replace(&self, seen: u32, want: u32) -> bool {
        self.compare_exchange(seen, want, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// Writes `want` over `field` unless it holds it already (or changed meanwhile);
/// true if it wrote.
fn write_back<F: Field>(field: &F, want: F::Value) -> bool {
    let seen = field.load();
    seen != want && field.replace(seen, want)
}
