//! The mini-kafka broker as a library: [`run`] serves until told to stop.
//!
//! # Layout
//! - [`config`]: the command line and its validation.
//! - [`server`]: the control port's event loop (handshake, registration, leases).
//! - [`registry`]: clients, groups, rotations, positions and redeliveries.
//! - [`cleaner`]: the thread that logs deliveries and frees consumed slots.
//! - [`persister`]: the thread that writes every message to the persistence file.
//! - [`audit`]: the file formats, the double buffer, the state file.
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

use shm_layout::event;
use shm_layout::sys::{process_exists, random_bytes};
use shm_layout::{Region, RegionError};

use audit::double_buffer::DoubleBuffer;
use audit::files;
use audit::records::{LOG_FILE, LOG_HEADER, PERSIST_FILE, PERSIST_HEADER};
use audit::state;
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
    #[error("{0}")]
    Replay(String),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Marks the region closing and wakes every waiter in it.
pub fn mark_closing(region: &Region) {
    let h = region.header();
    // SeqCst pairs with the fence a consumer takes before handing out what it took.
    h.identity.closing.store(1, Ordering::SeqCst);
    event::wake(&h.published);
    event::wake(&h.space);
    event::wake(&h.cleaner);
    event::wake(&h.persisted);
    for g in 0..region.geometry().max_groups {
        if let Some(e) = region.group(g) {
            event::wake(&e.turn_event);
        }
    }
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
            if let Ok(old) = Region::open(name) {
                let pid = old.header().identity.broker_pid.load(Ordering::Relaxed);
                if pid != me && process_exists(pid) && !old.is_closing() {
                    return Err(BrokerError::RegionInUse {
                        name: name.to_string(),
                        pid,
                    });
                }
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
/// every message from now on).
fn group_starts(
    config: &BrokerConfig,
    next: u64,
    salvaged: &recovery::Salvage,
) -> Result<Vec<GroupStart>, BrokerError> {
    let (saved, bad) = state::load(&config.data_dir).map_err(|source| BrokerError::File {
        path: config.data_dir.join(state::STATE_FILE),
        source,
    })?;
    for line in bad {
        eprintln!(
            "broker: ignoring malformed line in {}: {line:?}",
            state::STATE_FILE
        );
    }
    Ok(config
        .groups
        .iter()
        .map(|name| {
            let saved = saved.iter().find(|g| &g.name == name);
            let recovered = salvaged.acknowledged.get(name);
            if saved.is_none() && recovered.is_none() {
                return GroupStart {
                    name: name.clone(),
                    start: next,
                    redeliver_below: next,
                };
            }
            let start = saved
                .map_or(0, |g| g.position)
                .max(recovered.copied().unwrap_or(0))
                .min(next);
            let handed_out = saved
                .map_or(0, |g| g.handed_out)
                .max(salvaged.handed_out.get(name).copied().unwrap_or(0));
            GroupStart {
                name: name.clone(),
                start,
                redeliver_below: handed_out.min(next).max(start),
            }
        })
        .collect())
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
    let _data_lock = lock_data_dir(&config.data_dir)?;
    let name = config
        .shm_name
        .clone()
        .unwrap_or_else(|| format!("/minikafka-{}", local.port()));

    // The files: repaired, and read for where offsets and groups resume.
    let persist_path = config.data_dir.join(PERSIST_FILE);
    let file_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::File { path, source }
    };
    let (mut persist_file, cut) =
        files::open_append(&persist_path, PERSIST_HEADER).map_err(file_err(&persist_path))?;
    report_cut(PERSIST_FILE, cut);
    let file_next = files::last_persisted_offset(&persist_path)
        .map_err(file_err(&persist_path))?
        .map_or(0, |o| o + 1);
    let salvaged = recovery::salvage(&name, &config.geometry, file_next, &mut persist_file)?;
    if let Some(report) = &salvaged.report {
        eprintln!("broker: {report}");
    }
    let log_path = config.data_dir.join(LOG_FILE);
    let (log_file, cut) = files::open_append(&log_path, LOG_HEADER).map_err(file_err(&log_path))?;
    report_cut(LOG_FILE, cut);
    let next = file_next + salvaged.appended;
    let starts = group_starts(&config, next, &salvaged)?;
    let replay_from = starts.iter().map(|g| g.start).min().unwrap_or(next);

    let mut token_bytes = [0u8; 16];
    random_bytes(&mut token_bytes)?;
    let token = [
        u64::from_le_bytes(token_bytes[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(token_bytes[8..].try_into().expect("8 bytes")),
    ];
    let region = Arc::new(create_region(&name, &config, token)?);
    region.start_at(replay_from, next);
    let h = region.header();
    h.durable
        .fsync
        .store(config.fsync as u32, Ordering::Release);
    if replay_from < next {
        h.identity.paused.store(1, Ordering::Release);
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
    let reclaimer = Arc::new(Reclaimer::new(
        region.clone(),
        persisted.clone(),
        replay_from,
    ));
    let persister = persister::Persister {
        region: region.clone(),
        registry: registry.clone(),
        buffer: DoubleBuffer::new(
            persist_file,
            buffer_size,
            config.flush_interval,
            config.fsync,
            next,
            "persist",
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
        reported_unreadable: false,
    };
    let cleaner = cleaner::Cleaner {
        region: region.clone(),
        registry: registry.clone(),
        log: DoubleBuffer::new(
            log_file,
            buffer_size,
            config.flush_interval,
            config.fsync,
            replay_from,
            "log",
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
        repairs: cleaner::RingRepairs::default(),
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
    let replayer = (replay_from < next).then(|| {
        let (region, registry, stop) = (region.clone(), registry.clone(), stop.clone());
        let path = persist_path.clone();
        std::thread::spawn(move || {
            let result = replay::replay(region, registry, &path, replay_from, next, stop.clone());
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
    mark_closing(&region);
    let replayed = match replayer {
        Some(r) => r
            .join()
            .unwrap_or_else(|_| Err("the replay thread panicked".into())),
        None => Ok(()),
    };
    persister_stop.store(true, Ordering::Release);
    let persisted = persister
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("persister panicked")));
    cleaner_stop.store(true, Ordering::Release);
    event::wake(&region.header().cleaner);
    let logged = cleaner
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("cleaner panicked")));
    // A producer that held the ring through the stop may still commit records
    // that only the region holds: the next start salvages them from it.
    let holder_stuck = matches!(persisted, Ok(persister::FinalDrain::HolderStuck));
    if !holder_stuck {
        let _ = Region::unlink(&name);
    }
    replayed.map_err(BrokerError::Replay)?;
    served?;
    persisted.map_err(BrokerError::Audit)?;
    logged.map_err(BrokerError::Audit)?;
    if holder_stuck {
        return Err(BrokerError::HolderStuck(name));
    }
    Ok(())
}

/// Starts a thread of the audit trail. One that fails says so at once; producers
/// then block (nothing is reclaimed unwritten) rather than anything being lost.
fn spawn_audit<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<T>>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let result = work();
        if let Err(e) = &result {
            eprintln!("broker: the {name} stopped: {e}; producers will block until the broker restarts");
        }
        result
    })
}

fn report_cut(file: &str, bytes: u64) {
    if bytes > 0 {
        eprintln!("broker: removed a partial last line ({bytes} bytes) from {file}");
    }
}
