//! ListOffsets: a partition's earliest offset (-2), its end (-1), or the first
//! offset published at or after a time (milliseconds since the Unix epoch).

use kacrab_protocol::generated::list_offsets_request::ListOffsetsRequestData;
use kacrab_protocol::generated::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponseData, ListOffsetsTopicResponse,
};

use super::{code, decode, name, respond, Context, Request, Undecodable};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, ListOffsetsRequestData::read)?;
    let topics = asked
        .topics
        .iter()
        .map(|t| ListOffsetsTopicResponse {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    partition(
                        cx,
                        name(&t.name),
                        p.partition_index,
                        p.timestamp,
                        request.version,
                    )
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let response = ListOffsetsResponseData {
        topics,
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}

fn partition(
    cx: &Context<'_>,
    topic: &str,
    index: i32,
    timestamp: i64,
    version: i16,
) -> ListOffsetsPartitionResponse {
    let unknown = ListOffsetsPartitionResponse {
        partition_index: index,
        error_code: code::UNKNOWN_TOPIC_OR_PARTITION,
        ..Default::default()
    };
    let Ok(p) = u32::try_from(index) else {
        return unknown;
    };
    let Some(offsets) = cx.log.offsets(topic, p) else {
        return unknown;
    };
    let offset = match timestamp {
        LATEST => offsets.end,
        EARLIEST => offsets.earliest,
        t if t >= 0 => {
            let at_us = (t as u64).saturating_mul(1000);
            match cx.log.offset_for_time(topic, p, at_us) {
                Some(o) => o,
                // None published at or after it: Kafka answers offset -1.
                None => {
                    return ListOffsetsPartitionResponse {
                        partition_index: index,
                        ..Default::default()
                    }
                }
            }
        }
        // -3 (the largest timestamp) and anything else.
        _ => {
            return ListOffsetsPartitionResponse {
                partition_index: index,
                error_code: code::UNSUPPORTED_VERSION,
                ..Default::default()
            }
        }
    };
    ListOffsetsPartitionResponse {
        partition_index: index,
        offset: offset as i64,
        // A field of v4 on.
        leader_epoch: if version >= 4 { 0 } else { -1 },
        ..Default::default()
    }
}
