//! OffsetFetch: a group's committed offsets, −1 where none was committed. A
//! shared-memory group's are its acknowledged positions, so Kafka's tools show
//! how far either kind has read.

use std::collections::HashMap;

use kacrab_protocol::generated::offset_fetch_request::OffsetFetchRequestData;
use kacrab_protocol::generated::offset_fetch_response::{
    OffsetFetchResponseData, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kacrab_protocol::KafkaString;

use super::{decode, respond, Context, Request, Undecodable};

pub fn answer(request: &Request, cx: &mut Context<'_>) -> Result<Vec<u8>, Undecodable> {
    let asked = decode(request, OffsetFetchRequestData::read)?;
    let committed: HashMap<(String, u32), u64> = cx
        .log
        .committed_offsets(asked.group_id.as_str())
        .into_iter()
        .map(|c| ((c.topic, c.partition), c.offset))
        .collect();
    let partition = |topic: &str, index: i32| OffsetFetchResponsePartition {
        partition_index: index,
        committed_offset: u32::try_from(index)
            .ok()
            .and_then(|i| committed.get(&(topic.to_string(), i)))
            .map_or(-1, |&o| i64::try_from(o).unwrap_or(i64::MAX)),
        metadata: Some(KafkaString::default()),
        ..Default::default()
    };
    let topics = match &asked.topics {
        Some(topics) => topics
            .iter()
            .map(|t| OffsetFetchResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partition_indexes
                    .iter()
                    .map(|&i| partition(t.name.as_str(), i))
                    .collect(),
                ..Default::default()
            })
            .collect(),
        // Every partition with a committed offset (v2 on).
        None => {
            let mut by_topic: Vec<OffsetFetchResponseTopic> = Vec::new();
            let mut keys: Vec<&(String, u32)> = committed.keys().collect();
            keys.sort();
            for (topic, p) in keys {
                let entry = partition(topic, *p as i32);
                match by_topic.last_mut() {
                    Some(t) if t.name.as_str() == topic => t.partitions.push(entry),
                    _ => by_topic.push(OffsetFetchResponseTopic {
                        name: KafkaString::from(topic.clone()),
                        partitions: vec![entry],
                        ..Default::default()
                    }),
                }
            }
            by_topic
        }
    };
    let response = OffsetFetchResponseData {
        topics,
        ..Default::default()
    };
    respond(request, |out, v| response.write(out, v))
}
