//! Untrusted bytes as an index file, a checkpoint, or a line of the persistence
//! file (readers open whatever the data directory holds): decoding never panics,
//! an index that decodes has increasing entries and reads back as its own bytes,
//! and a checkpoint that decodes is written back the same.
#![no_main]

use audit_format::index::format::{Checkpoint, IndexHeader};
use audit_format::records::PersistedLineHead;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, entries)) = IndexHeader::decode_file(data) {
        assert!(entries
            .windows(2)
            .all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position));
        let mut again = header.to_bytes().to_vec();
        for entry in &entries {
            entry.push_bytes(&mut again);
        }
        // Bytes 20..24 are reserved: written zero, not read.
        assert_eq!((&again[..20], &again[24..]), (&data[..20], &data[24..]));
    }
    if let Ok(checkpoint) = Checkpoint::from_bytes(data) {
        assert_eq!(Checkpoint::from_bytes(&checkpoint.to_bytes()), Ok(checkpoint));
    }
    if let Ok(head) = PersistedLineHead::parse(data) {
        assert!(data.starts_with(head.topic));
    }
});
