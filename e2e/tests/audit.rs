//! SPEC §6–§7 end to end: the persistence file, the consumption log, the state file,
//! graceful stop, restarts, and group commit under --fsync.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use audit_format::records::{DeliveryRecord, PersistedRecord, LOG_FILE, PERSIST_FILE};
use e2e::{json_lines, Broker, TempDir};

fn persisted(broker: &Broker) -> Vec<PersistedRecord> {
    broker
        .data_lines(PERSIST_FILE)
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn assert_rfc3339_micros(ts: &str) {
    // 2026-11-22T02:11:27.123456Z
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(
        ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
}

/// Awkward payloads: tabs, newlines, backslashes, non-ASCII, invalid UTF-8, all bytes.
fn awkward(i: usize) -> Vec<u8> {
    let mut m = format!("{i}\t\\n\n\r é€😀 \\\\").into_bytes();
    m.extend((1..=255u8).filter(|b| (*b as usize + i).is_multiple_of(7)));
    m
}

#[test]
fn every_message_is_persisted_once_in_order_and_unescapes_to_the_bytes_sent() {
    let broker = Broker::start(&["--groups", "1"]);
    let (consumer, _) = broker.consumer(&["--count", "3000", "--format", "none"]);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    // Arguments cannot hold a NUL byte; files can: a few messages with all 256 values.
    let dir = TempDir::new("all-bytes");
    for k in 0..3 {
        let all: Vec<u8> = (0..=255u8).cycle().skip(k).take(256 + k).collect();
        let path = dir.0.join(format!("all-{k}"));
        std::fs::write(&path, &all).unwrap();
        let p = broker
            .producer(
                &["--id", "file-producer", "--file", path.to_str().unwrap()],
                None,
            )
            .wait_exit();
        assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
        sent.push(all);
    }
    for chunk in (3..3000).collect::<Vec<_>>().chunks(1000) {
        let msgs: Vec<Vec<u8>> = chunk.iter().map(|&i| awkward(i)).collect();
        let p = broker
            .producer_bytes(&["--id", "arg-producer"], &msgs)
            .wait_exit();
        assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
        sent.extend(msgs);
    }
    assert_eq!(consumer.wait_exit().code(), Some(0));
    let b = broker.stop_keeping_data();
    assert_eq!(b.0.code(), Some(0), "{:?}", b.0.stderr);
    let lines = e2e::data_lines(&b.1 .0.join(PERSIST_FILE));
    let header = std::fs::read_to_string(b.1 .0.join(PERSIST_FILE)).unwrap();
    assert!(header.starts_with("# topic\tpartition\toffset\ttimestamp\tproducer\tkey\tpayload\n"));
    assert_eq!(lines.len(), 3000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line.matches('\t').count(), 6, "7 fields: {line:?}");
        let r = PersistedRecord::parse(line).unwrap();
        assert_eq!(r.offset, i as u64);
        assert_eq!((r.topic.as_str(), r.partition), ("default", 0));
        assert_eq!(r.payload, sent[i], "payload of offset {i}");
        assert_eq!(r.key, None);
        assert_rfc3339_micros(&r.timestamp);
        let producer = if i < 3 {
            "file-producer"
        } else {
            "arg-producer"
        };
        assert_eq!(r.producer, producer);
    }
}

#[test]
fn the_log_has_one_line_per_delivery_with_the_consumer_that_got_it() {
    let broker = Broker::start(&["--groups", "2"]);
    let consumers: Vec<_> = ["ann", "bob", "cid", "dee"]
        .iter()
        .map(|id| broker.consumer(&["--id", id, "--count", "500", "--format", "json"]))
        .collect();
    let input: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    let p = broker
        .producer(&["--id", "src", "-k", "-"], Some(input.into_bytes()))
        .wait_exit();
    assert_eq!(p.code(), Some(0));
    let mut expected = HashSet::new();
    for (proc, group) in consumers {
        let out = proc.wait_exit();
        for v in json_lines(&out.stdout) {
            let who = v["consumer"].as_str().unwrap().to_string();
            expected.insert((group.clone(), v["offset"].as_u64().unwrap(), who));
        }
    }
    assert_eq!(expected.len(), 2000);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    let text = std::fs::read_to_string(data.0.join(LOG_FILE)).unwrap();
    assert!(text.starts_with(
        "# timestamp\ttopic\tpartition\toffset\tproducer\tgroup\tconsumer\tattempt\n"
    ));
    let log: Vec<DeliveryRecord> = e2e::data_lines(&data.0.join(LOG_FILE))
        .iter()
        .map(|l| DeliveryRecord::parse(l).unwrap())
        .collect();
    assert_eq!(log.len(), 2000, "one line per delivery");
    let got: HashSet<_> = log
        .iter()
        .map(|d| (d.group.clone(), d.offset, d.consumer.clone()))
        .collect();
    assert_eq!(got, expected);
    for d in &log {
        assert_eq!(d.attempt, 1);
        assert_eq!(d.producer, "src");
        assert_rfc3339_micros(&d.timestamp);
    }
    // The key "-" is written so that it cannot be mistaken for "no key".
    let persisted = e2e::data_lines(&data.0.join(PERSIST_FILE));
    assert!(
        persisted[0].contains("\tsrc\t\\x2d\tm0"),
        "{}",
        persisted[0]
    );
}

#[test]
fn sigterm_with_a_blocked_producer_and_a_waiting_consumer_stops_everyone_promptly() {
    let broker = Broker::start(&["--groups", "2", "--slots", "16"]);
    // group-1 keeps up; group-2 has nobody, so the ring fills and the producer blocks.
    let (consumer, group) = broker.consumer(&["--count", "1000"]);
    assert_eq!(group, "group-1");
    let mut producer = broker.producer(&["--count", "1000"], None);
    let region = shm_layout::Region::open(&broker.shm).unwrap();
    let deadline = Instant::now() + e2e::DEADLINE;
    while region.next_offset() < 16 {
        assert!(
            Instant::now() < deadline && producer.is_running(),
            "ring never filled"
        );
        std::thread::yield_now();
    }
    drop(region);
    // group-1's consumer has taken and acknowledged all 16, and waits for more.
    broker.wait_for_status("group-1 caught up", |s| {
        s["groups"][0]["partitions"][0]["position"] == 16
    });
    let shm = broker.shm.clone();
    let started = Instant::now();
    let (b, data) = broker.stop_keeping_data();
    let p = producer.wait_exit_within(e2e::DEADLINE);
    let c = consumer.wait_exit();
    let took = started.elapsed();
    println!("broker and clients stopped {took:?} after SIGTERM");
    assert!(took.as_secs() < 5, "took {took:?}");
    assert_eq!(b.code(), Some(0), "{:?}", b.stderr);
    assert_eq!(p.code(), Some(1));
    assert_eq!(
        p.last_stderr_line(),
        "producer: broker stopped (after 16 messages)"
    );
    assert_eq!(c.code(), Some(1));
    assert_eq!(c.last_stderr_line(), "consumer: broker stopped");
    assert!(shm_layout::Region::open(&shm).is_err(), "region unlinked");
    // Files complete: the 16 committed messages, and group-1's deliveries.
    let persisted = e2e::data_lines(&data.0.join(PERSIST_FILE));
    assert_eq!(persisted.len(), 16);
    let printed = c.stdout_text().lines().count();
    let log = e2e::data_lines(&data.0.join(LOG_FILE));
    assert_eq!(log.len(), printed, "every delivery logged");
}

#[test]
fn a_restart_continues_offsets_and_resumes_a_group_at_its_acknowledged_position() {
    let broker = Broker::start(&["--groups", "1"]);
    let (first, _) = broker.consumer(&["--count", "500", "--format", "json"]);
    let input: String = (0..1000).map(|i| format!("before {i}\n")).collect();
    assert_eq!(
        broker
            .producer(&["--id", "early"], Some(input.into_bytes()))
            .wait_exit()
            .code(),
        Some(0)
    );
    let got = json_lines(&first.wait_exit().stdout);
    assert_eq!(got.len(), 500);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));

    let broker = Broker::start_in(data, &["--groups", "1"]);
    let (second, _) = broker.consumer(&["--count", "600", "--format", "json"]);
    let input: String = (0..100).map(|i| format!("after {i}\n")).collect();
    assert_eq!(
        broker
            .producer(&["--id", "late"], Some(input.into_bytes()))
            .wait_exit()
            .code(),
        Some(0)
    );
    let got = json_lines(&second.wait_exit().stdout);
    let offsets: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (500..1100).collect::<Vec<_>>());
    for v in &got {
        let o = v["offset"].as_u64().unwrap();
        let (producer, text) = if o < 1000 {
            ("early", format!("before {o}"))
        } else {
            ("late", format!("after {}", o - 1000))
        };
        assert_eq!(v["payload"], text.as_str());
        assert_eq!(
            v["producer"], producer,
            "replayed records keep their producer"
        );
    }
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    let offsets: Vec<u64> = e2e::data_lines(&data.0.join(PERSIST_FILE))
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap().offset)
        .collect();
    assert_eq!(
        offsets,
        (0..1100).collect::<Vec<_>>(),
        "each offset once, across runs"
    );
    let log = e2e::data_lines(&data.0.join(LOG_FILE));
    assert_eq!(log.len(), 1100, "500 before the restart, 600 after");
    let state = std::fs::read_to_string(data.0.join("offsets.txt")).unwrap();
    assert!(
        state.contains("\nend\t-\tdefault\t0\t1100\t-\n")
            && state.contains("\ngroup\tgroup-1\tdefault\t0\t1100\t1100\n"),
        "{state}"
    );
}

#[test]
fn a_message_handed_out_but_not_acknowledged_before_a_stop_comes_back_as_attempt_2() {
    let broker = Broker::start(&["--groups", "1"]);
    // The library lets us hold a message without acknowledging it.
    let mut holder = consumer::Consumer::connect(&broker.addr, Some("holder"), None).unwrap();
    assert_eq!(
        broker.producer(&["one", "two"], None).wait_exit().code(),
        Some(0)
    );
    let m = holder
        .poll(Some(e2e::DEADLINE))
        .unwrap()
        .expect("a message");
    assert_eq!((m.offset, m.payload), (0, &b"one"[..]));
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    drop(holder);
    let state = std::fs::read_to_string(data.0.join("offsets.txt")).unwrap();
    assert!(
        state.contains("\ngroup\tgroup-1\tdefault\t0\t0\t1\n"),
        "acked below 0, handed out below 1: {state}"
    );

    let broker = Broker::start_in(data, &["--groups", "1"]);
    let (again, _) = broker.consumer(&["--id", "again", "--count", "2", "--format", "json"]);
    let got: Vec<(String, u64)> = e2e::json_lines(&again.wait_exit().stdout)
        .iter()
        .map(|v| {
            (
                v["payload"].as_str().unwrap().to_string(),
                v["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("one".to_string(), 2), ("two".to_string(), 1)],
        "the consumer reports the attempt its log line has"
    );
    let (_, data) = broker.stop_keeping_data();
    let log: Vec<(u64, String, u32)> = e2e::data_lines(&data.0.join(LOG_FILE))
        .iter()
        .map(|l| {
            let d = DeliveryRecord::parse(l).unwrap();
            (d.offset, d.consumer, d.attempt)
        })
        .collect();
    assert_eq!(
        log,
        vec![
            (0, "holder".to_string(), 1),
            (0, "again".to_string(), 2),
            (1, "again".to_string(), 1),
        ]
    );
}

#[test]
fn with_fsync_a_send_returns_only_once_its_message_is_in_the_file() {
    // An hour-long flush interval: only group commit can put the records in the file.
    let broker = Broker::start(&["--groups", "0", "--fsync", "--flush-interval", "1h"]);
    let p = broker.producer(&["a", "b", "c"], None).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let offsets: Vec<u64> = persisted(&broker).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
}

#[test]
fn with_fsync_a_send_to_a_topic_returns_only_once_its_message_is_in_the_file() {
    let broker = Broker::start(&[
        "--topics",
        "orders:2",
        "--groups",
        "0",
        "--fsync",
        "--flush-interval",
        "1h",
    ]);
    let p = broker
        .producer(&["--topic", "orders", "a", "b", "c"], None)
        .wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let mut payloads: Vec<String> = persisted(&broker)
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect();
    payloads.sort();
    assert_eq!(payloads, ["a", "b", "c"]);
}

#[test]
fn without_fsync_sends_do_not_wait_for_the_disk() {
    let broker = Broker::start(&["--groups", "0", "--flush-interval", "1h"]);
    let p = broker.producer(&["a", "b", "c"], None).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    assert!(persisted(&broker).is_empty(), "still in the buffer");
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    assert_eq!(
        e2e::data_lines(&data.0.join(PERSIST_FILE)).len(),
        3,
        "flushed at stop"
    );
}

#[test]
fn a_partial_last_line_is_removed_at_the_next_start_and_nothing_else() {
    let broker = Broker::start(&["--groups", "1", "--buffer-size", "1K"]);
    let big = "y".repeat(10_000);
    assert_eq!(
        broker.producer(&["small", &big], None).wait_exit().code(),
        Some(0)
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    let path = data.0.join(PERSIST_FILE);
    let intact = std::fs::read_to_string(&path).unwrap();
    assert!(
        intact.contains(&big),
        "a record larger than a buffer is written through"
    );
    std::fs::write(&path, format!("{intact}default\t0\t2\t2026-11-22T00:00")).unwrap();
    let log_path = data.0.join(LOG_FILE);
    let log_intact = std::fs::read_to_string(&log_path).unwrap();
    std::fs::write(
        &log_path,
        format!("{log_intact}2026-11-22T00:00:00.000000Z\tdef"),
    )
    .unwrap();

    let broker = Broker::start_in(data, &["--groups", "1"]);
    assert_eq!(broker.producer(&["next"], None).wait_exit().code(), Some(0));
    let (b, data) = broker.stop_keeping_data();
    assert!(
        b.stderr
            .iter()
            .any(|l| l.contains("removed a partial last line")),
        "{:?}",
        b.stderr
    );
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(
        now.starts_with(&intact),
        "nothing before the cut is touched"
    );
    let tail: Vec<&str> = now[intact.len()..].lines().collect();
    assert_eq!(tail.len(), 1);
    assert_eq!(
        PersistedRecord::parse(tail[0]).unwrap().offset,
        2,
        "offsets continue"
    );
    assert!(std::fs::read_to_string(data.0.join(LOG_FILE))
        .unwrap()
        .starts_with(&log_intact));
}

#[test]
fn a_second_broker_on_the_same_data_dir_exits_1() {
    let first = Broker::start(&["--groups", "1"]);
    let data = first.data.0.display().to_string();
    let p = e2e::Proc::spawn(
        &e2e::bin("broker"),
        &[
            "--port",
            "0",
            "--shm-name",
            "/mk-e2e-second-dir",
            "--data-dir",
            &data,
        ],
        None,
        e2e::StdoutMode::Collect,
    )
    .wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(p.stderr.len(), 1, "{:?}", p.stderr);
    assert!(
        p.stderr[0].contains("is in use by another broker"),
        "{:?}",
        p.stderr
    );
}

#[test]
fn broker_status_reports_groups_members_positions_and_lag() {
    let broker = Broker::start(&["--groups", "fast,slow"]);
    let (_reader, g) = broker.consumer(&["--id", "reader", "--count", "5"]);
    assert_eq!(g, "fast");
    assert_eq!(
        broker.producer(&["1", "2", "3"], None).wait_exit().code(),
        Some(0)
    );
    let s = broker.wait_for_status("fast caught up", |s| {
        s["groups"][0]["partitions"][0]["position"] == 3
    });
    assert_eq!(s["ring"]["next_offset"], 3);
    let groups: BTreeMap<String, serde_json::Value> = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_string(), g.clone()))
        .collect();
    assert_eq!(e2e::member_ids(&groups["fast"]), ["reader"]);
    assert_eq!(groups["fast"]["partitions"][0]["lag"], 0);
    assert!(e2e::member_ids(&groups["slow"]).is_empty());
    assert_eq!(
        groups["slow"]["partitions"][0]["lag"], 3,
        "slow holds its messages"
    );
    assert_eq!(s["ring"]["used_slots"], 3);
    let text = e2e::Proc::spawn(
        &e2e::bin("broker"),
        &["status", "-b", &broker.addr],
        None,
        e2e::StdoutMode::Collect,
    )
    .wait_exit()
    .stdout_text();
    assert!(text.contains("slow") && text.contains("reader"), "{text}");
}
