//! SPEC §3 and §7 failure promises, with real processes killed at chosen points:
//! nothing whose send returned is lost, nobody is wedged.

use std::collections::BTreeSet;
use std::time::Instant;

use audit_format::records::{DeliveryRecord, PersistedRecord, LOG_FILE, PERSIST_FILE};
use e2e::{json_lines, Broker, Proc, TempDir, DEADLINE};
use nix::sys::signal::Signal;

fn offsets_of(stdout: &[u8]) -> Vec<u64> {
    json_lines(stdout)
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect()
}

fn persisted_offsets(dir: &TempDir) -> Vec<u64> {
    e2e::data_lines(&dir.0.join(PERSIST_FILE))
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap().offset)
        .collect()
}

fn log(dir: &TempDir) -> Vec<DeliveryRecord> {
    e2e::data_lines(&dir.0.join(LOG_FILE))
        .iter()
        .map(|l| DeliveryRecord::parse(l).unwrap())
        .collect()
}

fn killed(f: &e2e::Finished) -> bool {
    use std::os::unix::process::ExitStatusExt;
    f.status.signal() == Some(9)
}

/// A producer sending "victim 0".."victim 99" that kills itself at `fault`.
fn victim_producer(broker: &Broker, fault: &str) -> e2e::Finished {
    let input: String = (0..100).map(|i| format!("victim {i}\n")).collect();
    let victim = Proc::spawn_env(
        &e2e::bin("producer"),
        &broker.client_args(&["--id", "victim"]),
        Some(input.into_bytes()),
        e2e::StdoutMode::Collect,
        &[("MINIKAFKA_FAULT", fault)],
    )
    .wait_exit();
    assert!(killed(&victim), "{fault} killed it: {:?}", victim.status);
    victim
}

#[test]
fn a_producer_killed_holding_the_lock_with_a_reserved_record_wedges_nobody() {
    // A small ring: the rest only flows if the dead producer's reservation is freed.
    let broker = Broker::start(&["--groups", "1", "--slots", "32"]);
    let (consumer, _) = broker.consumer(&["--count", "549", "--format", "json"]);
    victim_producer(&broker, "send-reserved:50");
    let input: String = (0..500).map(|i| format!("after {i}\n")).collect();
    let next = broker
        .producer(&["--id", "next"], Some(input.into_bytes()))
        .wait_exit();
    assert_eq!(next.code(), Some(0), "{:?}", next.stderr);
    let got = json_lines(&consumer.wait_exit().stdout);
    let payloads: Vec<String> = got
        .iter()
        .map(|v| v["payload"].as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = (0..49).map(|i| format!("victim {i}")).collect();
    expected.extend((0..500).map(|i| format!("after {i}")));
    assert_eq!(
        payloads, expected,
        "no torn or lost record, no gap in offsets"
    );
    let offsets: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..549).collect::<Vec<_>>());
}

#[test]
fn a_producer_killed_just_after_its_commit_point_has_its_message_delivered() {
    let broker = Broker::start(&["--groups", "1", "--slots", "32"]);
    let (consumer, _) = broker.consumer(&["--count", "60", "--format", "json"]);
    victim_producer(&broker, "send-committed:50");
    // The next locker repairs the commit the dead producer left half-published.
    let next = broker.producer(
        &[
            "--id", "next", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
        ],
        None,
    );
    assert_eq!(next.wait_exit().code(), Some(0));
    let got = json_lines(&consumer.wait_exit().stdout);
    let payloads: Vec<&str> = got.iter().map(|v| v["payload"].as_str().unwrap()).collect();
    assert_eq!(
        payloads[49], "victim 49",
        "committed before the death: delivered"
    );
    assert_eq!(payloads[50], "a");
    let offsets: Vec<u64> = got.iter().map(|v| v["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..60).collect::<Vec<_>>());
}

#[test]
fn a_consumer_killed_holding_messages_has_them_redelivered_to_its_group() {
    let broker = Broker::start(&["--groups", "1"]);
    // It dies right after taking its second batch, before printing it.
    let victim = broker.client_env(
        "consumer",
        &["--id", "victim", "--format", "json"],
        &[("MINIKAFKA_FAULT", "poll-claimed:2")],
    );
    let mut victim = victim;
    victim.wait_stderr("joined group");
    let (survivor, _) = broker.consumer(&["--id", "survivor", "--format", "json"]);
    let input: String = (0..200).map(|i| format!("m{i}\n")).collect();
    assert_eq!(
        broker
            .producer(&[], Some(input.into_bytes()))
            .wait_exit()
            .code(),
        Some(0)
    );
    let v = victim.wait_exit();
    assert!(killed(&v));
    let victim_got = offsets_of(&v.stdout);
    assert!(!victim_got.is_empty(), "it printed its first batch");
    // The survivor gets everything else, including what the victim held.
    broker.wait_for_status("group caught up", |s| {
        s["groups"][0]["partitions"][0]["position"] == 200
    });
    survivor.signal(Signal::SIGTERM);
    let s = survivor.wait_exit();
    assert_eq!(s.code(), Some(0));
    let survivor_got = offsets_of(&s.stdout);
    let all: BTreeSet<u64> = victim_got.iter().chain(&survivor_got).copied().collect();
    assert_eq!(
        all,
        (0..200).collect(),
        "every message delivered at least once"
    );
    assert_eq!(
        victim_got.len() + survivor_got.len(),
        200,
        "no duplicate: what the victim held was never printed"
    );
    // A fresh client works afterwards.
    let (fresh, _) = broker.consumer(&["--id", "fresh", "--count", "1"]);
    assert_eq!(
        broker.producer(&["later"], None).wait_exit().code(),
        Some(0)
    );
    assert_eq!(fresh.wait_exit().stdout_text(), "later\n");
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    let log = log(&data);
    // Exactly what was handed to the victim and not printed came back, once each,
    // to the survivor, as attempt 2.
    let handed_to_victim: BTreeSet<u64> = log
        .iter()
        .filter(|d| d.consumer == "victim" && d.attempt == 1)
        .map(|d| d.offset)
        .collect();
    let held: BTreeSet<u64> = handed_to_victim
        .iter()
        .filter(|o| !victim_got.contains(o))
        .copied()
        .collect();
    assert!(!held.is_empty(), "it died holding a batch");
    let retries: Vec<&DeliveryRecord> = log.iter().filter(|d| d.attempt == 2).collect();
    assert!(
        retries.iter().all(|d| d.consumer == "survivor"),
        "{retries:?}"
    );
    let retried: Vec<u64> = retries.iter().map(|d| d.offset).collect();
    assert_eq!(retried.len(), held.len(), "each redelivered once");
    assert_eq!(retried.into_iter().collect::<BTreeSet<_>>(), held);
    assert!(log.iter().all(|d| d.attempt <= 2));
}

#[test]
fn a_stalled_consumer_is_evicted_and_its_group_carries_on() {
    // Long enough that the busy worker is never evicted on a loaded machine.
    let broker = Broker::start(&["--groups", "1", "--session-timeout", "2s"]);
    let (stalled, _) = broker.consumer(&["--id", "stalled", "--format", "json"]);
    let (worker, _) = broker.consumer(&["--id", "worker", "--format", "json"]);
    stalled.signal(Signal::SIGSTOP);
    let started = Instant::now();
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    assert_eq!(
        broker
            .producer(&[], Some(input.into_bytes()))
            .wait_exit()
            .code(),
        Some(0)
    );
    let s = broker.wait_for_status("eviction", |s| {
        s["groups"][0]["partitions"][0]["position"] == 100
            && e2e::member_ids(&s["groups"][0]) == ["worker"]
    });
    println!("group drained {:?} after the stall", started.elapsed());
    assert_eq!(s["clients"]["consumers"], 1);
    stalled.signal(Signal::SIGCONT);
    let st = stalled.wait_exit();
    assert_eq!(st.code(), Some(1));
    assert_eq!(
        st.last_stderr_line(),
        "consumer: evicted from group group-1"
    );
    worker.signal(Signal::SIGTERM);
    let w = worker.wait_exit();
    assert_eq!(w.code(), Some(0));
    // Its own share first, then what had been handed to the stalled one.
    let mut got = offsets_of(&w.stdout);
    got.sort_unstable();
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "each message once");
}

#[test]
fn a_killed_broker_stops_its_clients_and_a_restart_loses_nothing() {
    // An hour-long flush interval and a ring large enough that 1,000 records are no
    // pressure: nothing reaches the file before the kill, so the restart must
    // recover every record from the dead broker's region.
    let broker = Broker::start(&[
        "--groups",
        "1",
        "--flush-interval",
        "1h",
        "--slots",
        "16384",
    ]);
    let (first, _) = broker.consumer(&["--count", "300", "--format", "json"]);
    let input: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    assert_eq!(
        broker
            .producer(&["--id", "p"], Some(input.into_bytes()))
            .wait_exit()
            .code(),
        Some(0)
    );
    assert_eq!(
        offsets_of(&first.wait_exit().stdout),
        (0..300).collect::<Vec<_>>()
    );
    let (bystander, _) = broker.consumer(&["--group", "side"]);
    let (data, shm) = broker.kill();
    let b = bystander.wait_exit();
    assert_eq!(b.code(), Some(1));
    assert_eq!(b.last_stderr_line(), "consumer: broker stopped");
    assert!(
        persisted_offsets(&data).is_empty(),
        "nothing was flushed before the kill"
    );

    let broker = Broker::start_with(data, shm, &["--groups", "1", "--slots", "16384"]);
    let (second, _) = broker.consumer(&["--count", "700", "--format", "json"]);
    assert_eq!(
        offsets_of(&second.wait_exit().stdout),
        (300..1000).collect::<Vec<_>>()
    );
    assert_eq!(
        broker.producer(&["after"], None).wait_exit().code(),
        Some(0)
    );
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("recovered the region of a broker that died")),
        "{:?}",
        stopped.stderr
    );
    assert_eq!(
        persisted_offsets(&data),
        (0..1001).collect::<Vec<_>>(),
        "every offset once"
    );
}

#[test]
fn a_consumer_holding_a_message_when_the_broker_dies_gets_it_again_after_the_restart() {
    let broker = Broker::start(&["--groups", "1"]);
    let mut holder = consumer::Consumer::connect(&broker.addr, Some("holder"), None).unwrap();
    assert_eq!(
        broker
            .producer(&["one", "two", "three"], None)
            .wait_exit()
            .code(),
        Some(0)
    );
    assert_eq!(holder.poll(Some(DEADLINE)).unwrap().unwrap().offset, 0);
    assert_eq!(holder.poll(Some(DEADLINE)).unwrap().unwrap().offset, 1);
    let (data, shm) = broker.kill();
    // Not polled again: polling would acknowledge offset 1.
    drop(holder);
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    let (again, _) = broker.consumer(&["--id", "again", "--count", "2"]);
    // Offset 0 was acknowledged (by the poll that returned 1); 1 was in flight.
    assert_eq!(again.wait_exit().stdout_text(), "two\nthree\n");
    let (_, data) = broker.stop_keeping_data();
    let after: Vec<(u64, u32)> = log(&data)
        .iter()
        .filter(|d| d.consumer == "again")
        .map(|d| (d.offset, d.attempt))
        .collect();
    assert_eq!(after, vec![(1, 2), (2, 1)]);
}

#[test]
fn garbage_under_the_region_name_is_replaced() {
    let data = TempDir::new("garbage");
    let shm = format!("/{}", e2e::unique("mk-e2e-garbage"));
    std::fs::write(format!("/dev/shm{shm}"), vec![0xAB; 10_000]).unwrap();
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    let (c, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(broker.producer(&["fine"], None).wait_exit().code(), Some(0));
    assert_eq!(c.wait_exit().stdout_text(), "fine\n");
    let stopped = broker.stop();
    assert!(
        stopped
            .stderr
            .iter()
            .any(|l| l.contains("replaced an unusable region")),
        "{:?}",
        stopped.stderr
    );
}

#[test]
fn a_region_whose_broker_is_alive_is_never_touched() {
    let first = Broker::start(&["--groups", "1"]);
    let other = TempDir::new("other");
    let p = Broker::spawn(&other, &first.shm, &[]).wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(p.stderr.len(), 1, "{:?}", p.stderr);
    assert!(
        p.stderr[0].contains("belongs to a running broker"),
        "{:?}",
        p.stderr
    );
    let (c, _) = first.consumer(&["--count", "1"]);
    assert_eq!(
        first.producer(&["still mine"], None).wait_exit().code(),
        Some(0)
    );
    assert_eq!(c.wait_exit().stdout_text(), "still mine\n");
}

#[test]
fn a_dead_brokers_region_of_another_geometry_with_messages_is_refused_not_discarded() {
    let broker = Broker::start(&["--groups", "1", "--slots", "64", "--flush-interval", "1h"]);
    assert_eq!(
        broker.producer(&["precious"], None).wait_exit().code(),
        Some(0)
    );
    let (data, shm) = broker.kill();
    let p = Broker::spawn(&data, &shm, &["--groups", "1"]).wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(p.stderr.len(), 1, "{:?}", p.stderr);
    assert!(
        p.stderr[0].contains("--slots 64"),
        "names the geometry: {:?}",
        p.stderr
    );
    // With that geometry, it is recovered.
    let broker = Broker::start_with(data, shm, &["--groups", "1", "--slots", "64"]);
    let (c, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(c.wait_exit().stdout_text(), "precious\n");
}

#[test]
fn registration_needs_the_regions_token_and_a_refusal_changes_nothing() {
    use control_protocol::frame::{check, MAX_REPLY_LEN};
    use control_protocol::{ControlFrame, Role};
    use std::io::{Read, Write};
    let broker = Broker::start(&["--groups", "1"]);
    let mut s = std::net::TcpStream::connect(&broker.addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let read_frame = |s: &mut std::net::TcpStream| {
        let mut buf = Vec::new();
        loop {
            if let Ok(Some(n)) = check(&buf, MAX_REPLY_LEN) {
                return ControlFrame::decode(&buf[..n]).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed without a reply");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    s.write_all(
        &ControlFrame::Hello {
            role: Role::Consumer,
        }
        .encode(),
    )
    .unwrap();
    assert!(matches!(read_frame(&mut s), ControlFrame::Welcome { .. }));
    let register = ControlFrame::Register {
        role: Role::Consumer,
        id: "intruder".into(),
        group: Some("stolen".into()),
        pid: 1,
        token: [1, 2],
        topics: Vec::new(),
        assignment: None,
    };
    s.write_all(&register.encode()).unwrap();
    match read_frame(&mut s) {
        ControlFrame::Refused { message, .. } => {
            assert!(message.contains("access token"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let st = broker.status();
    assert_eq!(st["clients"]["consumers"], 0);
    let groups: Vec<&str> = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, vec!["group-1"], "no group was created");
}

#[test]
fn the_region_is_owner_only_and_the_port_is_on_loopback_by_default() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start(&["--groups", "1"]);
    let mode = std::fs::metadata(format!("/dev/shm{}", broker.shm))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(broker.addr.starts_with("127.0.0.1:"), "{}", broker.addr);
}

#[test]
fn scribbling_over_the_region_fails_operations_cleanly_and_never_crashes_the_broker() {
    let broker = Broker::start(&["--groups", "1"]);
    let (c, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(
        broker.producer(&["before"], None).wait_exit().code(),
        Some(0)
    );
    assert_eq!(c.wait_exit().code(), Some(0));
    let region = shm_layout::Region::open(&broker.shm).unwrap();
    {
        use std::sync::atomic::Ordering::Relaxed;
        let h = region.header();
        h.producer.head.store(u64::MAX / 3, Relaxed);
        for o in 0..64 {
            let e = region.index_entry(o);
            e.stamp.store(o + 1, Relaxed);
            e.first_slot.store(u64::MAX - o, Relaxed);
            e.payload_len.store(u32::MAX, Relaxed);
        }
        h.producer.next_offset.store(40, Relaxed);
        for g in 0..4 {
            region.group(g).unwrap().turn.turn.store(u64::MAX, Relaxed);
        }
    }
    let p = broker.producer(&["after"], None).wait_exit();
    assert_eq!(p.code(), Some(1));
    assert!(p.last_stderr_line().contains("corrupt"), "{:?}", p.stderr);
    // The broker still answers and stops at once. It cannot tell which of the
    // records the region claims are real, so it leaves the region, says so, and
    // exits 1.
    let s = broker.status();
    assert!(s["ring"].is_object());
    let (stopped, data, shm) = broker.stop_leaving_region();
    assert_eq!(stopped.code(), Some(1), "{:?}", stopped.stderr);
    assert!(
        stopped.last_stderr_line().contains("is left in place"),
        "{:?}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.iter().any(|l| l.contains("panicked")),
        "{:?}",
        stopped.stderr
    );
    // The next start takes what it can read from the region, and carries on after
    // the last offset ever assigned.
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    assert_eq!(broker.producer(&["next"], None).wait_exit().code(), Some(0));
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    let offsets = persisted_offsets(&data);
    assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_replay_that_cannot_finish_stops_the_broker_and_never_reuses_offsets() {
    // A 100 KB record fits a 256-slot ring, not a 64-slot one.
    let broker = Broker::start(&["--groups", "1", "--slots", "256"]);
    let dir = TempDir::new("big-record");
    let path = dir.0.join("big");
    std::fs::write(&path, vec![b'b'; 100_000]).unwrap();
    let p = broker
        .producer(&["--file", path.to_str().unwrap()], None)
        .wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0));
    // Restarted with a ring too small for it: group-1 never got it, so it must be
    // replayed, which cannot be done; the broker must stop rather than let
    // producers take offset 0 again.
    let b = Broker::refused(&data, &["--groups", "1", "--slots", "64"]);
    assert!(
        b.last_stderr_line().contains("cannot replay offsets 0..1"),
        "{:?}",
        b.stderr
    );
    assert_eq!(
        persisted_offsets(&data),
        vec![0],
        "nothing was written over"
    );
}

#[test]
fn gone_producers_never_fill_the_client_table_against_a_consumer() {
    // group-1 has nobody, so every producer's record stays in the ring after it
    // leaves; with room for only four clients, a fifth client must still get in.
    let broker = Broker::start(&["--groups", "1", "--max-clients", "4"]);
    for i in 0..6 {
        let p = broker
            .producer(&["--id", &format!("p{i}"), &format!("m{i}")], None)
            .wait_exit();
        assert_eq!(p.code(), Some(0), "producer {i}: {:?}", p.stderr);
    }
    let (c, _) = broker.consumer(&["--count", "6"]);
    assert_eq!(c.wait_exit().stdout_text(), "m0\nm1\nm2\nm3\nm4\nm5\n");
    let (_, data) = broker.stop_keeping_data();
    let producers: Vec<String> = e2e::data_lines(&data.0.join(PERSIST_FILE))
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap().producer)
        .collect();
    assert_eq!(
        producers,
        ["p0", "p1", "p2", "p3", "p4", "p5"],
        "the file keeps every name"
    );
}

/// A producer `held` sending "one" and "two", stopped just past the commit point of
/// "one": it holds the ring lock, and `next_offset` has not moved past "one" yet.
fn producer_stopped_in_its_commit(broker: &Broker) -> Proc {
    let mut held = broker.client_env(
        "producer",
        &["--id", "held", "one", "two"],
        &[("MINIKAFKA_FAULT", "send-committed:1:stop")],
    );
    held.wait_until_stopped("the producer never reached its commit");
    held
}

#[test]
fn a_producer_stopped_inside_its_commit_through_a_graceful_stop_loses_nothing() {
    let broker = Broker::start(&["--groups", "1"]);
    let held = producer_stopped_in_its_commit(&broker);
    let (stopped, data, shm) = broker.stop_leaving_region();
    assert_eq!(stopped.code(), Some(1), "{:?}", stopped.stderr);
    assert_eq!(
        stopped.last_stderr_line(),
        format!(
            "broker: a producer held the ring lock through the stop (stopped?); \
             shared-memory region {shm} is left in place, and the next start recovers its records"
        )
    );
    // Resumed, it finishes that commit; its next send finds the broker gone.
    held.signal(Signal::SIGCONT);
    let p = held.wait_exit();
    assert_eq!(p.code(), Some(1));
    assert_eq!(
        p.last_stderr_line(),
        "producer: broker stopped (after 1 messages)"
    );
    // The next start recovers the message from the region it left.
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    let (consumer, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(consumer.wait_exit().stdout_text(), "one\n");
    let (b, data) = broker.stop_keeping_data();
    assert_eq!(b.code(), Some(0), "{:?}", b.stderr);
    let persisted: Vec<PersistedRecord> = e2e::data_lines(&data.0.join(PERSIST_FILE))
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap())
        .collect();
    assert_eq!(persisted.len(), 1, "{persisted:?}");
    assert_eq!(
        (persisted[0].offset, persisted[0].producer.as_str()),
        (0, "held")
    );
    assert_eq!(persisted[0].payload, b"one");
}

#[test]
fn a_message_taken_while_its_producer_is_stopped_in_its_commit_is_logged_through_a_stop() {
    let broker = Broker::start(&["--groups", "1"]);
    let held = producer_stopped_in_its_commit(&broker);
    // A consumer takes a record at its commit point, not when the hold ends.
    let (consumer, _) = broker.consumer(&["--id", "reader", "--count", "1"]);
    let c = consumer.wait_exit();
    assert_eq!((c.code(), c.stdout_text()), (Some(0), "one\n".to_string()));
    let (stopped, data, shm) = broker.stop_leaving_region();
    assert_eq!(stopped.code(), Some(1), "{:?}", stopped.stderr);
    // Its delivery is in the log although the hold never ended.
    let delivered: Vec<(u64, String, u32)> = log(&data)
        .into_iter()
        .map(|d| (d.offset, d.consumer, d.attempt))
        .collect();
    assert_eq!(delivered, [(0, "reader".to_string(), 1)]);
    held.signal(Signal::SIGCONT);
    assert_eq!(held.wait_exit().code(), Some(1));
    // The next start recovers the record; the group had consumed it, so nothing is
    // delivered again.
    let broker = Broker::start_with(data, shm, &["--groups", "1"]);
    let (b, data) = broker.stop_keeping_data();
    assert_eq!(b.code(), Some(0), "{:?}", b.stderr);
    assert_eq!(persisted_offsets(&data), [0]);
    assert_eq!(log(&data).len(), 1, "{:?}", log(&data));
}

#[test]
fn a_consumer_evicted_while_stopped_in_a_short_wait_hands_out_nothing_when_it_resumes() {
    // A ring large enough that nothing a's share pins is reclaimed meanwhile.
    let broker = Broker::start(&[
        "--groups",
        "1",
        "--session-timeout",
        "1s",
        "--slots",
        "65536",
        "--slot-size",
        "128",
    ]);
    // It halts just as a wait of its ends within the spin.
    let mut a = broker.client_env(
        "consumer",
        &["--id", "a", "--format", "json"],
        &[("MINIKAFKA_FAULT", "poll-spun:1:stop")],
    );
    a.wait_stderr("joined group ");
    let (b, _) = broker.consumer(&["--id", "b", "--format", "json"]);
    let p = broker.producer(&["--stream", "--interval", "20us"], None);
    a.wait_until_stopped("a never ended a wait within its spin");
    // b hands out a's share with its own while a is stopped.
    let handed_out = |s: &serde_json::Value| {
        s["groups"][0]["partitions"][0]["handed_out"]
            .as_u64()
            .unwrap_or(0)
    };
    let at_stop = handed_out(&broker.status());
    broker.wait_for_status("offsets handed out past a's stop", |s| {
        handed_out(s) >= at_stop + 256
    });
    p.signal(Signal::SIGINT);
    assert_eq!(p.wait_exit().code(), Some(0));
    // a is evicted, and b reads everything, a's share included.
    broker.wait_for_status("a evicted and b done", |s| {
        e2e::member_ids(&s["groups"][0]) == ["b"]
            && s["groups"][0]["partitions"][0]["position"] == s["ring"]["next_offset"]
    });
    a.signal(Signal::SIGCONT);
    let a = a.wait_exit();
    assert_eq!(a.code(), Some(1));
    assert_eq!(a.last_stderr_line(), "consumer: evicted from group group-1");
    b.signal(Signal::SIGTERM);
    let b = b.wait_exit();
    let by_b: BTreeSet<u64> = offsets_of(&b.stdout).into_iter().collect();
    let twice: Vec<u64> = offsets_of(&a.stdout)
        .into_iter()
        .filter(|o| by_b.contains(o))
        .collect();
    assert!(twice.is_empty(), "handed out to both: {twice:?}");
}

#[test]
fn a_consumer_taking_a_message_as_the_broker_stops_hands_out_only_what_is_logged() {
    let broker = Broker::start(&["--groups", "1"]);
    assert_eq!(broker.producer(&["one"], None).wait_exit().code(), Some(0));
    // It halts just before it takes "one".
    let mut late = broker.client_env(
        "consumer",
        &["--id", "late", "--count", "1"],
        &[("MINIKAFKA_FAULT", "poll-taking:1:stop")],
    );
    late.wait_until_stopped("the consumer never came to take");
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    // Resumed after the broker's last look at the group: it takes, but does not
    // hand out what the consumption log can no longer record.
    late.signal(Signal::SIGCONT);
    let c = late.wait_exit();
    assert_eq!(c.code(), Some(1));
    assert_eq!(c.last_stderr_line(), "consumer: broker stopped");
    assert_eq!(c.stdout_text(), "", "nothing printed");
    assert!(log(&data).is_empty(), "nothing logged");
    // Not acknowledged, so delivered after the restart.
    let broker = Broker::start_in(data, &["--groups", "1"]);
    let (again, _) = broker.consumer(&["--count", "1"]);
    assert_eq!(again.wait_exit().stdout_text(), "one\n");
}
