//! The lossless text escaping of SPEC §6, used by the audit files and the consumer's
//! text output: `\\`, `\t`, `\n`, `\r`, and `\xhh` for every other control byte
//! (0x00–0x1F, 0x7F) and every byte that is not part of valid UTF-8. All other
//! text, multi-byte UTF-8 included, stays as it is.

/// Appends the escaped form of `bytes` to `out`. Runs of text that need no escape
/// are copied whole; only the bytes that do are handled one by one.
pub fn escape_into(bytes: &[u8], out: &mut String) {
    // The common case, plain printable ASCII, is one scan and one copy. The scan
    // does not stop early, so that it compiles to wide compares.
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (0x20..0x7F).contains(&b) & (b != b'\\'));
    if plain {
        // SAFETY: every byte is in 0x20..0x7F, so the slice is ASCII, hence UTF-8.
        out.push_str(unsafe { std::str::from_utf8_unchecked(bytes) });
        return;
    }
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        let mut copied = 0;
        for (i, b) in text.bytes().enumerate() {
            if b >= 0x20 && b != 0x7F && b != b'\\' {
                continue;
            }
            // `i` is an ASCII byte, so both slices end on character boundaries.
            out.push_str(&text[copied..i]);
            push_escaped_byte(b, out);
            copied = i + 1;
        }
        out.push_str(&text[copied..]);
        for &b in chunk.invalid() {
            push_hex(b, out);
        }
    }
}

fn push_escaped_byte(b: u8, out: &mut String) {
    match b {
        b'\\' => out.push_str("\\\\"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        other => push_hex(other, out),
    }
}

fn push_hex(b: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// The escaped form of `bytes`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_into(bytes, &mut s);
    s
}

/// Why a field could not be unescaped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnescapeError {
    #[error("backslash at byte {0} starts no known escape")]
    UnknownEscape(usize),
    #[error("\\x at byte {0} is not followed by two lower-case hex digits")]
    BadHex(usize),
    #[error("raw control character at byte {0}")]
    RawControl(usize),
}

/// Decodes an escaped field back to the exact bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, UnescapeError> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                match b.get(i + 1) {
                    Some(b'\\') => out.push(b'\\'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b'x') => {
                        let hex = |j: usize| match b.get(j) {
                            Some(&c @ b'0'..=b'9') => Some(c - b'0'),
                            Some(&c @ b'a'..=b'f') => Some(c - b'a' + 10),
                            _ => None,
                        };
                        match (hex(i + 2), hex(i + 3)) {
                            (Some(h), Some(l)) => out.push(h << 4 | l),
                            _ => return Err(UnescapeError::BadHex(i)),
                        }
                        i += 2;
                    }
                    _ => return Err(UnescapeError::UnknownEscape(i)),
                }
                i += 2;
            }
            c if c < 0x20 || c == 0x7F => return Err(UnescapeError::RawControl(i)),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_follow_the_spec() {
        assert_eq!(escape(b"a\tb\nc\rd\\e"), "a\\tb\\nc\\rd\\\\e");
        assert_eq!(escape(b"\x00\x1f\x7f"), "\\x00\\x1f\\x7f");
        assert_eq!(escape("héllo €".as_bytes()), "héllo €");
        assert_eq!(escape(b"\xff\xc3"), "\\xff\\xc3");
        assert_eq!(escape(b""), "");
    }

    #[test]
    fn escaped_text_has_no_tab_or_newline() {
        let all: Vec<u8> = (0..=255u8).collect();
        let s = escape(&all);
        assert!(!s.contains(['\t', '\n', '\r']));
    }

    #[test]
    fn malformed_escapes_are_errors() {
        assert_eq!(unescape("\\q"), Err(UnescapeError::UnknownEscape(0)));
        assert_eq!(unescape("a\\xF0"), Err(UnescapeError::BadHex(1)));
        assert_eq!(unescape("a\\"), Err(UnescapeError::UnknownEscape(1)));
        assert_eq!(unescape("\t"), Err(UnescapeError::RawControl(0)));
    }

    proptest! {
        #[test]
        fn unescape_inverts_escape(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(unescape(&escape(&bytes)).unwrap(), bytes);
        }
    }
}
