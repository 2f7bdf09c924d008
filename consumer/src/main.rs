//! `consumer`: join a group and print each message it is handed.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use consumer::{Consumer, ConsumerError};
use count_progress::CountProgress;
use shm_layout::names::check_name;

mod output;
use output::Format;

/// Most messages printed per flush.
const BATCH: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "consumer",
    version,
    about = "Receive messages from a mini-kafka broker as a member of a consumer group",
    long_about = "Receive messages from a mini-kafka broker as a member of a consumer group.\n\n\
        Joins GROUP (created if new) or, without --group, the group with the fewest \
        consumers, and prints `joined group <group> as <id>` on stderr. Every group \
        receives every message; within a group, messages are dealt in turn to its \
        consumers. Each message is written and flushed to stdout before it is \
        acknowledged. Exits 0 after --count messages or on SIGINT/SIGTERM, 1 with \
        `broker stopped` if the broker goes away.\n\n\
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
    /// Group to join, created if it does not exist [default: the least-loaded group].
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Exit after this many messages. Shows a progress bar (rate, ETA) on stderr when
    /// stderr is a terminal and stdout is not, or with --format none.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Output: text (escaped payload per line), json (JSON Lines) or none (summary only).
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
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
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupt.clone()) {
            eprintln!("consumer: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    let mut consumer =
        match Consumer::connect(&args.broker, args.id.as_deref(), args.group.as_deref()) {
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
    // A bar on the terminal only where it cannot mix with the messages printed.
    let stdout_is_free = args.format == Format::None || !std::io::stdout().is_terminal();
    let progress = CountProgress::when(
        std::io::stderr().is_terminal() && stdout_is_free,
        args.count,
    );
    let started = Instant::now();
    let (mut received, mut bytes) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = Vec::new();
    let outcome = loop {
        // Never take more than will be printed: a batch is acknowledged whole.
        let wanted = args
            .count
            .map_or(BATCH, |n| (n - received).min(BATCH as u64) as usize);
        if wanted == 0 {
            break Ok(());
        }
        let received_before = received;
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
            written = output::write_message(&mut out, args.format, &msg, &group, &id, &mut line);
            if written.is_err() {
                break;
            }
            received += 1;
            bytes += msg.payload.len() as u64;
        }
        // One flush per batch, before the next poll acknowledges it.
        if let Err(e) = written.and_then(|_| out.flush()) {
            // Not acknowledged: the group gets these messages again from someone else.
            break Err(format!("cannot write to stdout: {e}"));
        }
        progress.add(received - received_before);
    };
    progress.clear();
    match outcome {
        Ok(()) => {
            consumer.close();
            if args.format == Format::None {
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{id}: received {received} messages ({bytes} bytes) in {secs:.3} s ({:.0} msg/s)",
                    received as f64 / secs.max(1e-9)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::from(1)
        }
    }
}
