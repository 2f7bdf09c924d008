//! The persistence file's sparse index (SPEC §10), kept by the broker: written as
//! records are persisted, and rebuilt at start-up when it is missing, truncated or
//! scribbled. Read back with the same reader any client uses.

use std::path::Path;

use audit_format::index::{index_file_name, IndexError, SparseIndex, TopicPartition};
use audit_format::log_reader::LogReader;
use e2e::{Broker, TempDir};

/// 4,000 messages of 200 bytes: about 1 MB of file, so some 15 entries at 64 KiB.
const MESSAGES: u64 = 4000;

fn index_path(data: &Path) -> std::path::PathBuf {
    data.join(index_file_name(0, 0))
}

fn open_index(data: &Path) -> Result<SparseIndex, IndexError> {
    SparseIndex::open(data, &TopicPartition::default_topic())
}

/// The index as one scan of the file would build it.
fn scanned(data: &Path, step: u64) -> SparseIndex {
    SparseIndex::from_scan(data, &TopicPartition::default_topic(), step).unwrap()
}

/// Runs a broker on `data` that sends `MESSAGES` and stops; returns the directory
/// and what the broker printed on stderr.
fn fill(data: TempDir) -> (TempDir, Vec<String>) {
    let broker = Broker::start_in(data, &["--groups", "1"]);
    let count = MESSAGES.to_string();
    let sent = broker
        .producer(&["--count", &count, "--size", "200"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    (data, stopped.stderr)
}

/// Restarts a broker on `data` and stops it; returns what it printed on stderr.
fn restart(data: TempDir) -> (TempDir, Vec<String>) {
    let broker = Broker::start_in(data, &["--groups", "1"]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    (data, stopped.stderr)
}

/// The index is the one a scan builds, and a reader seeks through it to any offset.
fn assert_index_serves(data: &Path) {
    let index = open_index(data).expect("a usable index");
    let expected = scanned(data, index.step());
    assert_eq!(index.entries(), expected.entries());
    assert!(
        index.entries().len() >= 10,
        "{} entries",
        index.entries().len()
    );
    let step = index.step();
    let mut reader = LogReader::open(index).unwrap();
    for offset in [0, MESSAGES / 2, MESSAGES - 1] {
        reader.seek(offset).unwrap();
        let record = reader.next_record().unwrap().expect("a record");
        assert_eq!(record.record.offset, offset);
        let payload = &record.record.payload;
        assert!(payload.starts_with(format!("{offset} ").as_bytes()));
        assert_eq!(payload.len(), 200);
        assert!(
            reader.bytes_scanned() <= step + 512,
            "seek to {offset} scanned {} bytes",
            reader.bytes_scanned()
        );
    }
}

#[test]
fn the_broker_indexes_the_persistence_file_as_it_writes_it() {
    let (data, stderr) = fill(TempDir::new("index"));
    assert!(
        stderr.is_empty(),
        "a new directory's index is no news: {stderr:?}"
    );
    assert_index_serves(&data.0);
}

#[test]
fn a_missing_truncated_or_scribbled_index_is_rebuilt_at_the_next_start() {
    let (mut data, _) = fill(TempDir::new("index-damage"));
    type Damage = (&'static str, fn(&Path));
    let damages: [Damage; 3] = [
        ("deleted", |p| std::fs::remove_file(p).unwrap()),
        ("truncated", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(len - 5).unwrap();
        }),
        ("scribbled", |p| {
            // The last entry's position, pointed into the middle of a line.
            let mut bytes = std::fs::read(p).unwrap();
            let n = bytes.len();
            bytes[n - 8] ^= 0x55;
            std::fs::write(p, bytes).unwrap();
        }),
    ];
    for (what, damage) in damages {
        damage(&index_path(&data.0));
        assert!(open_index(&data.0).is_err(), "{what}: the damage is seen");
        let (restarted, stderr) = restart(data);
        data = restarted;
        assert!(
            stderr.iter().any(|l| l.starts_with(
                "broker: rebuilt the index of persistencia_mensajes.txt (4000 records): "
            )),
            "{what}: {stderr:?}"
        );
        assert_index_serves(&data.0);
    }
}

#[test]
fn an_index_left_behind_by_a_killed_broker_is_brought_up_to_date() {
    let broker = Broker::start(&["--groups", "1"]);
    let count = MESSAGES.to_string();
    let sent = broker
        .producer(&["--count", &count, "--size", "200"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0));
    broker.wait_for_status("all persisted", |s| {
        s["ring"]["persisted_offset"] == MESSAGES
    });
    // The next broker recovers the killed one's region (and unlinks it at its stop).
    let (data, shm) = broker.kill();
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let stderr = stopped.stderr;
    assert!(
        !stderr.iter().any(|l| l.contains("index")),
        "caught up, not rebuilt: {stderr:?}"
    );
    assert_index_serves(&data.0);
}
