//! The lossless text escaping of SPEC §6, used by the audit files and the consumer's
//! text output: `\\`, `\t`, `\n`, `\r`, and `\xhh` for every other control byte
//! (0x00–0x1F, 0x7F) and every byte that is not part of valid UTF-8. All other
//! text, multi-byte UTF-8 included, stays as it is.

/// Appends the escaped form of `bytes` to `out` (which stays valid UTF-8 if it was).
/// Runs of text that need no escape are found eight bytes at a time and copied
/// whole; only bytes that need an escape, and the lead bytes of multi-byte
/// characters (validated in place), are looked at one by one.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    let first = first_needing_attention(bytes);
    out.extend_from_slice(&bytes[..first]);
    if first < bytes.len() {
        escape_rest(&bytes[first..], out);
    }
}

/// How many leading bytes are plain printable ASCII, counted in whole words (so it
/// may stop up to seven bytes early, where `escape_rest` takes over) and exactly in
/// the tail shorter than a word.
fn first_needing_attention(bytes: &[u8]) -> usize {
    // Sixteen bytes at a time first: the test of each byte is written without an
    // early exit, so the compiler checks them all with a few vector instructions.
    let mut i = 0;
    for block in bytes.chunks_exact(16) {
        let block: &[u8; 16] = block.try_into().expect("sixteen bytes");
        let attention = block.iter().fold(false, |any, &b| {
            any | !(0x20..=0x7E).contains(&b) | (b == b'\\')
        });
        if attention {
            break;
        }
        i += 16;
    }
    let words = bytes[i..].chunks_exact(8);
    let tail = words.remainder();
    for word in words {
        if needs_attention(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
            return i;
        }
        i += 8;
    }
    let plain = tail
        .iter()
        .take_while(|&&b| FORMS[b as usize].1 == 1)
        .count();
    i + plain
}

/// How each byte is written: its escaped form padded to four bytes, and how many of
/// those four count (0 for a byte that may start a multi-byte character, whose
/// form applies only when it does not).
const FORMS: [([u8; 4], u8); 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut forms = [([0u8; 4], 0u8); 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        forms[b] = match byte {
            b'\\' => (*b"\\\\\0\0", 2),
            b'\t' => (*b"\\t\0\0", 2),
            b'\n' => (*b"\\n\0\0", 2),
            b'\r' => (*b"\\r\0\0", 2),
            0x20..=0x7E => ([byte, 0, 0, 0], 1),
            _ => (
                [
                    b'\\',
                    b'x',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 15) as usize],
                ],
                if matches!(byte, 0xC2..=0xF4) { 0 } else { 4 },
            ),
        };
        b += 1;
    }
    forms
};

/// Escapes `bytes` into `out`, writing into space reserved for the worst case (four
/// output bytes per input byte): every byte is one fixed-size store, and runs of
/// plain text move eight bytes at a time.
fn escape_rest(bytes: &[u8], out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + bytes.len() * 4, 0);
    let dst = &mut out[base..];
    let (mut w, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let word: [u8; 8] = word.try_into().expect("eight bytes");
            if !needs_attention(u64::from_le_bytes(word)) {
                dst[w..w + 8].copy_from_slice(&word);
                (w, i) = (w + 8, i + 8);
                continue;
            }
        }
        // Byte by byte through the word that needs it.
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            let (form, mut len) = FORMS[b as usize];
            if len == 0 {
                if let Some(n) = utf8_sequence_len(&bytes[i..]) {
                    dst[w..w + n].copy_from_slice(&bytes[i..i + n]);
                    (w, i) = (w + n, i + n);
                    continue;
                }
                len = 4;
            }
            dst[w..w + 4].copy_from_slice(&form);
            (w, i) = (w + len as usize, i + 1);
        }
    }
    out.truncate(base + w);
}

/// Whether any of the eight bytes packed in `word` is outside printable ASCII
/// (below 0x20, 0x7F or above) or is a backslash. Word-at-a-time tests: a byte
/// below `n` makes `x - n` borrow into its top bit where `x` had none; a byte above
/// 0x7E sets its top bit when 1 is added (or had it already).
fn needs_attention(word: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const TOPS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & TOPS;
    let control = below(word, 0x20);
    let high = (word.wrapping_add(ONES) | word) & TOPS;
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    control | high | backslash != 0
}

/// The length of the valid UTF-8 sequence (2 to 4 bytes) that starts `bytes`, whose
/// first byte is 0x80 or above; `None` when it does not start one.
fn utf8_sequence_len(bytes: &[u8]) -> Option<usize> {
    let cont = |k: usize| bytes.get(k).is_some_and(|b| b & 0xC0 == 0x80);
    let second = *bytes.get(1)?;
    // The allowed range of the second byte excludes overlong forms, UTF-16
    // surrogates and code points above U+10FFFF.
    let (len, lo, hi) = match bytes[0] {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return None,
    };
    ((lo..=hi).contains(&second) && (2..len).all(cont)).then_some(len)
}

/// The escaped form of `bytes`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len());
    escape_into(bytes, &mut s);
    String::from_utf8(s).expect("escaped text is UTF-8")
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
    unescape_bytes(text.as_bytes())
}

/// As [`unescape`], for a field taken from a line as bytes: its bytes above 0x7F
/// (text in UTF-8) stand for themselves.
pub fn unescape_bytes(b: &[u8]) -> Result<Vec<u8>, UnescapeError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Runs of bytes that stand for themselves are copied whole.
        let run = plain_run(&b[i..]);
        out.extend_from_slice(&b[i..i + run]);
        i += run;
        if i == b.len() {
            break;
        }
        if b[i] != b'\\' {
            return Err(UnescapeError::RawControl(i));
        }
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
    Ok(out)
}

/// How many bytes from the start of `b` stand for themselves: up to the first
/// backslash, control byte (below 0x20) or DEL. Eight bytes are looked at a time
/// (the classic test for a byte below a bound, or equal to one, in a word), then
/// the word that has one byte by byte.
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let special = below_space | has_zero(x ^ (ONES * 0x7F)) | has_zero(x ^ (ONES * 0x5C));
        if special != 0 {
            break;
        }
        i += 8;
    }
    i + b[i..]
        .iter()
        .position(|&c| c == b'\\' || c < 0x20 || c == 0x7F)
        .unwrap_or(b.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_word_at_a_time_scan_stops_where_a_byte_at_a_time_one_does(
            b in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let naive = b.iter().position(|&c| c == b'\\' || c < 0x20 || c == 0x7F).unwrap_or(b.len());
            prop_assert_eq!(plain_run(&b), naive);
        }
    }

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

    /// The definition of §6, written plainly: text split into valid UTF-8 and
    /// invalid bytes, controls and backslash escaped, invalid bytes as `\\xhh`.
    fn escape_by_definition(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 || c as u32 == 0x7F => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => out.push(c),
                }
            }
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }

    /// Bytes biased towards what is hard to escape: UTF-8 lead and continuation
    /// bytes, controls, backslashes, and runs of plain text around them.
    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            any::<u8>(),
            0x80u8..0xC0,
            0xC0u8..=0xFF,
            Just(b'\\'),
            Just(0x7F),
            0x20u8..0x7F,
        ];
        proptest::collection::vec(byte, 0..96)
    }

    #[test]
    fn every_code_point_boundary_matches_the_definition() {
        for c in [
            '\u{7F}',
            '\u{80}',
            '\u{7FF}',
            '\u{800}',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            let mut buf = [0; 4];
            let s = c.encode_utf8(&mut buf);
            let padded = format!("abcdefgh{s}ijklmnop");
            assert_eq!(
                escape(padded.as_bytes()),
                escape_by_definition(padded.as_bytes())
            );
        }
        // Surrogates, overlong forms and beyond U+10FFFF are not UTF-8.
        for bad in [
            &b"\xED\xA0\x80"[..],
            b"\xC0\xAF",
            b"\xE0\x80\xAF",
            b"\xF4\x90\x80\x80",
            b"\xF8\x88\x80\x80\x80",
        ] {
            assert_eq!(escape(bad), escape_by_definition(bad), "{bad:x?}");
        }
    }

    proptest! {
        #[test]
        fn escape_matches_the_definition(bytes in tricky_bytes()) {
            prop_assert_eq!(escape(&bytes), escape_by_definition(&bytes));
        }

        #[test]
        fn unescape_inverts_escape(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert_eq!(unescape(&escape(&bytes)).unwrap(), bytes);
        }
    }
}
