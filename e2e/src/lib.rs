//! A harness for end-to-end tests: starts the built `broker`, `producer` and
//! `consumer` binaries as separate processes, waits on what they print (never on
//! time alone), bounds every wait with a deadline, and kills and cleans up whatever
//! it started when dropped.
#![forbid(unsafe_code)]

pub mod kafka_clients;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often `wait_for_status` asks the broker again.
const STATUS_POLL: Duration = Duration::from_millis(20);

/// Generous bound for any single wait in a test.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Path of a workspace binary built next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first (make test does)",
        path.display()
    );
    path
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(&format!("mk-e2e-{tag}")));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A small tmpfs mounted for a test, to fill a disk on purpose; unmounted when
/// dropped. Mounting needs root (CI runs as root).
pub struct SmallDisk {
    pub mount_point: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `1m`), or says why it cannot and returns None
    /// (the caller skips its test, saying so).
    pub fn mount(tag: &str, size: &str) -> Option<SmallDisk> {
        let mount_point = std::env::temp_dir().join(unique(&format!("mk-e2e-disk-{tag}")));
        std::fs::create_dir_all(&mount_point).expect("create mount point");
        let disk = SmallDisk { mount_point };
        let option = format!("size={size}");
        match disk.run_mount(&["-t", "tmpfs", "-o", &option, "tmpfs"]) {
            Ok(()) => Some(disk),
            Err(why) => {
                eprintln!("SKIPPED: cannot mount a small tmpfs ({why}); this test needs root");
                let _ = std::fs::remove_dir(&disk.mount_point);
                std::mem::forget(disk);
                None
            }
        }
    }

    /// Grows (or shrinks) the disk to `size`, keeping its files.
    pub fn resize(&self, size: &str) {
        let option = format!("remount,size={size}");
        self.run_mount(&["-o", &option])
            .unwrap_or_else(|e| panic!("resize {}: {e}", self.mount_point.display()));
    }

    /// A directory on the disk for a broker's data, removed (but not the disk) when
    /// dropped.
    pub fn data_dir(&self) -> TempDir {
        let dir = self.mount_point.join("data");
        std::fs::create_dir_all(&dir).expect("create data dir on the small disk");
        TempDir(dir)
    }

    fn run_mount(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("mount")
            .args(args)
            .arg(&self.mount_point)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).output();
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// Wakes whoever waits on the output of the processes started with
/// `StdoutMode::Watched` on it, whenever one of them prints or ends.
#[derive(Clone, Default)]
pub struct Watcher(Arc<(Mutex<u64>, Condvar)>);

impl Watcher {
    fn notify(&self) {
        let (events, changed) = &*self.0;
        *events.lock().unwrap() += 1;
        changed.notify_all();
    }

    /// Waits until `check` says Ok, looking again whenever a watched process prints
    /// or ends, and at least every `recheck` (for a condition on something else, a
    /// file say); panics at the deadline, naming `what` and the last thing `check`
    /// said was missing.
    pub fn wait_until(
        &self,
        what: &str,
        recheck: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) {
        let deadline = Instant::now() + DEADLINE;
        let (events, changed) = &*self.0;
        loop {
            let seen = *events.lock().unwrap();
            let missing = match check() {
                Ok(()) => return,
                Err(missing) => missing,
            };
            assert!(Instant::now() < deadline, "never {what}: {missing}");
            let guard = events.lock().unwrap();
            let _ = changed
                .wait_timeout_while(guard, recheck, |now| *now == seen)
                .unwrap();
        }
    }
}

/// What a watched process has printed: the bytes not yet taken, and how many
/// lines in all.
#[derive(Default)]
struct Printed {
    bytes: Vec<u8>,
    lines: u64,
}

/// A running process with its output collected in the background.
pub struct Proc {
    pub pid: u32,
    exit: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    stdout: Receiver<Vec<u8>>,
    stdout_lines: Option<Receiver<String>>,
    stdout_so_far: Option<Arc<Mutex<Printed>>>,
    stderr_lines: Receiver<String>,
    stderr_seen: Arc<Mutex<Vec<String>>>,
}

/// What a process left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<String>,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }
    pub fn last_stderr_line(&self) -> &str {
        self.stderr.last().map(String::as_str).unwrap_or("")
    }
}

/// How to treat a process's stdout.
pub enum StdoutMode {
    /// Collect it whole, returned by `wait_exit`.
    Collect,
    /// Deliver it line by line (`next_stdout_line`).
    Lines,
    /// Let the test take it as it comes (`take_stdout_so_far`; `wait_exit` returns
    /// what was not taken) and count its lines (`stdout_lines_so_far`), waking the
    /// watcher at each chunk.
    Watched(Watcher),
}

impl Proc {
    /// Starts `program` with `args`, writing `stdin` (then closing it) if given.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        program: &Path,
        args: &[S],
        stdin: Option<Vec<u8>>,
        mode: StdoutMode,
    ) -> Proc {
        Proc::spawn_env(program, args, stdin, mode, &[])
    }

    /// As [`Proc::spawn`], with extra environment variables.
    pub fn spawn_env<S: AsRef<std::ffi::OsStr>>(
        program: &Path,
        args: &[S],
        stdin: Option<Vec<u8>>,
        mode: StdoutMode,
        env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.envs(env.iter().copied());
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child: Child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let pid = child.id();
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let mut out = child.stdout.take().expect("piped stdout");
        let (stdout_tx, stdout) = channel();
        let mut stdout_so_far = None;
        let stdout_lines = match mode {
            StdoutMode::Collect => {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = out.read_to_end(&mut buf);
                    let _ = stdout_tx.send(buf);
                });
                None
            }
            StdoutMode::Watched(watcher) => {
                let printed = Arc::new(Mutex::new(Printed::default()));
                stdout_so_far = Some(printed.clone());
                std::thread::spawn(move || {
                    let mut chunk = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = out.read(&mut chunk) {
                        let mut p = printed.lock().unwrap();
                        p.bytes.extend_from_slice(&chunk[..n]);
                        p.lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                        drop(p);
                        watcher.notify();
                    }
                    let _ = stdout_tx.send(std::mem::take(&mut printed.lock().unwrap().bytes));
                    watcher.notify();
                });
                None
            }
            StdoutMode::Lines => {
                let (tx, rx) = channel();
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines().map_while(Result::ok) {
                        let _ = tx.send(line);
                    }
                    let _ = stdout_tx.send(Vec::new());
                });
                Some(rx)
            }
        };
        let err = child.stderr.take().expect("piped stderr");
        let (err_tx, stderr_lines) = channel();
        let stderr_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = stderr_seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.clone());
                let _ = err_tx.send(line);
            }
        });
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exit_tx.send(status);
            }
        });
        Proc {
            pid,
            exit,
            status: None,
            stdout,
            stdout_lines,
            stdout_so_far,
            stderr_lines,
            stderr_seen,
        }
    }

    fn printed(&self) -> std::sync::MutexGuard<'_, Printed> {
        self.stdout_so_far
            .as_ref()
            .expect("spawned with StdoutMode::Watched")
            .lock()
            .unwrap()
    }

    /// How many whole lines the process has printed so far (`StdoutMode::Watched`).
    pub fn stdout_lines_so_far(&self) -> u64 {
        self.printed().lines
    }

    /// What the process has printed since the last call (`StdoutMode::Watched`);
    /// what is left at its exit goes to `wait_exit`.
    pub fn take_stdout_so_far(&self) -> Vec<u8> {
        std::mem::take(&mut self.printed().bytes)
    }

    /// Waits for a stderr line containing `needle`; panics at the deadline.
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "pid {}: no stderr line containing {needle:?}; saw {:?}",
                    self.pid,
                    self.stderr_so_far()
                ),
            }
        }
    }

    /// The next stdout line (`StdoutMode::Lines`); panics at the deadline.
    pub fn next_stdout_line(&mut self) -> String {
        let rx = self
            .stdout_lines
            .as_ref()
            .expect("spawned with StdoutMode::Lines");
        match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => panic!(
                "pid {}: no stdout line ({e:?}); stderr {:?}",
                self.pid,
                self.stderr_so_far()
            ),
        }
    }

    /// The stdout lines printed and not yet read (`StdoutMode::Lines`), without
    /// waiting: after the process exited, all it printed.
    pub fn unread_stdout_lines(&mut self) -> Vec<String> {
        let rx = self
            .stdout_lines
            .as_ref()
            .expect("spawned with StdoutMode::Lines");
        rx.try_iter().collect()
    }

    /// The stderr lines seen so far. A panic while formatting a message with
    /// them must not poison them for the cleanup that follows.
    fn stderr_so_far(&self) -> Vec<String> {
        self.stderr_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the process is still running (without waiting).
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.exit.try_recv() {
            Ok(s) => {
                self.status = Some(s);
                false
            }
            Err(_) => true,
        }
    }

    /// Waits for the process to exit; panics at the deadline.
    pub fn wait_exit(mut self) -> Finished {
        self.wait_exit_within(DEADLINE)
    }

    /// Waits at most `limit` for the process to exit; panics if it does not.
    pub fn wait_exit_within(&mut self, limit: Duration) -> Finished {
        let status = match self.status.take() {
            Some(s) => s,
            None => match self.exit.recv_timeout(limit) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "pid {} did not exit within {limit:?}; stderr {:?}",
                    self.pid,
                    self.stderr_so_far()
                ),
                Err(e) => panic!("pid {}: {e}", self.pid),
            },
        };
        self.status = Some(status);
        let stdout = self.stdout.recv_timeout(DEADLINE).unwrap_or_default();
        // The stderr reader ends at EOF, right after exit; take what it saw.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .stderr_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        Finished {
            status,
            stdout,
            stderr: self.stderr_so_far(),
        }
    }

    /// Sends `signal` to the process (only ever one this harness started).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal);
    }

    /// The fields of /proc/PID/stat after the parenthesised command name (the
    /// process state first); None once the process is gone.
    fn stat_fields(&self) -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        Some(rest.split(' ').map(str::to_string).collect())
    }

    /// User + system CPU time so far, in clock ticks, from /proc/PID/stat.
    pub fn cpu_ticks(&self) -> u64 {
        let f = self.stat_fields().expect("read stat");
        // utime and stime are fields 14 and 15 of the whole line.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Whether the process is stopped by a signal (state `T`).
    pub fn is_stopped(&self) -> bool {
        self.stat_fields()
            .is_some_and(|f| f.first().is_some_and(|s| s == "T"))
    }

    /// Waits until the process has stopped itself at its fault point (state `T`
    /// in /proc); panics with `never` if it exits or the deadline passes first.
    pub fn wait_until_stopped(&mut self, never: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.is_stopped() {
            assert!(Instant::now() < deadline && self.is_running(), "{never}");
            std::thread::yield_now();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A broker started on a free port with its own region name and data directory.
pub struct Broker {
    pub proc: Proc,
    pub addr: String,
    pub shm: String,
    pub data: TempDir,
    /// The Kafka port's address, under `--kafka-port` (its ready line).
    pub kafka: Option<String>,
    /// The metrics' address, under `--metrics` (its ready line).
    pub metrics: Option<String>,
}

impl Broker {
    /// Starts a broker with `extra` arguments and waits for its ready line.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_in(TempDir::new("data"), extra)
    }

    /// Starts a broker on the data directory `data` (e.g. a restart).
    pub fn start_in(data: TempDir, extra: &[&str]) -> Broker {
        Broker::start_with(data, format!("/{}", unique("mk-e2e")), extra)
    }

    /// Starts a broker on `data` with region name `shm` (a restart after a crash
    /// finds the old region there).
    pub fn start_with(data: TempDir, shm: String, extra: &[&str]) -> Broker {
        let mut proc = Broker::spawn(&data, &shm, extra);
        let ready = proc.next_stdout_line();
        let addr = ready
            .strip_prefix("listening on ")
            .and_then(|r| r.split(',').next())
            .unwrap_or_else(|| panic!("unexpected ready line {ready:?}"))
            .to_string();
        assert_eq!(ready, format!("listening on {addr}, shm {shm}"));
        let metrics = extra.contains(&"--metrics").then(|| {
            let line = proc.next_stdout_line();
            line.strip_prefix("metrics on http://")
                .and_then(|r| r.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected metrics ready line {line:?}"))
                .to_string()
        });
        let kafka = extra.contains(&"--kafka-port").then(|| {
            let line = proc.next_stdout_line();
            line.strip_prefix("kafka on ")
                .unwrap_or_else(|| panic!("unexpected second ready line {line:?}"))
                .to_string()
        });
        Broker {
            proc,
            addr,
            shm,
            data,
            kafka,
            metrics,
        }
    }

    /// Starts a broker on `data` that must refuse to start: checks it exits 1
    /// without printing the ready line, and returns what it left (its last stderr
    /// line says why).
    pub fn refused(data: &TempDir, extra: &[&str]) -> Finished {
        let shm = format!("/{}", unique("mk-e2e-refused"));
        let mut proc = Broker::spawn(data, &shm, extra);
        let finished = proc.wait_exit_within(DEADLINE);
        assert_eq!(finished.code(), Some(1), "{:?}", finished.stderr);
        assert_eq!(
            proc.unread_stdout_lines(),
            Vec::<String>::new(),
            "a broker that cannot start never says it is ready"
        );
        finished
    }

    /// Starts a broker process without waiting for it to be ready.
    pub fn spawn(data: &TempDir, shm: &str, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--shm-name".into(),
            shm.to_string(),
            "--data-dir".into(),
            data.0.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Proc::spawn(&bin("broker"), &args, None, StdoutMode::Lines)
    }

    /// Kills the broker with SIGKILL, leaving its region and files as a crash would;
    /// hands back the data directory and region name.
    pub fn kill(self) -> (TempDir, String) {
        let (_, data, shm) = self.kill_and_collect();
        (data, shm)
    }

    /// As [`Broker::kill`], with what the broker printed on its way.
    pub fn kill_and_collect(mut self) -> (Finished, TempDir, String) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        let finished = self.proc.wait_exit_within(DEADLINE);
        let data = std::mem::replace(&mut self.data, TempDir(PathBuf::new()));
        (finished, data, std::mem::take(&mut self.shm))
    }

    /// Starts a client binary with extra environment variables.
    pub fn client_env(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_env(
            &bin(program),
            &self.client_args(args),
            None,
            StdoutMode::Collect,
            env,
        )
    }

    /// `-b ADDR` plus `args`, for a client command line.
    pub fn client_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec!["-b".to_string(), self.addr.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Starts a consumer and waits until it has joined; returns it and its group.
    pub fn consumer(&self, args: &[&str]) -> (Proc, String) {
        let mut p = Proc::spawn(
            &bin("consumer"),
            &self.client_args(args),
            None,
            StdoutMode::Collect,
        );
        let line = p.wait_stderr("joined group ");
        let group = line
            .strip_prefix("joined group ")
            .and_then(|r| r.split(" as ").next())
            .expect("joined line")
            .to_string();
        (p, group)
    }

    /// Starts a standalone reader (`consumer --from ...` in `args`) and waits for its
    /// ready line; returns it and its id.
    pub fn reader(&self, args: &[&str], stdout: StdoutMode) -> (Proc, String) {
        let mut p = Proc::spawn(&bin("consumer"), &self.client_args(args), None, stdout);
        let line = p.wait_stderr("reading ");
        let id = line
            .strip_prefix("reading ")
            .and_then(|rest| rest.rsplit_once(" as "))
            .expect("reading line")
            .1
            .to_string();
        (p, id)
    }

    /// Starts a producer.
    pub fn producer(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Proc {
        Proc::spawn(
            &bin("producer"),
            &self.client_args(args),
            stdin,
            StdoutMode::Collect,
        )
    }

    /// Starts a producer whose arguments are arbitrary bytes (each one message).
    pub fn producer_bytes(&self, args: &[&str], messages: &[Vec<u8>]) -> Proc {
        use std::os::unix::ffi::OsStringExt;
        let mut all: Vec<std::ffi::OsString> =
            self.client_args(args).into_iter().map(Into::into).collect();
        all.extend(
            messages
                .iter()
                .map(|m| std::ffi::OsString::from_vec(m.clone())),
        );
        Proc::spawn(&bin("producer"), &all, None, StdoutMode::Collect)
    }

    /// The data lines of an audit file in the data directory.
    pub fn data_lines(&self, file: &str) -> Vec<String> {
        data_lines(&self.data.0.join(file))
    }

    /// As [`data_lines_so_far`], for `file` in the broker's data directory.
    pub fn data_lines_so_far(&self, file: &str) -> Vec<String> {
        data_lines_so_far(&self.data.0.join(file))
    }

    /// Waits until `file` in the data directory holds at least `n` data lines
    /// that `wanted` keeps, and returns them (the broker writes its files every
    /// --flush-interval); panics at the deadline.
    pub fn wait_data_lines(
        &self,
        file: &str,
        n: usize,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines: Vec<String> = self
                .data_lines_so_far(file)
                .into_iter()
                .filter(|l| wanted(l))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} lines in {file}",
                lines.len()
            );
            // A re-check interval: the file changes every --flush-interval.
            std::thread::sleep(STATUS_POLL);
        }
    }

    /// Runs `broker SUBCOMMAND -b ADDR ARGS` against this broker and waits for it.
    pub fn subcommand(&self, subcommand: &str, args: &[&str]) -> Finished {
        let mut all = vec![subcommand.to_string()];
        all.extend(self.client_args(args));
        Proc::spawn(&bin("broker"), &all, None, StdoutMode::Collect).wait_exit()
    }

    /// Runs `broker status --json` against this broker.
    pub fn status(&self) -> serde_json::Value {
        let f = self.subcommand("status", &["--json"]);
        assert_eq!(f.code(), Some(0), "broker status failed: {:?}", f.stderr);
        serde_json::from_slice(&f.stdout).expect("status is JSON")
    }

    /// Runs `broker topics --json` against this broker.
    pub fn topics(&self) -> serde_json::Value {
        let f = self.subcommand("topics", &["--json"]);
        assert_eq!(f.code(), Some(0), "broker topics failed: {:?}", f.stderr);
        serde_json::from_slice(&f.stdout).expect("topics is JSON")
    }

    /// Runs `broker committed ARGS --json` against this broker.
    pub fn committed(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let f = self.subcommand("committed", &all);
        assert_eq!(f.code(), Some(0), "broker committed failed: {:?}", f.stderr);
        serde_json::from_slice(&f.stdout).expect("committed is JSON")
    }

    /// Polls `broker status` until `ready` holds for the report; panics at the deadline.
    pub fn wait_for_status(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.status();
            if ready(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "broker never reported {what}: {s}"
            );
            // Between two asks, not in place of one: each starts a process and
            // takes a client entry, which a tight loop would spend on nothing.
            std::thread::sleep(STATUS_POLL);
        }
    }

    /// Stops the broker with SIGTERM and waits for it.
    pub fn stop(self) -> Finished {
        self.stop_keeping_data().0
    }

    /// Stops the broker with SIGTERM, waits, and hands back its data directory.
    pub fn stop_keeping_data(mut self) -> (Finished, TempDir) {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        let finished = self.proc.wait_exit_within(DEADLINE);
        let data = std::mem::replace(&mut self.data, TempDir(PathBuf::new()));
        (finished, data)
    }
}

impl Broker {
    /// Stops the broker with SIGTERM and waits, leaving its region for a restart to
    /// find (when the broker did not remove it); hands back the data directory and
    /// region name.
    pub fn stop_leaving_region(mut self) -> (Finished, TempDir, String) {
        let shm = std::mem::take(&mut self.shm);
        let (finished, data) = self.stop_keeping_data();
        (finished, data, shm)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.proc.is_running() {
            self.proc.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.proc.wait_exit_within(DEADLINE);
        }
        if !self.shm.is_empty() {
            let _ = shm_layout::Region::unlink(&self.shm);
            unlink_partition_regions(&self.shm);
        }
    }
}

/// Unlinks the regions of the topic-partitions of the broker whose control
/// region is `shm` (`<shm>.t<topic id>.<partition>`), which a killed broker
/// leaves behind.
pub fn unlink_partition_regions(shm: &str) {
    let prefix = format!("{}.t", shm.trim_start_matches('/'));
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = shm_layout::Region::unlink(&format!("/{name}"));
        }
    }
}

/// The data lines (not `#` comments) of a file; checks it ends with a newline.
pub fn data_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends mid-line",
        path.display()
    );
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The data lines of a file a running broker may be writing to: a last line not
/// yet complete is left out (a reader may see a write half done).
pub fn data_lines_so_far(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Parses JSON Lines output of `consumer --format json`.
/// The member ids of a group in a `broker status --json` report.
pub fn member_ids(group: &serde_json::Value) -> Vec<String> {
    group["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect()
}

pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A message's payload bytes from a JSON line (`payload` or `payload_base64`).
pub fn payload_of(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    if let Some(s) = v["payload"].as_str() {
        return s.as_bytes().to_vec();
    }
    let b = v["payload_base64"]
        .as_str()
        .expect("payload or payload_base64");
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .expect("valid base64")
}

/// Reads until the broker closes the connection `s`; returns what it sent.
/// Panics if the broker keeps it open past [`DEADLINE`].
pub fn read_until_closed(mut s: std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("connection not closed by the broker: {e}"),
        }
    }
}

/// The resident memory of process `pid`, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The highest resident memory a process reaches while watched, sampled every
/// 20 ms by a thread of its own.
pub struct PeakRss {
    done: Arc<std::sync::atomic::AtomicBool>,
    peak: Arc<std::sync::atomic::AtomicU64>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Starts watching process `pid`.
    pub fn watch(pid: u32) -> PeakRss {
        use std::sync::atomic::Ordering;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = {
            let (done, peak) = (done.clone(), peak.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20)); // sampling period
                }
            })
        };
        PeakRss {
            done,
            peak,
            sampler,
        }
    }

    /// Stops watching; the peak seen, in MiB.
    pub fn stop(self) -> u64 {
        use std::sync::atomic::Ordering;
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the sampler ends");
        self.peak.load(Ordering::Relaxed) / 1024
    }
}
