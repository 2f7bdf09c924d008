//! The Kafka port (SPEC §12) against unmodified Kafka clients: Debian's kcat
//! (librdkafka), kafka-python and confluent-kafka (`make test` installs them).
//! Messages produced over Kafka are read by shared-memory readers and the
//! reverse, in the same topics, partitions and offsets, byte for byte, with
//! both audit files kept.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use audit_format::escape::unescape;
use e2e::kafka_clients::{kafka_broker, kcat, python, spawn_python};
use e2e::{json_lines, payload_of, read_until_closed, Broker, Proc, StdoutMode};

/// A message: its key, if any, and its payload.
type Message = (Option<Vec<u8>>, Vec<u8>);

/// Record headers: name and value.
type Headers = Vec<(String, Vec<u8>)>;

/// A persistence-file line: partition, offset, producer, key, payload.
type Persisted = (u32, u64, String, Option<Vec<u8>>, Vec<u8>);

/// The persistence file's lines of `topic`, unescaped.
fn persisted(broker: &Broker, topic: &str) -> Vec<Persisted> {
    broker
        .data_lines_so_far("persistencia_mensajes.txt")
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0] == topic).then(|| {
                let key = (f[5] != "-").then(|| unescape(f[5]).unwrap());
                (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[4].to_string(),
                    key,
                    unescape(f[6]).unwrap(),
                )
            })
        })
        .collect()
}

/// Waits until the file `name` holds at least `n` lines of `topic` (in
/// `column`).
fn wait_lines(broker: &Broker, name: &str, topic: &str, column: usize, n: usize) -> Vec<String> {
    broker.wait_data_lines(name, n, |l| l.split('\t').nth(column) == Some(topic))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Messages as client.py reads them: JSON lines of hex key (or null), value
/// and headers.
fn as_client_input(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v)) in messages.iter().enumerate() {
        let h: Vec<(String, String)> = headers_of(i)
            .into_iter()
            .map(|(n, v)| (n, hex(&v)))
            .collect();
        let line = serde_json::json!({"k": k.as_deref().map(hex), "v": hex(v), "h": h});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Messages of every kind of byte: keyless ones, empty ones, bytes that are
/// not UTF-8, and what the files escape.
fn varied_messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let key = (i % 5 != 0).then(|| format!("key-{}", i % 7).into_bytes());
            let mut value = format!("{i}:\t\\\n").into_bytes();
            value.extend((0..(i * 13) % 300).map(|j| ((i * 31 + j * 7) % 256) as u8));
            (key, value)
        })
        .collect()
}

/// The headers message `i` is sent with: none for some, several for others,
/// with bytes the file's header column escapes.
fn headers_of(i: usize) -> Headers {
    match i % 3 {
        0 => Vec::new(),
        1 => vec![("trace-id".to_string(), format!("t-{i}").into_bytes())],
        _ => vec![
            ("n=1;x".to_string(), vec![0, 0xff, b'\t', b';']),
            ("empty".to_string(), Vec::new()),
        ],
    }
}

fn headers_in(v: &serde_json::Value) -> Headers {
    v["h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_string(),
                unhex(h[1].as_str().unwrap()),
            )
        })
        .collect()
}

fn key_of(v: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine;
    if let Some(k) = v["key"].as_str() {
        return Some(k.as_bytes().to_vec());
    }
    v["key_base64"]
        .as_str()
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
}

/// Reads `count` records of `topic` from offset 0 with a shared-memory reader;
/// its JSON lines.
fn read_shared_memory(broker: &Broker, topic: &str, count: usize) -> Vec<serde_json::Value> {
    let count_arg = count.to_string();
    let (reader, _) = broker.reader(
        &[
            "--topic", topic, "--from", "earliest", "--count", &count_arg, "--format", "json",
        ],
        StdoutMode::Collect,
    );
    let f = reader.wait_exit();
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    json_lines(&f.stdout)
}

#[test]
fn kcat_produces_keyed_messages_that_shared_memory_reads_in_our_partitions_and_key_order() {
    let (broker, kafka) = kafka_broker(&["--topics", "orders:4"]);
    const N: usize = 100_000;
    let mut input = Vec::new();
    for i in 0..N {
        // Tabs, backslashes and multi-byte UTF-8 exercise the files' escaping.
        input.extend_from_slice(
            format!("key-{}:{i}\tτ\\{}\n", i % 101, "x".repeat(i % 40)).as_bytes(),
        );
    }
    kcat(
        &[
            "-b",
            &kafka,
            "-P",
            "-t",
            "orders",
            "-K",
            ":",
            "-X",
            "partitioner=murmur2_random",
        ],
        Some(input),
    );
    let read = read_shared_memory(&broker, "orders", N);
    assert_eq!(read.len(), N);
    let mut last_of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut seen = vec![false; N];
    for r in &read {
        let key = key_of(r).expect("every message has a key");
        let payload = payload_of(r);
        let text = String::from_utf8(payload.clone()).unwrap();
        let i: usize = text.split('\t').next().unwrap().parse().unwrap();
        assert_eq!(
            payload,
            format!("{i}\tτ\\{}", "x".repeat(i % 40)).into_bytes(),
            "byte-exact"
        );
        assert_eq!(key, format!("key-{}", i % 101).into_bytes());
        assert_eq!(
            r["partition"].as_u64().unwrap() as u32,
            partitioner::partition_for_key(&key, 4),
            "key {} is in the partition our producer picks",
            String::from_utf8_lossy(&key)
        );
        assert_eq!(r["producer"], "kafka:rdkafka");
        // Readers read each partition in offset order: a key's messages come
        // in the order they were sent.
        if let Some(&before) = last_of_key.get(&key) {
            assert!(before < i, "key order: {before} then {i}");
        }
        last_of_key.insert(key, i);
        assert!(!std::mem::replace(&mut seen[i], true), "message {i} twice");
    }
    let files = persisted(&broker, "orders");
    assert_eq!(files.len(), N, "every message once in the persistence file");
    assert!(files
        .iter()
        .all(|(_, _, producer, ..)| producer == "kafka:rdkafka"));
    broker.stop();
}

#[test]
fn kcat_reads_from_offset_zero_what_shared_memory_sent_after_it_left_the_ring() {
    let (broker, kafka) = kafka_broker(&["--topics", "events", "--slots", "64"]);
    const N: usize = 3000;
    let count = N.to_string();
    let sent = broker
        .producer(
            &["--topic", "events", "--count", &count, "--size", "100"],
            None,
        )
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    wait_lines(&broker, "persistencia_mensajes.txt", "events", 0, N);
    let files = persisted(&broker, "events");
    // A ring of 64 slots and no group holding it: all but the last few dozen
    // records left it, and kcat reads them from the file.
    let out = kcat(
        &[
            "-b",
            &kafka,
            "-C",
            "-t",
            "events",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%o %S\n%s\n",
        ],
        None,
    );
    let text = out.stdout;
    let mut got = Vec::new();
    let mut rest = &text[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let head = std::str::from_utf8(&rest[..nl]).unwrap();
        let (offset, size) = head.split_once(' ').unwrap();
        let size: usize = size.parse().unwrap();
        let payload = rest[nl + 1..nl + 1 + size].to_vec();
        got.push((offset.parse::<u64>().unwrap(), payload));
        rest = &rest[nl + 1 + size + 1..];
    }
    let expected: Vec<(u64, Vec<u8>)> = files.into_iter().map(|(_, o, _, _, p)| (o, p)).collect();
    assert_eq!(got.len(), N);
    assert_eq!(
        got, expected,
        "kcat reads exactly what was sent, from offset 0"
    );
    // Every record kcat fetched has its consumption-log line.
    let logged = wait_lines(&broker, "log_consumo.txt", "events", 1, N);
    let mut offsets: Vec<u64> = logged
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(&f[5..8], ["-", "rdkafka", "1"], "{l}");
            f[3].parse().unwrap()
        })
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..N as u64).collect::<Vec<_>>());
    broker.stop();
}

/// Produces `messages` to `topic` with a Python client (gzip, headers on most),
/// then reads them back with the same client and with a shared-memory reader:
/// all byte-exact, at the offsets the client was told. The ring is small and
/// nobody holds it: most of them are fetched from the file, the last ones from
/// the ring, headers and all.
fn round_trip(library: &str) {
    let (broker, kafka) = kafka_broker(&["--topics", "py:3", "--slots", "64"]);
    let messages = varied_messages(500);
    let sent = python(
        library,
        "produce",
        &[&kafka, "py", "--gzip", "--acks", "all"],
        Some(as_client_input(&messages)),
    );
    let placed: Vec<(u32, u64)> = json_lines(&sent.stdout)
        .iter()
        .map(|v| (v["p"].as_u64().unwrap() as u32, v["o"].as_u64().unwrap()))
        .collect();
    assert_eq!(placed.len(), messages.len());
    for ((key, _), (partition, _)) in messages.iter().zip(&placed) {
        if let Some(k) = key {
            assert_eq!(*partition, partitioner::partition_for_key(k, 3));
        }
    }
    let by_place: HashMap<(u32, u64), (&Message, Headers)> = placed
        .iter()
        .copied()
        .zip(messages.iter().enumerate().map(|(i, m)| (m, headers_of(i))))
        .collect();
    assert_eq!(
        by_place.len(),
        messages.len(),
        "every message at its own offset"
    );
    let fetched = python(
        library,
        "consume",
        &[&kafka, "py", &messages.len().to_string()],
        None,
    );
    let fetched = json_lines(&fetched.stdout);
    assert_eq!(fetched.len(), messages.len());
    for v in fetched {
        let place = (v["p"].as_u64().unwrap() as u32, v["o"].as_u64().unwrap());
        let ((key, value), headers) = &by_place[&place];
        assert_eq!(v["k"].as_str().map(unhex), *key, "{place:?}");
        assert_eq!(unhex(v["v"].as_str().unwrap()), *value, "{place:?}");
        assert_eq!(headers_in(&v), *headers, "{place:?}");
    }
    // The persistence file shows each record's headers in an eighth column.
    let index_of: HashMap<(u32, u64), usize> = placed
        .iter()
        .copied()
        .enumerate()
        .map(|(i, place)| (place, i))
        .collect();
    wait_lines(
        &broker,
        "persistencia_mensajes.txt",
        "py",
        0,
        messages.len(),
    );
    for line in broker.data_lines_so_far("persistencia_mensajes.txt") {
        let f: Vec<&str> = line.split('\t').collect();
        if f[0] != "py" {
            continue;
        }
        let i = index_of[&(f[1].parse().unwrap(), f[2].parse().unwrap())];
        let column = match i % 3 {
            0 => None,
            1 => Some(format!("trace-id=t-{i}")),
            _ => Some("n\\x3d1\\x3bx=\\x00\\xff\\t\\x3b;empty=".to_string()),
        };
        assert_eq!(f.get(7).map(|c| c.to_string()), column, "{line}");
        assert_eq!(f.len(), if column.is_some() { 8 } else { 7 }, "{line}");
    }
    for r in read_shared_memory(&broker, "py", messages.len()) {
        let place = (
            r["partition"].as_u64().unwrap() as u32,
            r["offset"].as_u64().unwrap(),
        );
        let ((key, value), _) = &by_place[&place];
        assert_eq!(key_of(&r), *key);
        assert_eq!(payload_of(&r), *value);
    }
    broker.stop();
}

#[test]
fn kafka_python_produces_and_fetches_gzip_batches_byte_exact() {
    round_trip("kafka-python");
}

#[test]
fn confluent_kafka_produces_and_fetches_gzip_batches_byte_exact() {
    round_trip("confluent-kafka");
}

#[test]
fn kafka_python_takes_the_broker_for_kafka_2_or_later() {
    let (broker, kafka) = kafka_broker(&[]);
    let f = python("kafka-python", "api-version", &[&kafka], None);
    let v: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    let version: Vec<u64> = v["api_version"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(version >= vec![2, 0], "{version:?}");
    broker.stop();
}

#[test]
fn a_topic_created_by_a_kafka_client_is_listed_by_broker_topics() {
    let (broker, kafka) = kafka_broker(&[]);
    python(
        "kafka-python",
        "create-topic",
        &[&kafka, "made.by-kafka", "3"],
        None,
    );
    let topics = broker.topics();
    let made = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "made.by-kafka")
        .unwrap_or_else(|| panic!("not listed: {topics}"));
    assert_eq!(made["partitions"].as_array().unwrap().len(), 3);
    broker.stop();
}

/// One request frame: size, API key, version, correlation id, client id, body.
fn request(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&api_key.to_be_bytes());
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&correlation.to_be_bytes());
    r.extend_from_slice(&4i16.to_be_bytes());
    r.extend_from_slice(b"test");
    r.extend_from_slice(body);
    let mut framed = (r.len() as i32).to_be_bytes().to_vec();
    framed.extend(r);
    framed
}

fn response(stream: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).unwrap();
    body
}

#[test]
fn a_request_not_served_gets_kafkas_error_and_the_connection_stays_open() {
    let (broker, kafka) = kafka_broker(&[]);
    let mut s = TcpStream::connect(&kafka).unwrap();
    s.set_read_timeout(Some(e2e::DEADLINE)).unwrap();
    // InitProducerId v0: transactional id null, timeout 1000 ms.
    let mut body = (-1i16).to_be_bytes().to_vec();
    body.extend_from_slice(&1000i32.to_be_bytes());
    s.write_all(&request(22, 0, 7, &body)).unwrap();
    let r = response(&mut s);
    assert_eq!(&r[..4], &7i32.to_be_bytes(), "correlation id");
    // throttle_time_ms, then error_code UNSUPPORTED_VERSION (35).
    assert_eq!(&r[8..10], &35i16.to_be_bytes());
    // DeleteTopics v1 of topic "x": its one result carries the error.
    let mut body = 1i32.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(b"x");
    body.extend_from_slice(&1000i32.to_be_bytes());
    s.write_all(&request(20, 1, 9, &body)).unwrap();
    let r = response(&mut s);
    assert_eq!(&r[..4], &9i32.to_be_bytes(), "correlation id");
    // throttle_time_ms, one result: name "x", error_code 35.
    assert_eq!(&r[8..12], &1i32.to_be_bytes());
    assert_eq!(&r[12..15], &[0, 1, b'x']);
    assert_eq!(&r[15..17], &35i16.to_be_bytes());
    // SASL on a port that asks for no credentials: no mechanism is offered
    // (UNSUPPORTED_SASL_MECHANISM, 33), and the connection goes on.
    let mut body = 13i16.to_be_bytes().to_vec();
    body.extend_from_slice(b"SCRAM-SHA-256");
    s.write_all(&request(17, 1, 10, &body)).unwrap();
    let r = response(&mut s);
    assert_eq!(&r[..4], &10i32.to_be_bytes(), "correlation id");
    assert_eq!(&r[4..6], &33i16.to_be_bytes());
    assert_eq!(&r[6..10], &0i32.to_be_bytes(), "no mechanism");
    // The same connection is served on: ApiVersions v0.
    s.write_all(&request(18, 0, 8, &[])).unwrap();
    let r = response(&mut s);
    assert_eq!(&r[..4], &8i32.to_be_bytes());
    assert_eq!(&r[4..6], &0i16.to_be_bytes(), "no error");
    broker.stop();
}

#[test]
fn hostile_input_on_the_kafka_port_costs_only_its_own_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let (broker, kafka) = kafka_broker(&["--topics", "t,s"]);
    let rss = e2e::PeakRss::watch(broker.proc.pid);
    let mut attacks = Vec::new();
    let closed_by_broker = |bytes: Vec<u8>| {
        let a = kafka.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            let _ = s.write_all(&bytes);
            read_until_closed(s)
        })
    };
    // An HTTP request: its first four bytes, taken for a size, are out of bounds.
    attacks.push(closed_by_broker(
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
    ));
    // A frame of the right size full of garbage.
    let mut garbage = 2000i32.to_be_bytes().to_vec();
    garbage.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    attacks.push(closed_by_broker(garbage));
    // A size prefix of 2 GiB: refused before any allocation.
    attacks.push(closed_by_broker(i32::MAX.to_be_bytes().to_vec()));
    // A well-framed request for an API key Kafka does not have.
    attacks.push(closed_by_broker(request(9999, 0, 1, &[])));
    // A frame cut short, then the end of the stream.
    let a = kafka.clone();
    attacks.push(std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        let whole = request(18, 0, 1, &[]);
        s.write_all(&whole[..whole.len() - 3]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        read_until_closed(s)
    }));
    // Three hundred idle connections, kept open through the transfers.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&kafka).unwrap())
        .collect();
    // A produce of 1 MiB written a byte at a time, slowly.
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow = {
        let (a, stop) = (kafka.clone(), slow_done.clone());
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&a).unwrap();
            let mut frame = (1i32 << 20).to_be_bytes().to_vec();
            frame.extend_from_slice(&0i16.to_be_bytes());
            frame.extend_from_slice(&9i16.to_be_bytes());
            for b in frame.iter().chain(std::iter::repeat(&0u8)) {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5)); // the attack's own pace
            }
        })
    };

    // Meanwhile, both paths carry their messages exactly.
    const N: usize = 20_000;
    let input: String = (0..N).map(|i| format!("k{}:kafka {i}\n", i % 10)).collect();
    kcat(
        &["-b", &kafka, "-P", "-t", "t", "-K", ":"],
        Some(input.into_bytes()),
    );
    let lines: String = (0..N).map(|i| format!("shm {i}\n")).collect();
    let p = broker
        .producer(&["--topic", "s"], Some(lines.into_bytes()))
        .wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    let read = read_shared_memory(&broker, "t", N);
    let mut got: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8(payload_of(r)).unwrap())
        .collect();
    got.sort_by_key(|s| s[6..].parse::<usize>().unwrap());
    assert_eq!(
        got,
        (0..N).map(|i| format!("kafka {i}")).collect::<Vec<_>>()
    );
    let fetched = kcat(
        &["-b", &kafka, "-C", "-t", "s", "-o", "beginning", "-e"],
        None,
    );
    assert_eq!(
        fetched.stdout_text(),
        (0..N).map(|i| format!("shm {i}\n")).collect::<String>()
    );

    for a in attacks {
        a.join()
            .expect("the broker closed the attacking connection");
    }
    // The idle connections were served all along: one of them answers now.
    let mut one = idle.into_iter().next().unwrap();
    one.set_read_timeout(Some(e2e::DEADLINE)).unwrap();
    one.write_all(&request(18, 0, 5, &[])).unwrap();
    assert_eq!(&response(&mut one)[..4], &5i32.to_be_bytes());
    slow_done.store(true, Ordering::Relaxed);
    slow.join().unwrap();
    let peak_mib = rss.stop();
    println!("broker peak RSS during the attacks: {peak_mib} MiB");
    assert!(peak_mib < 256, "broker RSS reached {peak_mib} MiB");
    broker.stop();
}

#[test]
fn under_fsync_acks_all_returns_only_once_the_records_are_in_the_file() {
    let (broker, kafka) = kafka_broker(&["--topics", "durable", "--fsync"]);
    let file = broker.data.0.join("persistencia_mensajes.txt");
    let messages = varied_messages(50);
    // The client reads the file as each send returns.
    let sent = python(
        "kafka-python",
        "produce",
        &[
            &kafka,
            "durable",
            "--acks",
            "all",
            "--check-file",
            &file.display().to_string(),
        ],
        Some(as_client_input(&messages)),
    );
    assert_eq!(json_lines(&sent.stdout).len(), messages.len());
    broker.stop();
}

#[test]
fn list_offsets_finds_the_earliest_the_end_and_the_first_at_a_time() {
    let (broker, kafka) = kafka_broker(&["--topics", "timed"]);
    let send = |first: usize| {
        let lines: String = (first..first + 5).map(|i| format!("m{i}\n")).collect();
        let p = broker
            .producer(&["--topic", "timed"], Some(lines.into_bytes()))
            .wait_exit();
        assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    send(0);
    // A millisecond none of the first five was published in, and none of the
    // next five will be: the clock is waited past it before they are sent.
    let between = now_ms() + 1;
    while now_ms() <= between {
        std::thread::yield_now();
    }
    send(5);
    let f = python(
        "kafka-python",
        "offsets",
        &[&kafka, "timed", "0", &between.to_string()],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"earliest": 0, "latest": 10, "at_time": 5})
    );
    broker.stop();
}

/// ListOffsets v1 for partition 0 of `topic` at `timestamp` (-2 earliest, -1
/// latest): the offset answered.
fn list_offset(s: &mut TcpStream, topic: &str, timestamp: i64) -> i64 {
    let mut body = (-1i32).to_be_bytes().to_vec();
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&timestamp.to_be_bytes());
    s.write_all(&request(2, 1, 1, &body)).unwrap();
    let r = response(s);
    // correlation id, one topic (name), one partition: index, error, time, offset.
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    assert_eq!(&r[at..at + 2], &0i16.to_be_bytes(), "no error");
    i64::from_be_bytes(r[at + 10..at + 18].try_into().unwrap())
}

#[test]
fn the_earliest_offset_is_found_in_the_file_as_soon_as_records_leave_the_ring() {
    let (broker, kafka) = kafka_broker(&["--topics", "fresh", "--slots", "64"]);
    let mut s = TcpStream::connect(&kafka).unwrap();
    s.set_read_timeout(Some(e2e::DEADLINE)).unwrap();
    // Asked while the partition has no record anywhere.
    assert_eq!(list_offset(&mut s, "fresh", -2), 0);
    // Then 1,000 records pass through its 64 slots: most left the ring, for
    // the file, at once.
    let lines: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    let p = broker
        .producer(&["--topic", "fresh"], Some(lines.into_bytes()))
        .wait_exit();
    assert_eq!(p.code(), Some(0), "{:?}", p.stderr);
    assert_eq!(list_offset(&mut s, "fresh", -1), 1000);
    assert_eq!(
        list_offset(&mut s, "fresh", -2),
        0,
        "the first, from the file"
    );
    broker.stop();
}

#[test]
fn the_kafka_port_off_loopback_needs_users_and_hands_out_the_advertised_address() {
    // Another address lets other hosts in: they must authenticate.
    for bind in ["0.0.0.0", "192.0.2.1"] {
        let f = Proc::spawn(
            &e2e::bin("broker"),
            &["--port", "0", "--kafka-port", "0", "--kafka-bind", bind],
            None,
            StdoutMode::Collect,
        )
        .wait_exit();
        assert_eq!(f.code(), Some(2), "{:?}", f.stderr);
        assert!(
            f.last_stderr_line().contains("--kafka-users") && f.last_stderr_line().contains(bind),
            "{:?}",
            f.stderr
        );
        assert!(f.stdout.is_empty(), "never ready");
    }
    let (broker, kafka) = kafka_broker(&["--kafka-advertise", "kafka.example:19092"]);
    let listed = kcat(&["-b", &kafka, "-L"], None).stdout_text();
    assert!(
        listed.contains("broker 0 at kafka.example:19092"),
        "{listed}"
    );
    broker.stop();
}

#[test]
fn a_produce_with_acks_0_is_never_answered_and_its_records_arrive() {
    let (broker, kafka) = kafka_broker(&["--topics", "quiet"]);
    let messages = varied_messages(200);
    python(
        "kafka-python",
        "produce",
        &[&kafka, "quiet", "--acks", "0"],
        Some(as_client_input(&messages)),
    );
    // kafka-python reports offset -1 for what it was never answered; the
    // records are there all the same, in order.
    let read = read_shared_memory(&broker, "quiet", messages.len());
    let got: Vec<Vec<u8>> = read.iter().map(payload_of).collect();
    let sent: Vec<Vec<u8>> = messages.into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, sent);
    broker.stop();
}

#[test]
fn a_fetch_at_the_end_waits_for_the_next_message_and_answers_with_it() {
    let (broker, kafka) = kafka_broker(&["--topics", "waits"]);
    let mut s = TcpStream::connect(&kafka).unwrap();
    s.set_read_timeout(Some(e2e::DEADLINE)).unwrap();
    // Fetch v4 of waits/0 from offset 0 (its end): max_wait_ms 30 s, min_bytes 1.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&30_000i32.to_be_bytes()); // max_wait_ms
    body.extend_from_slice(&1i32.to_be_bytes()); // min_bytes
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max_bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&5i16.to_be_bytes());
    body.extend_from_slice(b"waits");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes()); // partition
    body.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // partition max bytes
    let started = std::time::Instant::now();
    s.write_all(&request(1, 4, 3, &body)).unwrap();
    // It waits: the message it answers with is sent only now.
    let sent = broker
        .producer(&["--topic", "waits", "the awaited message"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let r = response(&mut s);
    println!(
        "a waiting fetch answered {:?} after it was sent",
        started.elapsed()
    );
    assert_eq!(&r[..4], &3i32.to_be_bytes());
    let found = r
        .windows(b"the awaited message".len())
        .any(|w| w == b"the awaited message");
    assert!(found, "the answer carries the message");
    broker.stop();
}

#[test]
fn a_kafka_records_headers_go_with_it_to_the_dead_letter_topic() {
    let (broker, kafka) =
        kafka_broker(&["--topics", "jobs", "--groups", "0", "--max-attempts", "1"]);
    let member = |fault: Option<&str>| {
        let env: Vec<(&str, &str)> = fault.map(|f| ("MINIKAFKA_FAULT", f)).into_iter().collect();
        let mut p = e2e::Proc::spawn_env(
            &e2e::bin("consumer"),
            &broker.client_args(&["--group", "g", "--topic", "jobs", "--format", "none"]),
            None,
            StdoutMode::Collect,
            &env,
        );
        p.wait_stderr("joined group ");
        p
    };
    // The member dies once it has printed the message: one delivery without an
    // acknowledgement is all --max-attempts 1 allows.
    let first = member(Some("consumer-printed:1"));
    let input = serde_json::json!({"k": hex(b"job-1"), "v": hex(b"poison"), "h": [["trace-id", hex(b"t-1")]]});
    python(
        "kafka-python",
        "produce",
        &[&kafka, "jobs"],
        Some(format!("{input}\n").into_bytes()),
    );
    assert_eq!(first.wait_exit().code(), None, "killed by its fault");
    // The group publishes its dead letters while it has members.
    let second = member(None);
    let dead = wait_lines(&broker, "persistencia_mensajes.txt", "jobs.dlq", 0, 1);
    let f: Vec<&str> = dead[0].split('\t').collect();
    assert_eq!(
        (f[4], f[5], f[6], f.get(7).copied()),
        ("dlq:g", "job-1", "poison", Some("trace-id=t-1")),
        "{}",
        dead[0]
    );
    second.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(second.wait_exit().code(), Some(0));
    broker.stop();
}

#[test]
fn a_broker_killed_under_kafka_produce_keeps_every_record_it_acknowledged() {
    let (broker, kafka) = kafka_broker(&["--topics", "kept"]);
    let watcher = e2e::Watcher::default();
    let client = spawn_python(
        "kafka-python",
        "produce-until-failure",
        &[&kafka, "kept"],
        StdoutMode::Watched(watcher.clone()),
    );
    // Killed in the middle of the stream, after a few thousand acknowledgements.
    watcher.wait_until(
        "the client's acknowledgements",
        std::time::Duration::from_millis(100),
        || match client.stdout_lines_so_far() {
            n if n >= 3000 => Ok(()),
            n => Err(format!("{n} of 3000 acknowledged")),
        },
    );
    let (data, shm) = broker.kill();
    let mut out = client.take_stdout_so_far();
    out.extend(client.wait_exit().stdout);
    let acknowledged = json_lines(&out);
    assert!(acknowledged.len() >= 3000);
    // The next broker recovers the region: every acknowledged record is in the
    // file, once, at the offset the client was told.
    let broker = Broker::start_with(data, shm, &["--topics", "kept", "--flush-interval", "10ms"]);
    let files = persisted(&broker, "kept");
    let by_offset: HashMap<u64, &Vec<u8>> = files.iter().map(|(_, o, _, _, v)| (*o, v)).collect();
    assert_eq!(by_offset.len(), files.len(), "no offset twice");
    for a in &acknowledged {
        let offset = a["o"].as_u64().unwrap();
        assert_eq!(
            by_offset.get(&offset).map(|v| v.as_slice()),
            Some(a["v"].as_str().unwrap().as_bytes()),
            "acknowledged offset {offset}"
        );
    }
    println!(
        "{} acknowledged, {} in the file after the restart",
        acknowledged.len(),
        files.len()
    );
    broker.stop();
}

#[test]
fn kafkas_admin_client_lists_and_describes_the_shared_memory_groups() {
    let (broker, kafka) = kafka_broker(&["--groups", "alpha,beta", "--assignment", "partition"]);
    let (member, _) = broker.consumer(&["--group", "alpha", "--id", "worker-1"]);
    let f = python(
        "kafka-python",
        "groups",
        &[&kafka, "alpha", "beta", "gamma"],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    assert_eq!(
        v["listed"],
        serde_json::json!([["alpha", "consumer"], ["beta", "consumer"]])
    );
    assert_eq!(
        v["described"],
        serde_json::json!([
            {"group": "alpha", "state": "Stable", "protocol_type": "consumer",
             "protocol": "partition", "members": ["worker-1"],
             "clients": [["worker-1", "shm"]], "assigned": []},
            {"group": "beta", "state": "Empty", "protocol_type": "consumer",
             "protocol": "partition", "members": [], "clients": [], "assigned": []},
            {"group": "gamma", "state": "Dead", "protocol_type": "",
             "protocol": "", "members": [], "clients": [], "assigned": []},
        ])
    );
    member.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(member.wait_exit().code(), Some(0));
    broker.stop();
}
