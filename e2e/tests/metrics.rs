//! `broker --metrics`: the exposition is read back with the Prometheus project's
//! own text-format parser (Python's `prometheus_client`, which `make test`
//! installs in `target/pyenv`), and its values compared with what the test did.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use e2e::Broker;
use serde_json::Value;

/// The Python that has `prometheus_client`: `$PROMETHEUS_PYTHON`, or the one
/// `make test` sets up.
fn parser_python() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_PYTHON") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../target/pyenv/bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run `make test`, which installs prometheus_client there",
        python.display()
    );
    python
}

/// A sample of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parses `text` with the reference parser; panics if it rejects it.
fn parse(text: &str) -> Vec<Sample> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus_samples.py");
    let mut child = Command::new(parser_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:?}"))
        .value
}

/// Sends `request` raw and returns the status line and the body.
fn http(addr: &str, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn scrape(addr: &str) -> Vec<Sample> {
    let (status, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: broker\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    parse(&body)
}

/// Starts a broker serving metrics; returns it and the metrics address.
fn broker_with_metrics(extra: &[&str]) -> (Broker, String) {
    let mut args = vec!["--metrics", "0"];
    args.extend_from_slice(extra);
    let broker = Broker::start(&args);
    let addr = broker.metrics.clone().expect("the metrics ready line");
    assert!(
        addr.starts_with("127.0.0.1:"),
        "loopback by default: {addr}"
    );
    (broker, addr)
}

const PARTITION: [(&str, &str); 2] = [("topic", "default"), ("partition", "0")];

#[test]
fn the_metrics_count_what_was_published_persisted_and_delivered_per_group() {
    let (broker, addr) = broker_with_metrics(&["--groups", "2", "--slots", "64"]);
    let (reader, _) = broker.consumer(&["--count", "10", "--format", "none"]);
    let ten: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    assert_eq!(broker.producer(&ten, None).wait_exit().code(), Some(0));
    assert_eq!(reader.wait_exit().code(), Some(0));
    broker.wait_for_status("group-1 caught up and all persisted", |s| {
        s["groups"][0]["partitions"][0]["position"] == 10 && s["ring"]["persisted_offset"] == 10
    });
    let m = scrape(&addr);
    fn g(group: &str) -> [(&str, &str); 3] {
        [("group", group), PARTITION[0], PARTITION[1]]
    }
    assert_eq!(
        value(&m, "minikafka_messages_published_total", &PARTITION),
        10.0
    );
    assert_eq!(
        value(&m, "minikafka_messages_persisted_total", &PARTITION),
        10.0
    );
    assert_eq!(value(&m, "minikafka_ring_slots", &PARTITION), 64.0);
    assert_eq!(
        value(&m, "minikafka_ring_slots_used", &PARTITION),
        10.0,
        "group-2 holds them"
    );
    assert_eq!(value(&m, "minikafka_group_position", &g("group-1")), 10.0);
    assert_eq!(value(&m, "minikafka_group_lag", &g("group-1")), 0.0);
    assert_eq!(
        value(&m, "minikafka_group_deliveries_total", &g("group-1")),
        10.0
    );
    assert_eq!(value(&m, "minikafka_group_position", &g("group-2")), 0.0);
    assert_eq!(value(&m, "minikafka_group_lag", &g("group-2")), 10.0);
    assert_eq!(
        value(&m, "minikafka_group_deliveries_total", &g("group-2")),
        0.0
    );
    assert_eq!(
        value(&m, "minikafka_group_redeliveries_total", &g("group-1")),
        0.0
    );
    assert_eq!(
        value(&m, "minikafka_evictions_total", &[("group", "group-1")]),
        0.0
    );
    assert_eq!(value(&m, "minikafka_clients", &[("role", "consumer")]), 0.0);
    assert_eq!(value(&m, "minikafka_producers_waiting", &PARTITION), 0.0);
    let writes = value(
        &m,
        "minikafka_file_write_seconds_count",
        &[("file", "persistence")],
    );
    assert!(writes >= 1.0, "the persistence file was written: {writes}");

    // group-2 holds the ring: a producer of 100 waits for space, and shows.
    let (_member, _) = broker.consumer(&["--group", "group-1", "--format", "none"]);
    let mut waiting = broker.producer(&["--count", "100"], None);
    waiting.wait_stderr("waiting for space");
    // It sleeps on the ring's space event between its checks: a scrape may fall
    // between two sleeps, so look until one finds it asleep.
    let deadline = std::time::Instant::now() + e2e::DEADLINE;
    let m = loop {
        let m = scrape(&addr);
        if value(&m, "minikafka_producers_waiting", &PARTITION) == 1.0 {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never seen waiting: {m:?}"
        );
        // Between two asks, not in place of one.
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(
        value(&m, "minikafka_messages_published_total", &PARTITION),
        64.0
    );
    assert_eq!(value(&m, "minikafka_clients", &[("role", "producer")]), 1.0);
    assert_eq!(value(&m, "minikafka_clients", &[("role", "consumer")]), 1.0);
}

#[test]
fn a_scrape_reads_the_same_series_whatever_the_traffic() {
    // What a scrape does depends on the groups and clients, not on how many
    // messages went through: the same series after ten messages as after 20,000.
    let (broker, addr) = broker_with_metrics(&["--groups", "1"]);
    let (reader, _) = broker.consumer(&["--count", "20010", "--format", "none"]);
    assert_eq!(
        broker.producer(&["--count", "10"], None).wait_exit().code(),
        Some(0)
    );
    let series = |m: &[Sample]| -> std::collections::BTreeSet<(String, String)> {
        m.iter()
            .map(|s| (s.name.clone(), Value::Object(s.labels.clone()).to_string()))
            .collect()
    };
    let before = scrape(&addr);
    assert_eq!(
        broker
            .producer(&["--count", "20000"], None)
            .wait_exit()
            .code(),
        Some(0)
    );
    assert_eq!(reader.wait_exit().code(), Some(0));
    let after = scrape(&addr);
    assert_eq!(series(&before), series(&after));
    assert_eq!(
        value(&after, "minikafka_messages_published_total", &PARTITION),
        20010.0
    );
}

#[test]
fn disk_waits_are_timed_under_fsync() {
    let (broker, addr) = broker_with_metrics(&["--groups", "1", "--fsync"]);
    assert_eq!(
        broker.producer(&["a", "b", "c"], None).wait_exit().code(),
        Some(0)
    );
    let m = scrape(&addr);
    assert_eq!(value(&m, "minikafka_disk_wait_seconds_count", &[]), 3.0);
    let (plain, plain_addr) = broker_with_metrics(&["--groups", "1"]);
    let m = scrape(&plain_addr);
    assert!(
        !m.iter().any(|s| s.name.starts_with("minikafka_disk_wait")),
        "no disk waits without --fsync"
    );
    drop(plain);
}

#[test]
fn a_bad_request_gets_a_4xx_and_a_stalled_one_blocks_nobody() {
    let (_broker, addr) = broker_with_metrics(&[]);
    // Opened first and never finished: it holds only its own connection.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    let status = |req: &[u8]| http(&addr, req).0;
    assert_eq!(status(b"BLAH\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status(b"DELETE /metrics HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9000));
    assert_eq!(
        status(&huge),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert!(!scrape(&addr).is_empty(), "still served");
    drop(stalled);
}

#[test]
fn every_topic_partition_has_its_series_and_its_status_line() {
    let (broker, addr) = broker_with_metrics(&["--topics", "orders:2", "--slots", "64"]);
    let five: Vec<&str> = vec!["a", "b", "c", "d", "e"];
    let mut args = vec!["--topic", "orders", "--partition", "1"];
    args.extend_from_slice(&five);
    assert_eq!(broker.producer(&args, None).wait_exit().code(), Some(0));
    let status = broker.wait_for_status("orders/1 persisted", |s| {
        s["rings"][1]["persisted_offset"] == 5
    });
    assert_eq!(status["rings"][1]["topic"], "orders");
    assert_eq!(status["rings"][1]["partition"], 1);
    assert_eq!(status["rings"][1]["next_offset"], 5);
    assert_eq!(status["rings"][0]["next_offset"], 0, "orders/0 had none");
    let m = scrape(&addr);
    let orders = |p: &'static str| [("topic", "orders"), ("partition", p)];
    assert_eq!(
        value(&m, "minikafka_messages_published_total", &orders("1")),
        5.0
    );
    assert_eq!(
        value(&m, "minikafka_messages_persisted_total", &orders("1")),
        5.0
    );
    assert_eq!(
        value(&m, "minikafka_messages_published_total", &orders("0")),
        0.0
    );
    assert_eq!(value(&m, "minikafka_ring_slots", &orders("1")), 64.0);
    assert_eq!(
        value(&m, "minikafka_messages_published_total", &PARTITION),
        0.0
    );
    broker.stop();
}
