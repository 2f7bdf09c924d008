//! The format of mini-kafka's audit files (SPEC §6), for the broker that writes them
//! and for anyone who reads them back (clients, recovery, tests).
//! `docs/files.md` describes the formats.
//!
//! # Layout
//! - [`escape`]: the lossless text escaping of keys and payloads (also the
//!   consumer's text output).
//! - [`records`]: file names and headers, the line formats of both files, and
//!   parsers that turn a line back into exact bytes.
//! - [`headers`]: record headers, as the ring keeps them and as the persistence
//!   file writes them.
//! - [`reader`]: reading a whole file line by line: which file it is, its records,
//!   and a last line cut short by a crash.
//! - [`json`]: the JSON Lines form of a message and of a delivery, shared by
//!   `consumer --format json` and `broker decode`.
//! - [`index`]: the sparse index of the persistence file per topic-partition (its
//!   files, the writer side, validation and rebuild).
//! - [`log_reader`]: the persistence file read as a log of one topic-partition,
//!   from any offset, through its index, as the file grows.
//! - [`file_lines`]: whole lines of a growing file read at any byte position.
//! - [`topics`]: `topics.txt`, the directory of topics.
//! - [`durable`]: replacing a small file so that a crash leaves the old or the new.
#![forbid(unsafe_code)]

pub mod durable;
pub mod escape;
pub mod file_lines;
pub mod headers;
pub mod index;
pub mod json;
pub mod log_reader;
pub mod reader;
pub mod records;
pub mod topics;
