//! The line formats of the two audit files, and parsers that turn a line back into
//! exact bytes (for users, recovery and tests).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::escape::{escape_into, unescape, UnescapeError};

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
/// The numeric id of [`TOPIC`], which names its files in the data directory (SPEC §11).
pub const TOPIC_ID: u32 = 0;

/// Formats RFC 3339 UTC timestamps with microseconds. The date and time up to the
/// second are formatted once per second; only the microseconds change from one
/// record to the next.
#[derive(Debug)]
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

/// How many decimal digits `n` takes.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// The numbers written with as many decimal digits as `n`: a kept line whose
/// number is `n` can take any of them by stepping its digits in place.
fn same_decimal_len(n: u64) -> std::ops::Range<u64> {
    let len = decimal_len(n) as u32;
    let from = if len == 1 { 0 } else { 10u64.pow(len - 1) };
    from..10u64.checked_pow(len).unwrap_or(u64::MAX)
}

/// Writes `n` in decimal into `digits`, right-aligned and zero-padded: with exactly
/// [`decimal_len`] digits it is `n`'s plain decimal form.
fn write_decimal(digits: &mut [u8], mut n: u64) {
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Turns the decimal digits of `old` in `digits` into those of `new` (of the same
/// length). Offsets mostly grow by a small step from one line to the next, which
/// changes the last digit or two: those are adjusted in place.
fn rewrite_decimal(digits: &mut [u8], old: u64, new: u64) {
    if let Some(step @ 1..=9) = new.checked_sub(old) {
        let mut carry = step as u8;
        for d in digits.iter_mut().rev() {
            let v = *d - b'0' + carry;
            if v < 10 {
                *d = b'0' + v;
                return;
            }
            *d = b'0' + v - 10;
            carry = 1;
        }
    }
    write_decimal(digits, new);
}

/// Appends one persistence line (with its newline), formatting every field afresh:
/// the reference that [`PersistedLines`] must match.
pub fn push_persisted(
    line: &mut Vec<u8>,
    offset: u64,
    timestamp_us: u64,
    producer: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) {
    push_persisted_with_headers(line, offset, timestamp_us, producer, key, payload, &[]);
}

/// As [`push_persisted`], for a record with `headers` (Kafka's encoding, empty
/// for none: see [`crate::headers`]).
pub fn push_persisted_with_headers(
    line: &mut Vec<u8>,
    offset: u64,
    timestamp_us: u64,
    producer: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[u8],
) {
    line.extend_from_slice(TOPIC.as_bytes());
    line.extend_from_slice(b"\t0\t");
    push_number(line, offset);
    line.push(b'\t');
    push_timestamp(line, timestamp_us);
    line.push(b'\t');
    escape_into(producer.as_bytes(), line);
    line.push(b'\t');
    push_key_and_payload(line, key, payload, headers);
}

/// The last fields of a persistence line (key, payload, and headers when there
/// are), and its newline. Headers the ring holds malformed (a scribbled region)
/// are left out rather than written wrong.
fn push_key_and_payload(line: &mut Vec<u8>, key: Option<&[u8]>, payload: &[u8], headers: &[u8]) {
    match key {
        None => line.extend_from_slice(b"-\t"),
        // A key that is exactly "-" must not read as "no key".
        Some(b"-") => line.extend_from_slice(b"\\x2d\t"),
        Some(k) => {
            escape_into(k, line);
            line.push(b'\t');
        }
    }
    escape_into(payload, line);
    if !headers.is_empty() {
        let before = line.len();
        line.push(b'\t');
        if crate::headers::push_column(headers, line).is_err() {
            line.truncate(before);
        }
    }
    line.push(b'\n');
}

/// Formats persistence lines of one topic-partition. Consecutive records share most
/// of a line's start (topic, partition, the offset's length, the timestamp's second,
/// the producer), so it is kept formatted and only the offset's and the
/// microseconds' digits are rewritten in place: a record costs one copy of that
/// start, a scan of its payload for bytes to escape, and a copy of the payload.
/// `PersistedLines::default()` writes lines of topic [`TOPIC`], partition
/// [`PARTITION`].
pub struct PersistedLines {
    /// `<topic>\t<partition>\t`: the fields every line of this formatter starts with.
    partition_fields: Vec<u8>,
    timestamps: Timestamps,
    /// `default\t0\t<offset>\t<timestamp>\t<producer>\t` of the last line.
    head: Vec<u8>,
    /// What `head` was formatted for; None before the first line.
    shown: Option<HeadFields>,
}

/// The fields a [`PersistedLines`] head shows, and where its variable digits are.
struct HeadFields {
    /// Compared by identity: the caller hands the same `Arc` for the same producer.
    producer: Arc<str>,
    second: u64,
    micros: u64,
    offset: u64,
    offset_digits: std::ops::Range<usize>,
    /// Offsets with as many digits as `offset`.
    same_length: std::ops::Range<u64>,
    micros_at: usize,
}

/// `<topic>\t<partition>\t`, the fields that name a line's topic-partition.
fn partition_fields(topic: &str, partition: u32) -> Vec<u8> {
    let mut fields = Vec::new();
    escape_into(topic.as_bytes(), &mut fields);
    fields.push(b'\t');
    push_number(&mut fields, u64::from(partition));
    fields.push(b'\t');
    fields
}

impl Default for PersistedLines {
    fn default() -> Self {
        PersistedLines::for_partition(TOPIC, PARTITION)
    }
}

impl PersistedLines {
    /// A formatter of the lines of `topic`'s partition `partition`.
    pub fn for_partition(topic: &str, partition: u32) -> Self {
        PersistedLines {
            partition_fields: partition_fields(topic, partition),
            timestamps: Timestamps::default(),
            head: Vec::new(),
            shown: None,
        }
    }

    /// Appends one persistence line (with its newline).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        line: &mut Vec<u8>,
        offset: u64,
        timestamp_us: u64,
        producer: &Arc<str>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[u8],
    ) {
        let (second, micros) = (timestamp_us / 1_000_000, timestamp_us % 1_000_000);
        let reusable = self.shown.as_mut().filter(|s| {
            s.second == second
                && Arc::ptr_eq(&s.producer, producer)
                && s.same_length.contains(&offset)
        });
        match reusable {
            Some(s) => {
                rewrite_decimal(&mut self.head[s.offset_digits.clone()], s.offset, offset);
                s.offset = offset;
                // Several records share a microsecond at full speed.
                if s.micros != micros {
                    let at = s.micros_at;
                    write_decimal(&mut self.head[at..at + 6], micros);
                    s.micros = micros;
                }
            }
            None => self.format_head(offset, timestamp_us, producer),
        }
        line.extend_from_slice(&self.head);
        push_key_and_payload(line, key, payload, headers);
    }

    fn format_head(&mut self, offset: u64, timestamp_us: u64, producer: &Arc<str>) {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(&self.partition_fields);
        let digits_start = head.len();
        push_number(head, offset);
        let offset_digits = digits_start..head.len();
        head.push(b'\t');
        self.timestamps.push(head, timestamp_us);
        // The timestamp ends with ".ffffffZ".
        let micros_at = head.len() - 7;
        head.push(b'\t');
        escape_into(producer.as_bytes(), head);
        head.push(b'\t');
        self.shown = Some(HeadFields {
            producer: producer.clone(),
            second: timestamp_us / 1_000_000,
            micros: timestamp_us % 1_000_000,
            offset,
            offset_digits,
            same_length: same_decimal_len(offset),
            micros_at,
        });
    }
}

/// Appends one consumption-log line of `default`/0 (with its newline), formatting
/// every field afresh: the reference that [`DeliveryLines`] must match.
pub fn push_delivery(
    line: &mut Vec<u8>,
    timestamp_us: u64,
    offset: u64,
    producer: &str,
    group: &str,
    consumer: &str,
    attempt: u32,
) {
    let delivery = Delivery {
        topic: TOPIC,
        partition: PARTITION,
        offset,
        producer,
        group,
        consumer,
        attempt,
    };
    push_delivery_of(line, timestamp_us, &delivery);
}

/// One delivery of a message, as its consumption-log line tells it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub producer: &'a str,
    pub group: &'a str,
    pub consumer: &'a str,
    pub attempt: u32,
}

/// Appends the consumption-log line of `d` (with its newline), formatting every
/// field afresh.
pub fn push_delivery_of(line: &mut Vec<u8>, timestamp_us: u64, d: &Delivery<'_>) {
    push_timestamp(line, timestamp_us);
    line.push(b'\t');
    line.extend_from_slice(&partition_fields(d.topic, d.partition));
    push_number(line, d.offset);
    push_delivery_suffix(line, d.producer, d.group, d.consumer, d.attempt);
}

/// "\t<producer>\t<group>\t<consumer>\t<attempt>\n".
fn push_delivery_suffix(
    line: &mut Vec<u8>,
    producer: &str,
    group: &str,
    consumer: &str,
    attempt: u32,
) {
    for field in [producer, group, consumer] {
        line.push(b'\t');
        escape_into(field.as_bytes(), line);
    }
    line.push(b'\t');
    push_number(line, u64::from(attempt));
    line.push(b'\n');
}

/// How many kinds of delivery line (producer, group, consumer, attempt) a
/// [`DeliveryLines`] keeps formatted.
const RECENT_KINDS: usize = 16;

/// Formats consumption-log lines that share one timestamp (deliveries seen
/// together). Deliveries come in runs of a few kinds: one producer's messages handed
/// in turn to a group's members. The last line of each recent kind is kept whole and
/// only its offset's digits are rewritten in place: a line costs a lookup among the
/// kinds (by identity), the digits, and one copy.
#[derive(Debug)]
pub struct DeliveryLines {
    /// `<topic>\t<partition>\t`: the fields after the timestamp of every line.
    partition_fields: Vec<u8>,
    timestamps: Timestamps,
    /// `<timestamp>\tdefault\t0\t` for the time set last.
    prefix: Vec<u8>,
    /// Counts `set_time` calls: a kept line formatted under an older time is rebuilt.
    time: u64,
    recent: Vec<RecentLine>,
    /// Where the last lookup hit (the next kind is most often right after it), and
    /// which entry a new kind replaces once `recent` is full.
    last_hit: usize,
    next_victim: usize,
}

/// One kind of delivery line, kept formatted.
#[derive(Debug)]
struct RecentLine {
    /// Compared by identity: callers hand the same `Arc` for the same name.
    producer: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
    attempt: u32,
    /// "\t<producer>\t<group>\t<consumer>\t<attempt>\n".
    suffix: Vec<u8>,
    /// The last line of this kind, formatted under `time`, and where its offset's
    /// digits are.
    line: Vec<u8>,
    time: u64,
    offset: u64,
    digits: std::ops::Range<usize>,
    /// Offsets with as many digits as `offset`.
    same_length: std::ops::Range<u64>,
}

impl RecentLine {
    fn is(&self, producer: &Arc<str>, group: &Arc<str>, consumer: &Arc<str>, attempt: u32) -> bool {
        self.attempt == attempt
            && Arc::ptr_eq(&self.consumer, consumer)
            && Arc::ptr_eq(&self.producer, producer)
            && Arc::ptr_eq(&self.group, group)
    }
}

impl Default for DeliveryLines {
    /// Lines of topic [`TOPIC`], partition [`PARTITION`].
    fn default() -> Self {
        DeliveryLines::for_partition(TOPIC, PARTITION)
    }
}

impl DeliveryLines {
    /// Lines of `topic`'s partition `partition`.
    pub fn for_partition(topic: &str, partition: u32) -> Self {
        DeliveryLines {
            partition_fields: partition_fields(topic, partition),
            timestamps: Timestamps::default(),
            prefix: Vec::new(),
            time: 0,
            recent: Vec::new(),
            last_hit: 0,
            next_victim: 0,
        }
    }

    /// Lines of `topic`'s partition `partition`, stamped with `timestamp_us`.
    pub fn new_for(topic: &str, partition: u32, timestamp_us: u64) -> Self {
        let mut lines = DeliveryLines::for_partition(topic, partition);
        lines.set_time(timestamp_us);
        lines
    }

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
        self.prefix.extend_from_slice(&self.partition_fields);
        self.time += 1;
    }

    /// Appends one consumption-log line (with its newline).
    pub fn push(
        &mut self,
        line: &mut Vec<u8>,
        offset: u64,
        producer: &Arc<str>,
        group: &Arc<str>,
        consumer: &Arc<str>,
        attempt: u32,
    ) {
        let i = self
            .find(producer, group, consumer, attempt)
            .unwrap_or_else(|| {
                self.remember(RecentLine {
                    producer: producer.clone(),
                    group: group.clone(),
                    consumer: consumer.clone(),
                    attempt,
                    suffix: {
                        let mut suffix = Vec::new();
                        push_delivery_suffix(&mut suffix, producer, group, consumer, attempt);
                        suffix
                    },
                    line: Vec::new(),
                    time: 0,
                    offset: 0,
                    digits: 0..0,
                    same_length: 0..0,
                })
            });
        self.last_hit = i;
        let kind = &mut self.recent[i];
        if kind.time == self.time && kind.same_length.contains(&offset) {
            rewrite_decimal(&mut kind.line[kind.digits.clone()], kind.offset, offset);
        } else {
            kind.line.clear();
            kind.line.extend_from_slice(&self.prefix);
            let start = kind.line.len();
            push_number(&mut kind.line, offset);
            kind.digits = start..kind.line.len();
            kind.same_length = same_decimal_len(offset);
            kind.line.extend_from_slice(&kind.suffix);
            kind.time = self.time;
        }
        kind.offset = offset;
        line.extend_from_slice(&kind.line);
    }

    fn find(
        &self,
        producer: &Arc<str>,
        group: &Arc<str>,
        consumer: &Arc<str>,
        attempt: u32,
    ) -> Option<usize> {
        let n = self.recent.len();
        (self.last_hit..n)
            .chain(0..self.last_hit.min(n))
            .find(|&i| self.recent[i].is(producer, group, consumer, attempt))
    }

    /// Keeps `kind`, replacing the oldest one once full; returns its index.
    fn remember(&mut self, kind: RecentLine) -> usize {
        if self.recent.len() < RECENT_KINDS {
            self.recent.push(kind);
            return self.recent.len() - 1;
        }
        let i = self.next_victim;
        self.next_victim = (i + 1) % RECENT_KINDS;
        self.recent[i] = kind;
        i
    }
}

/// Why a line could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("expected {expected} TAB-separated fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("field {0} is not a number")]
    Number(&'static str),
    #[error("field timestamp is not an RFC 3339 time")]
    Timestamp,
    #[error("field {field}: {source}")]
    Escape {
        field: &'static str,
        source: UnescapeError,
    },
    #[error("field headers is not a list of escaped name=value pairs")]
    Headers,
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
    /// Its headers in Kafka's encoding ([`crate::headers`]), empty for none:
    /// the line's eighth column, which lines without headers (and every line
    /// written before headers existed) do not have.
    pub headers: Vec<u8>,
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
    let mut out = [""; N];
    let mut parts = line.split('\t');
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = parts.next().ok_or(ParseError::FieldCount {
            expected: N,
            found: i,
        })?;
    }
    match parts.count() {
        0 => Ok(out),
        more => Err(ParseError::FieldCount {
            expected: N,
            found: N + more,
        }),
    }
}

fn text(field: &'static str, raw: &str) -> Result<String, ParseError> {
    let bytes = unescape(raw).map_err(|source| ParseError::Escape { field, source })?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn number<T: std::str::FromStr>(field: &'static str, raw: &str) -> Result<T, ParseError> {
    raw.parse().map_err(|_| ParseError::Number(field))
}

/// The fields that place a persistence line: its first three (topic, partition,
/// offset), read without looking at the rest. Readers of the file as a log use it
/// to skip the lines of other partitions, and to find a line's offset, without
/// unescaping payloads; [`PersistedRecord::parse`] reads these fields through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistedLineHead<'a> {
    /// The topic field as written. Topic names never need escaping (SPEC §11), so
    /// this is the name; compare it with the escaped name to be exact for any text.
    pub topic: &'a [u8],
    pub partition: u32,
    pub offset: u64,
}

impl<'a> PersistedLineHead<'a> {
    /// Reads the first three fields of a line (with or without its newline). A line
    /// with fewer than four fields is not a persistence line.
    pub fn parse(line: &'a [u8]) -> Result<PersistedLineHead<'a>, ParseError> {
        let mut fields = line.splitn(4, |&b| b == b'\t');
        let (Some(topic), Some(partition), Some(offset), Some(_)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError::FieldCount {
                expected: 7,
                found: line.split(|&b| b == b'\t').count(),
            });
        };
        let as_text = |field, raw| std::str::from_utf8(raw).map_err(|_| ParseError::Number(field));
        Ok(PersistedLineHead {
            topic,
            partition: number("partition", as_text("partition", partition)?)?,
            offset: number("offset", as_text("offset", offset)?)?,
        })
    }
}

impl PersistedRecord {
    /// Parses a data line (not a `#` comment).
    pub fn parse(line: &str) -> Result<PersistedRecord, ParseError> {
        let trimmed = line.strip_suffix('\n').unwrap_or(line);
        // One pass over the line: the payload is escaped (it holds no TAB), so
        // a TAB after it starts the headers column.
        let mut parts = trimmed.splitn(7, '\t');
        let mut next = |found| {
            parts
                .next()
                .ok_or(ParseError::FieldCount { expected: 7, found })
        };
        let (topic, partition, offset, timestamp, producer, key, last) = (
            next(0)?,
            next(1)?,
            next(2)?,
            next(3)?,
            next(4)?,
            next(5)?,
            next(6)?,
        );
        let (payload, headers) = match last.split_once('\t') {
            None => (last, Vec::new()),
            Some((payload, column)) if !column.contains('\t') => (
                payload,
                crate::headers::parse_column(column).map_err(|_| ParseError::Headers)?,
            ),
            Some((_, more)) => {
                return Err(ParseError::FieldCount {
                    expected: 7,
                    found: 8 + more.matches('\t').count(),
                })
            }
        };
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
            headers,
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

impl PersistedRecord {
    /// The offset and producer of a data line, without its payload read (nor
    /// checked to be text).
    pub fn parse_producer(line: &[u8]) -> Result<(u64, String), ParseError> {
        let mut fields = line.splitn(6, |&b| b == b'\t');
        let mut next = |found| {
            fields
                .next()
                .ok_or(ParseError::FieldCount { expected: 7, found })
        };
        let (_topic, _partition, offset, _timestamp, producer) =
            (next(0)?, next(1)?, next(2)?, next(3)?, next(4)?);
        next(5)?;
        let offset = std::str::from_utf8(offset).map_err(|_| ParseError::Number("offset"))?;
        let producer = String::from_utf8_lossy(producer);
        Ok((number("offset", offset)?, text("producer", &producer)?))
    }

    /// Its timestamp, checked: microseconds since the Unix epoch.
    pub fn timestamp_us(&self) -> Result<u64, ParseError> {
        parse_timestamp(&self.timestamp).ok_or(ParseError::Timestamp)
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
    fn a_record_with_headers_has_an_eighth_column_that_parses_back() {
        let headers = crate::headers::encode(&[(b"trace", Some(b"a;b")), (b"gone", None)]);
        let mut l = Vec::new();
        push_persisted_with_headers(&mut l, 3, 0, "kafka:rdkafka", Some(b"k"), b"v", &headers);
        assert_eq!(
            as_text(&l),
            "default\t0\t3\t1970-01-01T00:00:00.000000Z\tkafka:rdkafka\tk\tv\ttrace=a\\x3bb;gone\n"
        );
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
        assert_eq!((r.payload, r.headers), (b"v".to_vec(), headers));
        // Without headers, the line is as it always was, and reads as none.
        let mut plain = Vec::new();
        push_persisted_with_headers(&mut plain, 3, 0, "p", None, b"v", &[]);
        assert_eq!(plain.iter().filter(|&&b| b == b'\t').count(), 6);
        assert!(PersistedRecord::parse(as_text(&plain))
            .unwrap()
            .headers
            .is_empty());
    }

    #[test]
    fn persisted_lines_have_seven_fields_and_mark_absent_and_dash_keys() {
        let mut l = Vec::new();
        push_persisted(&mut l, 5, 1_795_832_687_123_456, "p-1", None, b"a\tb");
        assert_eq!(
            l,
            b"default\t0\t5\t2026-11-28T02:24:47.123456Z\tp-1\t-\ta\\tb\n"
        );
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
        assert_eq!((r.offset, r.key, r.payload), (5, None, b"a\tb".to_vec()));
        l.clear();
        push_persisted(&mut l, 6, 0, "p", Some(b"-"), b"");
        assert!(as_text(&l).contains("\t\\x2d\t"));
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
        assert_eq!(r.key, Some(b"-".to_vec()));
        assert_eq!(r.payload, b"");
        assert_eq!(r.timestamp, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_formatter_of_any_partition_writes_lines_whose_heads_place_them() {
        let producer: Arc<str> = Arc::from("p");
        let mut l = Vec::new();
        let mut orders = PersistedLines::for_partition("orders", 3);
        orders.push(
            &mut l,
            42,
            1_795_832_687_123_456,
            &producer,
            None,
            b"x\ty",
            &[],
        );
        assert_eq!(
            as_text(&l),
            "orders\t3\t42\t2026-11-28T02:24:47.123456Z\tp\t-\tx\\ty\n"
        );
        let r = PersistedRecord::parse(as_text(&l)).unwrap();
        assert_eq!((r.topic.as_str(), r.partition, r.offset), ("orders", 3, 42));
        assert_eq!(r.timestamp_us(), Ok(1_795_832_687_123_456));
        assert_eq!(
            PersistedLineHead::parse(&l),
            Ok(PersistedLineHead {
                topic: b"orders",
                partition: 3,
                offset: 42
            })
        );
        let mut default = Vec::new();
        PersistedLines::default().push(&mut default, 7, 0, &producer, None, b"", &[]);
        let head = PersistedLineHead::parse(&default).unwrap();
        assert_eq!(
            (head.topic, head.partition, head.offset),
            (&b"default"[..], 0, 7)
        );

        assert_eq!(
            PersistedLineHead::parse(PERSIST_HEADER.as_bytes()),
            Err(ParseError::Number("partition"))
        );
        assert_eq!(
            PersistedLineHead::parse(b"default\t0\n"),
            Err(ParseError::FieldCount {
                expected: 7,
                found: 2
            })
        );
        assert_eq!(
            PersistedLineHead::parse(b"default\t0\t\xff\tx"),
            Err(ParseError::Number("offset"))
        );
        // The full parser reads the same fields through the head.
        assert_eq!(
            PersistedRecord::parse("default\t0\tseven\t2026-11-28T02:24:47.123456Z\tp\t-\tv"),
            Err(ParseError::Number("offset"))
        );
    }

    #[test]
    fn numbers_of_one_length_are_grouped_exactly() {
        assert_eq!(same_decimal_len(0), 0..10);
        assert_eq!(same_decimal_len(9), 0..10);
        assert_eq!(same_decimal_len(10), 10..100);
        assert_eq!(same_decimal_len(999_999), 100_000..1_000_000);
        assert_eq!(same_decimal_len(u64::MAX), 10u64.pow(19)..u64::MAX);
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

    /// Names handed out as the registry does: one `Arc` per name.
    fn names(n: usize, prefix: &str) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("{prefix}{i}"))).collect()
    }

    #[test]
    fn formatters_that_keep_lines_write_the_same_lines_as_one_offs() {
        let (p, g, c) = (names(2, "p"), names(2, "g"), names(2, "c"));
        let tab: Arc<str> = Arc::from("p\t");
        let deliveries = [
            (1, &p[0], &g[0], &c[0], 1),
            (2, &p[0], &g[0], &c[0], 1),
            (3, &p[1], &g[0], &c[0], 1),
            (4, &p[1], &g[0], &c[1], 1),
            (5, &p[1], &g[1], &c[1], 1),
            (6, &p[1], &g[1], &c[1], 3),
            (7, &tab, &g[1], &c[1], 3),
            (10, &tab, &g[1], &c[1], 3),
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
            (9, 1_795_832_687_123_456, &p[0], None, &b"a"[..]),
            (10, 1_795_832_687_999_999, &p[0], Some(&b"k"[..]), b"b\xff"),
            (11, 1_795_832_688_000_000, &p[1], None, b""),
            (12, 1_795_832_688_000_001, &p[0], None, b"c"),
        ];
        let (mut kept, mut one_offs) = (Vec::new(), Vec::new());
        let mut lines = PersistedLines::default();
        for (o, t, p, k, v) in records {
            lines.push(&mut kept, o, t, p, k, v, &[]);
            push_persisted(&mut one_offs, o, t, p, k, v);
        }
        assert_eq!(as_text(&kept), as_text(&one_offs));
        assert!(as_text(&kept).contains("\tp1\t"));
    }

    proptest! {
        #[test]
        fn any_key_and_payload_survive_a_persisted_line(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut l = Vec::new();
            push_persisted(&mut l, 1, 2, "prod", key.as_deref(), &payload);
            prop_assert_eq!(as_text(&l).matches('\n').count(), 1);
            let r = PersistedRecord::parse(as_text(&l)).unwrap();
            prop_assert_eq!(r.key, key);
            prop_assert_eq!(r.payload, payload);
        }

        #[test]
        fn kept_persistence_lines_match_one_offs_for_any_sequence(
            records in proptest::collection::vec(
                (0u64..3, 0u64..3_000_000, 0usize..3, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)), proptest::collection::vec(any::<u8>(), 0..12)),
                1..60,
            ),
            first_offset in prop_oneof![Just(0u64), Just(95u64), 0u64..u64::MAX / 2],
        ) {
            let producers = names(3, "p");
            let (mut offset, mut time) = (first_offset, 1_795_832_687_000_000u64);
            let (mut kept, mut one_offs) = (Vec::new(), Vec::new());
            let mut lines = PersistedLines::default();
            for (skip, dt, p, key, payload) in &records {
                lines.push(&mut kept, offset, time, &producers[*p], key.as_deref(), payload, &[]);
                push_persisted(&mut one_offs, offset, time, &producers[*p], key.as_deref(), payload);
                offset += 1 + skip * 7;
                time += dt;
            }
            prop_assert_eq!(as_text(&kept), as_text(&one_offs));
        }

        #[test]
        fn kept_delivery_lines_match_one_offs_for_any_sequence(
            deliveries in proptest::collection::vec(
                (
                    0u64..3,
                    0usize..3,
                    0usize..2,
                    prop_oneof![4 => 0usize..2, 1 => 0usize..20],
                    1u32..3,
                    proptest::bool::weighted(0.1),
                ),
                1..80,
            ),
            first_offset in prop_oneof![Just(0u64), Just(97u64), Just(9_990u64), 0u64..u64::MAX / 2],
        ) {
            // 20 consumers: more kinds than the formatter keeps.
            let (p, g, c) = (names(3, "p"), names(2, "g"), names(20, "c"));
            let (mut offset, mut time) = (first_offset, 1_795_832_687_999_990u64);
            let (mut kept, mut one_offs) = (Vec::new(), Vec::new());
            let mut lines = DeliveryLines::new(time);
            for (skip, pi, gi, ci, attempt, tick) in &deliveries {
                if *tick {
                    time += 3;
                    lines.set_time(time);
                }
                lines.push(&mut kept, offset, &p[*pi], &g[*gi], &c[*ci], *attempt);
                push_delivery(&mut one_offs, time, offset, &p[*pi], &g[*gi], &c[*ci], *attempt);
                offset += 1 + skip * 5;
            }
            prop_assert_eq!(as_text(&kept), as_text(&one_offs));
        }
    }
}
