//! Requests the listener does not serve (an API or a version outside
//! [`super::SERVED`]): answered with Kafka's UNSUPPORTED_VERSION in the
//! request's own response shape, so that the client hears why and the
//! connection stays open. Where the shape carries an error per item (a topic,
//! a partition, a group, a resource), the request is read and every item it
//! names is answered so. An API the codec does not know, or a version of one it
//! cannot read, cannot be answered at all: its connection is closed.

use bytes::BytesMut;
use kacrab_protocol::generated::{
    create_partitions_request::CreatePartitionsRequestData,
    create_partitions_response::{CreatePartitionsResponseData, CreatePartitionsTopicResult},
    delete_records_request::DeleteRecordsRequestData,
    delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsResponseData, DeleteRecordsTopicResult,
    },
    delete_topics_request::DeleteTopicsRequestData,
    delete_topics_response::{DeletableTopicResult, DeleteTopicsResponseData},
    describe_configs_request::DescribeConfigsRequestData,
    describe_configs_response::{DescribeConfigsResponseData, DescribeConfigsResult},
    heartbeat_response::HeartbeatResponseData,
    init_producer_id_response::InitProducerIdResponseData,
    join_group_response::JoinGroupResponseData,
    leave_group_response::LeaveGroupResponseData,
    offset_commit_request::OffsetCommitRequestData,
    offset_commit_response::{
        OffsetCommitResponseData, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    },
    offset_fetch_request::OffsetFetchRequestData,
    offset_fetch_response::OffsetFetchResponseData,
    sasl_authenticate_response::SaslAuthenticateResponseData,
    sasl_handshake_response::SaslHandshakeResponseData,
    sync_group_response::SyncGroupResponseData,
};
use kacrab_protocol::version::{request_header_version, response_header_version};

use super::{code, decode, respond_with_header, Request, Undecodable};

const REFUSED: i16 = code::UNSUPPORTED_VERSION;

/// Whether the request header of `api_key` at `version` is the flexible one.
pub fn is_flexible(api_key: i16, version: i16) -> bool {
    request_header_version(api_key, version) >= 2
}

macro_rules! refusal {
    ($ty:ident) => {
        |out: &mut BytesMut, v: i16| {
            let r = $ty {
                error_code: code::UNSUPPORTED_VERSION,
                ..Default::default()
            };
            r.write(out, v)
        }
    };
}

pub fn answer(request: &Request) -> Result<Vec<u8>, Undecodable> {
    let flexible = response_header_version(request.api_key, request.version) >= 1;
    let (v, api) = (request.version, request.api_key);
    let respond = |write: &dyn Fn(&mut BytesMut, i16) -> kacrab_protocol::Result<()>| {
        respond_with_header(request, flexible, v, write)
    };
    match api {
        11 => respond(&refusal!(JoinGroupResponseData)),
        12 => respond(&refusal!(HeartbeatResponseData)),
        13 => respond(&refusal!(LeaveGroupResponseData)),
        14 => respond(&refusal!(SyncGroupResponseData)),
        17 => respond(&refusal!(SaslHandshakeResponseData)),
        36 => respond(&refusal!(SaslAuthenticateResponseData)),
        22 => respond(&refusal!(InitProducerIdResponseData)),
        8 => {
            let asked = decode(request, OffsetCommitRequestData::read)?;
            let r = OffsetCommitResponseData {
                topics: asked
                    .topics
                    .into_iter()
                    .map(|t| OffsetCommitResponseTopic {
                        name: t.name,
                        topic_id: t.topic_id,
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: REFUSED,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        9 => {
            decode(request, OffsetFetchRequestData::read)?;
            let r = OffsetFetchResponseData {
                error_code: REFUSED,
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        20 => {
            let asked = decode(request, DeleteTopicsRequestData::read)?;
            let names: Vec<_> = if asked.topics.is_empty() {
                asked.topic_names.into_iter().map(Some).collect()
            } else {
                asked.topics.into_iter().map(|t| t.name).collect()
            };
            let r = DeleteTopicsResponseData {
                responses: names
                    .into_iter()
                    .map(|name| DeletableTopicResult {
                        name,
                        error_code: REFUSED,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        21 => {
            let asked = decode(request, DeleteRecordsRequestData::read)?;
            let r = DeleteRecordsResponseData {
                topics: asked
                    .topics
                    .into_iter()
                    .map(|t| DeleteRecordsTopicResult {
                        name: t.name,
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| DeleteRecordsPartitionResult {
                                partition_index: p.partition_index,
                                low_watermark: -1,
                                error_code: REFUSED,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        32 => {
            let asked = decode(request, DescribeConfigsRequestData::read)?;
            let r = DescribeConfigsResponseData {
                results: asked
                    .resources
                    .into_iter()
                    .map(|res| DescribeConfigsResult {
                        error_code: REFUSED,
                        resource_type: res.resource_type,
                        resource_name: res.resource_name,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        37 => {
            let asked = decode(request, CreatePartitionsRequestData::read)?;
            let r = CreatePartitionsResponseData {
                results: asked
                    .topics
                    .into_iter()
                    .map(|t| CreatePartitionsTopicResult {
                        name: t.name,
                        error_code: REFUSED,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond(&|out, v| r.write(out, v))
        }
        _ => Err(Undecodable(format!(
            "API key {api} version {v} is not served (docs/kafka.md lists what is)"
        ))),
    }
}
