//! Reading the persistence file for the index: its record lines in order, its first
//! record line, and the checks that an index file, an entry and the checkpoint
//! belong to it. Lines are placed by [`PersistedLineHead`], the line format's own
//! parser of a line's first fields.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::file_lines::{FileLines, LineAt};
use crate::index::format::{
    index_file_name, Anchor, Checkpoint, IndexEntry, IndexHeader, CHECKPOINT_FILE,
};
use crate::index::{IndexError, IndexProblem, TopicPartition};
use crate::records::{PersistedLineHead, PERSIST_FILE};

/// The persistence file of `data_dir`, opened for reading lines.
pub(crate) fn open_persistence(data_dir: &Path) -> Result<(PathBuf, FileLines), IndexError> {
    let path = data_dir.join(PERSIST_FILE);
    let file = File::open(&path).map_err(IndexError::io(&path))?;
    Ok((path, FileLines::new(file)))
}

/// Calls `visit` with the position, bytes and head of each record line of the file
/// that is whole, from byte `from` (a line start) on; other lines (the header,
/// comments, lines that are not records) are passed over. Returns where the whole
/// lines end: the position of a cut last line, or the file's length.
pub(crate) fn scan_record_lines(
    lines: &mut FileLines,
    from: u64,
    mut visit: impl FnMut(u64, &[u8], &PersistedLineHead<'_>),
) -> io::Result<u64> {
    let mut at = from;
    loop {
        let line = match lines.line_at(at)? {
            LineAt::Whole(line) => line,
            LineAt::Incomplete => return Ok(at),
            LineAt::TooLong => return Err(too_long(at)),
        };
        if let Ok(head) = PersistedLineHead::parse(line) {
            visit(at, line, &head);
        }
        at += line.len() as u64;
    }
}

fn too_long(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the line at byte {at} has no newline within the line-length limit"),
    )
}

/// The file's first record line, if one starts before byte `before`.
pub(crate) fn first_record_line(lines: &mut FileLines, before: u64) -> io::Result<Option<Anchor>> {
    let mut at = 0;
    while at < before {
        let line = match lines.line_at(at)? {
            LineAt::Whole(line) => line,
            LineAt::Incomplete => return Ok(None),
            LineAt::TooLong => return Err(too_long(at)),
        };
        if PersistedLineHead::parse(line).is_ok() {
            return Ok(Some(Anchor::of_line(at, line)));
        }
        at += line.len() as u64;
    }
    Ok(None)
}

/// Whether `entry` (number `number` of its index) is right: a line of `partition`
/// with the entry's offset starts at the entry's position (just after a newline),
/// whole in the file.
pub(crate) fn check_entry(
    lines: &mut FileLines,
    topic_field: &[u8],
    partition: u32,
    entry: IndexEntry,
    number: usize,
) -> io::Result<Result<(), IndexProblem>> {
    let past_end = IndexProblem::EntryPastEnd {
        entry: number,
        position: entry.position,
    };
    let mismatch = IndexProblem::EntryMismatch {
        entry: number,
        offset: entry.offset,
        position: entry.position,
    };
    if let Some(before) = entry.position.checked_sub(1) {
        // The line from the byte before is just a newline exactly when the entry's
        // position starts a line.
        match lines.line_at(before)? {
            LineAt::Whole(b"\n") => {}
            LineAt::Incomplete => return Ok(Err(past_end)),
            _ => return Ok(Err(mismatch)),
        }
    }
    Ok(match lines.line_at(entry.position)? {
        LineAt::Whole(line) => match PersistedLineHead::parse(line) {
            Ok(head)
                if head.topic == topic_field
                    && head.partition == partition
                    && head.offset == entry.offset =>
            {
                Ok(())
            }
            _ => Err(mismatch),
        },
        LineAt::Incomplete => Err(past_end),
        LineAt::TooLong => Err(mismatch),
    })
}

/// Reads the checkpoint of `data_dir` and checks it against the persistence file
/// (`lines`); the file comes opened for writing too with `writable`.
pub(crate) fn load_checkpoint(
    data_dir: &Path,
    lines: &mut FileLines,
    writable: bool,
) -> Result<(Checkpoint, File), IndexError> {
    let path = data_dir.join(CHECKPOINT_FILE);
    let (file, bytes) = read_whole(&path, writable, false)?;
    let checkpoint = Checkpoint::from_bytes(&bytes).map_err(|p| IndexError::rebuild(&path, p))?;
    let file_len = lines
        .file()
        .metadata()
        .map_err(IndexError::io(data_dir.join(PERSIST_FILE)))?
        .len();
    if checkpoint.through > file_len {
        return Err(IndexError::rebuild(
            &path,
            IndexProblem::CheckpointPastEnd {
                through: checkpoint.through,
                file_len,
            },
        ));
    }
    // With an anchor, the file's first record line must be it; without, the file
    // must have no record line before `through`.
    let before = match checkpoint.anchor {
        Some(anchor) => anchor.position.saturating_add(1),
        None => checkpoint.through,
    };
    let first =
        first_record_line(lines, before).map_err(IndexError::io(data_dir.join(PERSIST_FILE)))?;
    if first != checkpoint.anchor {
        return Err(IndexError::rebuild(&path, IndexProblem::OtherFile));
    }
    Ok((checkpoint, file))
}

/// An index file, read and checked: its handle (positioned at its end), entries and
/// length.
pub(crate) struct LoadedIndex {
    pub path: PathBuf,
    pub file: File,
    pub step: u64,
    pub entries: Vec<IndexEntry>,
    pub len: u64,
}

/// Reads `partition`'s index in `data_dir` and checks it: its header is the
/// partition's (with step `step`), its entries increase, and its first and last
/// entries are their records' lines in the persistence file (`lines`). With
/// `appendable` the file comes opened for appending.
pub(crate) fn load_index(
    data_dir: &Path,
    partition: &TopicPartition,
    step: u64,
    lines: &mut FileLines,
    appendable: bool,
) -> Result<LoadedIndex, IndexError> {
    let path = data_dir.join(index_file_name(partition.topic_id, partition.partition));
    let (file, bytes) = read_whole(&path, false, appendable)?;
    let needs_rebuild = |problem| IndexError::rebuild(&path, problem);
    let (header, entries) = IndexHeader::decode_file(&bytes).map_err(needs_rebuild)?;
    if (header.topic_id, header.partition) != (partition.topic_id, partition.partition) {
        return Err(needs_rebuild(IndexProblem::OtherPartition {
            topic_id: header.topic_id,
            partition: header.partition,
        }));
    }
    if header.step != step {
        return Err(needs_rebuild(IndexProblem::Step {
            found: header.step,
            expected: step,
        }));
    }
    let field = partition.topic_field();
    let ends = [
        (0, entries.first()),
        (entries.len().saturating_sub(1), entries.last()),
    ];
    for (number, entry) in ends {
        let Some(&entry) = entry else { continue };
        check_entry(lines, &field, partition.partition, entry, number)
            .map_err(IndexError::io(data_dir.join(PERSIST_FILE)))?
            .map_err(needs_rebuild)?;
    }
    Ok(LoadedIndex {
        step: header.step,
        len: bytes.len() as u64,
        path,
        file,
        entries,
    })
}

/// Opens `path` (for writing in place, or for appending, if asked) and reads it
/// whole. A missing file is a [`IndexProblem::Missing`].
fn read_whole(
    path: &Path,
    writable: bool,
    appendable: bool,
) -> Result<(File, Vec<u8>), IndexError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(writable)
        .append(appendable)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => IndexError::rebuild(path, IndexProblem::Missing),
            _ => IndexError::io(path)(e),
        })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(IndexError::io(path))?;
    Ok((file, bytes))
}
