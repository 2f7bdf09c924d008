//! An audit file that notices when it is no longer the file at its path.
//!
//! A user (or a clean-up script) may delete, replace or truncate an audit file while
//! the broker writes it. Writing on to a deleted file would lose everything at the
//! next start, and a restart on a missing file must never number messages from 0
//! again. So after its writes the writer checks that its open file is still the one
//! at the path and as long as it wrote it:
//! - deleted, or replaced by another file: the broker still holds the whole file
//!   open, so it copies it back to the path (a replacing file is kept beside it,
//!   renamed) and writes on there;
//! - cut shorter: what was cut is gone; the broker says so once and writes on.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// An audit file opened for appending, with what is known of it.
pub struct WatchedFile {
    file: File,
    path: PathBuf,
    /// The file's name, for what the broker reports.
    name: String,
    /// The length the file should have: what it had when opened, plus what was
    /// written to it since.
    len: u64,
}

/// What [`WatchedFile::check`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Intact,
    /// The path no longer held the file; it was copied back there (`displaced`:
    /// where the file found at the path instead was moved).
    Restored {
        bytes: u64,
        displaced: Option<PathBuf>,
    },
    /// The file is shorter than what was written to it.
    Truncated {
        expected: u64,
        found: u64,
    },
    /// Another process appended this many bytes to it.
    Grown {
        by: u64,
    },
}

impl WatchedFile {
    /// Watches `file`, open for appending at `path`.
    pub fn new(file: File, path: PathBuf) -> io::Result<WatchedFile> {
        let len = file.metadata()?.len();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(WatchedFile {
            file,
            path,
            name,
            len,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends what it can of `bytes`, as `Write::write`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.len += n as u64;
        Ok(n)
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Checks that the open file is still the one at the path, and whole; restores
    /// it at the path if it is not there (see the module docs).
    pub fn check(&mut self) -> io::Result<Check> {
        let ours = self.file.metadata()?;
        let at_path = std::fs::metadata(&self.path);
        let same = at_path
            .as_ref()
            .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
        if same && ours.nlink() > 0 {
            if ours.len() < self.len {
                let expected = self.len;
                self.len = ours.len();
                return Ok(Check::Truncated {
                    expected,
                    found: ours.len(),
                });
            }
            let grown = ours.len() - self.len;
            self.len = ours.len();
            return Ok(if grown > 0 {
                Check::Grown { by: grown }
            } else {
                Check::Intact
            });
        }
        let displaced = match at_path {
            Ok(_) => Some(self.displace()?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let bytes = self.restore()?;
        Ok(Check::Restored { bytes, displaced })
    }

    /// Moves the file found at the path aside, to `<path>.replaced-<seconds>`.
    fn displace(&self) -> io::Result<PathBuf> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = self.path.clone().into_os_string();
        aside.push(format!(".replaced-{secs}"));
        let aside = PathBuf::from(aside);
        std::fs::rename(&self.path, &aside)?;
        Ok(aside)
    }

    /// Copies the open file to a new file at the path (written aside, synced, then
    /// renamed into place) and appends to that one from now on.
    fn restore(&mut self) -> io::Result<u64> {
        let mut aside = self.path.clone().into_os_string();
        aside.push(".restoring");
        let aside = PathBuf::from(aside);
        let mut copy = File::create(&aside)?;
        let mut source = self.file.try_clone()?;
        source.seek(SeekFrom::Start(0))?;
        let bytes = io::copy(&mut source, &mut copy)?;
        copy.sync_all()?;
        std::fs::rename(&aside, &self.path)?;
        self.file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&self.path)?;
        self.len = bytes;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn watched(tag: &str) -> (Scratch, WatchedFile) {
        let dir = std::env::temp_dir().join(format!("mk-watched-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.txt");
        std::fs::write(&path, "# header\n").unwrap();
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        (Scratch(dir), WatchedFile::new(file, path).unwrap())
    }

    #[test]
    fn a_deleted_file_is_restored_from_the_open_one_and_written_on() {
        let (_s, mut f) = watched("deleted");
        f.write(b"one\n").unwrap();
        assert_eq!(f.check().unwrap(), Check::Intact);
        std::fs::remove_file(&f.path).unwrap();
        f.write(b"two\n").unwrap();
        assert_eq!(
            f.check().unwrap(),
            Check::Restored {
                bytes: 17,
                displaced: None
            }
        );
        f.write(b"three\n").unwrap();
        assert_eq!(f.check().unwrap(), Check::Intact);
        assert_eq!(
            std::fs::read_to_string(&f.path).unwrap(),
            "# header\none\ntwo\nthree\n"
        );
    }

    #[test]
    fn a_replacing_file_is_kept_aside() {
        let (_s, mut f) = watched("replaced");
        f.write(b"one\n").unwrap();
        std::fs::write(f.path.with_extension("new"), "other\n").unwrap();
        std::fs::rename(f.path.with_extension("new"), &f.path).unwrap();
        let Check::Restored {
            bytes: 13,
            displaced: Some(aside),
        } = f.check().unwrap()
        else {
            panic!("not restored")
        };
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "other\n");
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), "# header\none\n");
    }

    #[test]
    fn a_cut_is_reported_once() {
        let (_s, mut f) = watched("cut");
        f.write(b"one\ntwo\n").unwrap();
        File::options()
            .write(true)
            .open(&f.path)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert_eq!(
            f.check().unwrap(),
            Check::Truncated {
                expected: 17,
                found: 4
            }
        );
        assert_eq!(f.check().unwrap(), Check::Intact);
        f.write(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), "# hethree\n");
    }

    #[test]
    fn bytes_another_process_appends_are_noticed() {
        let (_s, mut f) = watched("grown");
        f.write(b"one\n").unwrap();
        let mut other = OpenOptions::new().append(true).open(&f.path).unwrap();
        other.write_all(b"stray\n").unwrap();
        f.write(b"two\n").unwrap();
        assert_eq!(f.check().unwrap(), Check::Grown { by: 6 });
        assert_eq!(f.check().unwrap(), Check::Intact);
    }
}
