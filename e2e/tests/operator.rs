//! The operator's view end to end: a waiting producer says why, and gives up
//! after `--send-timeout` naming what held it.

use e2e::Broker;
use nix::sys::signal::Signal;

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
