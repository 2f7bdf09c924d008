//! Reading an audit file from its start, one line at a time (never the whole file
//! at once): which of the two files it is, each record decoded to exact bytes, and
//! a last line cut short by a crash told apart from a line that does not parse.

use std::io::{self, BufRead};

use crate::records::{
    parse_timestamp, DeliveryRecord, ParseError, PersistedRecord, LOG_FILE, LOG_HEADER,
    PERSIST_FILE, PERSIST_HEADER,
};

/// Which audit file a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `persistencia_mensajes.txt`: every message, with its key and payload.
    Persistence,
    /// `log_consumo.txt`: every delivery of a message to a consumer.
    ConsumptionLog,
}

impl FileKind {
    /// The file's name in the broker's data directory.
    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Persistence => PERSIST_FILE,
            FileKind::ConsumptionLog => LOG_FILE,
        }
    }

    fn header(self) -> &'static str {
        match self {
            FileKind::Persistence => PERSIST_HEADER,
            FileKind::ConsumptionLog => LOG_HEADER,
        }
    }

    /// The file whose header `comment` (a `#` line) is. Column names are compared,
    /// not the exact spacing, so a header retyped with spaces is recognised too.
    pub fn from_header(comment: &str) -> Option<FileKind> {
        let seen = columns_of(comment);
        [FileKind::Persistence, FileKind::ConsumptionLog]
            .into_iter()
            .find(|kind| columns_of(kind.header()) == seen)
    }

    /// The file whose data lines have `fields` TAB-separated fields.
    pub fn from_field_count(fields: usize) -> Option<FileKind> {
        match fields {
            7 => Some(FileKind::Persistence),
            8 => Some(FileKind::ConsumptionLog),
            _ => None,
        }
    }
}

/// The column names a header comment lists.
fn columns_of(comment: &str) -> Vec<&str> {
    comment.trim_start_matches('#').split_whitespace().collect()
}

/// A decoded data line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecord {
    Persisted(PersistedRecord),
    Delivery(DeliveryRecord),
}

impl AuditRecord {
    pub fn topic(&self) -> &str {
        match self {
            AuditRecord::Persisted(r) => &r.topic,
            AuditRecord::Delivery(r) => &r.topic,
        }
    }

    pub fn partition(&self) -> u32 {
        match self {
            AuditRecord::Persisted(r) => r.partition,
            AuditRecord::Delivery(r) => r.partition,
        }
    }

    pub fn offset(&self) -> u64 {
        match self {
            AuditRecord::Persisted(r) => r.offset,
            AuditRecord::Delivery(r) => r.offset,
        }
    }
}

/// A record and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Its line number, from 1 (comment lines count).
    pub line: u64,
    /// Its timestamp, checked: microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub record: AuditRecord,
}

/// What reading the next line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record(ReadRecord),
    /// The last line has no newline: a writer stopped in the middle of it (a crash;
    /// the broker removes it at its next start), so it is not a record. Nothing
    /// follows it.
    CutLastLine {
        /// Its line number, from 1.
        line: u64,
        /// Where it starts: the length of the file's whole lines.
        at_byte: u64,
    },
}

/// Why a file could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The input could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A line is not UTF-8 text (both files are).
    #[error("line {line} is not UTF-8 text")]
    NotText { line: u64 },
    /// The first data line came before any header, and its field count is neither
    /// file's.
    #[error("line {line} has {fields} TAB-separated fields, and no header says which audit file this is (the persistence file has 7, the consumption log 8)")]
    UnknownKind { line: u64, fields: usize },
    /// A data line does not parse as a line of the file.
    #[error("line {line}: {source}")]
    Malformed { line: u64, source: ParseError },
}

/// Reads an audit file's records in file order. Comment lines (`#`) and empty
/// lines are skipped; the first comment that is a header says which file it is,
/// and without one the first data line's field count does.
#[derive(Debug)]
pub struct AuditReader<R> {
    input: R,
    kind: Option<FileKind>,
    /// Lines read so far: the number of the last one.
    line: u64,
    /// Bytes read so far: where the next line starts.
    at_byte: u64,
    /// The line being read, kept to reuse its allocation.
    text: Vec<u8>,
    /// An I/O error ended the reading: a failing input is not read again.
    failed: bool,
}

impl<R: BufRead> AuditReader<R> {
    pub fn new(input: R) -> Self {
        AuditReader {
            input,
            kind: None,
            line: 0,
            at_byte: 0,
            text: Vec::new(),
            failed: false,
        }
    }

    /// Which file this is, once a header or a data line has said so.
    pub fn kind(&self) -> Option<FileKind> {
        self.kind
    }

    /// The next record, a cut last line, or `None` at the end of the file (or
    /// after an I/O error). After a line that does not parse, the next call reads
    /// on from the line after it.
    pub fn next_item(&mut self) -> Result<Option<Item>, ReadError> {
        loop {
            if self.failed {
                return Ok(None);
            }
            self.text.clear();
            let starts_at = self.at_byte;
            let read = self
                .input
                .read_until(b'\n', &mut self.text)
                .inspect_err(|_| self.failed = true)?;
            if read == 0 {
                return Ok(None);
            }
            self.at_byte += read as u64;
            self.line += 1;
            let line = self.line;
            if self.text.pop() != Some(b'\n') {
                return Ok(Some(Item::CutLastLine {
                    line,
                    at_byte: starts_at,
                }));
            }
            let text = std::str::from_utf8(&self.text).map_err(|_| ReadError::NotText { line })?;
            if text.starts_with('#') {
                if self.kind.is_none() {
                    self.kind = FileKind::from_header(text);
                }
                continue;
            }
            if text.is_empty() {
                continue;
            }
            let kind = match self.kind {
                Some(kind) => kind,
                None => {
                    let fields = text.split('\t').count();
                    let kind = FileKind::from_field_count(fields)
                        .ok_or(ReadError::UnknownKind { line, fields })?;
                    self.kind = Some(kind);
                    kind
                }
            };
            let malformed = |source| ReadError::Malformed { line, source };
            let (record, timestamp) = match kind {
                FileKind::Persistence => {
                    let r = PersistedRecord::parse(text).map_err(malformed)?;
                    let timestamp = parse_timestamp(&r.timestamp);
                    (AuditRecord::Persisted(r), timestamp)
                }
                FileKind::ConsumptionLog => {
                    let r = DeliveryRecord::parse(text).map_err(malformed)?;
                    let timestamp = parse_timestamp(&r.timestamp);
                    (AuditRecord::Delivery(r), timestamp)
                }
            };
            let timestamp_us = timestamp.ok_or(malformed(ParseError::Timestamp))?;
            return Ok(Some(Item::Record(ReadRecord {
                line,
                timestamp_us,
                record,
            })));
        }
    }
}

impl<R: BufRead> Iterator for AuditReader<R> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{push_delivery, push_persisted};
    use proptest::prelude::*;

    fn read_all(bytes: &[u8]) -> (Option<FileKind>, Vec<Result<Item, String>>) {
        let mut reader = AuditReader::new(bytes);
        let mut items = Vec::new();
        loop {
            match reader.next_item() {
                Ok(None) => break,
                Ok(Some(item)) => items.push(Ok(item)),
                Err(e) => {
                    items.push(Err(e.to_string()));
                    break;
                }
            }
        }
        (reader.kind(), items)
    }

    /// A message to write: its offset, key and payload.
    type Message<'a> = (u64, Option<&'a [u8]>, &'a [u8]);

    fn persisted_file(records: &[Message<'_>]) -> Vec<u8> {
        let mut file = PERSIST_HEADER.as_bytes().to_vec();
        for &(offset, key, payload) in records {
            push_persisted(
                &mut file,
                offset,
                1_795_832_687_123_456 + offset,
                "p",
                key,
                payload,
            );
        }
        file
    }

    fn record(item: &Result<Item, String>) -> &ReadRecord {
        match item {
            Ok(Item::Record(r)) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn headers_are_recognised_by_their_columns() {
        assert_eq!(
            FileKind::from_header(PERSIST_HEADER.trim_end()),
            Some(FileKind::Persistence)
        );
        assert_eq!(
            FileKind::from_header(LOG_HEADER),
            Some(FileKind::ConsumptionLog)
        );
        assert_eq!(
            FileKind::from_header(
                "#  timestamp topic partition offset producer group consumer attempt"
            ),
            Some(FileKind::ConsumptionLog)
        );
        assert_eq!(FileKind::from_header("# a note"), None);
        assert_eq!(FileKind::from_header("# topic partition offset"), None);
    }

    #[test]
    fn a_persistence_file_reads_back_exact_bytes_with_line_numbers() {
        let file = persisted_file(&[
            (0, None, b"a\tb\n\\"),
            (1, Some(b"-"), b""),
            (2, Some(b"k"), b"\xff\x00"),
        ]);
        let (kind, items) = read_all(&file);
        assert_eq!(kind, Some(FileKind::Persistence));
        assert_eq!(items.len(), 3);
        let payloads: Vec<_> = items
            .iter()
            .map(|i| match &record(i).record {
                AuditRecord::Persisted(r) => (r.key.clone(), r.payload.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            payloads,
            [
                (None, b"a\tb\n\\".to_vec()),
                (Some(b"-".to_vec()), Vec::new()),
                (Some(b"k".to_vec()), b"\xff\x00".to_vec())
            ]
        );
        assert_eq!(record(&items[0]).line, 2, "the header is line 1");
        assert_eq!(record(&items[2]).timestamp_us, 1_795_832_687_123_458);
        assert_eq!(record(&items[2]).record.offset(), 2);
    }

    #[test]
    fn without_a_header_the_field_count_tells_the_file() {
        let mut log = Vec::new();
        push_delivery(&mut log, 5, 3, "p", "g", "c", 2);
        let (kind, items) = read_all(&log);
        assert_eq!(kind, Some(FileKind::ConsumptionLog));
        match &record(&items[0]).record {
            AuditRecord::Delivery(d) => {
                assert_eq!((d.offset, d.attempt, d.group.as_str()), (3, 2, "g"))
            }
            other => panic!("{other:?}"),
        }
        let persisted = persisted_file(&[(4, None, b"x")]);
        let without_header = &persisted[PERSIST_HEADER.len()..];
        let (kind, items) = read_all(without_header);
        assert_eq!(kind, Some(FileKind::Persistence));
        assert_eq!(record(&items[0]).line, 1);

        let (kind, items) = read_all(b"# notes\na\tb\tc\n");
        assert_eq!(kind, None);
        assert_eq!(
            items,
            [Err("line 2 has 3 TAB-separated fields, and no header says which audit file this is (the persistence file has 7, the consumption log 8)".to_string())]
        );
    }

    #[test]
    fn a_cut_last_line_is_told_apart_and_ends_the_file() {
        let mut file = persisted_file(&[(0, None, b"whole")]);
        let whole = file.len() as u64;
        file.extend_from_slice(b"default\t0\t1\t2026-11-28T02:24:47.1");
        let (_, items) = read_all(&file);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            Ok(Item::CutLastLine {
                line: 3,
                at_byte: whole
            })
        );
        // Even a cut line that would parse is not a record.
        let mut file = persisted_file(&[(0, None, b"whole")]);
        file.pop();
        let (_, items) = read_all(&file);
        assert!(
            matches!(items[..], [Ok(Item::CutLastLine { line: 2, .. })]),
            "{items:?}"
        );
    }

    #[test]
    fn lines_that_do_not_parse_name_their_line() {
        let mut file = persisted_file(&[(0, None, b"ok")]);
        file.extend_from_slice(b"default\t0\tx\t2026-11-28T02:24:47.123456Z\tp\t-\tv\n");
        let (_, items) = read_all(&file);
        assert_eq!(
            items[1],
            Err("line 3: field offset is not a number".to_string())
        );

        let mut file = persisted_file(&[]);
        file.extend_from_slice(b"default\t0\t1\tyesterday\tp\t-\tv\n");
        let (_, items) = read_all(&file);
        assert_eq!(
            items[0],
            Err("line 2: field timestamp is not an RFC 3339 time".to_string())
        );

        let mut file = persisted_file(&[]);
        file.extend_from_slice(b"default\t0\t1\t2026-11-28T02:24:47.123456Z\tp\t-\t\xff\n");
        let (_, items) = read_all(&file);
        assert_eq!(items[0], Err("line 2 is not UTF-8 text".to_string()));

        // A delivery line in the persistence file (eight fields, as a record
        // with headers has: its second field is then not a partition).
        let mut file = persisted_file(&[]);
        push_delivery(&mut file, 5, 3, "p", "g", "c", 2);
        let (_, items) = read_all(&file);
        assert_eq!(
            items[0],
            Err("line 2: field partition is not a number".to_string())
        );
        let mut file = persisted_file(&[]);
        file.extend_from_slice(b"default\t0\t1\t2026-11-28T02:24:47.123456Z\tp\t-\tv\th\tx\n");
        let (_, items) = read_all(&file);
        assert_eq!(
            items[0],
            Err("line 2: expected 7 TAB-separated fields, found 9".to_string())
        );
    }

    #[test]
    fn comments_and_empty_lines_are_skipped() {
        let mut file = persisted_file(&[(0, None, b"a")]);
        file.extend_from_slice(b"\n# a note\n");
        push_persisted(&mut file, 1, 0, "p", None, b"b");
        let (_, items) = read_all(&file);
        assert_eq!(items.len(), 2);
        assert_eq!(record(&items[1]).line, 5);
        let (kind, items) = read_all(b"");
        assert_eq!((kind, items.len()), (None, 0));
    }

    /// Input that fails as a disk can.
    struct FailingInput;

    impl io::Read for FailingInput {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("device error"))
        }
    }

    #[test]
    fn an_input_error_is_reported_once_and_ends_the_reading() {
        let mut reader = AuditReader::new(io::BufReader::new(FailingInput));
        assert!(matches!(reader.next_item(), Err(ReadError::Io(_))));
        assert!(matches!(reader.next_item(), Ok(None)));
        assert_eq!(reader.count(), 0);
    }

    proptest! {
        /// Files near valid ones (the fuzz target `audit_file` goes further): every
        /// line reads as a record or an error naming it, and a record's bytes are
        /// what the broker's formatter writes back.
        #[test]
        fn damaged_files_read_as_records_or_errors(
            records in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
                 proptest::collection::vec(any::<u8>(), 0..20)),
                0..6,
            ),
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(),
                 prop_oneof![Just(b'\t'), Just(b'\n'), Just(b'\\'), Just(b'#'), Just(b'x'), any::<u8>()]),
                0..4,
            ),
            header in any::<bool>(),
        ) {
            let mut file = if header { PERSIST_HEADER.as_bytes().to_vec() } else { Vec::new() };
            for (offset, (key, payload)) in records.iter().enumerate() {
                push_persisted(&mut file, offset as u64, 1_795_832_687_000_000, "p", key.as_deref(), payload);
            }
            for (at, byte) in edits {
                if !file.is_empty() {
                    let i = at.index(file.len());
                    file[i] = byte;
                }
            }
            for item in AuditReader::new(&file[..]) {
                let Ok(Item::Record(read)) = item else { continue };
                let AuditRecord::Persisted(r) = &read.record else { continue };
                let mut line = Vec::new();
                push_persisted(&mut line, r.offset, read.timestamp_us, &r.producer, r.key.as_deref(), &r.payload);
                let again = PersistedRecord::parse(std::str::from_utf8(&line).unwrap()).unwrap();
                prop_assert_eq!((&again.key, &again.payload), (&r.key, &r.payload));
            }
        }
    }
}
