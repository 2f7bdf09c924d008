//! JoinGroup: a member joins a Kafka group and waits, as a pending request,
//! until the rebalance it started (or joined) completes. A name that belongs
//! to a shared-memory group is answered INCONSISTENT_GROUP_PROTOCOL: one
//! namespace, two kinds (SPEC §12).

use std::time::{Duration, Instant};

use kacrab_protocol::generated::join_group_request::JoinGroupRequestData;
use kacrab_protocol::generated::join_group_response::{
    JoinGroupResponseData, JoinGroupResponseMember,
};
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::coordinator::{JoinAsk, Joined};

pub struct JoinGroup {
    request: Request,
    group: String,
    member: String,
}

pub fn start(request: Request, cx: &mut Context<'_>) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, JoinGroupRequestData::read)?;
    let group = asked.group_id.as_str().to_string();
    let refused = |error| {
        let answer = Joined::refused(error, asked.member_id.as_str());
        Ok(Box::new(super::Ready(Some(encode(&request, &answer)?))) as Box<dyn Pending>)
    };
    if let Err(error) = cx.claim_group(&group) {
        return refused(error);
    }
    // v0 has no rebalance timeout: the session timeout is both.
    let rebalance_ms = if request.version >= 1 {
        asked.rebalance_timeout_ms
    } else {
        asked.session_timeout_ms
    };
    let ms = |v: i32| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    let ask = JoinAsk {
        group: group.clone(),
        member_id: asked.member_id.as_str().to_string(),
        client_id: request.client_id.clone(),
        client_host: cx.client_host(),
        session_timeout: ms(asked.session_timeout_ms),
        rebalance_timeout: ms(rebalance_ms),
        protocol_type: asked.protocol_type.as_str().to_string(),
        protocols: asked
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
    };
    let member_id = ask.member_id.clone();
    let outcome = cx.coordinator.join(ask, Instant::now());
    match outcome {
        Err(error) => {
            let frame = encode(&request, &Joined::refused(error, &member_id))?;
            cx.release_group_if_unused(&group);
            Ok(Box::new(super::Ready(Some(frame))))
        }
        Ok(member) => {
            cx.connection.group = Some(group.clone());
            Ok(Box::new(JoinGroup {
                request,
                group,
                member,
            }))
        }
    }
}

impl Pending for JoinGroup {
    fn poll(&mut self, cx: &mut Context<'_>, _now: Instant) -> Result<Answer, Undecodable> {
        match cx.coordinator.joined(&self.group, &self.member) {
            None => Ok(Answer::NotYet),
            Some(answer) => Ok(Answer::Done(Some(encode(&self.request, &answer)?))),
        }
    }
}

fn encode(request: &Request, answer: &Joined) -> Result<Vec<u8>, Undecodable> {
    let text = |s: &str| KafkaString::from(s.to_string());
    let response = JoinGroupResponseData {
        error_code: answer.error,
        generation_id: answer.generation,
        // Fields of v7 on (older versions leave them out).
        protocol_type: (request.version >= 7 && answer.error == code::NONE)
            .then(|| text(&answer.protocol_type)),
        protocol_name: (answer.error == code::NONE).then(|| text(&answer.protocol)),
        leader: text(&answer.leader),
        member_id: text(&answer.member_id),
        members: answer
            .members
            .iter()
            .map(|(id, metadata)| JoinGroupResponseMember {
                member_id: text(id),
                metadata: metadata.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
