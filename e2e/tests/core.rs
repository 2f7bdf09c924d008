//! SPEC §1–§5 end to end: groups, round-robin, backpressure, ordering, binary
//! payloads, limits, and the command lines. Every test starts real processes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use e2e::{json_lines, payload_of, Broker, TempDir};
use serde_json::Value;

/// Offsets and payloads one consumer printed, in the order printed.
fn received(stdout: &[u8]) -> Vec<(u64, Vec<u8>, Value)> {
    json_lines(stdout)
        .into_iter()
        .map(|v| (v["offset"].as_u64().expect("offset"), payload_of(&v), v))
        .collect()
}

fn assert_increasing(offsets: &[u64], who: &str) {
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "{who}: offsets not increasing"
    );
}

#[test]
fn two_groups_of_two_each_get_every_message_once_split_evenly() {
    let broker = Broker::start(&["--groups", "2"]);
    let mut consumers = Vec::new();
    // Started one after another, auto-join alternates between the two groups.
    for _ in 0..4 {
        consumers.push(broker.consumer(&["--count", "10000", "--format", "json"]));
    }
    let groups: Vec<&str> = consumers.iter().map(|(_, g)| g.as_str()).collect();
    assert_eq!(groups, ["group-1", "group-2", "group-1", "group-2"]);

    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("line {i}: héllo\\wörld \u{1F600} {}", "x".repeat(i % 50)))
        .collect();
    let input = lines.join("\n") + "\n";
    let producer = broker.producer(&[], Some(input.into_bytes())).wait_exit();
    assert_eq!(producer.code(), Some(0), "{:?}", producer.stderr);

    let mut by_group: HashMap<String, Vec<u64>> = HashMap::new();
    for (proc, group) in consumers {
        let done = proc.wait_exit();
        assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
        let got = received(&done.stdout);
        assert_eq!(got.len(), 10_000, "each consumer gets exactly half");
        let offsets: Vec<u64> = got.iter().map(|(o, _, _)| *o).collect();
        assert_increasing(&offsets, &group);
        for (o, payload, v) in &got {
            assert_eq!(
                payload,
                lines[*o as usize].as_bytes(),
                "payload of offset {o}"
            );
            assert_eq!(v["group"], group.as_str());
            assert_eq!(v["topic"], "default");
            assert_eq!(v["partition"], 0);
        }
        by_group.entry(group).or_default().extend(offsets);
    }
    for (group, mut offsets) in by_group {
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            (0..20_000).collect::<Vec<_>>(),
            "{group} got each once"
        );
    }
}

#[test]
fn a_full_ring_blocks_the_producer_without_burning_cpu_until_a_consumer_drains_it() {
    let broker = Broker::start(&["--groups", "1", "--slots", "16"]);
    let mut producer = broker.producer(&["--count", "200", "--size", "64"], None);
    // Wait, by looking at the region itself, until the ring is full of committed
    // records (slots are reserved before their records are committed).
    let region = shm_layout::Region::open(&broker.shm).expect("open region");
    let deadline = std::time::Instant::now() + e2e::DEADLINE;
    while region.next_offset() < 16 {
        assert!(std::time::Instant::now() < deadline, "ring never filled");
        assert!(
            producer.is_running(),
            "producer exited with the ring not full"
        );
        std::thread::yield_now();
    }
    let before = producer.cpu_ticks();
    // A measurement window, not synchronisation: the producer must stay blocked in it.
    let window = Duration::from_millis(1200);
    std::thread::sleep(window);
    let after = producer.cpu_ticks();
    assert!(producer.is_running(), "producer should still be blocked");
    assert_eq!(
        region.next_offset(),
        16,
        "nothing more was committed while full"
    );
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .expect("clock ticks per second") as u64;
    let cpu_ms = (after - before) * 1000 / ticks_per_s;
    println!("blocked producer used {cpu_ms} ms of CPU in {window:?}");
    assert!(cpu_ms < 50, "blocked producer used {cpu_ms} ms of CPU");

    let (consumer, _) = broker.consumer(&["--count", "200"]);
    let p = producer.wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let c = consumer.wait_exit();
    assert_eq!(c.code(), Some(0), "{:?}", c.stderr);
    let expected: String = (0..200)
        .map(|i| {
            let mut m = format!("{i} ");
            m.push_str(&"x".repeat(64 - m.len()));
            m + "\n"
        })
        .collect();
    assert_eq!(c.stdout_text(), expected);
}

#[test]
fn six_producers_and_six_consumers_in_three_groups_keep_every_message_and_order() {
    let broker = Broker::start(&["--groups", "3"]);
    let consumers: Vec<_> = (0..6)
        .map(|_| broker.consumer(&["--count", "6000", "--format", "json"]))
        .collect();
    let per_producer = 2000;
    let producers: Vec<_> = (0..6)
        .map(|p| {
            let input: String = (0..per_producer).map(|i| format!("{p}:{i}\n")).collect();
            broker.producer(&["--id", &format!("prod-{p}")], Some(input.into_bytes()))
        })
        .collect();
    for p in producers {
        let done = p.wait_exit();
        assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    }
    let mut groups: HashMap<String, BTreeMap<u64, (String, String)>> = HashMap::new();
    for (proc, group) in consumers {
        let done = proc.wait_exit();
        assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
        let got = received(&done.stdout);
        let offsets: Vec<u64> = got.iter().map(|(o, _, _)| *o).collect();
        assert_increasing(&offsets, &group);
        let g = groups.entry(group).or_default();
        for (o, payload, v) in got {
            let text = String::from_utf8(payload).unwrap();
            let producer = v["producer"].as_str().unwrap().to_string();
            assert!(
                g.insert(o, (producer, text)).is_none(),
                "offset {o} delivered twice"
            );
        }
    }
    assert_eq!(groups.len(), 3);
    for (group, by_offset) in groups {
        assert_eq!(
            by_offset.len(),
            6 * per_producer,
            "{group} got every message"
        );
        assert_eq!(
            *by_offset.keys().last().unwrap(),
            6 * per_producer as u64 - 1
        );
        let mut next: HashMap<String, usize> = HashMap::new();
        for (producer, text) in by_offset.values() {
            let (p, i) = text.split_once(':').unwrap();
            assert_eq!(producer, &format!("prod-{p}"), "producer id of {text}");
            let expected = next.entry(p.to_string()).or_insert(0);
            assert_eq!(
                i.parse::<usize>().unwrap(),
                *expected,
                "{group}: producer {p} out of order"
            );
            *expected += 1;
        }
    }
}

#[test]
fn binary_and_multi_slot_payloads_arrive_byte_exact() {
    let broker = Broker::start(&["--groups", "1", "--slot-size", "256", "--slots", "1024"]);
    let (consumer, _) = broker.consumer(&["--count", "4", "--format", "json"]);
    let dir = TempDir::new("payloads");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let files = [("all", all_bytes.clone()), ("big", big.clone())];
    for (name, bytes) in &files {
        let path = dir.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = broker
            .producer(&["--file", path.to_str().unwrap()], None)
            .wait_exit();
        assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    }
    let p = broker.producer(&[""], None).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let p = broker
        .producer(&["-k", "k\u{e9}y", "keyed"], None)
        .wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);

    let c = consumer.wait_exit();
    assert_eq!(c.code(), Some(0), "{:?}", c.stderr);
    let got = received(&c.stdout);
    assert_eq!(got[0].1, all_bytes);
    assert!(
        got[0].2.get("payload_base64").is_some(),
        "invalid UTF-8 goes as base64"
    );
    assert_eq!(got[1].1, big);
    assert_eq!(got[2].1, b"");
    assert_eq!(got[2].2["payload"], "");
    assert_eq!(got[2].2["key"], Value::Null);
    assert_eq!(got[3].1, b"keyed");
    assert_eq!(got[3].2["key"], "k\u{e9}y");
}

#[test]
fn a_message_over_max_message_is_refused_and_nothing_is_written() {
    let broker = Broker::start(&["--groups", "1", "--max-message", "1000"]);
    let dir = TempDir::new("max");
    let path = dir.0.join("big");
    std::fs::write(&path, vec![b'a'; 1001]).unwrap();
    let p = broker
        .producer(&["--file", path.to_str().unwrap()], None)
        .wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(p.stderr.len(), 1, "{:?}", p.stderr);
    assert!(p
        .last_stderr_line()
        .contains("over the broker's maximum of 1000 bytes"));
    // Arguments are checked before any is sent: the small one is not sent either.
    let long = "b".repeat(1001);
    let p = broker.producer(&["small", &long], None).wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(broker.status()["ring"]["next_offset"], 0);
    let p = broker.producer(&["after"], None).wait_exit();
    assert_eq!(p.code(), Some(0));
    let (c, _) = broker.consumer(&["--count", "1", "--format", "json"]);
    let got = received(&c.wait_exit().stdout);
    assert_eq!((got[0].0, got[0].1.as_slice()), (0, &b"after"[..]));
}

#[test]
fn stdin_lines_lose_their_line_endings_and_a_last_partial_line_is_sent() {
    let broker = Broker::start(&["--groups", "1"]);
    let (consumer, _) = broker.consumer(&["--count", "4"]);
    let p = broker
        .producer(&[], Some(b"one\r\ntwo\n\nlast".to_vec()))
        .wait_exit();
    assert_eq!(p.code(), Some(0));
    assert!(
        p.last_stderr_line().contains("sent 4 messages"),
        "{:?}",
        p.stderr
    );
    assert_eq!(consumer.wait_exit().stdout_text(), "one\ntwo\n\nlast\n");
}

#[test]
fn a_named_group_is_created_on_demand_and_receives_only_later_messages_then_keeps_its_place() {
    let broker = Broker::start(&["--groups", "1"]);
    let (first, g) = broker.consumer(&["--count", "2"]);
    assert_eq!(g, "group-1");
    assert_eq!(
        broker.producer(&["early"], None).wait_exit().code(),
        Some(0)
    );
    let (named, g) = broker.consumer(&["--group", "audit", "--count", "1"]);
    assert_eq!(g, "audit");
    assert_eq!(broker.producer(&["late"], None).wait_exit().code(), Some(0));
    assert_eq!(first.wait_exit().stdout_text(), "early\nlate\n");
    assert_eq!(named.wait_exit().stdout_text(), "late\n");
    let groups = |s: &Value| -> Vec<(String, bool)> {
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let name = g["name"].as_str().unwrap().to_string();
                (name, g["holds_ring"].as_bool().unwrap())
            })
            .collect()
    };
    // A named group holds the ring while it has members, then only keeps its
    // position (SPEC §10); pre-created ones hold it while empty too.
    let s = broker.wait_for_status("audit no longer holding the ring", |s| {
        groups(s).contains(&("audit".into(), false))
    });
    assert_eq!(
        groups(&s),
        vec![("group-1".into(), true), ("audit".into(), false)]
    );
    assert_eq!(s["groups"][1]["partitions"][0]["position"], 2);
}

#[test]
fn a_consumer_that_leaves_is_dropped_from_the_rotation_at_once() {
    let broker = Broker::start(&["--groups", "1"]);
    let (stays, _) = broker.consumer(&["--count", "3", "--format", "json"]);
    let (leaves, _) = broker.consumer(&["--count", "1", "--format", "json"]);
    assert_eq!(
        broker.producer(&["a", "b"], None).wait_exit().code(),
        Some(0)
    );
    let left = received(&leaves.wait_exit().stdout);
    assert_eq!(left.len(), 1);
    assert_eq!(
        broker.producer(&["c", "d"], None).wait_exit().code(),
        Some(0)
    );
    let stayed: Vec<u64> = received(&stays.wait_exit().stdout)
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(left[0].0, 1);
    assert_eq!(
        left[0].2["attempt"], 1,
        "a first delivery, not a redelivery of what it left"
    );
    assert_eq!(stayed, vec![0, 2, 3]);
}

#[test]
fn sigterm_stops_the_broker_and_its_clients_exit_with_broker_stopped() {
    let broker = Broker::start(&["--groups", "1"]);
    let (consumer, _) = broker.consumer(&[]);
    let shm = broker.shm.clone();
    let b = broker.stop();
    assert_eq!(b.code(), Some(0), "{:?}", b.stderr);
    let c = consumer.wait_exit();
    assert_eq!(c.code(), Some(1));
    assert_eq!(c.last_stderr_line(), "consumer: broker stopped");
    assert!(shm_layout::Region::open(&shm).is_err(), "region unlinked");
}
