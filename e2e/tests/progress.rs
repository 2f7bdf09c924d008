//! The progress bar of `producer --count` and `consumer --count`: drawn on stderr only
//! when stderr is a terminal (a pseudo-terminal here) and stdout is not (or, for
//! `consumer --format none`, whatever stdout is), wiped before the summary line, with
//! the producer's notices printed whole above it; never drawn into a pipe.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Instant;

use e2e::{bin, Broker, Proc, StdoutMode, DEADLINE};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

/// Messages per run: enough to fill the small ring below several times.
const COUNT: u64 = 200;

/// A ring of 64 one-slot messages: a producer with no consumer in its group stops
/// after 64 sends, and its bar stays at 64.
const SLOTS: &str = "64";

/// Where a process on the pseudo-terminal writes its stdout.
enum Stdout {
    /// A pipe, as in `consumer --count N > file`.
    Pipe,
    /// The same terminal as stderr, as in an interactive shell.
    Terminal,
}

/// A client process whose stderr is a pseudo-terminal. What it writes there is
/// collected as it comes; its stdout, when a pipe, when it exits.
struct OnTerminal {
    child: Child,
    chunks: Receiver<Vec<u8>>,
    /// Everything written on the terminal so far.
    screen: String,
    stdout: Option<Receiver<Vec<u8>>>,
    waited: bool,
}

/// What a process on the terminal left.
struct Ended {
    pid: u32,
    status: ExitStatus,
    screen: String,
    stdout: Vec<u8>,
}

impl OnTerminal {
    fn spawn(program: &str, args: &[String], stdout: Stdout) -> OnTerminal {
        // Opened by hand rather than with openpty(3), whose descriptors are
        // inheritable: the tests of this file run in parallel threads that start
        // processes, and one that inherited the terminal would keep it open after our
        // process exits. `File::open` sets close-on-exec; the child's dup of it on fd 2
        // does not.
        let mut master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave_path = ptsname_r(&master).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)
            .unwrap_or_else(|e| panic!("open {slave_path}: {e}"));
        let mut cmd = Command::new(bin(program));
        cmd.args(args).stdin(Stdio::null());
        match stdout {
            Stdout::Pipe => cmd.stdout(Stdio::piped()),
            Stdout::Terminal => cmd.stdout(Stdio::from(slave.try_clone().expect("dup"))),
        };
        cmd.stderr(Stdio::from(slave));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        // The terminal reads as ended (EIO) once no process holds its other side:
        // give up ours, held by the command.
        drop(cmd);
        let (tx, chunks) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match master.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        let stdout = child.stdout.take().map(|mut out| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = out.read_to_end(&mut all);
                let _ = tx.send(all);
            });
            rx
        });
        OnTerminal {
            child,
            chunks,
            screen: String::new(),
            stdout,
            waited: false,
        }
    }

    /// Reads the terminal until `done` holds for what it shows; panics at the
    /// deadline or if the process ends first.
    fn wait_until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(&self.screen) {
            match self
                .chunks
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(chunk) => self.screen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(e) => panic!("never {what} ({e:?}); the terminal shows {:?}", self.screen),
            }
        }
    }

    /// Reads the terminal until the process has closed it (it exited), then reaps it.
    fn wait_exit(mut self) -> Ended {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .chunks
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(chunk) => self.screen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("did not exit; the terminal shows {:?}", self.screen)
                }
            }
        }
        // The terminal closed as the process exited: this wait returns at once.
        let status = self.child.wait().expect("wait");
        self.waited = true;
        let stdout = match &self.stdout {
            Some(rx) => rx.recv_timeout(DEADLINE).expect("stdout"),
            None => Vec::new(),
        };
        Ended {
            pid: self.child.id(),
            status,
            screen: std::mem::take(&mut self.screen),
            stdout,
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The text after the last escape sequence: what was printed after the bar's last
/// erase.
fn after_last_escape(screen: &str) -> &str {
    let Some(esc) = screen.rfind('\x1b') else {
        return screen;
    };
    // A CSI sequence: ESC [, parameters, then one final byte in @..~.
    let rest = &screen[esc + 1..];
    let rest = rest.strip_prefix('[').unwrap_or(rest);
    match rest.find(|c: char| ('@'..='~').contains(&c)) {
        Some(end) => &rest[end + 1..],
        None => "",
    }
}

/// The line starting `prefix`, checked to stand whole on its own line: it begins at
/// the start of a line (or right after the bar was erased) and runs to its end with
/// no bar drawn into it.
fn whole_line<'s>(screen: &'s str, prefix: &str) -> &'s str {
    let start = screen
        .find(prefix)
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in {screen:?}"));
    let before = &screen[..start];
    assert!(
        before.is_empty() || before.ends_with('\n') || before.ends_with("\x1b[2K"),
        "{prefix:?} does not start a line: {screen:?}"
    );
    let line = &screen[start..];
    let line = &line[..line
        .find("\r\n")
        .unwrap_or_else(|| panic!("{prefix:?} never ends its line: {screen:?}"))];
    assert!(
        !line.contains(['\x1b', '\r']),
        "the bar was drawn into {line:?}"
    );
    line
}

/// The positions the bar showed: N in each `N/<total> messages`.
fn bar_positions(screen: &str, total: u64) -> Vec<u64> {
    let marker = format!("/{total} messages");
    screen
        .match_indices(&marker)
        .filter_map(|(at, _)| {
            let digits = screen[..at]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .count();
            screen[at - digits..at].parse().ok()
        })
        .collect()
}

fn count_args(broker: &Broker, extra: &[&str]) -> Vec<String> {
    let count = COUNT.to_string();
    let mut args = vec!["--count", count.as_str()];
    args.extend_from_slice(extra);
    broker.client_args(&args)
}

#[test]
fn a_producer_on_a_terminal_draws_a_bar_prints_its_notices_above_it_and_wipes_it() {
    let broker = Broker::start(&["--slots", SLOTS, "--groups", "1"]);
    let mut producer = OnTerminal::spawn("producer", &count_args(&broker, &[]), Stdout::Pipe);
    // The ring holds 64 messages and group-1 has no consumer: the producer waits
    // there, its bar at 64, and says why after a second.
    producer.wait_until("drew 64 messages sent", |screen| {
        bar_positions(screen, COUNT).contains(&64)
    });
    producer.wait_until("said why it waits", |screen| {
        screen.contains("waiting for space")
    });
    let (consumer, _) = broker.consumer(&["--count", &COUNT.to_string(), "--format", "none"]);
    let ended = producer.wait_exit();
    assert!(ended.status.success(), "{:?}", ended.screen);
    assert_eq!(ended.stdout, b"", "nothing on stdout");
    let screen = &ended.screen;
    assert!(
        bar_positions(screen, COUNT)
            .windows(2)
            .all(|pair| pair[0] <= pair[1]),
        "the bar only moves forward: {screen:?}"
    );
    assert!(screen.contains(" msg/s, ETA "), "rate and ETA: {screen:?}");
    assert_eq!(
        whole_line(screen, "waiting for space"),
        "waiting for space in default/0: group group-1 is 64 messages behind and has no consumers"
    );
    whole_line(screen, "sending again after ");
    // The bar is wiped, then the summary is the last thing on the terminal.
    let summary = after_last_escape(screen);
    let prefix = format!("producer-{}: sent {COUNT} messages (", ended.pid);
    assert!(
        summary.starts_with(&prefix) && summary.ends_with(" msg/s)\r\n"),
        "the summary is alone after the bar: {summary:?} in {screen:?}"
    );
    assert_eq!(summary.matches("\r\n").count(), 1, "{summary:?}");
    assert!(consumer.wait_exit().status.success());
}

#[test]
fn a_consumer_on_a_terminal_draws_its_bar_while_it_waits_and_wipes_it_before_the_summary() {
    let broker = Broker::start(&["--groups", "1"]);
    let mut consumer = OnTerminal::spawn(
        "consumer",
        &count_args(&broker, &["--format", "none"]),
        Stdout::Pipe,
    );
    consumer.wait_until("drew its bar at 0", |screen| {
        bar_positions(screen, COUNT).contains(&0)
    });
    let first = broker.producer(&["--count", "64"], None).wait_exit();
    assert_eq!(first.code(), Some(0), "{:?}", first.stderr);
    consumer.wait_until("drew 64 messages received", |screen| {
        bar_positions(screen, COUNT).contains(&64)
    });
    let rest = (COUNT - 64).to_string();
    let second = broker.producer(&["--count", &rest], None).wait_exit();
    assert_eq!(second.code(), Some(0), "{:?}", second.stderr);
    let ended = consumer.wait_exit();
    assert!(ended.status.success(), "{:?}", ended.screen);
    assert_eq!(ended.stdout, b"", "--format none prints nothing on stdout");
    let screen = &ended.screen;
    let joined = whole_line(screen, "joined group group-1 as consumer-");
    assert!(screen.starts_with(joined), "{screen:?}");
    let summary = after_last_escape(screen);
    let prefix = format!("consumer-{}: received {COUNT} messages (", ended.pid);
    assert!(
        summary.starts_with(&prefix) && summary.ends_with(" msg/s)\r\n"),
        "the summary is alone after the bar: {summary:?} in {screen:?}"
    );
    assert_eq!(summary.matches("\r\n").count(), 1, "{summary:?}");
}

#[test]
fn a_consumer_printing_into_a_pipe_keeps_its_bar_on_the_terminal() {
    let broker = Broker::start(&["--groups", "1"]);
    let mut consumer = OnTerminal::spawn("consumer", &count_args(&broker, &[]), Stdout::Pipe);
    consumer.wait_until("drew its bar", |screen| {
        !bar_positions(screen, COUNT).is_empty()
    });
    let sent = broker
        .producer(&["--count", &COUNT.to_string(), "--size", "8"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let ended = consumer.wait_exit();
    assert!(ended.status.success(), "{:?}", ended.screen);
    let expected: String = (0..COUNT)
        .map(|i| format!("{:x<8}\n", format!("{i} ")))
        .collect();
    assert_eq!(
        String::from_utf8(ended.stdout).unwrap(),
        expected,
        "stdout holds the messages and nothing else"
    );
    // `--format text` prints no summary: the wiped bar leaves the terminal clean.
    assert_eq!(after_last_escape(&ended.screen), "", "{:?}", ended.screen);
}

#[test]
fn no_bar_where_stdout_prints_on_the_same_terminal() {
    let broker = Broker::start(&["--groups", "1"]);
    let count = "10";
    let consumer = OnTerminal::spawn(
        "consumer",
        &broker.client_args(&["--count", count]),
        Stdout::Terminal,
    );
    let producer = OnTerminal::spawn(
        "producer",
        &broker.client_args(&["--count", count, "--size", "4"]),
        Stdout::Terminal,
    );
    let sent = producer.wait_exit();
    assert!(sent.status.success(), "{:?}", sent.screen);
    assert!(
        !sent.screen.contains('\x1b') && sent.screen.matches("\r\n").count() == 1,
        "only the summary: {:?}",
        sent.screen
    );
    assert!(
        sent.screen.contains(": sent 10 messages ("),
        "{:?}",
        sent.screen
    );
    let received = consumer.wait_exit();
    assert!(received.status.success(), "{:?}", received.screen);
    let lines: Vec<&str> = received.screen.split_terminator("\r\n").collect();
    assert!(!received.screen.contains('\x1b'), "{:?}", received.screen);
    assert_eq!(lines.len(), 11, "joined, then the messages: {lines:?}");
    assert!(
        lines[0].starts_with("joined group group-1 as "),
        "{lines:?}"
    );
    assert_eq!(
        lines[1..],
        ["0 xx", "1 xx", "2 xx", "3 xx", "4 xx", "5 xx", "6 xx", "7 xx", "8 xx", "9 xx"]
    );
}

#[test]
fn a_consumer_printing_nothing_draws_its_bar_even_beside_stdout_on_the_terminal() {
    let broker = Broker::start(&["--groups", "1"]);
    let mut consumer = OnTerminal::spawn(
        "consumer",
        &count_args(&broker, &["--format", "none"]),
        Stdout::Terminal,
    );
    consumer.wait_until("drew its bar", |screen| {
        !bar_positions(screen, COUNT).is_empty()
    });
    let sent = broker
        .producer(&["--count", &COUNT.to_string()], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    let ended = consumer.wait_exit();
    assert!(ended.status.success(), "{:?}", ended.screen);
    let summary = after_last_escape(&ended.screen);
    assert!(
        summary.starts_with(&format!(
            "consumer-{}: received {COUNT} messages (",
            ended.pid
        )) && summary.ends_with(" msg/s)\r\n"),
        "{summary:?}"
    );
}

#[test]
fn into_pipes_stderr_holds_exactly_what_it_held_without_a_bar() {
    let broker = Broker::start(&["--groups", "2"]);
    let count = COUNT.to_string();
    let (plain, _) = broker.consumer(&["--count", &count, "--group", "group-1"]);
    let (quiet, _) =
        broker.consumer(&["--count", &count, "--group", "group-2", "--format", "none"]);
    let producer = broker.producer(&["--count", &count], None);
    let producer_pid = producer.pid;
    let sent = producer.wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    assert_eq!(sent.stdout, b"");
    let [summary] = sent.stderr.as_slice() else {
        panic!("only the summary: {:?}", sent.stderr);
    };
    let prefix = format!("producer-{producer_pid}: sent {COUNT} messages (");
    assert!(
        summary.starts_with(&prefix) && summary.ends_with(" msg/s)"),
        "{summary:?}"
    );

    let plain = plain.wait_exit();
    assert_eq!(plain.code(), Some(0), "{:?}", plain.stderr);
    let [joined] = plain.stderr.as_slice() else {
        panic!("only the joined line: {:?}", plain.stderr);
    };
    assert!(
        joined.starts_with("joined group group-1 as consumer-"),
        "{joined:?}"
    );
    assert_eq!(
        plain.stdout.iter().filter(|&&b| b == b'\n').count() as u64,
        COUNT
    );

    let quiet_pid = quiet.pid;
    let quiet = quiet.wait_exit();
    assert_eq!(quiet.code(), Some(0), "{:?}", quiet.stderr);
    let [joined, summary] = quiet.stderr.as_slice() else {
        panic!("the joined line and the summary: {:?}", quiet.stderr);
    };
    assert!(
        joined.starts_with("joined group group-2 as consumer-"),
        "{joined:?}"
    );
    let prefix = format!("consumer-{quiet_pid}: received {COUNT} messages (");
    assert!(
        summary.starts_with(&prefix) && summary.ends_with(" msg/s)"),
        "{summary:?}"
    );
    assert_eq!(quiet.stdout, b"");
}

#[test]
fn help_mentions_the_progress_bar() {
    for program in ["producer", "consumer"] {
        let help = Proc::spawn(&bin(program), &["--help"], None, StdoutMode::Collect).wait_exit();
        assert_eq!(help.code(), Some(0), "{:?}", help.stderr);
        let text = help.stdout_text();
        assert!(
            text.contains("progress bar"),
            "{program} --help does not mention the progress bar:\n{text}"
        );
    }
}
