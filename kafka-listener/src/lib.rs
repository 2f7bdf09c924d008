//! Apache Kafka's wire protocol over the broker's topics (SPEC §12), so that
//! unmodified Kafka clients produce to and fetch from them.
//!
//! # Layout
//! - [`frame`]: size-prefixed frames, bounded before allocation.
//! - [`batch`]: record batch v2, read in place and written into responses.
//! - [`requests`]: one file per request (parse, apply, encode).
//! - [`coordinator`]: Kafka's group membership and rebalances.
//! - [`committer`]: offset commits written beside the loop.
//! - [`log`]: the broker as the listener sees it ([`log::KafkaLog`]).
//! - [`listener`]: one event loop for every connection.
//!
//! Requests and responses are decoded and encoded by `kacrab-protocol`,
//! generated from Kafka's own schemas; record batches are read and written
//! here, without an allocation per record.
#![forbid(unsafe_code)]

pub mod batch;
pub mod committer;
pub mod coordinator;
pub mod frame;
pub mod listener;
pub mod log;
pub mod requests;
pub mod scram;
pub mod transport;

pub use listener::{Listener, ListenerConfig};
pub use log::KafkaLog;
