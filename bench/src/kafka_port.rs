//! W9: 64 B messages produced and then consumed over the broker's Kafka port by
//! the bench's own Kafka client (requests and responses by `kacrab-protocol`,
//! record batches by the broker's own `kafka-listener` code), beside a Redis
//! Streams baseline in the same run: Debian's `redis-server`, started and
//! stopped here, fed by a pipelining producer and read by a consumer group.
//!
//! Each side is a worker process that prints `ready`, then one JSON line:
//! `{"secs": .., "cpu_s": .., "count": ..}`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kacrab_protocol::generated::fetch_request::{FetchPartition, FetchRequestData, FetchTopic};
use kacrab_protocol::generated::fetch_response::FetchResponseData;
use kacrab_protocol::generated::produce_request::{
    PartitionProduceData, ProduceRequestData, TopicProduceData,
};
use kacrab_protocol::generated::produce_response::ProduceResponseData;
use kacrab_protocol::generated::request_header::RequestHeaderData;
use kacrab_protocol::KafkaString;
use kafka_listener::batch::{batches, BatchWriter};
use serde_json::json;

use crate::workers::Args;

/// Records per produce request (Kafka's clients batch by bytes: 16 KiB by
/// default; this is 64 KiB of 64 B records).
const PER_BATCH: u64 = 1000;
/// Produce requests on the wire at once (librdkafka's default is 1 000 000;
/// Java's 5).
const IN_FLIGHT: usize = 8;
const PRODUCE_VERSION: i16 = 7;
pub(crate) const FETCH_VERSION: i16 = 11;
pub(crate) const FETCH_BYTES: i32 = 4 << 20;

pub(crate) fn frame(
    api_key: i16,
    version: i16,
    correlation: i32,
    write: impl FnOnce(&mut BytesMut),
) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    let header = RequestHeaderData {
        request_api_key: api_key,
        request_api_version: version,
        correlation_id: correlation,
        client_id: Some(KafkaString::from("mini-kafka-bench".to_string())),
        ..Default::default()
    };
    header.write(&mut out, 1).expect("request header");
    write(&mut out);
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.to_vec()
}

/// Reads one response; returns its body after the correlation id.
pub(crate) fn response(stream: &mut TcpStream, correlation: i32) -> Bytes {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response");
    assert_eq!(
        body[..4],
        correlation.to_be_bytes(),
        "responses come in order"
    );
    Bytes::from(body).slice(4..)
}

pub(crate) fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// A payload of `size` bytes (at least 16), its sequence number first in hex:
/// written over the same buffer for each message.
fn stamp(payload: &mut [u8], seq: u64) {
    payload[..16].copy_from_slice(&crate::workers::hex_digits(seq));
}

/// `kafka-produce broker=HOST:PORT topic=T count=N size=B [partitions=P]`:
/// acks 1, batches of [`PER_BATCH`] dealt over the P partitions in turn,
/// [`IN_FLIGHT`] requests in flight.
pub fn kafka_produce(args: &Args) {
    let (count, size) = (args.num("count"), args.num("size") as usize);
    let partitions = args
        .opt("partitions")
        .map_or(1, |p| p.parse::<i32>().expect("partitions"));
    let mut batches_sent = 0i32;
    let topic = args.get("topic").to_string();
    let mut stream = TcpStream::connect(args.get("broker")).expect("connect to the Kafka port");
    stream.set_nodelay(true).expect("nodelay");
    crate::workers::ready();
    let started = Instant::now();
    let (mut sent, mut correlation, mut waiting) = (0u64, 0i32, std::collections::VecDeque::new());
    let mut batch = Vec::new();
    let mut p = vec![b'.'; size.max(16)];
    while sent < count || !waiting.is_empty() {
        if sent < count && waiting.len() < IN_FLIGHT {
            let n = PER_BATCH.min(count - sent);
            batch.clear();
            let mut w = BatchWriter::begin(&mut batch, 0, 0);
            for i in 0..n {
                stamp(&mut p, sent + i);
                w.push(&mut batch, i, 0, None, &p, &[]);
            }
            w.finish(&mut batch);
            let request = ProduceRequestData {
                acks: 1,
                timeout_ms: 30_000,
                topic_data: vec![TopicProduceData {
                    name: KafkaString::from(topic.clone()),
                    partition_data: vec![PartitionProduceData {
                        index: batches_sent % partitions,
                        records: Some(Bytes::copy_from_slice(&batch)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            correlation += 1;
            let bytes = frame(0, PRODUCE_VERSION, correlation, |out| {
                request
                    .write(out, PRODUCE_VERSION)
                    .expect("produce request");
            });
            stream.write_all(&bytes).expect("send");
            waiting.push_back(correlation);
            sent += n;
            batches_sent += 1;
            continue;
        }
        let c = waiting.pop_front().expect("a request in flight");
        let mut body = response(&mut stream, c);
        let r = ProduceResponseData::read(&mut body, PRODUCE_VERSION).expect("produce response");
        for t in &r.responses {
            for p in &t.partition_responses {
                assert_eq!(p.error_code, 0, "produce failed");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"secs": secs, "cpu_s": cpu_seconds(), "count": count})
    );
}

/// `kafka-consume broker=HOST:PORT topic=T count=N`: fetches from offset 0
/// until N records came, one fetch at a time.
pub fn kafka_consume(args: &Args) {
    let count = args.num("count");
    let topic = args.get("topic").to_string();
    let mut stream = TcpStream::connect(args.get("broker")).expect("connect to the Kafka port");
    stream.set_nodelay(true).expect("nodelay");
    crate::workers::ready();
    let started = Instant::now();
    let (mut next, mut correlation, mut bytes_seen) = (0u64, 0i32, 0u64);
    while next < count {
        let request = FetchRequestData {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            topics: vec![FetchTopic {
                topic: KafkaString::from(topic.clone()),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: next as i64,
                    partition_max_bytes: FETCH_BYTES,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        correlation += 1;
        let bytes = frame(1, FETCH_VERSION, correlation, |out| {
            request.write(out, FETCH_VERSION).expect("fetch request");
        });
        stream.write_all(&bytes).expect("send");
        let mut body = response(&mut stream, correlation);
        let r = FetchResponseData::read(&mut body, FETCH_VERSION).expect("fetch response");
        let mut scratch = Vec::new();
        for t in &r.responses {
            for p in &t.partitions {
                assert_eq!(p.error_code, 0, "fetch failed");
                let records = p.records.clone().unwrap_or_default();
                bytes_seen += records.len() as u64;
                for b in batches(&records) {
                    let b = b.expect("a whole batch");
                    for rec in b.records(&mut scratch, usize::MAX).expect("records") {
                        let rec = rec.expect("a record");
                        let offset = b.base_offset() + rec.offset_delta as u64;
                        assert_eq!(offset, next, "records in offset order");
                        next += 1;
                    }
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"secs": secs, "cpu_s": cpu_seconds(), "count": next, "bytes": bytes_seen})
    );
}

/// `redis-produce redis=HOST:PORT count=N size=B`: XADD, pipelined
/// [`PER_BATCH`] at a time.
pub fn redis_produce(args: &Args) {
    let (count, size) = (args.num("count"), args.num("size") as usize);
    let client = redis::Client::open(format!("redis://{}/", args.get("redis"))).expect("redis URL");
    let mut con = client.get_connection().expect("connect to redis");
    crate::workers::ready();
    let started = Instant::now();
    let mut sent = 0;
    let mut p = vec![b'.'; size.max(16)];
    while sent < count {
        let n = PER_BATCH.min(count - sent);
        let mut pipe = redis::pipe();
        for i in 0..n {
            stamp(&mut p, sent + i);
            pipe.cmd("XADD")
                .arg("w9")
                .arg("*")
                .arg("m")
                .arg(&p[..])
                .ignore();
        }
        pipe.query::<()>(&mut con).expect("XADD");
        sent += n;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"secs": secs, "cpu_s": cpu_seconds(), "count": count})
    );
}

/// `redis-consume redis=HOST:PORT count=N`: a consumer group reads the stream
/// from its start, [`PER_BATCH`] at a time, acknowledging each batch.
pub fn redis_consume(args: &Args) {
    let count = args.num("count");
    let client = redis::Client::open(format!("redis://{}/", args.get("redis"))).expect("redis URL");
    let mut con = client.get_connection().expect("connect to redis");
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("w9")
        .arg("g")
        .arg("0")
        .query::<()>(&mut con)
        .expect("XGROUP CREATE");
    crate::workers::ready();
    let started = Instant::now();
    let mut got = 0u64;
    while got < count {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(PER_BATCH)
            .arg("STREAMS")
            .arg("w9")
            .arg(">")
            .query(&mut con)
            .expect("XREADGROUP");
        let ids: Vec<String> = reply
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(|i| i.id.clone()))
            .collect();
        if ids.is_empty() {
            continue;
        }
        got += ids.len() as u64;
        redis::cmd("XACK")
            .arg("w9")
            .arg("g")
            .arg(&ids)
            .query::<()>(&mut con)
            .expect("XACK");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"secs": secs, "cpu_s": cpu_seconds(), "count": got})
    );
}
