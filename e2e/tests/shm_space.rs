//! A `/dev/shm` too small for the region: the broker refuses to start with one line
//! and leaves nothing behind, rather than dying of SIGBUS at a later write (SPEC §11:
//! a region's memory is reserved when it is created).
//!
//! Each broker runs in a private mount namespace (`unshare --mount`, root only, as
//! in CI) with a tmpfs of a chosen size on `/dev/shm`, so the host's is untouched.

use std::process::Command;

use e2e::{bin, Proc, StdoutMode, TempDir, DEADLINE};

/// The shell run inside the namespace: mount the small `/dev/shm`, run the broker
/// (passing it a SIGTERM; it is killed if the shell is), then say what it left
/// there (the namespace, and its tmpfs, end with the shell).
const IN_NAMESPACE: &str = r#"
size=$1; shift
mount -t tmpfs -o "size=$size" tmpfs /dev/shm || exit 97
setpriv --pdeathsig KILL "$@" &
pid=$!
trap 'kill -TERM $pid; termed=1' TERM
wait $pid
status=$?
if [ -n "$termed" ]; then wait $pid; status=$?; fi
echo "left in /dev/shm: [$(ls -A /dev/shm)]"
exit $status
"#;

/// Whether this process may make a mount namespace; says why not otherwise.
fn namespaces_work() -> bool {
    let out = Command::new("unshare")
        .args(["--mount", "true"])
        .output()
        .map_err(|e| e.to_string())
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        });
    match out {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: cannot unshare a mount namespace ({why}); this test needs root");
            false
        }
    }
}

/// Runs `script` with `args` in a mount namespace of its own; it must exit 0.
/// Returns what it printed.
fn script_in_namespace(script: &str, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ["--mount", "sh", "-c", script, "sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let mut run = Proc::spawn(
        std::path::Path::new("unshare"),
        &all,
        None,
        StdoutMode::Lines,
    );
    let finished = run.wait_exit_within(DEADLINE);
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    run.unread_stdout_lines()
}

/// Starts a broker with `/dev/shm` a tmpfs of `size`.
fn broker_with_shm_of(size: &str, data: &TempDir, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "--mount".into(),
        "sh".into(),
        "-c".into(),
        IN_NAMESPACE.into(),
        "sh".into(),
        size.into(),
        bin("broker").display().to_string(),
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        data.0.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(
        std::path::Path::new("unshare"),
        &args,
        None,
        StdoutMode::Lines,
    )
}

#[test]
fn a_region_that_does_not_fit_in_dev_shm_is_refused_with_one_line_and_nothing_left() {
    if !namespaces_work() {
        return;
    }
    let data = TempDir::new("shm-full");
    // 4096 slots of 1 KiB: a region of about 5 MiB, in a /dev/shm of 1 MiB.
    let mut broker = broker_with_shm_of("1m", &data, &[]);
    let finished = broker.wait_exit_within(DEADLINE);
    assert_eq!(
        finished.code(),
        Some(1),
        "refused, not killed by a signal: {finished:?}"
    );
    let line = finished.last_stderr_line();
    assert!(
        line.starts_with("broker: cannot create shared-memory region /minikafka-")
            && line.contains(" needs ")
            && line.contains("/dev/shm has less free"),
        "{line}"
    );
    assert_eq!(finished.stderr.len(), 1, "one line: {:?}", finished.stderr);
    assert_eq!(
        broker.unread_stdout_lines(),
        ["left in /dev/shm: []"],
        "no ready line, and no half-created region"
    );
}

#[test]
fn the_same_broker_starts_when_dev_shm_can_hold_its_region() {
    if !namespaces_work() {
        return;
    }
    let data = TempDir::new("shm-fits");
    let mut broker = broker_with_shm_of("64m", &data, &[]);
    let ready = broker.next_stdout_line();
    assert!(ready.starts_with("listening on 127.0.0.1:"), "{ready}");
    broker.signal(nix::sys::signal::Signal::SIGTERM);
    let finished = broker.wait_exit_within(DEADLINE);
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    assert_eq!(broker.unread_stdout_lines(), ["left in /dev/shm: []"]);
}

/// Inside the namespace: start the broker, wait for its ready line, try to create
/// a topic too big for what is left of `/dev/shm` and then one that fits, and
/// say what happened and what `/dev/shm` holds.
const CREATE_IN_NAMESPACE: &str = r#"
size=$1; broker=$2; data=$3
mount -t tmpfs -o "size=$size" tmpfs /dev/shm || exit 97
setpriv --pdeathsig KILL "$broker" --port 0 --data-dir "$data" --shm-name /mk-shm \
    --slots 256 --slot-size 256 > "$data/ready" 2> "$data/broker.err" &
pid=$!
tries=0
until grep -q '^listening on' "$data/ready"; do
    tries=$((tries + 1)); [ $tries -gt 600 ] && exit 98
    sleep 0.05
done
address=$(sed -n 's/^listening on \([^,]*\),.*/\1/p' "$data/ready")
"$broker" create-topic -b "$address" big --partitions 4 2> "$data/create.err"
echo "big: exit $? $(cat "$data/create.err")"
"$broker" create-topic -b "$address" small
echo "small: exit $?"
echo "topics: $("$broker" topics -b "$address" --json | grep -o '"name":"[a-z]*"' | tr '\n' ' ')"
echo "in /dev/shm: [$(ls -A /dev/shm | tr '\n' ' ')]"
kill -TERM $pid
wait $pid
echo "broker: exit $?"
"#;

#[test]
fn a_topic_that_does_not_fit_in_dev_shm_is_refused_and_nothing_of_it_is_left() {
    if !namespaces_work() {
        return;
    }
    let data = TempDir::new("shm-topic");
    // The control region takes about 750 KiB, each partition's as much: 2 MiB
    // hold one more partition, not four.
    let broker = bin("broker").display().to_string();
    let lines = script_in_namespace(
        CREATE_IN_NAMESPACE,
        &["2m", &broker, &data.0.display().to_string()],
    );
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "big: exit 1 broker create-topic: cannot create shared-memory region /mk-shm.t1."
        ) && lines[0].contains(" needs ")
            && lines[0].contains("/dev/shm has less free"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "created topic small with 1 partitions");
    assert_eq!(lines[2], "small: exit 0");
    assert_eq!(lines[3], r#"topics: "name":"default" "name":"small" "#);
    // The refused topic left no region; the one created took the next id.
    assert_eq!(lines[4], "in /dev/shm: [mk-shm mk-shm.t1.0 ]");
    assert_eq!(lines[5], "broker: exit 0");
}

/// Inside the namespace: a broker under `--max-attempts 1` whose pre-created
/// group holds `jobs`; a member dies on a message, which becomes a dead letter
/// when `/dev/shm` has no room left for `jobs.dlq`. Says what the broker, its
/// status and a producer filling the ring then say.
const DEAD_LETTER_IN_NAMESPACE: &str = r#"
size=$1; bin=$2; data=$3
mount -t tmpfs -o "size=$size" tmpfs /dev/shm || exit 97
wait_for() {
    tries=0
    until grep -q "$1" "$2"; do
        tries=$((tries + 1)); [ $tries -gt 600 ] && exit 98
        sleep 0.05
    done
}
setpriv --pdeathsig KILL "$bin/broker" --port 0 --data-dir "$data" --shm-name /mk-dlq \
    --slots 256 --slot-size 256 --topics jobs --groups g --group-topics jobs \
    --max-attempts 1 --flush-interval 10ms > "$data/ready" 2> "$data/broker.err" &
pid=$!
wait_for '^listening on' "$data/ready"
address=$(sed -n 's/^listening on \([^,]*\),.*/\1/p' "$data/ready")
printf 'poison\n' | "$bin/producer" -b "$address" --topic jobs 2> /dev/null
MINIKAFKA_FAULT=consumer-printed:1 "$bin/consumer" -b "$address" --group g --topic jobs \
    > /dev/null 2>&1
echo "consumer: exit $?"
wait_for 'cannot create the dead-letter topic' "$data/broker.err"
echo "$(grep 'cannot create the dead-letter topic' "$data/broker.err")"
"$bin/broker" status -b "$address" --json > "$data/status.json"
echo "status: $(grep -o '"dead_letters_waiting":[0-9]*' "$data/status.json")"
seq 1 300 | "$bin/producer" -b "$address" --topic jobs 2> "$data/producer.err" &
producer=$!
wait_for 'waiting for space' "$data/producer.err"
echo "$(grep -m1 'waiting for space' "$data/producer.err")"
kill -TERM $producer
wait $producer
kill -TERM $pid
wait $pid
echo "broker: exit $?"
"#;

#[test]
fn a_dead_letter_topic_that_does_not_fit_keeps_its_letters_and_says_why() {
    if !namespaces_work() {
        return;
    }
    let data = TempDir::new("shm-dlq");
    // The control region and jobs' take about 750 KiB each: 2 MiB have no room
    // for jobs.dlq's.
    let bin_dir = bin("broker").parent().unwrap().display().to_string();
    let lines = script_in_namespace(
        DEAD_LETTER_IN_NAMESPACE,
        &["2m", &bin_dir, &data.0.display().to_string()],
    );
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "consumer: exit 137", "killed on the message");
    let why = "cannot create the dead-letter topic jobs.dlq: cannot create shared-memory region /mk-dlq.t2.0";
    assert!(
        lines[1].starts_with(&format!("broker: {why}"))
            && lines[1].ends_with("its dead letters wait, and so does the group"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], r#"status: "dead_letters_waiting":1"#);
    assert!(
        lines[3].contains(
            "waiting for space in jobs/0: group g is 256 messages behind and has no consumers; its dead letter at offset 0 waits: "
        ) && lines[3].contains(why),
        "{}",
        lines[3]
    );
    assert_eq!(lines[4], "broker: exit 0");
}
