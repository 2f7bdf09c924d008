//! Kafka consumer groups on the Kafka port (SPEC §12), with unmodified clients:
//! kafka-python and confluent-kafka members split a topic, a killed member's
//! partitions go to the survivor at the offsets it committed, committed offsets
//! survive a SIGKILL of the broker, and Kafka groups share one namespace with
//! the shared-memory groups.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::kafka_clients::{kafka_broker, python, spawn_python};
use e2e::{json_lines, Broker, Proc, StdoutMode, Watcher};
use serde_json::Value;

/// How often a wait on the members' output looks again without news.
const RECHECK: Duration = Duration::from_millis(100);

/// A `client.py group-consume` member and what it printed so far.
struct Member {
    proc: Proc,
    printed: Vec<u8>,
    lines: Vec<Value>,
}

impl Member {
    fn start(
        library: &str,
        kafka: &str,
        group: &str,
        id: &str,
        extra: &[&str],
        w: &Watcher,
    ) -> Self {
        let mut args = vec![kafka, group, "t", "--client-id", id, "--session-ms", "2000"];
        args.extend_from_slice(extra);
        Member {
            proc: spawn_python(
                library,
                "group-consume",
                &args,
                StdoutMode::Watched(w.clone()),
            ),
            printed: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// Takes in what it printed since the last look: whole lines only.
    fn look(&mut self) -> &[Value] {
        self.printed.extend(self.proc.take_stdout_so_far());
        if let Some(end) = self.printed.iter().rposition(|&b| b == b'\n') {
            let whole: Vec<u8> = self.printed.drain(..=end).collect();
            self.lines.extend(json_lines(&whole));
        }
        &self.lines
    }

    /// Its latest assignment.
    fn assigned(&mut self) -> Option<BTreeSet<u64>> {
        self.look()
            .iter()
            .rev()
            .find_map(|l| l.get("assigned"))
            .map(|a| {
                a.as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect()
            })
    }

    /// The records it read, in order: (partition, offset).
    fn read(&mut self) -> Vec<(u64, u64)> {
        self.look()
            .iter()
            .filter(|l| l.get("o").is_some())
            .map(|l| (l["p"].as_u64().unwrap(), l["o"].as_u64().unwrap()))
            .collect()
    }

    /// The last offset it committed in each partition (the next to read).
    fn committed(&mut self) -> BTreeMap<u64, u64> {
        self.look()
            .iter()
            .filter_map(|l| l.get("committed"))
            .map(|c| (c[0].as_u64().unwrap(), c[1].as_u64().unwrap()))
            .collect()
    }

    fn has_stalled(&mut self) -> bool {
        self.look().iter().any(|l| l.get("stalled").is_some())
    }
}

/// Produces `n` keyless records to topic `t` with kafka-python; returns where
/// each went: (partition, offset).
fn produce(kafka: &str, n: usize) -> Vec<(u64, u64)> {
    let input: String = (0..n)
        .map(|i| format!("{{\"k\": null, \"v\": \"{}\"}}\n", hex(&format!("m{i}"))))
        .collect();
    let f = python(
        "kafka-python",
        "produce",
        &[kafka, "t"],
        Some(input.into_bytes()),
    );
    json_lines(&f.stdout)
        .iter()
        .map(|l| (l["p"].as_u64().unwrap(), l["o"].as_u64().unwrap()))
        .collect()
}

/// Checks that a command exited 1 saying `group` is a Kafka group.
fn refused_as_kafka_group(f: &e2e::Finished, group: &str) {
    assert_eq!(f.code(), Some(1), "{:?}", f.stderr);
    assert!(
        f.last_stderr_line()
            .contains(&format!("group {group} is a Kafka group")),
        "{:?}",
        f.stderr
    );
}

/// The metrics' text exposition, as a scraper gets it.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: broker\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The committed offsets `broker committed --group G` shows: partition → offset.
fn committed_by_broker(broker: &Broker, group: &str) -> BTreeMap<u64, u64> {
    broker.committed(&["--group", group])["committed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["topic"] == "t")
        .map(|c| {
            (
                c["partition"].as_u64().unwrap(),
                c["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Two members of one group split a 4-partition topic; one commits 30 records
/// and is SIGKILLed; the other takes its partitions after the session timeout,
/// each at the offset the dead one committed there, and reads every record left.
fn a_survivor_takes_over_what_a_killed_member_committed(library: &str) {
    let (broker, kafka) = kafka_broker(&["--topics", "t:4"]);
    let group = format!("{library}-pair");
    let w = Watcher::default();
    let mut a = Member::start(
        library,
        &kafka,
        &group,
        "member-a",
        &["--stall-after", "30"],
        &w,
    );
    let mut b = Member::start(library, &kafka, &group, "member-b", &[], &w);
    w.wait_until("the group split in two", RECHECK, || {
        match (a.assigned(), b.assigned()) {
            (Some(x), Some(y)) if x.len() == 2 && y.len() == 2 && x.is_disjoint(&y) => Ok(()),
            other => Err(format!("assignments so far {other:?}")),
        }
    });
    let a_partitions = a.assigned().unwrap();
    let sent = produce(&kafka, 400);
    w.wait_until("the first member's stall", RECHECK, || {
        match a.has_stalled() {
            true => Ok(()),
            false => Err(format!(
                "{} read; it printed {:?}; the other printed {:?}",
                a.read().len(),
                a.look(),
                b.look().iter().take(5).collect::<Vec<_>>()
            )),
        }
    });
    let a_committed = a.committed();
    let a_read = a.read();
    assert_eq!(a_read.len(), 30);
    assert!(a_read.iter().all(|(p, _)| a_partitions.contains(p)));
    a.proc.signal(nix::sys::signal::Signal::SIGKILL);
    let started = std::time::Instant::now();
    w.wait_until("every record read", RECHECK, || {
        let all: BTreeSet<(u64, u64)> = a_read.iter().chain(&b.read()).copied().collect();
        let missing = sent.iter().filter(|s| !all.contains(s)).count();
        match (missing, b.assigned().map(|s| s.len())) {
            (0, Some(4)) => Ok(()),
            (m, n) => Err(format!("{m} of {} missing, b assigned {n:?}", sent.len())),
        }
    });
    println!("the survivor took over after {:?}", started.elapsed());
    let b_read = b.read();
    for p in &a_partitions {
        // The survivor starts where the dead member committed (0 where it
        // committed nothing), and reads nothing below: nothing committed is
        // read twice, nothing is skipped.
        let start = a_committed.get(p).copied().unwrap_or(0);
        let offsets: Vec<u64> = b_read.iter().filter(|(q, _)| q == p).map(|r| r.1).collect();
        assert_eq!(offsets.first(), Some(&start), "partition {p}: {offsets:?}");
        let expected: Vec<u64> = (start..start + offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "partition {p} read in order, once each");
    }
    // Nothing read by both but the dead member's uncommitted tail.
    let twice: Vec<&(u64, u64)> = a_read.iter().filter(|r| b_read.contains(r)).collect();
    assert!(
        twice
            .iter()
            .all(|(p, o)| *o >= a_committed.get(p).copied().unwrap_or(0)),
        "{twice:?} committed by {a_committed:?}"
    );
    // The broker holds the survivor's commits: every record of every partition.
    let ends: BTreeMap<u64, u64> = sent.iter().fold(BTreeMap::new(), |mut m, (p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
        m
    });
    w.wait_until("the last commits", RECHECK, || match b.committed() {
        c if c == ends => Ok(()),
        c => Err(format!("{c:?} of {ends:?}")),
    });
    assert_eq!(committed_by_broker(&broker, &group), ends);
    // Each record fetched is in the consumption log for the group, consumer
    // the member's client id.
    let log = broker.data_lines_so_far("log_consumo.txt");
    let of_group: Vec<&String> = log
        .iter()
        .filter(|l| l.split('\t').nth(5) == Some(&group))
        .collect();
    assert!(of_group.len() >= sent.len(), "{} lines", of_group.len());
    let consumers: BTreeSet<&str> = of_group
        .iter()
        .filter_map(|l| l.split('\t').nth(6))
        .collect();
    assert_eq!(consumers, BTreeSet::from(["member-a", "member-b"]));
    b.proc.signal(nix::sys::signal::Signal::SIGKILL);
    broker.stop();
}

#[test]
fn two_kafka_python_members_split_a_topic_and_the_survivor_resumes_what_the_killed_one_committed() {
    a_survivor_takes_over_what_a_killed_member_committed("kafka-python");
}

#[test]
fn two_confluent_kafka_members_split_a_topic_and_the_survivor_resumes_what_the_killed_one_committed(
) {
    a_survivor_takes_over_what_a_killed_member_committed("confluent-kafka");
}

#[test]
fn a_kafka_python_member_resumes_at_its_committed_offsets_after_the_broker_is_killed() {
    let args = [
        "--kafka-port",
        "0",
        "--flush-interval",
        "10ms",
        "--topics",
        "t:4",
    ];
    let broker = Broker::start(&args);
    let kafka = broker.kafka.clone().unwrap();
    let sent = produce(&kafka, 200);
    let w = Watcher::default();
    let mut first = Member::start(
        "kafka-python",
        &kafka,
        "resumer",
        "first",
        &["--stall-after", "50"],
        &w,
    );
    w.wait_until("the first member's stall", RECHECK, || {
        match first.has_stalled() {
            true => Ok(()),
            false => Err(format!("{} read", first.read().len())),
        }
    });
    let committed = first.committed();
    let first_read = first.read();
    let (data, shm) = broker.kill();
    first.proc.signal(nix::sys::signal::Signal::SIGKILL);

    let broker = Broker::start_with(data, shm, &args);
    assert_eq!(committed_by_broker(&broker, "resumer"), committed);
    let kafka = broker.kafka.clone().unwrap();
    // The rest is read back from the file, below the rings.
    let mut second = Member::start("kafka-python", &kafka, "resumer", "second", &[], &w);
    w.wait_until("the rest read", RECHECK, || {
        match first_read.len() + second.read().len() {
            n if n >= sent.len() => Ok(()),
            n => Err(format!("{n} of {} read", sent.len())),
        }
    });
    let second_read = second.read();
    // Each partition resumes at its committed offset: nothing read twice,
    // nothing skipped.
    for p in 0..4u64 {
        let start = committed.get(&p).copied().unwrap_or(0);
        let first_offsets: Vec<u64> = first_read
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .collect();
        assert_eq!(
            first_offsets,
            (0..start).collect::<Vec<_>>(),
            "partition {p}"
        );
        let offsets: Vec<u64> = second_read
            .iter()
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .collect();
        let end = sent.iter().filter(|s| s.0 == p).count() as u64;
        assert_eq!(offsets, (start..end).collect::<Vec<_>>(), "partition {p}");
    }
    second.proc.signal(nix::sys::signal::Signal::SIGKILL);
    broker.stop();
}

#[test]
fn kafka_groups_and_shared_memory_groups_share_one_namespace_and_one_view() {
    let (broker, kafka) = kafka_broker(&["--topics", "t:4", "--groups", "0", "--metrics", "0"]);
    // A shared-memory group, live, with two members.
    let shm_members = [
        broker.consumer(&["--group", "shm-readers", "--id", "shm-1", "--topic", "t"]),
        broker.consumer(&["--group", "shm-readers", "--id", "shm-2", "--topic", "t"]),
    ];
    // Its name cannot be joined over Kafka.
    let w = Watcher::default();
    let refused = Member::start("kafka-python", &kafka, "shm-readers", "intruder", &[], &w);
    let f = refused.proc.wait_exit();
    assert_eq!(f.code(), Some(3), "{:?}", f.stderr);
    assert_eq!(
        json_lines(&f.stdout).last().unwrap()["error"],
        "InconsistentGroupProtocolError"
    );
    // A Kafka group, live, with one member holding the four partitions.
    let mut member = Member::start("kafka-python", &kafka, "billing", "biller", &[], &w);
    w.wait_until("the member's assignment", RECHECK, || {
        match member.assigned() {
            Some(a) if a.len() == 4 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    produce(&kafka, 8);
    w.wait_until("the member's commits", RECHECK, || {
        match member.committed().values().sum::<u64>() {
            8 => Ok(()),
            n => Err(format!("{n} of 8 committed")),
        }
    });
    // Its name cannot be taken by a shared-memory consumer...
    let f = broker
        .client_env("consumer", &["--group", "billing", "--id", "shm-3"], &[])
        .wait_exit();
    refused_as_kafka_group(&f, "billing");
    // ...and auto-join considers shared-memory groups only: a consumer
    // without --group joins the group of two, not the Kafka group of one.
    let mut joiner = broker.client_env("consumer", &["--id", "shm-4", "--topic", "t"], &[]);
    joiner.wait_stderr("joined group shm-readers as shm-4");
    joiner.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(joiner.wait_exit().code(), Some(0));

    // Kafka's admin client sees both kinds.
    let f = python(
        "kafka-python",
        "groups",
        &[&kafka, "billing", "shm-readers"],
        None,
    );
    let v = &json_lines(&f.stdout)[0];
    assert_eq!(
        v["listed"],
        serde_json::json!([["billing", "consumer"], ["shm-readers", "consumer"]])
    );
    let billing = &v["described"][0];
    assert_eq!(billing["state"], "Stable");
    assert_eq!(billing["protocol"], "range");
    assert_eq!(
        billing["clients"],
        serde_json::json!([["biller", "/127.0.0.1"]])
    );
    assert_eq!(
        billing["assigned"],
        serde_json::json!([["t", 0], ["t", 1], ["t", 2], ["t", 3]])
    );
    let shm = &v["described"][1];
    assert_eq!(shm["state"], "Stable");
    assert_eq!(shm["members"], serde_json::json!(["shm-1", "shm-2"]));

    // `broker status` shows both kinds: the Kafka group's state, generation,
    // member, and per partition its committed offset, end and lag.
    let status = broker.status();
    let kafka_groups = status["kafka_groups"].as_array().unwrap();
    assert_eq!(kafka_groups.len(), 1, "{status}");
    let g = &kafka_groups[0];
    assert_eq!(g["name"], "billing");
    assert_eq!(g["state"], "Stable");
    assert_eq!(g["generation"], 1);
    assert_eq!(g["members"][0]["client_id"], "biller");
    let partitions = g["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), member.committed().len(), "{g}");
    let committed: u64 = partitions
        .iter()
        .map(|p| {
            assert_eq!(p["lag"], 0, "{p}");
            p["committed"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(committed, 8);
    assert_eq!(status["groups"][0]["name"], "shm-readers");
    // The metrics too: members, and per partition the committed offset as the
    // position, and the lag.
    let metrics = scrape(broker.metrics.as_deref().unwrap());
    assert!(
        metrics.contains("minikafka_group_members{group=\"billing\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("minikafka_group_members{group=\"shm-readers\"} 2\n"),
        "{metrics}"
    );
    let positions: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("minikafka_group_position{group=\"billing\",topic=\"t\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(positions, 8, "{metrics}");
    // A lag per partition the group committed in (keyless records may leave
    // one without any), each 0.
    let lags: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("minikafka_group_lag{group=\"billing\""))
        .collect();
    assert_eq!(lags.len(), member.committed().len(), "{metrics}");
    assert!(lags.iter().all(|l| l.ends_with(" 0")), "{lags:?}");
    let text = broker.subcommand("status", &[]).stdout_text();
    assert!(text.contains("KAFKA-GROUP"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("billing ") && l.contains("Stable") && l.contains("biller")),
        "{text}"
    );

    // Once its member is gone, the group keeps its name while its committed
    // offsets live: listed Empty, still refused to a shared-memory consumer.
    member.proc.signal(nix::sys::signal::Signal::SIGKILL);
    w.wait_until("the group emptied", RECHECK, || {
        let s = broker.status();
        match s["kafka_groups"][0]["state"].as_str() {
            Some("Empty") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let f = python("kafka-python", "groups", &[&kafka, "billing"], None);
    assert_eq!(json_lines(&f.stdout)[0]["described"][0]["state"], "Empty");
    // Its offsets are moved Kafka's way, by a commit from outside the group
    // while it has no members, not by `broker reset-offsets`.
    let f = broker.subcommand(
        "reset-offsets",
        &["--group", "billing", "--topic", "t", "--to", "earliest"],
    );
    refused_as_kafka_group(&f, "billing");
    python(
        "kafka-python",
        "commit-offsets",
        &[&kafka, "billing", "t", "0=0", "3=1"],
        None,
    );
    let moved = committed_by_broker(&broker, "billing");
    assert_eq!((moved[&0], moved[&3]), (0, 1), "{moved:?}");
    let f = broker
        .client_env("consumer", &["--group", "billing", "--id", "shm-5"], &[])
        .wait_exit();
    refused_as_kafka_group(&f, "billing");
    drop(shm_members);
    broker.stop();
}
