//! JSON Lines renderings of a message and of a delivery: the one definition behind
//! `consumer --format json` and `broker decode --format json` (SPEC §5).
//!
//! A message's line has `topic`, `partition` and `offset` (integers for the last
//! two), `producer`, then `key` (a string, or `null` when absent) or `key_base64`
//! when the key is not valid UTF-8; the delivery's `group`, `consumer` and
//! `attempt` when it was delivered; `timestamp` (RFC 3339 UTC with microseconds);
//! and last exactly one of `payload` (valid UTF-8) or `payload_base64`. Fields keep
//! that order, so that lines of the same message compare byte for byte.

use base64::Engine;

use crate::records::{push_timestamp, PersistedRecord};

/// What a message's JSON line shows about the message itself.
#[derive(Debug, Clone, Copy)]
pub struct MessageFields<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub producer: &'a str,
    pub key: Option<&'a [u8]>,
    /// Publish time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub payload: &'a [u8],
}

impl<'a> MessageFields<'a> {
    /// The fields of a record read back from the persistence file, published at
    /// `timestamp_us`.
    pub fn of_persisted(r: &'a PersistedRecord, timestamp_us: u64) -> Self {
        MessageFields {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            producer: &r.producer,
            key: r.key.as_deref(),
            timestamp_us,
            payload: &r.payload,
        }
    }
}

/// Who received a message, for a consumer's line.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryFields<'a> {
    /// `None` for a standalone reader, which belongs to no group (`null`).
    pub group: Option<&'a str>,
    pub consumer: &'a str,
    /// 1 for a first delivery, 2, 3, ... for redeliveries.
    pub attempt: u32,
}

/// What a consumption-log line says, for its JSON line.
#[derive(Debug, Clone, Copy)]
pub struct LoggedDelivery<'a> {
    /// Delivery time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub producer: &'a str,
    /// `None` for a reader that belongs to no group (the log's `-`).
    pub group: Option<&'a str>,
    pub consumer: &'a str,
    pub attempt: u32,
}

/// Appends the JSON line of a message (with its newline); `delivery` adds who
/// received it.
pub fn push_message(
    line: &mut Vec<u8>,
    message: &MessageFields<'_>,
    delivery: Option<&DeliveryFields<'_>>,
) {
    let mut object = Object::open(line);
    object.string("topic", message.topic);
    object.number("partition", message.partition.into());
    object.number("offset", message.offset);
    object.string("producer", message.producer);
    match message.key {
        None => object.raw("key", b"null"),
        Some(key) => object.bytes("key", key),
    }
    if let Some(d) = delivery {
        match d.group {
            None => object.raw("group", b"null"),
            Some(group) => object.string("group", group),
        }
        object.string("consumer", d.consumer);
        object.number("attempt", d.attempt.into());
    }
    object.timestamp("timestamp", message.timestamp_us);
    object.bytes("payload", message.payload);
    object.close();
}

/// Appends the JSON line of a consumption-log line (with its newline), its fields
/// in the file's order.
pub fn push_logged_delivery(line: &mut Vec<u8>, delivery: &LoggedDelivery<'_>) {
    let mut object = Object::open(line);
    object.timestamp("timestamp", delivery.timestamp_us);
    object.string("topic", delivery.topic);
    object.number("partition", delivery.partition.into());
    object.number("offset", delivery.offset);
    object.string("producer", delivery.producer);
    match delivery.group {
        None => object.raw("group", b"null"),
        Some(group) => object.string("group", group),
    }
    object.string("consumer", delivery.consumer);
    object.number("attempt", delivery.attempt.into());
    object.close();
}

/// A JSON object being appended to a line, one member at a time.
struct Object<'l> {
    line: &'l mut Vec<u8>,
    empty: bool,
}

impl<'l> Object<'l> {
    fn open(line: &'l mut Vec<u8>) -> Self {
        line.push(b'{');
        Object { line, empty: true }
    }

    /// `"name":` (names are plain ASCII, never in need of escapes).
    fn name(&mut self, name: &str) {
        if !self.empty {
            self.line.push(b',');
        }
        self.empty = false;
        self.line.push(b'"');
        self.line.extend_from_slice(name.as_bytes());
        self.line.extend_from_slice(b"\":");
    }

    fn raw(&mut self, name: &str, value: &[u8]) {
        self.name(name);
        self.line.extend_from_slice(value);
    }

    fn number(&mut self, name: &str, value: u64) {
        self.raw(name, itoa::Buffer::new().format(value).as_bytes());
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        push_json_string(self.line, value);
    }

    /// `name` with the bytes as a string when they are valid UTF-8, else
    /// `name_base64` with their base64.
    fn bytes(&mut self, name: &str, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok(text) => self.string(name, text),
            Err(_) => {
                self.name(&format!("{name}_base64"));
                self.line.push(b'"');
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                self.line.extend_from_slice(encoded.as_bytes());
                self.line.push(b'"');
            }
        }
    }

    fn timestamp(&mut self, name: &str, micros: u64) {
        self.name(name);
        self.line.push(b'"');
        push_timestamp(self.line, micros);
        self.line.push(b'"');
    }

    fn close(self) {
        self.line.extend_from_slice(b"}\n");
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
fn push_json_string(line: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *line, text).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn message<'a>(key: Option<&'a [u8]>, payload: &'a [u8]) -> MessageFields<'a> {
        MessageFields {
            topic: "default",
            partition: 0,
            offset: 7,
            producer: "p-1",
            key,
            timestamp_us: 1_795_832_687_123_456,
            payload,
        }
    }

    fn line_of(message: &MessageFields<'_>, delivery: Option<&DeliveryFields<'_>>) -> String {
        let mut line = Vec::new();
        push_message(&mut line, message, delivery);
        String::from_utf8(line).expect("JSON lines are UTF-8")
    }

    #[test]
    fn a_message_line_has_its_fields_in_order_and_delivery_fields_only_when_delivered() {
        let m = message(None, b"hi\t\"");
        assert_eq!(
            line_of(&m, None),
            "{\"topic\":\"default\",\"partition\":0,\"offset\":7,\"producer\":\"p-1\",\"key\":null,\
             \"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"payload\":\"hi\\t\\\"\"}\n"
        );
        let d = DeliveryFields {
            group: Some("g"),
            consumer: "c-1",
            attempt: 2,
        };
        assert_eq!(
            line_of(&m, Some(&d)),
            "{\"topic\":\"default\",\"partition\":0,\"offset\":7,\"producer\":\"p-1\",\"key\":null,\
             \"group\":\"g\",\"consumer\":\"c-1\",\"attempt\":2,\
             \"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"payload\":\"hi\\t\\\"\"}\n"
        );
        let reader = DeliveryFields {
            group: None,
            consumer: "r-1",
            attempt: 1,
        };
        assert!(line_of(&m, Some(&reader)).contains("\"group\":null,\"consumer\":\"r-1\""));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_base64_under_another_name() {
        let v: Value =
            serde_json::from_str(&line_of(&message(Some(b"\xff"), b"\x00\xfe"), None)).unwrap();
        assert_eq!(v["key_base64"], "/w==");
        assert_eq!(v["payload_base64"], "AP4=");
        assert!(v.get("key").is_none() && v.get("payload").is_none());
        let v: Value = serde_json::from_str(&line_of(&message(Some(b""), b""), None)).unwrap();
        assert_eq!(
            (&v["key"], &v["payload"]),
            (&Value::from(""), &Value::from(""))
        );
    }

    #[test]
    fn a_logged_delivery_keeps_the_files_order_and_a_reader_has_no_group() {
        let mut delivery = LoggedDelivery {
            timestamp_us: 1_000_001,
            topic: "default",
            partition: 0,
            offset: 9,
            producer: "p",
            group: Some("g"),
            consumer: "c",
            attempt: 1,
        };
        let mut line = Vec::new();
        push_logged_delivery(&mut line, &delivery);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"timestamp\":\"1970-01-01T00:00:01.000001Z\",\"topic\":\"default\",\"partition\":0,\
             \"offset\":9,\"producer\":\"p\",\"group\":\"g\",\"consumer\":\"c\",\"attempt\":1}\n"
        );
        delivery.group = None;
        let mut line = Vec::new();
        push_logged_delivery(&mut line, &delivery);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["group"], Value::Null);
    }

    proptest! {
        #[test]
        fn any_key_and_payload_read_back_from_a_line(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            producer in "\\PC{0,10}",
        ) {
            let mut m = message(key.as_deref(), &payload);
            m.producer = &producer;
            let line = line_of(&m, None);
            prop_assert_eq!(line.matches('\n').count(), 1);
            let v: Value = serde_json::from_str(&line).unwrap();
            let bytes = |name: &str| -> Option<Vec<u8>> {
                if let Some(s) = v.get(name).and_then(Value::as_str) {
                    return Some(s.as_bytes().to_vec());
                }
                let encoded = v.get(format!("{name}_base64"))?.as_str()?;
                Some(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap())
            };
            prop_assert_eq!(bytes("key"), key);
            prop_assert_eq!(bytes("payload"), Some(payload));
            prop_assert_eq!(v["producer"].as_str(), Some(producer.as_str()));
        }
    }
}
