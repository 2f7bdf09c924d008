//! The persistence file read as the log of one topic-partition (SPEC §10): from any
//! offset, through the partition's sparse index, record by record with exact
//! bytes, and on as the file grows.
//!
//! A seek starts at the index's last entry at or below the offset and reads
//! forward to the offset's record: at most one step of the index (S bytes) plus
//! that record, when the index is up to date (an offset in a gap of the
//! partition's offsets included: a reader S bytes past its entry goes straight to
//! the next entry, the only place a record of the partition can be after that).
//! An offset past the partition's last record is read on to the end of the file
//! from the last entry. Records of other partitions and
//! topics in the same file are passed over. At the end of the file the reader
//! returns "no record yet", and a later call sees lines appended since; a line
//! without its newline yet (being written, or cut by a crash) is never returned
//! until its newline is there.

use std::path::{Path, PathBuf};

use crate::file_lines::{FileLines, LineAt};
use crate::index::scan::check_entry;
use crate::index::{IndexEntry, IndexError, SparseIndex, TopicPartition, DEFAULT_STEP};
use crate::records::{ParseError, PersistedLineHead, PersistedRecord, PERSIST_FILE};

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where its line starts in the persistence file.
    pub position: u64,
    /// Its publish time, checked: microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Its fields, key and payload as the exact bytes sent.
    pub record: PersistedRecord,
}

/// Why reading the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The persistence file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The index cannot be used (rebuild it, or build one by a scan), or could not
    /// be read.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The offset asked for is below the partition's first record in the file.
    #[error(
        "offset {offset} of {partition} is not in {path}: its first record there is offset {first}"
    )]
    BeforeFirst {
        path: PathBuf,
        partition: String,
        offset: u64,
        first: u64,
    },
    /// A line of the partition is not UTF-8 text. The next read goes on after it.
    #[error("{path}: the line at byte {position} is not UTF-8 text")]
    NotText { path: PathBuf, position: u64 },
    /// A line of the partition does not parse. The next read goes on after it.
    #[error("{path}: the line at byte {position}: {source}")]
    Malformed {
        path: PathBuf,
        position: u64,
        source: ParseError,
    },
    /// A line has no newline within the reader's line-length limit.
    #[error("{path}: the line at byte {position} is longer than {limit} bytes")]
    LineTooLong {
        path: PathBuf,
        position: u64,
        limit: usize,
    },
    /// The file is now shorter than where the reader is: it was cut or replaced.
    #[error("{path} is {len} bytes, shorter than where this reader is (byte {position}): the file was cut or replaced")]
    FileShrank {
        path: PathBuf,
        position: u64,
        len: u64,
    },
}

/// Reads one topic-partition's records from the persistence file.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    lines: FileLines,
    max_line: usize,
    index: SparseIndex,
    /// The topic field of the partition's lines, as written.
    topic_field: Vec<u8>,
    /// Where the next line to look at starts.
    next_at: u64,
    /// The lowest offset the next record returned may have.
    next_offset: u64,
    /// Bytes of lines moved past since the last seek.
    scanned: u64,
    /// Until the first record after a seek: where the reader may jump.
    jump: Option<Jump>,
}

/// The step rule places a record line of the partition more than S bytes after an
/// entry only at the next entry: a reader that started from an entry and went S
/// bytes without finding its record goes straight to the next entry (an offset in
/// a gap of the partition's offsets would otherwise read on to it).
#[derive(Debug, Clone, Copy)]
struct Jump {
    /// The entry's position plus S: no line of the partition but the next entry's
    /// starts at or after it before the next entry.
    window_end: u64,
    /// The next entry, and its number.
    to: IndexEntry,
    number: usize,
}

/// The offset after the last record of the partition `index` indexes in the
/// persistence file (0 if it has none), from an index that covers the whole file
/// (as the broker's index writer leaves it when it opens). The step rule puts an
/// entry at any record line S bytes or more past the partition's last entry, so
/// only lines starting less than S bytes after that entry are read: however much
/// of the file other partitions wrote since, this reads about S bytes.
pub fn partition_end(index: &SparseIndex) -> Result<u64, LogError> {
    let Some(last) = index.entries().last().copied() else {
        return Ok(0);
    };
    let path = index.data_dir().join(PERSIST_FILE);
    let io = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let mut lines = FileLines::new(std::fs::File::open(&path).map_err(io)?);
    let topic_field = index.partition().topic_field();
    let partition = index.partition().partition;
    let window_end = last.position.saturating_add(index.step());
    let mut end = last.offset + 1;
    let mut position = last.position;
    while position < window_end {
        let line = match lines.line_at(position).map_err(io)? {
            LineAt::Whole(line) => line,
            LineAt::Incomplete | LineAt::TooLong => break,
        };
        if let Ok(head) = PersistedLineHead::parse(line) {
            if head.topic == topic_field && head.partition == partition {
                end = end.max(head.offset + 1);
            }
        }
        position += line.len() as u64;
    }
    Ok(end)
}

impl LogReader {
    /// A reader of the partition `index` indexes, in the persistence file of the
    /// data directory it indexes, positioned at the partition's first record.
    pub fn open(index: SparseIndex) -> Result<LogReader, LogError> {
        let path = index.data_dir().join(PERSIST_FILE);
        let file = std::fs::File::open(&path).map_err(|source| LogError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(LogReader {
            path,
            lines: FileLines::new(file),
            max_line: crate::file_lines::DEFAULT_MAX_LINE,
            topic_field: index.partition().topic_field(),
            next_at: index.scan_from(),
            next_offset: index.first().map_or(0, |e| e.offset),
            scanned: 0,
            jump: None,
            index,
        })
    }

    /// A reader of `partition` in `data_dir`'s persistence file, through its index;
    /// through an index built by one scan of the file when the one on disk cannot be
    /// used (missing, stale or damaged: the broker rebuilds it at its next start).
    pub fn open_in(data_dir: &Path, partition: &TopicPartition) -> Result<LogReader, LogError> {
        let index = match SparseIndex::open(data_dir, partition) {
            Ok(index) => index,
            Err(_) => SparseIndex::from_scan(data_dir, partition, DEFAULT_STEP)?,
        };
        LogReader::open(index)
    }

    /// Lines longer than `max_line` bytes are errors rather than records (the
    /// default is [`crate::file_lines::DEFAULT_MAX_LINE`]).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(1);
        self.lines.set_max_line(self.max_line);
    }

    /// Positions the reader at `offset`: the next record returned is the first of
    /// the partition at or after it. Past the end of the partition, nothing is
    /// returned until it appears. Below the partition's first record in the file,
    /// an error. The entry the reading starts from is checked first: a wrong one
    /// is an [`IndexError::NeedsRebuild`].
    pub fn seek(&mut self, offset: u64) -> Result<(), LogError> {
        if self
            .index
            .entries()
            .last()
            .is_none_or(|last| offset > last.offset)
        {
            // The writer may have appended entries closer to it.
            self.index.refresh()?;
        }
        if let Some(first) = self.index.first().filter(|first| offset < first.offset) {
            return Err(LogError::BeforeFirst {
                path: self.path.clone(),
                partition: self.index.partition().to_string(),
                offset,
                first: first.offset,
            });
        }
        let floor = self.index.floor(offset);
        let start = match floor {
            Some((number, entry)) => {
                self.check_entry(entry, number)?;
                entry.position
            }
            None => self.index.scan_from(),
        };
        self.jump = floor.and_then(|(number, entry)| {
            let next = self.index.entries().get(number + 1)?;
            Some(Jump {
                window_end: entry.position.saturating_add(self.index.step()),
                to: *next,
                number: number + 1,
            })
        });
        self.next_at = start;
        self.next_offset = offset;
        self.scanned = 0;
        Ok(())
    }

    /// Checks that an entry about to be used is its record's line.
    fn check_entry(&mut self, entry: IndexEntry, number: usize) -> Result<(), LogError> {
        let partition = self.index.partition().partition;
        let checked = check_entry(&mut self.lines, &self.topic_field, partition, entry, number)
            .map_err(|source| LogError::Io {
                path: self.path.clone(),
                source,
            })?;
        checked.map_err(|problem| {
            IndexError::NeedsRebuild {
                path: self.index.path().to_path_buf(),
                problem,
            }
            .into()
        })
    }

    /// The first offset of the partition published at or after `time_us` (µs
    /// since the Unix epoch), if the file has one. Publish times follow offsets
    /// (each is taken as its message is committed), so the index is searched by
    /// halves, reading the record at each entry looked at, then the file read on
    /// from the last entry before the time: about a step of the file at most.
    pub fn first_at_or_after(&mut self, time_us: u64) -> Result<Option<u64>, LogError> {
        let entries = self.index.entries().to_vec();
        let (mut lo, mut hi) = (0usize, entries.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let older = match self.seek(entries[mid].offset) {
                Ok(()) => self
                    .next_record()?
                    .is_some_and(|r| r.timestamp_us < time_us),
                Err(LogError::BeforeFirst { .. }) => true,
                Err(e) => return Err(e),
            };
            if older {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(from) = lo.checked_sub(1).or((!entries.is_empty()).then_some(0)) else {
            return Ok(None);
        };
        self.seek(entries[from].offset)?;
        while let Some(r) = self.next_record()? {
            if r.timestamp_us >= time_us {
                return Ok(Some(r.record.offset));
            }
        }
        Ok(None)
    }

    /// The offset of the partition's first record in the file, if it has one:
    /// the index's first entry (read again from disk: the writer may have
    /// appended since it was opened), else the first record of the partition in
    /// the file's tail that no entry covers yet. Leaves the reader at that record.
    pub fn first_offset(&mut self) -> Result<Option<u64>, LogError> {
        match self.seek(0) {
            Err(LogError::BeforeFirst { first, .. }) => {
                self.seek(first)?;
                return Ok(Some(first));
            }
            other => other?,
        }
        let first = self.next_record()?.map(|r| r.record.offset);
        self.seek(first.unwrap_or(0))?;
        Ok(first)
    }

    /// The next record of the partition, or None when the file holds no more yet.
    pub fn next_record(&mut self) -> Result<Option<LogRecord>, LogError> {
        let parsed = self.next_line(|line| {
            let text = std::str::from_utf8(line).map_err(|_| None)?;
            let record = PersistedRecord::parse(text).map_err(Some)?;
            Ok((record.timestamp_us().map_err(Some)?, record))
        })?;
        Ok(parsed.map(|(position, (timestamp_us, record))| LogRecord {
            position,
            timestamp_us,
            record,
        }))
    }

    /// The offset and producer of the next record of the partition, or None when
    /// the file holds no more yet: for naming a record's producer, without reading
    /// its payload.
    pub fn next_producer(&mut self) -> Result<Option<(u64, String)>, LogError> {
        Ok(self
            .next_line(|line| PersistedRecord::parse_producer(line).map_err(Some))?
            .map(|(_, found)| found))
    }

    /// The next line of the partition, read by `parse`, with where it starts; the
    /// reader moves past it. `parse` fails with `None` for a line that is not text.
    fn next_line<T>(
        &mut self,
        parse: impl FnOnce(&[u8]) -> Result<T, Option<ParseError>>,
    ) -> Result<Option<(u64, T)>, LogError> {
        let partition = self.index.partition().partition;
        loop {
            let position = self.next_at;
            let line = match self.lines.line_at(position) {
                Ok(LineAt::Whole(line)) => line,
                Ok(LineAt::Incomplete) => {
                    self.nothing_yet()?;
                    return Ok(None);
                }
                Ok(LineAt::TooLong) => {
                    return Err(LogError::LineTooLong {
                        path: self.path.clone(),
                        position,
                        limit: self.max_line,
                    })
                }
                Err(source) => {
                    return Err(LogError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            let len = line.len() as u64;
            let wanted = PersistedLineHead::parse(line)
                .ok()
                .filter(|head| {
                    head.topic == self.topic_field
                        && head.partition == partition
                        && head.offset >= self.next_offset
                })
                .map(|head| head.offset);
            let Some(offset) = wanted else {
                match self.jump {
                    // Past the window, only the next entry's line can be the record.
                    Some(jump)
                        if position + len > jump.window_end && jump.to.position > position =>
                    {
                        self.jump = None;
                        self.check_entry(jump.to, jump.number)?;
                        self.next_at = jump.to.position;
                    }
                    _ => {
                        self.next_at += len;
                        self.scanned += len;
                    }
                }
                continue;
            };
            let parsed = parse(line);
            self.next_at += len;
            self.scanned += len;
            self.jump = None;
            self.next_offset = offset + 1;
            return match parsed {
                Ok(value) => Ok(Some((position, value))),
                Err(None) => Err(LogError::NotText {
                    path: self.path.clone(),
                    position,
                }),
                Err(Some(source)) => Err(LogError::Malformed {
                    path: self.path.clone(),
                    position,
                    source,
                }),
            };
        }
    }

    /// At the end of the whole lines: nothing yet, unless the file is now shorter
    /// than where the reader is.
    fn nothing_yet(&self) -> Result<(), LogError> {
        let len = self
            .lines
            .file()
            .metadata()
            .map_err(|source| LogError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        if len < self.next_at {
            return Err(LogError::FileShrank {
                path: self.path.clone(),
                position: self.next_at,
                len,
            });
        }
        Ok(())
    }

    /// The lowest offset the next record returned may have: the offset sought, or
    /// the one after the last record returned.
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// Where in the persistence file the reader looks next.
    pub fn byte_position(&self) -> u64 {
        self.next_at
    }

    /// Bytes of lines the reader has moved past since the last seek (or since it
    /// was opened), records returned included.
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    pub fn index(&self) -> &SparseIndex {
        &self.index
    }
}
