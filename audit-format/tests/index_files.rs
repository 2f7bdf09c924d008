//! The index files: what the writer writes, what makes an index unusable, and
//! that a rebuild then yields the right index (SPEC §10).

mod support;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use audit_format::index::{
    index_file_name, rebuild, IndexConfig, IndexError, IndexProblem, IndexWriter, SparseIndex,
    WriterStart, CHECKPOINT_FILE,
};
use audit_format::log_reader::{LogError, LogReader};
use support::*;

const STEP: u64 = 1024;

fn config() -> IndexConfig {
    IndexConfig {
        step: STEP,
        checkpoint_every: 1 << 40,
    }
}

fn entries_of(index: &SparseIndex) -> Vec<(u64, u64)> {
    index
        .entries()
        .iter()
        .map(|e| (e.offset, e.position))
        .collect()
}

/// Two partitions, a few dozen entries each.
fn two_partitions(dir: &Scratch) -> Vec<Written> {
    write_log(
        dir.path(),
        &default_topic(2),
        config(),
        &messages(600, 2, 100),
        37,
    )
}

/// Opening `partition`'s index fails with `problem`; `IndexWriter::open` then
/// rebuilds, and the index matches the file again.
fn assert_rebuilt_after(dir: &Scratch, p: u32, problem: IndexProblem, written: &[Written]) {
    match SparseIndex::open(dir.path(), &partition(p)) {
        Err(e) => assert_eq!(e.problem(), Some(&problem), "{e}"),
        Ok(_) => panic!("an index with {problem:?} opened"),
    }
    let (writer, start) = IndexWriter::open(dir.path(), &default_topic(2), config()).unwrap();
    match start {
        WriterStart::Rebuilt { reason, rebuilt } => {
            assert_eq!(reason.problem(), Some(&problem), "{reason}");
            assert_eq!(rebuilt.partitions, 2);
            assert_eq!(rebuilt.records, written.len() as u64);
        }
        other => panic!("not rebuilt: {other:?}"),
    }
    writer
        .close(fs::metadata(dir.persistence()).unwrap().len())
        .unwrap();
    for p in 0..2 {
        let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
        assert_eq!(entries_of(&index), expected_entries(written, p, STEP));
    }
}

fn index_path(dir: &Scratch, p: u32) -> std::path::PathBuf {
    dir.path().join(index_file_name(0, p))
}

#[test]
fn the_writer_indexes_each_partitions_first_record_and_one_record_per_step() {
    let dir = Scratch::new("steps");
    let written = two_partitions(&dir);
    for p in 0..2 {
        let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
        let expected = expected_entries(&written, p, STEP);
        assert!(expected.len() > 20, "{}", expected.len());
        assert_eq!(entries_of(&index), expected);
        assert_eq!(index.first().map(|e| e.offset), Some(0));
        assert_eq!(index.step(), STEP);
    }
    // A rebuild writes the same bytes.
    let before = fs::read(index_path(&dir, 1)).unwrap();
    let rebuilt = rebuild(dir.path(), &default_topic(2), STEP).unwrap();
    assert_eq!(fs::read(index_path(&dir, 1)).unwrap(), before);
    assert_eq!(rebuilt.records, 600);
    assert_eq!(rebuilt.unindexed_records, 0);
    assert_eq!(
        rebuilt.through,
        fs::metadata(dir.persistence()).unwrap().len()
    );
    // So does a scan into memory.
    let scanned = SparseIndex::from_scan(dir.path(), &partition(1), STEP).unwrap();
    assert_eq!(entries_of(&scanned), expected_entries(&written, 1, STEP));
    // Nothing else is left in the directory.
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "index-0-0.idx",
            "index-0-1.idx",
            CHECKPOINT_FILE,
            "persistencia_mensajes.txt"
        ]
    );
}

#[test]
fn a_new_data_directory_starts_with_a_rebuild_of_an_empty_file() {
    let dir = Scratch::new("new");
    let (log, start) = LogWriter::open(dir.path(), &default_topic(1), config());
    match start {
        WriterStart::Rebuilt { reason, rebuilt } => {
            assert_eq!(reason.problem(), Some(&IndexProblem::Missing));
            assert_eq!((rebuilt.records, rebuilt.entries), (0, 0));
        }
        other => panic!("{other:?}"),
    }
    log.close();
    let index = SparseIndex::open(dir.path(), &partition(0)).unwrap();
    assert!(index.entries().is_empty());
    let (_, start) = LogWriter::open(dir.path(), &default_topic(1), config());
    assert!(
        matches!(start, WriterStart::Resumed { caught_up_bytes: 0 }),
        "{start:?}"
    );
}

#[test]
fn a_missing_index_or_checkpoint_is_rebuilt() {
    let dir = Scratch::new("missing");
    let written = two_partitions(&dir);
    fs::remove_file(index_path(&dir, 1)).unwrap();
    assert_rebuilt_after(&dir, 1, IndexProblem::Missing, &written);
    fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
    assert_rebuilt_after(&dir, 0, IndexProblem::Missing, &written);
}

#[test]
fn a_truncated_index_is_rebuilt() {
    let dir = Scratch::new("truncated");
    let written = two_partitions(&dir);
    let cut = |len: u64| {
        OpenOptions::new()
            .write(true)
            .open(index_path(&dir, 0))
            .unwrap()
            .set_len(len)
            .unwrap()
    };
    cut(20);
    assert_rebuilt_after(&dir, 0, IndexProblem::TooShort { len: 20 }, &written);
    let len = fs::metadata(index_path(&dir, 0)).unwrap().len();
    cut(len - 5);
    assert_rebuilt_after(
        &dir,
        0,
        IndexProblem::PartialEntry { len: len - 5 },
        &written,
    );
}

/// Writes `value` over the 8 bytes of field `field` (0: offset, 1: position) of
/// entry `entry` of partition `p`'s index.
fn scribble(dir: &Scratch, p: u32, entry: usize, field: usize, value: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(index_path(dir, p))
        .unwrap();
    file.write_all_at(&value.to_le_bytes(), (32 + entry * 16 + field * 8) as u64)
        .unwrap();
}

fn entry_count(dir: &Scratch, p: u32) -> usize {
    (fs::metadata(index_path(dir, p)).unwrap().len() as usize - 32) / 16
}

#[test]
fn scribbled_entries_are_found_and_rebuilt() {
    let dir = Scratch::new("scribbled");
    let written = two_partitions(&dir);
    let expected = expected_entries(&written, 0, STEP);
    let last = entry_count(&dir, 0) - 1;

    // Out of order.
    scribble(&dir, 0, 3, 0, expected[1].0);
    assert_rebuilt_after(&dir, 0, IndexProblem::NotIncreasing { entry: 3 }, &written);

    // The last entry names another offset of its line.
    let (offset, position) = expected[last];
    scribble(&dir, 0, last, 0, offset + 1);
    let problem = IndexProblem::EntryMismatch {
        entry: last,
        offset: offset + 1,
        position,
    };
    assert_rebuilt_after(&dir, 0, problem, &written);

    // The first entry points into the middle of its line.
    let (offset, position) = expected[0];
    scribble(&dir, 0, 0, 1, position + 1);
    let problem = IndexProblem::EntryMismatch {
        entry: 0,
        offset,
        position: position + 1,
    };
    assert_rebuilt_after(&dir, 0, problem, &written);

    // An entry in the middle, still in order, points at another partition's line:
    // opening checks only the ends; the seek that starts from it finds it.
    let (offset, _) = expected[5];
    let other = written
        .iter()
        .find(|w| w.message.partition == 1 && w.position > expected[4].1)
        .unwrap()
        .position;
    assert!(other < expected[6].1);
    scribble(&dir, 0, 5, 1, other);
    let index = SparseIndex::open(dir.path(), &partition(0)).unwrap();
    let mut reader = LogReader::open(index).unwrap();
    reader.seek(offset - 1).unwrap();
    match reader.seek(offset) {
        Err(LogError::Index(e)) => assert_eq!(
            e.problem(),
            Some(&IndexProblem::EntryMismatch {
                entry: 5,
                offset,
                position: other
            })
        ),
        other => panic!("{other:?}"),
    }
    rebuild(dir.path(), &default_topic(2), STEP).unwrap();
    let mut reader =
        LogReader::open(SparseIndex::open(dir.path(), &partition(0)).unwrap()).unwrap();
    reader.seek(offset).unwrap();
    assert_eq!(reader.next_record().unwrap().unwrap().record.offset, offset);
}

#[test]
fn a_wrong_header_is_rebuilt() {
    let dir = Scratch::new("header");
    let written = two_partitions(&dir);
    let write_at = |p: u32, at: u64, bytes: &[u8]| {
        let file = OpenOptions::new()
            .write(true)
            .open(index_path(&dir, p))
            .unwrap();
        file.write_all_at(bytes, at).unwrap();
    };
    write_at(0, 0, b"NOTANIDX");
    assert_rebuilt_after(&dir, 0, IndexProblem::Magic, &written);
    write_at(1, 8, &7u32.to_le_bytes());
    assert_rebuilt_after(&dir, 1, IndexProblem::Version { found: 7 }, &written);
    // Partition 1's index in partition 0's place.
    fs::copy(index_path(&dir, 1), index_path(&dir, 0)).unwrap();
    let problem = IndexProblem::OtherPartition {
        topic_id: 0,
        partition: 1,
    };
    assert_rebuilt_after(&dir, 0, problem, &written);
    write_at(0, 24, &(STEP * 2).to_le_bytes());
    let problem = IndexProblem::Step {
        found: STEP * 2,
        expected: STEP,
    };
    assert_rebuilt_after(&dir, 0, problem, &written);
    // The checkpoint's checksum covers its fields.
    let checkpoint = OpenOptions::new()
        .write(true)
        .open(dir.path().join(CHECKPOINT_FILE))
        .unwrap();
    checkpoint.write_all_at(&[0xff], 30).unwrap();
    assert_rebuilt_after(&dir, 0, IndexProblem::CheckpointChecksum, &written);
}

#[test]
fn another_step_asked_of_the_writer_rebuilds_every_index() {
    let dir = Scratch::new("step");
    let written = two_partitions(&dir);
    let bigger = IndexConfig {
        step: STEP * 4,
        ..config()
    };
    let (writer, start) = IndexWriter::open(dir.path(), &default_topic(2), bigger).unwrap();
    match start {
        WriterStart::Rebuilt { reason, .. } => assert_eq!(
            reason.problem(),
            Some(&IndexProblem::Step {
                found: STEP,
                expected: STEP * 4
            })
        ),
        other => panic!("{other:?}"),
    }
    drop(writer);
    let index = SparseIndex::open(dir.path(), &partition(1)).unwrap();
    assert_eq!(index.step(), STEP * 4);
    assert_eq!(entries_of(&index), expected_entries(&written, 1, STEP * 4));
}

#[test]
fn an_entry_past_the_end_of_a_cut_file_is_rebuilt() {
    let dir = Scratch::new("past-end");
    let topics = default_topic(2);
    let (mut log, _) = LogWriter::open(dir.path(), &topics, config());
    for m in messages(600, 2, 100) {
        log.append(m);
    }
    log.write_buffer();
    // The writer is gone without a checkpoint (it was killed): the checkpoint
    // still says only the header is indexed.
    drop(log.index);
    let written = log.written;
    // The file loses its last lines, down to the middle of partition 0's last
    // entry's line.
    let last = *expected_entries(&written, 0, STEP).last().unwrap();
    let cut_at = last.1 + 10;
    let file = OpenOptions::new()
        .write(true)
        .open(dir.persistence())
        .unwrap();
    file.set_len(cut_at).unwrap();
    let kept: Vec<Written> = written
        .into_iter()
        .filter(|w| w.position + w.line_len <= cut_at)
        .collect();
    let problem = IndexProblem::EntryPastEnd {
        entry: entry_count(&dir, 0) - 1,
        position: last.1,
    };
    match SparseIndex::open(dir.path(), &partition(0)) {
        Err(e) => assert_eq!(e.problem(), Some(&problem), "{e}"),
        Ok(_) => panic!("opened"),
    }
    // The broker removes the cut line before it indexes.
    let whole = kept.last().map(|w| w.position + w.line_len).unwrap();
    file.set_len(whole).unwrap();
    let problem = IndexProblem::EntryPastEnd {
        entry: entry_count(&dir, 0) - 1,
        position: last.1,
    };
    assert_rebuilt_after(&dir, 0, problem, &kept);
}

#[test]
fn a_checkpoint_past_the_end_of_the_file_is_rebuilt() {
    let dir = Scratch::new("checkpoint-past-end");
    let written = two_partitions(&dir);
    let keep = written.len() - 3;
    let whole = written[keep].position;
    let file_len = fs::metadata(dir.persistence()).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(dir.persistence())
        .unwrap()
        .set_len(whole)
        .unwrap();
    let problem = IndexProblem::CheckpointPastEnd {
        through: file_len,
        file_len: whole,
    };
    assert_rebuilt_after(&dir, 0, problem, &written[..keep]);
}

#[test]
fn a_replaced_persistence_file_is_rebuilt() {
    let dir = Scratch::new("replaced");
    two_partitions(&dir);
    // Another file with the same records, published a microsecond later: lines of
    // the same lengths at the same places.
    let other = Scratch::new("replacement");
    let mut later = messages(600, 2, 100);
    for m in &mut later {
        m.timestamp_us += 1;
    }
    let written = write_log(other.path(), &default_topic(2), config(), &later, 37);
    fs::copy(other.persistence(), dir.persistence()).unwrap();
    assert_rebuilt_after(&dir, 1, IndexProblem::OtherFile, &written);
}

#[test]
fn a_writer_that_died_before_flushing_catches_up_at_the_next_open() {
    let dir = Scratch::new("catch-up");
    let topics = default_topic(2);
    let config = IndexConfig {
        step: STEP,
        checkpoint_every: 8 * STEP,
    };
    let all = messages(900, 2, 100);
    // Partition 1 gets its first record only after the last flush.
    let (first_part, rest): (Vec<Message>, Vec<Message>) = all
        .iter()
        .cloned()
        .partition(|m| m.partition == 0 && m.offset < 300);
    let (mut log, _) = LogWriter::open(dir.path(), &topics, config);
    for m in first_part {
        log.append(m);
    }
    log.write_buffer();
    for m in rest {
        log.append(m);
    }
    // The lines reach the file; the writer dies before its flush.
    log.file.write_all_at(&log.buffer, log.len).unwrap();
    let written = log.written.clone();
    let len = log.len + log.buffer.len() as u64;
    drop(log);
    let index = SparseIndex::open(dir.path(), &partition(1)).unwrap();
    assert!(index.entries().is_empty(), "partition 1 lags");
    let (writer, start) = IndexWriter::open(dir.path(), &topics, config).unwrap();
    match start {
        WriterStart::Resumed { caught_up_bytes } => {
            assert!(
                caught_up_bytes > 0 && caught_up_bytes < len,
                "{caught_up_bytes}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(writer.noted_through(), len);
    writer.close(len).unwrap();
    for p in 0..2 {
        let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
        assert_eq!(
            entries_of(&index),
            expected_entries(&written, p, STEP),
            "{p}"
        );
    }
}

#[test]
fn entries_are_appended_only_once_their_lines_are_written() {
    let dir = Scratch::new("ordering");
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config());
    for m in messages(100, 1, 100) {
        log.append(m);
    }
    let expected = expected_entries(&log.written, 0, STEP);
    // Half the buffer reaches the file.
    let half = log.buffer.len() / 2;
    log.file.write_all_at(&log.buffer[..half], log.len).unwrap();
    let written_to = log.len + half as u64;
    log.index.flush(written_to).unwrap();
    let index = SparseIndex::open(dir.path(), &partition(0)).unwrap();
    let in_file: Vec<_> = expected
        .iter()
        .copied()
        .filter(|&(offset, _)| {
            let w = &log.written[offset as usize];
            w.position + w.line_len <= written_to
        })
        .collect();
    assert!(in_file.len() < expected.len() && !in_file.is_empty());
    assert_eq!(entries_of(&index), in_file);
}

#[test]
fn the_writer_refuses_lines_out_of_order_and_unknown_partitions() {
    let dir = Scratch::new("refusals");
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config());
    log.append(messages(1, 1, 10).remove(0));
    let end = log.len + log.buffer.len() as u64;
    let p0 = partition(0).id();
    let err = log.index.note(p0, 1, end + 1, 10).unwrap_err();
    assert!(
        matches!(err, IndexError::LineOutOfOrder { position, expected } if position == end + 1 && expected == end)
    );
    let err = log.index.note(p0, 0, end, 10).unwrap_err();
    assert_eq!(
        err.to_string(),
        "offset 0 of topic id 0 partition 0 was noted after offset 0"
    );
    let err = log.index.note(partition(1).id(), 5, end, 10).unwrap_err();
    assert_eq!(err.to_string(), "topic id 0 partition 1 is not indexed");
    let err = log.index.note(p0, 1, end, 0).unwrap_err();
    assert!(matches!(err, IndexError::EmptyLine { .. }));
    // None of them counted: the next line in order is taken.
    log.index.note(p0, 1, end, 10).unwrap();
}

#[test]
fn a_topic_added_at_run_time_gets_indexes_that_fill_as_records_come() {
    let dir = Scratch::new("add-topic");
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config());
    for m in messages(50, 1, 100) {
        log.append(m);
    }
    log.write_buffer();
    // Partitions 1 and 2 of the topic are new.
    log.index.add_topic("default", 0, 3).unwrap();
    let empty = SparseIndex::open(dir.path(), &partition(2)).unwrap();
    assert!(empty.entries().is_empty());
    for m in messages(300, 3, 100) {
        if m.partition != 0 {
            log.append(m);
        }
    }
    let written = log.close();
    for p in 1..3 {
        let index = SparseIndex::open(dir.path(), &partition(p)).unwrap();
        assert_eq!(entries_of(&index), expected_entries(&written, p, STEP));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Noting a batch of lines at a time (as the broker's persister does) places
    /// exactly the entries of noting each line: the step rule's.
    #[test]
    fn batches_of_lines_get_the_entries_of_the_step_rule(
        sizes in proptest::collection::vec(0usize..700, 1..400),
        cuts in proptest::collection::vec(1usize..40, 1..60),
        step in 1u64..4096,
    ) {
        let dir = Scratch::new("batches");
        let config = IndexConfig { step, checkpoint_every: 1 << 40 };
        let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config);
        let mut all = messages(sizes.len() as u64, 1, 0);
        for (m, &size) in all.iter_mut().zip(&sizes) {
            m.payload = vec![b'x'; size];
        }
        let mut rest = &all[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            log.append_batch(&rest[..n]);
            // Some batches wait for the next one before the file gets them.
            if n % 3 != 0 {
                log.write_buffer();
            }
            rest = &rest[n..];
        }
        let written = log.close();
        let index = SparseIndex::open(dir.path(), &partition(0)).unwrap();
        proptest::prop_assert_eq!(entries_of(&index), expected_entries(&written, 0, step));
    }
}

#[test]
fn a_batch_that_is_not_whole_lines_is_refused() {
    let dir = Scratch::new("not-whole");
    let (mut log, _) = LogWriter::open(dir.path(), &default_topic(1), config());
    let at = log.len;
    let id = partition(0).id();
    match log.index.note_lines(id, at, b"default\t0\t5\t2026") {
        Err(IndexError::NotWholeLines { position }) => assert_eq!(position, at),
        other => panic!("{other:?}"),
    }
    match log.index.note_lines(id, at, b"not a record line\n") {
        Err(IndexError::NotWholeLines { .. }) => {}
        other => panic!("{other:?}"),
    }
    match log.index.note_lines(id, at + 1, b"x\n") {
        Err(IndexError::LineOutOfOrder { .. }) => {}
        other => panic!("{other:?}"),
    }
}
