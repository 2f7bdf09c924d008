//! SyncGroup: a follower waits for the leader's; the leader's brings every
//! member's assignment, passed on as it came.

use std::time::Instant;

use kacrab_protocol::generated::sync_group_request::SyncGroupRequestData;
use kacrab_protocol::generated::sync_group_response::SyncGroupResponseData;
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::coordinator::Synced;

pub struct SyncGroup {
    request: Request,
    group: String,
    member: String,
}

pub fn start(request: Request, cx: &mut Context<'_>) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, SyncGroupRequestData::read)?;
    let group = asked.group_id.as_str().to_string();
    let member = asked.member_id.as_str().to_string();
    let assignments = asked
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
        .collect();
    let outcome = cx.coordinator.sync(
        &group,
        asked.generation_id,
        &member,
        assignments,
        Instant::now(),
    );
    if let Err(error) = outcome {
        let answer = Synced::refused(error);
        return Ok(Box::new(super::Ready(Some(encode(&request, &answer)?))));
    }
    cx.connection.group = Some(group.clone());
    Ok(Box::new(SyncGroup {
        request,
        group,
        member,
    }))
}

impl Pending for SyncGroup {
    fn poll(&mut self, cx: &mut Context<'_>, _now: Instant) -> Result<Answer, Undecodable> {
        match cx.coordinator.synced(&self.group, &self.member) {
            None => Ok(Answer::NotYet),
            Some(answer) => Ok(Answer::Done(Some(encode(&self.request, &answer)?))),
        }
    }
}

fn encode(request: &Request, answer: &Synced) -> Result<Vec<u8>, Undecodable> {
    let named = |s: &str| {
        (request.version >= 5 && answer.error == code::NONE)
            .then(|| KafkaString::from(s.to_string()))
    };
    let response = SyncGroupResponseData {
        error_code: answer.error,
        protocol_type: named(&answer.protocol_type),
        protocol_name: named(&answer.protocol),
        assignment: answer.assignment.clone(),
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
