//! SPEC §6 through a broker SIGKILL: every delivery a consumer printed has exactly
//! one line in `log_consumo.txt` once a broker has restarted on the dead one's
//! region, though the dead broker still held those lines in its write buffer.

use std::collections::BTreeMap;

use audit_format::records::{DeliveryRecord, LOG_FILE};
use e2e::{json_lines, Broker, Proc, StdoutMode, TempDir};

const MESSAGES: usize = 300;

/// A consumer of `group` with `id`, printing JSON lines as they come; joined.
fn consumer(broker: &Broker, group: &str, id: &str) -> Proc {
    let args = broker.client_args(&["--group", group, "--id", id, "--format", "json"]);
    let mut p = Proc::spawn(&e2e::bin("consumer"), &args, None, StdoutMode::Lines);
    p.wait_stderr("joined group ");
    p
}

/// (group, consumer, offset) of the next `count` messages `p` prints.
fn printed(p: &mut Proc, count: usize) -> Vec<(String, String, u64)> {
    let lines: Vec<String> = (0..count).map(|_| p.next_stdout_line() + "\n").collect();
    json_lines(lines.concat().as_bytes())
        .iter()
        .map(|v| {
            (
                v["group"].as_str().unwrap().to_string(),
                v["consumer"].as_str().unwrap().to_string(),
                v["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn log(data: &TempDir) -> Vec<DeliveryRecord> {
    e2e::data_lines(&data.0.join(LOG_FILE))
        .iter()
        .map(|l| DeliveryRecord::parse(l).unwrap())
        .collect()
}

/// Two consumers in group-1 and one in group-2 print every one of `MESSAGES`;
/// then the broker is killed. Returns what they printed, the data directory and
/// the region's name.
fn deliver_then_kill(broker_args: &[&str]) -> (Vec<(String, String, u64)>, TempDir, String) {
    let broker = Broker::start(broker_args);
    let mut consumers = [
        (consumer(&broker, "group-1", "one-a"), MESSAGES / 2),
        (consumer(&broker, "group-1", "one-b"), MESSAGES / 2),
        (consumer(&broker, "group-2", "two-a"), MESSAGES),
    ];
    let input: String = (0..MESSAGES).map(|i| format!("m{i}\n")).collect();
    let producer = broker.producer(&["--id", "p"], Some(input.into_bytes()));
    assert_eq!(producer.wait_exit().code(), Some(0));
    let mut seen = Vec::new();
    for (c, count) in &mut consumers {
        seen.extend(printed(c, *count));
    }
    let (data, shm) = broker.kill();
    for (c, _) in consumers {
        assert_eq!(c.wait_exit().last_stderr_line(), "consumer: broker stopped");
    }
    (seen, data, shm)
}

/// Restarts on the dead broker's data and region, then stops; returns the log.
fn restart_and_stop(data: TempDir, shm: String) -> (Vec<DeliveryRecord>, Vec<String>) {
    let broker = Broker::start_with(data, shm, &["--groups", "2"]);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    (log(&data), stopped.stderr)
}

/// Every printed (group, consumer, offset) has exactly one line, with attempt 1,
/// and the log has no first-delivery line for anything else.
fn assert_logged_once(seen: &[(String, String, u64)], log: &[DeliveryRecord]) {
    let mut expected: Vec<_> = seen.to_vec();
    expected.sort();
    assert_eq!(
        expected.len(),
        2 * MESSAGES,
        "every message printed once per group"
    );
    let mut lines: BTreeMap<(String, String, u64), Vec<u32>> = BTreeMap::new();
    for d in log {
        assert_eq!(d.producer, "p", "{d:?}");
        lines
            .entry((d.group.clone(), d.consumer.clone(), d.offset))
            .or_default()
            .push(d.attempt);
    }
    let got: Vec<_> = lines.keys().cloned().collect();
    assert_eq!(got, expected, "one line per printed delivery, and no other");
    for (delivery, attempts) in &lines {
        assert_eq!(attempts, &[1], "{delivery:?} has one line, attempt 1");
    }
}

#[test]
fn every_delivery_printed_before_a_broker_sigkill_is_logged_once_after_the_restart() {
    // An hour-long flush interval: the dead broker wrote no delivery line at all.
    let (seen, data, shm) = deliver_then_kill(&["--groups", "2", "--flush-interval", "1h"]);
    assert!(log(&data).is_empty(), "nothing was logged before the kill");
    let (log, stderr) = restart_and_stop(data, shm);
    assert_logged_once(&seen, &log);
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("{} deliveries logged from it", 2 * MESSAGES))),
        "{stderr:?}"
    );
}

#[test]
fn deliveries_logged_before_a_broker_sigkill_are_not_logged_again() {
    // 4 KiB buffers, written when full: part of the log is on disk at the kill,
    // the rest still buffered.
    let (seen, data, shm) = deliver_then_kill(&[
        "--groups",
        "2",
        "--flush-interval",
        "1h",
        "--buffer-size",
        "4096",
    ]);
    let before = log(&data).len();
    assert!(
        before > 0 && before < 2 * MESSAGES,
        "some lines were written before the kill, not all: {before}"
    );
    // And the dead broker's last write was cut short mid-line.
    let path = data.0.join(LOG_FILE);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"2026-01-01T00:00:00.000000Z\tdefault\t0\t29");
    std::fs::write(&path, text).unwrap();
    let (log, _) = restart_and_stop(data, shm);
    assert_logged_once(&seen, &log);
}
