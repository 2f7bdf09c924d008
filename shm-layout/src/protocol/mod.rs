//! The control protocol over TCP, in three layers: [`frame`] (bytes ⇄ frames, with
//! length limits checked before allocation), [`message`] (frames ⇄ typed messages),
//! and [`client`] (a client's connection and lease). The broker's side lives in the
//! broker crate. `docs/control-protocol.md` describes the wire format.

pub mod client;
pub mod frame;
pub mod message;

pub use client::{default_id, ConnectError, Link, Session};
pub use message::{ControlFrame, Refusal, Role};
