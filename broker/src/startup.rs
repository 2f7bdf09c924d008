//! Start-up: everything the broker reads and repairs before it serves, in order.
//! The audit files (a cut last line removed, their ends found), the state file,
//! the region a dead broker left (recovered), where offsets continue and each group
//! resumes, and whether the records to replay can be replayed: a start that cannot
//! go on is refused here, before the ready line.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use audit_format::index::{
    IndexConfig, IndexWriter, IndexedTopics, SparseIndex, TopicPartition, WriterStart,
};
use audit_format::records::{LOG_FILE, LOG_HEADER, PERSIST_FILE, PERSIST_HEADER};
use shm_layout::region::OwnerState;
use shm_layout::sys::random_bytes;
use shm_layout::{BrokerRegion, Region, RegionError};

use crate::audit::{files, state};
use crate::registry::GroupStart;
use crate::{recovery, replay, topics, BrokerConfig, BrokerError};

/// What start-up found: the files open for appending, where offsets continue and
/// where each group resumes.
pub(crate) struct Recovered {
    pub persist_file: File,
    pub persist_path: PathBuf,
    pub log_file: File,
    pub log_path: PathBuf,
    /// Where this broker's lines in the log begin.
    pub log_start: u64,
    /// The next offset a message gets.
    pub next: u64,
    /// Where each pre-created group resumes.
    pub starts: Vec<GroupStart>,
    /// The first offset to publish again from the file (`next` if none).
    pub replay_from: u64,
    /// Where the records to publish again begin in the file, if any.
    pub replay: Option<replay::Checked>,
    /// The state file, as saved at this start.
    pub state_file: std::sync::Arc<state::StateFile>,
    /// The topics besides `default`, and where each of their partitions'
    /// offsets continue.
    pub topics: Vec<audit_format::topics::TopicRecord>,
    pub partitions: Vec<topics::PartitionStart>,
    /// The persistence file's index, up to date with the file; None if it cannot
    /// be used (said in one line: readers then scan the file).
    pub index: Option<IndexWriter>,
}

/// Raises the open-file limit for the connections the broker may accept, saying so
/// if it cannot.
pub(crate) fn raise_fd_limit(config: &BrokerConfig) {
    // Every connection is a file: room for the most the event loop accepts, plus
    // the broker's own files, among them an index file per partition.
    let wanted_files =
        u64::from(config.geometry.max_clients) + 64 + 256 + u64::from(config.max_partitions);
    match shm_layout::sys::raise_fd_limit(wanted_files) {
        Ok(limit) if limit < wanted_files => eprintln!(
            "broker: the open-file limit is {limit} (hard limit), below the {wanted_files} that --max-clients {} needs",
            config.geometry.max_clients
        ),
        Ok(_) => {}
        Err(e) => eprintln!("broker: cannot raise the open-file limit: {e}"),
    }
}

/// Reads and repairs what the broker resumes from (see the module docs), for the
/// region named `name`.
pub(crate) fn recover(config: &BrokerConfig, name: &str) -> Result<Recovered, BrokerError> {
    let mut saved = state::load(&config.data_dir)?;
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
    let log_path = config.data_dir.join(LOG_FILE);
    let (mut log_file, cut) =
        files::open_append(&log_path, LOG_HEADER).map_err(file_err(&log_path))?;
    report_cut(LOG_FILE, cut);
    let records = topics::load_directory(config)?;
    let mut index = open_index(config, &persist_file, &records);
    // Each partition's region first: their producers are named in the control
    // region, which the salvage of `default`/0 replaces.
    let mut partitions = Vec::new();
    // Where each one's records in the file end, for reads to log.
    let mut in_file = Vec::new();
    let mut appended = 0;
    for record in &records {
        let geometry = topics::ring_geometry(&config.geometry, record);
        for p in 0..record.partitions {
            let tp = topics::topic_partition(record, p);
            let file_end = partition_file_end(config, index.is_some(), &tp)?;
            let salvaged = recovery::salvage_partition(
                &topics::region_name(name, tp.topic_id, p),
                name,
                &tp,
                &geometry,
                file_end,
                &mut persist_file,
                &mut log_file,
            )?;
            appended += salvaged.appended;
            in_file.push((tp.clone(), file_end + salvaged.appended));
            let next = next_offset(config, &saved.state, &tp, file_end + salvaged.appended)?;
            resume_recovered_groups(&mut saved.state, &tp, salvaged.groups, next);
            partitions.push(topics::PartitionStart {
                partition: tp,
                geometry,
                next,
            });
        }
    }
    let file_next = match index.is_some() {
        true => partition_file_end(config, true, &TopicPartition::default_topic())?,
        false => tail.last.map_or(0, |o| o + 1),
    };
    let salvaged = recovery::salvage(
        name,
        &config.geometry,
        &config.data_dir,
        file_next,
        &in_file,
        &mut persist_file,
        &mut log_file,
    )?;
    if let Some(report) = &salvaged.report {
        eprintln!("broker: {report}");
    }
    // This broker's log lines begin here: the next start needs it if this one dies.
    let log_start = log_file.metadata().map_err(file_err(&log_path))?.len();
    let in_file = file_next + salvaged.appended;
    let next = next_offset(
        config,
        &saved.state,
        &TopicPartition::default_topic(),
        in_file,
    )?;
    if appended + salvaged.appended > 0 && index.is_some() {
        // The index catches up with the records appended.
        drop(index.take());
        index = open_index(config, &persist_file, &records);
    }
    let starts = group_starts(config, &saved.state, &salvaged, in_file, next);
    // Pre-created groups reading `default` get back what they had not
    // acknowledged there; groups that do not read it hold nothing there.
    let replay_from = match config.groups_read_default() {
        true => starts.iter().map(|g| g.start).min().unwrap_or(next),
        false => next,
    };
    // A replay that could not finish is refused now, before the ready line.
    let replay = if replay_from < next {
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
    let state_file = save_starting_state(config, &starts, next, &partitions, &saved.state);
    Ok(Recovered {
        topics: records,
        partitions,
        index,
        persist_file,
        persist_path,
        log_file,
        log_path,
        log_start,
        next,
        starts,
        replay_from,
        replay,
        state_file,
    })
}

/// Whether saved line `g` is a pre-created group's in `default`/0, which its start
/// there (in `starts`) replaces. Where the pre-created groups do not read
/// `default`, such a line is a position like any other topic's: kept for when a
/// member reads `default` under the group.
pub(crate) fn is_pre_created_groups_start(
    g: &state::GroupState,
    config: &BrokerConfig,
    starts: &[GroupStart],
) -> bool {
    config.groups_read_default()
        && g.topic == state::DEFAULT_TOPIC
        && g.partition == state::DEFAULT_PARTITION
        && starts.iter().any(|s| s.name == g.name)
}

/// Recorded at once: from now on a restart never takes an offset below `next`,
/// whatever happens to the files.
fn save_starting_state(
    config: &BrokerConfig,
    starts: &[GroupStart],
    next: u64,
    partitions: &[topics::PartitionStart],
    saved: &state::State,
) -> std::sync::Arc<state::StateFile> {
    let starting_state = state::State {
        ends: std::iter::once(state::PartitionEnd {
            topic: state::DEFAULT_TOPIC.to_string(),
            partition: state::DEFAULT_PARTITION,
            end: next,
        })
        .chain(partitions.iter().map(|p| state::PartitionEnd {
            topic: p.partition.topic.clone(),
            partition: p.partition.partition,
            end: p.next,
        }))
        .collect(),
        groups: starts
            .iter()
            .filter(|_| config.groups_read_default())
            .map(|g| state::GroupState {
                name: g.name.clone(),
                topic: state::DEFAULT_TOPIC.to_string(),
                partition: state::DEFAULT_PARTITION,
                position: g.start,
                handed_out: g.redeliver_below,
            })
            // Groups created by consumers that had departed, and pre-created
            // groups' other topics: kept as they were.
            .chain(
                saved
                    .groups
                    .iter()
                    .filter(|g| !is_pre_created_groups_start(g, config, starts))
                    .cloned(),
            )
            .collect(),
        readers: saved.readers.clone(),
        kafka_groups: saved.kafka_groups.clone(),
    };
    if let Err(e) = state::save(&config.data_dir, &starting_state, true) {
        eprintln!("broker: cannot save {}: {e}; retrying", state::STATE_FILE);
    }
    std::sync::Arc::new(state::StateFile::new(
        &config.data_dir,
        config.fsync,
        starting_state,
    ))
}

/// A fresh random access token for the region.
pub(crate) fn new_token() -> std::io::Result<[u64; 2]> {
    let mut token_bytes = [0u8; 16];
    random_bytes(&mut token_bytes)?;
    Ok([
        u64::from_le_bytes(token_bytes[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(token_bytes[8..].try_into().expect("8 bytes")),
    ])
}

fn report_cut(file: &str, bytes: u64) {
    if bytes > 0 {
        eprintln!("broker: removed a partial last line ({bytes} bytes) from {file}");
    }
}

/// Creates the region, replacing one left by a dead broker; refuses to touch one
/// whose broker is alive.
pub(crate) fn create_region(
    name: &str,
    config: &BrokerConfig,
    token: [u64; 2],
) -> Result<BrokerRegion, BrokerError> {
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
pub(crate) fn lock_data_dir(dir: &Path) -> Result<Flock<File>, BrokerError> {
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

/// Raises the saved position of each group `recovered` from partition `tp`'s
/// region to what the region shows it acknowledged (the state file is saved
/// every --flush-interval, so a broker killed between saves left it behind);
/// a group the state file lacks there gets a line. A group resumes at its
/// line when a member joins (SPEC §10), so nothing it acknowledged comes again.
fn resume_recovered_groups(
    state: &mut state::State,
    tp: &TopicPartition,
    recovered: Vec<recovery::RecoveredGroup>,
    next: u64,
) {
    for r in recovered {
        let line = state
            .groups
            .iter_mut()
            .find(|g| g.name == r.name && g.topic == tp.topic && g.partition == tp.partition);
        match line {
            Some(g) => {
                g.position = g.position.max(r.acknowledged.min(next));
                g.handed_out = g.handed_out.max(r.handed_out.min(next)).max(g.position);
            }
            None => state.groups.push(state::GroupState {
                name: r.name,
                topic: tp.topic.clone(),
                partition: tp.partition,
                position: r.acknowledged.min(next),
                handed_out: r.handed_out.min(next).max(r.acknowledged.min(next)),
            }),
        }
    }
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
            // Not reading `default`, a group's line there is kept as it is (see
            // `is_pre_created_groups_start`).
            if (saved.is_none() && recovered.is_none()) || !config.groups_read_default() {
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
    partition: &TopicPartition,
    in_file: u64,
) -> Result<u64, BrokerError> {
    let assigned = saved
        .end(&partition.topic, partition.partition)
        .unwrap_or(0);
    if assigned <= in_file {
        return Ok(in_file);
    }
    if !config.accept_lost_records {
        return Err(BrokerError::LostRecords {
            partition: partition.to_string(),
            from: in_file,
            to: assigned,
        });
    }
    eprintln!(
        "broker: {PERSIST_FILE} lacks offsets {in_file}..{assigned} of {partition}, which were assigned; they are skipped (--accept-lost-records) and new offsets continue at {assigned}"
    );
    Ok(assigned)
}

/// Opens the persistence file's sparse index (SPEC §10) for `default` and
/// `topics`, bringing it up to date with the file or rebuilding it; None (said in
/// one line) if that fails: the broker runs on, and readers scan the file instead.
fn open_index(
    config: &BrokerConfig,
    persist_file: &File,
    topics: &[audit_format::topics::TopicRecord],
) -> Option<IndexWriter> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("broker: cannot index {PERSIST_FILE}: {e}; readers scan it instead");
        None
    };
    let base = match persist_file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return fail(&e),
    };
    let mut indexed = IndexedTopics::default_topic();
    for t in topics {
        if let Err(e) = indexed.add(&t.name, t.id, t.partitions) {
            return fail(&e);
        }
    }
    let (writer, start) =
        match IndexWriter::open(&config.data_dir, &indexed, IndexConfig::default()) {
            Ok(opened) => opened,
            Err(e) => return fail(&e),
        };
    if let WriterStart::Rebuilt { reason, rebuilt } = &start {
        // A new data directory has no index yet: nothing to say.
        if rebuilt.records > 0 {
            eprintln!(
                "broker: rebuilt the index of {PERSIST_FILE} ({} records): {reason}",
                rebuilt.records
            );
        }
    }
    if writer.noted_through() != base {
        let e = format!(
            "the index covers {} bytes of a file of {base}",
            writer.noted_through()
        );
        return fail(&e);
    }
    Some(writer)
}

/// The offset after `partition`'s last record in the persistence file: through
/// its index when the index is up to date (`indexed`), which reads about a step
/// of the file; otherwise by reading the file for it.
fn partition_file_end(
    config: &BrokerConfig,
    indexed: bool,
    partition: &TopicPartition,
) -> Result<u64, BrokerError> {
    let index = match indexed {
        true => SparseIndex::open(&config.data_dir, partition).ok(),
        false => None,
    };
    let index = match index {
        Some(index) => index,
        None => SparseIndex::from_scan(
            &config.data_dir,
            partition,
            audit_format::index::DEFAULT_STEP,
        )
        .map_err(|e| BrokerError::Topics(format!("cannot read {PERSIST_FILE}: {e}")))?,
    };
    audit_format::log_reader::partition_end(&index)
        .map_err(|e| BrokerError::Topics(format!("cannot read {PERSIST_FILE}: {e}")))
}
