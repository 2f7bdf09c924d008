//! LeaveGroup: members leave (one in v0–2, a list from v3); the rest rebalance.

use std::time::Instant;

use kacrab_protocol::generated::leave_group_request::LeaveGroupRequestData;
use kacrab_protocol::generated::leave_group_response::{LeaveGroupResponseData, MemberResponse};

use super::{code, decode, respond, Context, Request, Undecodable};

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, LeaveGroupRequestData::read)?;
    let group = asked.group_id.as_str();
    let now = Instant::now();
    let response = if request.version <= 2 {
        LeaveGroupResponseData {
            error_code: cx.coordinator.leave(group, asked.member_id.as_str(), now),
            ..Default::default()
        }
    } else {
        LeaveGroupResponseData {
            members: asked
                .members
                .iter()
                .map(|m| MemberResponse {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    error_code: cx.coordinator.leave(group, m.member_id.as_str(), now),
                    ..Default::default()
                })
                .collect(),
            error_code: code::NONE,
            ..Default::default()
        }
    };
    respond(request, |out, v| response.write(out, v))
}
