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
    let path = dir.join(name);
    let temp = dir.join(temp_name(name));
    let written = File::create(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()))
        .and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    File::open(dir).and_then(|d| d.sync_all())
}
