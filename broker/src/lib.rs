//! The mini-kafka broker as a library: [`run`] serves until told to stop.
//!
//! # Layout
//! - [`config`]: the command line and its validation.
//! - [`server`]: the control port's event loop (handshake, registration, leases).
//! - [`registry`]: clients, groups, rotations, positions and redeliveries.
//! - [`cleaner`]: the thread that frees consumed slots.
//! - [`status`]: the report behind `broker status`.
#![forbid(unsafe_code)]

pub mod cleaner;
pub mod config;
pub mod registry;
pub mod server;
pub mod status;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shm_layout::event;
use shm_layout::sys::{process_exists, random_bytes};
use shm_layout::{Region, RegionError};

pub use config::BrokerConfig;
use registry::{Registry, RegistryLimits};

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
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Marks the region closing and wakes every waiter in it.
pub fn mark_closing(region: &Region) {
    let h = region.header();
    h.identity.closing.store(1, Ordering::Release);
    event::wake(&h.published);
    event::wake(&h.space);
    event::wake(&h.cleaner);
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
    let name = config
        .shm_name
        .clone()
        .unwrap_or_else(|| format!("/minikafka-{}", local.port()));
    let mut token_bytes = [0u8; 16];
    random_bytes(&mut token_bytes)?;
    let token = [
        u64::from_le_bytes(token_bytes[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(token_bytes[8..].try_into().expect("8 bytes")),
    ];
    let region = Arc::new(create_region(&name, &config, token)?);
    let registry = Arc::new(Mutex::new(Registry::new(
        region.clone(),
        &config.groups,
        region.next_offset(),
        RegistryLimits {
            session_timeout: config.session_timeout,
        },
    )));
    let cleaner_stop = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (region, registry, stop) = (region.clone(), registry.clone(), cleaner_stop.clone());
        std::thread::Builder::new()
            .name("cleaner".into())
            .spawn(move || cleaner::run(region, registry, stop))?
    };
    ready(&format!("listening on {local}, shm {name}"));
    let server = server::Server {
        region: region.clone(),
        registry,
        max_connections: config.geometry.max_clients as usize + 64,
        started: Instant::now(),
    };
    let served = server.run(listener, &stop);
    mark_closing(&region);
    cleaner_stop.store(true, Ordering::Release);
    let _ = cleaner.join();
    let _ = Region::unlink(&name);
    served?;
    Ok(())
}
