//! The group-position state file, `group_positions.txt` in the data directory:
//! what each group has acknowledged, so that any restart resumes every group there.
//!
//! ```text
//! # group<TAB>position<TAB>handed_out
//! group-1<TAB>500<TAB>502
//! ```
//!
//! `position`: every offset below it is acknowledged by the group. `handed_out`:
//! every offset below it had been delivered once; after a restart, offsets between
//! the two are delivered again with attempt 2. The file is replaced atomically
//! (written aside, then renamed).

use std::io::{self, Write};
use std::path::Path;

/// Name of the state file in the data directory.
pub const STATE_FILE: &str = "group_positions.txt";
const HEADER: &str = "# group\tposition\thanded_out\n";

/// One group's saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub position: u64,
    pub handed_out: u64,
}

/// Reads the state file; a missing file is an empty state. Lines that do not parse
/// are reported in the second list and otherwise ignored.
pub fn load(dir: &Path) -> io::Result<(Vec<GroupState>, Vec<String>)> {
    let text = match std::fs::read_to_string(dir.join(STATE_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut groups = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let parsed = (|| {
            let mut f = line.split('\t');
            let name = f.next()?;
            shm_layout::names::check_name("group", name).ok()?;
            let position = f.next()?.parse().ok()?;
            let handed_out: u64 = f.next()?.parse().ok()?;
            f.next().is_none().then(|| GroupState {
                name: name.to_string(),
                position,
                handed_out: handed_out.max(position),
            })
        })();
        match parsed {
            Some(g) => groups.push(g),
            None => bad.push(line.to_string()),
        }
    }
    Ok((groups, bad))
}

/// Replaces the state file with `groups`; `sync` also flushes it to disk.
pub fn save(dir: &Path, groups: &[GroupState], sync: bool) -> io::Result<()> {
    let mut text = String::from(HEADER);
    for g in groups {
        text.push_str(&format!("{}\t{}\t{}\n", g.name, g.position, g.handed_out));
    }
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_bad_lines_are_reported() {
        let dir = std::env::temp_dir().join(format!("mk-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), (vec![], vec![]));
        let g = vec![GroupState {
            name: "group-1".into(),
            position: 500,
            handed_out: 502,
        }];
        save(&dir, &g, false).unwrap();
        assert_eq!(load(&dir).unwrap().0, g);
        std::fs::write(
            dir.join(STATE_FILE),
            "# h\ngroup-1\t5\t7\nbad line\ng\tx\t1\n",
        )
        .unwrap();
        let (groups, bad) = load(&dir).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(bad, vec!["bad line", "g\tx\t1"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
