//! The control protocol of mini-kafka over TCP. `docs/control-protocol.md`
//! describes the wire format.
//!
//! # Layout
//! - [`frame`]: bytes ⇄ frames, with length limits checked before allocation.
//! - [`message`]: frames ⇄ typed messages ([`ControlFrame`]).
//! - [`buffer`]: bytes read from a stream ⇄ whole frames, in a bounded buffer; the
//!   one input buffer of both ends of a connection.
//! - [`client`]: a client's connection and lease (it maps the region the broker
//!   names). The broker's side lives in the broker crate.
#![forbid(unsafe_code)]

pub mod buffer;
pub mod client;
pub mod frame;
pub mod message;

pub use buffer::FrameBuffer;
pub use client::{default_id, ConnectError, Link, Session, Subscription};
pub use message::{
    Assignment, CommittedOffset, ControlFrame, OwnerKind, Refusal, ResetTo, Role, TopicInfo,
    WaitingFor,
};
