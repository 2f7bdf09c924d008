//! The benchmark's worker processes. Each is this same binary started with a role;
//! it prints `ready` on stderr once connected, then one JSON line on stdout when done.
//!
//! Every payload starts with the CLOCK_MONOTONIC send time (ns) and a sequence
//! number, so receivers measure one-way latency.

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

fn ready() {
    eprintln!("ready");
}

/// Fills `buf` (at least 16 bytes) with the send time and sequence number.
fn stamp(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&monotonic_nanos().to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
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
    first: Option<Instant>,
    last: Instant,
    count: u64,
    bytes: u64,
}

impl Receipts {
    fn new() -> Receipts {
        Receipts {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"),
            first: None,
            last: Instant::now(),
            count: 0,
            bytes: 0,
        }
    }
    fn record(&mut self, payload: &[u8]) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = now;
        self.count += 1;
        self.bytes += payload.len() as u64;
        if payload.len() >= 8 {
            let sent = u64::from_le_bytes(payload[..8].try_into().unwrap());
            let _ = self
                .hist
                .record(monotonic_nanos().saturating_sub(sent).max(1));
        }
    }
    fn report(&self) {
        let secs = self
            .first
            .map_or(0.0, |f| (self.last - f).as_secs_f64())
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
    if a.num("rate") > 0 {
        return send_paced(a, |buf| {
            p.send(buf).expect("send");
        });
    }
    // Unpaced: the fastest path the library offers, batches of 64.
    let (count, size) = (a.num("count"), a.num("size") as usize);
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| vec![b'x'; size.max(16)]).collect();
    ready();
    let start = Instant::now();
    let mut i = 0;
    while i < count {
        let k = (count - i).min(64) as usize;
        for (j, b) in pool[..k].iter_mut().enumerate() {
            stamp(b, i + j as u64);
        }
        let batch: Vec<(Option<&[u8]>, &[u8])> =
            pool[..k].iter().map(|b| (None, b.as_slice())).collect();
        p.send_batch(&batch).map_err(|(_, e)| e).expect("send");
        i += k as u64;
    }
    report_sent(count, start);
}

pub fn consume(a: &Args) {
    let mut c =
        consumer::Consumer::connect(a.get("broker"), Some(a.get("id")), Some(a.get("group")))
            .expect("connect");
    let count = a.num("count");
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
            r.record(batch.get(i).expect("message").payload);
        }
    }
    c.close();
    r.report();
}

/// Sends `count` stamped messages of `size` bytes through `send`, one at a time,
/// paced at `rate` per second (0: as fast as possible), then reports.
fn send_paced(a: &Args, mut send: impl FnMut(&[u8])) {
    let (count, size, rate) = (a.num("count"), a.num("size") as usize, a.num("rate"));
    let mut buf = vec![b'x'; size.max(16)];
    ready();
    let start = Instant::now();
    for i in 0..count {
        pace(start, i, rate);
        stamp(&mut buf, i);
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
    let mut buf = vec![0u8; size.max(16)];
    let mut r = Receipts::new();
    for _ in 0..count {
        reader.read_exact(&mut buf).expect("read");
        r.record(&buf);
    }
    r.report();
}

pub fn uds_send(a: &Args) {
    let mut stream = UnixStream::connect(a.get("path")).expect("connect");
    // One write per message, as an application sending messages would.
    send_paced(a, |buf| stream.write_all(buf).expect("write"));
}

pub fn spsc_recv(a: &Args) {
    let (count, size) = (a.num("count"), a.num("size"));
    let ring = SpscRing::create(a.get("name"), 4096, size.max(16)).expect("create ring");
    ready();
    let mut r = Receipts::new();
    let mut cached = 0;
    for _ in 0..count {
        ring.pop(&mut cached, |b| r.record(b));
    }
    r.report();
}

pub fn spsc_send(a: &Args) {
    let ring = SpscRing::open(a.get("name")).expect("open ring");
    let mut cached = 0;
    send_paced(a, |buf| ring.push(buf, &mut cached));
}
