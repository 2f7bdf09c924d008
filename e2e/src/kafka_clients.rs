//! Real Kafka clients against the broker's Kafka port: `kafka-clients/client.py`
//! drives kafka-python and confluent-kafka (Debian's, which `make test`
//! installs), and kcat is run as it is.

use std::path::{Path, PathBuf};

use crate::{Broker, Finished, Proc, StdoutMode};

/// The system interpreter: Debian's Kafka modules load only there.
pub const PYTHON: &str = "/usr/bin/python3";

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka-clients/client.py")
}

fn script_args(library: &str, command: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec![
        client_script().display().to_string(),
        library.to_string(),
        command.to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

/// Starts `client.py LIBRARY COMMAND ARGS`, its output taken as `mode` says.
pub fn spawn_python(library: &str, command: &str, args: &[&str], mode: StdoutMode) -> Proc {
    Proc::spawn(
        Path::new(PYTHON),
        &script_args(library, command, args),
        None,
        mode,
    )
}

/// Runs `client.py LIBRARY COMMAND ARGS` with `stdin`, and waits for it.
pub fn python_outcome(
    library: &str,
    command: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Finished {
    Proc::spawn(
        Path::new(PYTHON),
        &script_args(library, command, args),
        stdin,
        StdoutMode::Collect,
    )
    .wait_exit()
}

/// As [`python_outcome`], and panics unless it succeeded.
pub fn python(library: &str, command: &str, args: &[&str], stdin: Option<Vec<u8>>) -> Finished {
    let f = python_outcome(library, command, args, stdin);
    assert_eq!(
        f.code(),
        Some(0),
        "{library} {command} failed: {}",
        f.stderr.join("\n")
    );
    f
}

/// Runs kcat with `args` and `stdin`, and panics unless it succeeded.
pub fn kcat(args: &[&str], stdin: Option<Vec<u8>>) -> Finished {
    let f = Proc::spawn(Path::new("kcat"), args, stdin, StdoutMode::Collect).wait_exit();
    assert_eq!(f.code(), Some(0), "kcat failed: {}", f.stderr.join("\n"));
    f
}

/// A broker with its Kafka port on (and `extra`), and that port's address.
pub fn kafka_broker(extra: &[&str]) -> (Broker, String) {
    let mut args = vec!["--kafka-port", "0", "--flush-interval", "10ms"];
    args.extend_from_slice(extra);
    let broker = Broker::start(&args);
    let kafka = broker.kafka.clone().expect("the Kafka ready line");
    assert!(kafka.starts_with("127.0.0.1:"), "{kafka}");
    (broker, kafka)
}
