//! After a restart, groups resume at their acknowledged positions. Records between
//! the oldest such position and the end of the persistence file are no longer in
//! any region, so the broker reads them back from the file and publishes them again
//! at their original offsets (with their producer, key and publish time), while
//! producers wait.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shm_layout::ring::{Sender, REPLAY_GENERATION};
use shm_layout::Region;

use crate::audit::records::{parse_timestamp, PersistedRecord};
use crate::registry::Registry;

/// Republishes the records `[from, to)` of the persistence file at `path`, then
/// lets producers in. Runs on its own thread. If it cannot finish, producers stay
/// held (a new send would take an offset already in the file) and the error is
/// returned for the broker to stop with.
pub fn replay(
    region: Arc<Region>,
    registry: Arc<Mutex<Registry>>,
    path: &Path,
    from: u64,
    to: u64,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let result = republish(&region, &registry, path, from, to, &stop);
    if stop.load(Ordering::Acquire) {
        // Asked to stop: an unfinished replay resumes at the next start.
        return Ok(());
    }
    result.map_err(|e| {
        format!(
            "cannot replay offsets {from}..{to} from {}: {e}",
            path.display()
        )
    })?;
    region.end_replay();
    Ok(())
}

fn republish(
    region: &Region,
    registry: &Mutex<Registry>,
    path: &Path,
    from: u64,
    to: u64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ghosts: HashMap<String, u32> = HashMap::new();
    let mut expected = from;
    for line in BufReader::new(file).lines() {
        if expected >= to {
            break;
        }
        let line = line.map_err(|e| e.to_string())?;
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let offset = line.split('\t').nth(2).and_then(|o| o.parse::<u64>().ok());
        if offset.is_none_or(|o| o < from) {
            continue;
        }
        let record = PersistedRecord::parse(&line).map_err(|e| e.to_string())?;
        if record.offset != expected {
            return Err(format!(
                "expected offset {expected}, the file has {}",
                record.offset
            ));
        }
        let client = match ghosts.get(&record.producer) {
            Some(&c) => c,
            None => {
                let c = registry
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .register_ghost(&record.producer)
                    .ok_or("no free client entry for a replayed producer")?;
                ghosts.insert(record.producer.clone(), c);
                c
            }
        };
        let sender = Sender {
            client,
            generation: REPLAY_GENERATION,
        };
        let ts = parse_timestamp(&record.timestamp).unwrap_or(0);
        let offset = region
            .send(
                sender,
                record.key.as_deref(),
                &record.payload,
                ts,
                || stop.load(Ordering::Acquire),
                None,
            )
            .map_err(|e| format!("offset {expected}: {e}"))?;
        if offset != expected {
            return Err(format!("republished offset {expected} as {offset}"));
        }
        expected += 1;
    }
    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    for (_, c) in ghosts {
        reg.retire_producer(c, to);
    }
    if expected < to {
        return Err(format!("the file ends at offset {expected}"));
    }
    Ok(())
}
