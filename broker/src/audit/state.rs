//! The state file, `offsets.txt` in the data directory: where each topic-partition's
//! offsets end and where each group resumes, so that any restart resumes every group
//! there and never uses an offset twice, whatever happened to the audit files.
//!
//! ```text
//! # kind<TAB>owner<TAB>topic<TAB>partition<TAB>offset<TAB>handed_out
//! end<TAB>-<TAB>default<TAB>0<TAB>10000<TAB>-
//! group<TAB>group-1<TAB>default<TAB>0<TAB>500<TAB>502
//! reader<TAB>audit<TAB>default<TAB>0<TAB>1200<TAB>-
//! kafka-group<TAB>billing<TAB>orders<TAB>3<TAB>815<TAB>-
//! ```
//!
//! - `end`: every offset of the topic-partition below `offset` has been assigned to
//!   a message; the next message gets `offset` or more.
//! - `group`: every offset below `offset` (the position) is acknowledged by the
//!   group; every offset below `handed_out` had been delivered once, so after a
//!   restart the offsets between the two are delivered again with attempt 2.
//! - `reader`: the offset standalone reader `owner` (its `--id`) committed: the next
//!   one it reads (Kafka's committed offset).
//! - `kafka-group`: the offset Kafka group `owner` committed over the Kafka port
//!   (SPEC §12), Kafka's committed offset likewise. A name with such lines is a
//!   Kafka group's: no shared-memory group may take it.
//!
//! Lines are keyed by kind, owner, topic and partition. The file is replaced
//! atomically (written aside, then renamed). The older `group_positions.txt`
//! (`group<TAB>position<TAB>handed_out`) is read as topic `default`, partition 0,
//! when `offsets.txt` does not exist yet.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the state file in the data directory.
pub const STATE_FILE: &str = "offsets.txt";
/// The state file of earlier versions: group positions of the single topic.
pub const LEGACY_STATE_FILE: &str = "group_positions.txt";
const HEADER: &str = "# kind\towner\ttopic\tpartition\toffset\thanded_out\n";

/// The single topic until topics exist, and its one partition.
pub const DEFAULT_TOPIC: &str = "default";
pub const DEFAULT_PARTITION: u32 = 0;

/// Where a topic-partition's offsets end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionEnd {
    pub topic: String,
    pub partition: u32,
    /// Every offset below this has been assigned.
    pub end: u64,
}

/// One group's saved position in one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub topic: String,
    pub partition: u32,
    pub position: u64,
    pub handed_out: u64,
}

/// A committed offset in one topic-partition: a standalone reader's or a Kafka
/// group's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub name: String,
    pub topic: String,
    pub partition: u32,
    /// The next offset the reader reads.
    pub offset: u64,
}

/// Everything the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub ends: Vec<PartitionEnd>,
    pub groups: Vec<GroupState>,
    pub readers: Vec<Commit>,
    pub kafka_groups: Vec<Commit>,
}

impl State {
    /// Where `topic`/`partition` ends, if the file knows.
    pub fn end(&self, topic: &str, partition: u32) -> Option<u64> {
        self.ends
            .iter()
            .find(|e| e.topic == topic && e.partition == partition)
            .map(|e| e.end)
    }

    /// Group `name`'s state in `topic`/`partition`, if saved.
    pub fn group(&self, name: &str, topic: &str, partition: u32) -> Option<&GroupState> {
        self.groups
            .iter()
            .find(|g| g.name == name && g.topic == topic && g.partition == partition)
    }
}

/// Writes the state file, for the cleaner's saves of ends and group positions and
/// for readers' commits alike: one writer at a time, and each write holds the
/// latest of both.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    /// Every write is synced (`--fsync`).
    sync: bool,
    /// What the file holds (or was last asked to hold).
    state: Mutex<State>,
}

impl StateFile {
    /// The state file in `dir`, which holds `state` now.
    pub fn new(dir: &Path, sync: bool, state: State) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
            sync,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the file with `ends` (of the topic-partitions they name; the others
    /// are kept) and `groups` if they changed (or `force`), with `sync` or when
    /// every write is synced; whether it wrote.
    pub fn save_positions(
        &self,
        ends: Vec<PartitionEnd>,
        groups: Vec<GroupState>,
        force: bool,
        sync: bool,
    ) -> io::Result<bool> {
        let mut state = self.lock();
        // The ends given replace those of their topic-partitions; others stay.
        let mut merged = state.ends.clone();
        for e in ends {
            match merged
                .iter_mut()
                .find(|m| m.topic == e.topic && m.partition == e.partition)
            {
                Some(m) => *m = e,
                None => merged.push(e),
            }
        }
        if !force && state.ends == merged && state.groups == groups {
            return Ok(false);
        }
        state.ends = merged;
        state.groups = groups;
        save(&self.dir, &state, sync || self.sync)?;
        Ok(true)
    }

    /// Writes the file with `groups` (keeping the ends last saved): for a change
    /// worth saving before the next periodic save.
    pub fn save_groups(&self, groups: Vec<GroupState>) -> io::Result<()> {
        let mut state = self.lock();
        state.groups = groups;
        save(&self.dir, &state, self.sync)
    }

    /// Records that reader `name` committed `offset` in `topic`/`partition`; returns
    /// once the file holding it is written (synced under `--fsync`).
    pub fn commit_reader(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> io::Result<()> {
        let mut state = self.lock();
        record_commit(
            &mut state.readers,
            Commit {
                name: name.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
            },
        );
        save(&self.dir, &state, self.sync)
    }

    /// Records Kafka groups' commits, all with one write; returns once the
    /// file holding them is written (synced under `--fsync`).
    pub fn commit_kafka_groups(&self, commits: Vec<Commit>) -> io::Result<()> {
        let mut state = self.lock();
        for c in commits {
            record_commit(&mut state.kafka_groups, c);
        }
        save(&self.dir, &state, self.sync)
    }

    /// What the file holds.
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }
}

/// Puts `commit` in `list`, replacing the owner's older one in its
/// topic-partition.
fn record_commit(list: &mut Vec<Commit>, commit: Commit) {
    match list.iter_mut().find(|r| {
        r.name == commit.name && r.topic == commit.topic && r.partition == commit.partition
    }) {
        Some(r) => r.offset = commit.offset,
        None => list.push(commit),
    }
}

/// What was loaded, and from which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub state: State,
    /// Read from [`LEGACY_STATE_FILE`] because [`STATE_FILE`] did not exist.
    pub from_legacy: bool,
}

/// Why the state file could not be read. A line that does not parse is refused
/// rather than skipped: a group missing from the file would start at the end and
/// skip every message it had not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{file}: {source}")]
    Io {
        file: &'static str,
        source: io::Error,
    },
    #[error("{file} line {line} is not a state record ({text:?}): fix or remove that line")]
    Malformed {
        file: &'static str,
        line: usize,
        text: String,
    },
}

/// Reads the state file (or, if it does not exist, the older one); no file at all
/// is an empty state.
pub fn load(dir: &Path) -> Result<Loaded, StateError> {
    if let Some(text) = read_if_exists(dir, STATE_FILE)? {
        return Ok(Loaded {
            state: parse(&text, STATE_FILE, parse_line)?,
            from_legacy: false,
        });
    }
    match read_if_exists(dir, LEGACY_STATE_FILE)? {
        Some(text) => Ok(Loaded {
            state: parse(&text, LEGACY_STATE_FILE, parse_legacy_line)?,
            from_legacy: true,
        }),
        None => Ok(Loaded {
            state: State::default(),
            from_legacy: false,
        }),
    }
}

fn read_if_exists(dir: &Path, file: &'static str) -> Result<Option<String>, StateError> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { file, source }),
    }
}

/// A parsed line: an end, a group or a reader.
enum Line {
    End(PartitionEnd),
    Group(GroupState),
    Reader(Commit),
    KafkaGroup(Commit),
}

fn parse(
    text: &str,
    file: &'static str,
    parse_line: fn(&str) -> Option<Line>,
) -> Result<State, StateError> {
    let mut state = State::default();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(Line::End(e)) => state.ends.push(e),
            Some(Line::Group(g)) => state.groups.push(g),
            Some(Line::Reader(r)) => state.readers.push(r),
            Some(Line::KafkaGroup(c)) => state.kafka_groups.push(c),
            None => {
                return Err(StateError::Malformed {
                    file,
                    line: i + 1,
                    text: line.to_string(),
                })
            }
        }
    }
    Ok(state)
}

fn parse_line(line: &str) -> Option<Line> {
    let [kind, owner, topic, partition, offset, handed_out] = fields(line)?;
    let partition = partition.parse().ok()?;
    let offset: u64 = offset.parse().ok()?;
    if topic.is_empty() {
        return None;
    }
    match kind {
        "end" if owner == "-" && handed_out == "-" => Some(Line::End(PartitionEnd {
            topic: topic.to_string(),
            partition,
            end: offset,
        })),
        "group" => {
            shm_layout::names::check_name("group", owner).ok()?;
            let handed_out: u64 = handed_out.parse().ok()?;
            Some(Line::Group(GroupState {
                name: owner.to_string(),
                topic: topic.to_string(),
                partition,
                position: offset,
                handed_out: handed_out.max(offset),
            }))
        }
        "reader" | "kafka-group" if handed_out == "-" => {
            shm_layout::names::check_name("owner", owner).ok()?;
            let commit = Commit {
                name: owner.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
            };
            Some(if kind == "reader" {
                Line::Reader(commit)
            } else {
                Line::KafkaGroup(commit)
            })
        }
        _ => None,
    }
}

/// `group<TAB>position<TAB>handed_out`, of the single topic.
fn parse_legacy_line(line: &str) -> Option<Line> {
    let [name, position, handed_out] = fields(line)?;
    shm_layout::names::check_name("group", name).ok()?;
    let position: u64 = position.parse().ok()?;
    let handed_out: u64 = handed_out.parse().ok()?;
    Some(Line::Group(GroupState {
        name: name.to_string(),
        topic: DEFAULT_TOPIC.to_string(),
        partition: DEFAULT_PARTITION,
        position,
        handed_out: handed_out.max(position),
    }))
}

fn fields<const N: usize>(line: &str) -> Option<[&str; N]> {
    line.split('\t').collect::<Vec<_>>().try_into().ok()
}

/// Replaces the state file with `state`; `sync` also flushes it to disk. Once
/// written, the older state file (if any) is removed: this one supersedes it.
pub fn save(dir: &Path, state: &State, sync: bool) -> io::Result<()> {
    let mut text = String::from(HEADER);
    for e in &state.ends {
        text.push_str(&format!(
            "end\t-\t{}\t{}\t{}\t-\n",
            e.topic, e.partition, e.end
        ));
    }
    for g in &state.groups {
        text.push_str(&format!(
            "group\t{}\t{}\t{}\t{}\t{}\n",
            g.name, g.topic, g.partition, g.position, g.handed_out
        ));
    }
    for r in &state.readers {
        text.push_str(&format!(
            "reader\t{}\t{}\t{}\t{}\t-\n",
            r.name, r.topic, r.partition, r.offset
        ));
    }
    for k in &state.kafka_groups {
        text.push_str(&format!(
            "kafka-group\t{}\t{}\t{}\t{}\t-\n",
            k.name, k.topic, k.partition, k.offset
        ));
    }
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    match std::fs::remove_file(dir.join(LEGACY_STATE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mk-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn group(name: &str, position: u64, handed_out: u64) -> GroupState {
        GroupState {
            name: name.into(),
            topic: DEFAULT_TOPIC.into(),
            partition: 0,
            position,
            handed_out,
        }
    }

    #[test]
    fn state_round_trips_keyed_by_topic_and_partition() {
        let s = scratch("round");
        let dir = &s.0;
        assert_eq!(load(dir).unwrap().state, State::default());
        let state = State {
            ends: vec![PartitionEnd {
                topic: DEFAULT_TOPIC.into(),
                partition: 0,
                end: 10_000,
            }],
            groups: vec![group("group-1", 500, 502), group("b", 7, 7)],
            readers: vec![Commit {
                name: "b".into(),
                topic: DEFAULT_TOPIC.into(),
                partition: 0,
                offset: 1200,
            }],
            kafka_groups: vec![Commit {
                name: "billing".into(),
                topic: "orders".into(),
                partition: 3,
                offset: 815,
            }],
        };
        save(dir, &state, false).unwrap();
        let loaded = load(dir).unwrap();
        assert_eq!(loaded.state, state);
        assert!(!loaded.from_legacy);
        assert_eq!(loaded.state.end("default", 0), Some(10_000));
        assert_eq!(loaded.state.end("default", 1), None);
        assert_eq!(loaded.state.group("b", "default", 0).unwrap().position, 7);
        assert_eq!(
            std::fs::read_to_string(dir.join(STATE_FILE)).unwrap(),
            "# kind\towner\ttopic\tpartition\toffset\thanded_out\n\
             end\t-\tdefault\t0\t10000\t-\n\
             group\tgroup-1\tdefault\t0\t500\t502\n\
             group\tb\tdefault\t0\t7\t7\n\
             reader\tb\tdefault\t0\t1200\t-\n\
             kafka-group\tbilling\torders\t3\t815\t-\n"
        );
    }

    #[test]
    fn the_older_file_is_read_as_the_default_partition_and_then_superseded() {
        let s = scratch("legacy");
        let dir = &s.0;
        std::fs::write(
            dir.join(LEGACY_STATE_FILE),
            "# group\tposition\thanded_out\ngroup-1\t500\t502\n",
        )
        .unwrap();
        let loaded = load(dir).unwrap();
        assert!(loaded.from_legacy);
        assert_eq!(loaded.state.groups, vec![group("group-1", 500, 502)]);
        save(dir, &loaded.state, false).unwrap();
        assert!(!dir.join(LEGACY_STATE_FILE).exists());
        assert_eq!(load(dir).unwrap().state, loaded.state);
    }

    #[test]
    fn a_line_that_does_not_parse_is_refused_with_its_number() {
        let s = scratch("bad");
        let dir = &s.0;
        for bad in [
            "group\tgroup-1\tdefault\t0\tlots\t5",
            "group\tgroup 1\tdefault\t0\t5\t5",
            "end\t-\tdefault\t0\t5",
            "reader\tr\tdefault\t0\t5\t5",
            "kafka-group\tk\tdefault\t0\t5\t5",
            "kafka-group\tk k\tdefault\t0\t5\t-",
            "garbage",
        ] {
            std::fs::write(
                dir.join(STATE_FILE),
                format!("# h\nend\t-\tdefault\t0\t9\t-\n{bad}\n"),
            )
            .unwrap();
            match load(dir) {
                Err(StateError::Malformed { line: 3, text, .. }) => assert_eq!(text, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        std::fs::write(dir.join(LEGACY_STATE_FILE), "group-1\tx\t1\n").unwrap();
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let e = load(dir).unwrap_err().to_string();
        assert_eq!(
            e,
            "group_positions.txt line 1 is not a state record (\"group-1\\tx\\t1\"): fix or remove that line"
        );
    }
}
