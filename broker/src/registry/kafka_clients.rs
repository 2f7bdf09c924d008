//! Kafka clients in the books: each client id that produces gets a stand-in
//! producer, `kafka:<client id>`, with a client entry of its own (records name
//! their producer by it), shared by that client's connections and retired like
//! any producer when the last one closes. What Kafka clients fetch is logged
//! here too, as a standalone reader's reads are. And the Kafka groups' names
//! live here beside the shared-memory groups': one namespace, two kinds.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use audit_format::index::TopicPartition;
use audit_format::records::DeliveryLines;
use control_protocol::Role;
use kafka_listener::coordinator::GroupView;
use kafka_listener::log::GroupClaimError;
use shm_layout::client::{ClientRecord, ClientRole};
use shm_layout::layout::client_state;
use shm_layout::ring::Sender;
use shm_layout::sys::wall_clock_micros;

use super::clients::{ActivitySample, Client};
use super::Registry;

/// Who produced a record a Kafka client fetched: its entry in the ring, or its
/// name from the persistence file.
pub enum ProducerOf {
    Entry(u32, u32),
    Named(Arc<str>),
}

impl Registry {
    /// The stand-in producer of Kafka client `client_id`, made on first need;
    /// None when every client entry is taken.
    pub fn kafka_producer(&mut self, client_id: &str) -> Option<Sender> {
        if let Some((client, generation, users)) = self.kafka_producers.get_mut(client_id) {
            *users += 1;
            return Some(Sender {
                client: *client,
                generation: *generation,
            });
        }
        let slot = self.free_client_slot()?;
        self.generation = self.generation.wrapping_add(1).max(1);
        let generation = self.generation;
        let id = format!("kafka:{client_id}");
        // Readers of the ring name records by this entry: an id the region
        // cannot hold is left out there (they say `unknown`); the files have it.
        let fits = shm_layout::names::check_stand_in_id(&id).is_ok();
        let record = ClientRecord {
            role: ClientRole::Producer,
            generation,
            pid: std::process::id(),
            group: None,
            id: if fits { &id } else { "" },
        };
        self.region
            .publish_client(slot, &record, client_state::ACTIVE);
        let id: Arc<str> = id.into();
        self.clients[slot as usize] = Some(Client {
            role: Role::Producer,
            id: id.clone(),
            group: None,
            pid: std::process::id(),
            activity: ActivitySample::new(),
        });
        self.producers.insert((slot, generation), id.clone());
        self.ids.insert((Role::Producer, id.to_string()), slot);
        self.kafka_producers
            .insert(client_id.to_string(), (slot, generation, 1));
        Some(Sender {
            client: slot,
            generation,
        })
    }

    /// One connection of Kafka client `client_id` no longer uses its stand-in
    /// producer; the last one's leaving retires it.
    pub fn release_kafka_producer(&mut self, client_id: &str) {
        let Some((client, _, users)) = self.kafka_producers.get_mut(client_id) else {
            return;
        };
        *users -= 1;
        if *users == 0 {
            let client = *client;
            self.kafka_producers.remove(client_id);
            self.leave(client);
        }
    }

    /// Every live group, oldest first: its name, its members' ids and its
    /// assignment.
    pub fn group_summaries(&self) -> Vec<(String, Vec<String>, control_protocol::Assignment)> {
        let mut groups: Vec<_> = self.groups.iter().flatten().collect();
        groups.sort_by_key(|g| g.created);
        groups
            .into_iter()
            .map(|g| {
                let members = g
                    .members
                    .iter()
                    .filter_map(|&m| Some(self.clients.get(m as usize)?.as_ref()?.id.to_string()))
                    .collect();
                (g.name.to_string(), members, g.assignment)
            })
            .collect()
    }

    /// Whether Kafka client `client_id` has a stand-in producer now.
    pub fn has_kafka_producer(&self, client_id: &str) -> bool {
        self.kafka_producers.contains_key(client_id)
    }

    /// Makes `name` a Kafka group's, unless a shared-memory group has it (live,
    /// or departed with a saved position).
    pub fn claim_kafka_group(&mut self, name: &str) -> Result<(), GroupClaimError> {
        shm_layout::names::check_name("group name", name)
            .map_err(|e| GroupClaimError::InvalidName(e.to_string()))?;
        if self.kafka_group_names.contains(name) {
            return Ok(());
        }
        if self.find_group(name).is_some() || self.departed.keys().any(|(g, _, _)| g == name) {
            return Err(GroupClaimError::SharedMemoryGroup(name.to_string()));
        }
        self.kafka_group_names.insert(name.to_string());
        Ok(())
    }

    /// `name` is no Kafka group's any more.
    pub fn release_kafka_group(&mut self, name: &str) {
        self.kafka_group_names.remove(name);
    }

    /// Whether `name` is a Kafka group's.
    pub fn is_kafka_group(&self, name: &str) -> bool {
        self.kafka_group_names.contains(name)
    }

    /// The Kafka groups with members, as their coordinator shows them now.
    pub fn set_kafka_groups(&mut self, groups: Vec<GroupView>) {
        self.kafka_groups = groups;
    }

    /// The Kafka groups with members.
    pub fn kafka_groups(&self) -> &[GroupView] {
        &self.kafka_groups
    }

    /// Logs the records a Kafka client fetched from partition `tp` (for
    /// `group`, or `-`; consumer `client_id`; attempt 1); the mark
    /// [`Registry::log_written_through`] takes to say when the lines are written.
    pub fn log_kafka_reads(
        &mut self,
        tp: &TopicPartition,
        group: Option<&str>,
        client_id: &str,
        reads: &[(u64, ProducerOf)],
    ) -> u64 {
        let mut lines = DeliveryLines::new_for(&tp.topic, tp.partition, wall_clock_micros());
        let group: Arc<str> = Arc::from(group.unwrap_or("-"));
        let consumer: Arc<str> = Arc::from(client_id);
        for (offset, producer) in reads {
            let name = match producer {
                ProducerOf::Entry(client, generation) => self
                    .producers
                    .get(&(*client, *generation))
                    .unwrap_or(&self.unknown)
                    .clone(),
                ProducerOf::Named(name) => name.clone(),
            };
            lines.push(&mut self.log_text, *offset, &name, &group, &consumer, 1);
        }
        self.log_mark()
    }

    /// Whether the consumption log's writer has written every line observed up
    /// to `mark`; if not, asks for the lines to be written now.
    pub fn log_written_through(&mut self, mark: u64) -> bool {
        let written = self.log_written.load(Ordering::Acquire) >= mark;
        self.log_wanted |= !written;
        written
    }
}
