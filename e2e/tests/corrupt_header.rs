//! A process that scribbles over the region's header (SPEC §3): the broker reports
//! each kind of fault once, refuses new work rather than trust a corrupt cursor,
//! stops promptly on SIGTERM, and a restart never uses an offset twice.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use audit_format::records::{PersistedRecord, PERSIST_FILE};
use e2e::{Broker, TempDir};

fn offsets(dir: &TempDir) -> Vec<u64> {
    e2e::data_lines(&dir.0.join(PERSIST_FILE))
        .iter()
        .map(|l| PersistedRecord::parse(l).unwrap().offset)
        .collect()
}

/// Whole records in the persistence file so far (the writer may be mid-line).
fn records_so_far(dir: &TempDir) -> usize {
    let text = std::fs::read(dir.0.join(PERSIST_FILE)).unwrap_or_default();
    let whole = &text[..text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
    whole
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && l[0] != b'#')
        .count()
}

/// Sends 100 messages and waits until the file holds them.
fn hundred_messages(broker: &Broker) {
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let p = broker.producer(&[], Some(input.into_bytes())).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let deadline = Instant::now() + e2e::DEADLINE;
    while records_so_far(&broker.data) < 100 {
        assert!(Instant::now() < deadline, "never persisted");
        std::thread::yield_now();
    }
}

/// Stops the broker and checks it did so promptly, without a panic and without a
/// flood of lines; returns what it left.
fn stop_promptly(broker: Broker) -> (e2e::Finished, TempDir) {
    let started = Instant::now();
    let (stopped, data) = broker.stop_keeping_data();
    let took = started.elapsed();
    eprintln!("stopped in {took:?}: {:?}", stopped.stderr);
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopping took {took:?}"
    );
    assert!(
        stopped.stderr.len() <= 6,
        "a handful of lines, not a flood: {:?}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.iter().any(|l| l.contains("panicked")),
        "{:?}",
        stopped.stderr
    );
    (stopped, data)
}

#[test]
fn a_scribbled_next_offset_is_reported_once_new_work_is_refused_and_a_restart_goes_on() {
    let mut broker = Broker::start(&["--groups", "1", "--flush-interval", "10ms"]);
    let (consumer, _) = broker.consumer(&["--format", "json"]);
    hundred_messages(&broker);
    let region = shm_layout::Region::open(&broker.shm).unwrap();
    region
        .header()
        .producer
        .next_offset
        .fetch_add(1_000_000_000, Relaxed);
    let line = broker.proc.wait_stderr("next offset");
    assert_eq!(
        line,
        "broker: the region's next offset (1000000100) is corrupt: records are committed up to 100; refusing new messages until the broker restarts"
    );
    let refused = broker.producer(&["late"], None).wait_exit();
    assert_eq!(refused.code(), Some(1));
    assert_eq!(
        refused.last_stderr_line(),
        "producer: the broker refuses new messages until it is restarted (it found its shared-memory region corrupt) (after 0 messages)"
    );
    drop(region);
    let (stopped, data) = stop_promptly(broker);
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert_eq!(
        stopped
            .stderr
            .iter()
            .filter(|l| l.contains("corrupt"))
            .count(),
        1,
        "reported once: {:?}",
        stopped.stderr
    );
    let _ = consumer.wait_exit();
    assert_eq!(offsets(&data), (0..100).collect::<Vec<_>>());

    let broker = Broker::start_in(data, &["--groups", "1"]);
    let p = broker.producer(&["after"], None).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let (_, data) = broker.stop_keeping_data();
    assert_eq!(offsets(&data), (0..101).collect::<Vec<_>>());
}

#[test]
fn random_writes_over_the_header_cursors_never_flood_wedge_or_repeat_an_offset() {
    // A fixed sequence of "random" values, so a failure can be replayed.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4 {
        let broker = Broker::start(&["--groups", "1", "--flush-interval", "10ms"]);
        let (consumer, _) = broker.consumer(&["--format", "json"]);
        hundred_messages(&broker);
        let region = shm_layout::Region::open(&broker.shm).unwrap();
        let h = region.header();
        // Below 2^62 (larger values are refused outright), and small values too.
        let value = |r: u64, v: u64| match r % 3 {
            0 => v % 200,
            1 => v % (1 << 40),
            _ => v >> 2,
        };
        let cursors = [
            &h.producer.head,
            &h.producer.next_offset,
            &h.reclaim.tail,
            &h.reclaim.freed_offset,
            &h.durable.persisted,
        ];
        for cursor in cursors {
            if next() % 2 == 0 {
                cursor.store(value(next(), next()), Relaxed);
            }
        }
        // Traffic on the scribbled region: it may fail, but must end.
        let p = broker.producer(&["during"], None).wait_exit();
        eprintln!("round {round}: producer {:?} {:?}", p.code(), p.stderr);
        drop(region);
        let (_, data) = stop_promptly(broker);
        let _ = consumer.wait_exit();
        let before = offsets(&data);
        assert_eq!(&before[..100], (0..100).collect::<Vec<_>>().as_slice());

        // A restart (recovering whatever the region held) never reuses an offset.
        let broker = Broker::start_in(data, &["--groups", "1"]);
        let p = broker.producer(&["after"], None).wait_exit();
        let (restarted, data) = broker.stop_keeping_data();
        assert_eq!(p.code(), Some(0), "{:?} {:?}", p.stderr, restarted.stderr);
        let after = offsets(&data);
        let mut unique = after.clone();
        unique.dedup();
        assert_eq!(unique, after, "round {round}: no offset twice");
        assert!(
            after.windows(2).all(|w| w[0] < w[1]),
            "round {round}: in order"
        );
    }
}

#[test]
fn a_scribbled_identity_line_is_restored_reported_once_and_clients_carry_on() {
    let mut broker = Broker::start(&["--groups", "1", "--flush-interval", "10ms"]);
    let (consumer, _) = broker.consumer(&["--count", "200", "--format", "json"]);
    hundred_messages(&broker);
    let region = shm_layout::Region::open(&broker.shm).unwrap();
    let identity = &region.header().identity;
    // What would stop every client (the closing mark), refuse every new one (the
    // token, the magic) or hold every producer (admission).
    identity
        .closing
        .store(1, std::sync::atomic::Ordering::SeqCst);
    identity.token[0].fetch_xor(0xFFFF, Relaxed);
    identity.magic.store(0, Relaxed);
    identity.paused.store(1, Relaxed);
    let line = broker.proc.wait_stderr("identity line");
    assert_eq!(
        line,
        "broker: restored the region's identity line (magic, token, closing, admission), overwritten by another process"
    );
    let input: String = (100..200).map(|i| format!("m{i}\n")).collect();
    let p = broker.producer(&[], Some(input.into_bytes())).wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let got = consumer.wait_exit();
    assert_eq!(got.code(), Some(0), "{:?}", got.stderr);
    let offsets: Vec<u64> = e2e::json_lines(&got.stdout)
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..200).collect::<Vec<_>>());
    drop(region);
    let (stopped, _) = stop_promptly(broker);
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    assert_eq!(
        stopped
            .stderr
            .iter()
            .filter(|l| l.contains("identity"))
            .count(),
        1,
        "{:?}",
        stopped.stderr
    );
}
