//! `broker decode`: the records of an audit file, of one topic-partition (and one
//! offset, if asked), as JSON Lines or as the exact payload bytes. The file is read
//! a line at a time, so a file of any size takes little memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;

use audit_format::json::{push_logged_delivery, push_message, LoggedDelivery, MessageFields};
use audit_format::reader::{AuditReader, AuditRecord, FileKind, Item, ReadError, ReadRecord};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodeFormat {
    /// One JSON object per record, as `consumer --format json` prints a message.
    Json,
    /// The payload's exact bytes (persistence file only).
    Raw,
}

/// What to decode, and how (validated by `DecodeArgs::validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    pub file: PathBuf,
    pub topic: String,
    pub partition: u32,
    /// Only this offset; it must be in the file.
    pub offset: Option<u64>,
    pub format: DecodeFormat,
    /// Each raw payload is followed by a NUL byte.
    pub nul_separated: bool,
}

/// Why decoding stopped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: io::Error },
    /// The file could not be read to its end, or a line of it does not parse.
    #[error("{path}: {source}")]
    Read { path: String, source: ReadError },
    /// `--format raw` asked of the consumption log, which holds no payloads (a
    /// usage error).
    #[error("--format raw prints payloads, and {path} is a consumption log, which has none (use --format json)")]
    RawWithoutPayloads { path: String },
    /// `--offset` matched no record of the topic-partition.
    #[error("offset {offset} is not in {path}")]
    OffsetNotFound { offset: u64, path: String },
    /// Standard output could not be written.
    #[error("cannot write to stdout: {0}")]
    Write(io::Error),
}

impl DecodeError {
    /// Whether the command line asked for something the file cannot give (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, DecodeError::RawWithoutPayloads { .. })
    }

    /// Whether the reader of stdout went away (`broker decode FILE | head`): an
    /// ending, not a failure to report.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, DecodeError::Write(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Bytes read from the file at a time.
const READ_BUFFER: usize = 256 * 1024;

/// Decodes `options.file` to `out`, which is flushed before this returns (so on an
/// error, what came before the failing line is out). `warn` is told of a cut last
/// line, which is skipped.
pub fn decode_file(
    options: &DecodeOptions,
    out: &mut impl Write,
    warn: &mut impl FnMut(&str),
) -> Result<(), DecodeError> {
    let path = options.file.display().to_string();
    let file = File::open(&options.file).map_err(|source| DecodeError::Open {
        path: path.clone(),
        source,
    })?;
    let input = BufReader::with_capacity(READ_BUFFER, file);
    let decoded = decode(input, &path, options, out, warn);
    let flushed = out.flush().map_err(DecodeError::Write);
    decoded.and(flushed)
}

/// Decodes the audit file `input` (named `path` in errors) to `out`.
pub fn decode(
    input: impl BufRead,
    path: &str,
    options: &DecodeOptions,
    out: &mut impl Write,
    warn: &mut impl FnMut(&str),
) -> Result<(), DecodeError> {
    let mut reader = AuditReader::new(input);
    let mut found = false;
    let mut line = Vec::new();
    loop {
        let item = reader.next_item();
        // Known from the header (or the first record), before anything is written.
        if options.format == DecodeFormat::Raw && reader.kind() == Some(FileKind::ConsumptionLog) {
            return Err(DecodeError::RawWithoutPayloads { path: path.into() });
        }
        let read = match item {
            Ok(Some(Item::Record(read))) => read,
            Ok(Some(Item::CutLastLine { at_byte, .. })) => {
                warn(&format!("skipped a cut last line at byte {at_byte}"));
                continue;
            }
            Ok(None) => break,
            Err(source) => {
                return Err(DecodeError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let record = &read.record;
        if record.topic() != options.topic
            || record.partition() != options.partition
            || options.offset.is_some_and(|o| o != record.offset())
        {
            continue;
        }
        found = true;
        line.clear();
        render(&read, options, &mut line);
        out.write_all(&line).map_err(DecodeError::Write)?;
        // The persistence file holds each offset once; the log may hold several
        // deliveries of it.
        if options.offset.is_some() && matches!(record, AuditRecord::Persisted(_)) {
            break;
        }
    }
    match options.offset {
        Some(offset) if !found => Err(DecodeError::OffsetNotFound {
            offset,
            path: path.into(),
        }),
        _ => Ok(()),
    }
}

/// Appends what `options.format` prints for one record.
fn render(read: &ReadRecord, options: &DecodeOptions, line: &mut Vec<u8>) {
    match (&read.record, options.format) {
        (AuditRecord::Persisted(r), DecodeFormat::Json) => {
            let message = MessageFields::of_persisted(r, read.timestamp_us);
            push_message(line, &message, None);
        }
        (AuditRecord::Persisted(r), DecodeFormat::Raw) => {
            line.extend_from_slice(&r.payload);
            if options.nul_separated {
                line.push(0);
            }
        }
        (AuditRecord::Delivery(d), _) => {
            let delivery = LoggedDelivery {
                timestamp_us: read.timestamp_us,
                topic: &d.topic,
                partition: d.partition,
                offset: d.offset,
                producer: &d.producer,
                // `-`: a reader that belongs to no group (no group can be named `-`).
                group: Some(d.group.as_str()).filter(|g| *g != "-"),
                consumer: &d.consumer,
                attempt: d.attempt,
            };
            push_logged_delivery(line, &delivery);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_format::records::{push_delivery, push_persisted, LOG_HEADER, PERSIST_HEADER};

    fn options(format: DecodeFormat) -> DecodeOptions {
        DecodeOptions {
            file: PathBuf::from("f.txt"),
            topic: "default".into(),
            partition: 0,
            offset: None,
            format,
            nul_separated: false,
        }
    }

    /// Decodes `file`: what was written, the warnings, and the error as its line.
    fn run(file: &[u8], options: &DecodeOptions) -> (Vec<u8>, Vec<String>, Result<(), String>) {
        let (mut out, mut warnings) = (Vec::new(), Vec::new());
        let result = decode(file, "f.txt", options, &mut out, &mut |w: &str| {
            warnings.push(w.to_string())
        });
        (out, warnings, result.map_err(|e| e.to_string()))
    }

    const T0: u64 = 1_795_832_687_123_456;

    /// A persistence file of the default topic with offsets 0..3, a line of topic
    /// `orders` partition 1 among them.
    fn persistence_file() -> Vec<u8> {
        let mut file = PERSIST_HEADER.as_bytes().to_vec();
        push_persisted(&mut file, 0, T0, "p", None, b"zero");
        file.extend_from_slice(b"orders\t1\t0\t2026-11-28T02:24:47.123456Z\tq\t-\tother\n");
        push_persisted(&mut file, 1, T0 + 1, "p", Some(b"k\t"), b"\x00\xff");
        push_persisted(&mut file, 2, T0 + 2, "p", None, b"");
        file
    }

    #[test]
    fn json_lines_of_the_default_partition() {
        let (out, warnings, result) = run(&persistence_file(), &options(DecodeFormat::Json));
        assert_eq!(result, Ok(()));
        assert!(warnings.is_empty());
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(
            lines[0],
            "{\"topic\":\"default\",\"partition\":0,\"offset\":0,\"producer\":\"p\",\"key\":null,\
             \"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"payload\":\"zero\"}"
        );
        assert!(lines[1].contains("\"key\":\"k\\t\""), "{}", lines[1]);
        assert!(
            lines[1].contains("\"payload_base64\":\"AP8=\""),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with("\"payload\":\"\"}"), "{}", lines[2]);
    }

    #[test]
    fn topic_and_partition_select_records() {
        let mut o = options(DecodeFormat::Raw);
        o.nul_separated = true;
        let (out, _, result) = run(&persistence_file(), &o);
        assert_eq!(result, Ok(()));
        assert_eq!(out, b"zero\0\x00\xff\0\0");
        o.topic = "orders".into();
        let (out, _, _) = run(&persistence_file(), &o);
        assert_eq!(out, b"", "orders has no partition 0");
        o.partition = 1;
        let (out, _, _) = run(&persistence_file(), &o);
        assert_eq!(out, b"other\0");
    }

    #[test]
    fn one_offset_raw_is_the_payload_alone() {
        let mut o = options(DecodeFormat::Raw);
        o.offset = Some(1);
        let (out, _, result) = run(&persistence_file(), &o);
        assert_eq!((out, result), (b"\x00\xff".to_vec(), Ok(())));
        o.offset = Some(3);
        let (out, _, result) = run(&persistence_file(), &o);
        assert_eq!(
            (out, result),
            (Vec::new(), Err("offset 3 is not in f.txt".to_string()))
        );
    }

    #[test]
    fn the_log_decodes_to_json_and_refuses_raw() {
        let mut file = LOG_HEADER.as_bytes().to_vec();
        push_delivery(&mut file, T0, 4, "p", "g", "c", 1);
        push_delivery(&mut file, T0 + 9, 4, "p", "-", "reader-1", 2);
        push_delivery(&mut file, T0 + 9, 5, "p", "g", "c", 1);
        let mut o = options(DecodeFormat::Json);
        o.offset = Some(4);
        let (out, _, result) = run(&file, &o);
        assert_eq!(result, Ok(()));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"timestamp\":\"2026-11-28T02:24:47.123456Z\",\"topic\":\"default\",\"partition\":0,\
             \"offset\":4,\"producer\":\"p\",\"group\":\"g\",\"consumer\":\"c\",\"attempt\":1}\n\
             {\"timestamp\":\"2026-11-28T02:24:47.123465Z\",\"topic\":\"default\",\"partition\":0,\
             \"offset\":4,\"producer\":\"p\",\"group\":null,\"consumer\":\"reader-1\",\"attempt\":2}\n"
        );
        let mut o = options(DecodeFormat::Raw);
        o.nul_separated = true;
        let (out, _, result) = run(&file, &o);
        assert!(out.is_empty());
        assert!(result.unwrap_err().contains("is a consumption log"));
        // Even with no record to print.
        let (_, _, result) = run(LOG_HEADER.as_bytes(), &o);
        assert!(result.is_err());
    }

    #[test]
    fn a_cut_last_line_is_skipped_with_a_warning() {
        let mut file = persistence_file();
        let whole = file.len();
        file.extend_from_slice(b"default\t0\t3\t2026-11-2");
        let (out, warnings, result) = run(&file, &options(DecodeFormat::Json));
        assert_eq!(result, Ok(()));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
        assert_eq!(
            warnings,
            [format!("skipped a cut last line at byte {whole}")]
        );
    }

    #[test]
    fn a_line_that_does_not_parse_stops_after_what_came_before() {
        let mut file = PERSIST_HEADER.as_bytes().to_vec();
        push_persisted(&mut file, 0, T0, "p", None, b"zero");
        file.extend_from_slice(b"default\t0\t1\tnot a record\n");
        push_persisted(&mut file, 2, T0, "p", None, b"two");
        let mut o = options(DecodeFormat::Raw);
        o.nul_separated = true;
        let (out, _, result) = run(&file, &o);
        assert_eq!(out, b"zero\0");
        assert_eq!(
            result,
            Err("f.txt: line 3: expected 7 TAB-separated fields, found 4".to_string())
        );
    }

    /// Output that fails as a closed pipe does.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_output_ends_decoding_as_such() {
        let file = persistence_file();
        let err = decode(
            &file[..],
            "f.txt",
            &options(DecodeFormat::Json),
            &mut ClosedPipe,
            &mut |_: &str| {},
        )
        .unwrap_err();
        assert!(err.is_closed_output() && !err.is_usage(), "{err}");
    }
}
