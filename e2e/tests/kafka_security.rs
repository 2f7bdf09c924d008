//! Remote access to the Kafka port (SPEC §12): a listener off loopback lets
//! in only the users of `--kafka-users` (SASL/SCRAM-SHA-256, entries written
//! by `broker kafka-user add`), and `--kafka-tls-cert`/`--kafka-tls-key`
//! encrypt it. Proved with kcat and kafka-python, bound to 0.0.0.0 and
//! reached through 127.0.0.1.

use std::path::Path;

use e2e::kafka_clients::{python, python_outcome};
use e2e::{bin, json_lines, Broker, Finished, Proc, StdoutMode, TempDir};

/// `broker kafka-user add NAME --kafka-users FILE`, the password on stdin.
fn add_user(file: &Path, name: &str, password: &str) -> Finished {
    Proc::spawn(
        &bin("broker"),
        &[
            "kafka-user",
            "add",
            name,
            "--kafka-users",
            &file.display().to_string(),
        ],
        Some(format!("{password}\n").into_bytes()),
        StdoutMode::Collect,
    )
    .wait_exit()
}

/// A free port for the Kafka port to bind on 0.0.0.0, and its address through
/// loopback, which the broker hands out (`--kafka-advertise`): a wildcard bind
/// otherwise hands out this host's name, which a test host may not resolve.
fn port_and_loopback() -> (String, String) {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (port.to_string(), format!("127.0.0.1:{port}"))
}

fn scram(user: &str, password: &str) -> Vec<String> {
    [
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-256",
        "-X",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("sasl.username={user}"),
        "-X".into(),
        format!("sasl.password={password}"),
    ])
    .collect()
}

/// kcat with `args` and `extra`, and what became of it.
fn kcat_run(args: &[&str], extra: &[String], stdin: Option<&str>) -> Finished {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend_from_slice(extra);
    Proc::spawn(
        Path::new("kcat"),
        &all,
        stdin.map(|s| s.as_bytes().to_vec()),
        StdoutMode::Collect,
    )
    .wait_exit()
}

/// The first two records of topic `t`, read by kcat with `extra`.
fn kcat_read_two(kafka: &str, extra: &[String]) -> String {
    let f = kcat_run(
        &[
            "-b",
            kafka,
            "-t",
            "t",
            "-C",
            "-o",
            "beginning",
            "-c",
            "2",
            "-e",
        ],
        extra,
        None,
    );
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    f.stdout_text()
}

/// The payloads of topic `t` in the persistence file, in order.
fn persisted_payloads(broker: &Broker) -> Vec<String> {
    broker
        .data_lines_so_far("persistencia_mensajes.txt")
        .iter()
        .filter(|l| l.starts_with("t\t"))
        .map(|l| l.split('\t').nth(6).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn off_loopback_only_the_users_of_the_users_file_get_in() {
    let secrets = TempDir::new("kafka-users");
    let users = secrets.0.join("users.txt");
    let f = add_user(&users, "alice", "correct horse");
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    assert_eq!(f.stdout_text(), "added user alice\n");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(!text.contains("correct horse"), "no password in the file");

    let users_arg = users.display().to_string();
    let (port, kafka) = port_and_loopback();
    let broker = Broker::start(&[
        "--kafka-port",
        &port,
        "--kafka-advertise",
        &kafka,
        "--kafka-bind",
        "0.0.0.0",
        "--kafka-users",
        &users_arg,
        "--topics",
        "t",
        "--flush-interval",
        "10ms",
    ]);
    assert_eq!(broker.kafka.clone().unwrap(), format!("0.0.0.0:{port}"));

    // The right password: kcat produces and reads back; kafka-python too.
    let alice = scram("alice", "correct horse");
    let f = kcat_run(&["-b", &kafka, "-t", "t", "-P"], &alice, Some("one\ntwo\n"));
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    assert_eq!(kcat_read_two(&kafka, &alice), "one\ntwo\n");
    let sasl = ["--sasl", "alice", "correct horse"];
    let mut args = vec![kafka.as_str(), "t"];
    args.extend_from_slice(&sasl);
    python(
        "kafka-python",
        "produce",
        &args,
        Some(b"{\"k\": null, \"v\": \"7468726565\"}\n".to_vec()),
    );
    let mut args = vec![kafka.as_str(), "t", "3"];
    args.extend_from_slice(&sasl);
    let read = json_lines(&python("kafka-python", "consume", &args, None).stdout);
    assert_eq!(read[2]["v"], "7468726565", "three");
    assert_eq!(persisted_payloads(&broker), ["one", "two", "three"]);

    // A wrong password and no credentials are refused, and change nothing.
    let f = kcat_run(
        &["-b", &kafka, "-t", "t", "-P"],
        &scram("alice", "wrong"),
        Some("intruder\n"),
    );
    assert_ne!(f.code(), Some(0));
    assert!(
        f.stderr.iter().any(|l| l.contains("Authentication failed")),
        "{:?}",
        f.stderr
    );
    let f = kcat_run(
        &["-b", &kafka, "-t", "t", "-P", "-m", "5"],
        &[],
        Some("anonymous\n"),
    );
    assert_ne!(f.code(), Some(0), "{:?}", f.stderr);
    let one = b"{\"k\": null, \"v\": \"78\"}\n".to_vec();
    let f = python_outcome(
        "kafka-python",
        "produce",
        &[&kafka, "t", "--sasl", "alice", "wrong"],
        Some(one.clone()),
    );
    assert_ne!(f.code(), Some(0));
    // kafka-python without credentials gets the API versions, then nothing
    // more: its send finds no broker that takes it.
    let f = python_outcome(
        "kafka-python",
        "produce",
        &[&kafka, "t", "--max-block-ms", "3000"],
        Some(one),
    );
    assert_ne!(f.code(), Some(0));
    assert_eq!(persisted_payloads(&broker), ["one", "two", "three"]);

    // A user added while the broker runs gets in with the next connection.
    let bob = scram("bob", "hunter2");
    let f = kcat_run(&["-b", &kafka, "-L", "-m", "5"], &bob, None);
    assert_ne!(f.code(), Some(0), "not yet a user");
    assert_eq!(add_user(&users, "bob", "hunter2").code(), Some(0));
    let f = kcat_run(&["-b", &kafka, "-L", "-m", "5"], &bob, None);
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    broker.stop();
}

#[test]
fn the_kafka_port_speaks_tls_with_the_certificate_it_is_given() {
    let dir = TempDir::new("kafka-tls");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let users = dir.0.join("users.txt");
    assert_eq!(add_user(&users, "alice", "pencil").code(), Some(0));
    let (cert_arg, key_arg, users_arg) = (
        cert.display().to_string(),
        key.display().to_string(),
        users.display().to_string(),
    );
    // Clients are told to come back to the name the certificate carries.
    let (port, advertised) = port_and_loopback();
    let broker = Broker::start(&[
        "--kafka-port",
        &port,
        "--kafka-advertise",
        &advertised,
        "--kafka-bind",
        "0.0.0.0",
        "--kafka-users",
        &users_arg,
        "--kafka-tls-cert",
        &cert_arg,
        "--kafka-tls-key",
        &key_arg,
        "--topics",
        "t",
        "--flush-interval",
        "10ms",
    ]);
    let kafka = advertised;
    let tls_scram: Vec<String> = [
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-256",
        "-X",
        "sasl.username=alice",
        "-X",
        "sasl.password=pencil",
        "-X",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("ssl.ca.location={cert_arg}")])
    .collect();

    // A plaintext client to the TLS port is refused, and the port goes on.
    let f = kcat_run(
        &["-b", &kafka, "-t", "t", "-P", "-m", "5"],
        &scram("alice", "pencil"),
        Some("in clear\n"),
    );
    assert_ne!(f.code(), Some(0), "{:?}", f.stderr);

    // TLS with the right password: kcat and kafka-python, both ways.
    let f = kcat_run(
        &["-b", &kafka, "-t", "t", "-P"],
        &tls_scram,
        Some("sealed\n"),
    );
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    python(
        "kafka-python",
        "produce",
        &[&kafka, "t", "--tls", &cert_arg, "--sasl", "alice", "pencil"],
        Some(b"{\"k\": null, \"v\": \"7365616c6564206279206b61666b612d707974686f6e\"}\n".to_vec()),
    );
    let read = json_lines(
        &python(
            "kafka-python",
            "consume",
            &[
                &kafka, "t", "2", "--tls", &cert_arg, "--sasl", "alice", "pencil",
            ],
            None,
        )
        .stdout,
    );
    assert_eq!(read.len(), 2);
    assert_eq!(
        kcat_read_two(&kafka, &tls_scram),
        "sealed\nsealed by kafka-python\n"
    );
    assert_eq!(
        persisted_payloads(&broker),
        ["sealed", "sealed by kafka-python"]
    );
    broker.stop();
}

#[test]
fn a_users_file_or_certificate_that_cannot_be_used_stops_the_start_with_one_line() {
    let dir = TempDir::new("kafka-bad-security");
    let empty = dir.0.join("empty.txt");
    std::fs::write(&empty, "# name\tsalt\titerations\tstored_key\tserver_key\n").unwrap();
    let garbled = dir.0.join("garbled.txt");
    std::fs::write(&garbled, "alice\tnot base64!\t4096\tx\ty\n").unwrap();
    let missing = dir.0.join("missing.pem");
    let users = dir.0.join("users.txt");
    assert_eq!(add_user(&users, "alice", "pencil").code(), Some(0));
    let path = |p: &Path| p.display().to_string();
    let cases: [(Vec<String>, &str); 3] = [
        (vec!["--kafka-users".into(), path(&empty)], "no user in it"),
        (vec!["--kafka-users".into(), path(&garbled)], "line 1"),
        (
            vec![
                "--kafka-users".into(),
                path(&users),
                "--kafka-tls-cert".into(),
                path(&missing),
                "--kafka-tls-key".into(),
                path(&missing),
            ],
            "missing.pem",
        ),
    ];
    for (extra, says) in cases {
        let data = TempDir::new("kafka-bad-security-data");
        let mut args = vec!["--kafka-port", "0", "--kafka-bind", "0.0.0.0"];
        args.extend(extra.iter().map(String::as_str));
        let f = Broker::refused(&data, &args);
        assert_eq!(f.code(), Some(1), "{:?}", f.stderr);
        assert!(f.last_stderr_line().contains(says), "{:?}", f.stderr);
        assert!(f.stdout.is_empty(), "never ready");
    }
}
