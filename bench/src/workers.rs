//! The benchmark's worker processes. Each is this same binary started with a role;
//! it prints `ready` on stderr once connected, then one JSON line on stdout when done.
//!
//! Every payload starts with a stamp: the CLOCK_MONOTONIC send time (ns; in runs
//! as fast as possible, on one message in 16) and a sequence number, in hex, so
//! receivers measure one-way latency.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use shm_layout::spsc::SpscRing;
use shm_layout::sys::monotonic_nanos;

/// `key=value` arguments.
pub struct Args(Vec<(String, String)>);

impl Args {
    pub fn parse(args: &[String]) -> Args {
        Args(
            args.iter()
                .filter_map(|a| a.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("missing argument {key}="))
    }
    /// `key`'s value, if given.
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn num(&self, key: &str) -> u64 {
        self.get(key).parse().expect("a number")
    }
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

pub fn ready() {
    eprintln!("ready");
}

/// Bytes a stamp takes at the start of a payload.
const STAMP_LEN: usize = 32;

/// In runs as fast as possible, one message in this many carries its send time
/// (latency is measured on that sample); paced runs time every message. A clock
/// read costs about as much as moving a small message through shared memory, so
/// reading it twice for every message would measure the harness more than the
/// systems under test.
const TIMED_EVERY: u64 = 16;

/// Writes the send time (if `timed`; dashes otherwise) and the sequence number at
/// the start of `buf` (at least [`STAMP_LEN`] bytes), as 16 hex digits each:
/// printable text, like the payloads `producer --count` generates.
fn stamp(buf: &mut [u8], seq: u64, timed: bool) {
    if timed {
        buf[..16].copy_from_slice(&hex_digits(monotonic_nanos()));
    } else {
        buf[..16].fill(b'-');
    }
    buf[16..STAMP_LEN].copy_from_slice(&hex_digits(seq));
}

/// Per byte of a u128: 0x01, 0x06, 0x0F, 0x30.
const BYTES_01: u128 = u128::from_ne_bytes([0x01; 16]);
const BYTES_06: u128 = BYTES_01 * 0x06;
const BYTES_0F: u128 = BYTES_01 * 0x0F;
const BYTES_30: u128 = BYTES_01 * 0x30;

/// `value` as 16 lower-case hex digits. The stamp is written and read for every
/// message of every system measured, so it is done a word at a time: the nibbles
/// are spread one per byte, then each becomes its digit without a branch.
pub fn hex_digits(value: u64) -> [u8; 16] {
    let v = value as u128;
    let mut x = ((v & 0xFFFF_FFFF_0000_0000) << 32) | (v & 0xFFFF_FFFF);
    x = ((x & 0x0000_0000_FFFF_0000_0000_0000_FFFF_0000) << 16)
        | (x & 0x0000_0000_0000_FFFF_0000_0000_0000_FFFF);
    x = ((x & 0x0000_FF00_0000_FF00_0000_FF00_0000_FF00) << 8)
        | (x & 0x0000_00FF_0000_00FF_0000_00FF_0000_00FF);
    x = ((x & 0x00F0_00F0_00F0_00F0_00F0_00F0_00F0_00F0) << 4)
        | (x & 0x000F_000F_000F_000F_000F_000F_000F_000F);
    // Nibbles of 10 and more gain 0x27, the gap from '9' + 1 to 'a'.
    let letters = ((x + BYTES_06) >> 4) & BYTES_01;
    (x + BYTES_30 + letters * 0x27).to_be_bytes()
}

/// The value of 16 lower-case hex digits, if that is what `digits` holds.
fn parse_hex_digits(digits: [u8; 16]) -> Option<u64> {
    let c = u128::from_be_bytes(digits);
    // '0'..'9' keep their low nibble; 'a'..'f' (bit 6 set) add 9 to theirs.
    let mut x = (c & BYTES_0F) + ((c >> 6) & BYTES_01) * 9;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF_00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF_0000_FFFF_0000_FFFF;
    x = (x | (x >> 16)) & 0x0000_0000_FFFF_FFFF_0000_0000_FFFF_FFFF;
    let value = (x as u64 & 0xFFFF_FFFF) | (((x >> 64) as u64) << 32);
    // Anything but lower-case hex digits would not come back the same.
    (hex_digits(value) == digits).then_some(value)
}

/// The send time a stamped payload carries.
fn sent_at(payload: &[u8]) -> Option<u64> {
    parse_hex_digits(payload.get(..16)?.try_into().ok()?)
}

/// Waits until message `i` is due at `rate` per second (0: no pacing).
fn pace(start: Instant, i: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        if due - now > Duration::from_micros(200) {
            std::thread::sleep(due - now - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Latency and timing seen by a receiver.
struct Receipts {
    hist: Histogram<u64>,
    /// CLOCK_MONOTONIC ns of the first and last receipt.
    first: Option<u64>,
    last: u64,
    count: u64,
    bytes: u64,
}

impl Receipts {
    fn new() -> Receipts {
        Receipts {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"),
            first: None,
            last: 0,
            count: 0,
            bytes: 0,
        }
    }
    fn record(&mut self, payload: &[u8]) {
        if self.first.is_none() {
            self.first = Some(monotonic_nanos());
        }
        self.count += 1;
        self.bytes += payload.len() as u64;
        if let Some(sent) = sent_at(payload) {
            let now = monotonic_nanos();
            let _ = self.hist.record(now.saturating_sub(sent).max(1));
        }
    }
    /// Marks the last receipt: call right after it.
    fn finish(&mut self) {
        self.last = monotonic_nanos();
    }
    fn report(&self) {
        let secs = self
            .first
            .map_or(0.0, |f| self.last.saturating_sub(f) as f64 / 1e9)
            .max(1e-9);
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        let line = json!({
            "received": self.count,
            "bytes": self.bytes,
            "secs": secs,
            "p50_us": us(0.5),
            "p99_us": us(0.99),
            "p999_us": us(0.999),
            "max_us": self.hist.max() as f64 / 1000.0,
            "cpu_s": cpu_seconds(),
        });
        println!("{line}");
    }
}

fn report_sent(sent: u64, started: Instant) {
    let line =
        json!({"sent": sent, "secs": started.elapsed().as_secs_f64(), "cpu_s": cpu_seconds()});
    println!("{line}");
}

pub fn produce(a: &Args) {
    let mut p = producer::Producer::connect(a.get("broker"), Some(a.get("id"))).expect("connect");
    if let Some(topic) = a.opt("topic") {
        p.use_topic(topic, None).expect("topic");
    }
    if a.num("rate") > 0 {
        return send_paced(a, |buf| {
            p.send(buf).expect("send");
        });
    }
    // Unpaced: the fastest path the library offers, batches of 64.
    let (count, size) = (a.num("count"), a.num("size") as usize);
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| vec![b'x'; size.max(STAMP_LEN)]).collect();
    ready();
    let start = Instant::now();
    let mut i = 0;
    while i < count {
        let k = (count - i).min(64) as usize;
        for (j, b) in pool[..k].iter_mut().enumerate() {
            let seq = i + j as u64;
            stamp(b, seq, seq.is_multiple_of(TIMED_EVERY));
        }
        let key = a.opt("key").map(str::as_bytes);
        let batch: Vec<(Option<&[u8]>, &[u8])> =
            pool[..k].iter().map(|b| (key, b.as_slice())).collect();
        p.send_batch(&batch).map_err(|(_, e)| e).expect("send");
        i += k as u64;
    }
    report_sent(count, start);
}

/// A group member: `count` messages of `topic` (default `default`) in group
/// `group` (created with `assignment`, if given); with `check_order=1`, checks
/// that each key's sequence numbers only grow.
pub fn consume(a: &Args) {
    let subscription = control_protocol::Subscription {
        topics: a
            .opt("topic")
            .map(|t| vec![t.to_string()])
            .unwrap_or_default(),
        assignment: a
            .opt("assignment")
            .map(|s| control_protocol::Assignment::parse(s).expect("assignment")),
    };
    let mut c = consumer::Consumer::connect_reading(
        a.get("broker"),
        Some(a.get("id")),
        Some(a.get("group")),
        &subscription,
    )
    .expect("connect");
    let count = a.num("count");
    let check_order = a.opt("check_order") == Some("1");
    let mut last_seq: std::collections::HashMap<Vec<u8>, u64> = Default::default();
    ready();
    let mut r = Receipts::new();
    // The fastest path the library offers: batches of up to 64 borrowed in place.
    while r.count < count {
        let want = (count - r.count).min(64) as usize;
        let batch = c
            .poll_batch(want, Some(Duration::from_secs(60)))
            .expect("poll");
        if batch.is_empty() {
            panic!("no message for 60 s after {} of {count}", r.count);
        }
        for i in 0..batch.len() {
            let m = batch.get(i).expect("message");
            if check_order {
                let seq = m
                    .payload
                    .get(16..STAMP_LEN)
                    .and_then(|d| parse_hex_digits(d.try_into().ok()?))
                    .expect("a stamped payload");
                let key = m.key.unwrap_or_default().to_vec();
                if let Some(before) = last_seq.insert(key, seq) {
                    assert!(seq > before, "per-key order broken: {seq} after {before}");
                }
            }
            r.record(m.payload);
        }
    }
    r.finish();
    c.close();
    r.report();
}

/// A standalone reader: `count` messages from offset `from` (`latest`: from the
/// end, as published), of `topic` (default `default`), in batches of up to 64,
/// each its own copy.
pub fn read(a: &Args) {
    let mut reader =
        consumer::reader::Reader::connect(a.get("broker"), Some(a.get("id"))).expect("connect");
    if let Some(topic) = a.opt("topic") {
        reader.assign(topic, None).expect("topic");
    }
    if a.get("from") != "latest" {
        reader.seek(a.num("from"));
    }
    let count = a.num("count");
    ready();
    let mut r = Receipts::new();
    while r.count < count {
        let want = (count - r.count).min(64) as usize;
        let batch = reader
            .poll_batch(want, Some(Duration::from_secs(60)))
            .expect("poll");
        if batch.is_empty() {
            panic!("no message for 60 s after {} of {count}", r.count);
        }
        for m in batch {
            r.record(&m.payload);
        }
    }
    r.finish();
    r.report();
}

/// Sends `count` stamped messages of `size` bytes through `send`, one at a time,
/// paced at `rate` per second (0: as fast as possible), then reports.
fn send_paced(a: &Args, mut send: impl FnMut(&[u8])) {
    let (count, size, rate) = (a.num("count"), a.num("size") as usize, a.num("rate"));
    let mut buf = vec![b'x'; size.max(STAMP_LEN)];
    ready();
    let start = Instant::now();
    for i in 0..count {
        pace(start, i, rate);
        stamp(&mut buf, i, rate > 0 || i.is_multiple_of(TIMED_EVERY));
        send(&buf);
    }
    report_sent(count, start);
}

pub fn uds_recv(a: &Args) {
    let listener = UnixListener::bind(a.get("path")).expect("bind");
    ready();
    let (stream, _) = listener.accept().expect("accept");
    let (count, size) = (a.num("count"), a.num("size") as usize);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut buf = vec![0u8; size.max(STAMP_LEN)];
    let mut r = Receipts::new();
    for _ in 0..count {
        reader.read_exact(&mut buf).expect("read");
        r.record(&buf);
    }
    r.finish();
    r.report();
}

pub fn uds_send(a: &Args) {
    let mut stream = UnixStream::connect(a.get("path")).expect("connect");
    // One write per message, as an application sending messages would.
    send_paced(a, |buf| stream.write_all(buf).expect("write"));
}

pub fn spsc_recv(a: &Args) {
    let (count, size) = (a.num("count"), a.num("size"));
    let mut ring = SpscRing::create(a.get("name"), 4096, size.max(STAMP_LEN as u64))
        .expect("create ring")
        .into_consumer();
    ready();
    let mut r = Receipts::new();
    for _ in 0..count {
        ring.pop(|b| r.record(b));
    }
    r.finish();
    r.report();
}

pub fn spsc_send(a: &Args) {
    let mut ring = SpscRing::open(a.get("name"))
        .expect("open ring")
        .into_producer();
    send_paced(a, |buf| ring.push(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_stamps_round_trip_and_refuse_anything_else() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for v in [0, 1, 9, 10, 15, 16, 0xABCD, u64::MAX]
            .into_iter()
            .chain((0..10_000).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            }))
        {
            let digits = hex_digits(v);
            assert_eq!(std::str::from_utf8(&digits).unwrap(), format!("{v:016x}"));
            assert_eq!(parse_hex_digits(digits), Some(v));
        }
        for bad in [
            *b"000000000000000G",
            *b"000000000000000A",
            *b"00000000000000 0",
            *b"0000000000000:00",
        ] {
            assert_eq!(parse_hex_digits(bad), None);
        }
    }
}
