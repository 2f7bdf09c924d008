//! How the consumer command prints a message: escaped text, JSON Lines, or nothing.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use audit_format::escape::escape_into;
use base64::Engine;
use serde_json::{json, Map, Value};

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

/// RFC 3339 UTC with microseconds, as in the audit files.
pub fn rfc3339_micros(us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// Writes `msg` in `format` to `out` (a line, or nothing).
pub fn write_message(
    out: &mut impl Write,
    format: Format,
    msg: &Message<'_>,
    group: &str,
    consumer: &str,
    line: &mut Vec<u8>,
) -> std::io::Result<()> {
    line.clear();
    match format {
        Format::None => return Ok(()),
        Format::Text => escape_into(msg.payload, line),
        Format::Json => {
            let mut o = Map::new();
            o.insert("topic".into(), json!("default"));
            o.insert("partition".into(), json!(0));
            o.insert("offset".into(), json!(msg.offset));
            o.insert("producer".into(), json!(msg.producer));
            match msg.key {
                None => {
                    o.insert("key".into(), Value::Null);
                }
                Some(k) => match std::str::from_utf8(k) {
                    Ok(s) => {
                        o.insert("key".into(), json!(s));
                    }
                    Err(_) => {
                        o.insert("key_base64".into(), json!(base64_of(k)));
                    }
                },
            }
            o.insert("group".into(), json!(group));
            o.insert("consumer".into(), json!(consumer));
            o.insert("attempt".into(), json!(msg.attempt));
            o.insert("timestamp".into(), json!(rfc3339_micros(msg.timestamp_us)));
            match std::str::from_utf8(msg.payload) {
                Ok(s) => o.insert("payload".into(), json!(s)),
                Err(_) => o.insert("payload_base64".into(), json!(base64_of(msg.payload))),
            };
            line.extend_from_slice(Value::Object(o).to_string().as_bytes());
        }
    }
    line.push(b'\n');
    out.write_all(line)
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(key: Option<&'a [u8]>, payload: &'a [u8]) -> Message<'a> {
        Message {
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
        write_message(&mut out, format, m, "g", "c-1", &mut Vec::new()).unwrap();
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
