//! Dead letters (SPEC §11, `--max-attempts`): a message a group was handed as
//! often as allowed without acknowledging it is published by the broker to the
//! topic's dead-letter topic, `<topic>.dlq` (created on first need, one
//! partition), under the stand-in producer `dlq:<group>`; the consumption log
//! gets a line for it (consumer `-`, the attempts it reached), and the group
//! moves past it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_format::log_reader::LogReader;
use shm_layout::client::{ClientRecord, ClientRole};
use shm_layout::layout::client_state;
use shm_layout::ring::{Sender, WithHeaders};
use shm_layout::sys::wall_clock_micros;

use super::Registry;
use crate::topics::{dead_letter_topic, PartitionRing};

/// How long a dead-letter topic that could not be created waits before the
/// next try (a full `/dev/shm` is not worth a region's reservation every pass).
const DEAD_LETTER_TOPIC_RETRY: Duration = Duration::from_secs(1);

/// How a creation of a dead-letter topic ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterTopic {
    Created,
    /// Someone else created it meanwhile.
    Exists,
    /// Not now (another creation was under way, or the broker is stopping).
    Later,
    Failed(String),
}

/// Where a dead-letter topic's creation is.
pub(super) enum Creation {
    Running,
    RetryAt(Instant),
}

/// A dead letter's key, payload and headers, as sent.
struct Letter {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<u8>,
    producer: Arc<str>,
}

impl Registry {
    /// Publishes the dead letters of group `g`'s `r`-th ring, in order, as far as
    /// the dead-letter topic's ring has room (the rest wait for the next pass,
    /// holding the group's position).
    pub(super) fn publish_dead_letters(&mut self, g: u32, r: usize) {
        loop {
            let Some(gr) = self.group_ring(g, r) else {
                return;
            };
            let Some(&(offset, reached)) = gr.dead.front() else {
                return;
            };
            let topic = gr.topic.clone();
            // The topic first: the letter may have to be read from the file.
            let Some(ring) = self.dead_letter_ring(&topic) else {
                return;
            };
            let Some(letter) = self.letter_at(g, r, offset) else {
                self.report_once("unreadable dead letter", || {
                    format!("broker: cannot read offset {offset} of {topic} to dead-letter it; it is dropped")
                });
                self.group_ring_mut(g, r).map(|gr| gr.dead.pop_front());
                continue;
            };
            let Some(name) = self.groups[g as usize].as_ref().map(|grp| grp.name.clone()) else {
                return;
            };
            let Some(sender) = self.dead_letter_sender(&name) else {
                return;
            };
            // Never waits: a full ring is tried again at the next pass.
            let one = [WithHeaders {
                key: letter.key.as_deref(),
                payload: &letter.payload,
                headers: &letter.headers,
            }];
            let sent = ring
                .region
                .send_batch_now(sender, &one, wall_clock_micros());
            if !matches!(sent, Ok((_, 1))) {
                return;
            }
            shm_layout::event::wake(&self.region.header().cleaner);
            let Registry {
                groups, log_text, ..
            } = self;
            let grp = groups[g as usize].as_mut().expect("live group");
            let gr = &mut grp.rings[r];
            gr.dead.pop_front();
            let nobody: Arc<str> = Arc::from("-");
            gr.delivery_lines.set_time(wall_clock_micros());
            gr.delivery_lines.push(
                log_text,
                offset,
                &letter.producer,
                &grp.name,
                &nobody,
                reached,
            );
            gr.dead_lettered += 1;
        }
    }

    /// The record at `offset` of group `g`'s `r`-th ring: from the ring, or
    /// from the persistence file if it left the ring.
    fn letter_at(&mut self, g: u32, r: usize, offset: u64) -> Option<Letter> {
        let gr = self.group_ring(g, r)?;
        if let Ok(record) = gr.region.read_record(offset) {
            let key = (record.producer, record.producer_generation);
            return Some(Letter {
                key: record.key.map(<[u8]>::to_vec),
                payload: record.payload.to_vec(),
                headers: record.headers.to_vec(),
                producer: self
                    .producers
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| self.unknown.clone()),
            });
        }
        let tp = match &gr.partition_ring {
            Some(ring) => ring.partition.clone(),
            None => audit_format::index::TopicPartition::default_topic(),
        };
        let data_dir = super::readers::data_dir_of(&self.file_producers);
        let mut file = LogReader::open_in(&data_dir, &tp).ok()?;
        file.seek(offset).ok()?;
        let found = file.next_record().ok()??;
        (found.record.offset == offset).then(|| Letter {
            key: found.record.key,
            payload: found.record.payload,
            headers: found.record.headers,
            producer: Arc::from(found.record.producer.as_str()),
        })
    }

    /// The ring of `topic`'s dead-letter topic; None while it does not exist yet
    /// (the cleaner creates it, outside the registry's lock: a region takes
    /// time to reserve).
    fn dead_letter_ring(&mut self, topic: &str) -> Option<Arc<PartitionRing>> {
        let name = dead_letter_topic(topic)?;
        let topics = self.topics.as_ref()?;
        match topics.find(&name) {
            Some((_, first)) => topics.ring(first),
            None => {
                self.dead_letter_topics_wanted.insert(name);
                None
            }
        }
    }

    /// The dead-letter topics dead letters wait for that are to be created now:
    /// not while a creation of it runs, nor before its retry time after a
    /// failure. They count as being created from now on.
    pub fn take_wanted_dead_letter_topics(&mut self, now: Instant) -> Vec<String> {
        let wanted = std::mem::take(&mut self.dead_letter_topics_wanted);
        let mut due = Vec::new();
        for name in wanted {
            let ready = match self.dead_letter_creations.get(&name) {
                Some(Creation::Running) => false,
                Some(Creation::RetryAt(at)) => *at <= now,
                None => true,
            };
            if ready {
                self.dead_letter_creations
                    .insert(name.clone(), Creation::Running);
                due.push(name);
            }
        }
        due
    }

    /// How the creation of dead-letter topic `name` ended. A failure is said
    /// once on stderr, and shown by `broker status` and the waiting producers'
    /// lines until the topic exists; it is tried again after a while.
    pub fn dead_letter_topic_made(&mut self, name: &str, made: DeadLetterTopic) {
        self.dead_letter_creations.remove(name);
        match made {
            DeadLetterTopic::Created => {
                eprintln!("broker: created the dead-letter topic {name}");
                self.dead_letter_topic_failures.remove(name);
            }
            DeadLetterTopic::Exists => {
                self.dead_letter_topic_failures.remove(name);
            }
            DeadLetterTopic::Later => {}
            DeadLetterTopic::Failed(why) => {
                if self.dead_letter_topic_failures.get(name) != Some(&why) {
                    eprintln!("broker: cannot create the dead-letter topic {name}: {why}; its dead letters wait, and so does the group");
                }
                self.dead_letter_topic_failures
                    .insert(name.to_string(), why);
                let retry = Instant::now() + DEAD_LETTER_TOPIC_RETRY;
                self.dead_letter_creations
                    .insert(name.to_string(), Creation::RetryAt(retry));
            }
        }
    }

    /// Why the dead letters of `topic` wait, if its dead-letter topic could not
    /// be created.
    pub(super) fn dead_letter_failure(&self, topic: &str) -> Option<String> {
        let name = dead_letter_topic(topic)?;
        let why = self.dead_letter_topic_failures.get(&name)?;
        Some(format!("cannot create the dead-letter topic {name}: {why}"))
    }

    /// `--max-attempts` in a ring of `topic`: none in a dead-letter topic, whose
    /// messages have nowhere further to go.
    pub(super) fn max_attempts_in(&self, topic: &str) -> Option<u32> {
        self.limits
            .max_attempts
            .filter(|_| dead_letter_topic(topic).is_some())
    }

    /// The stand-in producer that publishes group `group`'s dead letters, given
    /// a client entry of its own on first need.
    fn dead_letter_sender(&mut self, group: &Arc<str>) -> Option<Sender> {
        if let Some(&(client, generation)) = self.dead_letter_senders.get(group) {
            return Some(Sender { client, generation });
        }
        let slot = self.free_client_slot()?;
        self.generation = self.generation.wrapping_add(1).max(1);
        let id = format!("dlq:{group}");
        // Readers name what they read in the ring by this entry: an id too long
        // for it is left out there (they say `unknown`) rather than cut.
        let fits = shm_layout::names::check_stand_in_id(&id).is_ok();
        let record = ClientRecord {
            role: ClientRole::Producer,
            generation: self.generation,
            pid: std::process::id(),
            group: None,
            id: if fits { &id } else { "" },
        };
        // Removed from the start: it names records, and nobody registers as it.
        if !self
            .region
            .publish_client(slot, &record, client_state::REMOVED)
        {
            return None;
        }
        self.producers
            .insert((slot, self.generation), Arc::from(id.as_str()));
        self.dead_letter_senders
            .insert(group.clone(), (slot, self.generation));
        Some(Sender {
            client: slot,
            generation: self.generation,
        })
    }

    /// Says `what` on stderr, once per kind.
    fn report_once(&mut self, kind: &'static str, what: impl FnOnce() -> String) {
        if self.reported.insert(kind) {
            eprintln!("{}", what());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryLimits;
    use crate::test_region::test_region;

    #[test]
    fn a_dead_letter_topic_is_created_once_at_a_time_and_retried_after_a_while() {
        let t = test_region("dlq-retry", 16);
        let limits = RegistryLimits {
            session_timeout: Duration::from_secs(30),
            spill: false,
            assignment: control_protocol::Assignment::RoundRobin,
            groups_read_default: true,
            max_attempts: Some(3),
        };
        let mut reg = Registry::new(t.0.clone(), &[], limits);
        let want = |reg: &mut Registry| {
            reg.dead_letter_topics_wanted.insert("jobs.dlq".into());
        };
        let now = Instant::now();
        want(&mut reg);
        assert_eq!(reg.take_wanted_dead_letter_topics(now), ["jobs.dlq"]);
        want(&mut reg);
        assert!(
            reg.take_wanted_dead_letter_topics(now).is_empty(),
            "one creation at a time"
        );
        reg.dead_letter_topic_made("jobs.dlq", DeadLetterTopic::Failed("no room".into()));
        assert_eq!(
            reg.dead_letter_failure("jobs").as_deref(),
            Some("cannot create the dead-letter topic jobs.dlq: no room")
        );
        want(&mut reg);
        assert!(
            reg.take_wanted_dead_letter_topics(Instant::now())
                .is_empty(),
            "not again at once"
        );
        want(&mut reg);
        let later = Instant::now() + DEAD_LETTER_TOPIC_RETRY;
        assert_eq!(reg.take_wanted_dead_letter_topics(later), ["jobs.dlq"]);
        // Made by someone else meanwhile: the failure is forgotten.
        reg.dead_letter_topic_made("jobs.dlq", DeadLetterTopic::Exists);
        assert_eq!(reg.dead_letter_failure("jobs"), None);
        assert_eq!(reg.max_attempts_in("jobs"), Some(3));
        assert_eq!(
            reg.max_attempts_in("jobs.dlq"),
            None,
            "none in a dead-letter topic"
        );
    }
}
