//! The audit trail of SPEC §6: `persistencia_mensajes.txt` (every message once, in
//! offset order) and `log_consumo.txt` (every delivery), both written through double
//! buffers by dedicated threads, plus the group-position state file of §4/§7.
//! The line formats, file names and headers are the `audit_format` crate's;
//! `docs/files.md` describes them.

pub mod double_buffer;
pub mod files;
pub mod state;
pub mod watched_file;
