//! The audit trail of SPEC §6: `persistencia_mensajes.txt` (every message once, in
//! offset order) and `log_consumo.txt` (every delivery), both written through double
//! buffers by dedicated threads, plus the group-position state file of §4/§7.
//! `docs/files.md` describes the formats.

pub mod double_buffer;
pub mod files;
pub mod records;
pub mod state;
pub mod watched_file;
