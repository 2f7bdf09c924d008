//! The mini-kafka broker as a library: [`run`] serves until told to stop.
//!
//! # Layout
//! - [`config`]: the command line and its validation.
//! - [`decode`]: `broker decode`, an audit file's records as JSON Lines or raw bytes.
//! - [`event_loop`]: the readiness loop of the control port and the metrics endpoint.
//! - [`server`]: the control port's event loop (handshake, registration, leases).
//! - [`registry`]: clients, groups, rotations, positions and redeliveries.
//! - [`cleaner`]: the thread that logs deliveries, frees consumed slots, repairs a
//!   scribbled region and saves `offsets.txt`.
//! - [`persister`]: the thread that writes every message to the persistence file.
//! - [`kafka_log`]: the broker as the Kafka listener sees it (`--kafka-port`).
//! - [`partition_offsets`]: a partition's earliest offset and its offset at a time.
//! - [`metrics`]: Prometheus metrics on `GET /metrics` (`--metrics`).
//! - [`reclaim`]: freeing slots once persisted, logged and consumed.
//! - [`audit`]: the file formats, the double buffer and its watched files, the
//!   state file.
//! - [`recovery`]: start-up recovery of a region left by a broker that died.
//! - [`replay`]: republishing unacknowledged records after a restart.
//! - [`status`]: the report behind `broker status`.
//! - [`startup`]: what the broker reads and repairs before it serves.
//! - [`threads`]: starting the broker's threads, and the one ordered shutdown.
//! - [`topics`]: the topics besides `default`, their directory and their rings.
//! - [`topics_report`]: the report behind `broker topics`.
//! - [`wait_reason`]: what keeps producers waiting, in words.
//! - [`when_written`]: work waiting for a file's writer to have written so many bytes.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cleaner;
pub mod committed;
pub mod config;
pub mod decode;
pub mod event_loop;
pub mod file_producers;
pub mod kafka_groups;
pub mod kafka_log;
pub mod kafka_users;
pub mod metrics;
pub mod partition_offsets;
pub mod persister;
pub mod producer_runs;
pub mod reclaim;
pub mod recovery;
pub mod registry;
pub mod replay;
pub mod server;
pub mod startup;
pub mod status;
#[cfg(test)]
mod test_region;
pub mod threads;
pub mod topics;
pub mod topics_report;
pub mod wait_reason;
pub mod when_written;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use audit_format::records::PERSIST_FILE;
use shm_layout::RegionError;

use audit::state;
pub use config::BrokerConfig;

/// Why the broker could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("shared-memory region {name} belongs to a running broker (pid {pid})")]
    RegionInUse { name: String, pid: u32 },
    #[error("shared-memory region {name} was left by a broker with another geometry and still holds messages ({detail}); restart with that geometry to recover them")]
    ForeignRegion { name: String, detail: String },
    #[error("shared-memory region {0} left by a dead broker is locked by a process that is still alive (stopped?); end it, then restart")]
    RegionLocked(String),
    #[error("data directory {0} is in use by another broker")]
    DataDirInUse(PathBuf),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a producer held the ring lock through the stop (stopped?); shared-memory region {0} is left in place, and the next start recovers its records")]
    HolderStuck(String),
    #[error("the audit trail failed: {0}")]
    Audit(std::io::Error),
    #[error("could not complete the files ({error}); shared-memory region {region} is left in place with what they lack, and the next start recovers it")]
    Incomplete { error: String, region: String },
    #[error("{0}")]
    Replay(String),
    #[error("{0}")]
    Topics(String),
    #[error("{0}")]
    KafkaSecurity(String),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{PERSIST_FILE} ends before offset {from} of {partition}, but offsets up to {to} were assigned (offsets.txt): records {from}..{to} are missing (was the file cut, deleted or replaced?); restore it, or start with --accept-lost-records to skip them")]
    LostRecords {
        partition: String,
        from: u64,
        to: u64,
    },
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the broker until `stop` is set, then stops gracefully. `ready` receives the
/// ready line once clients can connect.
pub fn run(
    config: BrokerConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&str),
) -> Result<(), BrokerError> {
    let listener = bind(SocketAddr::new(config.bind, config.port))?;
    serve(config, listener, stop, ready)
}

fn bind(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr).map_err(|source| BrokerError::Bind {
        addr,
        hint: if source.kind() == std::io::ErrorKind::AddrInUse {
            " (is another broker running on this port?)"
        } else {
            ""
        },
        source,
    })
}

/// The Kafka port's users and TLS settings, read now: a file that cannot be
/// used stops the start with one line.
fn kafka_security(k: &config::KafkaConfig) -> Result<threads::KafkaSecurity, BrokerError> {
    let users = k
        .users
        .as_deref()
        .map(kafka_listener::scram::UsersFile::open)
        .transpose()
        .map_err(|e| BrokerError::KafkaSecurity(format!("--kafka-users {e}")))?;
    let tls = k
        .tls
        .as_ref()
        .map(|(cert, key)| kafka_listener::transport::tls_config(cert, key))
        .transpose()
        .map_err(|e| {
            BrokerError::KafkaSecurity(format!("--kafka-tls-cert/--kafka-tls-key: {e}"))
        })?;
    Ok(threads::KafkaSecurity { users, tls })
}

/// As [`run`], on a listener already bound (a test can bind port 0 itself).
pub fn serve(
    config: BrokerConfig,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&str),
) -> Result<(), BrokerError> {
    let local = listener.local_addr()?;
    startup::raise_fd_limit(&config);
    let _data_lock = startup::lock_data_dir(&config.data_dir)?;
    let name = config
        .shm_name
        .clone()
        .unwrap_or_else(|| format!("/minikafka-{}", local.port()));
    let metrics = config.metrics.map(bind).transpose()?;
    let metrics_line = match &metrics {
        Some(l) => format!("\nmetrics on http://{}/metrics", l.local_addr()?),
        None => String::new(),
    };
    let kafka = match &config.kafka {
        Some(k) => Some(threads::KafkaStart {
            security: kafka_security(k)?,
            listener: bind(k.bind)?,
            advertise: k.advertise.clone(),
        }),
        None => None,
    };
    let kafka_line = match &kafka {
        Some(k) => format!("\nkafka on {}", k.listener.local_addr()?),
        None => String::new(),
    };
    let found = startup::recover(&config, &name)?;
    let token = startup::new_token()?;
    let region = Arc::new(startup::create_region(&name, &config, token)?);
    let topics = Arc::new(topics::Topics::start(
        &config,
        &region,
        token,
        found.topics.clone(),
        &found.partitions,
    )?);
    let running = threads::start(&config, found, region, topics, &stop, metrics, kafka)?;
    ready(&format!(
        "listening on {local}, shm {name}{metrics_line}{kafka_line}"
    ));
    let served = running.serve(listener, &stop);
    running.shut_down(served)
}
