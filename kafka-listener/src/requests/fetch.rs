//! Fetch: each partition's records from the asked offset on, from the ring or
//! the file below it, written as one record batch per partition straight into
//! the response. Until `min_bytes` are gathered the request waits, up to
//! `max_wait_ms`, going on from where each partition stopped. Every record
//! handed out gets its consumption-log line (group `-`, consumer the client
//! id), and the response goes only once those lines are written: a broker
//! killed after answering has logged what it answered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kacrab_protocol::generated::fetch_request::FetchRequestData;
use kacrab_protocol::generated::fetch_response::{
    FetchResponseData, FetchableTopicResponse, PartitionData,
};
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::batch::BatchWriter;
use crate::log::{ReadError, StoredRecord};

/// The most one response carries, whatever the client asks: a bound on what a
/// connection holds.
pub const MAX_FETCH_RESPONSE: usize = 8 << 20;
/// The longest a fetch waits for `min_bytes` when its client asked for longer.
const MAX_WAIT: Duration = Duration::from_secs(30);

struct Part {
    topic: KafkaString,
    index: i32,
    /// The next offset to read.
    next: u64,
    max_bytes: usize,
    /// The partition's record batch so far.
    batch: Vec<u8>,
    error: i16,
    high_watermark: i64,
    log_start: i64,
}

pub struct Fetch {
    request: Request,
    parts: Vec<Part>,
    min_bytes: usize,
    max_bytes: usize,
    deadline: Instant,
    /// The consumption log must have written this before the answer goes.
    log_mark: Option<u64>,
    /// Gathered: waiting only for the log.
    gathered: bool,
}

pub fn start(request: Request, now: Instant) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, FetchRequestData::read)?;
    let wait = Duration::from_millis(u64::try_from(asked.max_wait_ms).unwrap_or(0));
    let mut parts = Vec::new();
    for t in asked.topics {
        for p in t.partitions {
            parts.push(Part {
                topic: t.topic.clone(),
                index: p.partition,
                next: u64::try_from(p.fetch_offset).unwrap_or(u64::MAX),
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                batch: Vec::new(),
                error: code::NONE,
                high_watermark: -1,
                log_start: -1,
            });
        }
    }
    Ok(Box::new(Fetch {
        request,
        parts,
        min_bytes: usize::try_from(asked.min_bytes).unwrap_or(0),
        max_bytes: usize::try_from(asked.max_bytes)
            .unwrap_or(0)
            .min(MAX_FETCH_RESPONSE),
        deadline: now + wait.min(MAX_WAIT),
        log_mark: None,
        gathered: false,
    }))
}

impl Fetch {
    fn gathered_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.batch.len()).sum()
    }

    /// Reads on in every partition, within the budgets.
    fn gather(&mut self, cx: &mut Context<'_>) {
        let client = self.request.client_id.clone();
        let group = cx.fetching_group(&client);
        let mut total = self.gathered_bytes();
        for p in &mut self.parts {
            if p.error != code::NONE {
                continue;
            }
            let Some(offsets) = u32::try_from(p.index)
                .ok()
                .and_then(|i| cx.log.offsets(p.topic.as_str(), i))
            else {
                p.error = code::UNKNOWN_TOPIC_OR_PARTITION;
                continue;
            };
            p.high_watermark = offsets.end as i64;
            p.log_start = offsets.earliest as i64;
            if p.next < offsets.earliest || p.next > offsets.end {
                p.error = code::OFFSET_OUT_OF_RANGE;
                continue;
            }
            if p.next == offsets.end || total >= self.max_bytes || p.batch.len() >= p.max_bytes {
                continue;
            }
            let (start_len, start_next) = (p.batch.len(), p.next);
            let mut batch = std::mem::take(&mut p.batch);
            // Each gathering turn adds a batch of its own to the partition's.
            let mut writer: Option<BatchWriter> = None;
            let (part_budget, total_budget) = (p.max_bytes, self.max_bytes);
            let mut next = p.next;
            let first_of_response = total == 0;
            let mut visit = |r: StoredRecord<'_>| {
                let size = BatchWriter::record_size(
                    r.key.map(<[u8]>::len),
                    r.payload.len(),
                    r.headers.len(),
                );
                let len = start_len
                    + writer
                        .as_ref()
                        .map_or(crate::batch::HEADER_LEN, |w| w.len(&batch))
                    + size;
                // At least one record goes, whatever its size: the client must
                // be able to make progress (Kafka's rule).
                let first = first_of_response && next == start_next;
                if !first && (len > part_budget || total + (len - start_len) > total_budget) {
                    return false;
                }
                let ms = (r.timestamp_us / 1000) as i64;
                let w = writer.get_or_insert_with(|| BatchWriter::begin(&mut batch, r.offset, ms));
                w.push(&mut batch, r.offset, ms, r.key, r.payload, r.headers);
                next = r.offset + 1;
                true
            };
            let read = cx.log.read(
                p.topic.as_str(),
                p.index as u32,
                p.next,
                group.as_deref(),
                &client,
                &mut visit,
            );
            if let Some(w) = writer {
                w.finish(&mut batch);
            }
            p.batch = batch;
            match read {
                Ok(log_mark) => {
                    p.next = next;
                    if let Some(mark) = log_mark {
                        self.log_mark = Some(self.log_mark.map_or(mark, |m| m.max(mark)));
                    }
                }
                Err(ReadError::UnknownPartition) => p.error = code::UNKNOWN_TOPIC_OR_PARTITION,
                Err(ReadError::OutOfRange(_)) => p.error = code::OFFSET_OUT_OF_RANGE,
                Err(ReadError::Failed(_)) => p.error = code::KAFKA_STORAGE_ERROR,
            }
            total += p.batch.len() - start_len;
        }
    }

    fn response(&mut self) -> Result<Vec<u8>, Undecodable> {
        let version = self.request.version;
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        for p in &mut self.parts {
            let records = Bytes::from(std::mem::take(&mut p.batch));
            let data = PartitionData {
                partition_index: p.index,
                error_code: p.error,
                high_watermark: p.high_watermark,
                last_stable_offset: p.high_watermark,
                // A field of v5 on.
                log_start_offset: if version >= 5 { p.log_start } else { -1 },
                records: Some(records),
                ..Default::default()
            };
            match topics.last_mut() {
                Some(t) if t.topic == p.topic => t.partitions.push(data),
                _ => topics.push(FetchableTopicResponse {
                    topic: p.topic.clone(),
                    partitions: vec![data],
                    ..Default::default()
                }),
            }
        }
        let response = FetchResponseData {
            responses: topics,
            ..Default::default()
        };
        respond(&self.request, |out, v| response.write(out, v))
    }
}

impl Pending for Fetch {
    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<Answer, Undecodable> {
        if !self.gathered {
            self.gather(cx);
            let enough = self.gathered_bytes() >= self.min_bytes.max(1)
                || self.parts.iter().any(|p| p.error != code::NONE);
            if !enough && now < self.deadline {
                return Ok(Answer::NotYet);
            }
            self.gathered = true;
        }
        if let Some(mark) = self.log_mark {
            if !cx.log.log_written(mark) {
                return Ok(Answer::NotYet);
            }
        }
        Ok(Answer::Done(Some(self.response()?)))
    }
}
