//! A process that scribbles over the region must not wedge anyone: the broker
//! finds state that cannot be valid within a pass or two, repairs it, says so once
//! on stderr, and traffic goes on. Each test writes what a stray process could,
//! through its own mapping of the region, on a 64-slot ring where a wedge shows
//! at once (the producer sends ten rings' worth, which needs the ring to turn).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use e2e::{bin, json_lines, Broker, Finished, Proc, StdoutMode, DEADLINE};
use nix::sys::signal::Signal;
use shm_layout::event;
use shm_layout::layout::{client_state, redelivery};
use shm_layout::sys::monotonic_millis;
use shm_layout::Region;

const RING: &[&str] = &["--groups", "1", "--slots", "64"];

/// Offsets in a consumer's JSON lines, in the order received.
fn offsets_of(lines: &[serde_json::Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["offset"].as_u64().expect("offset"))
        .collect()
}

/// Stops the broker with SIGTERM, checks it stopped cleanly and promptly, and
/// returns its stderr lines that start `broker: `.
fn stop_promptly(broker: Broker) -> Vec<String> {
    let asked = Instant::now();
    let stopped = broker.stop();
    let took = asked.elapsed();
    eprintln!("the broker stopped {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(10), "stopping took {took:?}");
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    eprintln!("its stderr: {:?}", stopped.stderr);
    stopped
        .stderr
        .iter()
        .filter(|l| l.starts_with("broker: "))
        .cloned()
        .collect()
}

/// Waits until the broker has persisted every offset below `upto`, so that what
/// is scribbled next cannot disturb the persistence file.
fn wait_until_persisted(region: &Region, upto: u64) {
    let deadline = Instant::now() + DEADLINE;
    while region.persisted_offset() < upto {
        assert!(
            Instant::now() < deadline,
            "the broker never persisted {upto} records"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A producer of `count` messages into a group nobody reads yet: it fills the
/// ring (64 one-slot records) and waits for space; returns once they are persisted.
fn fill_the_ring(broker: &Broker, region: &Region, count: &str) -> Proc {
    let producer = broker.producer(&["--count", count], None);
    wait_until_persisted(region, 64);
    producer
}

/// The client entry of the only consumer.
fn consumer_entry(region: &Region) -> u32 {
    (0..region.geometry().max_clients)
        .find(|&c| {
            region.client(c).is_some_and(|e| {
                e.identity.state.load(Ordering::Acquire) == client_state::ACTIVE
                    && e.identity.role.load(Ordering::Acquire) == 2
            })
        })
        .expect("a registered consumer")
}

fn expect_success(what: &str, finished: &Finished) {
    assert_eq!(finished.code(), Some(0), "{what}: {:?}", finished.stderr);
}

/// Runs a consumer of 400 messages and a producer of 400 on a 64-slot ring;
/// once the consumer has printed 100 (well past offset 10, whose record has left
/// the ring by then), marks group-1's redelivery entry 0 as a pending redelivery
/// of offset 10 (with `hint`, the group's hint too, so that consumers claim it).
/// Checks the group gets every message once and the broker reports it once.
fn scribble_a_pending_redelivery_during_traffic(hint: bool) {
    let broker = Broker::start(RING);
    let mut consumer = Proc::spawn(
        &bin("consumer"),
        &broker.client_args(&["--count", "400", "--format", "json"]),
        None,
        StdoutMode::Lines,
    );
    consumer.wait_stderr("joined group ");
    let producer = broker.producer(&["--count", "400"], None);
    let mut lines = Vec::new();
    while lines.len() < 100 {
        lines.push(consumer.next_stdout_line());
    }
    let region = Region::open(&broker.shm).unwrap();
    if hint {
        // The broker's next pass would undo the write within milliseconds: it is
        // stopped while the consumer meets the entry.
        broker.proc.signal(Signal::SIGSTOP);
    }
    let entry = region.redelivery(0, 0).unwrap();
    entry.offset.store(10, Ordering::Relaxed);
    entry.state.store(
        redelivery::pack(redelivery::PENDING, 2, 0),
        Ordering::Release,
    );
    if hint {
        let group = region.group(0).unwrap();
        group.meta.redeliveries.store(1, Ordering::Release);
        let written = monotonic_millis();
        event::wake(&region.header().published);
        // The consumer stamps its activity, then looks for redeliveries, then
        // (nothing else being readable while the broker is stopped) sleeps.
        let me = region.client(consumer_entry(&region)).unwrap();
        let deadline = Instant::now() + DEADLINE;
        while me.activity.last_active_ms.load(Ordering::Acquire) <= written
            || me.activity.sleeping_on.load(Ordering::Acquire) == 0
        {
            assert!(consumer.is_running(), "the consumer gave up on the entry");
            assert!(Instant::now() < deadline, "the consumer never looked");
            std::thread::yield_now();
        }
        broker.proc.signal(Signal::SIGCONT);
    }
    while lines.len() < 400 {
        lines.push(consumer.next_stdout_line());
    }
    expect_success("consumer", &consumer.wait_exit());
    expect_success("producer", &producer.wait_exit());
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        offsets_of(&values),
        (0..400).collect::<Vec<_>>(),
        "every message once"
    );
    let reports = stop_promptly(broker);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with(
            "broker: repaired group group-1's redelivery table: entry 0 held offset 10, which the broker never offered; dropped"
        ),
        "{reports:?}"
    );
}

#[test]
fn a_bogus_pending_redelivery_scribbled_during_traffic_pins_nothing_and_is_reported_once() {
    // The 16-byte write alone: consumers do not look (the hint is zero), but the
    // group's position must not stop at offset 10.
    scribble_a_pending_redelivery_during_traffic(false);
}

#[test]
fn a_consumer_that_claims_a_bogus_redelivery_hands_it_back_and_goes_on() {
    // With the hint, a consumer claims the entry and finds no record for it.
    scribble_a_pending_redelivery_during_traffic(true);
}

#[test]
fn an_index_entry_unstamped_below_next_offset_is_dropped_and_traffic_resumes() {
    let broker = Broker::start(RING);
    let region = Region::open(&broker.shm).unwrap();
    let producer = fill_the_ring(&broker, &region, "640");
    region.index_entry(5).stamp.store(0, Ordering::Release);
    // Offset 5 can no longer be read from the ring: the group gets the rest.
    let (consumer, _) = broker.consumer(&["--count", "639", "--format", "json"]);
    let consumer = consumer.wait_exit();
    expect_success("consumer", &consumer);
    expect_success("producer", &producer.wait_exit());
    let expected: Vec<u64> = (0..640).filter(|&o| o != 5).collect();
    assert_eq!(offsets_of(&json_lines(&consumer.stdout)), expected);
    let reports = stop_promptly(broker);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with("broker: repaired the ring: the index entry of offset 5 "),
        "{reports:?}"
    );
}

#[test]
fn an_impossible_slot_descriptor_is_rewritten_and_traffic_resumes() {
    let broker = Broker::start(RING);
    let region = Region::open(&broker.shm).unwrap();
    let producer = fill_the_ring(&broker, &region, "640");
    let tail = region.header().reclaim.tail.load(Ordering::Acquire);
    region.descriptor(tail).store(u64::MAX, Ordering::Release);
    let (consumer, _) = broker.consumer(&["--count", "640", "--format", "json"]);
    let consumer = consumer.wait_exit();
    expect_success("consumer", &consumer);
    expect_success("producer", &producer.wait_exit());
    assert_eq!(
        offsets_of(&json_lines(&consumer.stdout)),
        (0..640).collect::<Vec<_>>()
    );
    let reports = stop_promptly(broker);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].starts_with(&format!(
            "broker: repaired the ring: the slot descriptor at position {tail} held 0xffffffffffffffff"
        )),
        "{reports:?}"
    );
}
