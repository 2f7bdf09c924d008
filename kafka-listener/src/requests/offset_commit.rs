//! OffsetCommit: a Kafka group's committed offsets, answered once the state
//! file holding them is written (by the [`crate::committer::Committer`]).
//! The member and its generation are checked first, as Kafka does; a commit
//! with generation −1 and no member id comes from a consumer that assigns
//! itself partitions, allowed while the group has no members.

use std::time::Instant;

use kacrab_protocol::generated::offset_commit_request::OffsetCommitRequestData;
use kacrab_protocol::generated::offset_commit_response::{
    OffsetCommitResponseData, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::committer::Ticket;
use crate::log::GroupCommit;

pub struct OffsetCommit {
    request: Request,
    /// The answer, with NONE where the write decides.
    answer: OffsetCommitResponseData,
    ticket: Option<Ticket>,
}

pub fn start(request: Request, cx: &mut Context<'_>) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, OffsetCommitRequestData::read)?;
    let group = asked.group_id.as_str().to_string();
    let refused = cx.claim_group(&group).err().unwrap_or_else(|| {
        cx.coordinator.may_commit(
            &group,
            asked.generation_id_or_member_epoch,
            asked.member_id.as_str(),
            Instant::now(),
        )
    });
    let mut commits = Vec::new();
    let answer = OffsetCommitResponseData {
        topics: asked
            .topics
            .iter()
            .map(|t| {
                let partitions = cx.log.partitions(t.name.as_str()).unwrap_or(0);
                OffsetCommitResponseTopic {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let index = u32::try_from(p.partition_index).ok();
                            let offset = u64::try_from(p.committed_offset).ok();
                            let error_code = match (index, offset) {
                                _ if refused != code::NONE => refused,
                                (Some(i), _) if i >= partitions => code::UNKNOWN_TOPIC_OR_PARTITION,
                                (None, _) => code::UNKNOWN_TOPIC_OR_PARTITION,
                                (Some(_), None) => code::OFFSET_OUT_OF_RANGE,
                                (Some(partition), Some(offset)) => {
                                    commits.push(GroupCommit {
                                        group: group.clone(),
                                        topic: t.name.as_str().to_string(),
                                        partition,
                                        offset,
                                    });
                                    code::NONE
                                }
                            };
                            OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code,
                                ..Default::default()
                            }
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    };
    if refused == code::NONE {
        cx.connection.group = Some(group.clone());
    }
    let ticket = (!commits.is_empty()).then(|| cx.committer.submit(commits));
    if ticket.is_none() {
        cx.release_group_if_unused(&group);
    }
    Ok(Box::new(OffsetCommit {
        request,
        answer,
        ticket,
    }))
}

impl Pending for OffsetCommit {
    fn poll(&mut self, _cx: &mut Context<'_>, _now: Instant) -> Result<Answer, Undecodable> {
        if let Some(ticket) = &self.ticket {
            match ticket.outcome() {
                None => return Ok(Answer::NotYet),
                Some(Ok(())) => {}
                Some(Err(_)) => {
                    for p in self
                        .answer
                        .topics
                        .iter_mut()
                        .flat_map(|t| t.partitions.iter_mut())
                        .filter(|p| p.error_code == code::NONE)
                    {
                        p.error_code = code::KAFKA_STORAGE_ERROR;
                    }
                }
            }
        }
        let answer = &self.answer;
        Ok(Answer::Done(Some(respond(&self.request, |out, v| {
            answer.write(out, v)
        })?)))
    }
}
