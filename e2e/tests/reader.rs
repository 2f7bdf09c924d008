//! SPEC §10 end to end: standalone readers (`consumer --from`) read any offset
//! still in the persistence file, from the ring or the file, hold nothing back, and
//! have every message they print in `log_consumo.txt`, even when killed.

use std::path::Path;
use std::time::Duration;

use consumer::reader::{Reader, StartAt};
use e2e::{json_lines, payload_of, Broker, StdoutMode, TempDir, Watcher};
use nix::sys::signal::Signal;

/// The offsets logged for reader `id` in the data directory's consumption log, in
/// the order logged; checks each line's group (`-`) and attempt (1).
fn logged_reads(data: &Path, id: &str) -> Vec<u64> {
    e2e::data_lines(&data.join("log_consumo.txt"))
        .iter()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[6] == id)
        .map(|f| {
            assert_eq!((f[5], f[7]), ("-", "1"), "a reader's line: {f:?}");
            f[3].parse().expect("offset")
        })
        .collect()
}

/// Sends `lines` (one message each) and waits for the producer.
fn send_lines(broker: &Broker, lines: &[String]) {
    let sent = broker
        .producer(&[], Some((lines.join("\n") + "\n").into_bytes()))
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
}

#[test]
fn a_hundred_thousand_messages_are_replayed_from_offset_zero_after_a_restart() {
    const N: usize = 100_000;
    let args = ["--slots", "256", "--groups", "0"];
    let broker = Broker::start_in(TempDir::new("replay"), &args);
    let lines: Vec<String> = (0..N)
        .map(|i| format!("message {i} {}", "y".repeat(i % 40)))
        .collect();
    send_lines(&broker, &lines);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);

    // A new broker: its ring is empty, every message is only in the file.
    let broker = Broker::start_in(data, &args);
    let (reader, id) = broker.reader(
        &["--from", "0", "--count", &N.to_string(), "--format", "json"],
        StdoutMode::Collect,
    );
    let done = reader.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    let got = json_lines(&done.stdout);
    assert_eq!(got.len(), N);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["offset"], i as u64);
        assert_eq!(payload_of(v), lines[i].as_bytes(), "payload of offset {i}");
        assert_eq!(v["group"], serde_json::Value::Null);
        assert_eq!(v["consumer"], id.as_str());
        assert_eq!(v["attempt"], 1);
    }
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let logged = logged_reads(&data.0, &id);
    assert_eq!(logged, (0..N as u64).collect::<Vec<_>>());
}

/// A message as sent: key and payload.
type Sent = (Option<Vec<u8>>, Vec<u8>);

/// Reads `n` messages from offset 0 with a reader of the library: (key, payload).
fn read_back(broker: &Broker, n: usize) -> Vec<Sent> {
    let mut reader = Reader::connect(&broker.addr, Some("read-back")).unwrap();
    reader.seek(0);
    let mut got = Vec::new();
    while got.len() < n {
        for m in reader.poll_batch(n - got.len(), None).unwrap() {
            assert_eq!(m.offset, got.len() as u64);
            got.push((m.key.clone(), m.payload.clone()));
        }
    }
    got
}

fn message() -> impl proptest::strategy::Strategy<Value = Sent> {
    use proptest::prelude::*;
    let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
    (
        proptest::option::of(bytes(64)),
        prop_oneof![
            4 => bytes(300),
            1 => bytes(20_000),
            1 => Just(Vec::new()),
        ],
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// Whatever is sent (binary keys and payloads, empty, many slots long) is read
    /// back byte for byte: from the ring and the file while the broker runs, and
    /// from the file alone after a restart.
    #[test]
    fn bytes_read_back_are_the_bytes_sent(
        mut messages in proptest::collection::vec(message(), 1..120),
    ) {
        // One message of 100 KB, over many slots.
        messages.push((Some(b"big".to_vec()), (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()));
        let args = ["--slots", "64", "--slot-size", "4096", "--groups", "0"];
        let broker = Broker::start_in(TempDir::new("bytes"), &args);
        let mut producer = producer::Producer::connect(&broker.addr, Some("bytes")).unwrap();
        for (key, payload) in &messages {
            producer.send_keyed(key.as_deref(), payload).unwrap();
        }
        drop(producer);
        proptest::prop_assert_eq!(&read_back(&broker, messages.len()), &messages);
        let (_, data) = broker.stop_keeping_data();
        let broker = Broker::start_in(data, &args);
        proptest::prop_assert_eq!(&read_back(&broker, messages.len()), &messages);
    }
}

#[test]
fn a_reader_holds_nothing_back_and_catches_up_from_the_file() {
    // A stopped reader never makes a producer wait: the ring turns over many times
    // under it, and it then reads what it missed from the file.
    let broker = Broker::start(&["--slots", "32", "--groups", "0"]);
    let (mut reader, id) = broker.reader(
        &["--from", "latest", "--count", "5000", "--format", "json"],
        StdoutMode::Collect,
    );
    reader.signal(Signal::SIGSTOP);
    reader.wait_until_stopped("a reader stopped by SIGSTOP");
    let lines: Vec<String> = (0..5000).map(|i| format!("m{i}")).collect();
    send_lines(&broker, &lines);
    reader.signal(Signal::SIGCONT);
    let done = reader.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    let got = json_lines(&done.stdout);
    let payloads: Vec<Vec<u8>> = got.iter().map(payload_of).collect();
    let expected: Vec<Vec<u8>> = lines.iter().map(|l| l.clone().into_bytes()).collect();
    assert_eq!(payloads, expected);
    let (_, data) = broker.stop_keeping_data();
    assert_eq!(logged_reads(&data.0, &id), (0..5000).collect::<Vec<u64>>());
}

#[test]
fn seek_and_position_behave_like_kafkas() {
    let broker = Broker::start(&["--slots", "16", "--groups", "0"]);
    let lines: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    send_lines(&broker, &lines);
    let mut reader = Reader::connect(&broker.addr, Some("seeker")).unwrap();
    // A new reader starts at the end, like Kafka's `latest`.
    assert_eq!((reader.position(), reader.end_offset()), (100, 100));
    assert_eq!(reader.earliest_offset(), 0);
    let wait = Some(Duration::from_millis(50));
    assert!(reader.poll(wait).unwrap().is_none(), "nothing past the end");
    // From the file (the ring holds only the last 16).
    reader.seek(10);
    assert_eq!(reader.position(), 10);
    let m = reader.poll(None).unwrap().unwrap().clone();
    assert_eq!((m.offset, m.payload.as_slice()), (10, b"n10".as_slice()));
    assert_eq!(reader.position(), 11);
    // Back again: read a second time.
    reader.seek(5);
    let batch: Vec<u64> = reader
        .poll_batch(3, None)
        .unwrap()
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(batch, [5, 6, 7]);
    // `broker status` shows where the reader is, and how far behind the end.
    // (Its count of messages read is sampled a few times a second.)
    let status = broker.wait_for_status("the reader's count", |s| s["readers"][0]["read"] == 4);
    assert_eq!(status["clients"]["readers"], 1);
    let listed = &status["readers"][0];
    assert_eq!(listed["id"], "seeker");
    assert_eq!(
        (listed["position"].as_u64(), listed["lag"].as_u64()),
        (Some(8), Some(92))
    );
    // From the ring.
    reader.seek(98);
    let batch: Vec<u64> = reader
        .poll_batch(10, None)
        .unwrap()
        .iter()
        .map(|m| m.offset)
        .collect();
    assert_eq!(batch, [98, 99]);
    // Past the end: it waits for the offset to be published.
    reader.seek(101);
    assert!(reader.poll(wait).unwrap().is_none());
    send_lines(&broker, &["n100".to_string(), "n101".to_string()]);
    let m = reader.poll(None).unwrap().unwrap();
    assert_eq!((m.offset, m.payload.as_slice()), (101, b"n101".as_slice()));
    reader.seek_to(StartAt::Earliest).unwrap();
    assert_eq!(reader.poll(None).unwrap().unwrap().offset, 0);
    reader.seek_to(StartAt::Latest).unwrap();
    assert_eq!(reader.position(), 102);
    drop(reader);
    let (_, data) = broker.stop_keeping_data();
    // A re-read after a seek gets a line of its own.
    assert_eq!(
        logged_reads(&data.0, "seeker"),
        [10, 5, 6, 7, 98, 99, 101, 0]
    );
}

#[test]
fn from_a_time_starts_at_the_first_message_published_at_or_after_it() {
    let broker = Broker::start(&["--slots", "16", "--groups", "0"]);
    let first: Vec<String> = (0..300).map(|i| format!("early {i}")).collect();
    send_lines(&broker, &first);
    let second: Vec<String> = (0..300).map(|i| format!("late {i}")).collect();
    send_lines(&broker, &second);
    // The time of offset 300 as the file has it: the reader starts there (or at an
    // earlier offset of the same microsecond).
    let persisted = broker.data_lines("persistencia_mensajes.txt");
    let times: Vec<&str> = persisted
        .iter()
        .map(|l| l.split('\t').nth(3).unwrap())
        .collect();
    let start = times.iter().position(|t| *t == times[300]).unwrap();
    let (reader, _) = broker.reader(
        &["--from", times[300], "--count", "3", "--format", "json"],
        StdoutMode::Collect,
    );
    let done = reader.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    let offsets: Vec<u64> = json_lines(&done.stdout)
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [start as u64, start as u64 + 1, start as u64 + 2]);
}

#[test]
fn bad_from_values_and_from_with_a_group_are_usage_errors() {
    let broker = Broker::start(&["--groups", "0"]);
    for args in [
        &["--from", "yesterday"][..],
        &["--from", "-3"],
        &["--from", "earliest", "--group", "g"],
        &["--from", "99999999999999999999999"],
    ] {
        let done = broker.client_env("consumer", args, &[]).wait_exit();
        assert_eq!(done.code(), Some(2), "{args:?}: {:?}", done.stderr);
    }
}

#[test]
fn every_message_a_killed_reader_printed_is_in_the_log() {
    const N: u64 = 200_000;
    let broker = Broker::start(&["--slots", "256", "--groups", "0"]);
    let sent = broker
        .producer(&["--count", &N.to_string(), "--size", "32"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let watcher = Watcher::default();
    let mut printed: Vec<(String, Vec<u64>)> = Vec::new();
    // Kill moments spread over the read: after a varying number of lines.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let from = (seed % (N / 2)).to_string();
        let after = 1 + (seed >> 20) % 20_000;
        let id = format!("killed-{round}");
        let (reader, _) = broker.reader(
            &["--id", &id, "--from", &from, "--format", "json"],
            StdoutMode::Watched(watcher.clone()),
        );
        watcher.wait_until(
            "the reader printed enough",
            Duration::from_millis(50),
            || {
                let n = reader.stdout_lines_so_far();
                if n >= after {
                    Ok(())
                } else {
                    Err(format!("{n} of {after} lines"))
                }
            },
        );
        reader.signal(Signal::SIGKILL);
        let done = reader.wait_exit();
        // Whole lines only: one cut by the kill was not printed.
        let text = String::from_utf8_lossy(&done.stdout);
        let offsets: Vec<u64> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert!(offsets.len() as u64 >= after);
        printed.push((id, offsets));
    }
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    for (id, offsets) in printed {
        let logged: std::collections::HashSet<u64> =
            logged_reads(&data.0, &id).into_iter().collect();
        let missing: Vec<&u64> = offsets.iter().filter(|o| !logged.contains(o)).collect();
        assert!(
            missing.is_empty(),
            "{id} printed {} messages; {} are not in the log, the first {:?}",
            offsets.len(),
            missing.len(),
            missing.first()
        );
    }
}

#[test]
fn reads_a_killed_broker_had_not_logged_are_logged_by_the_next_one() {
    const N: u64 = 5000;
    // A long flush interval: the reader's lines wait in the broker's buffer.
    let args = ["--slots", "256", "--groups", "0", "--flush-interval", "10m"];
    let broker = Broker::start_in(TempDir::new("broker-kill"), &args);
    let sent = broker
        .producer(&["--count", &N.to_string(), "--size", "40"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let watcher = Watcher::default();
    let (reader, id) = broker.reader(
        &["--from", "0", "--format", "json"],
        StdoutMode::Watched(watcher.clone()),
    );
    watcher.wait_until(
        "the reader printed every message",
        Duration::from_millis(50),
        || match reader.stdout_lines_so_far() {
            n if n >= N => Ok(()),
            n => Err(format!("{n} of {N}")),
        },
    );
    let (data, shm) = broker.kill();
    let done = reader.wait_exit();
    assert_eq!(done.code(), Some(1));
    assert_eq!(done.last_stderr_line(), "consumer: broker stopped");
    let restarted = Broker::start_with(data, shm, &args);
    let (stopped, data) = restarted.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("reads of standalone readers logged")),
        "{:?}",
        stopped.stderr
    );
    let logged = logged_reads(&data.0, &id);
    let distinct: std::collections::BTreeSet<u64> = logged.iter().copied().collect();
    assert_eq!(distinct, (0..N).collect(), "every read is in the log");
}

#[test]
fn kaskas_calls_subscribe_unsubscribe_msg_length_commit_and_committed() {
    let broker = Broker::start(&["--slots", "16", "--groups", "0"]);
    let lines: Vec<String> = (0..50).map(|i| "z".repeat(i)).collect();
    send_lines(&broker, &lines);
    let mut reader = Reader::connect(&broker.addr, Some("kaska")).unwrap();
    // Connected, it is subscribed to `default`; subscriptions are not incremental.
    assert!(matches!(
        reader.subscribe(&["default"]),
        Err(consumer::ConsumerError::AlreadySubscribed)
    ));
    reader.unsubscribe().unwrap();
    assert!(matches!(
        reader.unsubscribe(),
        Err(consumer::ConsumerError::NotSubscribed)
    ));
    assert!(matches!(
        reader.poll(Some(Duration::from_millis(10))),
        Err(consumer::ConsumerError::NotSubscribed)
    ));
    // Unknown topics and repeats are ignored; a subscription starts at the end.
    assert_eq!(
        reader.subscribe(&["nope", "default", "default"]).unwrap(),
        1
    );
    assert_eq!(reader.position(), 50);
    // Lengths from the file (offset 3) and the ring (offset 49); none past the end.
    assert_eq!(reader.msg_length(3).unwrap(), Some(3));
    assert_eq!(reader.msg_length(49).unwrap(), Some(49));
    assert_eq!(reader.msg_length(50).unwrap(), None);
    assert_eq!(reader.committed().unwrap(), None);
    reader.commit_offset(17).unwrap();
    assert_eq!(reader.committed().unwrap(), Some(17));
    reader.seek_to(StartAt::Committed).unwrap();
    let m = reader.poll(None).unwrap().unwrap();
    assert_eq!((m.offset, m.payload.len()), (17, 17));
}
