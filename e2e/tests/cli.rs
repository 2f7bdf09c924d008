//! SPEC §5 command lines: help, usage errors (exit 2), runtime failures (exit 1 with
//! one line, never a panic).

use e2e::{bin, Broker, Proc, StdoutMode};

fn run(program: &str, args: &[&str]) -> e2e::Finished {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Proc::spawn(&bin(program), &args, None, StdoutMode::Collect).wait_exit()
}

fn assert_no_panic(f: &e2e::Finished) {
    assert!(
        !f.stderr.iter().any(|l| l.contains("panicked")),
        "panic text: {:?}",
        f.stderr
    );
}

#[test]
fn help_explains_every_flag() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "broker",
            &[
                "--port",
                "--bind",
                "--groups",
                "--slots",
                "--slot-size",
                "--max-message",
                "--data-dir",
                "--flush-interval",
                "--buffer-size",
                "--session-timeout",
                "--shm-name",
                "--max-clients",
                "--max-groups",
                "--fsync",
                "status",
                "decode",
            ],
        ),
        (
            "producer",
            &[
                "--broker",
                "--id",
                "--key",
                "--file",
                "--count",
                "--size",
                "--stream",
                "--interval",
            ],
        ),
        (
            "consumer",
            &["--broker", "--id", "--group", "--count", "--format"],
        ),
        ("broker", &["--json", "--broker", "--id"]),
    ];
    for (i, (program, flags)) in cases.iter().enumerate() {
        let f = if i == 3 {
            run(program, &["status", "--help"])
        } else {
            run(program, &["--help"])
        };
        assert_eq!(f.code(), Some(0));
        let text = f.stdout_text();
        for flag in *flags {
            assert!(
                text.contains(flag),
                "{program} --help does not mention {flag}:\n{text}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let cases: [(&str, &[&str]); 11] = [
        ("broker", &["--slots", "many"]),
        ("broker", &["--max-message", "0"]),
        ("broker", &["--session-timeout", "30"]),
        ("broker", &["--groups", "a,,b"]),
        ("broker", &["--slots", "16", "--max-message", "1MiB"]),
        ("broker", &["--no-such-flag"]),
        ("producer", &["--id", "has space", "x"]),
        ("producer", &["--file", "a", "--count", "3"]),
        ("consumer", &["--format", "xml"]),
        ("consumer", &["--group", ""]),
        ("consumer", &["--id", &"x".repeat(65)]),
    ];
    for (program, args) in cases {
        let f = run(program, args);
        assert_eq!(f.code(), Some(2), "{program} {args:?}: {:?}", f.stderr);
        assert!(!f.stderr.is_empty(), "{program} {args:?} said nothing");
        assert_no_panic(&f);
    }
}

#[test]
fn clients_without_a_broker_exit_1_with_one_line() {
    // Port 1 on loopback: nothing listens there.
    for (program, args) in [
        ("producer", vec!["-b", "127.0.0.1:1", "hello"]),
        ("consumer", vec!["-b", "127.0.0.1:1"]),
        ("broker", vec!["status", "-b", "127.0.0.1:1"]),
    ] {
        let f = run(program, &args);
        assert_eq!(f.code(), Some(1), "{program}: {:?}", f.stderr);
        assert_eq!(f.stderr.len(), 1, "{program}: {:?}", f.stderr);
        assert!(
            f.stderr[0].contains("cannot reach the broker at 127.0.0.1:1"),
            "{program}: {:?}",
            f.stderr
        );
        assert_no_panic(&f);
    }
}

#[test]
fn a_second_broker_on_the_same_port_exits_1_and_leaves_the_first_alone() {
    let first = Broker::start(&["--groups", "1"]);
    let port = first.addr.rsplit(':').next().unwrap().to_string();
    let f = run(
        "broker",
        &["--port", &port, "--shm-name", "/mk-e2e-second-unused"],
    );
    assert_eq!(f.code(), Some(1));
    assert_eq!(f.stderr.len(), 1, "{:?}", f.stderr);
    assert!(f.stderr[0].contains("cannot listen on"), "{:?}", f.stderr);
    // The first broker still serves.
    let (c, _) = first.consumer(&["--count", "1"]);
    assert_eq!(
        first.producer(&["still here"], None).wait_exit().code(),
        Some(0)
    );
    assert_eq!(c.wait_exit().stdout_text(), "still here\n");
}

#[test]
fn duplicate_live_ids_are_refused_and_free_again_once_gone() {
    let broker = Broker::start(&["--groups", "1"]);
    let (first, _) = broker.consumer(&["--id", "worker", "--count", "1"]);
    let args = broker.client_args(&["--id", "worker"]);
    let dup = Proc::spawn(&bin("consumer"), &args, None, StdoutMode::Collect).wait_exit();
    assert_eq!(dup.code(), Some(1));
    assert!(
        dup.last_stderr_line()
            .contains("already uses the id worker"),
        "{:?}",
        dup.stderr
    );
    // A producer may use the same id: ids are per role.
    assert_eq!(
        broker
            .producer(&["--id", "worker", "m"], None)
            .wait_exit()
            .code(),
        Some(0)
    );
    assert_eq!(first.wait_exit().code(), Some(0));
    broker.wait_for_status("worker gone", |s| s["clients"]["consumers"] == 0);
    let (again, _) = broker.consumer(&["--id", "worker", "--count", "1"]);
    assert_eq!(broker.producer(&["n"], None).wait_exit().code(), Some(0));
    assert_eq!(again.wait_exit().stdout_text(), "n\n");
}

#[test]
fn a_broker_started_under_a_low_open_file_limit_serves_more_clients_than_that() {
    let data = e2e::TempDir::new("fd-limit");
    let shm = format!("/{}", e2e::unique("mk-e2e-fd-limit"));
    let broker = e2e::bin("broker");
    let data_dir = data.0.display().to_string();
    let mut proc = e2e::Proc::spawn(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "ulimit -Sn 64 && exec \"$0\" \"$@\"",
            broker.to_str().unwrap(),
            "--port",
            "0",
            "--shm-name",
            &shm,
            "--data-dir",
            &data_dir,
            "--groups",
            "0",
        ],
        None,
        e2e::StdoutMode::Lines,
    );
    let ready = proc.next_stdout_line();
    let addr = ready
        .strip_prefix("listening on ")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("{ready:?}"))
        .to_string();
    // More idle connections than the 64 files the broker was started with.
    let idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let status = run("broker", &["status", "-b", &addr, "--json"]);
    assert_eq!(status.code(), Some(0), "{:?}", status.stderr);
    drop(idle);
    proc.signal(nix::sys::signal::Signal::SIGTERM);
    let stopped = proc.wait_exit_within(e2e::DEADLINE);
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
}
