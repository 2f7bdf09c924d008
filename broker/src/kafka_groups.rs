//! The Kafka groups as `broker status` and the metrics show them: each with
//! its coordinator's state, generation, protocol and members, and per
//! topic-partition its committed offset, the partition's end and the lag
//! between them. A Kafka group with no members and committed offsets is
//! `Empty`, as Kafka's tools list it.

use std::collections::BTreeMap;

use kafka_listener::coordinator::{GroupView, MemberView};

use crate::audit::state::{Commit, DEFAULT_PARTITION, DEFAULT_TOPIC};
use crate::registry::Registry;
use crate::topics::Topics;

/// One Kafka group's committed offset in one topic-partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedPartition {
    pub topic: String,
    pub partition: u32,
    pub committed: u64,
    /// The partition's next offset, if it still exists.
    pub end: Option<u64>,
}

impl CommittedPartition {
    pub fn lag(&self) -> Option<u64> {
        self.end.map(|e| e.saturating_sub(self.committed))
    }
}

/// A Kafka group, for the operator.
#[derive(Debug, Clone)]
pub struct KafkaGroupReport {
    pub name: String,
    pub state: &'static str,
    pub generation: i32,
    pub protocol: String,
    pub members: Vec<MemberView>,
    pub partitions: Vec<CommittedPartition>,
}

/// Every Kafka group: those with members, and those with committed offsets
/// only; by name.
pub fn kafka_groups(
    registry: &Registry,
    commits: &[Commit],
    topics: &Topics,
    default_end: u64,
) -> Vec<KafkaGroupReport> {
    let end_of = |topic: &str, partition: u32| {
        if topic == DEFAULT_TOPIC {
            (partition == DEFAULT_PARTITION).then_some(default_end)
        } else {
            topics
                .ring_of(topic, partition)
                .map(|r| r.region.next_offset())
        }
    };
    let mut groups: BTreeMap<String, KafkaGroupReport> = BTreeMap::new();
    for g in registry.kafka_groups() {
        groups.insert(g.name.clone(), from_view(g));
    }
    for c in commits {
        let g = groups
            .entry(c.name.clone())
            .or_insert_with(|| KafkaGroupReport {
                name: c.name.clone(),
                state: "Empty",
                generation: 0,
                protocol: String::new(),
                members: Vec::new(),
                partitions: Vec::new(),
            });
        g.partitions.push(CommittedPartition {
            topic: c.topic.clone(),
            partition: c.partition,
            committed: c.offset,
            end: end_of(&c.topic, c.partition),
        });
    }
    let mut all: Vec<KafkaGroupReport> = groups.into_values().collect();
    for g in &mut all {
        g.partitions
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    }
    all
}

fn from_view(g: &GroupView) -> KafkaGroupReport {
    KafkaGroupReport {
        name: g.name.clone(),
        state: g.state.name(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        members: g.members.clone(),
        partitions: Vec::new(),
    }
}

/// The JSON of `broker status`'s `kafka_groups`.
pub fn to_json(groups: &[KafkaGroupReport]) -> serde_json::Value {
    serde_json::Value::Array(
        groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name,
                    "state": g.state,
                    "generation": g.generation,
                    "protocol": g.protocol,
                    "members": g.members.iter().map(|m| serde_json::json!({
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                    })).collect::<Vec<_>>(),
                    "partitions": g.partitions.iter().map(|p| serde_json::json!({
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed": p.committed,
                        "end_offset": p.end,
                        "lag": p.lag(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
