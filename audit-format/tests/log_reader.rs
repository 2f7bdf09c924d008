//! The persistence file read as a log from any offset through the sparse index
//! (SPEC §10): exact records at and after the offset, at most a step plus one
//! record scanned, a growing file, cut lines, and the ends of a partition.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use audit_format::index::{IndexConfig, IndexedTopics, SparseIndex, TopicPartition, DEFAULT_STEP};
use audit_format::log_reader::{LogError, LogReader, LogRecord};
use audit_format::records::{PersistedLines, TOPIC};
use proptest::prelude::*;
use support::*;

const STEP: u64 = 1024;

fn config(step: u64) -> IndexConfig {
    IndexConfig {
        step,
        checkpoint_every: 16 * step,
    }
}

fn reader(dir: &Scratch, p: u32) -> LogReader {
    LogReader::open(SparseIndex::open(dir.path(), &partition(p)).unwrap()).unwrap()
}

/// Checks that `read` is `expected`, byte for byte.
fn assert_same(read: &LogRecord, expected: &Written) {
    let m = &expected.message;
    let r = &read.record;
    assert_eq!(
        (r.topic.as_str(), r.partition, r.offset, read.timestamp_us),
        (TOPIC, m.partition, m.offset, m.timestamp_us)
    );
    assert_eq!(r.producer, "producer-1");
    assert_eq!(r.key, m.key);
    assert_eq!(r.payload, m.payload);
    assert_eq!(read.position, expected.position);
}

fn read_all(reader: &mut LogReader) -> Vec<LogRecord> {
    std::iter::from_fn(|| reader.next_record().unwrap()).collect()
}

/// One formatted line of `message`.
fn line_of(message: &Message) -> Vec<u8> {
    let mut line = Vec::new();
    PersistedLines::for_partition(TOPIC, message.partition).push(
        &mut line,
        message.offset,
        message.timestamp_us,
        &Arc::from("producer-1"),
        message.key.as_deref(),
        &message.payload,
        &[],
    );
    line
}

fn append_raw(dir: &Scratch, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(dir.persistence())
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn a_reader_opens_at_the_first_record_and_reads_to_the_end() {
    let dir = Scratch::new("earliest");
    let written = write_log(
        dir.path(),
        &default_topic(2),
        config(STEP),
        &messages(300, 2, 50),
        16,
    );
    let mut reader = reader(&dir, 1);
    assert_eq!(reader.position(), 0);
    let read = read_all(&mut reader);
    let expected: Vec<&Written> = written
        .iter()
        .filter(|w| w.message.partition == 1)
        .collect();
    assert_eq!(read.len(), expected.len());
    for (r, w) in read.iter().zip(expected) {
        assert_same(r, w);
    }
    assert_eq!(reader.position(), 150);
    assert_eq!(
        reader.byte_position(),
        std::fs::metadata(dir.persistence()).unwrap().len()
    );
}

#[test]
fn at_the_end_the_reader_waits_and_a_cut_line_is_never_a_record() {
    let dir = Scratch::new("growing");
    let all = messages(12, 1, 30);
    let written = write_log(dir.path(), &default_topic(1), config(STEP), &all[..10], 4);
    let mut reader = reader(&dir, 0);
    assert_eq!(read_all(&mut reader).len(), 10);
    assert!(reader.next_record().unwrap().is_none());
    // A line being written: all but its newline, then in two steps.
    let line = line_of(&all[10]);
    let (start, rest) = line.split_at(line.len() - 1);
    append_raw(&dir, &start[..5]);
    assert!(reader.next_record().unwrap().is_none());
    append_raw(&dir, &start[5..]);
    assert!(reader.next_record().unwrap().is_none());
    assert!(reader.next_record().unwrap().is_none());
    append_raw(&dir, rest);
    let record = reader.next_record().unwrap().unwrap();
    let end = written.last().map(|w| w.position + w.line_len).unwrap();
    assert_same(
        &record,
        &Written {
            message: all[10].clone(),
            position: end,
            line_len: line.len() as u64,
        },
    );
    assert!(reader.next_record().unwrap().is_none());
}

#[test]
fn a_cut_line_replaced_by_a_restarted_writer_is_read_as_rewritten() {
    let dir = Scratch::new("rewritten");
    let all = messages(3, 1, 30);
    write_log(dir.path(), &default_topic(1), config(STEP), &all[..1], 1);
    let mut reader = reader(&dir, 0);
    assert_eq!(read_all(&mut reader).len(), 1);
    let end = std::fs::metadata(dir.persistence()).unwrap().len();
    // A writer dies in the middle of a line; the next one cuts it off and writes
    // other records there.
    append_raw(&dir, &line_of(&all[1])[..20]);
    assert!(reader.next_record().unwrap().is_none());
    let file = OpenOptions::new()
        .write(true)
        .open(dir.persistence())
        .unwrap();
    file.set_len(end).unwrap();
    append_raw(&dir, &line_of(&all[2]));
    let record = reader.next_record().unwrap().unwrap();
    assert_eq!(record.record.offset, 2);
    assert_eq!(record.record.payload, all[2].payload);
}

#[test]
fn an_offset_past_the_end_is_returned_once_it_is_written() {
    let dir = Scratch::new("past-end");
    let all = messages(40, 1, 200);
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config(STEP));
    for m in &all[..10] {
        log.append(m.clone());
    }
    log.write_buffer();
    let mut reader = reader(&dir, 0);
    reader.seek(25).unwrap();
    assert!(reader.next_record().unwrap().is_none());
    assert_eq!(reader.position(), 25);
    for m in &all[10..] {
        log.append(m.clone());
    }
    log.write_buffer();
    let read = read_all(&mut reader);
    assert_eq!(
        read.iter().map(|r| r.record.offset).collect::<Vec<_>>(),
        (25..40).collect::<Vec<_>>()
    );
    for r in &read {
        assert_same(r, &log.written[r.record.offset as usize]);
    }
}

#[test]
fn a_seek_uses_entries_appended_after_the_index_was_opened() {
    let dir = Scratch::new("refresh");
    let all = messages(2000, 1, 100);
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config(STEP));
    for m in &all[..10] {
        log.append(m.clone());
    }
    log.write_buffer();
    let mut reader = reader(&dir, 0);
    let loaded = reader.index().entries().len();
    for chunk in all[10..].chunks(50) {
        for m in chunk {
            log.append(m.clone());
        }
        log.write_buffer();
    }
    reader.seek(1990).unwrap();
    assert!(reader.index().entries().len() > loaded);
    let record = reader.next_record().unwrap().unwrap();
    assert_same(&record, &log.written[1990]);
    assert!(
        reader.bytes_scanned() <= STEP + log.written[1990].line_len,
        "{}",
        reader.bytes_scanned()
    );
}

#[test]
fn an_offset_below_the_partitions_first_record_is_an_error() {
    let dir = Scratch::new("below-first");
    let mut all = messages(20, 1, 10);
    for m in &mut all {
        m.offset += 5;
    }
    write_log(dir.path(), &default_topic(1), config(STEP), &all, 7);
    let mut reader = reader(&dir, 0);
    assert_eq!(reader.position(), 5);
    let err = reader.seek(4).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::BeforeFirst {
                offset: 4,
                first: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("persistencia_mensajes.txt: its first record there is offset 5")
            && err
                .to_string()
                .starts_with("offset 4 of default/0 is not in "),
        "{err}"
    );
    reader.seek(5).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().record.offset, 5);
}

#[test]
fn a_partition_without_records_returns_them_once_written() {
    let dir = Scratch::new("empty-partition");
    let all = messages(40, 2, 20);
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(2), config(STEP));
    for m in all.iter().filter(|m| m.partition == 0) {
        log.append(m.clone());
    }
    log.write_buffer();
    let mut reader = reader(&dir, 1);
    assert!(reader.index().entries().is_empty());
    reader.seek(3).unwrap();
    assert!(reader.next_record().unwrap().is_none());
    for m in all.iter().filter(|m| m.partition == 1) {
        log.append(m.clone());
    }
    log.write_buffer();
    let offsets: Vec<u64> = read_all(&mut reader)
        .iter()
        .map(|r| r.record.offset)
        .collect();
    assert_eq!(offsets, (3..20).collect::<Vec<_>>());
}

#[test]
fn the_first_record_is_found_even_where_the_index_does_not_cover_it_yet() {
    let dir = Scratch::new("first-offset");
    let all = messages(40, 2, 20);
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(2), config(STEP));
    for m in all.iter().filter(|m| m.partition == 0) {
        log.append(m.clone());
    }
    log.write_buffer();
    // Opened while partition 1 has no record.
    let mut ones_reader = reader(&dir, 1);
    assert_eq!(ones_reader.first_offset().unwrap(), None);
    // Its first records reach the file, with no index entry for them yet.
    let mut ones = all.iter().filter(|m| m.partition == 1).skip(5);
    for m in ones.by_ref().take(3) {
        append_raw(&dir, &line_of(m));
    }
    assert!(ones_reader.index().entries().is_empty());
    assert_eq!(ones_reader.first_offset().unwrap(), Some(5));
    // And left there: the next record is that one.
    assert_eq!(ones_reader.next_record().unwrap().unwrap().record.offset, 5);
    // Once the index has entries, its first one answers.
    let mut indexed = reader(&dir, 0);
    assert_eq!(indexed.first_offset().unwrap(), Some(0));
    assert_eq!(indexed.next_record().unwrap().unwrap().record.offset, 0);
}

#[test]
fn records_of_other_topics_are_passed_over() {
    let dir = Scratch::new("topics");
    let mut topics: IndexedTopics = default_topic(1);
    topics.add("orders", 1, 1).unwrap();
    let (mut log, _) = LogWriter::open(dir.path(), &topics, config(STEP));
    let producer: Arc<str> = Arc::from("p");
    let mut orders = PersistedLines::for_partition("orders", 0);
    for m in messages(100, 1, 100) {
        log.append(m.clone());
        // An `orders` line after each one, noted as the broker would.
        let position = log.len + log.buffer.len() as u64;
        let before = log.buffer.len();
        orders.push(
            &mut log.buffer,
            m.offset + 1000,
            m.timestamp_us,
            &producer,
            None,
            b"order",
            &[],
        );
        let len = (log.buffer.len() - before) as u64;
        let id = TopicPartition::new("orders", 1, 0).id();
        log.index.note(id, m.offset + 1000, position, len).unwrap();
    }
    log.write_buffer();
    let mut reader = reader(&dir, 0);
    reader.seek(50).unwrap();
    let read = read_all(&mut reader);
    assert_eq!(read.len(), 50);
    assert!(read.iter().all(|r| r.record.topic == "default"));
    let orders = SparseIndex::open(dir.path(), &TopicPartition::new("orders", 1, 0)).unwrap();
    let mut reader = LogReader::open(orders).unwrap();
    reader.seek(1070).unwrap();
    let read = read_all(&mut reader);
    assert_eq!(read.len(), 30);
    assert!(read
        .iter()
        .all(|r| r.record.topic == "orders" && r.record.payload == b"order"));
}

#[test]
fn a_broken_line_of_the_partition_is_an_error_and_reading_goes_on() {
    let dir = Scratch::new("malformed");
    let all = messages(3, 1, 10);
    write_log(dir.path(), &default_topic(1), config(STEP), &all[..1], 1);
    let at = std::fs::metadata(dir.persistence()).unwrap().len();
    append_raw(
        &dir,
        b"default\t0\t1\t2026-11-28T02:24:47.123456Z\tp\t-\tbad \\q escape\n",
    );
    append_raw(&dir, b"# a comment, and a line that is no record\nhello\n");
    append_raw(&dir, &line_of(&all[2]));
    let mut reader = reader(&dir, 0);
    assert_eq!(reader.next_record().unwrap().unwrap().record.offset, 0);
    match reader.next_record() {
        Err(LogError::Malformed { position, .. }) => assert_eq!(position, at),
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.next_record().unwrap().unwrap().record.offset, 2);
}

#[test]
fn a_file_cut_below_the_reader_is_reported() {
    let dir = Scratch::new("shrunk");
    write_log(
        dir.path(),
        &default_topic(1),
        config(STEP),
        &messages(10, 1, 10),
        3,
    );
    let mut reader = reader(&dir, 0);
    read_all(&mut reader);
    let file = OpenOptions::new()
        .write(true)
        .open(dir.persistence())
        .unwrap();
    file.set_len(100).unwrap();
    let err = reader.next_record().unwrap_err();
    assert!(
        matches!(err, LogError::FileShrank { len: 100, .. }),
        "{err:?}"
    );
}

/// A message of the property test: its partition, how many offsets it skips,
/// its key and its payload.
type Spec = (u32, u64, Option<Vec<u8>>, Vec<u8>);

fn spec() -> impl Strategy<Value = Spec> {
    let key = prop_oneof![
        3 => Just(None),
        1 => Just(Some(b"-".to_vec())),
        1 => Just(Some(Vec::new())),
        3 => proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
    ];
    let payload = prop_oneof![
        1 => Just(Vec::new()),
        8 => proptest::collection::vec(any::<u8>(), 0..80),
        1 => proptest::collection::vec(any::<u8>(), 1000..6000),
    ];
    let skip = prop_oneof![8 => Just(0u64), 1 => 1u64..4];
    (0u32..2, skip, key, payload)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random records of two partitions, interleaved, written by the real
    /// formatter and indexed by the writer at a small step: a seek to any offset
    /// returns exactly the partition's records at and after it, byte for byte,
    /// having scanned at most a step plus the record returned.
    #[test]
    fn a_seek_returns_exactly_the_records_from_its_offset(
        specs in proptest::collection::vec(spec(), 1..160),
        step in 64u64..3000,
        per_buffer in 1usize..40,
        seeks in proptest::collection::vec((0u32..2, any::<proptest::sample::Index>()), 1..12),
    ) {
        let dir = Scratch::new("property");
        let mut next = [0u64; 2];
        let messages: Vec<Message> = specs
            .into_iter()
            .enumerate()
            .map(|(i, (partition, skip, key, payload))| {
                let offset = next[partition as usize] + skip;
                next[partition as usize] = offset + 1;
                Message { partition, offset, timestamp_us: 1_795_832_687_000_000 + i as u64 * 13, key, payload }
            })
            .collect();
        let written = write_log(dir.path(), &default_topic(2), config(step), &messages, per_buffer);
        for p in 0..2 {
            let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
            let entries: Vec<(u64, u64)> = index.entries().iter().map(|e| (e.offset, e.position)).collect();
            prop_assert_eq!(entries, expected_entries(&written, p, step));
        }
        for (p, at) in seeks {
            let of_p: Vec<&Written> = written.iter().filter(|w| w.message.partition == p).collect();
            // Any offset up to two past the partition's last one.
            let target = at.index(next[p as usize] as usize + 3) as u64;
            let mut reader = reader(&dir, p);
            let first = of_p.first().map(|w| w.message.offset);
            if first.is_some_and(|first| target < first) {
                let below = matches!(reader.seek(target), Err(LogError::BeforeFirst { .. }));
                prop_assert!(below);
                continue;
            }
            reader.seek(target).unwrap();
            let expected: Vec<&&Written> = of_p.iter().filter(|w| w.message.offset >= target).collect();
            let first_read = reader.next_record().unwrap();
            match (&first_read, expected.first()) {
                (Some(read), Some(w)) => {
                    assert_same(read, w);
                    prop_assert!(
                        reader.bytes_scanned() <= step + w.line_len,
                        "scanned {} with a step of {} and a line of {}", reader.bytes_scanned(), step, w.line_len
                    );
                }
                (None, None) => {}
                (read, w) => prop_assert!(false, "read {:?}, expected {:?}", read, w),
            }
            let rest = read_all(&mut reader);
            prop_assert_eq!(rest.len(), expected.len().saturating_sub(1));
            for (read, w) in rest.iter().zip(expected.iter().skip(1)) {
                assert_same(read, w);
            }
            prop_assert!(reader.next_record().unwrap().is_none());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Where a partition's records end, found through its index (its last entry,
    /// then at most a step of the file), is where a scan of the whole file finds
    /// it: however the partitions interleave, and however long one stays idle
    /// while the others write (each partition takes its turn in runs).
    #[test]
    fn a_partitions_end_through_its_index_is_the_end_a_full_scan_finds(
        runs in proptest::collection::vec((0u32..3, 1usize..60, 0usize..200), 0..40),
        step in 64u64..3000,
        per_buffer in 1usize..40,
    ) {
        let dir = Scratch::new("partition-end");
        let mut next = [0u64; 3];
        let mut messages = Vec::new();
        for (partition, count, len) in runs {
            for _ in 0..count {
                let offset = next[partition as usize];
                next[partition as usize] += 1;
                messages.push(Message {
                    partition,
                    offset,
                    timestamp_us: 1_795_832_687_000_000 + messages.len() as u64,
                    key: None,
                    payload: vec![b'p'; len],
                });
            }
        }
        write_log(dir.path(), &default_topic(3), config(step), &messages, per_buffer);
        for p in 0..3 {
            let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
            let end = audit_format::log_reader::partition_end(&index).unwrap();
            prop_assert_eq!(end, next[p as usize], "partition {}", p);
        }
    }
}

/// A million messages of 64 bytes, written in one buffer per 16,384 lines: seeks
/// at the start, the middle and the end each scan at most a step plus one record.
#[test]
fn a_million_messages_seek_within_a_step() {
    const COUNT: u64 = 1_000_000;
    let dir = Scratch::new("million");
    let started = Instant::now();
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), IndexConfig::default());
    let mut payload = [0u8; 64];
    for offset in 0..COUNT {
        for (i, b) in payload.iter_mut().enumerate() {
            *b = b'a' + ((offset as usize + i) % 26) as u8;
        }
        log.append(Message {
            partition: 0,
            offset,
            timestamp_us: 1_795_832_687_000_000 + offset,
            key: None,
            payload: payload.to_vec(),
        });
        if log.buffer.len() >= 1 << 20 {
            log.write_buffer();
        }
    }
    let written = log.close();
    let file_len = std::fs::metadata(dir.persistence()).unwrap().len();
    println!(
        "wrote {COUNT} messages ({file_len} bytes) in {:?}",
        started.elapsed()
    );

    let opened = Instant::now();
    let index = SparseIndex::open(dir.path(), &partition(0)).unwrap();
    println!(
        "opened the index ({} entries, step {} bytes) in {:?}",
        index.entries().len(),
        index.step(),
        opened.elapsed()
    );
    let mut reader = LogReader::open(index).unwrap();
    for target in [0, COUNT / 2, COUNT - 1, 777_777] {
        let seek = Instant::now();
        reader.seek(target).unwrap();
        let record = reader.next_record().unwrap().unwrap();
        let took = seek.elapsed();
        let w = &written[target as usize];
        assert_same(&record, w);
        println!(
            "seek to offset {target}: scanned {} bytes (bound {} = step {} + line {}) in {took:?}",
            reader.bytes_scanned(),
            DEFAULT_STEP + w.line_len,
            DEFAULT_STEP,
            w.line_len
        );
        assert!(reader.bytes_scanned() <= DEFAULT_STEP + w.line_len);
    }
    let seek = Instant::now();
    reader.seek(COUNT).unwrap();
    assert!(reader.next_record().unwrap().is_none());
    println!(
        "seek past the end (offset {COUNT}): scanned {} bytes in {:?}",
        reader.bytes_scanned(),
        seek.elapsed()
    );
}
