//! Whole lines of a file that another process may be appending to, read at any byte
//! position with positional reads (`pread`) through one buffer: sequential lines
//! come out of the buffer, a jump elsewhere refills it. A line without its newline
//! yet is never handed out, and its bytes are not kept: the writer that cut it may
//! be replaced by one that removes it and writes other bytes there (SPEC §6).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read from the file at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The longest line read by default: far beyond the longest escaped message of any
/// ring (`--max-message` 1 MiB, each byte at most four bytes escaped), small enough
/// that a file without newlines cannot take the reader's memory.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024 * 1024;

/// What the file holds at a byte position.
#[derive(Debug, PartialEq, Eq)]
pub enum LineAt<'a> {
    /// A whole line, with its newline.
    Whole(&'a [u8]),
    /// The file ends before a newline: nothing, or a line still being written (or
    /// cut by a crash).
    Incomplete,
    /// No newline within the line-length limit.
    TooLong,
}

/// Reads whole lines of one open file at byte positions.
#[derive(Debug)]
pub struct FileLines {
    file: File,
    /// Bytes of the file from `buffer_at`: whole lines, then at most the start of
    /// the next one while a line is being assembled.
    buffer: Vec<u8>,
    buffer_at: u64,
    max_line: usize,
}

impl FileLines {
    pub fn new(file: File) -> Self {
        FileLines {
            file,
            buffer: Vec::new(),
            buffer_at: 0,
            max_line: DEFAULT_MAX_LINE,
        }
    }

    /// Lines longer than `max_line` bytes are reported as [`LineAt::TooLong`].
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(1);
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The line that starts at `position`. Reads only when the buffer does not
    /// hold it whole.
    pub fn line_at(&mut self, position: u64) -> io::Result<LineAt<'_>> {
        let buffered = self.buffer_at..self.buffer_at + self.buffer.len() as u64;
        if !(buffered.contains(&position) || position == buffered.end) {
            self.buffer.clear();
            self.buffer_at = position;
        }
        let mut start = (position - self.buffer_at) as usize;
        let mut searched = start;
        loop {
            if let Some(newline) = self.buffer[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + newline + 1;
                if end - start > self.max_line {
                    return Ok(LineAt::TooLong);
                }
                return Ok(LineAt::Whole(&self.buffer[start..end]));
            }
            if self.buffer.len() - start >= self.max_line {
                return Ok(LineAt::TooLong);
            }
            // Bytes before the line are done with: the buffer holds one line and
            // what was read after it, never more.
            self.buffer.drain(..start);
            self.buffer_at = position;
            start = 0;
            searched = self.buffer.len();
            if self.fill()? == 0 {
                // Forget the start of the unfinished line: it is read again, as the
                // file then holds it, once its newline may be there.
                self.buffer.clear();
                return Ok(LineAt::Incomplete);
            }
        }
    }

    /// Appends the next bytes of the file to the buffer; how many (0 at its end).
    fn fill(&mut self) -> io::Result<usize> {
        let old_len = self.buffer.len();
        self.buffer.resize(old_len + READ_CHUNK, 0);
        let at = self.buffer_at + old_len as u64;
        let read = loop {
            match self.file.read_at(&mut self.buffer[old_len..], at) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let read = read.inspect_err(|_| self.buffer.truncate(old_len))?;
        self.buffer.truncate(old_len + read);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A file of the test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file_with(tag: &str, bytes: &[u8]) -> (File, Scratch) {
        let path = std::env::temp_dir().join(format!("mk-file-lines-{tag}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        (File::open(&path).unwrap(), Scratch(path))
    }

    #[test]
    fn whole_lines_come_out_and_an_unfinished_one_waits_for_its_newline() {
        let (file, scratch) = file_with("growing", b"one\ntwo\nthr");
        let mut lines = FileLines::new(file);
        assert_eq!(lines.line_at(0).unwrap(), LineAt::Whole(b"one\n"));
        assert_eq!(lines.line_at(4).unwrap(), LineAt::Whole(b"two\n"));
        assert_eq!(lines.line_at(8).unwrap(), LineAt::Incomplete);
        assert_eq!(lines.line_at(11).unwrap(), LineAt::Incomplete);
        // The cut line is replaced (a restarted writer removes it) and finished.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&scratch.0)
            .unwrap();
        f.set_len(8).unwrap();
        f.write_all_at(b"four\nfive\n", 8).unwrap();
        assert_eq!(lines.line_at(8).unwrap(), LineAt::Whole(b"four\n"));
        assert_eq!(lines.line_at(13).unwrap(), LineAt::Whole(b"five\n"));
        // Back to the start, and into the middle of a line.
        assert_eq!(lines.line_at(1).unwrap(), LineAt::Whole(b"ne\n"));
    }

    #[test]
    fn lines_longer_than_the_limit_are_refused_and_long_ones_assembled() {
        let mut bytes = vec![b'x'; 3 * READ_CHUNK];
        bytes.push(b'\n');
        bytes.extend_from_slice(b"short\n");
        let (file, _scratch) = file_with("long", &bytes);
        let mut lines = FileLines::new(file);
        match lines.line_at(0).unwrap() {
            LineAt::Whole(l) => assert_eq!(l.len(), 3 * READ_CHUNK + 1),
            other => panic!("{other:?}"),
        }
        lines.set_max_line(1000);
        assert_eq!(lines.line_at(0).unwrap(), LineAt::TooLong);
        lines.set_max_line(READ_CHUNK * 2);
        assert_eq!(lines.line_at(0).unwrap(), LineAt::TooLong);
        let after = 3 * READ_CHUNK as u64 + 1;
        assert_eq!(lines.line_at(after).unwrap(), LineAt::Whole(b"short\n"));
    }
}
