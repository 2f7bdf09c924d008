//! The mini-kafka broker as a library: [`run`] serves until told to stop.
//!
//! # Layout
//! - [`config`]: the command line and its validation.
//! - [`server`]: the control port's event loop (handshake, registration, leases).
//! - [`registry`]: clients, groups, rotations, positions and redeliveries.
//! - [`cleaner`]: the thread that logs deliveries, frees consumed slots, repairs a
//!   scribbled region and saves `offsets.txt`.
//! - [`persister`]: the thread that writes every message to the persistence file.
//! - [`reclaim`]: freeing slots once persisted, logged and consumed.
//! - [`audit`]: the file formats, the double buffer and its watched files, the
//!   state file.
//! - [`recovery`]: start-up recovery of a region left by a broker that died.
//! - [`replay`]: republishing unacknowledged records after a restart.
//! - [`status`]: the report behind `broker status`.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cleaner;
pub mod config;
pub mod persister;
pub mod reclaim;
pub mod recovery;
pub mod registry;
pub mod replay;
pub mod server;
pub mod status;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

use audit_format::records::{LOG_FILE, LOG_HEADER, PERSIST_FILE, PERSIST_HEADER};
use shm_layout::event;
use shm_layout::region::OwnerState;
use shm_layout::sys::random_bytes;
use shm_layout::{Region, RegionError};

use audit::double_buffer::DoubleBuffer;
use audit::files;
use audit::state;
use audit::watched_file::WatchedFile;
pub use config::BrokerConfig;
use reclaim::Reclaimer;
use registry::{GroupStart, Registry, RegistryLimits};

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
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{PERSIST_FILE} ends before offset {from}, but offsets up to {to} were assigned (offsets.txt): records {from}..{to} are missing (was the file cut, deleted or replaced?); restore it, or start with --accept-lost-records to skip them")]
    LostRecords { from: u64, to: u64 },
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Creates the region, replacing one left by a dead broker; refuses to touch one
/// whose broker is alive.
fn create_region(
    name: &str,
    config: &BrokerConfig,
    token: [u64; 2],
) -> Result<Region, BrokerError> {
    let me = std::process::id();
    match Region::create(name, config.geometry, token, me) {
        Err(RegionError::AlreadyExists(_)) => {
            if let OwnerState::Alive { pid } = Region::owner_state(name)? {
                return Err(BrokerError::RegionInUse {
                    name: name.to_string(),
                    pid,
                });
            }
            Region::unlink(name)?;
            Ok(Region::create(name, config.geometry, token, me)?)
        }
        other => Ok(other?),
    }
}

/// Takes the data directory for this broker: a second broker on it is refused.
fn lock_data_dir(dir: &Path) -> Result<Flock<File>, BrokerError> {
    let file_err = |source| BrokerError::File {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(file_err)?;
    let path = dir.join(".broker.lock");
    let file = File::create(&path).map_err(|source| BrokerError::File { path, source })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| BrokerError::DataDirInUse(dir.to_path_buf()))
}

/// Where each pre-created group resumes. The state file and a salvaged region each
/// give a lower bound of what the group acknowledged (the higher one is used) and
/// of what it had been handed; a group known to neither starts at `next` (it sees
/// every message from now on). Records from `in_file` on are not in the
/// persistence file (lost, accepted by the operator): a group below them skips to
/// `next`, and says so.
fn group_starts(
    config: &BrokerConfig,
    saved: &state::State,
    salvaged: &recovery::Salvage,
    in_file: u64,
    next: u64,
) -> Vec<GroupStart> {
    config
        .groups
        .iter()
        .map(|name| {
            let saved = saved.group(name, state::DEFAULT_TOPIC, state::DEFAULT_PARTITION);
            let recovered = salvaged.acknowledged.get(name);
            if saved.is_none() && recovered.is_none() {
                return GroupStart {
                    name: name.clone(),
                    start: next,
                    redeliver_below: next,
                };
            }
            let position = saved
                .map_or(0, |g| g.position)
                .max(recovered.copied().unwrap_or(0));
            if position > next {
                eprintln!(
                    "broker: group {name}'s saved position {position} is past the last offset ever assigned ({next}); it resumes at {next}"
                );
            }
            let mut start = position.min(next);
            if start < next && in_file < next {
                eprintln!(
                    "broker: group {name} skips offsets {start}..{next}: {PERSIST_FILE} lacks {in_file}..{next}"
                );
                start = next;
            }
            let handed_out = saved
                .map_or(0, |g| g.handed_out)
                .max(salvaged.handed_out.get(name).copied().unwrap_or(0));
            GroupStart {
                name: name.clone(),
                start,
                redeliver_below: handed_out.min(next).max(start),
            }
        })
        .collect()
}

/// Where offsets continue: after the last record of the persistence file
/// (`in_file`), or after the last one the state file says was ever assigned if
/// that is further. Records the file lacks are refused, unless the operator
/// accepts their loss.
fn next_offset(
    config: &BrokerConfig,
    saved: &state::State,
    in_file: u64,
) -> Result<u64, BrokerError> {
    let assigned = saved
        .end(state::DEFAULT_TOPIC, state::DEFAULT_PARTITION)
        .unwrap_or(0);
    if assigned <= in_file {
        return Ok(in_file);
    }
    if !config.accept_lost_records {
        return Err(BrokerError::LostRecords {
            from: in_file,
            to: assigned,
        });
    }
    eprintln!(
        "broker: {PERSIST_FILE} lacks offsets {in_file}..{assigned}, which were assigned; they are skipped (--accept-lost-records) and new offsets continue at {assigned}"
    );
    Ok(assigned)
}

/// Runs the broker until `stop` is set, then stops gracefully. `ready` receives the
/// ready line once clients can connect.
pub fn run(
    config: BrokerConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&str),
) -> Result<(), BrokerError> {
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr).map_err(|source| BrokerError::Bind {
        addr,
        hint: if source.kind() == std::io::ErrorKind::AddrInUse {
            " (is another broker running on this port?)"
        } else {
            ""
        },
        source,
    })?;
    let local = listener.local_addr()?;
    // Every connection is a file: room for the most the event loop accepts, plus
    // the broker's own files.
    let wanted_files = u64::from(config.geometry.max_clients) + 64 + 256;
    match shm_layout::sys::raise_fd_limit(wanted_files) {
        Ok(limit) if limit < wanted_files => eprintln!(
            "broker: the open-file limit is {limit} (hard limit), below the {wanted_files} that --max-clients {} needs",
            config.geometry.max_clients
        ),
        Ok(_) => {}
        Err(e) => eprintln!("broker: cannot raise the open-file limit: {e}"),
    }
    let _data_lock = lock_data_dir(&config.data_dir)?;
    let name = config
        .shm_name
        .clone()
        .unwrap_or_else(|| format!("/minikafka-{}", local.port()));

    // The files: repaired, and read for where offsets and groups resume.
    let saved = state::load(&config.data_dir)?;
    if saved.from_legacy {
        eprintln!(
            "broker: read the group positions from {} (an older format); {} replaces it",
            state::LEGACY_STATE_FILE,
            state::STATE_FILE
        );
    }
    let persist_path = config.data_dir.join(PERSIST_FILE);
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::File { path, source }
    };
    let (mut persist_file, cut) =
        files::open_append(&persist_path, PERSIST_HEADER).map_err(file_err(&persist_path))?;
    report_cut(PERSIST_FILE, cut);
    let tail = files::persisted_tail(&persist_path).map_err(file_err(&persist_path))?;
    if let Some(last) = tail.foreign.first() {
        eprintln!(
            "broker: {PERSIST_FILE} ends with {} line(s) that are not records (the last: {last:?}); they are kept, and new records follow them",
            tail.foreign.len()
        );
    }
    let file_next = tail.last.map_or(0, |o| o + 1);
    let log_path = config.data_dir.join(LOG_FILE);
    let (mut log_file, cut) =
        files::open_append(&log_path, LOG_HEADER).map_err(file_err(&log_path))?;
    report_cut(LOG_FILE, cut);
    let salvaged = recovery::salvage(
        &name,
        &config.geometry,
        file_next,
        &mut persist_file,
        &mut log_file,
    )?;
    if let Some(report) = &salvaged.report {
        eprintln!("broker: {report}");
    }
    // This broker's log lines begin here: the next start needs it if this one dies.
    let log_start = log_file.metadata().map_err(file_err(&log_path))?.len();
    let in_file = file_next + salvaged.appended;
    let next = next_offset(&config, &saved.state, in_file)?;
    let starts = group_starts(&config, &saved.state, &salvaged, in_file, next);
    let replay_from = starts.iter().map(|g| g.start).min().unwrap_or(next);
    // A replay that could not finish is refused now, before the ready line.
    let replay_checked = if replay_from < next {
        Some(
            replay::check(
                &persist_path,
                replay_from,
                next,
                config.geometry.max_message as u64,
            )
            .map_err(BrokerError::Replay)?,
        )
    } else {
        None
    };
    // Recorded at once: from now on a restart never takes an offset below `next`,
    // whatever happens to the files.
    let starting_state = state::State {
        ends: vec![state::PartitionEnd {
            topic: state::DEFAULT_TOPIC.to_string(),
            partition: state::DEFAULT_PARTITION,
            end: next,
        }],
        groups: starts
            .iter()
            .map(|g| state::GroupState {
                name: g.name.clone(),
                topic: state::DEFAULT_TOPIC.to_string(),
                partition: state::DEFAULT_PARTITION,
                position: g.start,
                handed_out: g.redeliver_below,
            })
            .collect(),
    };
    if let Err(e) = state::save(&config.data_dir, &starting_state, true) {
        eprintln!("broker: cannot save {}: {e}; retrying", state::STATE_FILE);
    }

    let mut token_bytes = [0u8; 16];
    random_bytes(&mut token_bytes)?;
    let token = [
        u64::from_le_bytes(token_bytes[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(token_bytes[8..].try_into().expect("8 bytes")),
    ];
    let region = Arc::new(create_region(&name, &config, token)?);
    region.start_at(replay_from, next);
    region.record_log_start(log_start);
    let h = region.header();
    h.durable
        .fsync
        .store(config.fsync as u32, Ordering::Release);
    if replay_from < next {
        region.hold_for_replay();
    }
    let registry = Arc::new(Mutex::new(Registry::new(
        region.clone(),
        &starts,
        RegistryLimits {
            session_timeout: config.session_timeout,
        },
    )));

    let buffer_size = config.buffer_size as usize;
    let persisted = Arc::new(AtomicU64::new(next));
    registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .bound_by_persisted(persisted.clone());
    let reclaimer = Arc::new(Reclaimer::new(
        region.clone(),
        persisted.clone(),
        replay_from,
    ));
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
                let reclaimer = reclaimer.clone();
                Box::new(move |mark| {
                    persister::publish(&region, &persisted, mark);
                    // A corrupt ring is reported by the cleaner's own pass.
                    let _ = reclaimer.reclaim();
                    event::wake(&region.header().cleaner);
                })
            },
        )?,
        next,
        persisted: persisted.clone(),
        flush_interval: config.flush_interval,
    };
    let cleaner = cleaner::Cleaner {
        region: region.clone(),
        registry: registry.clone(),
        log: DoubleBuffer::new(
            WatchedFile::new(log_file, log_path.clone())?,
            buffer_size,
            config.flush_interval,
            config.fsync,
            replay_from,
            {
                let (region, reclaimer) = (region.clone(), reclaimer.clone());
                Box::new(move |mark| {
                    reclaimer.note_logged(mark);
                    let _ = reclaimer.reclaim();
                    event::wake(&region.header().cleaner);
                })
            },
        )?,
        reclaimer,
        data_dir: config.data_dir.clone(),
        flush_interval: config.flush_interval,
        fsync: config.fsync,
        end: next,
        repairs: cleaner::RingRepairs::default(),
        identity_reported: false,
    };
    // At a stop, writers that cannot write give up after a while, so that the stop
    // ends; what they could not write stays in the region.
    registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .count_log_written_by(cleaner.log.bytes_written());
    let writer_stops = [persister.buffer.stop_signal(), cleaner.log.stop_signal()];
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
        let path = persist_path.clone();
        std::thread::spawn(move || {
            let result = replay::replay(
                region,
                registry,
                &path,
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

    ready(&format!("listening on {local}, shm {name}"));
    let server = server::Server {
        region: region.clone(),
        registry,
        max_connections: config.geometry.max_clients as usize + 64,
        started: Instant::now(),
    };
    let served = server.run(listener, &stop);

    // Graceful stop: clients are woken (closing), then the files are completed in
    // order (messages, then deliveries and positions), then the region goes.
    region.mark_closing();
    let replayed = match replayer {
        Some(r) => r
            .join()
            .unwrap_or_else(|_| Err("the replay thread panicked".into())),
        None => Ok(()),
    };
    for writer in &writer_stops {
        writer.request();
    }
    persister_stop.store(true, Ordering::Release);
    let persisted = persister
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("persister panicked")));
    cleaner_stop.store(true, Ordering::Release);
    event::wake(&region.header().cleaner);
    let logged = cleaner
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("cleaner panicked")));
    // The region goes only if the files hold everything it does. Otherwise (a
    // producer held the ring through the stop, or a file or the state could not be
    // written) it stays for the next start, which recovers what the files lack.
    let kept = match (&persisted, &logged) {
        (Ok(persister::FinalDrain::HolderStuck), _) => Some(BrokerError::HolderStuck(name.clone())),
        (Ok(persister::FinalDrain::Unreadable(offset)), _) => Some(BrokerError::Incomplete {
            error: format!("offset {offset} could not be read from the corrupt region"),
            region: name.clone(),
        }),
        (Err(e), _) | (_, Err(e)) => Some(BrokerError::Incomplete {
            error: e.to_string(),
            region: name.clone(),
        }),
        _ => None,
    };
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

/// Starts a thread of the audit trail. Its writes are retried until they succeed,
/// so it ends with an error only at a stop, which the broker then reports.
fn spawn_audit<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<T>>> {
    std::thread::Builder::new().name(name.into()).spawn(work)
}

fn report_cut(file: &str, bytes: u64) {
    if bytes > 0 {
        eprintln!("broker: removed a partial last line ({bytes} bytes) from {file}");
    }
}
