//! The broker's threads, started in order once start-up is done, and stopped in
//! one ordered shutdown: clients are woken (the region marked closing), the replay
//! ends, the persistence file is completed, then the delivery log and the state
//! file, then the region goes, unless the files lack what it holds.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use audit_format::index::{IndexWriter, TopicPartition};
use shm_layout::event;
use shm_layout::{BrokerRegion, Region};

use crate::audit::double_buffer::{DoubleBuffer, StopSignal};
use crate::audit::watched_file::WatchedFile;
use crate::metrics::{DiskWaits, FileWrites, MetricSources};
use crate::persister::{FileIndex, FinalDrain, PartitionMarks};
use crate::reclaim::Reclaimer;
use crate::registry::{Registry, RegistryLimits};
use crate::startup::Recovered;
use crate::topics::Topics;
use crate::wait_reason::WaitReasons;
use crate::{cleaner, persister, replay, server, BrokerConfig, BrokerError};

/// The running broker: its region, its book of clients, and its threads.
pub(crate) struct Running {
    region: Arc<BrokerRegion>,
    topics: Arc<Topics>,
    registry: Arc<Mutex<Registry>>,
    persister: JoinHandle<std::io::Result<FinalDrain>>,
    cleaner: JoinHandle<std::io::Result<()>>,
    replayer: Option<JoinHandle<Result<(), String>>>,
    writer_stops: [StopSignal; 2],
    wait_reasons: Arc<WaitReasons>,
    /// The metrics responder, with its stop flag, under `--metrics`.
    metrics: Option<(JoinHandle<std::io::Result<()>>, Arc<AtomicBool>)>,
    /// The Kafka listener, with its stop flag, under `--kafka-port`.
    kafka: Option<(JoinHandle<std::io::Result<()>>, Arc<AtomicBool>)>,
    persister_stop: Arc<AtomicBool>,
    cleaner_stop: Arc<AtomicBool>,
    max_connections: usize,
    /// `offsets.txt`, where readers' commits go.
    state_file: Arc<crate::audit::state::StateFile>,
    /// Where readers find the persistence file: the data directory, absolute.
    data_dir: String,
}

/// Kafka connections served at once; more are closed as they come.
const KAFKA_CONNECTIONS: usize = 1024;

/// The host Metadata hands out without `--kafka-advertise`: the bound address,
/// or, for a wildcard bind (0.0.0.0, ::), which no client can connect to, this
/// host's name (as Kafka does).
fn advertised_host_of(bound: std::net::IpAddr) -> String {
    if !bound.is_unspecified() {
        return bound.to_string();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The Kafka port, bound, with what it hands out and whom it lets in.
pub(crate) struct KafkaStart {
    pub listener: TcpListener,
    pub advertise: Option<(String, u16)>,
    pub security: KafkaSecurity,
}

/// `--kafka-users` and `--kafka-tls-*`, read.
pub(crate) struct KafkaSecurity {
    pub users: Option<kafka_listener::scram::UsersFile>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Starts the persister, the cleaner (with their writers) and, if records must be
/// published again, the replay, over `region`.
pub(crate) fn start(
    config: &BrokerConfig,
    found: Recovered,
    region: Arc<BrokerRegion>,
    topics: Arc<Topics>,
    stop: &Arc<AtomicBool>,
    metrics_listener: Option<TcpListener>,
    kafka: Option<KafkaStart>,
) -> Result<Running, BrokerError> {
    let Recovered {
        persist_file,
        persist_path,
        log_file,
        log_path,
        log_start,
        next,
        starts,
        replay_from,
        replay: replay_checked,
        state_file,
        index,
        topics: _,
        partitions: _,
    } = found;
    region.start_at(replay_from, next);
    region.record_log_start(log_start);
    region.set_fsync(config.fsync);
    if replay_from < next {
        region.hold_for_replay();
    }
    let registry = Arc::new(Mutex::new(Registry::new(
        region.clone(),
        &starts,
        RegistryLimits {
            session_timeout: config.session_timeout,
            spill: config.spill,
            assignment: config.assignment,
            groups_read_default: config.groups_read_default(),
            max_attempts: config.max_attempts,
        },
    )));

    let buffer_size = config.buffer_size as usize;
    let persisted = Arc::new(AtomicU64::new(next));
    lock(&registry).bound_by_persisted(persisted.clone());
    let producer_runs = Arc::new(Mutex::new(crate::producer_runs::ProducerRuns::default()));
    lock(&registry).name_producers_from(config.data_dir.clone(), producer_runs.clone());
    lock(&registry).serve_topics(topics.clone());
    // Pre-created groups read their other topics from where they were.
    let saved = state_file.snapshot();
    lock(&registry)
        .pin_group_topics(&config.group_topics, |group, topic, partition| {
            saved
                .group(group, topic, partition)
                .map(|g| crate::registry::Departed {
                    position: g.position,
                    handed_out: g.handed_out,
                    unacked: None,
                })
        })
        .map_err(BrokerError::Topics)?;
    // Groups resume where they were in the topics they do not read yet, when a
    // member reads them again. A pre-created group's `default`/0 line is its start
    // there, whether it reads `default` or not.
    let departed = saved
        .groups
        .into_iter()
        .filter(|g| !crate::startup::is_pre_created_groups_start(g, config, &starts))
        .map(|g| {
            let d = crate::registry::Departed {
                position: g.position,
                handed_out: g.handed_out,
                unacked: None,
            };
            ((g.name, g.topic, g.partition), d)
        });
    lock(&registry).remember_departed(departed);
    for k in &saved.kafka_groups {
        // Saved by this broker: the names were claimed then.
        let _ = lock(&registry).claim_kafka_group(&k.name);
    }
    let file_writes = FileWrites::default();
    let disk_waits = config.fsync.then(|| Arc::new(DiskWaits::default()));
    let reclaimer = Arc::new(Reclaimer::new(
        region.clone(),
        persisted.clone(),
        replay_from,
    ));
    lock(&registry).hold_default_through(reclaimer.clone());
    let index = index.and_then(|writer| file_index(writer, &persist_file, &topics));
    let marks = Arc::new(PartitionMarks::default());
    let persister = persister::Persister {
        region: region.clone(),
        registry: registry.clone(),
        buffer: DoubleBuffer::new(
            WatchedFile::new(persist_file, persist_path.clone())?,
            buffer_size,
            config.flush_interval,
            config.fsync,
            next,
            {
                // Written records may free slots and release --fsync senders.
                let (region, persisted) = (region.clone(), persisted.clone());
                let (reclaimer, disk_waits) = (reclaimer.clone(), disk_waits.clone());
                let marks = marks.clone();
                Box::new(move |mark| {
                    // Timed before the senders it releases return: a scrape
                    // after a send returns counts its wait.
                    if let Some(waits) = &disk_waits {
                        waits.persisted(mark);
                    }
                    persister::publish(&region, &persisted, mark);
                    marks.settle();
                    // A corrupt ring is reported by the cleaner's own pass.
                    let _ = reclaimer.reclaim();
                    event::wake(&region.header().cleaner);
                })
            },
        )?,
        next,
        persisted: persisted.clone(),
        flush_interval: config.flush_interval,
        disk_waits: disk_waits.clone(),
        handed: Vec::new(),
        producer_runs: producer_runs.clone(),
        batch_runs: Vec::new(),
        index,
        topics: topics.clone(),
        marks: marks.clone(),
        appended: 0,
        cursors: Vec::new(),
        carry: Vec::new(),
        swept_at: Instant::now(),
    };
    marks.watch(persister.buffer.bytes_written());
    persister.buffer.time_writes(file_writes.of("persistence"));
    let consumed_marks = Arc::new(crate::reclaim::ConsumedMarks::new(reclaimer.clone()));
    let cleaner = cleaner::Cleaner {
        region: region.clone(),
        registry: registry.clone(),
        log: DoubleBuffer::new(
            WatchedFile::new(log_file, log_path)?,
            buffer_size,
            config.flush_interval,
            config.fsync,
            replay_from,
            {
                let region = region.clone();
                let consumed_marks = consumed_marks.clone();
                Box::new(move |_| {
                    consumed_marks.settle();
                    event::wake(&region.header().cleaner);
                })
            },
        )?,
        reclaimer,
        consumed_marks: consumed_marks.clone(),
        state_file: state_file.clone(),
        flush_interval: config.flush_interval,
        end: next,
        repairs: cleaner::RingRepairs::default(),
        identity_reported: false,
        topics: topics.clone(),
        released: Default::default(),
        partition_ends: Default::default(),
        partition_repair_reported: Default::default(),
        partition_repair_after: Default::default(),
    };
    cleaner.log.time_writes(file_writes.of("delivery_log"));
    lock(&registry).count_log_written_by(cleaner.log.bytes_written());
    consumed_marks.watch(cleaner.log.bytes_written());
    // At a stop, writers that cannot write give up after a while, so that the stop
    // ends; what they could not write stays in the region.
    let writer_stops = [persister.buffer.stop_signal(), cleaner.log.stop_signal()];
    let wait_reasons = Arc::new(WaitReasons {
        region: region.clone(),
        reclaimer: cleaner.reclaimer.clone(),
        persistence: persister.buffer.health(),
        delivery_log: cleaner.log.health(),
    });
    let metrics = match metrics_listener {
        Some(listener) => {
            let sources = MetricSources {
                region: region.clone(),
                topics: topics.clone(),
                registry: registry.clone(),
                state_file: state_file.clone(),
                file_writes,
                disk_waits,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("metrics".into())
                .spawn(move || sources.serve(listener, &flag))?;
            Some((thread, stop))
        }
        None => None,
    };
    let kafka = match kafka {
        Some(KafkaStart {
            listener,
            advertise,
            security,
        }) => {
            let bound = listener.local_addr()?;
            let (advertised_host, advertised_port) =
                advertise.unwrap_or_else(|| (advertised_host_of(bound.ip()), bound.port()));
            let log = crate::kafka_log::BrokerLog::new(
                region.clone(),
                topics.clone(),
                registry.clone(),
                state_file.clone(),
                config.data_dir.clone(),
                config.fsync,
            );
            let served = kafka_listener::Listener::new(
                Arc::new(log),
                kafka_listener::ListenerConfig {
                    advertised_host,
                    advertised_port,
                    max_connections: KAFKA_CONNECTIONS,
                    users: security.users,
                    tls: security.tls,
                },
            );
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("kafka".into())
                .spawn(move || served.serve(listener, &flag))?;
            Some((thread, stop))
        }
        None => None,
    };
    let persister_stop = Arc::new(AtomicBool::new(false));
    let cleaner_stop = Arc::new(AtomicBool::new(false));
    let persister = {
        let stop = persister_stop.clone();
        spawn_audit("persister", move || persister.run(stop))?
    };
    let cleaner = {
        let stop = cleaner_stop.clone();
        spawn_audit("cleaner", move || cleaner.run(stop))?
    };
    let replayer = replay_checked.map(|checked| {
        let (region, registry, stop) = (region.clone(), registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let result = replay::replay(
                region,
                registry,
                &persist_path,
                (replay_from, next, checked),
                stop.clone(),
            );
            if result.is_err() {
                // Producers stay held; the broker stops and says why.
                stop.store(true, Ordering::Release);
            }
            result
        })
    });
    Ok(Running {
        region,
        topics,
        registry,
        persister,
        cleaner,
        replayer,
        writer_stops,
        wait_reasons,
        metrics,
        kafka,
        persister_stop,
        cleaner_stop,
        max_connections: config.geometry.max_clients as usize + 64,
        state_file,
        data_dir: std::path::absolute(&config.data_dir)
            .unwrap_or_else(|_| config.data_dir.clone())
            .display()
            .to_string(),
    })
}

/// The persister's hold on the index opened at start-up: where its lines go.
fn file_index(
    writer: IndexWriter,
    persist_file: &std::fs::File,
    topics: &Topics,
) -> Option<FileIndex> {
    let base = persist_file.metadata().ok()?.len();
    Some(FileIndex {
        writer,
        base,
        next_line: base,
        partition: TopicPartition::default_topic().id(),
        topics: topics.records().iter().map(|t| t.id).collect(),
    })
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

impl Running {
    /// Serves the control port until `stop` is set.
    pub(crate) fn serve(&self, listener: TcpListener, stop: &AtomicBool) -> std::io::Result<()> {
        let server = server::Server {
            region: self.region.clone(),
            topics: self.topics.clone(),
            deferred: Default::default(),
            registry: self.registry.clone(),
            max_connections: self.max_connections,
            started: Instant::now(),
            wait_reasons: self.wait_reasons.clone(),
            data_dir: self.data_dir.clone(),
            state_file: self.state_file.clone(),
        };
        server.run(listener, stop)
    }

    /// The ordered shutdown (see the module docs). `served` is how serving ended.
    pub(crate) fn shut_down(self, served: std::io::Result<()>) -> Result<(), BrokerError> {
        let region = self.region;
        let name = region.name().to_string();
        // A topic being created is made whole or undone before the rings close.
        self.topics.close();
        region.mark_closing();
        for ring in self.topics.rings() {
            ring.region.mark_closing();
        }
        if let Some((thread, stop)) = self.metrics {
            stop.store(true, Ordering::Release);
            if let Ok(Err(e)) = thread.join() {
                eprintln!("broker: the metrics endpoint failed: {e}");
            }
        }
        if let Some((thread, stop)) = self.kafka {
            stop.store(true, Ordering::Release);
            if let Ok(Err(e)) = thread.join() {
                eprintln!("broker: the Kafka listener failed: {e}");
            }
        }
        let replayed = match self.replayer {
            Some(r) => r
                .join()
                .unwrap_or_else(|_| Err("the replay thread panicked".into())),
            None => Ok(()),
        };
        for writer in &self.writer_stops {
            writer.request();
        }
        self.persister_stop.store(true, Ordering::Release);
        let persisted = self
            .persister
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("persister panicked")));
        self.cleaner_stop.store(true, Ordering::Release);
        event::wake(&region.header().cleaner);
        let logged = self
            .cleaner
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("cleaner panicked")));
        // The region goes only if the files hold everything it does. Otherwise (a
        // producer held the ring through the stop, or a file or the state could not
        // be written) it stays for the next start, which recovers what the files
        // lack.
        let kept = match (&persisted, &logged) {
            (Ok(FinalDrain::HolderStuck), _) => Some(BrokerError::HolderStuck(name.clone())),
            (Ok(FinalDrain::Unreadable(offset)), _) => Some(BrokerError::Incomplete {
                error: format!("offset {offset} could not be read from the corrupt region"),
                region: name.clone(),
            }),
            (Err(e), _) | (_, Err(e)) => Some(BrokerError::Incomplete {
                error: e.to_string(),
                region: name.clone(),
            }),
            _ => None,
        };
        // A partition's region goes once the file holds all it does, whatever
        // happens to the others.
        let kept_partitions = self.topics.unlink_persisted();
        let kept = kept.or_else(|| {
            (!kept_partitions.is_empty()).then(|| BrokerError::Incomplete {
                error: "records of some partitions could not be persisted".into(),
                region: kept_partitions.join(", "),
            })
        });
        if kept.is_none() {
            let _ = Region::unlink(&name);
        }
        replayed.map_err(BrokerError::Replay)?;
        served?;
        match kept {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Starts a thread of the audit trail. Its writes are retried until they succeed,
/// so it ends with an error only at a stop, which the broker then reports.
fn spawn_audit<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<JoinHandle<std::io::Result<T>>> {
    std::thread::Builder::new().name(name.into()).spawn(work)
}
