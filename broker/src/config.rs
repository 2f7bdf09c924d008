//! The broker's command line, and its validation into a [`BrokerConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::decode::{DecodeFormat, DecodeOptions};
use audit_format::topics::DEFAULT_TOPIC;
use clap::{Args, Parser, Subcommand};
use control_protocol::Assignment;
use shm_layout::layout::Geometry;
use shm_layout::names::{check_name, check_topic, valid_shm_name};
use shm_layout::units::{parse_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "broker",
    version,
    about = "Mini-Kafka over shared memory: the broker",
    long_about = "Mini-Kafka over shared memory: the broker.\n\n\
        Owns a POSIX shared-memory region holding a ring of message slots, shared by \
        producer and consumer processes on this host. Clients connect to the control \
        port (TCP, control traffic only) to learn the region and join; payloads never \
        cross the socket. Prints one line on stdout when ready; SIGINT or SIGTERM stops \
        it gracefully.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print ring occupancy, groups, members, positions and lag of a running broker.
    Status(StatusArgs),
    /// Print the records of an audit file as JSON Lines, or the exact bytes of its
    /// payloads.
    #[command(
        long_about = "Print the records of an audit file as JSON Lines, or the exact bytes of its payloads.\n\n\
            FILE is persistencia_mensajes.txt (one line per message) or log_consumo.txt \
            (one line per delivery), told apart by its header line, or by the number of \
            columns when it has none; the broker need not be running. Records of one \
            topic-partition are printed, in file order. --format json prints each \
            message as `consumer --format json` does, without group, consumer and \
            attempt; each delivery with the log's columns. --format raw writes a \
            message's payload as it was sent, unescaped: one message (--offset), or \
            several each followed by a NUL byte (-0). A last line cut short by a \
            crash is skipped, saying so on stderr. Exits 1, with one line on stderr, \
            when the file cannot be read, when a line does not parse (after printing \
            the records before it) or when --offset is not in the file."
    )]
    Decode(DecodeArgs),
    /// Print committed offsets: groups' acknowledged positions and standalone
    /// readers' commits, from a running broker.
    #[command(long_about = "Print committed offsets, from a running broker.\n\n\
            A group's committed offset is its acknowledged position: the next offset \
            it delivers. A standalone reader's is what it committed under its --id \
            (`consumer --id NAME --from ...` commits every --commit-interval and at a \
            clean exit): the next offset it reads. Without --id or --group, every \
            owner's is printed.")]
    Committed(CommittedArgs),
    /// Move a group that has no member to another offset.
    #[command(
        name = "reset-offsets",
        long_about = "Move a group that has no member to another offset, on a running broker.\n\n\
            The group resumes there when a member joins: at the oldest offset still in \
            persistencia_mensajes.txt (earliest), at the next one to be published \
            (latest), at an offset (kept between the two), or at the first message \
            published at or after an RFC 3339 time. What lies below the ring is read \
            back from the file. Prints `group G now at offset N`. Exits 1 while the group \
            has members; a group the broker does not know is created there by the \
            first consumer that joins it with --group."
    )]
    ResetOffsets(ResetOffsetsArgs),
    /// Create a topic on a running broker.
    #[command(
        name = "create-topic",
        long_about = "Create a topic on a running broker.\n\n\
            A topic is a named stream split into partitions, each a ring of its own \
            with its own offsets from 0. A message with a key always goes to the same \
            partition (Kafka's partitioner), so messages of one key stay in order. \
            Each partition's ring takes --slots slots of --slot-size bytes (the \
            broker's own by default), reserved in /dev/shm now: a /dev/shm too small \
            refuses the topic. Prints `created topic NAME with N partitions`. Exits 1 \
            with `topic NAME exists` if it does; topics survive every restart."
    )]
    CreateTopic(CreateTopicArgs),
    /// List every topic: per partition, end offset, persisted offset and ring
    /// occupancy.
    Topics(TopicsArgs),
    /// Manage the users of the Kafka port (SASL/SCRAM-SHA-256).
    #[command(name = "kafka-user", subcommand)]
    KafkaUser(KafkaUserCommand),
}

#[derive(Subcommand, Debug)]
pub enum KafkaUserCommand {
    /// Add a user to a users file, or replace its password.
    #[command(
        long_about = "Add a user to a users file, or replace its password.\n\n\
            The password is read from stdin (its first line, without the newline), \
            so that it shows neither in the process list nor in the shell's history. \
            The file keeps a salted SCRAM-SHA-256 entry (salt, iterations, stored key, \
            server key), never the password; it is replaced atomically, readable by \
            its owner only. A running broker started with --kafka-users FILE reads \
            the change when the next connection comes. Prints `added user NAME` or \
            `replaced user NAME`."
    )]
    Add(KafkaUserAddArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  \
        printf '%s\\n' \"$PASSWORD\" | broker kafka-user add alice --kafka-users kafka-users.txt")]
pub struct KafkaUserAddArgs {
    /// The user's name: 1 to 255 characters, no spaces.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The users file (created if missing).
    #[arg(long, value_name = "FILE")]
    pub kafka_users: PathBuf,
    /// PBKDF2 iterations (at least 4096, Kafka's least for SCRAM-SHA-256).
    #[arg(long, value_name = "N", default_value_t = kafka_listener::scram::MIN_ITERATIONS)]
    pub iterations: u32,
}

#[derive(Args, Debug)]
pub struct CreateTopicArgs {
    #[command(flatten)]
    pub address: BrokerAddress,
    /// The topic's name: 1 to 249 of A-Z a-z 0-9 . _ - (not . or ..).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Number of partitions.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub partitions: u32,
    /// Slots in each partition's ring [default: the broker's --slots].
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
    /// Payload bytes per slot [default: the broker's --slot-size].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub slot_size: Option<u64>,
}

#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub address: BrokerAddress,
    /// Print them as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ResetOffsetsArgs {
    #[command(flatten)]
    pub address: BrokerAddress,
    /// The group to move.
    #[arg(long, value_name = "G")]
    pub group: String,
    /// The topic: the group moves in each of its partitions (an offset is
    /// kept within each partition's).
    #[arg(long, value_name = "T", default_value = "default")]
    pub topic: String,
    /// earliest, latest, an offset, or an RFC 3339 time.
    #[arg(long, value_name = "WHERE", value_parser = control_protocol::ResetTo::parse)]
    pub to: control_protocol::ResetTo,
}

#[derive(Args, Debug)]
pub struct CommittedArgs {
    #[command(flatten)]
    pub address: BrokerAddress,
    /// Only the standalone reader with this id.
    #[arg(long, value_name = "NAME", conflicts_with = "group")]
    pub id: Option<String>,
    /// Only this group.
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// Print them as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `-b/--broker`, for every subcommand that talks to a running broker.
#[derive(Args, Debug)]
pub struct BrokerAddress {
    /// Broker control address.
    #[arg(
        short = 'b',
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:4444"
    )]
    pub broker: String,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub address: BrokerAddress,
    /// Client id to register with (default: admin-<pid>).
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
        broker decode persistencia_mensajes.txt                      # every message, JSON Lines\n  \
        broker decode persistencia_mensajes.txt --offset 42 --format raw > message.bin\n  \
        broker decode persistencia_mensajes.txt --format raw -0 | xargs -0 -n 1 printf '%s\\n'\n  \
        broker decode log_consumo.txt --offset 42                    # every delivery of offset 42")]
pub struct DecodeArgs {
    /// The audit file: persistencia_mensajes.txt or log_consumo.txt.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Only records of this topic.
    #[arg(long, value_name = "T", default_value = "default")]
    pub topic: String,
    /// Only records of this partition (of --topic).
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub partition: u32,
    /// Only the record(s) of this offset; exit 1 if there is none.
    #[arg(long, value_name = "N")]
    pub offset: Option<u64>,
    /// json: one JSON object per line; raw: payload bytes as sent (persistence file
    /// only; needs --offset or -0).
    #[arg(long, value_enum, default_value = "json")]
    pub format: DecodeFormat,
    /// With --format raw: follow each payload with a NUL byte, so that several can
    /// be told apart (as `xargs -0` reads them).
    #[arg(short = '0', long = "null")]
    pub null: bool,
}

impl DecodeArgs {
    /// Checks the options together; the error is one line for the user.
    pub fn validate(self) -> Result<DecodeOptions, String> {
        match self.format {
            DecodeFormat::Json if self.null => {
                return Err("-0 separates raw payloads: use it with --format raw".into());
            }
            DecodeFormat::Raw if !self.null && self.offset.is_none() => {
                return Err(
                    "--format raw prints payloads back to back, which could not be told apart: \
                     give --offset N for one, or -0 to end each with a NUL byte"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(DecodeOptions {
            file: self.file,
            topic: self.topic,
            partition: self.partition,
            offset: self.offset,
            format: self.format,
            nul_separated: self.null,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TCP control port; 0 picks a free one (shown in the ready line).
    #[arg(long, default_value_t = 4444)]
    pub port: u16,
    /// Address the control port listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Groups to pre-create: a count N (group-1..group-N) or comma-separated names.
    #[arg(long, value_name = "N|a,b,...", default_value = "2")]
    pub groups: String,
    /// Number of slots in the ring.
    #[arg(long, default_value_t = 4096)]
    pub slots: u32,
    /// Payload bytes per slot (a larger message spans consecutive slots).
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = parse_size)]
    pub slot_size: u64,
    /// Largest message (key + payload) accepted [default: 1MiB, or what fits in the ring].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_message: Option<u64>,
    /// Directory of the audit files and of offsets.txt (where offsets end and groups resume).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Longest time a record waits in a write buffer before it is written.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// Size of each of the two write buffers per audit file.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_size)]
    pub buffer_size: u64,
    /// A consumer that neither polls nor acknowledges for this long is evicted.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Shared-memory region name [default: /minikafka-<port>].
    #[arg(long, value_name = "NAME")]
    pub shm_name: Option<String>,
    /// Most clients registered at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_clients: u32,
    /// Most groups at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_groups: u32,
    /// A send returns only once its message is on disk (group commit).
    #[arg(long)]
    pub fsync: bool,
    /// Groups hold the ring only while they have members: producers wait only for
    /// live consumers, and a group whose members return catches up from
    /// persistencia_mensajes.txt. Without it, pre-created groups hold the ring
    /// even while empty.
    #[arg(long)]
    pub spill: bool,
    /// How pre-created groups (--groups) give out a topic's messages among their
    /// members: round-robin (each partition's messages dealt in turn to the
    /// members reading it) or partition (each partition owned by one member at a
    /// time, moved when members join or leave: Kafka's, keeping each key's order
    /// within the group).
    #[arg(long, value_name = "KIND", default_value = "round-robin", value_parser = Assignment::parse)]
    pub assignment: Assignment,
    /// A message delivered this many times to a group without being
    /// acknowledged (its consumers died on it, say) goes to the dead-letter
    /// topic <topic>.dlq, created when first needed, with producer dlq:<group>;
    /// log_consumo.txt logs it with consumer - and the group moves on. Every
    /// topic then keeps room for its dead-letter topic within --max-topics and
    /// --max-partitions, and a name too long to add .dlq to is refused; a
    /// topic named *.dlq has none of its own [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Start even though the persistence file lacks records that were assigned
    /// offsets (offsets.txt knows): groups behind them skip them, and new offsets
    /// continue after them. Without it the broker refuses to start.
    #[arg(long)]
    pub accept_lost_records: bool,
    /// Topics to create at start-up besides `default`: NAME or NAME:PARTITIONS,
    /// comma-separated (e.g. orders:4,logs). Topics created before, here or with
    /// `broker create-topic`, are kept: they need not be listed again.
    #[arg(long, value_name = "NAME[:N],...")]
    pub topics: Option<String>,
    /// Topics the pre-created groups (--groups) read, comma-separated: they
    /// receive every message of each, whether or not a member reads it. Any
    /// group also reads a topic while one of its members does.
    #[arg(long, value_name = "T1[,T2...]", default_value = "default")]
    pub group_topics: String,
    /// Most topics, `default` included.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_topics: u32,
    /// Most partitions over all topics, `default`'s included (at most 4096).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_partitions: u32,
    /// Serve Prometheus metrics on GET /metrics at this address (PORT alone
    /// listens on 127.0.0.1; 0 picks a free port, shown in a second ready line)
    /// [default: off].
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// Speak Apache Kafka's wire protocol on this port, so that Kafka clients
    /// (kcat, kafka-python, confluent-kafka) produce to and fetch from the same
    /// topics; 0 picks a free port, shown in a second ready line
    /// (`kafka on HOST:PORT`) [default: off]. See docs/kafka.md.
    #[arg(long, value_name = "PORT")]
    pub kafka_port: Option<u16>,
    /// The address the Kafka port listens on. Any address other than loopback
    /// (e.g. 0.0.0.0) needs --kafka-users: clients on other hosts must
    /// authenticate.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1",
        requires = "kafka_port"
    )]
    pub kafka_bind: IpAddr,
    /// Clients of the Kafka port authenticate with SASL/SCRAM-SHA-256 as a
    /// user of FILE (written by `broker kafka-user add`) [default: no
    /// authentication, for a loopback --kafka-bind only].
    #[arg(long, value_name = "FILE", requires = "kafka_port")]
    pub kafka_users: Option<PathBuf>,
    /// TLS for the Kafka port: its certificate chain (PEM), with --kafka-tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["kafka_port", "kafka_tls_key"]
    )]
    pub kafka_tls_cert: Option<PathBuf>,
    /// TLS for the Kafka port: its private key (PEM), with --kafka-tls-cert.
    #[arg(long, value_name = "FILE", requires = "kafka_tls_cert")]
    pub kafka_tls_key: Option<PathBuf>,
    /// The address Kafka clients are told to connect to (Metadata's broker
    /// address) [default: the Kafka port's own].
    #[arg(long, value_name = "HOST:PORT", requires = "kafka_port", value_parser = parse_advertised)]
    pub kafka_advertise: Option<(String, u16)>,
}

/// `--kafka-advertise`: `HOST:PORT`.
fn parse_advertised(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not HOST:PORT (e.g. broker.example:9092)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

/// The Kafka listener's settings (`--kafka-port`).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bind: SocketAddr,
    pub advertise: Option<(String, u16)>,
    /// `--kafka-users`: clients must authenticate as one of its users.
    pub users: Option<PathBuf>,
    /// `--kafka-tls-cert` and `--kafka-tls-key`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// `--metrics`: `HOST:PORT`, or a port on the loopback address.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not PORT or HOST:PORT (e.g. 127.0.0.1:9644)"))
}

/// Everything the broker needs, validated.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub groups: Vec<String>,
    pub geometry: Geometry,
    pub shm_name: Option<String>,
    pub data_dir: PathBuf,
    pub flush_interval: Duration,
    pub buffer_size: u64,
    pub session_timeout: Duration,
    pub fsync: bool,
    pub spill: bool,
    pub assignment: Assignment,
    pub max_attempts: Option<u32>,
    pub accept_lost_records: bool,
    /// Where to serve the metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Where to speak Kafka's protocol, if anywhere.
    pub kafka: Option<KafkaConfig>,
    /// Topics `--topics` asks for: name and partitions.
    pub topics: Vec<(String, u32)>,
    /// Topics the pre-created groups read.
    pub group_topics: Vec<String>,
    pub max_topics: u32,
    pub max_partitions: u32,
}

impl BrokerConfig {
    /// Whether the pre-created groups read `default` (it is among
    /// `--group-topics`).
    pub fn groups_read_default(&self) -> bool {
        self.group_topics
            .iter()
            .any(|t| t == crate::audit::state::DEFAULT_TOPIC)
    }
}

/// Redeliveries each group can hold in the region at once (more wait in the broker).
const REDELIVERIES_PER_GROUP: u32 = 256;
const DEFAULT_MAX_MESSAGE: u64 = 1 << 20;

impl ServeArgs {
    /// Checks the arguments together; the error is one line for the user.
    pub fn validate(&self) -> Result<BrokerConfig, String> {
        let groups = parse_groups(&self.groups)?;
        if groups.len() > self.max_groups as usize {
            return Err(format!(
                "--groups asks for {} groups but --max-groups is {}",
                groups.len(),
                self.max_groups
            ));
        }
        let slot_size = u32::try_from(self.slot_size)
            .map_err(|_| format!("--slot-size {} is too large", self.slot_size))?;
        let mut geometry = Geometry {
            slots: self.slots,
            slot_size,
            max_message: 0,
            max_clients: self.max_clients,
            max_groups: self.max_groups,
            redeliveries_per_group: REDELIVERIES_PER_GROUP,
        };
        geometry.max_message = match self.max_message {
            Some(0) => {
                // Only empty messages would fit: surely not what was meant.
                return Err("--max-message must be at least 1 byte".into());
            }
            Some(m) => u32::try_from(m).map_err(|_| format!("--max-message {m} is too large"))?,
            None => DEFAULT_MAX_MESSAGE.min(geometry.largest_message_that_fits()) as u32,
        };
        geometry.validate().map_err(|e| match e {
            shm_layout::layout::GeometryError::MessageDoesNotFit { .. } => format!(
                "--max-message {} does not fit in the ring ({} slots of {} bytes hold messages up to {} bytes)",
                geometry.max_message,
                geometry.slots,
                geometry.slot_size,
                geometry.largest_message_that_fits()
            ),
            other => format!("invalid ring geometry: {other}"),
        })?;
        if let Some(name) = &self.shm_name {
            if !valid_shm_name(name) {
                return Err(format!(
                    "--shm-name {name:?} must be '/' followed by up to 200 of A-Z a-z 0-9 . _ -"
                ));
            }
        }
        if self.session_timeout.is_zero() {
            return Err("--session-timeout must be greater than zero".into());
        }
        if self.buffer_size == 0 {
            return Err("--buffer-size must be greater than zero".into());
        }
        if self.max_topics == 0 {
            return Err("--max-topics must be at least 1 (the topic default)".into());
        }
        if self.max_partitions == 0 || self.max_partitions > shm_layout::layout::MAX_RINGS {
            return Err(format!(
                "--max-partitions must be from 1 to {}",
                shm_layout::layout::MAX_RINGS
            ));
        }
        let topics = match &self.topics {
            Some(spec) => parse_topics(spec)?,
            None => Vec::new(),
        };
        let mut group_topics: Vec<String> = Vec::new();
        for t in self.group_topics.split(',') {
            check_topic(t).map_err(|e| format!("--group-topics: {e}"))?;
            if group_topics.iter().any(|g| g == t) {
                return Err(format!("--group-topics names {t} twice"));
            }
            group_topics.push(t.to_string());
        }
        let named = topics.iter().filter(|(n, _)| n != DEFAULT_TOPIC).count() as u64 + 1;
        if named > u64::from(self.max_topics) {
            return Err(format!(
                "--topics names {named} topics with default, over --max-topics {}",
                self.max_topics
            ));
        }
        let partitions: u64 = 1 + topics
            .iter()
            .filter(|(n, _)| n != DEFAULT_TOPIC)
            .map(|(_, p)| u64::from(*p))
            .sum::<u64>();
        if partitions > u64::from(self.max_partitions) {
            return Err(format!(
                "--topics asks for {partitions} partitions with default's, over --max-partitions {}",
                self.max_partitions
            ));
        }
        if self.max_attempts.is_some() {
            crate::topics::check_dead_letter_room(&topics, self.max_topics, self.max_partitions)
                .map_err(|e| format!("--max-attempts: {e}"))?;
        }
        let kafka = self.kafka_port.map(|port| KafkaConfig {
            bind: SocketAddr::new(self.kafka_bind, port),
            advertise: self.kafka_advertise.clone(),
            users: self.kafka_users.clone(),
            tls: self.kafka_tls_cert.clone().zip(self.kafka_tls_key.clone()),
        });
        if kafka.is_some() && !self.kafka_bind.is_loopback() && self.kafka_users.is_none() {
            return Err(format!(
                "--kafka-bind {}: clients on other hosts must authenticate: give --kafka-users FILE (users added by `broker kafka-user add NAME --kafka-users FILE`), or bind to 127.0.0.1",
                self.kafka_bind
            ));
        }
        Ok(BrokerConfig {
            bind: self.bind,
            port: self.port,
            groups,
            geometry,
            shm_name: self.shm_name.clone(),
            data_dir: self.data_dir.clone(),
            flush_interval: self.flush_interval,
            buffer_size: self.buffer_size,
            session_timeout: self.session_timeout,
            fsync: self.fsync,
            spill: self.spill,
            assignment: self.assignment,
            max_attempts: self.max_attempts,
            accept_lost_records: self.accept_lost_records,
            metrics: self.metrics,
            kafka,
            topics,
            group_topics,
            max_topics: self.max_topics,
            max_partitions: self.max_partitions,
        })
    }
}

/// `orders:4,logs` → `[("orders", 4), ("logs", 1)]` (names by Kafka's rule, no
/// duplicates; `default` has one partition).
pub fn parse_topics(spec: &str) -> Result<Vec<(String, u32)>, String> {
    let mut topics: Vec<(String, u32)> = Vec::new();
    for item in spec.split(',') {
        let (name, partitions) = match item.split_once(':') {
            Some((name, n)) => {
                let p = n
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=shm_layout::layout::MAX_RINGS).contains(p))
                    .ok_or_else(|| {
                        format!(
                            "--topics: {item:?}: partitions must be a number from 1 to {}",
                            shm_layout::layout::MAX_RINGS
                        )
                    })?;
                (name, p)
            }
            None => (item, 1),
        };
        check_topic(name).map_err(|e| format!("--topics: {e}"))?;
        if name == DEFAULT_TOPIC && partitions != 1 {
            return Err("--topics: the topic default has one partition".into());
        }
        if topics.iter().any(|(n, _)| n == name) {
            return Err(format!("--topics names {name} twice"));
        }
        topics.push((name.to_string(), partitions));
    }
    Ok(topics)
}

/// `N` → `group-1..group-N`; `a,b,c` → those names (validated, no duplicates).
pub fn parse_groups(spec: &str) -> Result<Vec<String>, String> {
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let n: u32 = spec
            .parse()
            .map_err(|_| format!("--groups {spec} is too large"))?;
        return Ok((1..=n).map(|i| format!("group-{i}")).collect());
    }
    let names: Vec<String> = spec.split(',').map(str::to_string).collect();
    for (i, n) in names.iter().enumerate() {
        check_name("group name", n).map_err(|e| format!("--groups: {e}"))?;
        if names[..i].contains(n) {
            return Err(format!("--groups names {n} twice"));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["broker"];
        v.extend_from_slice(extra);
        Cli::try_parse_from(v).unwrap().serve
    }

    #[test]
    fn groups_are_a_count_or_names() {
        assert_eq!(parse_groups("2").unwrap(), vec!["group-1", "group-2"]);
        assert_eq!(parse_groups("a,b.c").unwrap(), vec!["a", "b.c"]);
        assert!(parse_groups("a,a").is_err());
        assert!(parse_groups("a,,b").is_err());
        assert!(parse_groups("a b").is_err());
        assert_eq!(parse_groups("0").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn default_max_message_shrinks_to_fit_a_small_ring_but_an_explicit_one_must_fit() {
        let c = args(&["--slots", "16"]).validate().unwrap();
        assert_eq!(c.geometry.max_message, 8 * 1024);
        let err = args(&["--slots", "16", "--max-message", "1MiB"])
            .validate()
            .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        let c = args(&[]).validate().unwrap();
        assert_eq!(c.geometry.max_message, 1 << 20);
    }

    fn decode_args(extra: &[&str]) -> Result<DecodeOptions, String> {
        let mut v = vec!["broker", "decode", "f.txt"];
        v.extend_from_slice(extra);
        match Cli::try_parse_from(v).map_err(|e| e.to_string())?.command {
            Some(Command::Decode(d)) => d.validate(),
            other => panic!("not decode: {other:?}"),
        }
    }

    #[test]
    fn decode_defaults_to_json_of_default_partition_0() {
        let o = decode_args(&[]).unwrap();
        assert_eq!(
            (
                o.topic.as_str(),
                o.partition,
                o.offset,
                o.format,
                o.nul_separated
            ),
            ("default", 0, None, DecodeFormat::Json, false)
        );
        let o = decode_args(&["--topic", "t", "--partition", "3", "--offset", "9"]).unwrap();
        assert_eq!((o.topic.as_str(), o.partition, o.offset), ("t", 3, Some(9)));
    }

    #[test]
    fn decode_raw_needs_one_offset_or_nul_separators() {
        let err = decode_args(&["--format", "raw"]).unwrap_err();
        assert!(err.contains("--offset N") && err.contains("-0"), "{err}");
        assert!(decode_args(&["--format", "raw", "--offset", "3"]).is_ok());
        let o = decode_args(&["--format", "raw", "-0"]).unwrap();
        assert!(o.nul_separated);
        assert!(decode_args(&["-0"]).unwrap_err().contains("--format raw"));
        assert!(decode_args(&["--offset", "-1"]).is_err());
        assert!(decode_args(&["--partition", "x"]).is_err());
        assert!(decode_args(&["--format", "text"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(Cli::try_parse_from(["broker", "--session-timeout", "5"]).is_err());
        assert!(Cli::try_parse_from(["broker", "--port", "70000"]).is_err());
        assert!(args(&["--shm-name", "nope"]).validate().is_err());
        assert!(args(&["--groups", "3", "--max-groups", "2"])
            .validate()
            .is_err());
        assert!(args(&["--slots", "0"]).validate().is_err());
    }

    #[test]
    fn topics_are_names_with_partition_counts_within_the_limits() {
        assert_eq!(
            parse_topics("orders:4,logs,default").unwrap(),
            [
                ("orders".into(), 4),
                ("logs".into(), 1),
                ("default".into(), 1)
            ]
        );
        for bad in [
            "",
            "a,,b",
            "a:0",
            "a:x",
            "a:-1",
            "a/b",
            ".",
            "..",
            "a,a",
            "default:2",
            "a:4097",
        ] {
            assert!(parse_topics(bad).is_err(), "{bad:?}");
        }
        let c = args(&["--topics", "a:3,b"]).validate().unwrap();
        assert_eq!(c.topics, [("a".into(), 3), ("b".into(), 1)]);
        let e = args(&["--topics", "a:3,b", "--max-partitions", "4"])
            .validate()
            .unwrap_err();
        assert!(e.contains("5 partitions"), "{e}");
        let e = args(&["--topics", "a,b", "--max-topics", "2"])
            .validate()
            .unwrap_err();
        assert!(e.contains("3 topics"), "{e}");
        assert!(args(&["--max-partitions", "4097"]).validate().is_err());
    }
}
