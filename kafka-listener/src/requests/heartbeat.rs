//! Heartbeat: a member is alive; the answer tells it whether to join again.

use std::time::Instant;

use kacrab_protocol::generated::heartbeat_request::HeartbeatRequestData;
use kacrab_protocol::generated::heartbeat_response::HeartbeatResponseData;

use super::{decode, respond, Context, Request, Undecodable};

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, HeartbeatRequestData::read)?;
    let group = asked.group_id.as_str();
    let error_code = cx.coordinator.heartbeat(
        group,
        asked.generation_id,
        asked.member_id.as_str(),
        Instant::now(),
    );
    cx.connection.group = Some(group.to_string());
    let response = HeartbeatResponseData {
        error_code,
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
