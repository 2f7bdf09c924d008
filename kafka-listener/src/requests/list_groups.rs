//! ListGroups: every live group. A shared-memory group's protocol type is
//! `consumer`, as a Kafka consumer group's: Kafka's tools (kafka-python's admin
//! client among them) describe only groups of that type. Its state is `Stable`
//! with members and `Empty` without.

use kacrab_protocol::generated::list_groups_request::ListGroupsRequestData;
use kacrab_protocol::generated::list_groups_response::{ListGroupsResponseData, ListedGroup};
use kacrab_protocol::KafkaString;

use super::{decode, respond, Context, Request, Undecodable};

/// The protocol type of a shared-memory group, as Kafka's tools show it.
pub const SHARED_MEMORY: &str = "consumer";

/// Kafka's name for the state of a group with `members` members.
pub fn state(members: usize) -> &'static str {
    if members == 0 {
        "Empty"
    } else {
        "Stable"
    }
}

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, ListGroupsRequestData::read)?;
    let wanted = |s: &str| {
        asked.states_filter.is_empty() || asked.states_filter.iter().any(|f| f.as_str() == s)
    };
    let response = ListGroupsResponseData {
        groups: cx
            .log
            .groups()
            .into_iter()
            .filter(|g| wanted(state(g.members.len())))
            .map(|g| ListedGroup {
                protocol_type: KafkaString::from(SHARED_MEMORY.to_string()),
                // A field of v4 on.
                group_state: if request.version >= 4 {
                    KafkaString::from(state(g.members.len()).to_string())
                } else {
                    KafkaString::default()
                },
                group_id: KafkaString::from(g.name),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
