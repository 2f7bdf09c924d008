//! Where a partition's records are, over its file and its ring: the earliest
//! still readable, and the first published at or after a time. One home for
//! `broker reset-offsets` and the Kafka listener's ListOffsets and Fetch.

use std::path::Path;

use audit_format::index::TopicPartition;
use audit_format::log_reader::LogReader;
use shm_layout::BrokerRegion;

/// The first offset of `tp` in the persistence file of `data_dir`, if it has one.
pub fn first_in_file(data_dir: &Path, tp: &TopicPartition) -> Option<u64> {
    LogReader::open_in(data_dir, tp)
        .ok()?
        .first_offset()
        .ok()
        .flatten()
}

/// The earliest offset of `tp` still readable: its first in the file, or the
/// ring's oldest when the file holds none below it. `in_file` is
/// [`first_in_file`], which the caller may keep (it never changes once found).
pub fn earliest(in_file: Option<u64>, region: &BrokerRegion) -> u64 {
    let ring = region.freed_offset();
    in_file.map_or(ring, |first| first.min(ring))
}

/// The first offset of `tp` published at or after `time_us`: from the file,
/// else from the ring; None when none is (yet).
pub fn first_at_or_after(
    data_dir: &Path,
    tp: &TopicPartition,
    region: &BrokerRegion,
    time_us: u64,
) -> Option<u64> {
    let in_file = LogReader::open_in(data_dir, tp)
        .ok()
        .and_then(|mut f| f.first_at_or_after(time_us).ok().flatten());
    in_file.or_else(|| region.first_published_at_or_after(region.freed_offset(), time_us))
}
