//! `make bench`: runs the broker with real producer and consumer processes and, in
//! the same run, two baselines on this host (a Unix-domain-socket stream with one
//! write per message, and a busy-polling SPSC ring in shared memory), then prints
//! msgs/s, MB/s, latency percentiles and CPU per million messages, with ratios.
//! Results go to `target/bench/results.json`, charts to `docs/bench/`.

mod kafka_group;
mod kafka_port;
mod workers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let worker_args = workers::Args::parse(args.get(2..).unwrap_or_default());
    match args.get(1).map(String::as_str) {
        Some("produce") => workers::produce(&worker_args),
        Some("consume") => workers::consume(&worker_args),
        Some("read") => workers::read(&worker_args),
        Some("uds-send") => workers::uds_send(&worker_args),
        Some("uds-recv") => workers::uds_recv(&worker_args),
        Some("spsc-send") => workers::spsc_send(&worker_args),
        Some("spsc-recv") => workers::spsc_recv(&worker_args),
        Some("kafka-produce") => kafka_port::kafka_produce(&worker_args),
        Some("kafka-consume") => kafka_port::kafka_consume(&worker_args),
        Some("kafka-group-consume") => kafka_group::kafka_group_consume(&worker_args),
        Some("redis-produce") => kafka_port::redis_produce(&worker_args),
        Some("redis-consume") => kafka_port::redis_consume(&worker_args),
        _ => orchestrate(),
    }
}

/// Where the release binaries are (`make bench` builds them first).
fn bin_dir() -> PathBuf {
    std::env::var_os("BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/release"))
}

/// A worker process: waits for `ready` on stderr, then collects its JSON line.
struct Worker {
    child: Child,
}

impl Worker {
    fn start(role: &str, args: &[String]) -> Worker {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg(role)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start worker");
        let err = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(err).lines();
        match lines.next() {
            Some(Ok(l)) if l == "ready" => {}
            other => panic!("{role} did not start: {other:?}"),
        }
        let role = role.to_string();
        std::thread::spawn(move || lines.for_each(|l| eprintln!("  {role}: {l:?}")));
        Worker { child }
    }

    fn finish(mut self) -> Value {
        let mut out = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "worker failed: {status}");
        serde_json::from_str(out.trim()).expect("worker JSON")
    }
}

/// A broker on a free port with a throw-away data directory.
struct Broker {
    child: Child,
    addr: String,
    data: PathBuf,
    /// The Kafka port, under `--kafka-port`.
    kafka: Option<String>,
}

impl Broker {
    fn start(extra: &[&str]) -> Broker {
        let tag = format!("mk-bench-{}-{}", std::process::id(), unique());
        let data = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&data).expect("data dir");
        let mut child = Command::new(bin_dir().join("broker"))
            .args([
                "--port",
                "0",
                "--shm-name",
                &format!("/{tag}"),
                "--data-dir",
            ])
            .arg(&data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the broker (make bench builds it)");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("ready line");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split(',').next())
            .expect("ready line")
            .to_string();
        let kafka = extra.contains(&"--kafka-port").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).expect("the Kafka ready line");
            line.trim()
                .strip_prefix("kafka on ")
                .expect("the Kafka ready line")
                .to_string()
        });
        Broker {
            child,
            addr,
            data,
            kafka,
        }
    }

    fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(self.child.id())
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn kv(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// One row of the results table.
#[derive(Clone)]
struct Row {
    workload: String,
    system: &'static str,
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    cpu_s_per_m: f64,
    extra: Value,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "workload": self.workload, "system": self.system, "msgs_per_s": self.msgs_per_s,
            "mb_per_s": self.mb_per_s, "p50_us": self.p50_us, "p99_us": self.p99_us,
            "p999_us": self.p999_us, "max_us": self.max_us, "cpu_s_per_million": self.cpu_s_per_m,
            "extra": self.extra,
        })
    }
}

fn row(
    workload: &str,
    system: &'static str,
    delivered: f64,
    secs: f64,
    size: u64,
    latency: &Value,
    cpu: f64,
) -> Row {
    Row {
        workload: workload.to_string(),
        system,
        msgs_per_s: delivered / secs,
        mb_per_s: delivered * size as f64 / secs / 1e6,
        p50_us: latency["p50_us"].as_f64().unwrap_or(0.0),
        p99_us: latency["p99_us"].as_f64().unwrap_or(0.0),
        p999_us: latency["p999_us"].as_f64().unwrap_or(0.0),
        max_us: latency["max_us"].as_f64().unwrap_or(0.0),
        cpu_s_per_m: cpu / (delivered / 1e6),
        extra: Value::Null,
    }
}

/// A broker workload: `producers` producers share `count` messages of `size` bytes
/// (paced at `rate` msg/s in total, 0 for as fast as possible); each of `groups`
/// groups has `per_group` consumers.
#[derive(Clone, Copy)]
struct Load {
    producers: u64,
    groups: u64,
    per_group: u64,
    count: u64,
    size: u64,
    rate: u64,
}

fn run_broker(workload: &str, extra: &[&str], load: Load) -> Row {
    let Load {
        producers,
        groups,
        per_group,
        count,
        size,
        rate,
    } = load;
    let group_list: Vec<String> = (1..=groups).map(|g| format!("g{g}")).collect();
    let spec = group_list.join(",");
    let mut args = vec!["--groups", spec.as_str()];
    args.extend_from_slice(extra);
    let broker = Broker::start(&args);
    let cpu0 = broker.cpu_seconds();
    let mut consumers = Vec::new();
    for g in &group_list {
        for c in 0..per_group {
            let share = count / per_group + u64::from(c < count % per_group);
            consumers.push(Worker::start(
                "consume",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("{g}-c{c}")),
                    ("group", g.clone()),
                    ("count", share.to_string()),
                ]),
            ));
        }
    }
    let started = Instant::now();
    let senders: Vec<Worker> = (0..producers)
        .map(|p| {
            let share = count / producers + u64::from(p < count % producers);
            Worker::start(
                "produce",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("p{p}")),
                    ("count", share.to_string()),
                    ("size", size.to_string()),
                    ("rate", (rate / producers).to_string()),
                ]),
            )
        })
        .collect();
    let sent: Vec<Value> = senders.into_iter().map(Worker::finish).collect();
    let got: Vec<Value> = consumers.into_iter().map(Worker::finish).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let broker_cpu = broker.cpu_seconds() - cpu0;
    broker.stop();
    let cpu: f64 = broker_cpu
        + sent
            .iter()
            .chain(&got)
            .map(|v| v["cpu_s"].as_f64().unwrap_or(0.0))
            .sum::<f64>();
    let delivered: u64 = got
        .iter()
        .map(|v| v["received"].as_u64().unwrap_or(0))
        .sum();
    let publish_secs = sent
        .iter()
        .map(|v| v["secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    // Latency: the worst consumer's percentiles.
    let worst = |k: &str| {
        got.iter()
            .map(|v| v[k].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max)
    };
    let latency = json!({"p50_us": worst("p50_us"), "p99_us": worst("p99_us"), "p999_us": worst("p999_us"), "max_us": worst("max_us")});
    // Throughput over the steady state: from each consumer's first message to its
    // last (they run side by side), not counting process start-up.
    let receiving = got
        .iter()
        .map(|v| v["secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max)
        .max(1e-9);
    let mut r = row(
        workload,
        "broker",
        delivered as f64,
        receiving,
        size,
        &latency,
        cpu,
    );
    r.extra = json!({"published_per_s": count as f64 / publish_secs, "deliveries": delivered,
                     "groups": groups, "wall_secs": elapsed});
    r
}

fn run_pair(
    workload: &str,
    system: &'static str,
    recv_role: &str,
    send_role: &str,
    count: u64,
    size: u64,
    rate: u64,
) -> Row {
    let name = format!("mk-bench-{}-{}", std::process::id(), unique());
    let (key, value) = if recv_role.starts_with("uds") {
        (
            "path",
            std::env::temp_dir()
                .join(format!("{name}.sock"))
                .display()
                .to_string(),
        )
    } else {
        ("name", format!("/{name}"))
    };
    let common = |extra: &[(&str, String)]| {
        let mut v = vec![
            (key, value.clone()),
            ("count", count.to_string()),
            ("size", size.to_string()),
        ];
        v.extend_from_slice(extra);
        kv(&v)
    };
    let receiver = Worker::start(recv_role, &common(&[]));
    let started = Instant::now();
    let sender = Worker::start(send_role, &common(&[("rate", rate.to_string())]));
    let sent = sender.finish();
    let got = receiver.finish();
    let elapsed = started.elapsed().as_secs_f64();
    if key == "path" {
        let _ = std::fs::remove_file(&value);
    }
    let cpu = sent["cpu_s"].as_f64().unwrap_or(0.0) + got["cpu_s"].as_f64().unwrap_or(0.0);
    // As for the broker: the receiver's first to last message.
    let receiving = got["secs"].as_f64().unwrap_or(elapsed).max(1e-9);
    let mut r = row(workload, system, count as f64, receiving, size, &got, cpu);
    r.extra = json!({"wall_secs": elapsed});
    r
}

/// Throughput runs are repeated this many times and the median kept: on a small
/// host one run can land on an unlucky placement of processes on cores.
const REPEATS: usize = 5;

/// Latency runs are fewer (each lasts ten seconds).
const LATENCY_REPEATS: usize = 3;

/// What a run's median is taken over.
#[derive(Clone, Copy)]
enum By {
    Throughput,
    MedianLatency,
}

/// Runs `run` [`REPEATS`] times and keeps the run with the median msgs/s.
fn median_of(mut run: impl FnMut() -> Row) -> Row {
    median((0..REPEATS).map(|_| run()).collect(), By::Throughput)
}

/// The run in the middle of `rows` ordered `by`.
fn median(mut rows: Vec<Row>, by: By) -> Row {
    let key = |r: &Row| match by {
        By::Throughput => r.msgs_per_s,
        By::MedianLatency => r.p50_us,
    };
    rows.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rows.swap_remove(rows.len() / 2)
}

/// Runs each of `systems` `rounds` times, taking turns (one run of each per
/// round), and keeps each one's median run. A host whose speed drifts over minutes
/// then slows all of them alike, instead of whichever happened to run last.
fn medians_taking_turns(
    rounds: usize,
    by: By,
    systems: &mut [&mut dyn FnMut() -> Row],
) -> Vec<Row> {
    let mut runs: Vec<Vec<Row>> = systems.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (system, runs) in systems.iter_mut().zip(&mut runs) {
            let r = system();
            eprintln!(
                "      round {round}/{rounds}: {:<7} {:>12.0} msg/s  p50 {:>8.1} µs",
                r.system, r.msgs_per_s, r.p50_us
            );
            runs.push(r);
        }
    }
    runs.into_iter().map(|r| median(r, by)).collect()
}

fn orchestrate() {
    let out_dir = Path::new("../target/bench");
    std::fs::create_dir_all(out_dir).expect("target/bench");
    let mut rows: Vec<Row> = Vec::new();
    // One per row of the table.
    let steps = 25;
    let mut step = 0;
    let mut progress = |rows: &mut Vec<Row>, r: Row| {
        step += 1;
        eprintln!(
            "[{step:>2}/{steps}] {:<28} {:<7} {:>12.0} msg/s  p50 {:>8.1} µs  p99 {:>9.1} µs",
            r.workload, r.system, r.msgs_per_s, r.p50_us, r.p99_us
        );
        rows.push(r);
    };
    const N: u64 = 1_000_000;
    // A discarded first run as large as a measured one: the host settles after the
    // build (writeback, caches), and the page cache the audit files will reuse is
    // touched once (on a virtual machine, memory the guest has never touched costs
    // far more to write than memory it reuses), instead of on the first workload.
    eprintln!("warming up (one discarded run)");
    run_broker(
        "warm-up",
        &[],
        Load {
            producers: 1,
            groups: 1,
            per_group: 1,
            count: N,
            size: 64,
            rate: 0,
        },
    );
    // W1: throughput, one producer to one consumer, audit files on.
    for (size, n) in [(64u64, N), (1024, N / 2)] {
        let w = format!("W1 1p→1c {size} B");
        let load = Load {
            producers: 1,
            groups: 1,
            per_group: 1,
            count: n,
            size,
            rate: 0,
        };
        let medians = medians_taking_turns(
            REPEATS,
            By::Throughput,
            &mut [
                &mut || run_broker(&w, &[], load),
                &mut || run_pair(&w, "uds", "uds-recv", "uds-send", n, size, 0),
                &mut || run_pair(&w, "spsc", "spsc-recv", "spsc-send", n, size, 0),
            ],
        );
        for r in medians {
            progress(&mut rows, r);
        }
    }
    // W2: 4 producers, 2 groups of 2 consumers.
    let w = "W2 4p→2g×2c 64 B";
    let load = Load {
        producers: 4,
        groups: 2,
        per_group: 2,
        count: N,
        size: 64,
        rate: 0,
    };
    progress(&mut rows, median_of(|| run_broker(w, &[], load)));
    // W3: one-way latency at 50,000 msg/s for 10 s.
    let (rate, n) = (50_000, 500_000);
    let w = "W3 latency @50k/s 64 B";
    let load = Load {
        producers: 1,
        groups: 1,
        per_group: 1,
        count: n,
        size: 64,
        rate,
    };
    let medians = medians_taking_turns(
        LATENCY_REPEATS,
        By::MedianLatency,
        &mut [
            &mut || run_broker(w, &[], load),
            &mut || run_pair(w, "uds", "uds-recv", "uds-send", n, 64, rate),
            &mut || run_pair(w, "spsc", "spsc-recv", "spsc-send", n, 64, rate),
        ],
    );
    for r in medians {
        progress(&mut rows, r);
    }
    // W4: fan-out, one consumer per group.
    for g in [1u64, 2, 4, 8] {
        let w = format!("W4 fan-out {g} group(s)");
        let load = Load {
            producers: 1,
            groups: g,
            per_group: 1,
            count: N / 2,
            size: 64,
            rate: 0,
        };
        progress(&mut rows, median_of(|| run_broker(&w, &[], load)));
    }
    // W5: group commit under --fsync.
    let w = "W5 --fsync 1p→1c 64 B";
    progress(
        &mut rows,
        run_broker(
            w,
            &["--fsync"],
            Load {
                producers: 1,
                groups: 1,
                per_group: 1,
                count: 20_000,
                size: 64,
                rate: 0,
            },
        ),
    );
    let w = "W5 --fsync 4p→1c 64 B";
    progress(
        &mut rows,
        run_broker(
            w,
            &["--fsync"],
            Load {
                producers: 4,
                groups: 1,
                per_group: 1,
                count: 20_000,
                size: 64,
                rate: 0,
            },
        ),
    );

    // W6: four topics side by side, each 1 producer → 1 reader, beside W1.
    progress(&mut rows, median_of(|| run_topics(N)));
    // W7: one topic of 4 partitions, 4 keyed producers → a partition group of 4.
    progress(&mut rows, median_of(|| run_partition_group(N)));
    // W8: a standalone reader replays 1M messages from offset 0 after they left
    // the ring (from the file), and reads them from the ring as they are
    // published, beside W1.
    let medians = medians_taking_turns(
        REPEATS,
        By::Throughput,
        &mut [&mut || run_replay(N, true), &mut || run_replay(N, false)],
    );
    for r in medians {
        progress(&mut rows, r);
    }
    let seeks = seek_times(&[1_000_000, 5_000_000, 10_000_000]);
    // W9: the Kafka port, produce then consume, beside Redis Streams.
    for r in w9(N) {
        progress(&mut rows, r);
    }
    // W10: the same port, read by a Kafka consumer group of two members.
    progress(
        &mut rows,
        median_of_rounds(LATENCY_REPEATS, || run_kafka_group(N)),
    );

    let report = render(&rows) + &render_seeks(&seeks);
    println!("{report}");
    let json = json!({
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "ratios": ratios(&rows),
        "seeks": seeks.iter().map(SeekRow::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .expect("write JSON");
    std::fs::write(out_dir.join("table.md"), &report).expect("write table");
    charts::draw(&rows, Path::new("../docs/bench"));
    eprintln!("results: target/bench/results.json, target/bench/table.md; charts: docs/bench/");
}

fn find<'a>(rows: &'a [Row], workload: &str, system: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.workload == workload && r.system == system)
        .unwrap_or_else(|| panic!("no row {workload}/{system}"))
}

fn ratios(rows: &[Row]) -> Value {
    let w1 = "W1 1p→1c 64 B";
    let broker = find(rows, w1, "broker").msgs_per_s;
    let w2 = find(rows, "W2 4p→2g×2c 64 B", "broker").msgs_per_s;
    let w3 = "W3 latency @50k/s 64 B";
    let deliveries = |g: u64| find(rows, &format!("W4 fan-out {g} group(s)"), "broker").msgs_per_s;
    let w8 = |w: &str| find(rows, w, "broker").msgs_per_s / broker;
    json!({
        "w1_vs_uds": broker / find(rows, w1, "uds").msgs_per_s,
        "w1_vs_spsc": broker / find(rows, w1, "spsc").msgs_per_s,
        "w2_vs_uds": w2 / find(rows, w1, "uds").msgs_per_s,
        "w3_p50_vs_spsc": find(rows, w3, "broker").p50_us / find(rows, w3, "spsc").p50_us,
        "w3_p50_vs_uds": find(rows, w3, "broker").p50_us / find(rows, w3, "uds").p50_us,
        "w4_8_groups_vs_1": deliveries(8) / deliveries(1),
        "w6_vs_w1": find(rows, W6, "broker").msgs_per_s / broker,
        "w7_vs_w1": find(rows, W7, "broker").msgs_per_s / broker,
        "w8_file_vs_w1": w8(W8_FILE),
        "w8_ring_vs_w1": w8(W8_RING),
        "w9_produce_vs_redis": find(rows, W9_PRODUCE, "broker").msgs_per_s
            / find(rows, W9_PRODUCE, "redis").msgs_per_s,
        "w9_consume_vs_redis": find(rows, W9_CONSUME, "broker").msgs_per_s
            / find(rows, W9_CONSUME, "redis").msgs_per_s,
        "w10_vs_w9_consume": find(rows, W10, "broker").msgs_per_s
            / find(rows, W9_CONSUME, "broker").msgs_per_s,
        "w10_vs_redis_consume": find(rows, W10, "broker").msgs_per_s
            / find(rows, W9_CONSUME, "redis").msgs_per_s,
    })
}

fn render(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "| workload | system | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU s per M msgs |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
            r.workload,
            r.system,
            r.msgs_per_s,
            r.mb_per_s,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.cpu_s_per_m
        );
    }
    let r = ratios(rows);
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    let _ = writeln!(s);
    let _ = writeln!(s, "Ratios in this run:");
    let _ = writeln!(
        s,
        "- W1 64 B broker / Unix socket msgs/s: {:.2}×",
        f("w1_vs_uds")
    );
    let _ = writeln!(
        s,
        "- W1 64 B broker / SPSC ring msgs/s: {:.1} %",
        100.0 * f("w1_vs_spsc")
    );
    let _ = writeln!(
        s,
        "- W2 aggregate deliveries / Unix socket (W1) msgs/s: {:.2}×",
        f("w2_vs_uds")
    );
    let _ = writeln!(
        s,
        "- W3 p50 broker / SPSC ring: {:.2}× (broker / Unix socket: {:.2}×)",
        f("w3_p50_vs_spsc"),
        f("w3_p50_vs_uds")
    );
    let _ = writeln!(
        s,
        "- W4 total deliveries/s, 8 groups / 1 group: {:.2}×",
        f("w4_8_groups_vs_1")
    );
    let _ = writeln!(
        s,
        "- W6 aggregate of 4 topics (1 producer, 1 reader each) / W1 broker msgs/s: {:.2}×",
        f("w6_vs_w1")
    );
    let _ = writeln!(
        s,
        "- W7 one topic of 4 partitions, 4 keyed producers → a partition group of 4 (per-key order checked) / W1 broker msgs/s: {:.2}×",
        f("w7_vs_w1")
    );
    let _ = writeln!(
        s,
        "- W8 reader replaying from the file / W1 broker msgs/s: {:.1} % (reading from the ring: {:.1} %)",
        100.0 * f("w8_file_vs_w1"),
        100.0 * f("w8_ring_vs_w1")
    );
    let _ = writeln!(
        s,
        "- W9 over the Kafka port / Redis Streams msgs/s: produce {:.2}×, consume {:.2}×",
        f("w9_produce_vs_redis"),
        f("w9_consume_vs_redis")
    );
    let _ = writeln!(
        s,
        "- W10 a 2-member Kafka group (committing after each fetch) / W9 one consumer: {:.2}× (/ Redis Streams consume: {:.2}×)",
        f("w10_vs_w9_consume"),
        f("w10_vs_redis_consume")
    );
    s
}

const W9_PRODUCE: &str = "W9 produce 1M over the Kafka port 64 B";
const W10: &str = "W10 consume 1M, Kafka group of 2 64 B";
const W9_CONSUME: &str = "W9 consume 1M over the Kafka port 64 B";

/// W9, [`LATENCY_REPEATS`] rounds, the broker and Redis taking turns: the median
/// of each of the four rows.
fn w9(n: u64) -> Vec<Row> {
    let mut runs: [Vec<Row>; 4] = Default::default();
    for round in 1..=LATENCY_REPEATS {
        let [p, c] = run_kafka_port(n);
        let [rp, rc] = run_redis(n);
        eprintln!(
            "      round {round}/{LATENCY_REPEATS}: produce {:.0} vs {:.0} msg/s, consume {:.0} vs {:.0} msg/s",
            p.msgs_per_s, rp.msgs_per_s, c.msgs_per_s, rc.msgs_per_s
        );
        for (all, r) in runs.iter_mut().zip([p, rp, c, rc]) {
            all.push(r);
        }
    }
    runs.into_iter()
        .map(|rows| median(rows, By::Throughput))
        .collect()
}

/// A produce then a consume worker, and the server's CPU over each.
fn produce_then_consume(
    server_cpu: &dyn Fn() -> f64,
    produce: (&str, Vec<String>),
    consume: (&str, Vec<String>),
    system: &'static str,
) -> [Row; 2] {
    let cpu0 = server_cpu();
    let p = Worker::start(produce.0, &produce.1).finish();
    let cpu1 = server_cpu();
    let c = Worker::start(consume.0, &consume.1).finish();
    let cpu2 = server_cpu();
    let one = |w: &str, got: &Value, server: f64| {
        let count = got["count"].as_f64().unwrap_or(0.0);
        let secs = got["secs"].as_f64().unwrap_or(0.0).max(1e-9);
        let cpu = server + got["cpu_s"].as_f64().unwrap_or(0.0);
        row(w, system, count, secs, 64, &Value::Null, cpu)
    };
    [
        one(W9_PRODUCE, &p, cpu1 - cpu0),
        one(W9_CONSUME, &c, cpu2 - cpu1),
    ]
}

fn run_kafka_port(n: u64) -> [Row; 2] {
    let broker = Broker::start(&["--groups", "0", "--topics", "w9", "--kafka-port", "0"]);
    let kafka = broker.kafka.clone().expect("the Kafka port");
    let args = |count: bool| {
        let mut a = vec![
            ("broker", kafka.clone()),
            ("topic", "w9".to_string()),
            ("count", n.to_string()),
        ];
        if count {
            a.push(("size", "64".into()));
        }
        kv(&a)
    };
    let rows = produce_then_consume(
        &|| broker.cpu_seconds(),
        ("kafka-produce", args(true)),
        ("kafka-consume", args(false)),
        "broker",
    );
    broker.stop();
    rows
}

/// The median by throughput of `rounds` runs.
fn median_of_rounds(rounds: usize, mut run: impl FnMut() -> Row) -> Row {
    median((0..rounds).map(|_| run()).collect(), By::Throughput)
}

/// W10: 1M records produced over 2 partitions, then read by a Kafka group of
/// two members (the bench's own client), each its partition, committing after
/// each fetch. Timed from the first member settled in the group to the last
/// record read; CPU is the broker's over the read and both members'.
fn run_kafka_group(n: u64) -> Row {
    let broker = Broker::start(&["--groups", "0", "--topics", "w10:2", "--kafka-port", "0"]);
    let kafka = broker.kafka.clone().expect("the Kafka port");
    let produce = kv(&[
        ("broker", kafka.clone()),
        ("topic", "w10".into()),
        ("count", n.to_string()),
        ("size", "64".into()),
        ("partitions", "2".into()),
    ]);
    Worker::start("kafka-produce", &produce).finish();
    let member = kv(&[
        ("broker", kafka.clone()),
        ("topic", "w10".into()),
        ("group", "w10".into()),
        ("members", "2".into()),
        ("partitions", "2".into()),
        ("count", n.to_string()),
    ]);
    let cpu0 = broker.cpu_seconds();
    let members = [
        Worker::start("kafka-group-consume", &member),
        Worker::start("kafka-group-consume", &member),
    ];
    let done: Vec<Value> = members.into_iter().map(Worker::finish).collect();
    let cpu = broker.cpu_seconds() - cpu0
        + done
            .iter()
            .map(|d| d["cpu_s"].as_f64().unwrap_or(0.0))
            .sum::<f64>();
    let micros = |k: &'static str| done.iter().map(move |d| d[k].as_u64().unwrap_or(0));
    let start = micros("start_us").min().unwrap_or(0);
    let end = micros("end_us").max().unwrap_or(0);
    let count: u64 = micros("count").sum();
    assert_eq!(count, n, "the group read every record once");
    broker.stop();
    let secs = (end.saturating_sub(start) as f64 / 1e6).max(1e-9);
    row(W10, "broker", count as f64, secs, 64, &Value::Null, cpu)
}

/// Debian's `redis-server` on a free port, persisting as the broker does
/// (appending every write to its file, synced every second).
fn run_redis(n: u64) -> [Row; 2] {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!(
        "mk-bench-redis-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).expect("redis dir");
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server (make bench installs it)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20)); // its port's readiness
    }
    let pid = server.id();
    let args = |size: bool| {
        let mut a = vec![("redis", addr.clone()), ("count", n.to_string())];
        if size {
            a.push(("size", "64".into()));
        }
        kv(&a)
    };
    let rows = produce_then_consume(
        &|| proc_cpu_seconds(pid),
        ("redis-produce", args(true)),
        ("redis-consume", args(false)),
        "redis",
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

const W6: &str = "W6 4 topics × (1p→1 reader) 64 B";

/// W6: four topics, each with one producer sending `n / 4` 64 B messages and one
/// standalone reader reading them as they are published; the aggregate rate over
/// the readers' common span.
fn run_topics(n: u64) -> Row {
    let topics = ["w6a", "w6b", "w6c", "w6d"];
    let spec = topics.join(",");
    let broker = Broker::start(&["--groups", "0", "--topics", &spec]);
    let cpu0 = broker.cpu_seconds();
    let share = n / topics.len() as u64;
    let readers: Vec<Worker> = topics
        .iter()
        .map(|t| {
            Worker::start(
                "read",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("{t}-reader")),
                    ("topic", t.to_string()),
                    ("from", "latest".into()),
                    ("count", share.to_string()),
                ]),
            )
        })
        .collect();
    let producers: Vec<Worker> = topics
        .iter()
        .map(|t| {
            Worker::start(
                "produce",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("{t}-producer")),
                    ("topic", t.to_string()),
                    ("count", share.to_string()),
                    ("size", "64".into()),
                    ("rate", "0".into()),
                ]),
            )
        })
        .collect();
    let sent: Vec<Value> = producers.into_iter().map(Worker::finish).collect();
    let got: Vec<Value> = readers.into_iter().map(Worker::finish).collect();
    let broker_cpu = broker.cpu_seconds() - cpu0;
    broker.stop();
    aggregate(W6, share * 4, broker_cpu, &sent, &got)
}

const W7: &str = "W7 4 partitions, 4 keys → partition group of 4 64 B";

/// Four keys that Kafka's partitioner puts in partitions 0, 1, 2 and 3 of a
/// 4-partition topic, one each.
fn keys_one_per_partition() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; 4];
    for i in 0.. {
        let key = format!("key-{i}");
        let p = partitioner::partition_for_key(key.as_bytes(), 4) as usize;
        keys[p].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().flatten().collect()
}

/// W7: one topic of 4 partitions; 4 producers, each sending `n / 4` 64 B
/// messages under its own key (one key per partition); a `partition` group of
/// 4 consumers, one partition each, each checking that every key's messages
/// come in the order sent. The aggregate rate over the consumers' common span.
fn run_partition_group(n: u64) -> Row {
    let broker = Broker::start(&["--groups", "0", "--topics", "w7:4"]);
    let cpu0 = broker.cpu_seconds();
    let share = n / 4;
    let consumers: Vec<Worker> = (0..4)
        .map(|c| {
            Worker::start(
                "consume",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("w7-c{c}")),
                    ("group", "w7".into()),
                    ("topic", "w7".into()),
                    ("assignment", "partition".into()),
                    ("check_order", "1".into()),
                    ("count", share.to_string()),
                ]),
            )
        })
        .collect();
    let producers: Vec<Worker> = keys_one_per_partition()
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            Worker::start(
                "produce",
                &kv(&[
                    ("broker", broker.addr.clone()),
                    ("id", format!("w7-p{i}")),
                    ("topic", "w7".into()),
                    ("key", key),
                    ("count", share.to_string()),
                    ("size", "64".into()),
                    ("rate", "0".into()),
                ]),
            )
        })
        .collect();
    let sent: Vec<Value> = producers.into_iter().map(Worker::finish).collect();
    let got: Vec<Value> = consumers.into_iter().map(Worker::finish).collect();
    let broker_cpu = broker.cpu_seconds() - cpu0;
    broker.stop();
    aggregate(W7, share * 4, broker_cpu, &sent, &got)
}

/// A row for `n` messages moved by `sent` producers and `got` receivers (each
/// worker's JSON line) over the receivers' common span, with the worst
/// receiver's latency and every process's CPU.
fn aggregate(workload: &str, n: u64, broker_cpu: f64, sent: &[Value], got: &[Value]) -> Row {
    let secs = got
        .iter()
        .map(|v| v["secs"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max)
        .max(1e-9);
    let cpu = broker_cpu
        + sent
            .iter()
            .chain(got)
            .map(|v| v["cpu_s"].as_f64().unwrap_or(0.0))
            .sum::<f64>();
    let worst = |k: &str| {
        got.iter()
            .map(|v| v[k].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max)
    };
    let latency = json!({"p50_us": worst("p50_us"), "p99_us": worst("p99_us"), "p999_us": worst("p999_us"), "max_us": worst("max_us")});
    row(workload, "broker", n as f64, secs, 64, &latency, cpu)
}

const W8_FILE: &str = "W8 replay 1M from the file";
const W8_RING: &str = "W8 read 1M from the ring";

/// W8: with `from_file`, sends `n` 64 B messages, then replays them with a
/// standalone reader from offset 0 (all but the ring's last few thousand are read
/// from the file); without, the reader reads them from the ring as a producer
/// publishes them.
fn run_replay(n: u64, from_file: bool) -> Row {
    let broker = Broker::start(&["--groups", "0"]);
    let cpu0 = broker.cpu_seconds();
    let producer = |id: &str| {
        Worker::start(
            "produce",
            &kv(&[
                ("broker", broker.addr.clone()),
                ("id", id.to_string()),
                ("count", n.to_string()),
                ("size", "64".into()),
                ("rate", "0".into()),
            ]),
        )
    };
    let reader = |from: &str| {
        Worker::start(
            "read",
            &kv(&[
                ("broker", broker.addr.clone()),
                ("id", "w8-reader".into()),
                ("from", from.to_string()),
                ("count", n.to_string()),
            ]),
        )
    };
    let got = if from_file {
        producer("w8-producer").finish();
        reader("0").finish()
    } else {
        let r = reader("latest");
        producer("w8-producer").finish();
        r.finish()
    };
    let broker_cpu = broker.cpu_seconds() - cpu0;
    broker.stop();
    let secs = got["secs"].as_f64().unwrap_or(0.0).max(1e-9);
    let cpu = broker_cpu + got["cpu_s"].as_f64().unwrap_or(0.0);
    let workload = if from_file { W8_FILE } else { W8_RING };
    let mut r = row(workload, "broker", n as f64, secs, 64, &got, cpu);
    if from_file {
        // Latency means nothing for messages read long after they were sent.
        r.p50_us = 0.0;
        r.p99_us = 0.0;
        r.p999_us = 0.0;
        r.max_us = 0.0;
    }
    r
}

/// Seek times at one size of the persistence file.
struct SeekRow {
    messages: u64,
    /// (where, offset, µs for `seek` plus the first poll, bytes of file read).
    seeks: Vec<(&'static str, u64, f64)>,
}

impl SeekRow {
    fn to_json(&self) -> Value {
        json!({
            "messages": self.messages,
            "seeks": self.seeks.iter().map(|(at, o, us)| json!({"at": at, "offset": o, "us": us})).collect::<Vec<_>>(),
        })
    }
}

/// Fills one broker's persistence file to each of `sizes` messages (64 B) and
/// times a reader's seek plus first poll at the start, the middle and the end of
/// the file (the median of five, each to a different offset nearby).
fn seek_times(sizes: &[u64]) -> Vec<SeekRow> {
    let broker = Broker::start(&["--groups", "0"]);
    let mut sent = 0;
    let mut out = Vec::new();
    for &size in sizes {
        let more = size - sent;
        Worker::start(
            "produce",
            &kv(&[
                ("broker", broker.addr.clone()),
                ("id", format!("seek-fill-{size}")),
                ("count", more.to_string()),
                ("size", "64".into()),
                ("rate", "0".into()),
            ]),
        )
        .finish();
        sent = size;
        let mut reader =
            consumer::reader::Reader::connect(&broker.addr, Some("seek-timer")).expect("connect");
        let mut seeks = Vec::new();
        for (at, base) in [("start", 0), ("middle", size / 2), ("end", size - 10_000)] {
            let mut times: Vec<(u64, f64)> = (0..5u64)
                .map(|i| {
                    let offset = base + i * 997;
                    let started = Instant::now();
                    reader.seek(offset);
                    let m = reader
                        .poll(Some(std::time::Duration::from_secs(10)))
                        .expect("poll");
                    assert_eq!(m.map(|m| m.offset), Some(offset), "seek to {offset}");
                    (offset, started.elapsed().as_secs_f64() * 1e6)
                })
                .collect();
            times.sort_by(|a, b| a.1.total_cmp(&b.1));
            let (offset, us) = times[times.len() / 2];
            seeks.push((at, offset, us));
        }
        eprintln!(
            "      seeks at {size} messages: {}",
            seeks
                .iter()
                .map(|(at, _, us)| format!("{at} {us:.0} µs"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(SeekRow {
            messages: size,
            seeks,
        });
    }
    broker.stop();
    out
}

fn render_seeks(rows: &[SeekRow]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Seek times (a standalone reader's seek plus its first poll, from the file, median of 5):"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| messages in the file | start µs | middle µs | end µs |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|");
    for r in rows {
        let us = |at: &str| r.seeks.iter().find(|s| s.0 == at).map_or(0.0, |s| s.2);
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} |",
            r.messages,
            us("start"),
            us("middle"),
            us("end")
        );
    }
    s
}

mod charts {
    use super::{find, Row};
    use plotters::prelude::*;
    use std::path::Path;

    /// Latency percentiles of W3 for each system, and W4's fan-out curve, as SVG.
    pub fn draw(rows: &[Row], dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        let w3 = "W3 latency @50k/s 64 B";
        let series: Vec<(&str, Vec<f64>, RGBColor)> =
            [("broker", RED), ("uds", BLUE), ("spsc", GREEN)]
                .iter()
                .map(|&(sys, color)| {
                    let r = find(rows, w3, sys);
                    (sys, vec![r.p50_us, r.p99_us, r.p999_us], color)
                })
                .collect();
        let top = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(1.0, f64::max)
            * 1.5;
        let path = dir.join("latency.svg");
        let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
        let _ = root.fill(&WHITE);
        if let Ok(mut chart) = ChartBuilder::on(&root)
            .caption(
                "W3: one-way latency at 50,000 msg/s (log scale)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..2.2f64, (0.1f64..top).log_scale())
        {
            let _ = chart
                .configure_mesh()
                .x_labels(3)
                .x_label_formatter(&|x| match x.round() as i64 {
                    0 => "p50".into(),
                    1 => "p99".into(),
                    2 => "p99.9".into(),
                    _ => String::new(),
                })
                .y_desc("µs")
                .draw();
            for (name, values, color) in series {
                let points: Vec<(f64, f64)> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, v.max(0.1)))
                    .collect();
                if let Ok(s) =
                    chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                {
                    s.label(name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                }
                let _ =
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())));
            }
            let _ = chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE)
                .draw();
        }
        let _ = root.present();

        let path = dir.join("fanout.svg");
        let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let points: Vec<(f64, f64)> = [1u64, 2, 4, 8]
            .iter()
            .map(|&g| {
                (
                    g as f64,
                    find(rows, &format!("W4 fan-out {g} group(s)"), "broker").msgs_per_s / 1e6,
                )
            })
            .collect();
        let top = points.iter().map(|p| p.1).fold(0.1, f64::max) * 1.3;
        if let Ok(mut chart) = ChartBuilder::on(&root)
            .caption(
                "W4: total deliveries per second by number of groups",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..8.5f64, 0f64..top)
        {
            let _ = chart
                .configure_mesh()
                .x_desc("groups")
                .y_desc("million deliveries/s")
                .draw();
            let _ = chart.draw_series(LineSeries::new(points.clone(), RED.stroke_width(2)));
            let _ = chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, RED.filled())));
        }
        let _ = root.present();
    }
}
