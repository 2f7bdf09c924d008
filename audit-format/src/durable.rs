//! Replacing a small file of the data directory so that a crash at any instant
//! leaves either the old file or the new one: the index files, the checkpoint and
//! `topics.txt` are written this way.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The name a new version of `name` is written under before it is renamed over it.
pub(crate) fn temp_name(name: &str) -> String {
    format!("{name}.tmp")
}

/// Replaces `dir/name` with `bytes`: written under a temporary name and synced,
/// renamed over, and the directory synced, so that once this returns the new file
/// is there after any crash, and before it returns the old one or the new one is.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with_mode(dir, name, bytes, 0o666)
}

/// As [`write_atomically`], the new file created with permissions `mode`
/// (less the umask): 0o600 for a file only its owner may read.
pub fn write_atomically_with_mode(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let temp = dir.join(temp_name(name));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()))
        .and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    File::open(dir).and_then(|d| d.sync_all())
}
