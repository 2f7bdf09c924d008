//! SPEC §3, §4, §6 and §7 under a storm of SIGKILLs: a broker with two groups on a
//! small ring, producers sending numbered messages (a steady stream, and bursts from
//! the producers that die at fault points) and consumers printing JSON, while a
//! seeded schedule kills a producer, a consumer or the broker at every step (at a
//! random moment after real progress, or at an exact instruction through the debug
//! fault points) and replaces what it killed. At the end the files and everything
//! printed are checked: each offset once and in order, no acknowledged send lost, no
//! producer's message twice or out of order, every printed delivery logged, every
//! message printed by every group, duplicates only as logged redeliveries, no panic.
//!
//! The schedule comes from a seed: `KILL_LOOP_SEED=<n> KILL_LOOP_STEPS=<n>` replays
//! another one (the test prints the seed and every step).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use audit_format::records::{DeliveryRecord, PersistedRecord, LOG_FILE, PERSIST_FILE};
use e2e::{Broker, Finished, Proc, StdoutMode, Watcher};
use nix::sys::signal::Signal;

const DEFAULT_SEED: u64 = 0x6b69_6c6c_2d6c_6f6f;
const DEFAULT_STEPS: usize = 60;
/// The ring turns every 256 messages, so the cleaner, the rotations and the
/// producers' waits for space are exercised all the time.
const BROKER_ARGS: [&str; 4] = ["--groups", "2", "--slots", "256"];
const GROUPS: [&str; 2] = ["group-1", "group-2"];
const CONSUMERS_PER_GROUP: usize = 2;
const PRODUCERS: usize = 2;
/// The regular producers stream `<time> <id> seq=<n>` at this pace: fast enough
/// that the ring turns every few hundred milliseconds, slow enough that the test
/// reads everything printed and logged as it comes.
const STREAM_INTERVAL: &str = "200us";
/// How often a wait on something other than printed output (a file, a process
/// that prints nothing) looks again.
const RECHECK: Duration = Duration::from_millis(20);

/// xorshift64*: small, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// One step of the schedule: who dies, and when.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// SIGKILL the broker once the consumers have printed `after` more lines,
    /// then restart it on the same data directory and region.
    KillBroker { after: u64 },
    /// SIGKILL the live producer `pick` picks once the consumers have printed
    /// `after` more lines.
    KillProducer { pick: u64, after: u64 },
    /// Start a producer that SIGKILLs itself the `n`-th time it reaches `point`.
    ProducerDiesAt { point: &'static str, n: u64 },
    /// SIGKILL the live consumer `pick` picks once it has printed `after` more lines.
    KillConsumer { pick: u64, after: u64 },
    /// Start a consumer in `group` that SIGKILLs itself the `n`-th time it reaches
    /// `point`.
    ConsumerDiesAt {
        group: &'static str,
        point: &'static str,
        n: u64,
    },
}

fn schedule(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    (0..steps)
        .map(|_| match rng.between(0, 9) {
            0 | 1 => Step::KillBroker {
                after: rng.between(1, 2000),
            },
            2 | 3 => Step::KillProducer {
                pick: rng.next(),
                after: rng.between(1, 2000),
            },
            4 | 5 => Step::ProducerDiesAt {
                point: ["send-reserved", "send-committed"][rng.between(0, 1) as usize],
                n: rng.between(1, 2000),
            },
            6 | 7 => Step::KillConsumer {
                pick: rng.next(),
                after: rng.between(1, 1000),
            },
            _ => {
                let group = GROUPS[rng.between(0, 1) as usize];
                // poll-claimed is reached once per batch taken, the others at every
                // look for messages.
                match rng.between(0, 2) {
                    0 => Step::ConsumerDiesAt {
                        group,
                        point: "poll-claimed",
                        n: rng.between(1, 10),
                    },
                    1 => Step::ConsumerDiesAt {
                        group,
                        point: "poll-taking",
                        n: rng.between(1, 40),
                    },
                    _ => Step::ConsumerDiesAt {
                        group,
                        point: "poll-spun",
                        n: rng.between(1, 10),
                    },
                }
            }
        })
        .collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// How a producer ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ProducerEnd {
    /// Exit 0: its summary says it sent this many.
    Finished { sent: u64 },
    /// Exit 1 when its broker died: sent this many before.
    BrokerStopped { sent: u64 },
    /// SIGKILLed by the test at a random moment.
    Killed,
    /// SIGKILLed by itself at the `n`-th `point`.
    DiedAt { point: &'static str, n: u64 },
}

struct LiveProducer {
    id: String,
    proc: Proc,
    /// The fault point it dies at, if it is a victim of one.
    fault: Option<(&'static str, u64)>,
}

struct LiveConsumer {
    id: String,
    name: Name,
    group: usize,
    proc: Proc,
    /// The start of a line it has not finished printing yet.
    partial: Vec<u8>,
}

/// A producer's or consumer's id, interned: the test keeps hundreds of thousands
/// of deliveries.
type Name = u32;

#[derive(Default)]
struct Names {
    ids: Vec<String>,
    index: HashMap<String, Name>,
}

impl Names {
    fn intern(&mut self, id: &str) -> Name {
        if let Some(&n) = self.index.get(id) {
            return n;
        }
        self.ids.push(id.to_string());
        self.index
            .insert(id.to_string(), self.ids.len() as Name - 1);
        self.ids.len() as Name - 1
    }

    fn id(&self, name: Name) -> &str {
        &self.ids[name as usize]
    }
}

fn group_index(group: &str) -> usize {
    GROUPS
        .iter()
        .position(|&g| g == group)
        .unwrap_or_else(|| panic!("unknown group {group:?}"))
}

/// `(producer, seq)` of a payload a producer of this test sends: `<time>
/// <producer> seq=<seq>` (`--stream`) or `<producer>-<seq>` (a line of stdin).
fn numbered(payload: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    if let Some((time, rest)) = text.split_once(' ') {
        humantime::parse_rfc3339(time).ok()?;
        let (producer, seq) = rest.rsplit_once(" seq=")?;
        let seq: u64 = seq.parse().ok()?;
        return (format!("{time} {producer} seq={seq}") == text).then_some((producer, seq));
    }
    let (producer, seq) = text.rsplit_once('-')?;
    let seq: u64 = seq.parse().ok()?;
    (format!("{producer}-{seq}") == text).then_some((producer, seq))
}

/// FNV-1a: printed payloads are compared with the file's through it.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One delivery a consumer printed: its group is the consumer's.
#[derive(Debug, Clone, Copy)]
struct Printed {
    consumer: Name,
    offset: u64,
    producer: Name,
    seq: u64,
    payload: u64,
}

/// The broker and its clients, and what every process that ended left behind.
struct Storm {
    broker: Option<Broker>,
    watcher: Watcher,
    producers: Vec<LiveProducer>,
    consumers: Vec<LiveConsumer>,
    next_id: u32,
    names: Names,
    /// The group of each consumer (by name) there has been.
    group_of: HashMap<Name, usize>,
    producer_ends: BTreeMap<String, ProducerEnd>,
    printed: Vec<Printed>,
    /// Every ended process's name and stderr.
    stderr: Vec<(String, Vec<String>)>,
    sigkills: BTreeMap<&'static str, u32>,
}

fn killed(f: &Finished) -> bool {
    f.status.signal() == Some(Signal::SIGKILL as i32)
}

/// The `n` in `<prefix><n> messages`, from a producer's last stderr line.
fn sent_count(line: &str, prefix: &str) -> Option<u64> {
    line.strip_prefix(prefix)?.split(' ').next()?.parse().ok()
}

fn group_status<'a>(status: &'a serde_json::Value, group: &str) -> &'a serde_json::Value {
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no {group} in {status}"))
}

/// A field of `group`'s one topic-partition.
fn group_field(status: &serde_json::Value, group: &str, field: &str) -> u64 {
    group_status(status, group)["partitions"][0][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} of {group} in {status}"))
}

impl Storm {
    fn start() -> Storm {
        let mut storm = Storm {
            broker: Some(Broker::start(&BROKER_ARGS)),
            watcher: Watcher::default(),
            producers: Vec::new(),
            consumers: Vec::new(),
            next_id: 0,
            names: Names::default(),
            group_of: HashMap::new(),
            producer_ends: BTreeMap::new(),
            printed: Vec::new(),
            stderr: Vec::new(),
            sigkills: BTreeMap::new(),
        };
        storm.replenish();
        storm
    }

    fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("a broker runs between steps")
    }

    fn new_id(&mut self, role: &str) -> String {
        self.next_id += 1;
        format!("{role}{}", self.next_id)
    }

    /// Starts a regular producer, streaming until stopped; or, to die at a fault
    /// point, one that sends lines `<id>-<seq>` from stdin as fast as the ring
    /// takes them, in batches (a burst that fills the ring).
    fn start_producer(&mut self, fault: Option<(&'static str, u64)>) {
        let id = self.new_id("p");
        let proc = match fault {
            None => Proc::spawn(
                &e2e::bin("producer"),
                &self.broker().client_args(&[
                    "--id",
                    &id,
                    "--stream",
                    "--interval",
                    STREAM_INTERVAL,
                ]),
                None,
                StdoutMode::Collect,
            ),
            Some((point, n)) => {
                // More lines than it gets to send, so that it cannot end otherwise.
                let input: String = (0..n + 100).map(|seq| format!("{id}-{seq}\n")).collect();
                Proc::spawn_env(
                    &e2e::bin("producer"),
                    &self.broker().client_args(&["--id", &id]),
                    Some(input.into_bytes()),
                    StdoutMode::Collect,
                    &[("MINIKAFKA_FAULT", &format!("{point}:{n}"))],
                )
            }
        };
        self.producers.push(LiveProducer { id, proc, fault });
    }

    /// Starts a consumer in `group` and waits until it has joined.
    fn start_consumer(&mut self, group: usize, fault: Option<(&'static str, u64)>) {
        let id = self.new_id("c");
        let spec = fault.map(|(point, n)| format!("{point}:{n}"));
        let env: Vec<(&str, &str)> = spec
            .iter()
            .map(|s| ("MINIKAFKA_FAULT", s.as_str()))
            .collect();
        let mut proc = Proc::spawn_env(
            &e2e::bin("consumer"),
            &self.broker().client_args(&[
                "--group",
                GROUPS[group],
                "--id",
                &id,
                "--format",
                "json",
            ]),
            None,
            StdoutMode::Watched(self.watcher.clone()),
            &env,
        );
        let joined = proc.wait_stderr("joined group ");
        assert_eq!(joined, format!("joined group {} as {id}", GROUPS[group]));
        let name = self.names.intern(&id);
        self.group_of.insert(name, group);
        self.consumers.push(LiveConsumer {
            id,
            name,
            group,
            proc,
            partial: Vec::new(),
        });
    }

    /// Records any producer that ended by itself (none should: `end_producer`
    /// says why) and starts new ones in their place.
    fn replenish_producers(&mut self) {
        let mut i = 0;
        while i < self.producers.len() {
            if self.producers[i].proc.is_running() {
                i += 1;
            } else {
                let p = self.producers.remove(i);
                self.end_producer(p, false);
            }
        }
        while self.producers.len() < PRODUCERS {
            self.start_producer(None);
        }
    }

    /// Brings the producers and each group's consumers back to strength.
    fn replenish(&mut self) {
        self.replenish_producers();
        for group in 0..GROUPS.len() {
            while self.consumers.iter().filter(|c| c.group == group).count() < CONSUMERS_PER_GROUP {
                self.start_consumer(group, None);
            }
        }
    }

    /// Waits for a producer that ended or is ending and records how.
    fn end_producer(&mut self, p: LiveProducer, killed_by_test: bool) {
        let LiveProducer {
            id,
            mut proc,
            fault,
        } = p;
        let f = proc.wait_exit_within(e2e::DEADLINE);
        let last = f.last_stderr_line();
        let end = if killed(&f) {
            match (fault, killed_by_test) {
                (_, true) => ProducerEnd::Killed,
                (Some((point, n)), false) => ProducerEnd::DiedAt { point, n },
                (None, false) => panic!("{id} was SIGKILLed by nobody: {:?}", f.stderr),
            }
        } else if f.code() == Some(0) {
            let sent = sent_count(last, &format!("{id}: sent "));
            ProducerEnd::Finished {
                sent: sent.unwrap_or_else(|| panic!("{id}: no summary: {:?}", f.stderr)),
            }
        } else {
            let sent = sent_count(last, "producer: broker stopped (after ");
            assert!(
                f.code() == Some(1) && sent.is_some() && self.broker.is_none(),
                "{id} failed, its broker running: {:?} {:?}",
                f.status,
                f.stderr
            );
            ProducerEnd::BrokerStopped {
                sent: sent.unwrap(),
            }
        };
        println!("    {id} ended: {end:?}");
        self.producer_ends.insert(id.clone(), end);
        self.stderr.push((id, f.stderr));
    }

    /// Parses the whole lines of `bytes` that `c` printed (after what it printed
    /// before) into `printed`.
    fn parse_printed(&mut self, c: &mut LiveConsumer, bytes: &[u8]) {
        c.partial.extend_from_slice(bytes);
        let Some(end) = c.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = c.partial.drain(..end + 1).collect();
        for line in std::str::from_utf8(&whole).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {line:?}: {e}", c.id));
            let field = |name: &str| {
                v[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: no {name} in {line}", c.id))
            };
            assert_eq!(
                (field("group"), field("consumer")),
                (GROUPS[c.group], c.id.as_str()),
                "{line}"
            );
            let payload = field("payload").as_bytes();
            let (producer, seq) = numbered(payload)
                .unwrap_or_else(|| panic!("{}: a payload nobody sent: {line}", c.id));
            assert_eq!(field("producer"), producer, "{line}");
            self.printed.push(Printed {
                consumer: c.name,
                offset: v["offset"].as_u64().unwrap(),
                producer: self.names.intern(producer),
                seq,
                payload: fingerprint(payload),
            });
        }
    }

    /// Everything printed so far by every live consumer.
    fn catch_up_printed(&mut self) {
        let mut consumers = std::mem::take(&mut self.consumers);
        for c in &mut consumers {
            let bytes = c.proc.take_stdout_so_far();
            self.parse_printed(c, &bytes);
        }
        self.consumers = consumers;
    }

    /// Waits for a consumer that ended or is ending, and records what it printed
    /// (a SIGKILL may have cut its last line, which is left out).
    fn end_consumer(&mut self, mut c: LiveConsumer) -> Finished {
        let f = c.proc.wait_exit_within(e2e::DEADLINE);
        let bytes = c.proc.take_stdout_so_far();
        self.parse_printed(&mut c, &bytes);
        self.parse_printed(&mut c, &f.stdout);
        if !c.partial.is_empty() {
            assert!(killed(&f), "{} cut a line without a SIGKILL", c.id);
            println!(
                "    {} was cut mid-line: {:?}",
                c.id,
                String::from_utf8_lossy(&c.partial)
            );
        }
        self.stderr.push((c.id, f.stderr.clone()));
        f
    }

    fn lines_printed_by_live_consumers(&self) -> u64 {
        self.consumers
            .iter()
            .map(|c| c.proc.stdout_lines_so_far())
            .sum()
    }

    /// Waits until the live consumers have printed `more` lines (and takes what
    /// they printed), replacing any producer that ended meanwhile.
    fn wait_for_lines(&mut self, more: u64) {
        let target = self.lines_printed_by_live_consumers() + more;
        let watcher = self.watcher.clone();
        watcher.wait_until("printed enough", RECHECK, || {
            self.replenish_producers();
            self.catch_up_printed();
            let now = self.lines_printed_by_live_consumers();
            if now >= target {
                Ok(())
            } else {
                Err(format!("{now} of {target} lines printed"))
            }
        });
    }

    fn count_sigkill(&mut self, role: &'static str) {
        *self.sigkills.entry(role).or_default() += 1;
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::KillBroker { after } => {
                self.wait_for_lines(after);
                let broker = self.broker.take().unwrap();
                let (f, data, shm) = broker.kill_and_collect();
                assert!(killed(&f));
                self.count_sigkill("broker");
                self.stderr.push(("broker".into(), f.stderr));
                for c in std::mem::take(&mut self.consumers) {
                    let id = c.id.clone();
                    let f = self.end_consumer(c);
                    assert_eq!(
                        (f.code(), f.last_stderr_line()),
                        (Some(1), "consumer: broker stopped"),
                        "{id}: {:?}",
                        f.stderr
                    );
                }
                for p in std::mem::take(&mut self.producers) {
                    self.end_producer(p, false);
                }
                self.broker = Some(Broker::start_with(data, shm, &BROKER_ARGS));
            }
            Step::KillProducer { pick, after } => {
                self.wait_for_lines(after);
                let i = (pick % self.producers.len() as u64) as usize;
                let mut p = self.producers.remove(i);
                if p.proc.is_running() {
                    p.proc.signal(Signal::SIGKILL);
                    self.count_sigkill("producer");
                    self.end_producer(p, true);
                } else {
                    println!("    {} had already ended", p.id);
                    self.end_producer(p, false);
                }
            }
            Step::ProducerDiesAt { point, n } => {
                self.start_producer(Some((point, n)));
                let p = self.producers.pop().unwrap();
                let id = p.id.clone();
                self.end_producer(p, false);
                assert!(
                    matches!(self.producer_ends[&id], ProducerEnd::DiedAt { .. }),
                    "{id} died at {point}:{n}"
                );
                self.count_sigkill("producer");
            }
            Step::KillConsumer { pick, after } => {
                let i = (pick % self.consumers.len() as u64) as usize;
                let target = self.consumers[i].proc.stdout_lines_so_far() + after;
                let watcher = self.watcher.clone();
                watcher.wait_until("the victim printed enough", RECHECK, || {
                    self.replenish_producers();
                    self.catch_up_printed();
                    let now = self.consumers[i].proc.stdout_lines_so_far();
                    if now >= target {
                        Ok(())
                    } else {
                        Err(format!("{now} of {target} lines printed"))
                    }
                });
                let c = self.consumers.remove(i);
                c.proc.signal(Signal::SIGKILL);
                self.count_sigkill("consumer");
                let id = c.id.clone();
                let f = self.end_consumer(c);
                assert!(killed(&f), "{id}: {:?} {:?}", f.status, f.stderr);
            }
            Step::ConsumerDiesAt { group, point, n } => {
                self.start_consumer(group_index(group), Some((point, n)));
                let c = self.consumers.pop().unwrap();
                let id = c.id.clone();
                let f = self.end_consumer(c);
                assert!(
                    killed(&f),
                    "{id} did not die at {point}:{n}: {:?} {:?}",
                    f.status,
                    f.stderr
                );
                self.count_sigkill("consumer");
            }
        }
        self.replenish();
    }

    /// Stops the producers, lets every group consume everything, stops the
    /// consumers and the broker, all gracefully.
    fn finish(mut self) -> Outcome {
        // A producer installs its SIGTERM handler before it connects: once all are
        // registered, a SIGTERM stops each cleanly.
        let live = self.producers.len() as u64;
        self.broker()
            .wait_for_status("every producer registered", |s| {
                s["clients"]["producers"] == live
            });
        for p in std::mem::take(&mut self.producers) {
            p.proc.signal(Signal::SIGTERM);
            let id = p.id.clone();
            self.end_producer(p, false);
            assert!(
                matches!(self.producer_ends[&id], ProducerEnd::Finished { .. }),
                "{id} stopped by SIGTERM exits 0"
            );
        }
        let broker = self.broker.take().unwrap();
        // A broker restarted moments ago may still be republishing what the groups
        // had not acknowledged: its next offset reaches the end of the file only
        // once that is done, and the lag counts only up to it.
        let status = broker.wait_for_status("every group has consumed everything", |s| {
            s["ring"]["next_offset"] == s["ring"]["persisted_offset"]
                && GROUPS.iter().all(|g| group_field(s, g, "lag") == 0)
        });
        let end = status["ring"]["next_offset"].as_u64().unwrap();
        for c in std::mem::take(&mut self.consumers) {
            c.proc.signal(Signal::SIGTERM);
            let id = c.id.clone();
            let f = self.end_consumer(c);
            assert_eq!(f.code(), Some(0), "{id}: {:?}", f.stderr);
        }
        let (stopped, data) = broker.stop_keeping_data();
        assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
        self.stderr.push(("broker".into(), stopped.stderr));
        Outcome {
            data,
            end,
            names: self.names,
            group_of: self.group_of,
            producer_ends: self.producer_ends,
            printed: self.printed,
            stderr: self.stderr,
            sigkills: self.sigkills,
        }
    }
}

/// What is left to check once everything has stopped.
struct Outcome {
    data: e2e::TempDir,
    end: u64,
    names: Names,
    group_of: HashMap<Name, usize>,
    producer_ends: BTreeMap<String, ProducerEnd>,
    printed: Vec<Printed>,
    stderr: Vec<(String, Vec<String>)>,
    sigkills: BTreeMap<&'static str, u32>,
}

#[test]
fn random_sigkills_of_brokers_producers_and_consumers_lose_nothing_and_log_everything() {
    let started = Instant::now();
    let seed = env_or("KILL_LOOP_SEED", DEFAULT_SEED);
    let steps = schedule(seed, env_or("KILL_LOOP_STEPS", DEFAULT_STEPS));
    println!(
        "kill loop: seed {seed} (KILL_LOOP_SEED), {} steps (KILL_LOOP_STEPS)",
        steps.len()
    );
    let mut storm = Storm::start();
    for (i, step) in steps.iter().enumerate() {
        println!(
            "step {i}: {step:?} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        storm.run(*step);
    }
    let mut outcome = storm.finish();
    let ran = started.elapsed();
    check(&mut outcome);
    println!(
        "kill loop: {} offsets, {} printed deliveries, SIGKILLs {:?}; ran in {:.1} s, checked in {:.1} s",
        outcome.end,
        outcome.printed.len(),
        outcome.sigkills,
        ran.as_secs_f64(),
        (started.elapsed() - ran).as_secs_f64()
    );
}

fn check(o: &mut Outcome) {
    // 5. No panic anywhere (and every wait above had a deadline).
    for (who, stderr) in &o.stderr {
        assert!(
            !stderr.iter().any(|l| l.contains("panicked")),
            "{who} panicked: {stderr:?}"
        );
    }

    // 1. Offsets 0..N, each once, in order; each payload one its producer sent,
    // in the order it sent them, none twice.
    let text = std::fs::read_to_string(o.data.0.join(PERSIST_FILE)).unwrap();
    assert!(text.ends_with('\n'), "{PERSIST_FILE} ends mid-line");
    // (producer, seq, payload's fingerprint) at each offset.
    let mut persisted: Vec<(Name, u64, u64)> = Vec::with_capacity(o.end as usize);
    let mut next_seq: HashMap<Name, u64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let r = PersistedRecord::parse(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        assert_eq!(
            r.offset,
            persisted.len() as u64,
            "offsets 0..N once, in order"
        );
        let (producer, seq) = numbered(&r.payload)
            .unwrap_or_else(|| panic!("offset {}: a payload nobody sent: {line}", r.offset));
        assert_eq!(producer, r.producer, "{line}");
        assert!(
            o.producer_ends.contains_key(producer),
            "offset {}: unknown producer {producer}",
            r.offset
        );
        let producer = o.names.intern(producer);
        let next = next_seq.entry(producer).or_default();
        assert_eq!(
            seq, *next,
            "offset {}: {}'s messages once each, in the order sent",
            r.offset, r.producer
        );
        *next += 1;
        persisted.push((producer, seq, fingerprint(&r.payload)));
    }
    drop(text);
    assert_eq!(persisted.len() as u64, o.end, "every offset in the file");

    // Everything printed is what the file holds at that offset.
    for p in &o.printed {
        assert_eq!(
            persisted.get(p.offset as usize),
            Some(&(p.producer, p.seq, p.payload)),
            "{} printed offset {} as {}-{}, unlike the file",
            o.names.id(p.consumer),
            p.offset,
            o.names.id(p.producer),
            p.seq
        );
    }

    // 2. Every acknowledged send is in the file, and so is every message of a
    // producer killed at a random moment that a consumer printed.
    let mut seen_sent: HashMap<Name, u64> = HashMap::new();
    for p in &o.printed {
        let seen = seen_sent.entry(p.producer).or_default();
        *seen = (*seen).max(p.seq + 1);
    }
    for (id, end) in &o.producer_ends {
        let name = o.names.intern(id);
        let in_file = next_seq.get(&name).copied().unwrap_or(0);
        let expected = match *end {
            ProducerEnd::Finished { sent } | ProducerEnd::BrokerStopped { sent } => sent,
            // It died holding the ring lock, just past the commit point of its n-th
            // message, or with its n-th reserved and unwritten.
            ProducerEnd::DiedAt {
                point: "send-committed",
                n,
            } => n,
            ProducerEnd::DiedAt {
                point: "send-reserved",
                n,
            } => n - 1,
            ProducerEnd::DiedAt { point, .. } => panic!("no such producer fault point {point}"),
            ProducerEnd::Killed => {
                let seen = seen_sent.get(&name).copied().unwrap_or(0);
                assert!(
                    in_file >= seen,
                    "{id}: {in_file} in the file, {seen} printed"
                );
                continue;
            }
        };
        assert_eq!(
            in_file, expected,
            "{id} ({end:?}): its messages in the file"
        );
    }

    // 3. Every printed delivery has its line; each group has one first delivery
    // of each offset, and no consumer has a line for an offset twice.
    let text = std::fs::read_to_string(o.data.0.join(LOG_FILE)).unwrap();
    assert!(text.ends_with('\n'), "{LOG_FILE} ends mid-line");
    let unknown = o.names.intern("unknown");
    // The attempt of every (consumer, offset) line; a consumer id names one group.
    let mut attempts: HashMap<(Name, u64), u32> = HashMap::new();
    let mut first = vec![[0u32; GROUPS.len()]; o.end as usize];
    let (mut lines, mut unknown_lines) = (0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let d = DeliveryRecord::parse(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        lines += 1;
        assert!(d.offset < o.end, "{line}: past the end");
        let group = group_index(&d.group);
        assert_eq!(
            d.producer,
            o.names.id(persisted[d.offset as usize].0),
            "{line}"
        );
        if d.attempt == 1 {
            first[d.offset as usize][group] += 1;
        }
        let consumer = o.names.intern(&d.consumer);
        if consumer == unknown {
            unknown_lines += 1;
            continue;
        }
        assert_eq!(o.group_of.get(&consumer), Some(&group), "{line}");
        let earlier = attempts.insert((consumer, d.offset), d.attempt);
        assert!(earlier.is_none(), "{line}: a second line for that delivery");
    }
    drop(text);
    for p in &o.printed {
        assert!(
            attempts.contains_key(&(p.consumer, p.offset)),
            "{} printed offset {} and has no line in {LOG_FILE}, whose lines for that offset are {:#?}",
            o.names.id(p.consumer),
            p.offset,
            lines_for_offset(&o.data.0.join(LOG_FILE), p.offset)
        );
    }
    for (offset, counts) in first.iter().enumerate() {
        for (g, &count) in counts.iter().enumerate() {
            assert_eq!(
                count, 1,
                "{}: first deliveries of offset {offset}",
                GROUPS[g]
            );
        }
    }

    // 4. Every group printed every message. A consumer printed each offset once,
    // its first deliveries in offset order, so an offset its group printed again
    // was a redelivery, logged with attempt >= 2 (only one line is attempt 1).
    let mut printed_by_group = vec![[0u32; GROUPS.len()]; o.end as usize];
    let mut last_first: HashMap<Name, u64> = HashMap::new();
    let mut printed_once: HashSet<(Name, u64)> = HashSet::new();
    for p in &o.printed {
        printed_by_group[p.offset as usize][o.group_of[&p.consumer]] += 1;
        assert!(
            printed_once.insert((p.consumer, p.offset)),
            "{} printed offset {} twice",
            o.names.id(p.consumer),
            p.offset
        );
        if attempts[&(p.consumer, p.offset)] == 1 {
            let last = last_first.insert(p.consumer, p.offset);
            assert!(
                last.is_none_or(|last| last < p.offset),
                "{}: first delivery {} after {last:?}",
                o.names.id(p.consumer),
                p.offset
            );
        }
    }
    let mut printed_again = 0;
    for (offset, counts) in printed_by_group.iter().enumerate() {
        for (g, &count) in counts.iter().enumerate() {
            assert!(count >= 1, "{} never printed offset {offset}", GROUPS[g]);
            printed_again += count - 1;
        }
    }
    println!(
        "checked: {lines} log lines ({unknown_lines} naming consumer unknown), \
         {printed_again} deliveries printed again"
    );
}

/// The lines of `log` for `offset`, to show what is there when one is missing.
fn lines_for_offset(log: &std::path::Path, offset: u64) -> Vec<String> {
    e2e::data_lines(log)
        .into_iter()
        .filter(|l| DeliveryRecord::parse(l).is_ok_and(|d| d.offset == offset))
        .collect()
}
