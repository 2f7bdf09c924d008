//! The line formats of the two audit files, and parsers that turn a line back into
//! exact bytes (for users, recovery and tests).

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

/// Formats RFC 3339 UTC timestamps with microseconds. The date and time up to the
/// second are formatted once per second; only the microseconds change from one
/// record to the next.
pub struct Timestamps {
    /// "2026-11-22T02:11:27" (with room for years past 9999), and its length.
    text: [u8; 32],
    len: usize,
    /// The second `text` shows.
    second: u64,
}

impl Default for Timestamps {
    fn default() -> Self {
        Timestamps {
            text: [0; 32],
            len: 0,
            second: u64::MAX,
        }
    }
}

impl Timestamps {
    /// Appends the timestamp of `micros` since the Unix epoch.
    pub fn push(&mut self, line: &mut Vec<u8>, micros: u64) {
        let (secs, frac) = (micros / 1_000_000, micros % 1_000_000);
        if self.second != secs {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let full = humantime::format_rfc3339_seconds(t).to_string();
            let date = full.strip_suffix('Z').unwrap_or(&full).as_bytes();
            self.len = date.len().min(self.text.len());
            self.text[..self.len].copy_from_slice(&date[..self.len]);
            self.second = secs;
        }
        line.extend_from_slice(&self.text[..self.len]);
        let mut tail = *b".000000Z";
        let mut f = frac;
        for d in tail[1..7].iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        line.extend_from_slice(&tail);
    }
}

/// Appends an RFC 3339 UTC timestamp with microseconds.
pub fn push_timestamp(line: &mut Vec<u8>, micros: u64) {
    Timestamps::default().push(line, micros);
}

/// Appends a decimal number.
fn push_number(line: &mut Vec<u8>, n: u64) {
    line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Formats persistence lines, keeping what repeats from one record to the next (the
/// second of the timestamp, the escaped producer id).
#[derive(Default)]
pub struct PersistedLines {
    timestamps: Timestamps,
    producer: String,
    producer_escaped: Vec<u8>,
}

impl PersistedLines {
    /// Appends one persistence line (with its newline).
    pub fn push(
        &mut self,
        line: &mut Vec<u8>,
        offset: u64,
        timestamp_us: u64,
        producer: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        if self.producer != producer {
            self.producer = producer.to_string();
            self.producer_escaped.clear();
            escape_into(producer.as_bytes(), &mut self.producer_escaped);
        }
        line.extend_from_slice(TOPIC.as_bytes());
        line.extend_from_slice(b"\t0\t");
        push_number(line, offset);
        line.push(b'\t');
        self.timestamps.push(line, timestamp_us);
        line.push(b'\t');
        line.extend_from_slice(&self.producer_escaped);
        line.push(b'\t');
        match key {
            None => line.push(b'-'),
            // A key that is exactly "-" must not read as "no key".
            Some(b"-") => line.extend_from_slice(b"\\x2d"),
            Some(k) => escape_into(k, line),
        }
        line.push(b'\t');
        escape_into(payload, line);
        line.push(b'\n');
    }
}

/// Formats consumption-log lines that share one timestamp (deliveries seen together),
/// keeping the fields after the offset while they repeat: a run of deliveries from
/// one producer to one consumer costs a copy and a number per line.
#[derive(Default)]
pub struct DeliveryLines {
    timestamps: Timestamps,
    /// "<timestamp>\tdefault\t0\t".
    prefix: Vec<u8>,
    /// What `suffix` was formatted from.
    fields: Option<(String, String, String, u32)>,
    /// "\t<producer>\t<group>\t<consumer>\t<attempt>\n".
    suffix: Vec<u8>,
}

impl DeliveryLines {
    /// Lines stamped with `timestamp_us`.
    pub fn new(timestamp_us: u64) -> Self {
        let mut lines = DeliveryLines::default();
        lines.set_time(timestamp_us);
        lines
    }

    /// Stamps the following lines with `timestamp_us`.
    pub fn set_time(&mut self, timestamp_us: u64) {
        self.prefix.clear();
        self.timestamps.push(&mut self.prefix, timestamp_us);
        self.prefix.push(b'\t');
        self.prefix.extend_from_slice(TOPIC.as_bytes());
        self.prefix.extend_from_slice(b"\t0\t");
    }

    /// Appends one consumption-log line (with its newline).
    pub fn push(
        &mut self,
        line: &mut Vec<u8>,
        offset: u64,
        producer: &str,
        group: &str,
        consumer: &str,
        attempt: u32,
    ) {
        let same = self.fields.as_ref().is_some_and(|(p, g, c, a)| {
            *a == attempt && p == producer && c == consumer && g == group
        });
        if !same {
            self.suffix.clear();
            for field in [producer, group, consumer] {
                self.suffix.push(b'\t');
                escape_into(field.as_bytes(), &mut self.suffix);
            }
            self.suffix.push(b'\t');
            push_number(&mut self.suffix, u64::from(attempt));
            self.suffix.push(b'\n');
            self.fields = Some((producer.into(), group.into(), consumer.into(), attempt));
        }
        line.extend_from_slice(&self.prefix);
        push_number(line, offset);
        line.extend_from_slice(&self.suffix);
    }
}

/// Appends one consumption-log line (with its newline).
pub fn push_delivery(
    line: &mut Vec<u8>,
    timestamp_us: u64,
    offset: u64,
    producer: &str,
    group: &str,
    consumer: &str,
    attempt: u32,
) {
    DeliveryLines::new(timestamp_us).push(line, offset, producer, group, consumer, attempt);
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

    fn as_text(line: &[u8]) -> &str {
        std::str::from_utf8(line).expect("audit lines are UTF-8")
    }

    #[test]
    fn persisted_lines_have_seven_fields_and_mark_absent_and_dash_keys() {
        let mut l = Vec::new();
        PersistedLines::default().push(&mut l, 5, 1_795_832_687_123_456, "p-1", None, b"a\tb");
        assert_eq!(
            l,
            b"default\t0\t5\t2026-11-28T02:24:47.123456Z\tp-1\t-\ta\\tb\n"
        );
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
        assert_eq!((r.offset, r.key, r.payload), (5, None, b"a\tb".to_vec()));
        l.clear();
        PersistedLines::default().push(&mut l, 6, 0, "p", Some(b"-"), b"");
        assert!(as_text(&l).contains("\t\\x2d\t"));
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
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
            let mut l = Vec::new();
            push_timestamp(&mut l, us);
            let full = humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us))
                .to_string();
            assert_eq!(as_text(&l), full);
        }
    }

    #[test]
    fn delivery_lines_have_eight_fields() {
        let mut l = Vec::new();
        push_delivery(&mut l, 1_000_001, 9, "p", "g", "c", 2);
        assert_eq!(
            l,
            b"1970-01-01T00:00:01.000001Z\tdefault\t0\t9\tp\tg\tc\t2\n"
        );
        let d = DeliveryRecord::parse(as_text(&l)).unwrap();
        assert_eq!((d.offset, d.attempt, d.consumer.as_str()), (9, 2, "c"));
        assert_eq!(parse_timestamp(&d.timestamp), Some(1_000_001));
        assert!(DeliveryRecord::parse("a\tb").is_err());
    }

    #[test]
    fn formatters_that_keep_repeated_fields_write_the_same_lines_as_one_offs() {
        let deliveries = [
            (1, "p1", "g", "c1", 1),
            (2, "p1", "g", "c1", 1),
            (3, "p2", "g", "c1", 1),
            (4, "p2", "g", "c2", 1),
            (5, "p2", "h", "c2", 1),
            (6, "p2", "h", "c2", 3),
            (7, "p\t", "h", "c2", 3),
        ];
        let mut kept = Vec::new();
        let mut lines = DeliveryLines::new(1_795_832_687_123_456);
        let mut one_offs = Vec::new();
        for (o, p, g, c, a) in deliveries {
            lines.push(&mut kept, o, p, g, c, a);
            push_delivery(&mut one_offs, 1_795_832_687_123_456, o, p, g, c, a);
        }
        assert_eq!(as_text(&kept), as_text(&one_offs));

        let records = [
            (1, 1_795_832_687_123_456, "p1", None, &b"a"[..]),
            (2, 1_795_832_687_999_999, "p1", Some(&b"k"[..]), b"b\xff"),
            (3, 1_795_832_688_000_000, "p2", None, b""),
            (4, 1_795_832_688_000_001, "p1", None, b"c"),
        ];
        let (mut kept, mut one_offs) = (Vec::new(), Vec::new());
        let mut lines = PersistedLines::default();
        for (o, t, p, k, v) in records {
            lines.push(&mut kept, o, t, p, k, v);
            PersistedLines::default().push(&mut one_offs, o, t, p, k, v);
        }
        assert_eq!(as_text(&kept), as_text(&one_offs));
        assert!(as_text(&kept).contains("\tp2\t"));
    }

    proptest! {
        #[test]
        fn any_key_and_payload_survive_a_persisted_line(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut l = Vec::new();
            PersistedLines::default().push(&mut l, 1, 2, "prod", key.as_deref(), &payload);
            prop_assert_eq!(as_text(&l).matches('\n').count(), 1);
            let r = PersistedRecord::parse(as_text(&l)).unwrap();
            prop_assert_eq!(r.key, key);
            prop_assert_eq!(r.payload, payload);
        }
    }
}
