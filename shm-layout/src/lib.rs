//! The shared-memory region of mini-kafka and everything that touches it.
//!
//! # Layout
//! - [`sys`]: raw OS calls (futex, robust process-shared mutex, clocks, randomness):
//!   the only place that calls libc directly.
//! - [`layout`]: the `#[repr(C)]` structs, their compile-time size checks, and the
//!   offsets of every table from a [`layout::Geometry`] (see `docs/shm-layout.md`).
//! - [`region`]: creating, opening and unlinking a region; bounds-checked accessors.
//! - [`event`]: waiting and waking (bounded spin, then timed futex sleeps; no syscall
//!   for a poster while nobody sleeps).
//! - [`ring`]: reserve/commit of records, reading by offset, and reclaiming.
//! - [`client`]: a client's entry (what the broker publishes, what the client keeps).
//! - [`group`]: the per-group turn word that hands each offset to one consumer.
//! - [`redelivery`]: a group's redelivery table (offers, claims, acks, hand-backs).
//! - [`identity`]: the broker's copy of the identity line, to undo a stray write.
//! - [`names`], [`units`]: name validation, durations and sizes on command lines.
//! - [`fault`]: fault-injection points for crash tests (debug builds only).
//! - [`spsc`]: a minimal SPSC ring, the benchmark's physical-limit baseline.
//!
//! All `unsafe` code of the workspace lives in this crate, in `sys`, `region` and
//! `ring`, each block with the argument for its soundness.

pub mod client;
pub mod doorbell;
pub mod event;
pub mod fault;
pub mod group;
pub mod identity;
pub mod journal;
pub mod layout;
pub mod names;
pub mod redelivery;
pub mod region;
pub mod ring;
pub mod spsc;
pub mod sys;
pub mod units;

pub use layout::Geometry;
pub use region::{BrokerRegion, Region, RegionError};
