//! `topics.txt`: the broker's directory of topics other than `default` (SPEC §11),
//! one line per topic in `--data-dir`, fields separated by one TAB:
//!
//! ```text
//! # mini-kafka topics: id name partitions slots slot_size max_message
//! 1 orders 4 4096 1024 1048576
//! ```
//!
//! Ids are given in creation order and never reused; shared-memory regions and
//! index files are named by id. The file is replaced whole and atomically (written
//! aside, synced, renamed, the directory synced) each time a topic is created, so a
//! topic the broker announced survives any crash. `default` (id 0) is not listed: it
//! always exists, with the geometry of the broker's flags.

use std::io;
use std::path::Path;

/// The file's name in the data directory.
pub const TOPICS_FILE: &str = "topics.txt";

/// Its first line.
pub const TOPICS_HEADER: &str =
    "# mini-kafka topics: id name partitions slots slot_size max_message\n";

/// The topic every broker has, id 0.
pub const DEFAULT_TOPIC: &str = "default";

/// One topic's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    pub id: u32,
    pub name: String,
    pub partitions: u32,
    /// The geometry of each of its partitions' rings.
    pub slots: u32,
    pub slot_size: u32,
    pub max_message: u32,
}

/// Why `topics.txt` cannot be used: the broker refuses to start rather than guess
/// which topics exist.
#[derive(Debug, thiserror::Error)]
pub enum TopicsFileError {
    #[error("{TOPICS_FILE}: {0}")]
    Io(#[from] io::Error),
    #[error("{TOPICS_FILE} line {line}: {why}: {text:?}")]
    Bad {
        line: usize,
        why: &'static str,
        text: String,
    },
}

/// The topics in `dir`'s `topics.txt`, in file order (none if it does not exist).
pub fn load(dir: &Path) -> Result<Vec<TopicRecord>, TopicsFileError> {
    let text = match std::fs::read_to_string(dir.join(TOPICS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut topics: Vec<TopicRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let bad = |why| TopicsFileError::Bad {
            line: i + 1,
            why,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, name, partitions, slots, slot_size, max_message] = fields[..] else {
            return Err(bad("expected 6 fields"));
        };
        let number = |s: &str| s.parse::<u32>().map_err(|_| bad("not a number"));
        let record = TopicRecord {
            id: number(id)?,
            name: name.to_string(),
            partitions: number(partitions)?,
            slots: number(slots)?,
            slot_size: number(slot_size)?,
            max_message: number(max_message)?,
        };
        if record.id == 0 || record.name == DEFAULT_TOPIC {
            return Err(bad("the topic default is not listed"));
        }
        if record.partitions == 0 {
            return Err(bad("a topic has at least one partition"));
        }
        if topics
            .iter()
            .any(|t| t.id == record.id || t.name == record.name)
        {
            return Err(bad("a topic id or name listed twice"));
        }
        topics.push(record);
    }
    Ok(topics)
}

/// Replaces `dir`'s `topics.txt` with `topics`, durably: once this returns, the
/// next start finds them whatever happens to the broker or the host.
pub fn save(dir: &Path, topics: &[TopicRecord]) -> io::Result<()> {
    let mut text = String::from(TOPICS_HEADER);
    for t in topics {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            t.id, t.name, t.partitions, t.slots, t.slot_size, t.max_message
        ));
    }
    crate::durable::write_atomically(dir, TOPICS_FILE, text.as_bytes())
}
