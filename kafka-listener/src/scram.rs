//! SASL/SCRAM-SHA-256 (RFC 5802, RFC 7677) as Kafka uses it: the users file
//! the broker reads its credentials from, and the server's side of an
//! exchange. The file holds no password: each user's salt, iteration count,
//! StoredKey and ServerKey; the client proves it knows the password without
//! sending it.
//!
//! ```text
//! # name<TAB>salt<TAB>iterations<TAB>stored_key<TAB>server_key (SCRAM-SHA-256, base64)
//! alice<TAB>x0N0aF0tLZyo3eUPbDEFqQ==<TAB>4096<TAB>...<TAB>...
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The one mechanism served.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Kafka's least iteration count for SCRAM-SHA-256, and the default here.
pub const MIN_ITERATIONS: u32 = 4096;
/// The users file's first line.
const HEADER: &str = "# name\tsalt\titerations\tstored_key\tserver_key (SCRAM-SHA-256, base64)\n";
/// Longest user name.
pub const MAX_USER_LEN: usize = 255;

/// What the server keeps of a user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credential {
    /// The credential of `password` with `salt` and `iterations`.
    pub fn from_password(password: &[u8], salt: Vec<u8>, iterations: u32) -> Credential {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        Credential {
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }
}

/// Why a user name cannot be in the users file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user name {0:?} is invalid: use 1 to 255 characters, without spaces, tabs or control characters")]
pub struct UserNameError(pub String);

/// Checks a user name: printable, without white space (the file's separator).
pub fn check_user_name(name: &str) -> Result<(), UserNameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(UserNameError(name.to_string()))
    }
}

/// Why a users file was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line} is not a user entry (name, salt, iterations, stored key, server key, tab-separated): {why}")]
    Malformed {
        path: String,
        line: usize,
        why: String,
    },
}

/// Every user the listener accepts, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    entries: BTreeMap<String, Credential>,
}

impl Users {
    /// Reads a users file; a file that does not exist is no users.
    pub fn load(path: &Path) -> Result<Users, UsersFileError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Users::parse(&text).map_err(|(line, why)| UsersFileError::Malformed {
                path: shown,
                line,
                why,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::default()),
            Err(source) => Err(UsersFileError::Io {
                path: shown,
                source,
            }),
        }
    }

    /// Parses a users file's text; an error names the line (from 1) and why.
    pub fn parse(text: &str) -> Result<Users, (usize, String)> {
        let mut users = Users::default();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, salt, iterations, stored, server] = fields[..] else {
                return Err((i + 1, format!("{} fields", fields.len())));
            };
            let bad = |what: &str| (i + 1, format!("bad {what}"));
            check_user_name(name).map_err(|e| (i + 1, e.to_string()))?;
            let key = |b64: &str, what: &str| -> Result<[u8; 32], (usize, String)> {
                BASE64
                    .decode(b64)
                    .ok()
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(|| bad(what))
            };
            let credential = Credential {
                salt: BASE64.decode(salt).map_err(|_| bad("salt"))?,
                iterations: iterations
                    .parse()
                    .ok()
                    .filter(|&n| n >= MIN_ITERATIONS)
                    .ok_or_else(|| bad("iterations (at least 4096)"))?,
                stored_key: key(stored, "stored key")?,
                server_key: key(server, "server key")?,
            };
            users.entries.insert(name.to_string(), credential);
        }
        Ok(users)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::from(HEADER);
        for (name, c) in &self.entries {
            text.push_str(&format!(
                "{name}\t{}\t{}\t{}\t{}\n",
                BASE64.encode(&c.salt),
                c.iterations,
                BASE64.encode(c.stored_key),
                BASE64.encode(c.server_key)
            ));
        }
        text
    }

    /// Adds `name`, or replaces its entry.
    pub fn set(&mut self, name: &str, credential: Credential) {
        self.entries.insert(name.to_string(), credential);
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.entries.get(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A users file as the listener keeps it: looked at as connections come, and
/// read again when it changed, so that `broker kafka-user add` applies to the
/// next connection.
#[derive(Debug, Clone)]
pub struct UsersFile {
    path: std::path::PathBuf,
    users: Users,
    modified: Option<(u64, std::time::SystemTime)>,
}

/// Which file is at `path` (a replacement is a new inode), and when it changed.
fn modified(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

impl UsersFile {
    /// Reads `path`, which must name at least one user.
    pub fn open(path: &Path) -> Result<UsersFile, UsersFileError> {
        let stamp = modified(path);
        let users = Users::load(path)?;
        if users.is_empty() {
            return Err(UsersFileError::Malformed {
                path: path.display().to_string(),
                line: 0,
                why: "no user in it: add one with `broker kafka-user add NAME --kafka-users FILE`"
                    .into(),
            });
        }
        Ok(UsersFile {
            path: path.to_path_buf(),
            users,
            modified: stamp,
        })
    }

    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Reads the file again if it changed since; a file that cannot be read
    /// leaves the users as they were, and says why.
    pub fn refresh(&mut self) -> Result<bool, UsersFileError> {
        let stamp = modified(&self.path);
        if stamp == self.modified {
            return Ok(false);
        }
        self.modified = stamp;
        self.users = Users::load(&self.path)?;
        Ok(true)
    }
}

/// What a step of the exchange gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The server's next message; the client speaks next.
    Continue(Vec<u8>),
    /// The client proved its password: the server's last message, and who it is.
    Authenticated { response: Vec<u8>, user: String },
    /// The exchange failed (why, for the broker's own report; the client hears
    /// only that authentication failed).
    Failed(String),
}

/// What the server keeps between its first message and the client's last.
#[derive(Debug)]
struct AwaitingProof {
    user: String,
    /// None for a user not in the file: the exchange goes on, and fails at
    /// the proof, so that a client cannot tell which names exist.
    credential: Option<Credential>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

#[derive(Debug)]
enum Stage {
    ClientFirst,
    ClientFinal(Box<AwaitingProof>),
    Over,
}

/// The server's side of one SCRAM-SHA-256 exchange.
#[derive(Debug)]
pub struct Exchange {
    stage: Stage,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            stage: Stage::ClientFirst,
        }
    }
}

/// The `name=` value of SCRAM, unescaped (`=2C` is `,`, `=3D` is `=`).
fn unescape_name(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl Exchange {
    /// Takes the client's next message; `server_nonce` is the server's part of
    /// the nonce, fresh and printable without commas (base64 of random bytes),
    /// used at the first step.
    pub fn step(&mut self, users: &Users, message: &[u8], server_nonce: &str) -> Step {
        let stage = std::mem::replace(&mut self.stage, Stage::Over);
        let Ok(text) = std::str::from_utf8(message) else {
            return Step::Failed("a SCRAM message that is not UTF-8".into());
        };
        match stage {
            Stage::ClientFirst => self.client_first(users, text, server_nonce),
            Stage::ClientFinal(awaiting) => {
                let AwaitingProof {
                    user,
                    credential,
                    gs2_header,
                    client_first_bare,
                    server_first,
                    nonce,
                } = *awaiting;
                let Some(without_proof_end) = text.rfind(",p=") else {
                    return Step::Failed("a client-final message without a proof".into());
                };
                let without_proof = &text[..without_proof_end];
                let proof = BASE64.decode(&text[without_proof_end + 3..]).ok();
                let mut binding = None;
                let mut client_nonce = None;
                for attr in without_proof.split(',') {
                    match attr.split_at_checked(2) {
                        Some(("c=", v)) => binding = BASE64.decode(v).ok(),
                        Some(("r=", v)) => client_nonce = Some(v),
                        _ => {}
                    }
                }
                if binding.as_deref() != Some(gs2_header.as_bytes()) {
                    return Step::Failed("the channel binding does not match".into());
                }
                // Ends with the nonce, as Kafka checks it: librdkafka puts
                // its own part once more in front.
                if !client_nonce.is_some_and(|n| n.ends_with(nonce.as_str())) {
                    return Step::Failed("the nonce does not match".into());
                }
                let (Some(credential), Some(proof)) = (credential, proof) else {
                    return Step::Failed(format!("no such user {user:?}"));
                };
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac(&credential.stored_key, auth_message.as_bytes());
                if proof.len() != signature.len() {
                    return Step::Failed(format!("a proof of the wrong size for {user:?}"));
                }
                let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                if !same(&Sha256::digest(&client_key), &credential.stored_key) {
                    return Step::Failed(format!("a wrong password for {user:?}"));
                }
                let server_signature = hmac(&credential.server_key, auth_message.as_bytes());
                Step::Authenticated {
                    response: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
                    user,
                }
            }
            Stage::Over => Step::Failed("the exchange is over".into()),
        }
    }

    fn client_first(&mut self, users: &Users, text: &str, server_nonce: &str) -> Step {
        // gs2-header: a channel-binding flag, an optional authorization id.
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Step::Failed("a client-first message without its header".into());
        };
        if flag != "n" && flag != "y" {
            return Step::Failed("channel binding is not served".into());
        }
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_at_checked(2) {
                Some(("n=", v)) => user = unescape_name(v),
                Some(("r=", v)) if !v.is_empty() => client_nonce = Some(v),
                Some(("m=", _)) => {
                    return Step::Failed("a mandatory extension is not served".into());
                }
                _ => {}
            }
        }
        let (Some(user), Some(client_nonce)) = (user, client_nonce) else {
            return Step::Failed("a client-first message without a name or a nonce".into());
        };
        if let Some(id) = authzid.strip_prefix("a=") {
            if unescape_name(id).as_deref() != Some(user.as_str()) {
                return Step::Failed(format!("{user:?} asked to act as someone else"));
            }
        }
        let credential = users.get(&user).cloned();
        // A stranger gets a salt that looks like anyone's, the same each time.
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                hmac(b"unknown user", user.as_bytes())[..16].to_vec(),
                MIN_ITERATIONS,
            ),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
        self.stage = Stage::ClientFinal(Box::new(AwaitingProof {
            user,
            credential,
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        }));
        Step::Continue(server_first.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_user() -> Users {
        let mut users = Users::default();
        let salt = BASE64.decode(SALT).unwrap();
        users.set("user", Credential::from_password(b"pencil", salt, 4096));
        users
    }

    /// RFC 7677's example exchange: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_is_accepted_and_answered_with_its_server_signature() {
        let users = rfc_user();
        let mut exchange = Exchange::default();
        let first = exchange.step(&users, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", SERVER_NONCE);
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = exchange.step(
            &users,
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "unused",
        );
        assert_eq!(
            last,
            Step::Authenticated {
                response: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                user: "user".into(),
            }
        );
    }

    #[test]
    fn a_wrong_proof_a_replayed_nonce_or_another_binding_fails() {
        let users = rfc_user();
        let finals: [&[u8]; 3] = [
            // Another password's proof.
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            // The right proof for another nonce.
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            // A binding other than the first message's header.
            b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        ];
        for last in finals {
            let mut exchange = Exchange::default();
            exchange.step(&users, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", SERVER_NONCE);
            assert!(matches!(exchange.step(&users, last, ""), Step::Failed(_)));
            assert!(matches!(exchange.step(&users, last, ""), Step::Failed(_)));
        }
    }

    #[test]
    fn strangers_and_malformed_messages_fail_without_saying_who_exists() {
        let users = Users::default();
        let mut e = Exchange::default();
        let Step::Continue(first) = e.step(&users, b"n,,n=nobody,r=abc", "eHl6") else {
            panic!("a stranger is answered as anyone is");
        };
        let first = String::from_utf8(first).unwrap();
        assert!(first.starts_with("r=abceHl6,s="), "{first}");
        let proof = BASE64.encode([0u8; 32]);
        let last = format!("c=biws,r=abceHl6,p={proof}");
        assert!(matches!(
            e.step(&users, last.as_bytes(), ""),
            Step::Failed(_)
        ));
        for bad in [
            &b"p=tls-unique,,n=u,r=a"[..],
            b"n,,r=a",
            b"n,,n=u",
            b"n,,n=u,r=a,m=ext",
            b"n,a=other,n=u,r=a",
            b"garbage",
            b"\xff",
        ] {
            let mut e = Exchange::default();
            assert!(
                matches!(e.step(&users, bad, "n"), Step::Failed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_users_file_round_trips_and_bad_lines_are_named() {
        let mut users = Users::default();
        users.set("alice", Credential::from_password(b"pw", vec![1; 16], 4096));
        users.set(
            "bob=2C",
            Credential::from_password(b"pw2", vec![2; 16], 8192),
        );
        let text = users.render();
        assert!(text.starts_with("# name\t"));
        let back = Users::parse(&text).unwrap();
        assert_eq!(back.get("alice"), users.get("alice"));
        assert_eq!(back.get("bob=2C"), users.get("bob=2C"));
        assert_eq!(back.len(), 2);
        for (bad, why) in [
            ("alice\tAA==\t4096\tAA==", "4 fields"),
            ("alice\tAA==\t100\tAA==\tAA==", "bad iterations"),
            ("alice\t!!\t4096\tAA==\tAA==", "bad salt"),
            ("alice\tAA==\t4096\tAA==\tAA==", "bad stored key"),
            ("al ice\tAA==\t4096\tAA==\tAA==", "invalid"),
        ] {
            let (line, message) = Users::parse(&format!("# h\n{bad}\n")).unwrap_err();
            assert_eq!(line, 2);
            assert!(message.contains(why), "{bad}: {message}");
        }
    }
}
