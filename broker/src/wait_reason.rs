//! What keeps producers waiting, in words: the group furthest behind, or a file
//! whose writer is behind (with its error while a write fails). A producer that has
//! waited a while asks, and prints the answer; `broker status` shows it too.

use std::fmt;
use std::sync::Arc;

use control_protocol::WaitingFor;
use shm_layout::BrokerRegion;

use crate::audit::double_buffer::WriterHealth;
use crate::reclaim::Reclaimer;
use crate::registry::Registry;

/// What holds a ring's slots (or, under `--fsync`, a producer's records) back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A group has not consumed `behind` messages; `slowest` is the member holding
    /// its position (None: the group has no consumers).
    Group {
        name: String,
        behind: u64,
        slowest: Option<String>,
        /// Why a dead letter at its position is not published yet.
        dead_letter_blocked: Option<String>,
    },
    /// `persistencia_mensajes.txt` lacks `behind` messages; `error` while a write fails.
    PersistenceFile { behind: u64, error: Option<String> },
    /// `log_consumo.txt` lacks the deliveries of `behind` messages.
    DeliveryLog { behind: u64, error: Option<String> },
    /// Nothing: slots are being freed.
    Nothing,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = |f: &mut fmt::Formatter<'_>, error: &Option<String>| match error {
            Some(e) => write!(f, ": cannot write: {e}"),
            None => Ok(()),
        };
        match self {
            Holder::Group {
                name,
                behind,
                slowest,
                dead_letter_blocked,
            } => {
                write!(f, "group {name} is {behind} messages behind")?;
                match slowest {
                    None => write!(f, " and has no consumers")?,
                    Some(c) => write!(f, "; slowest consumer {c}")?,
                }
                match dead_letter_blocked {
                    Some(why) => write!(f, "; {why}"),
                    None => Ok(()),
                }
            }
            Holder::PersistenceFile { behind, error: e } => {
                write!(f, "the persistence file is {behind} messages behind")?;
                error(f, e)
            }
            Holder::DeliveryLog { behind, error: e } => {
                write!(f, "the delivery log is {behind} messages behind")?;
                error(f, e)
            }
            Holder::Nothing => write!(f, "nothing holds it now: slots are being freed"),
        }
    }
}

/// Where the broker looks to name a holder.
pub struct WaitReasons {
    pub region: Arc<BrokerRegion>,
    pub reclaimer: Arc<Reclaimer>,
    pub persistence: WriterHealth,
    pub delivery_log: WriterHealth,
}

impl WaitReasons {
    /// What a producer of `default`/0 waiting for `waiting_for` waits on now.
    pub fn holder(&self, registry: &Registry, waiting_for: WaitingFor) -> Holder {
        let marks = Marks {
            next: self.region.next_offset(),
            persisted: self.reclaimer.persisted(),
            logged: self.reclaimer.logged(),
        };
        self.holder_of(marks, registry, 0, waiting_for)
    }

    /// What a producer of `ring`, a partition's, waiting for `waiting_for`
    /// waits on now.
    pub fn ring_holder(
        &self,
        ring: &crate::topics::PartitionRing,
        registry: &Registry,
        waiting_for: WaitingFor,
    ) -> Holder {
        let marks = Marks {
            next: ring.region.next_offset(),
            persisted: ring.reclaimer.persisted(),
            logged: ring.reclaimer.logged(),
        };
        self.holder_of(marks, registry, ring.number, waiting_for)
    }

    /// Slots are freed below three marks, the lowest of which holds them:
    /// what the persistence file holds, what the delivery log holds (and every
    /// group has consumed), and the slowest group holding ring `ring`.
    fn holder_of(
        &self,
        marks: Marks,
        registry: &Registry,
        ring: u32,
        waiting_for: WaitingFor,
    ) -> Holder {
        let next = marks.next;
        let persisted = marks.persisted.min(next);
        let persistence_behind = || Holder::PersistenceFile {
            behind: next - persisted,
            error: self.persistence.failure(),
        };
        if waiting_for == WaitingFor::Disk {
            return persistence_behind();
        }
        let logged = marks.logged.min(next);
        let slowest = registry.slowest_group(ring);
        let consumed = slowest.as_ref().map_or(next, |g| g.position.min(next));
        // Consumers may run ahead of the writers, never the log ahead of consumers.
        if persisted < consumed.min(logged) {
            persistence_behind()
        } else if logged < consumed {
            Holder::DeliveryLog {
                behind: next - logged,
                error: self.delivery_log.failure(),
            }
        } else {
            match slowest {
                Some(g) if g.position < next => Holder::Group {
                    name: g.name,
                    behind: next - g.position,
                    slowest: g.slowest,
                    dead_letter_blocked: g.dead_letter_blocked,
                },
                _ => Holder::Nothing,
            }
        }
    }
}

/// A ring's next offset, and the marks below which its slots may be freed.
struct Marks {
    next: u64,
    persisted: u64,
    logged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_holder_reads_as_the_waiting_line_names_it() {
        let group = |slowest: Option<&str>| Holder::Group {
            name: "group-2".into(),
            behind: 4096,
            slowest: slowest.map(str::to_string),
            dead_letter_blocked: None,
        };
        assert_eq!(
            group(None).to_string(),
            "group group-2 is 4096 messages behind and has no consumers"
        );
        assert_eq!(
            group(Some("consumer-123")).to_string(),
            "group group-2 is 4096 messages behind; slowest consumer consumer-123"
        );
        let blocked = Holder::Group {
            name: "g".into(),
            behind: 16,
            slowest: Some("c".into()),
            dead_letter_blocked: Some(
                "its dead letter at offset 7 waits: cannot create the dead-letter topic jobs.dlq: no room".into(),
            ),
        };
        assert_eq!(
            blocked.to_string(),
            "group g is 16 messages behind; slowest consumer c; its dead letter at offset 7 waits: cannot create the dead-letter topic jobs.dlq: no room"
        );
        let file = Holder::PersistenceFile {
            behind: 12,
            error: Some("No space left on device (os error 28)".into()),
        };
        assert_eq!(
            file.to_string(),
            "the persistence file is 12 messages behind: cannot write: No space left on device (os error 28)"
        );
        let log = Holder::DeliveryLog {
            behind: 3,
            error: None,
        };
        assert_eq!(log.to_string(), "the delivery log is 3 messages behind");
    }
}
