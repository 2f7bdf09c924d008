//! SPEC §10 committed offsets end to end: a reader with `--id` commits its
//! position, `--from committed` resumes there across a SIGKILL of the broker, and
//! `broker committed` prints groups' and readers' committed offsets.

use std::time::Duration;

use e2e::{json_lines, Broker, StdoutMode, TempDir, Watcher};
use nix::sys::signal::Signal;
use serde_json::json;

/// Runs `consumer ARGS --format json` to its end; the offsets it printed.
fn read(broker: &Broker, args: &[&str]) -> Vec<u64> {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (reader, _) = broker.reader(&all, StdoutMode::Collect);
    let done = reader.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    json_lines(&done.stdout)
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_named_reader_resumes_at_its_committed_offset_after_a_broker_sigkill() {
    let args = ["--slots", "64", "--groups", "0"];
    let broker = Broker::start_in(TempDir::new("committed"), &args);
    let sent = broker.producer(&["--count", "1000"], None).wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    // Never committed: from the earliest offset.
    let from = ["--id", "audit", "--from", "committed", "--count"];
    assert_eq!(
        read(&broker, &[&from[..], &["300"]].concat()),
        (0..300).collect::<Vec<_>>()
    );
    assert_eq!(
        broker.committed(&["--id", "audit"]),
        json!({"committed": [{"kind": "reader", "owner": "audit", "topic": "default", "partition": 0, "offset": 300}]})
    );
    assert_eq!(
        read(&broker, &[&from[..], &["200"]].concat()),
        (300..500).collect::<Vec<_>>()
    );
    let (data, shm) = broker.kill();
    let broker = Broker::start_with(data, shm, &args);
    assert_eq!(
        broker.committed(&["--id", "audit"])["committed"][0]["offset"],
        500
    );
    assert_eq!(
        read(&broker, &[&from[..], &["10"]].concat()),
        (500..510).collect::<Vec<_>>()
    );
    // A reader without --id commits nothing.
    assert_eq!(
        read(&broker, &["--from", "0", "--count", "5"]),
        [0, 1, 2, 3, 4]
    );
    let all = broker.committed(&[]);
    assert_eq!(all["committed"].as_array().unwrap().len(), 1, "{all}");
}

#[test]
fn a_reader_commits_every_interval_and_a_kill_keeps_the_last_commit() {
    let broker = Broker::start(&["--slots", "64", "--groups", "0"]);
    let sent = broker.producer(&["--count", "2000"], None).wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let watcher = Watcher::default();
    let (reader, _) = broker.reader(
        &["--id", "tail", "--from", "0", "--commit-interval", "50ms"],
        StdoutMode::Watched(watcher.clone()),
    );
    watcher.wait_until(
        "the reader printed everything",
        Duration::from_millis(50),
        || match reader.stdout_lines_so_far() {
            2000 => Ok(()),
            n => Err(format!("{n} of 2000")),
        },
    );
    // It waits at the end, and commits what it printed within an interval.
    watcher.wait_until(
        "the reader committed",
        Duration::from_millis(50),
        || match broker.committed(&["--id", "tail"])["committed"][0]["offset"].as_u64() {
            Some(2000) => Ok(()),
            other => Err(format!("committed {other:?}")),
        },
    );
    reader.signal(Signal::SIGKILL);
    let _ = reader.wait_exit();
    assert_eq!(
        broker.committed(&["--id", "tail"])["committed"][0]["offset"],
        2000
    );
}

#[test]
fn groups_positions_and_readers_commits_are_listed_by_kind_and_owner() {
    let broker = Broker::start(&["--groups", "billing"]);
    let (consumer, _) = broker.consumer(&["--count", "100", "--format", "none"]);
    let sent = broker.producer(&["--count", "100"], None).wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    assert_eq!(consumer.wait_exit().code(), Some(0));
    assert_eq!(
        read(
            &broker,
            &["--id", "billing", "--from", "committed", "--count", "40"]
        )
        .len(),
        40
    );
    // A group and a reader may share a name: owners are keyed by kind too.
    assert_eq!(
        broker.committed(&[]),
        json!({"committed": [
            {"kind": "group", "owner": "billing", "topic": "default", "partition": 0, "offset": 100},
            {"kind": "reader", "owner": "billing", "topic": "default", "partition": 0, "offset": 40},
        ]})
    );
    assert_eq!(
        broker.committed(&["--group", "billing"])["committed"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let text = broker.subcommand("committed", &[]);
    assert_eq!(
        text.stdout_text(),
        "KIND    OWNER    TOPIC    PARTITION  COMMITTED\n\
         group   billing  default          0        100\n\
         reader  billing  default          0         40\n"
    );
}

#[test]
fn from_committed_needs_an_id() {
    let broker = Broker::start(&["--groups", "0"]);
    let done = broker
        .client_env("consumer", &["--from", "committed"], &[])
        .wait_exit();
    assert_eq!(done.code(), Some(2));
    assert!(done
        .last_stderr_line()
        .contains("--from committed needs --id"));
}
