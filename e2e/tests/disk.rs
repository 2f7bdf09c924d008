//! A full disk, and audit files touched while the broker runs: nothing whose send
//! returned is lost, and no offset is ever used twice (SPEC §3, §6, §7).

use std::collections::BTreeMap;

use audit_format::records::{PersistedRecord, PERSIST_FILE};
use e2e::{json_lines, payload_of, Broker, SmallDisk, TempDir};

/// Messages `--count N --size 200` sends: over 3 MB of persistence lines, far more
/// than the 1 MiB disk, and three times the 4096-slot ring.
const MESSAGES: u64 = 12_000;

/// Offset → payload, from the persistence file; panics on a repeated offset.
fn persisted(dir: &TempDir) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for line in e2e::data_lines(&dir.0.join(PERSIST_FILE)) {
        let r = PersistedRecord::parse(&line).unwrap();
        assert!(
            out.insert(r.offset, r.payload).is_none(),
            "offset {} is in the file twice",
            r.offset
        );
    }
    out
}

/// Offset → payload of what a `--format json` consumer printed.
fn printed(stdout: &[u8]) -> BTreeMap<u64, Vec<u8>> {
    json_lines(stdout)
        .iter()
        .map(|v| (v["offset"].as_u64().unwrap(), payload_of(v)))
        .collect()
}

/// The payload `producer --count` gives its `i`-th message of `size` bytes.
fn generated(i: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{i} ").into_bytes();
    p.resize(size, b'x');
    p
}

#[test]
fn a_full_disk_holds_producers_back_and_everything_is_written_once_space_returns() {
    let Some(disk) = SmallDisk::mount("full", "1m") else {
        return;
    };
    let mut broker = Broker::start_in(disk.data_dir(), &["--groups", "1"]);
    let count = MESSAGES.to_string();
    let (consumer, _) = broker.consumer(&["--count", &count, "--format", "json"]);
    let mut producer = broker.producer(&["--count", &count, "--size", "200"], None);
    let full = broker.proc.wait_stderr("No space left on device");
    assert!(
        full.starts_with("broker: cannot write ") && full.contains("retrying"),
        "{full}"
    );
    // The ring holds 4096 messages and nothing is freed unwritten: the producer
    // cannot have finished.
    assert!(producer.is_running(), "the producer waits for the disk");
    // Which file's writer runs out first varies; either way the producer names it.
    let waiting = producer.wait_stderr("waiting for space in default/0: the ");
    assert!(
        waiting.ends_with(" messages behind: cannot write: No space left on device (os error 28)"),
        "{waiting}"
    );

    disk.resize("64m");
    producer.wait_stderr("sending again after ");
    let sent = producer.wait_exit_within(e2e::DEADLINE);
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    broker.proc.wait_stderr("written again after");
    let got = consumer.wait_exit();
    assert_eq!(got.code(), Some(0));
    let got = printed(&got.stdout);
    assert_eq!(got.len() as u64, MESSAGES);

    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let file = persisted(&data);
    assert_eq!(
        file.keys().copied().collect::<Vec<_>>(),
        (0..MESSAGES).collect::<Vec<_>>()
    );
    for (o, payload) in &file {
        assert_eq!(payload, &generated(*o, 200), "offset {o}");
        assert_eq!(Some(payload), got.get(o), "offset {o} as delivered");
    }
    let log = e2e::data_lines(&data.0.join(audit_format::records::LOG_FILE));
    assert_eq!(log.len() as u64, MESSAGES, "one delivery line per message");
    let reports = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("cannot write"))
        .count();
    assert!(
        (1..=2).contains(&reports),
        "each file's failure is reported once: {:?}",
        stopped.stderr
    );
}

#[test]
fn a_stop_on_a_full_disk_keeps_the_region_and_the_next_start_loses_nothing() {
    let Some(disk) = SmallDisk::mount("stop", "1m") else {
        return;
    };
    let mut broker = Broker::start_in(disk.data_dir(), &["--groups", "1"]);
    let count = MESSAGES.to_string();
    let (consumer, _) = broker.consumer(&["--format", "json"]);
    let producer = broker.producer(&["--count", &count, "--size", "200"], None);
    broker.proc.wait_stderr("No space left on device");

    let started = std::time::Instant::now();
    let (stopped, data, shm) = broker.stop_leaving_region();
    eprintln!("stopped in {:?}", started.elapsed());
    assert_eq!(stopped.code(), Some(1), "{:?}", stopped.stderr);
    assert!(
        stopped
            .last_stderr_line()
            .contains(&format!("shared-memory region {shm} is left in place")),
        "{:?}",
        stopped.stderr
    );
    let p = producer.wait_exit();
    assert!(
        p.last_stderr_line().starts_with("producer: broker stopped"),
        "{:?}",
        p.stderr
    );
    let delivered = printed(&consumer.wait_exit().stdout);
    // What the region holds: every offset below this was committed.
    let committed = shm_layout::Region::open(&shm)
        .expect("the region was kept")
        .next_offset();
    // The file may end in a line cut short by the full disk.
    let lines = std::fs::read(data.0.join(PERSIST_FILE)).unwrap();
    let whole_lines = lines.iter().filter(|&&b| b == b'\n').count() as u64;
    assert!(committed + 1 > whole_lines, "the file lacks records");

    disk.resize("64m");
    // Without groups: nothing to deliver again (group-1, with no consumer now,
    // would hold the ring with what it had not acknowledged).
    let broker = Broker::start_with(data, shm, &["--groups", "0"]);
    let after = broker.producer(&["after"], None).wait_exit();
    assert_eq!(after.code(), Some(0), "{:?}", after.stderr);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let file = persisted(&data);
    assert_eq!(
        file.keys().copied().collect::<Vec<_>>(),
        (0..=committed).collect::<Vec<_>>(),
        "every committed record once, and the next message after them"
    );
    assert_eq!(file[&committed], b"after");
    for (o, payload) in &delivered {
        assert_eq!(Some(payload), file.get(o), "offset {o} as delivered");
    }
    for o in 0..committed {
        assert_eq!(file[&o], generated(o, 200), "offset {o}");
    }
}

/// Waits until the persistence file holds `n` records.
fn wait_for_records(dir: &TempDir, n: usize) {
    let path = dir.0.join(PERSIST_FILE);
    let deadline = std::time::Instant::now() + e2e::DEADLINE;
    loop {
        // Whole lines only: the writer may be in the middle of one.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if whole.lines().filter(|l| !l.starts_with('#')).count() >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never {n} records");
        std::thread::yield_now();
    }
}

/// Sends `texts` as messages and checks the producer succeeded.
fn send(broker: &Broker, texts: &[&str]) {
    let p = broker.producer(texts, None).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
}

#[test]
fn a_persistence_file_deleted_while_the_broker_runs_is_restored_and_offsets_go_on() {
    let mut broker = Broker::start(&["--groups", "0", "--flush-interval", "10ms"]);
    send(&broker, &["a", "b", "c"]);
    wait_for_records(&broker.data, 3);
    std::fs::remove_file(broker.data.0.join(PERSIST_FILE)).unwrap();
    send(&broker, &["d", "e"]);
    let line = broker.proc.wait_stderr(PERSIST_FILE);
    assert!(
        line.contains("was deleted while the broker ran; restored it"),
        "{line}"
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let file = persisted(&data);
    assert_eq!(
        file.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(file[&4], b"e");

    let broker = Broker::start_in(data, &["--groups", "0"]);
    send(&broker, &["f"]);
    let (_, data) = broker.stop_keeping_data();
    assert_eq!(persisted(&data)[&5], b"f", "offset 5 is the next one");
}

#[test]
fn a_persistence_file_replaced_while_the_broker_runs_is_restored_and_the_other_kept() {
    let mut broker = Broker::start(&["--groups", "0", "--flush-interval", "10ms"]);
    send(&broker, &["a", "b"]);
    wait_for_records(&broker.data, 2);
    let other = broker.data.0.join("other.txt");
    std::fs::write(&other, "someone else's file\n").unwrap();
    std::fs::rename(&other, broker.data.0.join(PERSIST_FILE)).unwrap();
    send(&broker, &["c"]);
    let line = broker.proc.wait_stderr("replaced by another file");
    let aside = line
        .split("moved to ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        std::fs::read_to_string(aside).unwrap(),
        "someone else's file\n"
    );
    let (_, data) = broker.stop_keeping_data();
    assert_eq!(
        persisted(&data).keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn a_persistence_file_cut_while_the_broker_runs_is_reported_and_offsets_never_repeat() {
    let mut broker = Broker::start(&["--groups", "0", "--flush-interval", "10ms"]);
    send(&broker, &["a", "b", "c"]);
    wait_for_records(&broker.data, 3);
    let header_only = audit_format::records::PERSIST_HEADER.len() as u64;
    std::fs::File::options()
        .write(true)
        .open(broker.data.0.join(PERSIST_FILE))
        .unwrap()
        .set_len(header_only)
        .unwrap();
    send(&broker, &["d"]);
    let line = broker.proc.wait_stderr("was cut from");
    assert!(line.contains(PERSIST_FILE), "{line}");
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert_eq!(
        persisted(&data).keys().copied().collect::<Vec<_>>(),
        vec![3]
    );

    let broker = Broker::start_in(data, &["--groups", "0"]);
    send(&broker, &["e"]);
    let (_, data) = broker.stop_keeping_data();
    assert_eq!(
        persisted(&data).keys().copied().collect::<Vec<_>>(),
        vec![3, 4]
    );
}

#[test]
fn a_persistence_file_missing_at_start_is_refused_unless_its_loss_is_accepted() {
    let broker = Broker::start(&["--groups", "1"]);
    send(&broker, &["a", "b", "c"]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    std::fs::remove_file(data.0.join(PERSIST_FILE)).unwrap();

    let f = Broker::refused(&data, &["--groups", "1"]);
    assert_eq!(
        f.stderr,
        vec![format!(
            "broker: {PERSIST_FILE} ends before offset 0 of default/0, but offsets up to 3 were assigned (offsets.txt): records 0..3 are missing (was the file cut, deleted or replaced?); restore it, or start with --accept-lost-records to skip them"
        )]
    );

    let mut broker = Broker::start_in(data, &["--groups", "1", "--accept-lost-records"]);
    broker.proc.wait_stderr("group group-1 skips offsets 0..3");
    let (c, _) = broker.consumer(&["--count", "1", "--format", "json"]);
    send(&broker, &["d"]);
    let got = printed(&c.wait_exit().stdout);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![3],
        "never offset 0 again"
    );
}

#[test]
fn the_older_state_file_is_read_once_and_replaced() {
    let broker = Broker::start(&["--groups", "1"]);
    send(&broker, &["a", "b", "c"]);
    let (_, data) = broker.stop_keeping_data();
    // As an older broker left it: group-1 acknowledged offset 0 only.
    std::fs::remove_file(data.0.join("offsets.txt")).unwrap();
    std::fs::write(
        data.0.join("group_positions.txt"),
        "# group\tposition\thanded_out\ngroup-1\t1\t1\n",
    )
    .unwrap();
    let mut broker = Broker::start_in(data, &["--groups", "1"]);
    broker
        .proc
        .wait_stderr("read the group positions from group_positions.txt");
    let (c, _) = broker.consumer(&["--count", "2"]);
    assert_eq!(c.wait_exit().stdout_text(), "b\nc\n");
    let (_, data) = broker.stop_keeping_data();
    assert!(!data.0.join("group_positions.txt").exists());
    let state = std::fs::read_to_string(data.0.join("offsets.txt")).unwrap();
    assert!(
        state.contains("\ngroup\tgroup-1\tdefault\t0\t3\t3\n"),
        "{state}"
    );
}

#[test]
fn a_line_appended_to_the_file_that_is_not_a_record_is_reported_and_kept() {
    let broker = Broker::start(&["--groups", "0"]);
    send(&broker, &["a", "b"]);
    let (_, data) = broker.stop_keeping_data();
    let path = data.0.join(PERSIST_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("someone's note\n");
    std::fs::write(&path, &text).unwrap();

    let mut broker = Broker::start_in(data, &["--groups", "0"]);
    let line = broker.proc.wait_stderr("not records");
    assert_eq!(
        line,
        format!("broker: {PERSIST_FILE} ends with 1 line(s) that are not records (the last: \"someone's note\"); they are kept, and new records follow them")
    );
    send(&broker, &["c"]);
    let (_, data) = broker.stop_keeping_data();
    let lines = e2e::data_lines(&data.0.join(PERSIST_FILE));
    assert_eq!(lines[2], "someone's note", "nothing is cut");
    let c = PersistedRecord::parse(&lines[3]).unwrap();
    assert_eq!((c.offset, c.payload), (2, b"c".to_vec()));
}

#[test]
fn a_state_file_line_that_does_not_parse_is_refused_and_a_position_past_the_end_is_clamped_aloud() {
    let broker = Broker::start(&["--groups", "1"]);
    send(&broker, &["a", "b", "c"]);
    let (_, data) = broker.stop_keeping_data();
    let state = data.0.join("offsets.txt");
    let good = std::fs::read_to_string(&state).unwrap();

    // Skipping the line would start group-1 at the end, past what it never read.
    std::fs::write(
        &state,
        good.replace(
            "group\tgroup-1\tdefault\t0\t0\t",
            "group\tgroup-1\tdefault\t0\tlots\t",
        ),
    )
    .unwrap();
    let f = Broker::refused(&data, &["--groups", "1"]);
    assert_eq!(
        f.stderr,
        vec!["broker: offsets.txt line 3 is not a state record (\"group\\tgroup-1\\tdefault\\t0\\tlots\\t0\"): fix or remove that line".to_string()]
    );

    std::fs::write(
        &state,
        good.replace(
            "group\tgroup-1\tdefault\t0\t0\t0",
            "group\tgroup-1\tdefault\t0\t900\t900",
        ),
    )
    .unwrap();
    let mut broker = Broker::start_in(data, &["--groups", "1"]);
    broker.proc.wait_stderr("group group-1's saved position 900 is past the last offset ever assigned (3); it resumes at 3");
    let (c, _) = broker.consumer(&["--count", "1"]);
    send(&broker, &["d"]);
    assert_eq!(c.wait_exit().stdout_text(), "d\n");
}

#[test]
fn a_line_another_process_appends_while_the_broker_runs_is_reported_and_kept() {
    let mut broker = Broker::start(&["--groups", "0", "--flush-interval", "10ms"]);
    send(&broker, &["a"]);
    wait_for_records(&broker.data, 1);
    let path = broker.data.0.join(PERSIST_FILE);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"a stray line\n").unwrap();
    send(&broker, &["b"]);
    let line = broker.proc.wait_stderr("grew by");
    assert_eq!(
        line,
        format!("broker: {PERSIST_FILE} grew by 13 bytes the broker did not write (another process appends to it); they are kept")
    );
    let (_, data) = broker.stop_keeping_data();
    let lines = e2e::data_lines(&data.0.join(PERSIST_FILE));
    assert_eq!(lines[1], "a stray line");
    assert_eq!(PersistedRecord::parse(&lines[2]).unwrap().offset, 1);
}

#[test]
fn a_full_disk_holds_a_partitions_producers_back_naming_the_partition_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("full-topic", "1m") else {
        return;
    };
    let broker = Broker::start_in(
        disk.data_dir(),
        &["--groups", "0", "--topics", "orders:2", "--slots", "256"],
    );
    let count = MESSAGES.to_string();
    let mut producer = broker.producer(
        &[
            "--topic",
            "orders",
            "--partition",
            "1",
            "--count",
            &count,
            "--size",
            "200",
        ],
        None,
    );
    // Its ring is freed only once persisted: the persistence file holds it back.
    let waiting = producer.wait_stderr("waiting for space in orders/1: the ");
    assert!(
        waiting.contains("the persistence file is ")
            && waiting
                .ends_with(" messages behind: cannot write: No space left on device (os error 28)"),
        "{waiting}"
    );
    disk.resize("64m");
    let sent = producer.wait_exit_within(e2e::DEADLINE);
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let offsets: Vec<u64> = e2e::data_lines(&data.0.join(PERSIST_FILE))
        .iter()
        .map(|l| {
            let r = PersistedRecord::parse(l).expect("a record line");
            assert_eq!((r.topic.as_str(), r.partition), ("orders", 1));
            assert_eq!(r.payload, generated(r.offset, 200));
            r.offset
        })
        .collect();
    assert_eq!(
        offsets,
        (0..MESSAGES).collect::<Vec<_>>(),
        "each once, in order"
    );
}
