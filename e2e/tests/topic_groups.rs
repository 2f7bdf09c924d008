//! Consumer groups over topics (SPEC §11) with real processes: a group reading
//! every partition of a topic, each partition's offsets dealt in turn to its
//! members, every delivery logged with its topic and partition; a group holding
//! a topic's ring; a member killed with SIGKILL, whose share goes to the others.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use e2e::{json_lines, payload_of, Broker};
use nix::sys::signal::Signal;

/// (partition, offset) → payload, of the records of `topic` in the persistence
/// file, once it holds at least `n` (consumers may have been served before the
/// file was written).
fn persisted(broker: &Broker, topic: &str, n: usize) -> BTreeMap<(u64, u64), String> {
    let prefix = format!("{topic}\t");
    broker
        .wait_data_lines("persistencia_mensajes.txt", n, |l| l.starts_with(&prefix))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            ((f[1].parse().unwrap(), f[2].parse().unwrap()), f[6].into())
        })
        .collect()
}

/// The consumption log's lines of `group`, split in fields.
fn deliveries(broker: &Broker, group: &str) -> Vec<Vec<String>> {
    lines_of(broker.data_lines("log_consumo.txt"), group)
}

/// As [`deliveries`], while the broker may be writing the log.
fn deliveries_so_far(broker: &Broker, group: &str) -> Vec<Vec<String>> {
    lines_of(broker.data_lines_so_far("log_consumo.txt"), group)
}

/// Consumption-log `lines` of `group`, split in fields.
fn lines_of(lines: Vec<String>, group: &str) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f[5] == group)
        .collect()
}

/// Waits until the consumption log has `n` deliveries of `group`.
fn wait_delivered(broker: &Broker, group: &str, n: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + e2e::DEADLINE;
    loop {
        let lines = deliveries_so_far(broker, group);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} deliveries to {group} logged",
            lines.len()
        );
        // The log is written at least every --flush-interval.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A message's place: (topic, partition, offset).
type Place = (String, u64, u64);

/// What a consumer printed (JSON Lines): each message's place, payload and attempt.
fn printed(stdout: &[u8]) -> Vec<(Place, (String, u64))> {
    json_lines(stdout)
        .iter()
        .map(|v| {
            (
                (
                    v["topic"].as_str().unwrap().to_string(),
                    v["partition"].as_u64().unwrap(),
                    v["offset"].as_u64().unwrap(),
                ),
                (
                    String::from_utf8(payload_of(v)).unwrap(),
                    v["attempt"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Waits until `broker status` shows `n` members in group `group`.
fn wait_members(broker: &Broker, group: &str, n: usize) {
    broker.wait_for_status("the group's members", |s| {
        s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == group && g["members"].as_array().unwrap().len() == n)
    });
}

/// A broker with `topics` and no pre-created group, writing its files every 10 ms.
fn groups_broker(topics: &str) -> Broker {
    Broker::start(&[
        "--topics",
        topics,
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
    ])
}

/// The arguments of a member of the `partition` group `p` reading `topic`.
fn partition_member(topic: &str) -> [&str; 8] {
    [
        "--group",
        "p",
        "--assignment",
        "partition",
        "--topic",
        topic,
        "--format",
        "json",
    ]
}

fn keyed_lines(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("{prefix}{i}\n").into_bytes())
        .collect()
}

#[test]
fn a_group_over_a_topic_deals_each_partition_to_its_members_and_logs_every_delivery() {
    const N: usize = 2000;
    let broker = groups_broker("orders:4");
    let args = ["--group", "g", "--topic", "orders", "--format", "json"];
    let (a, group) = broker.consumer(&args);
    assert_eq!(group, "g");
    let (b, _) = broker.consumer(&args);
    // Both are in the rotation of every partition before anything is sent.
    broker.wait_for_status("two members in g", |s| {
        s["groups"].as_array().unwrap().iter().any(|g| {
            g["name"] == "g"
                && g["members"].as_array().unwrap().len() == 2
                && g["partitions"].as_array().unwrap().len() == 4
        })
    });
    let sent = broker.producer(&["--topic", "orders"], Some(keyed_lines("m", N)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    let logged = wait_delivered(&broker, "g", N);
    a.signal(Signal::SIGTERM);
    b.signal(Signal::SIGTERM);
    let (a, b) = (a.wait_exit(), b.wait_exit());
    assert_eq!(
        (a.code(), b.code()),
        (Some(0), Some(0)),
        "{:?} {:?}",
        a.stderr,
        b.stderr
    );
    let records = persisted(&broker, "orders", N);
    assert_eq!(records.len(), N);
    // Every record went to exactly one member, once, as sent; each member saw
    // every partition, each in offset order.
    let mut seen = BTreeSet::new();
    for out in [&a.stdout, &b.stdout] {
        let got = printed(out);
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for ((topic, partition, offset), (payload, attempt)) in &got {
            assert_eq!(topic, "orders");
            assert_eq!(*attempt, 1);
            assert_eq!(records.get(&(*partition, *offset)), Some(payload));
            assert!(
                seen.insert((*partition, *offset)),
                "{partition}/{offset} twice"
            );
            if let Some(before) = last.insert(*partition, *offset) {
                assert!(before < *offset, "partition {partition} out of order");
            }
        }
        assert_eq!(last.len(), 4, "a member reads every partition");
    }
    assert_eq!(seen.len(), N);
    // One log line per delivery, naming its topic, partition and consumer.
    assert_eq!(logged.len(), N);
    let logged: BTreeSet<(u64, u64)> = logged
        .iter()
        .map(|f| {
            assert_eq!(f[1], "orders");
            assert_eq!(f[7], "1");
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    assert_eq!(logged, seen);
}

/// Stops a member of `group` reading `tiny` (16 slots), then sends `N` lines
/// `<prefix><i>`: the producer must wait for the group, and say so, until the
/// member goes on; returns what the member printed.
fn held_by_a_stopped_member(
    broker: &Broker,
    group: &str,
    prefix: &str,
) -> Vec<(Place, (String, u64))> {
    let count = HELD.to_string();
    let (mut member, _) = broker.consumer(&[
        "--group", group, "--topic", "tiny", "--format", "json", "--count", &count,
    ]);
    member.signal(Signal::SIGSTOP);
    member.wait_until_stopped("the member never stopped");
    let lines = keyed_lines(prefix, HELD);
    let mut producer = broker.producer(&["--topic", "tiny"], Some(lines));
    // The producer waits for the group, and says which.
    let waiting = producer.wait_stderr("waiting for space in tiny/0");
    assert!(
        waiting.contains(&format!("group {group} is"))
            && waiting.contains("messages behind; slowest consumer"),
        "{waiting}"
    );
    member.signal(Signal::SIGCONT);
    assert_eq!(producer.wait_exit().code(), Some(0));
    let got = member.wait_exit();
    assert_eq!(got.code(), Some(0), "{:?}", got.stderr);
    printed(&got.stdout)
}

/// Messages a stopped member holds, in a ring of 16 slots: without the group's
/// hold, the persister would free slots the member has not read.
const HELD: usize = 200;

/// Asserts `got` is offsets `from..from + HELD` in order, with payloads
/// `<prefix><i>`.
fn assert_all_in_order(got: &[(Place, (String, u64))], from: u64, prefix: &str) {
    let offsets: Vec<u64> = got.iter().map(|((_, _, o), _)| *o).collect();
    assert_eq!(offsets, (from..from + HELD as u64).collect::<Vec<_>>());
    for ((_, _, o), (payload, _)) in got {
        assert_eq!(payload, &format!("{prefix}{}", o - from));
    }
}

#[test]
fn a_group_holds_its_topics_ring_until_its_member_has_consumed() {
    let broker = Broker::start(&[
        "--topics",
        "tiny:1",
        "--slots",
        "16",
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
    ]);
    let got = held_by_a_stopped_member(&broker, "g", "t");
    assert_all_in_order(&got, 0, "t");
}

#[test]
fn under_spill_a_pre_created_group_holds_its_topics_ring_again_when_a_member_returns() {
    let broker = Broker::start(&[
        "--spill",
        "--topics",
        "tiny:1",
        "--slots",
        "16",
        "--groups",
        "audit",
        "--group-topics",
        "tiny",
        "--flush-interval",
        "10ms",
    ]);
    // Without a member the group does not hold the ring: this goes through.
    let sent = broker.producer(&["--topic", "tiny"], Some(keyed_lines("a", HELD)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    let count = HELD.to_string();
    let (first, _) = broker.consumer(&[
        "--group", "audit", "--topic", "tiny", "--format", "json", "--count", &count,
    ]);
    let first = first.wait_exit();
    assert_eq!(first.code(), Some(0), "{:?}", first.stderr);
    assert_all_in_order(&printed(&first.stdout), 0, "a");
    // With a member again, it holds the ring.
    let got = held_by_a_stopped_member(&broker, "audit", "b");
    assert_all_in_order(&got, HELD as u64, "b");
}

#[test]
fn a_member_killed_mid_stream_hands_its_partitions_share_to_the_other() {
    const N: usize = 3000;
    let broker = Broker::start(&[
        "--topics",
        "jobs:3",
        "--slots",
        "64",
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
    ]);
    let args = ["--group", "g", "--topic", "jobs", "--format", "json"];
    let watcher = e2e::Watcher::default();
    let mut victim = e2e::Proc::spawn(
        &e2e::bin("consumer"),
        &broker.client_args(&args),
        None,
        e2e::StdoutMode::Watched(watcher.clone()),
    );
    victim.wait_stderr("joined group g");
    let (survivor, _) = broker.consumer(&args);
    wait_members(&broker, "g", 2);
    let producer = broker.producer(&["--topic", "jobs"], Some(keyed_lines("j", N)));
    // Killed once it has printed some of its share.
    watcher.wait_until(
        "the victim received 50",
        std::time::Duration::from_millis(50),
        || match victim.stdout_lines_so_far() {
            n if n >= 50 => Ok(()),
            n => Err(format!("{n} of 50")),
        },
    );
    victim.signal(Signal::SIGKILL);
    let mut victim_out = victim.take_stdout_so_far();
    victim_out.extend(victim.wait_exit().stdout);
    assert_eq!(producer.wait_exit().code(), Some(0));
    // Everything is delivered: what the victim had not acknowledged, again to
    // the survivor.
    let victims: BTreeMap<_, _> = printed(&victim_out).into_iter().collect();
    let deadline = Instant::now() + e2e::DEADLINE;
    let survivors = loop {
        let logged: BTreeSet<(u64, u64)> = deliveries(&broker, "g")
            .iter()
            .map(|f| (f[2].parse().unwrap(), f[3].parse().unwrap()))
            .collect();
        if logged.len() >= N {
            break logged;
        }
        assert!(Instant::now() < deadline, "{} of {N} logged", logged.len());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    survivor.signal(Signal::SIGTERM);
    let survivor = survivor.wait_exit();
    assert_eq!(survivor.code(), Some(0), "{:?}", survivor.stderr);
    assert_eq!(survivors.len(), N);
    let records = persisted(&broker, "jobs", N);
    let mut all = BTreeSet::new();
    for ((_, p, o), (payload, _)) in printed(&survivor.stdout) {
        assert_eq!(records.get(&(p, o)), Some(&payload));
        all.insert((p, o));
    }
    for (_, p, o) in victims.keys() {
        all.insert((*p, *o));
    }
    assert_eq!(all.len(), N, "every record reached a member");
}

#[test]
fn deliveries_a_killed_broker_had_not_logged_are_logged_by_the_next_one() {
    const N: usize = 300;
    // Nothing is written before a 10 s flush, and a ring of 4096 slots never
    // fills: at the kill, the log holds none of these deliveries.
    let broker = Broker::start(&[
        "--topics",
        "jobs:3",
        "--groups",
        "0",
        "--flush-interval",
        "10s",
    ]);
    let watcher = e2e::Watcher::default();
    let member = e2e::Proc::spawn(
        &e2e::bin("consumer"),
        &broker.client_args(&[
            "--group", "g", "--topic", "jobs", "--id", "c1", "--format", "json",
        ]),
        None,
        e2e::StdoutMode::Watched(watcher.clone()),
    );
    let mut member = member;
    member.wait_stderr("joined group g");
    let sent = broker.producer(&["--topic", "jobs"], Some(keyed_lines("k", N)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    watcher.wait_until(
        "the member printed everything",
        std::time::Duration::from_millis(50),
        || match member.stdout_lines_so_far() {
            n if n >= N as u64 => Ok(()),
            n => Err(format!("{n} of {N}")),
        },
    );
    let mut out = member.take_stdout_so_far();
    let (data, shm) = broker.kill();
    out.extend(member.wait_exit().stdout);
    let restarted = Broker::start_with(data, shm, &["--topics", "jobs:3", "--groups", "0"]);
    let printed: BTreeSet<(u64, u64)> = printed(&out)
        .iter()
        .map(|((_, p, o), _)| (*p, *o))
        .collect();
    assert_eq!(printed.len(), N);
    // Every one has its line, once, naming the member, as a first delivery.
    let logged: Vec<(u64, u64)> = deliveries(&restarted, "g")
        .iter()
        .map(|f| {
            assert_eq!(
                (f[1].as_str(), f[6].as_str(), f[7].as_str()),
                ("jobs", "c1", "1")
            );
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    assert_eq!(logged.len(), N, "one line each");
    assert_eq!(logged.into_iter().collect::<BTreeSet<_>>(), printed);
}

#[test]
fn a_group_resumes_every_partition_where_it_left_after_the_broker_is_killed() {
    const N: usize = 300;
    let args = [
        "--topics",
        "jobs:3",
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
    ];
    let broker = Broker::start(&args);
    // The group exists (and so reads from here on) before anything is sent.
    let (first, _) = broker.consumer(&[
        "--group", "g", "--topic", "jobs", "--format", "json", "--count", "100",
    ]);
    let sent = broker.producer(&["--topic", "jobs"], Some(keyed_lines("r", N)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    let first = first.wait_exit();
    assert_eq!(first.code(), Some(0), "{:?}", first.stderr);
    // Its last member left: the group's position in each partition is saved.
    let (data, shm) = broker.kill();
    let restarted = Broker::start_with(data, shm, &args);
    let (second, _) = restarted.consumer(&[
        "--group", "g", "--topic", "jobs", "--format", "json", "--count", "200",
    ]);
    let second = second.wait_exit();
    assert_eq!(second.code(), Some(0), "{:?}", second.stderr);
    let records = persisted(&restarted, "jobs", N);
    assert_eq!(records.len(), N);
    // Between them, every record once, as sent: nothing acknowledged comes again.
    let mut seen = BTreeSet::new();
    for out in [&first.stdout, &second.stdout] {
        for ((_, p, o), (payload, _)) in printed(out) {
            assert_eq!(records.get(&(p, o)), Some(&payload));
            assert!(seen.insert((p, o)), "{p}/{o} delivered twice");
        }
    }
    assert_eq!(seen.len(), N);
}

/// `per_key` messages of each of `keys`, `<key> <batch> <i>`, keys interleaved.
fn keyed_messages(keys: &[&str], batch: &str, per_key: usize) -> Vec<(String, String)> {
    (0..per_key)
        .flat_map(|i| {
            keys.iter()
                .map(move |k| (k.to_string(), format!("{k} {batch} {i}")))
        })
        .collect()
}

/// Sends `messages` to `topic`, each with its key, from one producer per key
/// (each key's messages in order).
fn send_keyed(broker: &Broker, topic: &str, messages: &[(String, String)]) {
    let mut by_key: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (k, m) in messages {
        by_key
            .entry(k)
            .or_default()
            .extend(format!("{m}\n").into_bytes());
    }
    let producers: Vec<e2e::Proc> = by_key
        .into_iter()
        .map(|(k, lines)| broker.producer(&["--topic", topic, "-k", k], Some(lines)))
        .collect();
    for p in producers {
        let done = p.wait_exit();
        assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
    }
}

/// Waits until the consumption log has a line of `group` for each of `n`
/// distinct offsets.
fn wait_distinct(broker: &Broker, group: &str, n: usize) {
    let deadline = Instant::now() + e2e::DEADLINE;
    loop {
        let distinct: BTreeSet<(String, String)> = deliveries_so_far(broker, group)
            .into_iter()
            .map(|f| (f[2].clone(), f[3].clone()))
            .collect();
        if distinct.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} delivered to {group}",
            distinct.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Each key's messages in `out` (first deliveries) come in the order sent.
fn assert_keys_in_order(out: &[(Place, (String, u64))]) {
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for (_, (payload, attempt)) in out {
        if *attempt > 1 {
            continue;
        }
        let mut f = payload.split(' ');
        let (key, batch, i) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let i: u64 = i.parse().unwrap();
        let seen = next.entry(format!("{key} {batch}")).or_insert(0);
        assert!(i >= *seen, "{payload} after {key} {batch} {}", *seen - 1);
        *seen = i + 1;
    }
}

#[test]
fn a_partition_group_gives_each_partition_to_one_member_and_keeps_each_keys_order() {
    const PER_KEY: usize = 250;
    let keys = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let broker = groups_broker("events:4");
    let args = partition_member("events");
    let members: Vec<e2e::Proc> = (0..4).map(|_| broker.consumer(&args).0).collect();
    wait_members(&broker, "p", 4);
    let messages = keyed_messages(&keys, "b1", PER_KEY);
    send_keyed(&broker, "events", &messages);
    wait_distinct(&broker, "p", messages.len());
    let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (i, m) in members.into_iter().enumerate() {
        m.signal(Signal::SIGTERM);
        let done = m.wait_exit();
        assert_eq!(done.code(), Some(0), "{:?}", done.stderr);
        let out = printed(&done.stdout);
        assert_keys_in_order(&out);
        for ((_, p, o), (_, attempt)) in &out {
            assert_eq!(*attempt, 1);
            assert!(seen.insert((*p, *o)), "{p}/{o} twice");
            // Each partition read by one member only.
            assert_eq!(*owner.entry(*p).or_insert(i), i, "partition {p} shared");
        }
    }
    assert_eq!(seen.len(), messages.len());
    // Four partitions, four members: one each.
    assert_eq!(owner.len(), 4);
    assert_eq!(owner.values().collect::<BTreeSet<_>>().len(), 4);
}

#[test]
fn a_partition_group_rebalances_when_members_join_leave_and_die() {
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    let broker = groups_broker("jobs:4");
    let args = partition_member("jobs");
    let mut sent = 0;
    let mut send = |batch: &str| {
        let messages = keyed_messages(&keys, batch, 40);
        send_keyed(&broker, "jobs", &messages);
        sent += messages.len();
        wait_distinct(&broker, "p", sent);
    };
    let (a, _) = broker.consumer(&args);
    send("b1");
    // B joins: Kafka's range assignor gives A partitions 0 and 1, B 2 and 3.
    let (b, _) = broker.consumer(&args);
    wait_members(&broker, "p", 2);
    send("b2");
    // A leaves: B owns every partition.
    a.signal(Signal::SIGTERM);
    let a = a.wait_exit();
    assert_eq!(a.code(), Some(0), "{:?}", a.stderr);
    wait_members(&broker, "p", 1);
    send("b3");
    // C joins and is killed: its partitions come back to B, with what C had
    // not acknowledged.
    let watcher = e2e::Watcher::default();
    let mut c = e2e::Proc::spawn(
        &e2e::bin("consumer"),
        &broker.client_args(&args),
        None,
        e2e::StdoutMode::Watched(watcher.clone()),
    );
    c.wait_stderr("joined group p");
    wait_members(&broker, "p", 2);
    send("b4");
    c.signal(Signal::SIGKILL);
    let mut c_out = c.take_stdout_so_far();
    c_out.extend(c.wait_exit().stdout);
    wait_members(&broker, "p", 1);
    send("b5");
    b.signal(Signal::SIGTERM);
    let b = b.wait_exit();
    assert_eq!(b.code(), Some(0), "{:?}", b.stderr);
    let (a, b, c) = (printed(&a.stdout), printed(&b.stdout), printed(&c_out));
    for out in [&a, &b, &c] {
        assert_keys_in_order(out);
    }
    // While A and B shared the group, A read partitions 0 and 1 and B 2 and 3.
    let batch = |out: &[(Place, (String, u64))], name: &str| -> BTreeSet<u64> {
        out.iter()
            .filter(|(_, (payload, _))| payload.split(' ').nth(1) == Some(name))
            .map(|((_, p, _), _)| *p)
            .collect()
    };
    assert!(
        batch(&a, "b2").is_subset(&BTreeSet::from([0, 1])),
        "{:?}",
        batch(&a, "b2")
    );
    assert!(
        batch(&b, "b2").is_subset(&BTreeSet::from([2, 3])),
        "{:?}",
        batch(&b, "b2")
    );
    assert!(batch(&a, "b3").is_empty() && batch(&c, "b3").is_empty());
    assert!(
        batch(&c, "b4").is_subset(&BTreeSet::from([2, 3])),
        "{:?}",
        batch(&c, "b4")
    );
    // Every message reached a member; first deliveries once.
    let records = persisted(&broker, "jobs", sent);
    assert_eq!(records.len(), sent);
    let mut first = BTreeSet::new();
    let mut all = BTreeSet::new();
    for ((_, p, o), (payload, attempt)) in a.iter().chain(&b).chain(&c) {
        assert_eq!(records.get(&(*p, *o)), Some(payload));
        all.insert((*p, *o));
        if *attempt == 1 {
            assert!(first.insert((*p, *o)), "{p}/{o} first delivered twice");
        }
    }
    assert_eq!(all.len(), sent);
}

#[test]
fn a_consumer_asking_for_another_assignment_than_its_groups_is_refused() {
    let broker = Broker::start(&["--topics", "jobs:2", "--groups", "0"]);
    let (p, _) = broker.consumer(&[
        "--group",
        "p",
        "--assignment",
        "partition",
        "--topic",
        "jobs",
    ]);
    let refused = broker
        .client_env(
            "consumer",
            &[
                "--group",
                "p",
                "--assignment",
                "round-robin",
                "--topic",
                "jobs",
            ],
            &[],
        )
        .wait_exit();
    assert_eq!(refused.code(), Some(1));
    assert_eq!(
        refused.last_stderr_line(),
        "consumer: the broker refused the registration: group p uses partition assignment, not round-robin"
    );
    // Without --assignment it joins, whatever the group's.
    let (same, group) = broker.consumer(&["--group", "p", "--topic", "jobs"]);
    assert_eq!(group, "p");
    for c in [p, same] {
        c.signal(Signal::SIGTERM);
        assert_eq!(c.wait_exit().code(), Some(0));
    }
}

/// The positions of group `group` in topic `topic`'s partitions, from the state
/// file (`group <name> <topic> <partition> <position> <handed out>`), summed.
fn saved_position(data: &std::path::Path, group: &str, topic: &str) -> u64 {
    e2e::data_lines(&data.join("offsets.txt"))
        .iter()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f[0] == "group" && f[1] == group && f[2] == topic)
        .map(|f| f[4].parse::<u64>().unwrap())
        .sum()
}

/// Waits until the state file has `group` at `at_least` (summed over `topic`'s
/// partitions), as the broker saves it at least every --flush-interval.
fn wait_saved_position(broker: &Broker, group: &str, topic: &str, at_least: u64) {
    let deadline = Instant::now() + e2e::DEADLINE;
    while saved_position(&broker.data.0, group, topic) < at_least {
        assert!(Instant::now() < deadline, "the position was never saved");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn pre_created_groups_read_their_group_topics_from_the_start_and_across_a_kill() {
    let args = [
        "--topics",
        "orders:2",
        "--groups",
        "audit",
        "--group-topics",
        "orders",
        "--flush-interval",
        "10ms",
    ];
    let broker = Broker::start(&args);
    // Sent before any consumer: the group holds them from the start.
    let sent = broker.producer(&["--topic", "orders"], Some(keyed_lines("o", 100)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    // It reads orders and not default.
    let status = broker.status();
    let audit = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "audit")
        .unwrap()
        .clone();
    let read: Vec<(String, u64)> = audit["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap().to_string(),
                p["partition"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(read, [("orders".to_string(), 0), ("orders".to_string(), 1)]);
    // A consumer of orders without --group joins the group reading orders.
    let args_c = ["--topic", "orders", "--format", "json", "--count", "60"];
    let (first, group) = broker.consumer(&args_c);
    assert_eq!(group, "audit");
    let first = first.wait_exit();
    assert_eq!(first.code(), Some(0), "{:?}", first.stderr);
    // Once its position is saved, the broker is killed.
    wait_saved_position(&broker, "audit", "orders", 60);
    let (data, shm) = broker.kill();
    let restarted = Broker::start_with(data, shm, &args);
    let (second, _) =
        restarted.consumer(&["--topic", "orders", "--format", "json", "--count", "40"]);
    let second = second.wait_exit();
    assert_eq!(second.code(), Some(0), "{:?}", second.stderr);
    let mut seen = BTreeSet::new();
    for out in [&first.stdout, &second.stdout] {
        for ((_, p, o), _) in printed(out) {
            assert!(seen.insert((p, o)), "{p}/{o} twice");
        }
    }
    assert_eq!(seen.len(), 100);
}

#[test]
fn a_pre_created_group_resumes_its_other_topics_after_the_broker_is_killed() {
    let args = [
        "--topics",
        "orders:1,logs:2",
        "--groups",
        "audit",
        "--group-topics",
        "orders",
        "--flush-interval",
        "10ms",
    ];
    let broker = Broker::start(&args);
    // logs is not among its --group-topics: it reads logs from when a member
    // joins, and keeps its position there when the member leaves.
    let member = |broker: &Broker, n: &str| {
        let (member, group) = broker.consumer(&[
            "--group", "audit", "--topic", "logs", "--format", "json", "--count", n,
        ]);
        assert_eq!(group, "audit");
        member
    };
    let read = |member: e2e::Proc| {
        let out = member.wait_exit();
        assert_eq!(out.code(), Some(0), "{:?}", out.stderr);
        printed(&out.stdout)
    };
    let reading = member(&broker, "60");
    let sent = broker.producer(&["--topic", "logs"], Some(keyed_lines("l", 100)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    let first = read(reading);
    wait_saved_position(&broker, "audit", "logs", 60);
    let (data, shm) = broker.kill();
    let restarted = Broker::start_with(data, shm, &args);
    // The rest, and nothing it had read again.
    let second = read(member(&restarted, "40"));
    let mut seen = BTreeSet::new();
    for ((_, p, o), (_, attempt)) in first.iter().chain(&second) {
        assert!(seen.insert((*p, *o)), "{p}/{o} twice");
        assert_eq!(*attempt, 1, "{p}/{o}");
    }
    assert_eq!(seen.len(), 100);
}

#[test]
fn a_pre_created_group_not_reading_default_keeps_its_position_there_across_a_restart() {
    let args = [
        "--topics",
        "orders:1",
        "--groups",
        "g1",
        "--group-topics",
        "orders",
        "--flush-interval",
        "10ms",
    ];
    let send = |broker: &Broker, lines: &[&str]| {
        assert_eq!(broker.producer(lines, None).wait_exit().code(), Some(0));
    };
    let read = |broker: &Broker, n: &str| {
        let (member, group) = broker.consumer(&["--group", "g1", "--count", n]);
        assert_eq!(group, "g1");
        member
    };
    let broker = Broker::start(&args);
    let first = read(&broker, "2");
    send(&broker, &["a0", "a1"]);
    assert_eq!(first.wait_exit().stdout_text(), "a0\na1\n");
    send(&broker, &["b0", "b1"]);
    wait_saved_position(&broker, "g1", "default", 2);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    let restarted = Broker::start_in(data, &args);
    send(&restarted, &["c0"]);
    // It resumes where it was in default, not at the end.
    let second = read(&restarted, "3").wait_exit();
    assert_eq!(second.stdout_text(), "b0\nb1\nc0\n", "{:?}", second.stderr);
}

#[test]
fn reset_offsets_moves_a_group_in_every_partition_of_a_topic() {
    let broker = groups_broker("orders:2");
    let args = [
        "--group", "g", "--topic", "orders", "--format", "json", "--count", "100",
    ];
    let (first, _) = broker.consumer(&args);
    let sent = broker.producer(&["--topic", "orders"], Some(keyed_lines("x", 100)));
    assert_eq!(sent.wait_exit().code(), Some(0));
    let first = first.wait_exit();
    assert_eq!(first.code(), Some(0), "{:?}", first.stderr);
    let reset = broker.subcommand(
        "reset-offsets",
        &["--group", "g", "--topic", "orders", "--to", "earliest"],
    );
    assert_eq!(reset.code(), Some(0), "{:?}", reset.stderr);
    assert_eq!(
        reset.stdout_text(),
        "group g now at offset 0 in orders/0\ngroup g now at offset 0 in orders/1\n"
    );
    // Everything again, as first deliveries.
    let (again, _) = broker.consumer(&args);
    let again = again.wait_exit();
    assert_eq!(again.code(), Some(0), "{:?}", again.stderr);
    let key = |out: &[u8]| {
        let mut v: Vec<(Place, (String, u64))> = printed(out);
        v.sort();
        v
    };
    assert_eq!(key(&again.stdout), key(&first.stdout));
    // An unknown topic is refused; a bad name is a usage error.
    let unknown = broker.subcommand(
        "reset-offsets",
        &["--group", "g", "--topic", "nope", "--to", "earliest"],
    );
    assert_eq!(unknown.code(), Some(1));
    assert_eq!(
        unknown.last_stderr_line(),
        "broker reset-offsets: unknown topic nope"
    );
    let bad = broker.subcommand(
        "reset-offsets",
        &["--group", "g", "--topic", "no/pe", "--to", "earliest"],
    );
    assert_eq!(bad.code(), Some(2));
}

/// Sends the lines of `text` to `topic`, from one producer.
fn send_lines(broker: &Broker, topic: &str, text: &str) {
    let p = broker.producer(&["--topic", topic], Some(text.as_bytes().to_vec()));
    assert_eq!(p.wait_exit().code(), Some(0));
}

/// A group member whose stdout the test watches line by line. With `fault`
/// (`consumer-printed:<n>` or `consumer-printed:<n>:stop`), it kills or stops
/// itself once it has printed n messages, before it acknowledges them: a
/// process that dies, or stalls, handling a message.
fn watched_member(
    broker: &Broker,
    args: &[&str],
    fault: Option<String>,
) -> (e2e::Proc, e2e::Watcher) {
    let watcher = e2e::Watcher::default();
    let env: Vec<(&str, &str)> = fault
        .iter()
        .map(|f| ("MINIKAFKA_FAULT", f.as_str()))
        .collect();
    let mut p = e2e::Proc::spawn_env(
        &e2e::bin("consumer"),
        &broker.client_args(args),
        None,
        e2e::StdoutMode::Watched(watcher.clone()),
        &env,
    );
    p.wait_stderr("joined group ");
    (p, watcher)
}

/// Waits until `member` has printed `n` lines in all, and returns what it
/// printed since the last call.
fn printed_so_far(member: &e2e::Proc, watcher: &e2e::Watcher, n: u64) -> Vec<u8> {
    watcher.wait_until(
        "the member printed",
        std::time::Duration::from_millis(50),
        || match member.stdout_lines_so_far() {
            seen if seen >= n => Ok(()),
            seen => Err(format!("{seen} of {n}")),
        },
    );
    member.take_stdout_so_far()
}

#[test]
fn a_message_its_consumers_die_on_goes_to_the_dead_letter_topic_after_max_attempts() {
    let broker = Broker::start(&[
        "--topics",
        "jobs:1",
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
        "--max-attempts",
        "3",
    ]);
    let send = |text: &str| send_lines(&broker, "jobs", text);
    let member = |n: usize, dies_at: Option<u64>| {
        let id = format!("worker-{n}");
        let args = [
            "--group", "g", "--topic", "jobs", "--id", &id, "--format", "json",
        ];
        let fault = dies_at.map(|n| format!("consumer-printed:{n}"));
        watched_member(&broker, &args, fault)
    };
    // The first worker handles three messages, then dies on the poison one.
    let (first, watcher) = member(1, Some(4));
    send("ok 0\nok 1\nok 2\n");
    printed_so_far(&first, &watcher, 3);
    send("poison\n");
    // What it printed last, once it died.
    let died = |worker: e2e::Proc| {
        let mut out = worker.take_stdout_so_far();
        let end = worker.wait_exit();
        assert_eq!(end.code(), None, "killed: {:?}", end.stderr);
        out.extend(end.stdout);
        printed(&out)
    };
    assert_eq!(
        died(first),
        [(("jobs".to_string(), 0, 3), ("poison".to_string(), 1))]
    );
    // Each restarted worker is handed it again, and dies on it too.
    for attempt in 2..=3 {
        let (worker, _) = member(attempt, Some(1));
        assert_eq!(
            died(worker),
            [(
                ("jobs".to_string(), 0, 3),
                ("poison".to_string(), attempt as u64)
            )]
        );
    }
    // Three deliveries were allowed: the next worker goes on past it.
    let (last, watcher) = member(4, None);
    send("ok 4\n");
    let out = printed_so_far(&last, &watcher, 1);
    assert_eq!(
        printed(&out),
        [(("jobs".to_string(), 0, 4), ("ok 4".to_string(), 1))]
    );
    // Logged: three deliveries to the workers, then the dead letter (consumer -),
    // once the broker has created jobs.dlq and published it there.
    wait_delivered(&broker, "g", 8);
    last.signal(Signal::SIGTERM);
    assert_eq!(last.wait_exit().code(), Some(0));
    // The poison message is in jobs.dlq, from dlq:g.
    let (reader, _) = broker.reader(
        &[
            "--topic", "jobs.dlq", "--from", "earliest", "--count", "1", "--format", "json",
        ],
        e2e::StdoutMode::Collect,
    );
    let read = reader.wait_exit();
    assert_eq!(read.code(), Some(0), "{:?}", read.stderr);
    let dead = &json_lines(&read.stdout)[0];
    assert_eq!(payload_of(dead), b"poison");
    assert_eq!(dead["producer"], "dlq:g");
    let poison: Vec<(String, String)> = deliveries(&broker, "g")
        .into_iter()
        .filter(|f| f[3] == "3")
        .map(|f| (f[6].clone(), f[7].clone()))
        .collect();
    assert_eq!(
        poison,
        [
            ("worker-1".to_string(), "1".to_string()),
            ("worker-2".to_string(), "2".to_string()),
            ("worker-3".to_string(), "3".to_string()),
            ("-".to_string(), "3".to_string()),
        ]
    );
}

#[test]
fn under_spill_attempts_add_up_across_a_pre_created_groups_last_members() {
    // Under --fsync too, where the broker's own send of a dead letter must not
    // wait for the disk.
    let broker = Broker::start(&[
        "--fsync",
        "--spill",
        "--topics",
        "jobs:1",
        "--groups",
        "g",
        "--group-topics",
        "jobs",
        "--max-attempts",
        "2",
        "--flush-interval",
        "10ms",
    ]);
    let send = |text: &str| send_lines(&broker, "jobs", text);
    send("poison\n");
    // Each lone member dies on it, before acknowledging it; the group stops
    // holding the ring each time, and counts on.
    for attempt in 1..=2 {
        let args = ["--group", "g", "--topic", "jobs", "--format", "json"];
        let (worker, _) = watched_member(&broker, &args, Some("consumer-printed:1".into()));
        let end = worker.wait_exit();
        assert_eq!(end.code(), None, "killed: {:?}", end.stderr);
        assert_eq!(
            printed(&end.stdout),
            [(("jobs".to_string(), 0, 0), ("poison".to_string(), attempt))]
        );
    }
    // Two deliveries were allowed: the next member goes on past it.
    send("ok 1\n");
    let (last, _) = broker.consumer(&[
        "--group", "g", "--topic", "jobs", "--format", "json", "--count", "1",
    ]);
    let last = last.wait_exit();
    assert_eq!(last.code(), Some(0), "{:?}", last.stderr);
    assert_eq!(
        printed(&last.stdout),
        [(("jobs".to_string(), 0, 1), ("ok 1".to_string(), 1))]
    );
    let dead = wait_delivered(&broker, "g", 4)
        .into_iter()
        .filter(|f| f[6] == "-")
        .map(|f| (f[3].clone(), f[7].clone()))
        .collect::<Vec<_>>();
    assert_eq!(dead, [("0".to_string(), "2".to_string())]);
}

#[test]
fn a_stalled_owner_is_evicted_and_its_partitions_go_to_the_other_member_unacknowledged_first() {
    let broker = Broker::start(&[
        "--topics",
        "jobs:2",
        "--groups",
        "0",
        "--flush-interval",
        "10ms",
        "--session-timeout",
        "2s",
    ]);
    let args = partition_member("jobs");
    // The first member stops itself once it has printed 5 messages, before it
    // acknowledges them: a process stalled while handling a message.
    let fault = Some("consumer-printed:5:stop".to_string());
    let (mut stalled, watcher) = watched_member(&broker, &args, fault);
    let (other, _) = broker.consumer(&args);
    // Kafka's range assignor: the first member owns partition 0, the other 1.
    wait_members(&broker, "p", 2);
    // One keyed producer per partition, so that each member gets messages.
    let keys: Vec<String> = (0..)
        .map(|i| format!("key-{i}"))
        .scan([false; 2], |seen, k| {
            let p = partitioner_of(&k);
            let new = !seen[p];
            seen[p] = true;
            Some((k, new))
        })
        .filter(|(_, new)| *new)
        .map(|(k, _)| k)
        .take(2)
        .collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let messages = keyed_messages(&key_refs, "b1", 50);
    send_keyed(&broker, "jobs", &messages);
    stalled.wait_until_stopped("the first member never stalled");
    let held = printed_so_far(&stalled, &watcher, 5);
    // Evicted after the session timeout: the other member owns both
    // partitions, and consumes everything.
    broker.wait_for_status("the stalled member evicted and p drained", |s| {
        s["groups"].as_array().unwrap().iter().any(|g| {
            g["name"] == "p"
                && e2e::member_ids(g).len() == 1
                && g["members"][0]["partitions"] == serde_json::json!(["jobs/0", "jobs/1"])
                && g["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["position"] == 50)
        })
    });
    stalled.signal(Signal::SIGCONT);
    let st = stalled.wait_exit();
    assert_eq!(st.code(), Some(1));
    assert_eq!(st.last_stderr_line(), "consumer: evicted from group p");
    other.signal(Signal::SIGTERM);
    let o = other.wait_exit();
    assert_eq!(o.code(), Some(0), "{:?}", o.stderr);
    let got = printed(&o.stdout);
    assert_keys_in_order(&got);
    // What the stalled member was handed and had not acknowledged (its last
    // batch, the last line it printed among it) came again, as a second
    // attempt.
    let held = printed(&held);
    let (place, (payload, _)) = held.last().unwrap();
    let again = got.iter().find(|(p, _)| p == place);
    assert_eq!(
        again.map(|(_, (m, a))| (m.as_str(), *a >= 2)),
        Some((payload.as_str(), true))
    );
    let mut all: BTreeSet<(u64, u64)> = got.iter().map(|((_, p, o), _)| (*p, *o)).collect();
    all.extend(held.iter().map(|((_, p, o), _)| (*p, *o)));
    assert_eq!(all.len(), messages.len());
}

#[test]
fn a_dead_owners_unacknowledged_messages_all_come_before_the_next_ones_of_their_keys() {
    // More than the redelivery table holds (256 entries): the rest waits in the
    // broker, and the new owner must wait for it too.
    const HELD_BY_DEAD: usize = 1000;
    let broker = Broker::start(&[
        "--topics",
        "jobs:1",
        "--slots",
        "4096",
        "--groups",
        "p",
        "--assignment",
        "partition",
        "--group-topics",
        "jobs",
        "--flush-interval",
        "10ms",
    ]);
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];
    let messages = keyed_messages(&keys, "b", 2 * HELD_BY_DEAD / keys.len());
    send_keyed(&broker, "jobs", &messages);
    // The owner takes a thousand at once, prints them and stops before it
    // acknowledges them.
    let batch = HELD_BY_DEAD.to_string();
    let args = ["--group", "p", "--topic", "jobs", "--format", "json"];
    let mut owner_args = args.to_vec();
    owner_args.extend(["--max-poll-records", &batch]);
    let fault = Some("consumer-printed:1:stop".to_string());
    let (mut owner, watcher) = watched_member(&broker, &owner_args, fault);
    owner.wait_until_stopped("the owner never stopped");
    let held = printed(&printed_so_far(&owner, &watcher, HELD_BY_DEAD as u64));
    assert_eq!(held.len(), HELD_BY_DEAD);
    let (next, _) = broker.consumer(&args);
    wait_members(&broker, "p", 2);
    owner.signal(Signal::SIGKILL);
    owner.wait_exit();
    // The other member owns the partition now: it gets everything, each key's
    // messages in order, the dead owner's again first.
    wait_distinct(&broker, "p", messages.len());
    next.signal(Signal::SIGTERM);
    let got = next.wait_exit();
    assert_eq!(got.code(), Some(0), "{:?}", got.stderr);
    let got = printed(&got.stdout);
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, _, o), (payload, attempt)) in &got {
        let mut f = payload.split(' ');
        let (key, i) = (f.next().unwrap(), f.nth(1).unwrap().parse::<u64>().unwrap());
        if let Some(before) = last.insert(key, i) {
            assert!(
                i > before,
                "{payload} (offset {o}, attempt {attempt}) after {key} b {before}"
            );
        }
        let again = (*o as usize) < HELD_BY_DEAD;
        assert_eq!(*attempt >= 2, again, "{payload} at offset {o}");
    }
    assert_eq!(got.len(), messages.len());
}

/// The partition Kafka's partitioner gives `key` in a 2-partition topic.
fn partitioner_of(key: &str) -> usize {
    partitioner::partition_for_key(key.as_bytes(), 2) as usize
}

#[test]
fn under_max_attempts_every_topic_has_room_for_its_dead_letter_topic() {
    // The longest name with room for ".dlq" after it, and one longer.
    let fits = "t".repeat(245);
    let too_long = "t".repeat(246);
    let data = e2e::TempDir::new("dlq-room");
    // Usage errors, before anything is made.
    let usage = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        e2e::Proc::spawn(&e2e::bin("broker"), &args, None, e2e::StdoutMode::Collect).wait_exit()
    };
    let refused = usage(&["--max-attempts", "3", "--topics", &too_long]);
    assert_eq!(refused.code(), Some(2));
    assert_eq!(
        refused.last_stderr_line(),
        format!("broker: --max-attempts: topic name {too_long} is too long to have a dead-letter topic under --max-attempts: {too_long}.dlq would be over 249 characters")
    );
    let refused = usage(&["--max-attempts", "3", "--max-topics", "1"]);
    assert_eq!(refused.code(), Some(2));
    assert_eq!(
        refused.last_stderr_line(),
        "broker: --max-attempts: 2 topics would exist, counting a dead-letter topic for each (--max-attempts), over --max-topics 1"
    );
    // default and default.dlq, then a topic and its own: the most four allow.
    let broker = Broker::start_in(data, &["--max-attempts", "3", "--max-topics", "4"]);
    let created = broker.subcommand("create-topic", &[&fits]);
    assert_eq!(created.code(), Some(0), "{:?}", created.stderr);
    let full = broker.subcommand("create-topic", &["b"]);
    assert_eq!(full.code(), Some(1));
    assert_eq!(
        full.stderr,
        ["broker create-topic: 6 topics would exist, counting a dead-letter topic for each (--max-attempts), over --max-topics 4"]
    );
    let long = broker.subcommand("create-topic", &[&too_long]);
    assert_eq!(long.code(), Some(1));
    assert!(
        long.stderr[0].contains("too long to have a dead-letter topic"),
        "{:?}",
        long.stderr
    );
    // A dead-letter topic has none of its own: it fits.
    let dlq = broker.subcommand("create-topic", &[&format!("{fits}.dlq")]);
    assert_eq!(dlq.code(), Some(0), "{:?}", dlq.stderr);
}

#[test]
fn group_topics_must_exist_and_be_well_named() {
    let data = e2e::TempDir::new("group-topics");
    let refused = Broker::refused(&data, &["--group-topics", "nope"]);
    assert_eq!(
        refused.last_stderr_line(),
        "broker: --group-topics: unknown topic nope"
    );
    // A topic created in the same command is there to read.
    let broker = Broker::start_in(
        data,
        &["--topics", "nope:2", "--group-topics", "nope,default"],
    );
    let status = broker.status();
    let read: Vec<&str> = status["groups"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["topic"].as_str().unwrap())
        .collect();
    assert_eq!(read, ["default", "nope", "nope"]);
}

#[test]
fn a_group_killed_with_its_broker_between_state_saves_resumes_past_what_it_acknowledged() {
    // The state file is saved only at the group's departure here: the region
    // alone knows how far the group got after that.
    let args = [
        "--topics",
        "jobs:1",
        "--groups",
        "0",
        "--flush-interval",
        "10s",
    ];
    let broker = Broker::start(&args);
    let member = |id: &str| {
        let args = [
            "--group", "g", "--topic", "jobs", "--id", id, "--format", "json",
        ];
        watched_member(&broker, &args, None)
    };
    let (first, watcher) = member("first");
    send_lines(
        &broker,
        "jobs",
        &(0..10).map(|i| format!("a {i}\n")).collect::<String>(),
    );
    printed_so_far(&first, &watcher, 10);
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0));
    // Its last member left: saved at 10. The next member goes on from there.
    let (second, watcher) = member("second");
    send_lines(
        &broker,
        "jobs",
        &(10..110).map(|i| format!("b {i}\n")).collect::<String>(),
    );
    let got = printed(&printed_so_far(&second, &watcher, 100));
    assert_eq!(got.first().map(|g| g.0 .2), Some(10));
    // Killed with the member still in: the state file still says 10.
    let (data, shm) = broker.kill();
    assert_eq!(second.wait_exit().code(), Some(1));
    let restarted = Broker::start_with(data, shm, &args);
    let (third, watcher) = {
        let broker = &restarted;
        let args = [
            "--group", "g", "--topic", "jobs", "--id", "third", "--format", "json",
        ];
        watched_member(broker, &args, None)
    };
    send_lines(&restarted, "jobs", "c 110\n");
    let out = printed(&printed_so_far(&third, &watcher, 1));
    // Only what the second member may not have acknowledged (its last message,
    // acknowledged by the poll after it) can come again; then the new one.
    let offsets: Vec<u64> = out.iter().map(|g| g.0 .2).collect();
    assert!(
        offsets[0] >= 109,
        "{offsets:?}: acknowledged messages came again"
    );
    third.signal(Signal::SIGTERM);
    let rest = third.wait_exit();
    let mut all = offsets;
    all.extend(printed(&rest.stdout).iter().map(|g| g.0 .2));
    assert_eq!(all.last(), Some(&110), "{all:?}");
    restarted.stop();
}
