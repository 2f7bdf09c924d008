//! ListGroups: every group of either kind. A shared-memory group's protocol
//! type is `consumer`, as a Kafka consumer group's: Kafka's tools
//! (kafka-python's admin client among them) describe only groups of that
//! type. Its state is `Stable` with members and `Empty` without. A Kafka group
//! is listed in its coordinator's state, or `Empty` when only its committed
//! offsets are left.

use kacrab_protocol::generated::list_groups_request::ListGroupsRequestData;
use kacrab_protocol::generated::list_groups_response::{ListGroupsResponseData, ListedGroup};
use kacrab_protocol::KafkaString;

use super::{decode, respond, Context, Request, Undecodable};

/// The protocol type of every group, as Kafka's tools show it: theirs describe
/// only groups of this type.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's name for the state of a group with `members` members.
pub fn state(members: usize) -> &'static str {
    if members == 0 {
        "Empty"
    } else {
        "Stable"
    }
}

/// Every group of either kind: its name, protocol type and state.
pub fn every_group(cx: &Context<'_>) -> Vec<(String, String, &'static str)> {
    let mut all: Vec<(String, String, &'static str)> = cx
        .log
        .groups()
        .into_iter()
        .map(|g| {
            (
                g.name,
                CONSUMER_PROTOCOL_TYPE.to_string(),
                state(g.members.len()),
            )
        })
        .collect();
    let live = cx.coordinator.views();
    for name in cx.log.kafka_groups_with_offsets() {
        if !live.iter().any(|g| g.name == name) {
            all.push((name, CONSUMER_PROTOCOL_TYPE.to_string(), state(0)));
        }
    }
    all.extend(
        live.into_iter()
            .map(|g| (g.name, g.protocol_type, g.state.name())),
    );
    all
}

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, ListGroupsRequestData::read)?;
    let wanted = |s: &str| {
        asked.states_filter.is_empty() || asked.states_filter.iter().any(|f| f.as_str() == s)
    };
    let response = ListGroupsResponseData {
        groups: every_group(cx)
            .into_iter()
            .filter(|(_, _, s)| wanted(s))
            .map(|(name, protocol_type, group_state)| ListedGroup {
                protocol_type: KafkaString::from(protocol_type),
                // A field of v4 on.
                group_state: if request.version >= 4 {
                    KafkaString::from(group_state.to_string())
                } else {
                    KafkaString::default()
                },
                group_id: KafkaString::from(name),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
