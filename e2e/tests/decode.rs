//! `broker decode` end to end: the audit files a real broker wrote, decoded back to
//! the bytes a real producer sent and to the JSON a real consumer printed; a cut
//! last line, `--offset`, usage errors and a closed stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use audit_format::records::{
    push_delivery, push_persisted, LOG_FILE, LOG_HEADER, PERSIST_FILE, PERSIST_HEADER,
};
use e2e::{bin, Broker, Finished, Proc, StdoutMode, TempDir};

/// What the consumer adds to a message's JSON line: who received it.
const DELIVERY_FIELDS: &str = ",\"group\":\"group-1\",\"consumer\":\"reader-1\",\"attempt\":1";

/// What a broker run left: its data directory, every payload in offset order, and
/// what the one consumer printed with `--format json`.
struct Run {
    data: TempDir,
    payloads: Vec<Vec<u8>>,
    consumer_json: String,
}

impl Run {
    fn persistence_file(&self) -> PathBuf {
        self.data.0.join(PERSIST_FILE)
    }

    fn log_file(&self) -> PathBuf {
        self.data.0.join(LOG_FILE)
    }
}

/// The offset of the message whose payload is every byte value, NUL included.
const ALL_BYTES_OFFSET: u64 = 4;

/// Starts a broker and one consumer, sends messages that need escaping, base64,
/// a key, and empty payloads, waits for the consumer to print them all, stops the
/// broker.
fn send_and_stop() -> Run {
    let broker = Broker::start(&["--groups", "1"]);
    let (consumer, group) =
        broker.consumer(&["--id", "reader-1", "--count", "7", "--format", "json"]);
    assert_eq!(group, "group-1");
    let mut payloads: Vec<Vec<u8>> = vec![
        b"plain text".to_vec(),
        "tab\t newline\n backslash\\ cr\r é€😀".as_bytes().to_vec(),
        b"\xff\xfe not UTF-8 \x01\x7f".to_vec(),
        Vec::new(),
    ];
    let sent = broker
        .producer_bytes(&["--id", "sender", "-k", "key\twith tab é"], &payloads)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    // Arguments cannot hold a NUL byte; a file can.
    let files = TempDir::new("decode-input");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    for content in [all_bytes, Vec::new()] {
        let path = files.0.join(format!("payload-{}", payloads.len()));
        std::fs::write(&path, &content).unwrap();
        let sent = broker
            .producer(&["--id", "sender", "--file", path.to_str().unwrap()], None)
            .wait_exit();
        assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
        payloads.push(content);
    }
    // A key that is exactly "-" is a key, not "no key".
    let sent = broker
        .producer(&["--id", "sender", "-k", "-", "dash key"], None)
        .wait_exit();
    assert_eq!(sent.code(), Some(0), "{:?}", sent.stderr);
    payloads.push(b"dash key".to_vec());
    assert_eq!(payloads[ALL_BYTES_OFFSET as usize].len(), 256);

    let consumed = consumer.wait_exit();
    assert_eq!(consumed.code(), Some(0), "{:?}", consumed.stderr);
    let (stopped, data) = broker.stop_keeping_data();
    assert_eq!(stopped.code(), Some(0), "{:?}", stopped.stderr);
    Run {
        data,
        payloads,
        consumer_json: consumed.stdout_text(),
    }
}

/// Runs `broker decode` with `args`.
fn decode(args: &[&str]) -> Finished {
    let mut all = vec!["decode"];
    all.extend_from_slice(args);
    Proc::spawn(&bin("broker"), &all, None, StdoutMode::Collect).wait_exit()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn assert_succeeded_quietly(f: &Finished) {
    assert_eq!(f.code(), Some(0), "{:?}", f.stderr);
    assert!(f.stderr.is_empty(), "{:?}", f.stderr);
}

#[test]
fn decoded_files_give_back_the_bytes_sent_and_the_consumers_json() {
    let run = send_and_stop();
    let persisted = path_str(&run.persistence_file()).to_string();

    // JSON: the consumer's lines for the same messages, without who received them.
    let json = decode(&[&persisted]);
    assert_succeeded_quietly(&json);
    let consumer_lines: Vec<&str> = run.consumer_json.lines().collect();
    assert_eq!(consumer_lines.len(), run.payloads.len());
    let mut expected = String::new();
    for line in consumer_lines {
        assert!(line.contains(DELIVERY_FIELDS), "{line}");
        expected.push_str(&line.replacen(DELIVERY_FIELDS, "", 1));
        expected.push('\n');
    }
    assert_eq!(json.stdout_text(), expected);
    assert!(
        expected.contains("\"key\":\"key\\twith tab é\""),
        "{expected}"
    );
    assert!(expected.contains("\"key\":\"-\""), "{expected}");
    assert!(expected.contains("\"payload_base64\""), "{expected}");

    // Raw with NUL separators: every payload's exact bytes, in offset order.
    let raw = decode(&[&persisted, "--format", "raw", "-0"]);
    assert_succeeded_quietly(&raw);
    let expected: Vec<u8> = run
        .payloads
        .iter()
        .flat_map(|p| p.iter().copied().chain([0]))
        .collect();
    assert_eq!(raw.stdout, expected);

    // Raw, one offset: the payload alone, NUL bytes and all.
    let offset = ALL_BYTES_OFFSET.to_string();
    let one = decode(&[&persisted, "--format", "raw", "--offset", &offset]);
    assert_succeeded_quietly(&one);
    assert_eq!(one.stdout, run.payloads[ALL_BYTES_OFFSET as usize]);

    // The log: one JSON line per delivery, with the log's own timestamps.
    let log = decode(&[path_str(&run.log_file())]);
    assert_succeeded_quietly(&log);
    let mut expected = String::new();
    let mut offsets = Vec::new();
    for line in e2e::data_lines(&run.log_file()) {
        let columns: Vec<&str> = line.split('\t').collect();
        expected.push_str(&format!(
            "{{\"timestamp\":\"{}\",\"topic\":\"default\",\"partition\":0,\"offset\":{},\
             \"producer\":\"sender\",\"group\":\"group-1\",\"consumer\":\"reader-1\",\"attempt\":1}}\n",
            columns[0], columns[3]
        ));
        offsets.push(columns[3].parse::<u64>().unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..run.payloads.len() as u64).collect::<Vec<_>>());
    assert_eq!(log.stdout_text(), expected);
}

#[test]
fn offset_selects_one_message_or_its_deliveries_and_a_missing_one_is_an_error() {
    let run = send_and_stop();
    let persisted = path_str(&run.persistence_file()).to_string();
    let all = decode(&[&persisted]);
    assert_succeeded_quietly(&all);
    let lines: Vec<&str> = all
        .stdout
        .split(|&b| b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();

    let one = decode(&[&persisted, "--offset", "2"]);
    assert_succeeded_quietly(&one);
    assert_eq!(one.stdout_text(), format!("{}\n", lines[2]));
    assert!(lines[2].contains("\"offset\":2,"), "{}", lines[2]);

    let deliveries = decode(&[path_str(&run.log_file()), "--offset", "2"]);
    assert_succeeded_quietly(&deliveries);
    let text = deliveries.stdout_text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"offset\":2,"), "{text}");

    for file in [&persisted, path_str(&run.log_file())] {
        let missing = decode(&[file, "--offset", "7"]);
        assert_eq!(missing.code(), Some(1), "{:?}", missing.stderr);
        assert!(missing.stdout.is_empty());
        assert_eq!(
            missing.stderr,
            [format!("broker decode: offset 7 is not in {file}")]
        );
    }
    // Offset 2 of another topic-partition is not offset 2 of default/0.
    for other in [["--topic", "orders"], ["--partition", "1"]] {
        let f = decode(&[&persisted, other[0], other[1], "--offset", "2"]);
        assert_eq!(f.code(), Some(1), "{other:?}: {:?}", f.stderr);
        let f = decode(&[&persisted, other[0], other[1]]);
        assert_succeeded_quietly(&f);
        assert!(f.stdout.is_empty(), "{other:?}");
    }
}

#[test]
fn a_cut_last_line_is_skipped_saying_where_and_a_headerless_file_still_decodes() {
    let run = send_and_stop();
    let copies = TempDir::new("decode-cut");
    for (file, partial) in [
        (
            run.persistence_file(),
            &b"default\t0\t7\t2026-11-22T02:11:27.12"[..],
        ),
        (
            run.log_file(),
            &b"2026-11-22T02:11:27.123456Z\tdefault\t0\t7\tsend"[..],
        ),
    ] {
        let whole = decode(&[path_str(&file)]);
        assert_succeeded_quietly(&whole);
        assert!(!whole.stdout.is_empty());

        let mut bytes = std::fs::read(&file).unwrap();
        let length = bytes.len();
        bytes.extend_from_slice(partial);
        let cut = copies.0.join(file.file_name().unwrap());
        std::fs::write(&cut, &bytes).unwrap();
        let decoded = decode(&[path_str(&cut)]);
        assert_eq!(decoded.code(), Some(0), "{:?}", decoded.stderr);
        assert_eq!(decoded.stdout, whole.stdout, "{}", cut.display());
        assert_eq!(
            decoded.stderr,
            [format!(
                "broker decode: skipped a cut last line at byte {length}"
            )]
        );

        // Without its header, the column count tells which file it is.
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert!(bytes.starts_with(b"# "));
        let headerless = copies.0.join("headerless.txt");
        std::fs::write(&headerless, &bytes[header_end..length]).unwrap();
        let decoded = decode(&[path_str(&headerless)]);
        assert_succeeded_quietly(&decoded);
        assert_eq!(decoded.stdout, whole.stdout);
    }
}

/// A persistence file of `count` records written by the broker's own formatter.
fn persistence_file_of(path: &Path, count: u64) {
    let mut text = PERSIST_HEADER.as_bytes().to_vec();
    for offset in 0..count {
        let payload = format!("message {offset} of a file written for this test");
        push_persisted(
            &mut text,
            offset,
            1_795_832_687_123_456 + offset,
            "p",
            None,
            payload.as_bytes(),
        );
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_with_one_line() {
    let dir = TempDir::new("decode-errors");
    let persisted = dir.0.join(PERSIST_FILE);
    persistence_file_of(&persisted, 3);
    let log = dir.0.join(LOG_FILE);
    let mut text = LOG_HEADER.as_bytes().to_vec();
    push_delivery(&mut text, 1_795_832_687_123_456, 0, "p", "g", "c", 1);
    std::fs::write(&log, text).unwrap();
    let (persisted, log) = (path_str(&persisted), path_str(&log));

    let usage: [(&[&str], &str); 6] = [
        (&[log, "--format", "raw", "-0"], "is a consumption log"),
        (
            &[log, "--format", "raw", "--offset", "0"],
            "is a consumption log",
        ),
        (
            &[persisted, "--format", "raw"],
            "give --offset N for one, or -0",
        ),
        (&[persisted, "-0"], "use it with --format raw"),
        (&[persisted, "--format", "text"], "invalid value"),
        (&[], "<FILE>"),
    ];
    for (args, says) in usage {
        let f = decode(args);
        assert_eq!(f.code(), Some(2), "{args:?}: {:?}", f.stderr);
        assert!(f.stdout.is_empty(), "{args:?}");
        assert!(
            f.stderr.iter().any(|l| l.contains(says)),
            "{args:?}: {:?}",
            f.stderr
        );
    }

    let missing = dir.0.join("missing.txt");
    let f = decode(&[path_str(&missing)]);
    assert_eq!(f.code(), Some(1));
    assert!(f.stdout.is_empty());
    assert_eq!(f.stderr.len(), 1, "{:?}", f.stderr);
    assert!(
        f.stderr[0].starts_with(&format!(
            "broker decode: cannot open {}: ",
            missing.display()
        )),
        "{:?}",
        f.stderr
    );

    // A line that does not parse: what came before is printed, then one line
    // naming it.
    let mut bytes = std::fs::read(persisted).unwrap();
    let second_record = {
        let mut newlines = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n');
        newlines.nth(1).unwrap().0 + 1
    };
    bytes.splice(
        second_record..second_record,
        b"default\t0\tone\tbroken line\n".iter().copied(),
    );
    let broken = dir.0.join("broken.txt");
    std::fs::write(&broken, bytes).unwrap();
    let f = decode(&[path_str(&broken), "--format", "raw", "-0"]);
    assert_eq!(f.code(), Some(1), "{:?}", f.stderr);
    assert_eq!(f.stdout, b"message 0 of a file written for this test\0");
    assert_eq!(
        f.stderr,
        [format!(
            "broker decode: {}: line 3: expected 7 TAB-separated fields, found 4",
            broken.display()
        )]
    );
}

#[test]
fn a_reader_that_goes_away_ends_decoding_quietly() {
    let dir = TempDir::new("decode-pipe");
    let file = dir.0.join(PERSIST_FILE);
    // Far more than a pipe and the output buffer hold, so the decoder is still
    // writing when its reader goes.
    persistence_file_of(&file, 50_000);
    let mut child = Command::new(bin("broker"))
        .args(["decode", path_str(&file)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start broker decode");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"topic\":\"default\""), "{first}");
    // The reader is dropped here, as `| head -1` exits.
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_explains_the_options_with_an_example() {
    let f = decode(&["--help"]);
    assert_eq!(f.code(), Some(0));
    let text = f.stdout_text();
    for mentioned in [
        "--topic",
        "--partition",
        "--offset",
        "--format",
        "-0",
        "raw",
        "json",
        "Examples:",
        "broker decode persistencia_mensajes.txt",
    ] {
        assert!(
            text.contains(mentioned),
            "--help does not mention {mentioned}:\n{text}"
        );
    }
}
