//! SPEC §10: a group created by `--group` that empties stops holding the ring and
//! keeps its position; when a member joins again under its name it resumes where
//! the group had acknowledged, reading from the file what left the ring, across a
//! SIGKILL of the broker too.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{json_lines, payload_of, Broker, TempDir};

/// Offsets and payloads a consumer printed (JSON Lines), checking group and attempt.
fn received(stdout: &[u8], group: &str) -> Vec<(u64, Vec<u8>)> {
    json_lines(stdout)
        .iter()
        .map(|v| {
            assert_eq!(v["group"], group);
            assert_eq!(v["attempt"], 1, "{v}");
            (v["offset"].as_u64().unwrap(), payload_of(v))
        })
        .collect()
}

fn send(broker: &Broker, from: usize, n: usize) -> Vec<String> {
    let lines: Vec<String> = (from..from + n).map(|i| format!("message {i}")).collect();
    let sent = broker
        .producer(&[], Some((lines.join("\n") + "\n").into_bytes()))
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    lines
}

fn consume(broker: &Broker, group: &str, count: usize) -> Vec<(u64, Vec<u8>)> {
    let (consumer, joined) = broker.consumer(&[
        "--group",
        group,
        "--count",
        &count.to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(joined, group);
    let done = consumer.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    received(&done.stdout, group)
}

#[test]
fn a_group_that_leaves_and_returns_resumes_where_it_acknowledged_from_the_file() {
    let args = ["--slots", "64", "--groups", "0"];
    let broker = Broker::start_in(TempDir::new("departed"), &args);
    let (first, _) = broker.consumer(&["--group", "audit", "--count", "100", "--format", "none"]);
    let mut all = send(&broker, 0, 100);
    assert_eq!(first.wait_exit().code(), Some(0));
    // The group has no member now: producers do not wait for it, and the ring
    // turns over many times.
    all.extend(send(&broker, 100, 1000));
    let back = consume(&broker, "audit", 1000);
    let expected: Vec<(u64, Vec<u8>)> = (100..1100)
        .map(|o| (o, all[o as usize].clone().into_bytes()))
        .collect();
    assert_eq!(back, expected);

    // Its position survives a SIGKILL of the broker, with the group away: once
    // the broker has seen its last member go, the state file has it.
    broker.wait_for_status("the group no longer holding the ring", |s| {
        s["groups"][0]["name"] == "audit" && s["groups"][0]["holds_ring"] == false
    });
    let (data, shm) = broker.kill();
    let broker = Broker::start_with(data, shm, &args);
    all.extend(send(&broker, 1100, 500));
    let back = consume(&broker, "audit", 500);
    assert_eq!(back.first().map(|m| m.0), Some(1100));
    assert_eq!(back.last().map(|m| m.0), Some(1599));

    // Every delivery to the group is logged once.
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let mut logged: BTreeMap<u64, u32> = BTreeMap::new();
    for l in e2e::data_lines(&data.0.join("log_consumo.txt")) {
        let f: Vec<&str> = l.split('\t').collect();
        if f[5] == "audit" {
            *logged.entry(f[3].parse().unwrap()).or_default() += 1;
        }
    }
    let keys: Vec<u64> = logged.keys().copied().collect();
    let ranges: Vec<(u64, u64)> = keys
        .chunk_by(|a, b| b == &(a + 1))
        .map(|c| (c[0], c[c.len() - 1]))
        .collect();
    assert_eq!(logged.len(), 1600, "logged ranges {ranges:?}");
    assert!(logged.values().all(|&n| n == 1), "a delivery logged twice");
    assert_eq!(logged.keys().next(), Some(&0));
}

/// `broker reset-offsets ARGS`: its exit code, stdout and last stderr line.
fn reset(broker: &Broker, args: &[&str]) -> (Option<i32>, String, String) {
    let done = broker.subcommand("reset-offsets", args);
    (
        done.code(),
        done.stdout_text(),
        done.last_stderr_line().to_string(),
    )
}

#[test]
fn reset_offsets_moves_a_group_without_members_and_refuses_one_with_members() {
    let broker = Broker::start(&["--slots", "64", "--groups", "billing"]);
    let (first, _) = broker.consumer(&["--count", "500", "--format", "none"]);
    let all = send(&broker, 0, 500);
    assert_eq!(first.wait_exit().code(), Some(0));

    // Back to offset 100, below the ring: read again from the file, as first
    // deliveries.
    assert_eq!(
        reset(&broker, &["--group", "billing", "--to", "100"]),
        (
            Some(0),
            "group billing now at offset 100\n".into(),
            String::new()
        )
    );
    let again = consume(&broker, "billing", 400);
    let expected: Vec<(u64, Vec<u8>)> = (100..500)
        .map(|o| (o, all[o as usize].clone().into_bytes()))
        .collect();
    assert_eq!(again, expected);

    // Not while it has a member.
    let (member, _) = broker.consumer(&["--group", "billing", "--format", "none"]);
    let (code, _, err) = reset(&broker, &["--group", "billing", "--to", "earliest"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "broker reset-offsets: group billing has a member: stop it first"
    );
    member.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(member.wait_exit().code(), Some(0));

    // earliest, latest, and a time: the first message published at or after it.
    let persisted = broker.data_lines("persistencia_mensajes.txt");
    let time_of_300 = persisted[300].split('\t').nth(3).unwrap().to_string();
    let first_at_that_time = persisted
        .iter()
        .position(|l| l.split('\t').nth(3) == Some(time_of_300.as_str()))
        .unwrap();
    for (to, offset) in [
        ("earliest", 0),
        ("latest", 500),
        (time_of_300.as_str(), first_at_that_time as u64),
        ("99999", 500),
    ] {
        assert_eq!(
            reset(&broker, &["--group", "billing", "--to", to]).1,
            format!("group billing now at offset {offset}\n"),
            "--to {to}"
        );
    }
    // A group nobody created yet starts where it was set.
    assert_eq!(
        reset(&broker, &["--group", "fresh", "--to", "10"]).0,
        Some(0)
    );
    let fresh = consume(&broker, "fresh", 5);
    assert_eq!(
        fresh.iter().map(|m| m.0).collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );
    // Bad input is a usage error.
    assert_eq!(
        reset(&broker, &["--group", "billing", "--to", "soon"]).0,
        Some(2)
    );
    assert_eq!(
        reset(&broker, &["--group", "bad name", "--to", "0"]).0,
        Some(2)
    );
}

#[test]
fn with_spill_a_group_holds_the_ring_only_while_it_has_members() {
    let broker = Broker::start(&["--spill", "--slots", "64", "--groups", "g1"]);
    // No member: sixteen rings' worth goes through without waiting for g1.
    let mut all = send(&broker, 0, 1000);
    let status = broker.status();
    assert_eq!(status["groups"][0]["holds_ring"], false, "{status}");
    assert_eq!(status["ring"]["held_by"], serde_json::Value::Null);
    // Its members catch up from the file, from where the group stood.
    let back = consume(&broker, "g1", 1000);
    let expected: Vec<(u64, Vec<u8>)> = (0..1000)
        .map(|o| (o, all[o as usize].clone().into_bytes()))
        .collect();
    assert_eq!(back, expected);
    // With a member it holds the ring; without one again, it does not.
    let (member, joined) = broker.consumer(&["--format", "none"]);
    assert_eq!(joined, "g1", "auto-join picks the pre-created group");
    broker.wait_for_status("g1 holding the ring", |s| {
        s["groups"][0]["holds_ring"] == true
    });
    member.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(member.wait_exit().code(), Some(0));
    broker.wait_for_status("g1 no longer holding", |s| {
        s["groups"][0]["holds_ring"] == false
    });
    all.extend(send(&broker, 1000, 1000));
    let back = consume(&broker, "g1", 1000);
    assert_eq!(back.first().map(|m| m.0), Some(1000));
    assert_eq!(back.last().map(|m| m.0), Some(1999));
}

#[test]
fn a_member_killed_while_its_group_catches_up_from_the_file_loses_nothing() {
    const MORE: usize = 50_000;
    let end = (10 + MORE) as u64;
    let broker = Broker::start(&["--slots", "64", "--groups", "0"]);
    let (first, _) = broker.consumer(&["--group", "g", "--count", "10", "--format", "none"]);
    send(&broker, 0, 10);
    assert_eq!(first.wait_exit().code(), Some(0));
    // The group is away while many more go by: it resumes at 10, far below the ring.
    send(&broker, 10, MORE);
    let watcher = e2e::Watcher::default();
    let member = || {
        let mut p = e2e::Proc::spawn(
            &e2e::bin("consumer"),
            &broker.client_args(&["--group", "g", "--format", "json"]),
            None,
            e2e::StdoutMode::Watched(watcher.clone()),
        );
        p.wait_stderr("joined group g");
        p
    };
    // The first member is stopped while it catches up: it holds the batch it took
    // (a batch is acknowledged by the next poll), far below the ring.
    let mut killed = member();
    watcher.wait_until(
        "the first member printing",
        Duration::from_millis(20),
        || match killed.stdout_lines_so_far() {
            0 => Err("nothing yet".into()),
            _ => Ok(()),
        },
    );
    killed.signal(nix::sys::signal::Signal::SIGSTOP);
    killed.wait_until_stopped("a member stopped by SIGSTOP");
    let survivor = member();
    // Killed: what it held is offered to the other member, which reads it from
    // the file; the group acknowledges everything, nothing is dropped.
    killed.signal(nix::sys::signal::Signal::SIGKILL);
    let printed_by_killed = killed.wait_exit().stdout;
    assert!(!json_lines(&printed_by_killed).is_empty());
    watcher.wait_until(
        "the group at the end",
        Duration::from_millis(50),
        || match broker.committed(&["--group", "g"])["committed"][0]["offset"].as_u64() {
            Some(o) if o == end => Ok(()),
            other => Err(format!("committed {other:?}")),
        },
    );
    survivor.signal(nix::sys::signal::Signal::SIGTERM);
    let mut printed = survivor.take_stdout_so_far();
    let rest = survivor.wait_exit();
    assert_eq!(rest.code(), Some(0));
    printed.extend(rest.stdout);
    let redelivered = json_lines(&printed)
        .iter()
        .filter(|v| v["attempt"].as_u64() >= Some(2))
        .count();
    assert!(redelivered > 0, "the killed member held nothing");
    let stopped = broker.stop();
    assert!(
        !stopped
            .stderr
            .iter()
            .any(|l| l.contains("lost") || l.contains("dropped")),
        "{:?}",
        stopped.stderr
    );
}
