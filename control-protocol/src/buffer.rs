//! Bytes read from a stream ⇄ whole frames. Both ends of a control connection read
//! through a [`FrameBuffer`]: the broker's event loop (one per connection, fed by a
//! non-blocking socket) and a client's session (fed by a blocking one). Each caller
//! keeps its own reading policy (readiness, timeouts); the buffer only holds bytes
//! and measures frames, refusing a length above its limit before waiting for, or
//! allocating, the frame's body.

use std::io::Read;

use crate::frame::{self, FrameError};
use crate::message::ControlFrame;

/// Bytes read at most by one [`FrameBuffer::read_from`].
pub const READ_CHUNK: usize = 4096;

/// Buffered input of one connection, whose frames are at most `max` bytes long.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    max: usize,
}

impl FrameBuffer {
    /// An empty buffer for frames of at most `max` bytes
    /// ([`frame::MAX_REQUEST_LEN`] on the broker, [`frame::MAX_REPLY_LEN`] on a client).
    pub fn new(max: usize) -> Self {
        FrameBuffer {
            buf: Vec::new(),
            max,
        }
    }

    /// Reads once from `stream` (at most [`READ_CHUNK`] bytes) and keeps what came;
    /// `Ok(0)` is the end of the stream. Errors are the stream's, untouched.
    pub fn read_from(&mut self, stream: &mut impl Read) -> std::io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next whole frame, removed from the buffer; `Ok(None)` if more bytes are
    /// needed. A frame that does not decode is removed too; a length outside the
    /// limit leaves the buffer as it is (the connection cannot go on).
    pub fn next_frame(&mut self) -> Result<Option<ControlFrame>, FrameError> {
        let Some(n) = frame::check(&self.buf, self.max)? else {
            return Ok(None);
        };
        let decoded = ControlFrame::decode(&self.buf[..n]);
        self.buf.drain(..n);
        decoded.map(Some)
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_REPLY_LEN, MAX_REQUEST_LEN};
    use crate::message::Role;

    #[test]
    fn frames_come_out_whole_whatever_the_reads_cut() {
        let a = ControlFrame::Hello {
            role: Role::Producer,
        }
        .encode();
        let b = ControlFrame::StatusRequest.encode();
        let bytes = [a, b].concat();
        for step in 1..bytes.len() {
            let mut buffer = FrameBuffer::new(MAX_REQUEST_LEN);
            let mut got = Vec::new();
            for piece in bytes.chunks(step) {
                assert_eq!(buffer.read_from(&mut &piece[..]).unwrap(), piece.len());
                while let Some(f) = buffer.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(
                got,
                [
                    ControlFrame::Hello {
                        role: Role::Producer
                    },
                    ControlFrame::StatusRequest
                ]
            );
        }
    }

    #[test]
    fn a_length_above_the_limit_is_refused_before_the_body_arrives() {
        let mut buffer = FrameBuffer::new(MAX_REQUEST_LEN);
        let prefix = ((MAX_REQUEST_LEN + 1) as u32).to_be_bytes();
        buffer.read_from(&mut &prefix[..]).unwrap();
        assert!(matches!(
            buffer.next_frame(),
            Err(FrameError::BadLength { .. })
        ));
        let mut client = FrameBuffer::new(MAX_REPLY_LEN);
        client.read_from(&mut &prefix[..]).unwrap();
        assert_eq!(client.next_frame(), Ok(None));
    }
}
