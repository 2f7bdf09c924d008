//! `consumer`: join a group and print each message it is handed, or, with
//! `--from`, read as a standalone reader from any offset.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_format::json::{DeliveryFields, MessageFields};
use clap::Parser;
use consumer::reader::{Reader, StartAt};
use consumer::{Consumer, ConsumerError};
use control_protocol::{Assignment, ResetTo, Subscription};
use count_progress::CountProgress;
use shm_layout::names::check_name;
use shm_layout::units::parse_duration;

mod output;
use output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "consumer",
    version,
    about = "Receive messages from a mini-kafka broker as a member of a consumer group",
    long_about = "Receive messages from a mini-kafka broker as a member of a consumer group.\n\n\
        Joins GROUP (created if new) or, without --group, the group with the fewest \
        consumers (among those already reading all of its --topic, if any do), and \
        prints `joined group <group> as <id>` on stderr. It reads every partition of \
        each --topic (default: the topic default), taking the partitions in turn. \
        Every group receives every message of the topics it reads; within a group, \
        each partition's messages are dealt in turn to the consumers reading its \
        topic. Each message is written and flushed to stdout before it is \
        acknowledged. Exits 0 after --count messages or on SIGINT/SIGTERM, 1 with \
        `broker stopped` if the broker goes away.\n\n\
        With --from, reads instead as a standalone reader, in no group and holding \
        nothing back (producers never wait for it): from the oldest message still in \
        persistencia_mensajes.txt (earliest), from the next one published (latest), \
        from where --id last committed (committed), from an offset, or from the first \
        message published at or after an RFC 3339 time; it prints `reading <topics> as \
        <id>` on stderr, then every message from there on, waiting at the end for new \
        ones. It reads every partition of its --topic (or one, --partition), each in \
        offset order and in turn, so that no partition starves the others. Each message it prints has its line in log_consumo.txt (group `-`). \
        Given --id, it commits its position every --commit-interval and at a clean \
        exit, and `--from committed` resumes there.\n\n\
        With --count, when stderr is a terminal and stdout is not (or --format none \
        prints nothing there), a progress bar on stderr shows the messages received, \
        the rate and the time left; it is wiped before the summary."
)]
struct Args {
    /// Broker control address.
    #[arg(
        short = 'b',
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4444"
    )]
    broker: String,
    /// Consumer id (1-64 of A-Z a-z 0-9 . _ -) [default: consumer-<pid>].
    #[arg(long, value_name = "NAME")]
    id: Option<String>,
    /// Topics to read, comma-separated (broker topics lists them), every
    /// partition of each. In a group, each partition's messages are dealt in turn
    /// to the members reading its topic.
    #[arg(long, value_name = "T1[,T2...]", default_value = "default")]
    topic: String,
    /// With --from and one topic: read only this partition [default: all of the
    /// topic's, fairly].
    #[arg(long, value_name = "P", requires = "from")]
    partition: Option<u32>,
    /// Group to join, created if it does not exist [default: the least-loaded group].
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    group: Option<String>,
    /// How a group this creates gives out each topic's messages: round-robin
    /// (each partition's messages dealt in turn to the members reading it) or
    /// partition (each partition owned by one member, moved when members join or
    /// leave: each key's messages stay in order). Joining a group of the other
    /// kind exits 1 naming its kind [default: the group's, or round-robin].
    #[arg(long, value_name = "KIND", requires = "group", value_parser = Assignment::parse)]
    assignment: Option<Assignment>,
    /// Read as a standalone reader from here: earliest, latest, committed (where
    /// --id last committed; earliest if never), an offset, or an RFC 3339 time
    /// (2026-12-04T10:00:00Z).
    #[arg(long, value_name = "WHERE", value_parser = parse_start)]
    from: Option<StartAt>,
    /// With --from and --id: how often the reader commits its position (the next
    /// offset to read) under its id; it also commits at a clean exit.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    commit_interval: Duration,
    /// Exit after this many messages. Shows a progress bar (rate, ETA) on stderr when
    /// stderr is a terminal and stdout is not, or with --format none.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Output: text (escaped payload per line), json (JSON Lines) or none (summary only).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Most messages taken per poll, printed and flushed together and acknowledged
    /// by the next poll (Kafka's max.poll.records): what the group gets again if
    /// this consumer dies while printing them.
    #[arg(long, value_name = "N", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_poll_records: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for (what, value) in [("id", &args.id), ("group name", &args.group)] {
        if let Some(v) = value {
            if let Err(e) = check_name(what, v) {
                eprintln!("consumer: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let topics: Vec<&str> = args.topic.split(',').collect();
    for (i, t) in topics.iter().enumerate() {
        if let Err(e) = shm_layout::names::check_topic(t) {
            eprintln!("consumer: {e}");
            return ExitCode::from(2);
        }
        if topics[..i].contains(t) {
            eprintln!("consumer: --topic names {t} twice");
            return ExitCode::from(2);
        }
    }
    if args.partition.is_some() && topics.len() > 1 {
        eprintln!("consumer: --partition reads one topic's partition: give one --topic");
        return ExitCode::from(2);
    }
    if topics.len() > control_protocol::frame::MAX_TOPICS_PER_CONSUMER {
        eprintln!(
            "consumer: --topic names {} topics; one consumer reads at most {}",
            topics.len(),
            control_protocol::frame::MAX_TOPICS_PER_CONSUMER
        );
        return ExitCode::from(2);
    }
    if args.from == Some(StartAt::Committed) && args.id.is_none() {
        eprintln!(
            "consumer: --from committed needs --id: offsets are committed under a reader's id"
        );
        return ExitCode::from(2);
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupt.clone()) {
            eprintln!("consumer: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    match args.from {
        Some(from) => read_standalone(&args, from, interrupt),
        None => consume_in_group(&args, interrupt),
    }
}

/// `--from`: committed, or a place as `ResetTo::parse` reads it.
fn parse_start(s: &str) -> Result<StartAt, String> {
    if s == "committed" {
        return Ok(StartAt::Committed);
    }
    ResetTo::parse(s)
        .map(|at| match at {
            ResetTo::Earliest => StartAt::Earliest,
            ResetTo::Latest => StartAt::Latest,
            ResetTo::Offset(o) => StartAt::Offset(o),
            ResetTo::Time(t) => StartAt::Time(t),
        })
        .map_err(|e| e.replace("expected earliest,", "expected earliest, committed,"))
}

/// What the loops share: where the messages go, and the counts for the summary.
struct Printer {
    format: Format,
    count: Option<u64>,
    /// Most messages taken per poll (--max-poll-records).
    batch: usize,
    progress: CountProgress,
    started: Instant,
    received: u64,
    bytes: u64,
    line: Vec<u8>,
}

impl Printer {
    fn new(args: &Args) -> Printer {
        // A bar on the terminal only where it cannot mix with the messages printed.
        let stdout_is_free = args.format == Format::None || !std::io::stdout().is_terminal();
        Printer {
            format: args.format,
            count: args.count,
            batch: args.max_poll_records as usize,
            progress: CountProgress::when(
                std::io::stderr().is_terminal() && stdout_is_free,
                args.count,
            ),
            started: Instant::now(),
            received: 0,
            bytes: 0,
            line: Vec::new(),
        }
    }

    /// How many messages the next poll may take: never more than will be printed.
    fn wanted(&self) -> usize {
        self.count.map_or(self.batch, |n| {
            (n - self.received).min(self.batch as u64) as usize
        })
    }

    /// Prints one message and counts it.
    fn print(
        &mut self,
        out: &mut impl Write,
        message: &MessageFields<'_>,
        delivery: &DeliveryFields<'_>,
    ) -> std::io::Result<()> {
        output::write_message(out, self.format, message, delivery, &mut self.line)?;
        self.received += 1;
        self.bytes += message.payload.len() as u64;
        Ok(())
    }

    /// Prints the summary (with --format none) and the outcome's line; the exit code.
    fn finish(self, id: &str, outcome: Result<(), String>) -> ExitCode {
        self.progress.clear();
        if let Err(e) = outcome {
            eprintln!("consumer: {e}");
            return ExitCode::from(1);
        }
        if self.format == Format::None {
            let secs = self.started.elapsed().as_secs_f64();
            eprintln!(
                "{id}: received {} messages ({} bytes) in {secs:.3} s ({:.0} msg/s)",
                self.received,
                self.bytes,
                self.received as f64 / secs.max(1e-9)
            );
        }
        ExitCode::SUCCESS
    }
}

fn consume_in_group(args: &Args, interrupt: Arc<AtomicBool>) -> ExitCode {
    let subscription = Subscription {
        topics: args.topic.split(',').map(str::to_string).collect(),
        assignment: args.assignment,
    };
    let mut consumer = match Consumer::connect_reading(
        &args.broker,
        args.id.as_deref(),
        args.group.as_deref(),
        &subscription,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::from(1);
        }
    };
    consumer.set_interrupt(interrupt);
    eprintln!("joined group {} as {}", consumer.group(), consumer.id());
    let group = consumer.group().to_string();
    let id = consumer.id().to_string();
    let mut printer = Printer::new(args);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let outcome = loop {
        let wanted = printer.wanted();
        if wanted == 0 {
            break Ok(());
        }
        let received_before = printer.received;
        let batch = match consumer.poll_batch(wanted, None) {
            Ok(b) => b,
            Err(ConsumerError::Interrupted) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        let mut written = Ok(());
        for i in 0..batch.len() {
            let msg = match batch.get(i) {
                Ok(m) => m,
                // The broker reports a record it lost; the others go on.
                Err(ConsumerError::Unreadable(_)) => continue,
                Err(e) => {
                    written = Err(std::io::Error::other(e.to_string()));
                    break;
                }
            };
            let delivery = DeliveryFields {
                group: Some(&group),
                consumer: &id,
                attempt: msg.attempt,
            };
            written = printer.print(&mut out, &output::fields_of(&msg), &delivery);
            if written.is_err() {
                break;
            }
        }
        // One flush per batch, before the next poll acknowledges it.
        if let Err(e) = written.and_then(|_| out.flush()) {
            // Not acknowledged: the group gets these messages again from someone else.
            break Err(format!("cannot write to stdout: {e}"));
        }
        for _ in received_before..printer.received {
            shm_layout::fault::point("consumer-printed");
        }
        printer.progress.add(printer.received - received_before);
    };
    if outcome.is_ok() {
        consumer.close();
    }
    printer.finish(&id, outcome)
}

fn read_standalone(args: &Args, from: StartAt, interrupt: Arc<AtomicBool>) -> ExitCode {
    let topics: Vec<&str> = args.topic.split(',').collect();
    let started = Reader::connect(&args.broker, args.id.as_deref()).and_then(|mut r| {
        match &topics[..] {
            [one] => r.assign(one, args.partition)?,
            many => {
                r.unsubscribe()?;
                if r.subscribe(many)? < many.len() {
                    // Which one is missing, in the topic lookup's own words.
                    for t in many {
                        r.assign(t, None)?;
                    }
                }
            }
        }
        r.seek_to(from)?;
        Ok(r)
    });
    let mut reader = match started {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::from(1);
        }
    };
    reader.set_interrupt(interrupt);
    eprintln!("reading {} as {}", args.topic, reader.id());
    let id = reader.id().to_string();
    let mut printer = Printer::new(args);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let delivery = DeliveryFields {
        group: None,
        consumer: &id,
        attempt: 1,
    };
    // Only a reader given an id commits: a default id names nobody next time.
    let commits = args.id.is_some();
    let mut committed_at = Instant::now();
    let mut committed = None;
    let outcome = loop {
        if commits
            && committed_at.elapsed() >= args.commit_interval
            && committed.as_ref() != Some(&reader.positions())
        {
            if let Err(e) = reader.commit() {
                break Err(e.to_string());
            }
            committed = Some(reader.positions());
            committed_at = Instant::now();
        }
        let wanted = printer.wanted();
        if wanted == 0 {
            break Ok(());
        }
        // A reader that commits looks up at least every interval, even when idle.
        let wait = commits.then_some(args.commit_interval);
        let batch = match reader.poll_batch(wanted, wait) {
            Ok(b) => b,
            Err(ConsumerError::Interrupted) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        let mut written = Ok(());
        for msg in batch {
            written = printer.print(&mut out, &output::fields_of_read(msg), &delivery);
            if written.is_err() {
                break;
            }
        }
        if let Err(e) = written.and_then(|_| out.flush()) {
            break Err(format!("cannot write to stdout: {e}"));
        }
        printer.progress.add(batch.len() as u64);
    };
    // What was printed is committed at a clean exit.
    let outcome = match outcome {
        Ok(()) if commits => reader.commit().map_err(|e| e.to_string()),
        other => other,
    };
    printer.finish(&id, outcome)
}
