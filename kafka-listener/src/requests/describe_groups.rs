//! DescribeGroups: a shared-memory group's state, its assignment as the
//! protocol, and its consumers as members (client host `shm`; no metadata or
//! assignment bytes: the broker hands out their turns itself). A Kafka group as
//! its coordinator has it: members with their metadata and the leader's
//! assignment for each. A Kafka group with only committed offsets left is
//! `Empty`; an unknown group is `Dead` with no members, as Kafka answers.

use bytes::Bytes;
use kacrab_protocol::generated::describe_groups_request::DescribeGroupsRequestData;
use kacrab_protocol::generated::describe_groups_response::{
    DescribeGroupsResponseData, DescribedGroup, DescribedGroupMember,
};
use kacrab_protocol::KafkaString;

use super::list_groups::{state, CONSUMER_PROTOCOL_TYPE};
use super::{decode, respond, Context, Request, Undecodable};

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, DescribeGroupsRequestData::read)?;
    let live = cx.log.groups();
    let kafka_empty = cx.log.kafka_groups_with_offsets();
    let text = |s: &str| KafkaString::from(s.to_string());
    let response = DescribeGroupsResponseData {
        groups: asked
            .groups
            .iter()
            .map(|name| match live.iter().find(|g| g.name == name.as_str()) {
                None => match cx.coordinator.view(name.as_str()) {
                    Some(g) => DescribedGroup {
                        group_id: name.clone(),
                        group_state: text(g.state.name()),
                        protocol_type: text(&g.protocol_type),
                        protocol_data: text(&g.protocol),
                        members: g
                            .members
                            .into_iter()
                            .map(|m| DescribedGroupMember {
                                member_id: text(&m.member_id),
                                client_id: text(&m.client_id),
                                client_host: text(&m.client_host),
                                member_metadata: m.metadata,
                                member_assignment: m.assignment,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                    None if kafka_empty.iter().any(|n| n == name.as_str()) => DescribedGroup {
                        group_id: name.clone(),
                        group_state: text(state(0)),
                        protocol_type: text(CONSUMER_PROTOCOL_TYPE),
                        ..Default::default()
                    },
                    None => DescribedGroup {
                        group_id: name.clone(),
                        group_state: text("Dead"),
                        ..Default::default()
                    },
                },
                Some(g) => DescribedGroup {
                    group_id: name.clone(),
                    group_state: text(state(g.members.len())),
                    protocol_type: text(CONSUMER_PROTOCOL_TYPE),
                    protocol_data: text(&g.assignment),
                    members: g
                        .members
                        .iter()
                        .map(|m| DescribedGroupMember {
                            member_id: text(m),
                            client_id: text(m),
                            client_host: text("shm"),
                            member_metadata: Bytes::new(),
                            member_assignment: Bytes::new(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            })
            .collect(),
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
