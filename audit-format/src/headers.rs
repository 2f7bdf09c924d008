//! Record headers. In the ring (and in Kafka's record batches) they are Kafka's
//! record header encoding: a zigzag varint count, then each header's name and
//! value, each a zigzag varint length (−1 for a null value) and the bytes. In
//! the persistence file they are an eighth column, present only when a record
//! has headers: `name=value` pairs joined by `;`, names and values escaped as
//! every field is (SPEC §6) and `=` and `;` inside them written `\x3d` and
//! `\x3b`; a header with a null value is its name alone.

use crate::escape::{escape_into, unescape, UnescapeError};

/// A header: its name and its value (None for null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// Why headers could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadersError {
    #[error("record headers are malformed")]
    Malformed,
    #[error("a header in the file is not escaped as it should be: {0}")]
    Escape(#[from] UnescapeError),
}

/// The headers of Kafka's encoding `raw`, in order.
pub fn decode(raw: &[u8]) -> Result<Vec<Header<'_>>, HeadersError> {
    let mut rest = raw;
    let count = varint(&mut rest)?;
    let count = usize::try_from(count).map_err(|_| HeadersError::Malformed)?;
    // Each header takes two bytes at least: the count cannot be larger.
    let mut out = Vec::with_capacity(count.min(raw.len() / 2));
    for _ in 0..count {
        let name = bytes(&mut rest)?.ok_or(HeadersError::Malformed)?;
        let value = bytes(&mut rest)?;
        out.push((name, value));
    }
    if !rest.is_empty() {
        return Err(HeadersError::Malformed);
    }
    Ok(out)
}

/// Kafka's encoding of `headers`; empty when there are none (a record without
/// headers stores nothing).
pub fn encode(headers: &[Header<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    if headers.is_empty() {
        return out;
    }
    push_varint(&mut out, headers.len() as i64);
    for (name, value) in headers {
        push_varint(&mut out, name.len() as i64);
        out.extend_from_slice(name);
        match value {
            Some(v) => {
                push_varint(&mut out, v.len() as i64);
                out.extend_from_slice(v);
            }
            None => push_varint(&mut out, -1),
        }
    }
    out
}

/// Appends the file column of the headers Kafka's encoding `raw` holds.
pub fn push_column(raw: &[u8], line: &mut Vec<u8>) -> Result<(), HeadersError> {
    for (i, (name, value)) in decode(raw)?.into_iter().enumerate() {
        if i > 0 {
            line.push(b';');
        }
        escape_part(name, line);
        if let Some(v) = value {
            line.push(b'=');
            escape_part(v, line);
        }
    }
    Ok(())
}

/// Kafka's encoding of the headers a file column holds.
pub fn parse_column(column: &str) -> Result<Vec<u8>, HeadersError> {
    let mut owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for pair in column.split(';') {
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (unescape(n)?, Some(unescape(v)?)),
            None => (unescape(pair)?, None),
        };
        owned.push((name, value));
    }
    let headers: Vec<Header<'_>> = owned
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_deref()))
        .collect();
    Ok(encode(&headers))
}

/// A name or value: escaped as a field is, and `=` and `;` too (ASCII: never
/// inside a multi-byte character, so the runs between them escape as text).
fn escape_part(bytes: &[u8], line: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'=' || b == b';' {
            escape_into(&bytes[start..i], line);
            line.extend_from_slice(if b == b'=' { b"\\x3d" } else { b"\\x3b" });
            start = i + 1;
        }
    }
    escape_into(&bytes[start..], line);
}

fn push_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varint(data: &mut &[u8]) -> Result<i64, HeadersError> {
    let mut v = 0u64;
    for i in 0..5 {
        let (&b, rest) = data.split_first().ok_or(HeadersError::Malformed)?;
        *data = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err(HeadersError::Malformed)
}

fn bytes<'a>(data: &mut &'a [u8]) -> Result<Option<&'a [u8]>, HeadersError> {
    match varint(data)? {
        -1 => Ok(None),
        n if n >= 0 && (n as usize) <= data.len() => {
            let (b, rest) = data.split_at(n as usize);
            *data = rest;
            Ok(Some(b))
        }
        _ => Err(HeadersError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_column_is_readable_and_escapes_what_separates_headers() {
        let raw = encode(&[
            (b"trace-id", Some(b"abc")),
            (b"a=b;c", Some(b"\x00\tv")),
            (b"tomb", None),
        ]);
        let mut line = Vec::new();
        push_column(&raw, &mut line).unwrap();
        assert_eq!(line, b"trace-id=abc;a\\x3db\\x3bc=\\x00\\tv;tomb".to_vec());
        assert_eq!(
            parse_column(std::str::from_utf8(&line).unwrap()).unwrap(),
            raw
        );
    }

    #[test]
    fn malformed_encodings_are_refused() {
        for raw in [
            &[0x02][..],
            &[0x02, 0x02],
            &[0x02, 0x00, 0x05, 0x61],
            &[0x00, 0x01],
        ] {
            assert_eq!(decode(raw), Err(HeadersError::Malformed), "{raw:?}");
        }
    }

    proptest! {
        #[test]
        fn headers_survive_the_file_column(
            headers in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..12),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))),
                1..6)
        ) {
            let borrowed: Vec<Header<'_>> =
                headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref())).collect();
            let raw = encode(&borrowed);
            prop_assert_eq!(decode(&raw).unwrap(), borrowed.clone());
            let mut line = Vec::new();
            push_column(&raw, &mut line).unwrap();
            prop_assert!(!line.contains(&b'\t') && !line.contains(&b'\n'));
            prop_assert_eq!(parse_column(std::str::from_utf8(&line).unwrap()).unwrap(), raw);
        }
    }
}
