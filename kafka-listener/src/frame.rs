//! Kafka's framing: a big-endian `i32` size, then that many bytes of request.
//! A size is checked as soon as its four bytes are in, before anything is
//! allocated for the frame, and the input grows only with bytes that arrived.

use std::io::{self, Read};

use bytes::{Buf, Bytes, BytesMut};

/// Largest request accepted: many full batches at clients' default
/// `max.request.size` (1 MiB), and a bound on what one connection holds.
pub const MAX_KAFKA_REQUEST: usize = 16 << 20;
/// Smallest request: an API key, a version and a correlation id.
pub const MIN_KAFKA_REQUEST: usize = 8;

/// How much is read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection's input cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a request of {0} bytes is outside {MIN_KAFKA_REQUEST}..={MAX_KAFKA_REQUEST}")]
    Size(i64),
}

/// The bytes a connection sent that are not yet whole frames.
#[derive(Debug, Default)]
pub struct FrameInput {
    buf: BytesMut,
}

impl FrameInput {
    /// Reads once from `source` (at most what completes the current frame, or a
    /// chunk); `Ok(0)` at end of stream.
    pub fn read_from(&mut self, source: &mut impl Read) -> io::Result<usize> {
        let want = match self.declared() {
            Ok(Some(size)) => (size + 4)
                .saturating_sub(self.buf.len())
                .clamp(1, READ_CHUNK),
            _ => READ_CHUNK,
        };
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let read = source.read(&mut self.buf[start..]);
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        read
    }

    /// The size the next frame declares, once its prefix is in.
    fn declared(&self) -> Result<Option<usize>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes"));
        match usize::try_from(size) {
            Ok(s) if (MIN_KAFKA_REQUEST..=MAX_KAFKA_REQUEST).contains(&s) => Ok(Some(s)),
            _ => Err(FrameError::Size(i64::from(size))),
        }
    }

    /// The next whole frame (without its size prefix), if one is in.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.declared()? else {
            return Ok(None);
        };
        if self.buf.len() < 4 + size {
            return Ok(None);
        }
        self.buf.advance(4);
        Ok(Some(self.buf.split_to(size).freeze()))
    }

    /// Bytes held: the part of a frame still incomplete, and whole frames not
    /// yet taken.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_come_out_whole_whatever_the_reads_cut() {
        let mut wire = framed(b"12345678");
        wire.extend(framed(b"abcdefghij"));
        for cut in 1..wire.len() {
            let mut input = FrameInput::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                let mut src = part;
                while input.read_from(&mut src).unwrap() > 0 {}
                while let Some(f) = input.next_frame().unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got, vec![b"12345678".to_vec(), b"abcdefghij".to_vec()]);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn a_size_out_of_bounds_is_refused_before_its_bytes_arrive() {
        for size in [-1i32, 0, 7, (MAX_KAFKA_REQUEST + 1) as i32, i32::MAX] {
            let mut input = FrameInput::default();
            let mut src = &size.to_be_bytes()[..];
            input.read_from(&mut src).unwrap();
            assert_eq!(
                input.next_frame(),
                Err(FrameError::Size(i64::from(size))),
                "{size}"
            );
            assert!(input.len() <= 4);
        }
    }

    #[test]
    fn a_large_frame_is_read_in_chunks_no_larger_than_it() {
        let body = vec![7u8; READ_CHUNK * 2 + 10];
        let wire = framed(&body);
        let mut input = FrameInput::default();
        let mut src = &wire[..];
        while input.next_frame().unwrap().is_none() {
            assert!(input.read_from(&mut src).unwrap() > 0);
            assert!(input.len() <= wire.len());
        }
    }
}
