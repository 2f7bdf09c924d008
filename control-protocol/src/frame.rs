//! Bytes ⇄ frames. A frame is a big-endian u32 length, then `length` bytes: the
//! protocol version, the frame kind, and the body. [`check`] says whether a whole
//! frame is buffered *before* anything is allocated; an incomplete frame is not an
//! error, an impossible length is.

/// Protocol version carried by every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest frame a broker accepts from a client (a consumer's registration
/// names up to [`MAX_TOPICS_PER_CONSUMER`] topics of up to 249 bytes).
pub const MAX_REQUEST_LEN: usize = 20 * 1024;
/// Most topics one consumer reads.
pub const MAX_TOPICS_PER_CONSUMER: usize = 64;
/// Largest frame a client accepts from the broker (status replies can be long).
pub const MAX_REPLY_LEN: usize = 1024 * 1024;
/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// Why buffered bytes are not a valid frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {len} is outside 2..={max}")]
    BadLength { len: usize, max: usize },
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame body is malformed: {0}")]
    Malformed(&'static str),
}

/// If `buf` starts with a whole frame no longer than `max`, its total length
/// (prefix included); `Ok(None)` if more bytes are needed.
pub fn check(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if !(2..=max).contains(&len) {
        return Err(FrameError::BadLength { len, max });
    }
    if buf.len() < PREFIX_LEN + len {
        return Ok(None);
    }
    Ok(Some(PREFIX_LEN + len))
}

/// Splits a whole frame (as measured by [`check`]) into kind and body.
pub fn split(frame: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    let rest = frame
        .get(PREFIX_LEN..)
        .ok_or(FrameError::Malformed("short frame"))?;
    match rest {
        [version, kind, body @ ..] => {
            if *version != PROTOCOL_VERSION {
                return Err(FrameError::Version(*version));
            }
            Ok((*kind, body))
        }
        _ => Err(FrameError::Malformed("short frame")),
    }
}

/// Builds a frame of `kind` around `body`.
pub fn build(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + 2 + body.len());
    out.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    out.push(PROTOCOL_VERSION);
    out.push(kind);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_is_not_an_error_and_lengths_are_bounded() {
        let f = build(7, b"abc");
        for cut in 0..f.len() {
            assert_eq!(check(&f[..cut], 64), Ok(None));
        }
        assert_eq!(check(&f, 64), Ok(Some(f.len())));
        assert_eq!(split(&f), Ok((7, &b"abc"[..])));
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            check(&huge, 64),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            check(&[0, 0, 0, 1], 64),
            Err(FrameError::BadLength { .. })
        ));
        let mut bad = f.clone();
        bad[4] = 9;
        assert_eq!(split(&bad), Err(FrameError::Version(9)));
    }
}
