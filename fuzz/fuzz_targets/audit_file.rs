//! Untrusted bytes as an audit file (`broker decode` reads whatever file it is
//! given): the reader must never panic, and every message it decodes must survive
//! being written again by the broker's formatter and read back.
#![no_main]

use audit_format::json::{push_message, MessageFields};
use audit_format::reader::{AuditReader, AuditRecord, Item};
use audit_format::records::{push_persisted, PersistedRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for item in AuditReader::new(data) {
        let Ok(Item::Record(read)) = item else {
            continue;
        };
        let AuditRecord::Persisted(r) = &read.record else {
            continue;
        };
        let mut line = Vec::new();
        push_persisted(
            &mut line,
            r.offset,
            read.timestamp_us,
            &r.producer,
            r.key.as_deref(),
            &r.payload,
        );
        let text = std::str::from_utf8(&line).expect("persistence lines are UTF-8");
        let again = PersistedRecord::parse(text).expect("a written line parses");
        assert_eq!((&again.key, &again.payload), (&r.key, &r.payload));
        let message = MessageFields::of_persisted(r, read.timestamp_us);
        line.clear();
        push_message(&mut line, &message, None);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    }
});
