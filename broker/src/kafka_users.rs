//! `broker kafka-user add NAME --kafka-users FILE`: a salted SCRAM-SHA-256
//! entry for the Kafka port's users file, from a password read on stdin. The
//! file is replaced atomically and readable by its owner only; it never holds
//! the password.

use std::io::BufRead;
use std::path::Path;

use kafka_listener::scram::{check_user_name, Credential, Users, MIN_ITERATIONS};

/// Why a user was not added, and the exit status that says so.
#[derive(Debug)]
pub enum AddError {
    /// A bad name, password or iteration count: exit 2.
    Usage(String),
    /// The file could not be read or written: exit 1.
    Failed(String),
}

/// Adds (or replaces) `name` in `file` with the password on the first line of
/// `password_source`; what to print.
pub fn add(
    file: &Path,
    name: &str,
    iterations: u32,
    password_source: &mut impl BufRead,
) -> Result<String, AddError> {
    check_user_name(name).map_err(|e| AddError::Usage(e.to_string()))?;
    if iterations < MIN_ITERATIONS {
        return Err(AddError::Usage(format!(
            "--iterations {iterations}: at least {MIN_ITERATIONS}"
        )));
    }
    let mut line = String::new();
    password_source
        .read_line(&mut line)
        .map_err(|e| AddError::Failed(format!("cannot read the password from stdin: {e}")))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(AddError::Usage(
            "no password on stdin: give it as the first line".into(),
        ));
    }
    let mut users = Users::load(file).map_err(|e| AddError::Failed(e.to_string()))?;
    let existed = users.get(name).is_some();
    let mut salt = vec![0u8; 16];
    shm_layout::sys::random_bytes(&mut salt)
        .map_err(|e| AddError::Failed(format!("no randomness for the salt: {e}")))?;
    users.set(
        name,
        Credential::from_password(password.as_bytes(), salt, iterations),
    );
    write_atomically(file, users.render().as_bytes())
        .map_err(|e| AddError::Failed(format!("{}: {e}", file.display())))?;
    Ok(if existed {
        format!("replaced user {name}")
    } else {
        format!("added user {name}")
    })
}

/// Replaces `file` with `text`, readable by its owner only.
fn write_atomically(file: &Path, text: &[u8]) -> std::io::Result<()> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    audit_format::durable::write_atomically_with_mode(dir, name, text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_added_then_replaced_and_the_file_holds_no_password() {
        let dir = std::env::temp_dir().join(format!("mk-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users.txt");
        let said = add(&file, "alice", 4096, &mut &b"s3cret-pw\n"[..]).unwrap();
        assert_eq!(said, "added user alice");
        let first = Users::load(&file).unwrap().get("alice").cloned().unwrap();
        let said = add(&file, "alice", 4096, &mut &b"other\r\n"[..]).unwrap();
        assert_eq!(said, "replaced user alice");
        add(&file, "bob", 8192, &mut &b"pw"[..]).unwrap();
        let users = Users::load(&file).unwrap();
        assert_eq!(users.len(), 2);
        let again = users.get("alice").unwrap();
        assert_ne!(again.salt, first.salt, "a fresh salt each time");
        assert_eq!(
            *again,
            Credential::from_password(b"other", again.salt.clone(), 4096)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("other"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for (name, iterations, stdin) in [
            ("al ice", 4096, &b"pw\n"[..]),
            ("alice", 100, &b"pw\n"[..]),
            ("alice", 4096, &b"\n"[..]),
        ] {
            assert!(matches!(
                add(&file, name, iterations, &mut &stdin[..]),
                Err(AddError::Usage(_))
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
