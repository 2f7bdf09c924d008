//! CreateTopics: each topic created as `broker create-topic` would, with the
//! broker's ring geometry, on a thread of its own (reserving a large topic's
//! memory takes a while, and the listener serves others meanwhile).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use kacrab_protocol::generated::create_topics_request::CreateTopicsRequestData;
use kacrab_protocol::generated::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponseData,
};
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::log::CreateTopicError;

const INVALID_REQUEST: i16 = 42;
const INVALID_CONFIG: i16 = 40;

/// A topic to create, or why it is refused before trying.
struct Asked {
    name: String,
    partitions: u32,
    refused: Option<(i16, String)>,
}

type Results = Arc<Mutex<Option<Vec<CreatableTopicResult>>>>;

pub struct CreateTopics {
    request: Request,
    results: Results,
}

pub fn start(request: Request, cx: &mut Context<'_>) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, CreateTopicsRequestData::read)?;
    let validate_only = asked.validate_only;
    let version = request.version;
    let topics: Vec<Asked> = asked
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_str().to_string();
            let refused = if !matches!(t.replication_factor, 1 | -1) {
                Some((
                    code::INVALID_REPLICATION_FACTOR,
                    "the broker keeps one copy of each partition: the replication factor is 1"
                        .to_string(),
                ))
            } else if !t.assignments.is_empty() {
                Some((
                    INVALID_REQUEST,
                    "replica assignments are not served".to_string(),
                ))
            } else if !t.configs.is_empty() {
                Some((INVALID_CONFIG, "topic configs are not served".to_string()))
            } else if t.num_partitions == 0 || t.num_partitions < -1 {
                Some((
                    code::INVALID_PARTITIONS,
                    format!("{} partitions", t.num_partitions),
                ))
            } else {
                None
            };
            Asked {
                name,
                partitions: u32::try_from(t.num_partitions).unwrap_or(1),
                refused,
            }
        })
        .collect();
    let results: Results = Arc::default();
    let (log, out) = (cx.log.clone(), results.clone());
    (cx.spawn_creation)(Box::new(move || {
        let done = topics
            .into_iter()
            .map(|t| {
                let outcome = match t.refused {
                    Some(r) => Err(r),
                    None => log
                        .create_topic(&t.name, t.partitions, validate_only)
                        .map_err(|e| (error_code(&e), e.to_string())),
                };
                let (error_code, error_message) = match outcome {
                    Ok(()) => (code::NONE, None),
                    Err((c, m)) => (c, Some(KafkaString::from(m))),
                };
                CreatableTopicResult {
                    name: KafkaString::from(t.name),
                    error_code,
                    error_message,
                    // Fields of v5 on.
                    num_partitions: if error_code == code::NONE && version >= 5 {
                        t.partitions as i32
                    } else {
                        -1
                    },
                    replication_factor: if error_code == code::NONE && version >= 5 {
                        1
                    } else {
                        -1
                    },
                    ..Default::default()
                }
            })
            .collect();
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
    }));
    Ok(Box::new(CreateTopics { request, results }))
}

fn error_code(e: &CreateTopicError) -> i16 {
    match e {
        CreateTopicError::Exists(_) => code::TOPIC_ALREADY_EXISTS,
        CreateTopicError::InvalidName(_) => code::INVALID_TOPIC,
        CreateTopicError::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        CreateTopicError::Failed(_) => code::UNKNOWN_SERVER_ERROR,
    }
}

impl Pending for CreateTopics {
    fn poll(&mut self, _: &mut Context<'_>, _: Instant) -> Result<Answer, Undecodable> {
        let Some(topics) = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(Answer::NotYet);
        };
        let response = CreateTopicsResponseData {
            topics,
            ..Default::default()
        };
        respond(&self.request, |out, v| response.write(out, v)).map(|r| Answer::Done(Some(r)))
    }
}
