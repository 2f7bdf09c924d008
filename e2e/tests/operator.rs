//! The operator's view end to end: a waiting producer says why, and gives up
//! after `--send-timeout` naming what held it; `broker status` describes groups,
//! members and producers as Kafka's tools do.

use e2e::{Broker, Proc, StdoutMode};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A ring of 64 one-slot messages fills after 64 sends.
const SLOTS: &str = "64";

/// The seconds in `sending again after 1.2 s`, if the line has that form.
fn waited_seconds(line: &str) -> Option<f64> {
    line.strip_prefix("sending again after ")?
        .strip_suffix(" s")?
        .parse()
        .ok()
}

#[test]
fn a_producer_held_by_a_group_without_consumers_says_why_once_and_again_when_it_moves() {
    let broker = Broker::start(&["--slots", SLOTS, "--groups", "2"]);
    let (first, group) = broker.consumer(&["--format", "none"]);
    assert_eq!(group, "group-1");
    let mut producer = broker.producer(&["--count", "200"], None);
    let waiting = producer.wait_stderr("waiting for ");
    assert_eq!(
        waiting,
        "waiting for space in default/0: group group-2 is 64 messages behind and has no consumers"
    );
    assert_eq!(
        broker.status()["ring"]["held_by"],
        "group group-2 is 64 messages behind and has no consumers",
        "broker status names the holder too"
    );
    let (second, group) = broker.consumer(&["--group", "group-2", "--format", "none"]);
    assert_eq!(group, "group-2");
    let moving = producer.wait_stderr("sending again");
    let waited = waited_seconds(&moving).unwrap_or_else(|| panic!("{moving}"));
    assert!(
        waited >= 1.0,
        "reported after a second of waiting: {moving}"
    );
    let done = producer.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    let said: Vec<&String> = done
        .stderr
        .iter()
        .filter(|l| l.starts_with("waiting for "))
        .collect();
    assert_eq!(said, [&waiting], "said once: {:?}", done.stderr);

    // A producer that never waits prints its summary and nothing else.
    let quick = broker.producer(&["--count", "10"], None).wait_exit();
    assert_eq!(quick.code(), Some(0));
    assert_eq!(quick.stderr.len(), 1, "{:?}", quick.stderr);
    assert!(
        quick.stderr[0].contains("sent 10 messages"),
        "{:?}",
        quick.stderr
    );
    drop((first, second));
}

#[test]
fn a_waiting_producer_names_the_member_that_holds_its_group() {
    let broker = Broker::start(&["--slots", SLOTS, "--groups", "1"]);
    let (slow, _) = broker.consumer(&["--id", "slow-one", "--format", "none"]);
    slow.signal(Signal::SIGSTOP);
    let mut producer = broker.producer(&["--count", "100"], None);
    let waiting = producer.wait_stderr("waiting for ");
    assert_eq!(
        waiting,
        "waiting for space in default/0: group group-1 is 64 messages behind; slowest consumer slow-one"
    );
    slow.signal(Signal::SIGCONT);
    producer.wait_stderr("sending again after ");
    let done = producer.wait_exit();
    assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
}

#[test]
fn a_send_timeout_gives_up_naming_the_holder_and_writes_nothing_it_could_not_place() {
    let broker = Broker::start(&["--slots", SLOTS, "--groups", "1"]);
    let started = std::time::Instant::now();
    let gave_up = broker
        .producer(&["--count", "100", "--send-timeout", "1500ms"], None)
        .wait_exit();
    eprintln!("gave up after {:?}", started.elapsed());
    assert_eq!(gave_up.code(), Some(1), "{:?}", gave_up.stderr);
    let last = gave_up.last_stderr_line();
    let reason = last
        .strip_prefix("producer: gave up after ")
        .and_then(|r| r.split_once(" s "))
        .map(|(secs, rest)| (secs.parse::<f64>().expect("seconds"), rest))
        .unwrap_or_else(|| panic!("{last}"));
    assert!(reason.0 >= 1.5, "{last}");
    assert_eq!(
        reason.1,
        "waiting for space in default/0: group group-1 is 64 messages behind and has no consumers (after 64 messages)"
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let persisted = e2e::data_lines(&data.0.join(audit_format::records::PERSIST_FILE));
    assert_eq!(persisted.len(), 64, "only what was placed is in the file");
}

/// The group named `name` in a status report.
fn group<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn broker_status_describes_each_group_per_partition_its_members_and_the_producers() {
    let broker = Broker::start(&["--groups", "2"]);
    let sent = broker
        .producer(&["a", "b", "c", "d", "e"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0));
    // A member that takes all five at once and stops before returning them: it
    // holds five unacknowledged messages, and its poll counter stands still.
    let mut solo = broker.client_env(
        "consumer",
        &["--id", "solo", "--format", "none"],
        &[("MINIKAFKA_FAULT", "poll-claimed:1:stop")],
    );
    assert!(solo
        .wait_stderr("joined group ")
        .starts_with("joined group group-1 "));
    solo.wait_until_stopped("the consumer never took the five");
    let s = broker.wait_for_status("solo silent for a second", |s| {
        group(s, "group-1")["members"][0]["last_poll_s"].as_f64() >= Some(1.0)
    });
    let g1 = group(&s, "group-1");
    let p = &g1["partitions"][0];
    assert_eq!(
        (
            &p["topic"],
            &p["partition"],
            &p["position"],
            &p["handed_out"]
        ),
        (&"default".into(), &0.into(), &0.into(), &5.into())
    );
    assert_eq!((&p["end_offset"], &p["lag"]), (&5.into(), &5.into()));
    let m = &g1["members"][0];
    assert_eq!(m["id"], "solo");
    assert_eq!(m["pid"], solo.pid);
    assert_eq!((&m["turns"], &m["rotation_size"]), (&1.into(), &1.into()));
    assert_eq!(m["unacknowledged"], 5, "the five it holds");
    let g2 = group(&s, "group-2");
    assert_eq!(
        g2["partitions"][0]["lag"], 5,
        "no consumers: it holds all five"
    );
    assert_eq!(g2["members"], Value::Array(vec![]));

    let text = Proc::spawn(
        &e2e::bin("broker"),
        &["status", "-b", &broker.addr],
        None,
        StdoutMode::Collect,
    )
    .wait_exit()
    .stdout_text();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let has = |row: &[&str]| rows.iter().any(|r| r == row);
    assert!(
        has(&[
            "GROUP",
            "HOLDS",
            "TOPIC",
            "PARTITION",
            "POSITION",
            "END-OFFSET",
            "LAG",
            "MSG/S"
        ]),
        "{text}"
    );
    assert!(
        has(&["group-2", "yes", "default", "0", "0", "5", "5", "0"]),
        "{text}"
    );
    assert!(
        has(&["GROUP", "MEMBER", "PID", "SHARE", "LAST-POLL", "UNACKED"]),
        "{text}"
    );
    let solo_row = rows
        .iter()
        .find(|r| r.get(1) == Some(&"solo"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        (solo_row[0], solo_row[2], solo_row[3], solo_row[5]),
        ("group-1", solo.pid.to_string().as_str(), "1/1", "5")
    );

    // A producer sending every 20 ms shows with its pid and a rate.
    let streamer = broker.producer(
        &["--stream", "--interval", "20ms", "--id", "streamer"],
        None,
    );
    let s = broker.wait_for_status("streamer's rate sampled", |s| {
        s["producers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"] == "streamer" && p["sent_per_s"].as_f64() > Some(0.0))
    });
    let p = &s["producers"][0];
    assert_eq!(p["pid"], streamer.pid);
    assert!(p["sent"].as_u64() > Some(0), "{s}");
    streamer.signal(Signal::SIGTERM);
    assert_eq!(streamer.wait_exit().code(), Some(0));
    solo.signal(Signal::SIGKILL);
}
