//! The line formats of the two audit files, and parsers that turn a line back into
//! exact bytes (for users, recovery and tests).

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use shm_layout::escape::{escape_into, unescape, UnescapeError};

/// Every message, once, in offset order.
pub const PERSIST_FILE: &str = "persistencia_mensajes.txt";
/// Every delivery of a message to a consumer.
pub const LOG_FILE: &str = "log_consumo.txt";
/// Written once, when the persistence file is created.
pub const PERSIST_HEADER: &str = "# topic\tpartition\toffset\ttimestamp\tproducer\tkey\tpayload\n";
/// Written once, when the consumption log is created.
pub const LOG_HEADER: &str =
    "# timestamp\ttopic\tpartition\toffset\tproducer\tgroup\tconsumer\tattempt\n";
/// The single topic until topics exist.
pub const TOPIC: &str = "default";
/// The single partition (written as the literal `0` in both line formats).
pub const PARTITION: u32 = 0;

/// Appends an RFC 3339 UTC timestamp with microseconds. The date and time up to the
/// second are formatted once per second per thread; only the microseconds change
/// from one record to the next.
pub fn push_timestamp(line: &mut String, micros: u64) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            cached.1.clear();
            // "2026-11-22T02:11:27Z" without its "Z".
            let _ = write!(cached.1, "{}", humantime::format_rfc3339_seconds(t));
            cached.1.pop();
            cached.0 = secs;
        }
        line.push_str(&cached.1);
    });
    let mut digits = [b'0'; 6];
    let mut f = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    line.push('.');
    line.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
    line.push('Z');
}

/// Appends one persistence line (with its newline).
pub fn push_persisted(
    line: &mut String,
    offset: u64,
    timestamp_us: u64,
    producer: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) {
    line.push_str(TOPIC);
    line.push_str("\t0\t");
    line.push_str(itoa::Buffer::new().format(offset));
    line.push('\t');
    push_timestamp(line, timestamp_us);
    line.push('\t');
    escape_into(producer.as_bytes(), line);
    line.push('\t');
    match key {
        None => line.push('-'),
        // A key that is exactly "-" must not read as "no key".
        Some(b"-") => line.push_str("\\x2d"),
        Some(k) => escape_into(k, line),
    }
    line.push('\t');
    escape_into(payload, line);
    line.push('\n');
}

/// Appends one consumption-log line (with its newline).
#[allow(clippy::too_many_arguments)]
pub fn push_delivery(
    line: &mut String,
    timestamp_us: u64,
    offset: u64,
    producer: &str,
    group: &str,
    consumer: &str,
    attempt: u32,
) {
    push_timestamp(line, timestamp_us);
    line.push('\t');
    line.push_str(TOPIC);
    line.push_str("\t0\t");
    line.push_str(itoa::Buffer::new().format(offset));
    line.push('\t');
    escape_into(producer.as_bytes(), line);
    line.push('\t');
    escape_into(group.as_bytes(), line);
    line.push('\t');
    escape_into(consumer.as_bytes(), line);
    line.push('\t');
    line.push_str(itoa::Buffer::new().format(attempt));
    line.push('\n');
}

/// Why a line could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("expected {expected} TAB-separated fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("field {0} is not a number")]
    Number(&'static str),
    #[error("field {field}: {source}")]
    Escape {
        field: &'static str,
        source: UnescapeError,
    },
}

/// A line of `persistencia_mensajes.txt`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: String,
    pub producer: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A line of `log_consumo.txt`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub timestamp: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub producer: String,
    pub group: String,
    pub consumer: String,
    pub attempt: u32,
}

fn fields<const N: usize>(line: &str) -> Result<[&str; N], ParseError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let parts: Vec<&str> = line.split('\t').collect();
    parts
        .try_into()
        .map_err(|p: Vec<&str>| ParseError::FieldCount {
            expected: N,
            found: p.len(),
        })
}

fn text(field: &'static str, raw: &str) -> Result<String, ParseError> {
    let bytes = unescape(raw).map_err(|source| ParseError::Escape { field, source })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn number<T: std::str::FromStr>(field: &'static str, raw: &str) -> Result<T, ParseError> {
    raw.parse().map_err(|_| ParseError::Number(field))
}

impl PersistedRecord {
    /// Parses a data line (not a `#` comment).
    pub fn parse(line: &str) -> Result<PersistedRecord, ParseError> {
        let [topic, partition, offset, timestamp, producer, key, payload] = fields::<7>(line)?;
        Ok(PersistedRecord {
            topic: text("topic", topic)?,
            partition: number("partition", partition)?,
            offset: number("offset", offset)?,
            timestamp: timestamp.to_string(),
            producer: text("producer", producer)?,
            key: if key == "-" {
                None
            } else {
                Some(unescape(key).map_err(|source| ParseError::Escape {
                    field: "key",
                    source,
                })?)
            },
            payload: unescape(payload).map_err(|source| ParseError::Escape {
                field: "payload",
                source,
            })?,
        })
    }
}

impl DeliveryRecord {
    /// Parses a data line (not a `#` comment).
    pub fn parse(line: &str) -> Result<DeliveryRecord, ParseError> {
        let [timestamp, topic, partition, offset, producer, group, consumer, attempt] =
            fields::<8>(line)?;
        Ok(DeliveryRecord {
            timestamp: timestamp.to_string(),
            topic: text("topic", topic)?,
            partition: number("partition", partition)?,
            offset: number("offset", offset)?,
            producer: text("producer", producer)?,
            group: text("group", group)?,
            consumer: text("consumer", consumer)?,
            attempt: number("attempt", attempt)?,
        })
    }
}

/// Microseconds since the Unix epoch of an RFC 3339 timestamp written by this module.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn persisted_lines_have_seven_fields_and_mark_absent_and_dash_keys() {
        let mut l = String::new();
        push_persisted(&mut l, 5, 1_795_832_687_123_456, "p-1", None, b"a\tb");
        assert_eq!(
            l,
            "default\t0\t5\t2026-11-28T02:24:47.123456Z\tp-1\t-\ta\\tb\n"
        );
        let r = PersistedRecord::parse(&l).unwrap();
        assert_eq!((r.offset, r.key, r.payload), (5, None, b"a\tb".to_vec()));
        l.clear();
        push_persisted(&mut l, 6, 0, "p", Some(b"-"), b"");
        assert!(l.contains("\t\\x2d\t"));
        let r = PersistedRecord::parse(&l).unwrap();
        assert_eq!(r.key, Some(b"-".to_vec()));
        assert_eq!(r.payload, b"");
        assert_eq!(r.timestamp, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn cached_timestamps_match_a_full_formatting() {
        for us in [
            0,
            999_999,
            1_000_000,
            1_795_832_687_123_456,
            1_795_832_687_000_001,
            1_795_832_688_000_000,
        ] {
            let mut l = String::new();
            push_timestamp(&mut l, us);
            let full = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us))
                .to_string();
            assert_eq!(l, full);
        }
    }

    #[test]
    fn delivery_lines_have_eight_fields() {
        let mut l = String::new();
        push_delivery(&mut l, 1_000_001, 9, "p", "g", "c", 2);
        assert_eq!(
            l,
            "1970-01-01T00:00:01.000001Z\tdefault\t0\t9\tp\tg\tc\t2\n"
        );
        let d = DeliveryRecord::parse(&l).unwrap();
        assert_eq!((d.offset, d.attempt, d.consumer.as_str()), (9, 2, "c"));
        assert_eq!(parse_timestamp(&d.timestamp), Some(1_000_001));
        assert!(DeliveryRecord::parse("a\tb").is_err());
    }

    proptest! {
        #[test]
        fn any_key_and_payload_survive_a_persisted_line(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut l = String::new();
            push_persisted(&mut l, 1, 2, "prod", key.as_deref(), &payload);
            prop_assert_eq!(l.matches('\n').count(), 1);
            let r = PersistedRecord::parse(&l).unwrap();
            prop_assert_eq!(r.key, key);
            prop_assert_eq!(r.payload, payload);
        }
    }
}
