//! `producer`: send messages from arguments, stdin, a file, a generator or a stream.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use count_progress::CountProgress;
use producer::{Producer, ProducerError};
use shm_layout::names::check_name;
use shm_layout::units::{parse_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "producer",
    version,
    about = "Send messages to a mini-kafka broker on this host",
    long_about = "Send messages to a mini-kafka broker on this host.\n\n\
        Each MESSAGE argument is one message. With no argument, each line of standard \
        input is one message (without its \\n or \\r\\n; a last line without a newline \
        is sent too). Payloads travel through shared memory; the broker's TCP port only \
        carries control traffic. Prints a one-line summary on stderr at exit.\n\n\
        A send blocks while the ring is full (a group behind, or a file the broker \
        cannot write yet). After a second it prints one line on stderr naming what \
        holds the ring, and another when it moves again.\n\n\
        With --count, when stderr is a terminal and stdout is not, a progress bar on \
        stderr shows the messages sent, the rate and the time left; it is wiped before \
        the summary.",
    group = clap::ArgGroup::new("source").args(["messages", "file", "count", "stream"])
)]
struct Args {
    /// Messages to send, one per argument (any bytes).
    #[arg(value_name = "MESSAGE", value_parser = clap::value_parser!(OsString))]
    messages: Vec<OsString>,
    /// Broker control address.
    #[arg(
        short = 'b',
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4444"
    )]
    broker: String,
    /// Producer id (1-64 of A-Z a-z 0-9 . _ -) [default: producer-<pid>].
    #[arg(long, value_name = "NAME")]
    id: Option<String>,
    /// Topic to send to (broker topics lists them).
    #[arg(long, value_name = "T", default_value = "default")]
    topic: String,
    /// Partition to send to [default: by key with Kafka's partitioner, keyless
    /// messages round-robin].
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Key attached to every message sent; a key always goes to the same
    /// partition, so its messages stay in order.
    #[arg(short = 'k', long, value_name = "KEY")]
    key: Option<String>,
    /// Send the bytes of this file as one message.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Send N generated messages, each beginning with its sequence number (from 0) and a space.
    /// Shows a progress bar (rate, ETA) on stderr when stderr is a terminal and stdout is not.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Size in bytes of each generated message (with --count).
    #[arg(long, value_name = "BYTES", default_value = "64", value_parser = parse_size, requires = "count")]
    size: u64,
    /// Send a log line every --interval until stopped (Ctrl-C).
    #[arg(long)]
    stream: bool,
    /// Interval between streamed lines (with --stream).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration, requires = "stream")]
    interval: Duration,
    /// Give up (exit 1, naming what held the ring) when a send waits longer than
    /// this for space [default: wait as long as it takes].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    send_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(id) = &args.id {
        if let Err(e) = check_name("id", id) {
            eprintln!("producer: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = shm_layout::names::check_topic(&args.topic) {
        eprintln!("producer: {e}");
        return ExitCode::from(2);
    }
    if args.stream && args.interval.is_zero() {
        eprintln!("producer: --interval must be greater than zero");
        return ExitCode::from(2);
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, interrupt.clone()) {
            eprintln!("producer: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    }
    let mut producer = match Producer::connect(&args.broker, args.id.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = producer.use_topic(&args.topic, args.partition) {
        eprintln!("producer: {e}");
        return ExitCode::from(1);
    }
    producer.set_interrupt(interrupt.clone());
    producer.set_send_timeout(args.send_timeout);
    let progress = CountProgress::when(count_progress::stderr_alone_on_a_terminal(), args.count);
    // A send that waits over a second says why, once, and again when it moves; above
    // the bar, if there is one.
    let notices = progress.clone();
    producer.on_send_notice(move |notice| notices.eprintln(notice));
    let started = Instant::now();
    let result = send_all(&args, &mut producer, &interrupt, &progress);
    let (sent, bytes) = producer.totals();
    let secs = started.elapsed().as_secs_f64();
    progress.clear();
    match result {
        Ok(()) | Err(Failure::Send(ProducerError::Interrupted)) => {
            eprintln!(
                "{}: sent {sent} messages ({bytes} bytes) in {secs:.3} s ({:.0} msg/s)",
                producer.id(),
                sent as f64 / secs.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("producer: {e} (after {sent} messages)");
            ExitCode::from(1)
        }
    }
}

/// Why the command stopped early.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Send(#[from] ProducerError),
    #[error("{0}")]
    Input(String),
}

fn send_all(
    args: &Args,
    p: &mut Producer,
    interrupt: &AtomicBool,
    progress: &CountProgress,
) -> Result<(), Failure> {
    let key = args.key.as_deref().map(str::as_bytes);
    let max = p.max_message();
    let too_large = |payload_len: usize| {
        let size = payload_len as u64 + key.map_or(0, |k| k.len() as u64);
        (size > max).then_some(ProducerError::TooLarge { size, max })
    };
    if let Some(path) = &args.file {
        let bytes = std::fs::read(path)
            .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
        if let Some(e) = too_large(bytes.len()) {
            return Err(e.into());
        }
        p.send_keyed(key, &bytes)?;
    } else if let Some(n) = args.count {
        if let Some(e) = too_large(args.size as usize) {
            return Err(e.into());
        }
        let mut pool: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| Vec::with_capacity(args.size as usize))
            .collect();
        let mut i = 0;
        while i < n {
            let k = (n - i).min(BATCH as u64) as usize;
            for (j, buf) in pool[..k].iter_mut().enumerate() {
                generated_message(i + j as u64, args.size as usize, buf);
            }
            send_pool(p, key, &pool[..k])?;
            i += k as u64;
            progress.add(k as u64);
        }
    } else if args.stream {
        let mut seq = 0u64;
        while !interrupt.load(Ordering::Relaxed) {
            let line = format!(
                "{} {} seq={seq}",
                humantime::format_rfc3339_micros(SystemTime::now()),
                p.id()
            );
            p.send_keyed(key, line.as_bytes())?;
            seq += 1;
            let next = Instant::now() + args.interval;
            // Wake often enough to stop promptly on a signal.
            while !interrupt.load(Ordering::Relaxed) && Instant::now() < next {
                std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    } else if !args.messages.is_empty() {
        if let Some(e) = args
            .messages
            .iter()
            .find_map(|m| too_large(m.as_bytes().len()))
        {
            return Err(e.into());
        }
        for m in &args.messages {
            p.send_keyed(key, m.as_bytes())?;
        }
    } else {
        // Our own buffer, so that we can see which lines are already read ahead.
        let mut input = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
        let mut pool: Vec<Vec<u8>> = vec![Vec::new(); BATCH];
        loop {
            // A batch is the lines already read ahead: no line waits for later input.
            let mut k = 0;
            while k < BATCH {
                let line = &mut pool[k];
                line.clear();
                let n = input
                    .read_until(b'\n', line)
                    .map_err(|e| Failure::Input(format!("cannot read stdin: {e}")))?;
                if n == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if let Some(e) = too_large(line.len()) {
                    send_pool(p, key, &pool[..k])?;
                    return Err(e.into());
                }
                k += 1;
                if !input.buffer().contains(&b'\n') {
                    break;
                }
            }
            if k == 0 {
                break;
            }
            send_pool(p, key, &pool[..k])?;
        }
    }
    let _ = std::io::stderr().flush();
    Ok(())
}

/// Messages sent under one hold of the ring lock.
const BATCH: usize = 64;

/// Sends `pool` as one batch, each message with `key`.
fn send_pool(p: &mut Producer, key: Option<&[u8]>, pool: &[Vec<u8>]) -> Result<(), Failure> {
    if pool.is_empty() {
        return Ok(());
    }
    let records: Vec<(Option<&[u8]>, &[u8])> = pool.iter().map(|m| (key, m.as_slice())).collect();
    p.send_batch(&records)
        .map(|_| ())
        .map_err(|(_, e)| e.into())
}

/// Message `i` of `--count`: its sequence number, a space, then filler to `size` bytes.
fn generated_message(i: u64, size: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let _ = write!(buf, "{i} ");
    buf.truncate(size);
    buf.resize(size, b'x');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_messages_start_with_their_number_and_have_the_size() {
        let mut b = Vec::new();
        generated_message(42, 8, &mut b);
        assert_eq!(b, b"42 xxxxx");
        generated_message(12345, 3, &mut b);
        assert_eq!(b, b"123");
    }
}
