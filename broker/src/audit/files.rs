//! Opening the audit files: created with their header, appended to across runs, a
//! last line cut short by a crash removed; and reading them backwards from the end,
//! for the last persisted offset and for the last deliveries logged.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::Path;

use audit_format::records::{DeliveryRecord, PersistedRecord, PARTITION, TOPIC};

/// Opens `path` for appending; creates it with `header` if new; removes a trailing
/// partial line (no final newline). Returns the file and the bytes removed.
pub fn open_append(path: &Path, header: &str) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        file.write_all(header.as_bytes())?;
        return Ok((file, 0));
    }
    let keep = end_of_last_full_line(&mut file, len)?;
    if keep < len {
        file.set_len(keep)?;
    }
    Ok((file, len - keep))
}

/// Length of the file up to and including its last newline.
fn end_of_last_full_line(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The end of a persistence file: its last record, and the lines after it that are
/// not records (written there by something else).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistedTail {
    /// The offset of the last record, if any.
    pub last: Option<u64>,
    /// Lines after it that are neither records nor `#` comments, last first.
    pub foreign: Vec<String>,
}

/// Finds the last record of `default`/0 in a persistence file, reading backwards
/// from its end over lines that are not records (and, when no index says where
/// it is, over other partitions' records).
pub fn persisted_tail(path: &Path) -> io::Result<PersistedTail> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistedTail::default()),
        Err(e) => return Err(e),
    };
    let mut tail = PersistedTail::default();
    // Lines after the file's last record are reported; those between records
    // of other partitions are not the file's end.
    let mut seen_record = false;
    for_each_line_backwards(&mut file, 0, |line| {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        if text.is_empty() || text.starts_with('#') {
            return ControlFlow::Continue(());
        }
        match PersistedRecord::parse(text) {
            Ok(r) if r.topic == TOPIC && r.partition == PARTITION => {
                tail.last = Some(r.offset);
                ControlFlow::Break(())
            }
            Ok(_) => {
                seen_record = true;
                ControlFlow::Continue(())
            }
            Err(_) if !seen_record => {
                tail.foreign.push(text.to_string());
                ControlFlow::Continue(())
            }
            Err(_) => ControlFlow::Continue(()),
        }
    })?;
    Ok(tail)
}

/// How [`read_log_backwards`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTailEnd {
    /// The visitor had what it needed.
    Stopped,
    /// Every line from the starting byte on was read.
    ReachedStart,
    /// `max_lines` lines were read first.
    OutOfLines,
}

/// Reads the consumption log `file` backwards, from its end down to byte `from` (a
/// line boundary: no line beginning before it is read), and hands each delivery
/// line of topic-partition `of` to `visit`, last line first, until `visit` breaks
/// or `max_lines` lines have been read. Other topic-partitions' lines are passed
/// over and not counted; comments and lines that do not parse are skipped (and
/// counted).
pub fn read_log_backwards(
    file: &mut File,
    from: u64,
    of: (&str, u32),
    max_lines: u64,
    mut visit: impl FnMut(DeliveryRecord) -> ControlFlow<()>,
) -> io::Result<LogTailEnd> {
    let mut read = 0u64;
    let mut end = LogTailEnd::ReachedStart;
    for_each_line_backwards(file, from, |line| {
        if read == max_lines {
            end = LogTailEnd::OutOfLines;
            return ControlFlow::Break(());
        }
        let record = std::str::from_utf8(line)
            .ok()
            .filter(|l| !l.starts_with('#'))
            .and_then(|l| DeliveryRecord::parse(l).ok());
        if record
            .as_ref()
            .is_some_and(|r| (r.topic.as_str(), r.partition) != of)
        {
            return ControlFlow::Continue(());
        }
        read += 1;
        match record.map(&mut visit) {
            Some(ControlFlow::Break(())) => {
                end = LogTailEnd::Stopped;
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    })?;
    Ok(end)
}

/// Hands the lines of `file` from its end back to byte `from` to `visit`, last line
/// first and without their newlines, until `visit` breaks. `from` must be where a
/// line begins. A line may be longer than one chunk of the reads.
fn for_each_line_backwards(
    file: &mut File,
    from: u64,
    mut visit: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut end = file.metadata()?.len();
    let from = from.min(end);
    // The bytes from `end` on not yet handed to `visit`: whole lines, after a line
    // whose beginning is not read yet (unless `end == from`).
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut body = tail.len() - usize::from(tail.last() == Some(&b'\n'));
        while let Some(i) = tail[..body].iter().rposition(|&b| b == b'\n') {
            if visit(&tail[i + 1..body]).is_break() {
                return Ok(());
            }
            tail.truncate(i + 1);
            body = i;
        }
        if end == from {
            if body > 0 {
                let _ = visit(&tail[..body]);
            }
            return Ok(());
        }
        let start = end.saturating_sub(chunk.len() as u64).max(from);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        let mut joined = Vec::with_capacity(n + tail.len());
        joined.extend_from_slice(&chunk[..n]);
        joined.extend_from_slice(&tail);
        tail = joined;
        end = start;
    }
}

fn data_line_offset(line: &[u8]) -> Option<u64> {
    if line.is_empty() || line[0] == b'#' {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    text.split('\t').nth(2)?.parse().ok()
}

/// Every record with `offset >= from`, in file order.
pub fn read_persisted_from(path: &Path, from: u64) -> io::Result<Vec<PersistedRecord>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if data_line_offset(line.as_bytes()).is_some_and(|o| o >= from) {
            let record = PersistedRecord::parse(&line).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            out.push(record);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A file path in a fresh scratch directory.
    fn temp(name: &str) -> (Scratch, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mk-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.txt");
        (Scratch(dir), file)
    }

    #[test]
    fn a_new_file_gets_its_header_once_and_a_cut_line_is_removed() {
        let (_scratch, p) = temp("cut");
        drop(open_append(&p, "# h\n").unwrap());
        drop(open_append(&p, "# h\n").unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# h\n");
        std::fs::write(
            &p,
            "# h\ndefault\t0\t0\tt\tp\t-\ta\ndefault\t0\t1\tt\tp\t-\tcut sh",
        )
        .unwrap();
        let (_, removed) = open_append(&p, "# h\n").unwrap();
        assert_eq!(removed, 24);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# h\ndefault\t0\t0\tt\tp\t-\ta\n"
        );
        assert_eq!(persisted_tail(&p).unwrap().last, Some(0));
    }

    /// A consumption-log line for `group` and `offset`.
    fn delivery(offset: u64, group: &str, consumer: &str, attempt: u32) -> String {
        format!("2026-01-01T00:00:00.000000Z\tdefault\t0\t{offset}\tp\t{group}\t{consumer}\t{attempt}\n")
    }

    /// (offset, group) of every line `read_log_backwards` hands over, in its order.
    fn read_back(
        p: &std::path::Path,
        from: u64,
        max_lines: u64,
    ) -> (Vec<(u64, String)>, LogTailEnd) {
        let mut file = File::open(p).unwrap();
        let mut seen = Vec::new();
        let end = read_log_backwards(&mut file, from, ("default", 0), max_lines, |d| {
            seen.push((d.offset, d.group));
            ControlFlow::Continue(())
        })
        .unwrap();
        (seen, end)
    }

    #[test]
    fn the_log_is_read_backwards_down_to_the_given_start_and_no_further() {
        let (_scratch, p) = temp("log-back");
        let earlier = format!("# header\n{}", delivery(7, "g", "old", 1));
        let mine = [
            delivery(0, "g", "c", 1),
            delivery(1, "h", "d", 1),
            "not a delivery line\n".into(),
            delivery(2, "g", "c", 2),
        ]
        .concat();
        std::fs::write(&p, format!("{earlier}{mine}")).unwrap();
        let (seen, end) = read_back(&p, earlier.len() as u64, 100);
        assert_eq!(end, LogTailEnd::ReachedStart);
        assert_eq!(
            seen,
            vec![(2, "g".into()), (1, "h".into()), (0, "g".into())]
        );
        // From the file's start, the earlier run's line and the header come too
        // (the header is skipped, not handed over).
        let (seen, _) = read_back(&p, 0, 100);
        assert_eq!(seen.last(), Some(&(7, "g".into())));
        // A budget of lines (the unparsable one counts) ends the reading early.
        let (seen, end) = read_back(&p, 0, 2);
        assert_eq!(end, LogTailEnd::OutOfLines);
        assert_eq!(seen, vec![(2, "g".into())]);
    }

    #[test]
    fn reading_the_log_backwards_stops_when_the_visitor_has_what_it_needs() {
        let (_scratch, p) = temp("log-stop");
        // Lines far longer than one read, and more lines than one read holds.
        let long_id = "c".repeat(64);
        let lines: String = (0..5000).map(|o| delivery(o, "g", &long_id, 1)).collect();
        std::fs::write(&p, format!("# header\n{lines}")).unwrap();
        let mut file = File::open(&p).unwrap();
        let mut seen = Vec::new();
        let end = read_log_backwards(&mut file, 0, ("default", 0), u64::MAX, |d| {
            seen.push(d.offset);
            if d.offset == 1000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(end, LogTailEnd::Stopped);
        assert_eq!(seen, (1000..5000).rev().collect::<Vec<_>>());
        let (all, end) = read_back(&p, 0, u64::MAX);
        assert_eq!(end, LogTailEnd::ReachedStart);
        assert_eq!(all.len(), 5000);
        // An empty file, or one with only its header, hands over nothing.
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_back(&p, 0, 10), (vec![], LogTailEnd::ReachedStart));
        std::fs::write(&p, "# header\n").unwrap();
        assert_eq!(read_back(&p, 0, 10), (vec![], LogTailEnd::ReachedStart));
    }

    #[test]
    fn lines_after_the_last_record_that_are_not_records_are_listed() {
        let (_scratch, p) = temp("foreign");
        std::fs::write(
            &p,
            "# h\ndefault\t0\t7\tt\tp\t-\ta\nnot a record\n# note\nx\ty\t9\n",
        )
        .unwrap();
        assert_eq!(
            persisted_tail(&p).unwrap(),
            PersistedTail {
                last: Some(7),
                foreign: vec!["x\ty\t9".into(), "not a record".into()],
            }
        );
    }

    #[test]
    fn the_last_offset_is_found_behind_long_lines() {
        let (_scratch, p) = temp("long");
        let long = "x".repeat(200_000);
        let text = format!("# h\ndefault\t0\t0\tt\tp\t-\ta\ndefault\t0\t1\tt\tp\t-\t{long}\n");
        std::fs::write(&p, text).unwrap();
        assert_eq!(persisted_tail(&p).unwrap().last, Some(1));
        std::fs::write(&p, "# only a header\n").unwrap();
        assert_eq!(persisted_tail(&p).unwrap().last, None);
        let recs = read_persisted_from(&p, 0).unwrap();
        assert!(recs.is_empty());
    }
}
