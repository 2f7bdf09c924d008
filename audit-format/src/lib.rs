//! The format of mini-kafka's audit files (SPEC §6), for the broker that writes them
//! and for anyone who reads them back (clients, recovery, tests).
//! `docs/files.md` describes the formats.
//!
//! # Layout
//! - [`escape`]: the lossless text escaping of keys and payloads (also the
//!   consumer's text output).
//! - [`records`]: file names and headers, the line formats of both files, and
//!   parsers that turn a line back into exact bytes.
#![forbid(unsafe_code)]

pub mod escape;
pub mod records;
