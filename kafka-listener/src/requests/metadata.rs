//! Metadata: one broker (node 0, the advertised address), the leader of every
//! partition. Topics are never created by a Metadata request: an unknown one
//! is answered UNKNOWN_TOPIC_OR_PARTITION (create it with CreateTopics or
//! `broker create-topic`).

use kacrab_protocol::generated::metadata_request::MetadataRequestData;
use kacrab_protocol::generated::metadata_response::{
    MetadataResponseBroker, MetadataResponseData, MetadataResponsePartition, MetadataResponseTopic,
};
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Context, Request, Undecodable};

/// The broker's node id: it is the only one.
pub const NODE_ID: i32 = 0;
/// The cluster id Metadata reports.
const CLUSTER_ID: &str = "mini-kafka";

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, MetadataRequestData::read)?;
    // v0: an empty list means every topic; v1 on: a null list does.
    let wanted: Option<Vec<String>> = match asked.topics {
        None => None,
        Some(t) if t.is_empty() && request.version == 0 => None,
        Some(t) => Some(
            t.iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_string()))
                .collect(),
        ),
    };
    let topics = match wanted {
        None => cx
            .log
            .topics()
            .into_iter()
            .map(|t| topic(&t.name, Some(t.partitions), request.version))
            .collect(),
        Some(names) => names
            .iter()
            .map(|n| topic(n, cx.log.partitions(n), request.version))
            .collect(),
    };
    let (host, port) = cx.advertised;
    let response = MetadataResponseData {
        brokers: vec![MetadataResponseBroker {
            node_id: NODE_ID,
            host: KafkaString::from(host.to_string()),
            port: i32::from(port),
            ..Default::default()
        }],
        // Fields of v2 and v1 on.
        cluster_id: (request.version >= 2).then(|| KafkaString::from(CLUSTER_ID.to_string())),
        controller_id: if request.version >= 1 { NODE_ID } else { -1 },
        topics,
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}

fn topic(name: &str, partitions: Option<u32>, version: i16) -> MetadataResponseTopic {
    let Some(n) = partitions else {
        return MetadataResponseTopic {
            error_code: code::UNKNOWN_TOPIC_OR_PARTITION,
            name: Some(KafkaString::from(name.to_string())),
            ..Default::default()
        };
    };
    MetadataResponseTopic {
        name: Some(KafkaString::from(name.to_string())),
        partitions: (0..n as i32)
            .map(|p| MetadataResponsePartition {
                partition_index: p,
                leader_id: NODE_ID,
                // A field of v7 on.
                leader_epoch: if version >= 7 { 0 } else { -1 },
                replica_nodes: vec![NODE_ID],
                isr_nodes: vec![NODE_ID],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
