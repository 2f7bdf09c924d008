//! Standalone readers' reads a dead broker had not yet written to
//! `log_consumo.txt` (SPEC §10).
//!
//! A reader records what its polls return in its journal in the region before
//! they return (see `shm_layout::journal`), and the broker tells the journal how
//! far the log file holds its lines once they are written. So the dead region
//! says exactly what is missing: every run from the journal's logged mark to what
//! the reader recorded last. Those lines are appended now, group `-`, attempt 1.
//! A line the dead broker wrote after its last mark (at most a pass's worth) may
//! so appear twice; none is missing.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use audit_format::index::TopicPartition;
use audit_format::records::{push_delivery, DeliveryLines};
use shm_layout::journal::partition_key;
use shm_layout::layout::{client_role, client_state, JOURNAL_RUNS};
use shm_layout::sys::wall_clock_micros;
use shm_layout::Region;

use crate::file_producers::FileProducers;

/// Stands for a producer or reader the region no longer names.
const UNKNOWN: &str = "unknown";

/// Appends the log lines of the reads recorded in `old`'s journals and not yet in
/// the log. Reads of `default`/0: records below `freed` are named from the
/// persistence file in `data_dir` (which holds every record below `next` by now),
/// others from the old ring. Reads of another topic-partition: those of
/// `partitions` (each with the offset its records in the file end before; its
/// region was salvaged already), named from the file. Returns how many lines it
/// appended.
pub fn log_lost_reads(
    old: &Region,
    freed: u64,
    next: u64,
    data_dir: &Path,
    partitions: &[(TopicPartition, u64)],
    log: &mut File,
) -> io::Result<u64> {
    let mut file = FileProducers::new(data_dir.to_path_buf(), None);
    let mut others: Vec<(u64, DeliveryLines, FileProducers, u64)> = Vec::new();
    let mut out = Vec::new();
    let mut lines = 0;
    let now = wall_clock_micros();
    let (group, unknown): (Arc<str>, Arc<str>) = (Arc::from("-"), Arc::from(UNKNOWN));
    for c in 0..old.geometry().max_clients {
        let Some(entry) = old.client(c) else { break };
        let state = entry.state();
        if entry
            .identity
            .role
            .load(std::sync::atomic::Ordering::Relaxed)
            != client_role::READER
            || !(state == client_state::ACTIVE || state == client_state::REMOVED)
        {
            continue;
        }
        let reader = old
            .client_name(c, entry.generation())
            .unwrap_or_else(|| UNKNOWN.into());
        let reader_name: Arc<str> = Arc::from(reader.as_str());
        let (logged_runs, logged_upto) = entry.journal_logged();
        // Never more runs than the journal holds: more is a scribble.
        let opened = entry
            .journal_opened()
            .min(logged_runs + JOURNAL_RUNS as u64);
        for n in logged_runs..opened {
            let run = entry.journal_run(n);
            let from = if n == logged_runs {
                run.from.max(logged_upto)
            } else {
                run.from
            };
            if run.partition == partition_key(0, 0) {
                for o in from..run.upto.min(next) {
                    let producer = producer_of(old, &mut file, o, freed);
                    push_delivery(&mut out, now, o, &producer, "-", &reader, 1);
                    lines += 1;
                }
                continue;
            }
            let at = match others.iter().position(|(k, ..)| *k == run.partition) {
                Some(at) => at,
                None => {
                    let key = |tp: &TopicPartition| partition_key(tp.topic_id, tp.partition);
                    // A partition no topic has (a scribbled journal): nothing to log.
                    let Some((tp, end)) =
                        partitions.iter().find(|(tp, _)| key(tp) == run.partition)
                    else {
                        continue;
                    };
                    let lines = DeliveryLines::new_for(&tp.topic, tp.partition, now);
                    let names = FileProducers::of(data_dir.to_path_buf(), tp.clone(), None);
                    others.push((run.partition, lines, names, *end));
                    others.len() - 1
                }
            };
            let (_, format, names, end) = &mut others[at];
            for o in from..run.upto.min(*end) {
                let producer = names.producer_of(o).unwrap_or_else(|| unknown.clone());
                format.push(&mut out, o, &producer, &group, &reader_name, 1);
                lines += 1;
            }
        }
    }
    if !out.is_empty() {
        log.write_all(&out)?;
        log.sync_data()?;
    }
    Ok(lines)
}

/// The name of the producer of the record at `offset`.
fn producer_of(old: &Region, file: &mut FileProducers, offset: u64, freed: u64) -> Arc<str> {
    if offset >= freed {
        if let Some(name) = old
            .record_producer(offset)
            .and_then(|(c, g)| old.client_name(c, g))
        {
            return name.into();
        }
    }
    file.producer_of(offset)
        .unwrap_or_else(|| Arc::from(UNKNOWN))
}
