//! Opening the audit files: created with their header, appended to across runs, a
//! last line cut short by a crash removed, and the last persisted offset found by
//! reading backwards from the end.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::records::PersistedRecord;

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

/// The offset of the last data line of a persistence file, if any.
pub fn last_persisted_offset(path: &Path) -> io::Result<Option<u64>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut end = file.metadata()?.len();
    // Walk back one line at a time; a line may be longer than one chunk.
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(i) = tail[..tail.len().saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            let line = tail.split_off(i + 1);
            if let Some(o) = data_line_offset(&line) {
                return Ok(Some(o));
            }
        }
        if end == 0 {
            return Ok(data_line_offset(&tail));
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        let mut joined = chunk[..n].to_vec();
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
        assert_eq!(last_persisted_offset(&p).unwrap(), Some(0));
    }

    #[test]
    fn the_last_offset_is_found_behind_long_lines() {
        let (_scratch, p) = temp("long");
        let long = "x".repeat(200_000);
        let text = format!("# h\ndefault\t0\t0\tt\tp\t-\ta\ndefault\t0\t1\tt\tp\t-\t{long}\n");
        std::fs::write(&p, text).unwrap();
        assert_eq!(last_persisted_offset(&p).unwrap(), Some(1));
        std::fs::write(&p, "# only a header\n").unwrap();
        assert_eq!(last_persisted_offset(&p).unwrap(), None);
        let recs = read_persisted_from(&p, 0).unwrap();
        assert!(recs.is_empty());
    }
}
