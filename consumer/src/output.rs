//! How the consumer command prints a message: escaped text, JSON Lines, or nothing.

use std::io::Write;

use audit_format::escape::escape_into;
use audit_format::json::{push_message, DeliveryFields, MessageFields};

use consumer::reader::ReadMessage;
use consumer::Message;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The payload escaped as in the audit files, one per line.
    Text,
    /// One JSON object per line with the message's metadata.
    Json,
    /// Nothing per message; a throughput summary on stderr at exit.
    None,
}

/// Writes `message`, received as `delivery` says, in `format` to `out` (a line, or
/// nothing).
pub fn write_message(
    out: &mut impl Write,
    format: Format,
    message: &MessageFields<'_>,
    delivery: &DeliveryFields<'_>,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    line.clear();
    match format {
        Format::None => return Ok(()),
        Format::Text => {
            escape_into(message.payload, line);
            line.push(b'\n');
        }
        Format::Json => push_message(line, message, Some(delivery)),
    }
    out.write_all(line)
}

/// What a group member's message shows.
pub fn fields_of<'m>(msg: &Message<'m>) -> MessageFields<'m> {
    MessageFields {
        topic: msg.topic,
        partition: msg.partition,
        offset: msg.offset,
        producer: msg.producer,
        key: msg.key,
        timestamp_us: msg.timestamp_us,
        payload: msg.payload,
    }
}

/// What a standalone reader's message shows.
pub fn fields_of_read(msg: &ReadMessage) -> MessageFields<'_> {
    MessageFields {
        topic: &msg.topic,
        partition: msg.partition,
        offset: msg.offset,
        producer: &msg.producer,
        key: msg.key.as_deref(),
        timestamp_us: msg.timestamp_us,
        payload: &msg.payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn msg<'a>(key: Option<&'a [u8]>, payload: &'a [u8]) -> Message<'a> {
        Message {
            topic: audit_format::records::TOPIC,
            partition: audit_format::records::PARTITION,
            offset: 7,
            key,
            payload,
            timestamp_us: 1_795_832_687_123_456,
            producer: "p-1",
            attempt: 1,
        }
    }

    fn render(format: Format, m: &Message<'_>) -> String {
        let mut out = Vec::new();
        let delivery = DeliveryFields {
            group: Some("g"),
            consumer: "c-1",
            attempt: m.attempt,
        };
        write_message(&mut out, format, &fields_of(m), &delivery, &mut Vec::new()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_is_escaped_one_per_line() {
        assert_eq!(
            render(Format::Text, &msg(None, b"a\tb\n\xff")),
            "a\\tb\\n\\xff\n"
        );
        assert_eq!(render(Format::None, &msg(None, b"x")), "");
    }

    #[test]
    fn json_lines_are_byte_for_byte_the_documented_ones() {
        assert_eq!(
            render(
                Format::Json,
                &msg(Some("k\"\t€".as_bytes()), "hé\n\\\u{1}".as_bytes())
            ),
            "{\"topic\":\"default\",\"partition\":0,\"offset\":7,\"producer\":\"p-1\",\
             \"key\":\"k\\\"\\t€\",\"group\":\"g\",\"consumer\":\"c-1\",\"attempt\":1,\
             \"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"payload\":\"hé\\n\\\\\\u0001\"}\n"
        );
        assert_eq!(
            render(Format::Json, &msg(Some(b"\xff"), b"\x00\xfe")),
            "{\"topic\":\"default\",\"partition\":0,\"offset\":7,\"producer\":\"p-1\",\
             \"key_base64\":\"/w==\",\"group\":\"g\",\"consumer\":\"c-1\",\"attempt\":1,\
             \"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"payload_base64\":\"AP4=\"}\n"
        );
    }

    #[test]
    fn json_has_the_documented_fields_and_base64_for_bytes() {
        let v: Value = serde_json::from_str(&render(Format::Json, &msg(None, b"hi"))).unwrap();
        assert_eq!(v["offset"], 7);
        assert_eq!(v["partition"], 0);
        assert_eq!(v["topic"], "default");
        assert_eq!(v["key"], Value::Null);
        assert_eq!(v["payload"], "hi");
        assert_eq!(v["producer"], "p-1");
        assert_eq!(v["group"], "g");
        assert_eq!(v["consumer"], "c-1");
        assert_eq!(v["timestamp"], "2026-11-28T02:24:47.123456Z");
        let v: Value =
            serde_json::from_str(&render(Format::Json, &msg(Some(b"\xff"), b"\x00\xfe"))).unwrap();
        assert_eq!(v["key_base64"], "/w==");
        assert_eq!(v["payload_base64"], "AP4=");
        assert!(v.get("payload").is_none() && v.get("key").is_none());
    }
}
