//! Topics and partitions (SPEC §11) with real processes: topics created at start
//! and at run time, listed, surviving a SIGKILL of the broker with their offsets;
//! keys placed by Kafka's partitioner; per-key order; keyless messages spread;
//! standalone readers over every partition of a topic; bad names and unknown
//! topics refused.

use std::collections::BTreeMap;

use e2e::{json_lines, payload_of, Broker, StdoutMode};

/// Kafka's `UtilsTest.testMurmur2`: keys and the hash the Java client gives them
/// (a signed int). Its default partitioner puts a key in
/// `(hash & 0x7fffffff) % partitions`.
const JAVA_MURMUR2: [(&str, i32); 5] = [
    ("21", -973_932_308),
    ("foobar", -790_332_482),
    ("a-little-bit-long-string", -985_981_536),
    ("a-little-bit-longer-string", -1_486_304_829),
    ("abc", 479_470_107),
];

/// The partition the Java client picks for a key whose hash is `java`.
fn java_partition(java: i32, partitions: u32) -> u32 {
    (java as u32 & 0x7fff_ffff) % partitions
}

/// Waits until the persistence file holds `n` records of `topic`: (partition,
/// offset, key, payload).
fn wait_persisted(broker: &Broker, topic: &str, n: usize) -> Vec<(u32, u64, String, String)> {
    let prefix = format!("{topic}\t");
    broker
        .wait_data_lines("persistencia_mensajes.txt", n, |l| l.starts_with(&prefix))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[5].to_string(),
                f[6].to_string(),
            )
        })
        .collect()
}

fn sent_ok(p: e2e::Proc) {
    let f = p.wait_exit();
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
}

#[test]
fn keys_land_where_kafkas_java_client_puts_them() {
    let broker = Broker::start(&["--topics", "orders:4,wide:7", "--flush-interval", "10ms"]);
    for topic in ["orders", "wide"] {
        for (key, _) in JAVA_MURMUR2 {
            sent_ok(broker.producer(&["--topic", topic, "-k", key, key], None));
        }
    }
    for (topic, partitions) in [("orders", 4), ("wide", 7)] {
        let records = wait_persisted(&broker, topic, JAVA_MURMUR2.len());
        for (key, java) in JAVA_MURMUR2 {
            let (partition, ..) = records
                .iter()
                .find(|r| r.2 == key)
                .unwrap_or_else(|| panic!("{key} not persisted in {topic}"));
            assert_eq!(
                *partition,
                java_partition(java, partitions),
                "{key} in {topic} ({partitions} partitions)"
            );
        }
    }
    // --partition overrides the key.
    sent_ok(broker.producer(
        &["--topic", "orders", "--partition", "3", "-k", "abc", "x"],
        None,
    ));
    let records = wait_persisted(&broker, "orders", JAVA_MURMUR2.len() + 1);
    assert!(
        records.iter().any(|r| r.0 == 3 && r.3 == "x"),
        "{records:?}"
    );
    broker.stop();
}

#[test]
fn per_key_order_holds_with_eight_keyed_producers_over_four_partitions() {
    const PER_KEY: usize = 500;
    let broker = Broker::start(&["--topics", "events:4", "--slots", "64"]);
    let keys = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    // Eight producers at once, one per key, each sending its key's messages in
    // order.
    let producers: Vec<e2e::Proc> = keys
        .iter()
        .map(|k| {
            let lines: Vec<u8> = (0..PER_KEY)
                .flat_map(|i| format!("{k} {i}\n").into_bytes())
                .collect();
            broker.producer(&["--topic", "events", "-k", k], Some(lines))
        })
        .collect();
    // A reader of every partition, started from the beginning while they send.
    let total = (keys.len() * PER_KEY).to_string();
    let (reader, _) = broker.reader(
        &[
            "--topic", "events", "--from", "earliest", "--count", &total, "--format", "json",
        ],
        StdoutMode::Collect,
    );
    for p in producers {
        sent_ok(p);
    }
    let read = reader.wait_exit();
    assert_eq!(read.code(), Some(0), "{:?}", read.stderr);
    let mut next: BTreeMap<String, usize> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut offsets: BTreeMap<u64, u64> = BTreeMap::new();
    for v in json_lines(&read.stdout) {
        assert_eq!(v["topic"], "events");
        let key = v["key"].as_str().unwrap().to_string();
        let partition = v["partition"].as_u64().unwrap();
        let offset = v["offset"].as_u64().unwrap();
        // Each partition in offset order, from 0, with no gap.
        let expected = offsets.entry(partition).or_insert(0);
        assert_eq!(offset, *expected, "partition {partition}");
        *expected += 1;
        // A key stays in one partition, and its messages in the order sent.
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(partition),
            partition
        );
        let i = next.entry(key.clone()).or_insert(0);
        assert_eq!(
            String::from_utf8(payload_of(&v)).unwrap(),
            format!("{key} {i}")
        );
        *i += 1;
    }
    assert!(next.values().all(|&n| n == PER_KEY), "{next:?}");
    assert!(
        offsets.len() > 1,
        "eight keys over four partitions use more than one: {offsets:?}"
    );
    broker.stop();
}

#[test]
fn keyless_messages_spread_over_the_partitions_within_ten_percent() {
    let broker = Broker::start(&["--topics", "spread:4", "--flush-interval", "10ms"]);
    sent_ok(broker.producer(&["--topic", "spread", "--count", "10000"], None));
    let records = wait_persisted(&broker, "spread", 10_000);
    let mut counts = [0u32; 4];
    for r in &records {
        counts[r.0 as usize] += 1;
    }
    for c in counts {
        assert!((2250..=2750).contains(&c), "{counts:?}");
    }
    broker.stop();
}

#[test]
fn a_topic_created_at_run_time_is_listed_and_survives_a_sigkill_with_its_offsets() {
    let broker = Broker::start(&["--topics", "orders:2", "--flush-interval", "10ms"]);
    let created = broker.subcommand(
        "create-topic",
        &[
            "metrics",
            "--partitions",
            "3",
            "--slots",
            "256",
            "--slot-size",
            "256",
        ],
    );
    assert_eq!(created.code(), Some(0), "{:?}", created.stderr);
    assert_eq!(
        created.stdout_text(),
        "created topic metrics with 3 partitions\n"
    );
    let again = broker.subcommand("create-topic", &["metrics"]);
    assert_eq!(again.code(), Some(1));
    assert_eq!(again.stderr, ["broker create-topic: topic metrics exists"]);
    let bad = broker.subcommand("create-topic", &["no/slash"]);
    assert_eq!(bad.code(), Some(2), "{:?}", bad.stderr);
    for i in 0..3 {
        let p = i.to_string();
        sent_ok(broker.producer(&["--topic", "metrics", "--partition", &p, "m0", "m1"], None));
    }
    sent_ok(broker.producer(&["--topic", "orders", "--partition", "1", "o0"], None));
    wait_persisted(&broker, "metrics", 6);
    let topics = broker.topics();
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "orders", "metrics"]);
    let metrics = &topics["topics"][2];
    assert_eq!(metrics["slots"], 256);
    assert_eq!(metrics["slot_size"], 256);
    for p in metrics["partitions"].as_array().unwrap() {
        assert_eq!(p["end_offset"], 2, "{p}");
        assert_eq!(p["ring_slots"], 256);
    }
    let (data, shm) = broker.kill();
    // Restarted without --topics: both topics are still there, offsets go on.
    let broker = Broker::start_with(data, shm, &["--flush-interval", "10ms"]);
    sent_ok(broker.producer(&["--topic", "metrics", "--partition", "2", "m2"], None));
    sent_ok(broker.producer(&["--topic", "orders", "--partition", "1", "o1"], None));
    let metrics = wait_persisted(&broker, "metrics", 7);
    let in_2: Vec<(u64, &str)> = metrics
        .iter()
        .filter(|r| r.0 == 2)
        .map(|r| (r.1, r.3.as_str()))
        .collect();
    assert_eq!(in_2, [(0, "m0"), (1, "m1"), (2, "m2")]);
    let orders = wait_persisted(&broker, "orders", 2);
    assert_eq!(
        orders
            .iter()
            .map(|r| (r.0, r.1, r.3.as_str()))
            .collect::<Vec<_>>(),
        [(1, 0, "o0"), (1, 1, "o1")]
    );
    let names = broker.topics()["topics"].as_array().unwrap().len();
    assert_eq!(names, 3);
    broker.stop();
}

#[test]
fn a_reader_of_every_partition_wakes_for_any_of_them_and_logs_each_read() {
    let broker = Broker::start(&["--topics", "orders:4", "--flush-interval", "10ms"]);
    let (reader, id) = broker.reader(
        &[
            "--topic", "orders", "--from", "latest", "--count", "3", "--format", "json",
        ],
        StdoutMode::Collect,
    );
    // Sent after the reader sleeps at the end of all four partitions.
    for (p, m) in [("3", "late-3"), ("1", "late-1"), ("3", "later-3")] {
        sent_ok(broker.producer(&["--topic", "orders", "--partition", p, m], None));
    }
    let read = reader.wait_exit();
    assert_eq!(read.code(), Some(0), "{:?}", read.stderr);
    let got: Vec<(u64, u64, String)> = json_lines(&read.stdout)
        .iter()
        .map(|v| {
            (
                v["partition"].as_u64().unwrap(),
                v["offset"].as_u64().unwrap(),
                String::from_utf8(payload_of(v)).unwrap(),
            )
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            (1, 0, "late-1".to_string()),
            (3, 0, "late-3".to_string()),
            (3, 1, "later-3".to_string())
        ]
    );
    // Each read has its consumption-log line, with its topic and partition.
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let mut lines: Vec<String> = e2e::data_lines(&data.0.join("log_consumo.txt"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{} {} {} {} {}", f[1], f[2], f[3], f[5], f[6])
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("orders 1 0 - {id}"),
            format!("orders 3 0 - {id}"),
            format!("orders 3 1 - {id}"),
        ]
    );
}

#[test]
fn bad_topic_names_are_usage_errors_and_unknown_topics_one_line_refusals() {
    let broker = Broker::start(&["--topics", "orders:2"]);
    for args in [
        vec!["--topic", "a/b", "x"],
        vec!["--topic", "..", "x"],
        vec!["--topic", "", "x"],
    ] {
        let f = broker.producer(&args, None).wait_exit();
        assert_eq!(f.code(), Some(2), "{args:?}: {:?}", f.stderr);
        assert_eq!(f.stderr.len(), 1, "{:?}", f.stderr);
    }
    let f = broker.producer(&["--topic", "nope", "x"], None).wait_exit();
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr,
        ["producer: no topic nope (broker topics lists them; broker create-topic makes one)"]
    );
    let f = broker
        .producer(&["--topic", "orders", "--partition", "2", "x"], None)
        .wait_exit();
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.stderr,
        ["producer: topic orders has 2 partition(s), numbered from 0: there is no partition 2"]
    );
    let f = e2e::Proc::spawn(
        &e2e::bin("consumer"),
        &broker.client_args(&["--topic", "nope", "--from", "earliest"]),
        None,
        StdoutMode::Collect,
    )
    .wait_exit();
    assert_eq!(f.code(), Some(1));
    assert_eq!(
        f.last_stderr_line(),
        "consumer: no topic nope (broker topics lists them; broker create-topic makes one)"
    );
    // Nothing was created by any of it.
    assert_eq!(broker.topics()["topics"].as_array().unwrap().len(), 2);
    broker.stop();
    for topics in ["a:0", "a,a", "a/b", "default:2", "x:4097"] {
        let data = e2e::TempDir::new("bad-topics");
        let shm = format!("/{}", e2e::unique("mk-e2e-bad-topics"));
        let mut p = Broker::spawn(&data, &shm, &["--topics", topics]);
        let f = p.wait_exit_within(e2e::DEADLINE);
        assert_eq!(f.code(), Some(2), "--topics {topics}: {:?}", f.stderr);
    }
}

#[test]
fn a_thousand_topics_are_served_listed_and_read() {
    let names: Vec<String> = (1..1000).map(|i| format!("t{i}")).collect();
    let spec = names.join(",");
    let started = std::time::Instant::now();
    let broker = Broker::start(&[
        "--topics",
        &spec,
        "--slots",
        "256",
        "--slot-size",
        "256",
        "--flush-interval",
        "10ms",
    ]);
    eprintln!("1000 topics ready in {:?}", started.elapsed());
    let topics = broker.topics();
    let listed = topics["topics"].as_array().unwrap();
    assert_eq!(listed.len(), 1000);
    assert_eq!(listed[999]["name"], "t999");
    eprintln!(
        "shared memory of 1000 topics: {} bytes",
        topics["region_bytes"]
    );
    // Registration and the status report still fit their frames.
    let status = broker.status();
    assert!(status.is_object());
    for t in ["t1", "t500", "t999"] {
        sent_ok(broker.producer(&["--topic", t, "-k", "k", t], None));
    }
    let (reader, _) = broker.reader(
        &["--topic", "t999", "--from", "earliest", "--count", "1"],
        StdoutMode::Collect,
    );
    let read = reader.wait_exit();
    assert_eq!(read.stdout_text(), "t999\n");
    wait_persisted(&broker, "t500", 1);
    let (stopped, _) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
}

/// A producer of `topic`'s partition 0 sending "victim 0".."victim 99" that kills
/// itself at `fault`.
fn victim_producer(broker: &Broker, topic: &str, fault: &str) {
    use std::os::unix::process::ExitStatusExt;
    let input: String = (0..100).map(|i| format!("victim {i}\n")).collect();
    let victim = e2e::Proc::spawn_env(
        &e2e::bin("producer"),
        &broker.client_args(&["--id", "victim", "--topic", topic, "--partition", "0"]),
        Some(input.into_bytes()),
        StdoutMode::Collect,
        &[("MINIKAFKA_FAULT", fault)],
    )
    .wait_exit();
    assert_eq!(victim.status.signal(), Some(9), "{fault} killed it");
}

#[test]
fn a_producer_killed_in_a_partitions_ring_wedges_nobody_and_leaves_no_gap() {
    for (fault, victims) in [("send-reserved:50", 49), ("send-committed:50", 50)] {
        // A 32-slot ring: the rest only flows if the dead producer's hold is undone.
        let broker = Broker::start(&["--topics", "small:2", "--slots", "32"]);
        victim_producer(&broker, "small", fault);
        let after: String = (0..500).map(|i| format!("after {i}\n")).collect();
        let next = broker.producer(
            &["--id", "next", "--topic", "small", "--partition", "0"],
            Some(after.into_bytes()),
        );
        sent_ok(next);
        let total = (victims + 500).to_string();
        let (reader, _) = broker.reader(
            &[
                "--topic",
                "small",
                "--partition",
                "0",
                "--from",
                "earliest",
                "--count",
                &total,
                "--format",
                "json",
            ],
            StdoutMode::Collect,
        );
        let got = json_lines(&reader.wait_exit().stdout);
        let payloads: Vec<String> = got
            .iter()
            .map(|v| String::from_utf8(payload_of(v)).unwrap())
            .collect();
        let mut expected: Vec<String> = (0..victims).map(|i| format!("victim {i}")).collect();
        expected.extend((0..500).map(|i| format!("after {i}")));
        assert_eq!(payloads, expected, "{fault}: nothing torn or lost");
        let offsets: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
        assert_eq!(
            offsets,
            (0..victims as u64 + 500).collect::<Vec<_>>(),
            "{fault}"
        );
        broker.stop();
    }
}

#[test]
fn records_only_in_a_partitions_ring_when_the_broker_is_killed_are_recovered_once() {
    // Written to the file at most every minute: at the kill, the records are only
    // in the partition's region.
    let broker = Broker::start(&["--topics", "orders:2", "--flush-interval", "60s"]);
    sent_ok(broker.producer(
        &["--topic", "orders", "--partition", "1", "a", "b", "c"],
        None,
    ));
    let (data, shm) = broker.kill();
    let broker = Broker::start_with(data, shm, &["--flush-interval", "10ms"]);
    sent_ok(broker.producer(&["--topic", "orders", "--partition", "1", "d"], None));
    let orders = wait_persisted(&broker, "orders", 4);
    assert_eq!(
        orders
            .iter()
            .map(|r| (r.0, r.1, r.3.as_str()))
            .collect::<Vec<_>>(),
        [(1, 0, "a"), (1, 1, "b"), (1, 2, "c"), (1, 3, "d")]
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert_eq!(
        e2e::data_lines(&data.0.join("persistencia_mensajes.txt")).len(),
        4,
        "each record once"
    );
}

#[test]
fn reads_of_a_partition_a_killed_broker_had_not_logged_are_logged_at_the_restart() {
    // The log is written at most every minute: at the kill, the reads are only in
    // the reader's journal in the region.
    let broker = Broker::start(&["--topics", "orders:2", "--flush-interval", "60s"]);
    sent_ok(broker.producer(
        &["--topic", "orders", "--partition", "1", "a", "b", "c"],
        None,
    ));
    // Still reading when the broker dies: a reader that left would have its
    // lines written at once (its entry waits for them).
    let (mut reader, id) = broker.reader(
        &[
            "--topic",
            "orders",
            "--partition",
            "1",
            "--from",
            "earliest",
            "--count",
            "4",
        ],
        StdoutMode::Lines,
    );
    let printed: Vec<String> = (0..3).map(|_| reader.next_stdout_line()).collect();
    assert_eq!(printed, ["a", "b", "c"]);
    let (data, shm) = broker.kill();
    assert_eq!(reader.wait_exit().code(), Some(1), "broker stopped");
    let broker = Broker::start_with(data, shm, &[]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let logged: Vec<String> = e2e::data_lines(&data.0.join("log_consumo.txt"))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{} {} {} {} {} {}", f[1], f[2], f[3], f[5], f[6], f[7])
        })
        .collect();
    assert_eq!(
        logged,
        [
            format!("orders 1 0 - {id} 1"),
            format!("orders 1 1 - {id} 1"),
            format!("orders 1 2 - {id} 1"),
        ]
    );
}

#[test]
fn a_broker_killed_under_traffic_on_several_topics_loses_no_message_whose_send_returned() {
    let broker = Broker::start(&["--topics", "a:2,b", "--slots", "128"]);
    // Three producers, each on its own partition, sending until the broker dies.
    let targets = [("a", "0"), ("a", "1"), ("b", "0")];
    let producers: Vec<e2e::Proc> = targets
        .iter()
        .map(|(t, p)| {
            broker.producer(
                &[
                    "--topic",
                    t,
                    "--partition",
                    p,
                    "--count",
                    "100000000",
                    "--size",
                    "32",
                ],
                None,
            )
        })
        .collect();
    // Once every partition has records in the file, kill the broker mid-stream.
    wait_persisted(&broker, "b", 1000);
    wait_persisted(&broker, "a", 2000);
    let (data, shm) = broker.kill();
    let sent: Vec<u64> = producers
        .into_iter()
        .map(|p| {
            let f = p.wait_exit();
            assert_eq!(f.code(), Some(1), "{:?}", f.stderr);
            let last = f.last_stderr_line();
            assert!(
                last.starts_with("producer: broker stopped (after "),
                "{last}"
            );
            last.trim_start_matches("producer: broker stopped (after ")
                .trim_end_matches(" messages)")
                .parse()
                .unwrap()
        })
        .collect();
    let broker = Broker::start_with(data, shm, &[]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let lines = e2e::data_lines(&data.0.join("persistencia_mensajes.txt"));
    for ((topic, partition), sent) in targets.iter().zip(sent) {
        let offsets: Vec<u64> = lines
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[0] == *topic && f[1] == *partition).then(|| {
                    let offset: u64 = f[2].parse().unwrap();
                    // `--count` messages begin with their sequence number.
                    assert!(f[6].starts_with(&format!("{offset} ")), "{l}");
                    offset
                })
            })
            .collect();
        assert!(
            offsets.len() as u64 >= sent,
            "{topic}/{partition}: {} in the file, {sent} sent",
            offsets.len()
        );
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "{topic}/{partition}: each once, in order, no gap"
        );
    }
}

#[test]
fn a_producer_killed_holding_a_small_partitions_tail_never_wedges_the_next_one() {
    use nix::sys::signal::Signal;
    for _ in 0..3 {
        let broker = Broker::start(&["--topics", "tiny", "--slots", "8"]);
        // Stopped inside its hold of the ring lock, with a slot reserved at the
        // tail; the next producer waits for the lock meanwhile.
        let mut victim = broker.client_env(
            "producer",
            &[
                "--id",
                "victim",
                "--topic",
                "tiny",
                "--partition",
                "0",
                "v0",
                "v1",
            ],
            &[("MINIKAFKA_FAULT", "send-reserved:1:stop")],
        );
        victim.wait_until_stopped("the victim never reserved its slot");
        let after: String = (0..300).map(|i| format!("after {i}\n")).collect();
        let next = broker.producer(
            &["--id", "next", "--topic", "tiny", "--partition", "0"],
            Some(after.into_bytes()),
        );
        // Killed: the next producer takes the lock at once and fills the ring
        // behind the dead reservation before the broker releases it.
        victim.signal(Signal::SIGKILL);
        victim.wait_exit();
        sent_ok(next);
        broker.stop();
    }
}

#[test]
fn a_producer_stopped_in_its_commit_to_a_partition_through_a_graceful_stop_loses_nothing() {
    use nix::sys::signal::Signal;
    let broker = Broker::start(&["--topics", "orders:2"]);
    let mut held = broker.client_env(
        "producer",
        &[
            "--id",
            "held",
            "--topic",
            "orders",
            "--partition",
            "0",
            "one",
            "two",
        ],
        &[("MINIKAFKA_FAULT", "send-committed:1:stop")],
    );
    held.wait_until_stopped("the producer never reached its commit");
    let (stopped, data, shm) = broker.stop_leaving_region();
    // Its partition's region stays for the next start: the broker says so.
    assert_eq!(stopped.code(), Some(1), "{:?}", stopped.stderr);
    let last = stopped.last_stderr_line();
    assert!(
        last.contains(&format!("{shm}.t1.0")) && last.contains("left in place"),
        "{last}"
    );
    held.signal(Signal::SIGCONT);
    let p = held.wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(
        p.last_stderr_line(),
        "producer: broker stopped (after 1 messages)"
    );
    let broker = Broker::start_with(data, shm, &["--flush-interval", "10ms"]);
    let orders = wait_persisted(&broker, "orders", 1);
    assert_eq!(
        orders
            .iter()
            .map(|r| (r.0, r.1, r.3.as_str()))
            .collect::<Vec<_>>(),
        [(0, 0, "one")]
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert_eq!(
        e2e::data_lines(&data.0.join("persistencia_mensajes.txt")).len(),
        1
    );
}

#[test]
fn a_stop_while_a_large_topic_is_created_leaves_no_region_and_no_topic() {
    let broker = Broker::start(&[]);
    let shm = broker.shm.clone();
    // 400 partitions of 4,096 slots of 1 KiB: seconds of reserving memory.
    let mut create = e2e::Proc::spawn(
        &e2e::bin("broker"),
        &["create-topic".to_string()]
            .into_iter()
            .chain(broker.client_args(&["big", "--partitions", "400"]))
            .collect::<Vec<_>>(),
        None,
        StdoutMode::Collect,
    );
    // Once its first partition's region exists, the broker is told to stop.
    let first = std::path::Path::new("/dev/shm").join(format!("{}.t1.0", &shm[1..]));
    let deadline = std::time::Instant::now() + e2e::DEADLINE;
    while !first.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no region of the topic appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let refused = create.wait_exit_within(e2e::DEADLINE);
    assert_eq!(refused.code(), Some(1), "{:?}", refused.stderr);
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{}.", &shm[1..])))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "no region of the topic is left");
    let listed = std::fs::read_to_string(data.0.join("topics.txt")).unwrap_or_default();
    assert!(!listed.contains("big"), "{listed}");
}
