//! After a restart, groups resume at their acknowledged positions. Records between
//! the oldest such position and the end of the persistence file are no longer in
//! any region, so the broker reads them back from the file and publishes them again
//! at their original offsets (with their producer, key and publish time), while
//! producers wait.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use audit_format::records::{parse_timestamp, PersistedRecord};
use shm_layout::ring::{Sender, WithHeaders, REPLAY_GENERATION};
use shm_layout::{BrokerRegion, Region};

use crate::registry::Registry;

/// What [`check`] found: where the records to replay begin in the file.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    /// Byte position of the line of the first record.
    start: u64,
}

/// Reads the records `[from, to)` of the persistence file at `path` without
/// publishing anything: that every one is there, in order, and fits in a ring
/// whose largest message is `max_message` bytes. Run before the broker says it is
/// ready, so that a replay that could not finish is refused at start-up.
pub fn check(path: &Path, from: u64, to: u64, max_message: u64) -> Result<Checked, String> {
    let why = |e: String| {
        format!(
            "cannot replay offsets {from}..{to} from {}: {e}",
            path.display()
        )
    };
    let file = std::fs::File::open(path).map_err(|e| why(e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut position = 0u64;
    let mut start = None;
    let mut expected = from;
    while expected < to {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| why(e.to_string()))?;
        if read == 0 {
            return Err(why(format!("the file ends at offset {expected}")));
        }
        let at = position;
        position += read as u64;
        let Some(offset) = data_line_offset(&line) else {
            continue;
        };
        if offset < from {
            continue;
        }
        let record = PersistedRecord::parse(&line).map_err(|e| why(e.to_string()))?;
        if record.offset != expected {
            return Err(why(format!(
                "expected offset {expected}, the file has {}",
                record.offset
            )));
        }
        let size = record.key.as_ref().map_or(0, Vec::len) as u64
            + record.payload.len() as u64
            + record.headers.len() as u64;
        if size > max_message {
            return Err(why(format!(
                "offset {expected}: message of {size} bytes exceeds the maximum of {max_message} bytes"
            )));
        }
        start.get_or_insert(at);
        expected += 1;
    }
    Ok(Checked {
        start: start.unwrap_or(position),
    })
}

/// The offset field of a data line (not a comment), if it has one.
fn data_line_offset(line: &str) -> Option<u64> {
    if line.starts_with('#') || line.trim_end().is_empty() {
        return None;
    }
    line.split('\t').nth(2)?.parse().ok()
}

/// Republishes the records `[from, to)` of the persistence file at `path` (found
/// by [`check`]), then lets producers in. Runs on its own thread. If it cannot
/// finish, producers stay held (a new send would take an offset already in the
/// file) and the error is returned for the broker to stop with.
pub fn replay(
    region: Arc<BrokerRegion>,
    registry: Arc<Mutex<Registry>>,
    path: &Path,
    (from, to, checked): (u64, u64, Checked),
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let result = republish(&region, &registry, path, (from, to, checked), &stop);
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
    (from, to, checked): (u64, u64, Checked),
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(checked.start))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ghosts: HashMap<String, u32> = HashMap::new();
    let mut expected = from;
    for line in BufReader::new(file).lines() {
        if expected >= to {
            break;
        }
        let line = line.map_err(|e| e.to_string())?;
        if data_line_offset(&line).is_none_or(|o| o < from) {
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
        let mut offset = None;
        let one = [WithHeaders {
            key: record.key.as_deref(),
            payload: &record.payload,
            headers: &record.headers,
        }];
        region
            .send_batch(
                sender,
                &one,
                ts,
                || stop.load(Ordering::Acquire),
                None,
                |o| offset = Some(o),
            )
            .map_err(|(_, e)| format!("offset {expected}: {e}"))?;
        let offset = offset.unwrap_or(u64::MAX);
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
