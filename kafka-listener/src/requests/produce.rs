//! Produce: each partition's batches are checked whole (length, magic, CRC,
//! codec, every record), then their records appended to the partition's ring
//! as the stand-in producer `kafka:<client id>`, in order. What does not fit in
//! the ring now is appended as room frees up, until the request's timeout.
//! `acks` 0 is never answered; 1 is answered once every record is in its ring;
//! all (-1) under `--fsync` once every record is on disk as well.
//!
//! A record's key and value go to the ring as they are (a null value, Kafka's
//! tombstone, as an empty payload), with its headers; its timestamp is the
//! time the broker appended it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kacrab_protocol::generated::produce_request::ProduceRequestData;
use kacrab_protocol::generated::produce_response::{
    PartitionProduceResponse, ProduceResponseData, TopicProduceResponse,
};
use kacrab_protocol::KafkaString;

use super::{code, decode, respond, Answer, Context, Pending, Request, Undecodable};
use crate::batch::{batches, BatchError, Codec, Records};
use crate::frame::MAX_KAFKA_REQUEST;
use crate::log::{AppendError, ProducerHandle, RecordToAppend};

/// The longest a produce waits for room when its client asked for longer.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// One partition of the request and how far its records got.
struct Part {
    topic: KafkaString,
    index: i32,
    records: Bytes,
    /// Where appending goes on: the byte of `records` where the batch being
    /// appended starts, and that batch once begun.
    batch_at: usize,
    begun: Option<Begun>,
    base_offset: Option<u64>,
    /// The offset after the last record appended.
    end: u64,
    /// Every record is in the ring (or the partition failed).
    placed: bool,
    error: i16,
    message: Option<String>,
}

pub struct Produce {
    request: Request,
    acks: i16,
    deadline: Instant,
    parts: Vec<Part>,
    checked: bool,
}

pub fn start(request: Request, now: Instant) -> Result<Box<dyn Pending>, Undecodable> {
    let asked = decode(&request, ProduceRequestData::read)?;
    let timeout = Duration::from_millis(u64::try_from(asked.timeout_ms).unwrap_or(0));
    let mut parts = Vec::new();
    for t in asked.topic_data {
        for p in t.partition_data {
            parts.push(Part {
                topic: t.name.clone(),
                index: p.index,
                records: p.records.unwrap_or_default(),
                batch_at: 0,
                begun: None,
                base_offset: None,
                end: 0,
                placed: false,
                error: code::NONE,
                message: None,
            });
        }
    }
    let mut produce = Produce {
        request,
        acks: asked.acks,
        deadline: now + timeout.min(MAX_TIMEOUT),
        parts,
        checked: false,
    };
    if asked.transactional_id.is_some() {
        produce.fail_all(code::UNSUPPORTED_VERSION, "transactions are not served");
    } else if !(-1..=1).contains(&produce.acks) {
        produce.fail_all(code::INVALID_REQUIRED_ACKS, "acks must be 0, 1 or -1");
    }
    Ok(Box::new(produce))
}

impl Produce {
    fn fail_all(&mut self, error: i16, message: &str) {
        for p in &mut self.parts {
            p.fail(error, message.to_string());
        }
        self.checked = true;
    }

    /// Checks every partition's batches once, before anything is appended.
    fn check(&mut self, cx: &mut Context<'_>) {
        for p in &mut self.parts {
            if p.placed {
                continue;
            }
            let known = u32::try_from(p.index)
                .ok()
                .zip(cx.log.partitions(p.topic.as_str()))
                .is_some_and(|(i, n)| i < n);
            if !known {
                p.fail(
                    code::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("no topic-partition {}/{}", p.topic.as_str(), p.index),
                );
                continue;
            }
            if let Err((error, message)) = check_batches(&p.records, &mut cx.connection.inflated) {
                p.fail(error, message);
            }
        }
        self.checked = true;
    }

    fn producer(&self, cx: &mut Context<'_>) -> Result<ProducerHandle, String> {
        let id = &self.request.client_id;
        match &cx.connection.producer {
            Some((known, handle)) if known == id => return Ok(*handle),
            Some((_, old)) => cx.log.release_producer(*old),
            None => {}
        }
        cx.connection.producer = None;
        let handle = cx.log.producer(id)?;
        cx.connection.producer = Some((id.clone(), handle));
        Ok(handle)
    }

    /// Appends what fits of each partition not yet placed.
    fn append(&mut self, cx: &mut Context<'_>) {
        if self.parts.iter().all(|p| p.placed) {
            return;
        }
        let producer = match self.producer(cx) {
            Ok(h) => h,
            Err(why) => {
                for p in self.parts.iter_mut().filter(|p| !p.placed) {
                    p.fail(code::UNKNOWN_SERVER_ERROR, why.clone());
                }
                return;
            }
        };
        for p in self.parts.iter_mut().filter(|p| !p.placed) {
            p.append(cx, producer);
        }
    }

    fn response(&self) -> Result<Option<Vec<u8>>, Undecodable> {
        if self.acks == 0 {
            return Ok(None);
        }
        let mut topics: Vec<TopicProduceResponse> = Vec::new();
        for p in &self.parts {
            let r = PartitionProduceResponse {
                index: p.index,
                error_code: p.error,
                base_offset: p.base_offset.map_or(-1, |o| o as i64),
                // A field of v8 on.
                error_message: p
                    .message
                    .clone()
                    .filter(|_| self.request.version >= 8)
                    .map(KafkaString::from),
                ..Default::default()
            };
            match topics.last_mut() {
                Some(t) if t.name == p.topic => t.partition_responses.push(r),
                _ => topics.push(TopicProduceResponse {
                    name: p.topic.clone(),
                    partition_responses: vec![r],
                    ..Default::default()
                }),
            }
        }
        let response = ProduceResponseData {
            responses: topics,
            ..Default::default()
        };
        respond(&self.request, |out, v| response.write(out, v)).map(Some)
    }
}

impl Part {
    fn fail(&mut self, error: i16, message: String) {
        if !self.placed || self.error == code::NONE {
            self.error = error;
            self.message = Some(message);
        }
        self.placed = true;
    }

    /// Appends as many of its records as fit now, going on from where the last
    /// call stopped: a produce waiting for room reads each record once.
    fn append(&mut self, cx: &mut Context<'_>, producer: ProducerHandle) {
        let Ok(partition) = u32::try_from(self.index) else {
            return;
        };
        let records = self.records.clone();
        let log = cx.log;
        while self.batch_at < records.len() {
            if self.begun.is_none() {
                // The batch was checked whole (its CRC too) before anything was
                // appended; it is read once more here, then never again.
                let Some(Ok(batch)) = batches(&records[self.batch_at..]).next() else {
                    return self.fail(code::CORRUPT_MESSAGE, "corrupt batch".into());
                };
                let inflated = if batch.codec() == Codec::None {
                    None
                } else {
                    let mut inflated = Vec::new();
                    if batch
                        .records_data(&mut inflated, MAX_KAFKA_REQUEST)
                        .is_err()
                    {
                        return self.fail(code::CORRUPT_MESSAGE, "corrupt batch".into());
                    }
                    Some(inflated)
                };
                self.begun = Some(Begun {
                    inflated,
                    len: batch.len(),
                    next_at: 0,
                    left: batch.record_count(),
                });
            }
            let begun = self.begun.as_ref().expect("begun above");
            let data: &[u8] = match &begun.inflated {
                Some(v) => &v[begun.next_at..],
                None => {
                    &records[self.batch_at + crate::batch::HEADER_LEN + begun.next_at
                        ..self.batch_at + begun.len]
                }
            };
            // A chunk at a time: a ring with little room costs the reading of no
            // more than a chunk.
            let chunk = APPEND_CHUNK.min(begun.left.max(0) as usize);
            let mut rs = Records::resume(data, begun.left);
            // Each entry with where the records after it start.
            let mut entries: Vec<RecordToAppend<'_>> = Vec::with_capacity(chunk);
            let mut ends: Vec<usize> = Vec::with_capacity(chunk);
            while entries.len() < chunk {
                let Some(Ok(r)) = rs.next() else {
                    return self.fail(code::CORRUPT_MESSAGE, "corrupt record".into());
                };
                entries.push((r.key, r.value.unwrap_or_default(), r.headers));
                ends.push(data.len() - rs.rest_len());
            }
            let appended = match log.append(producer, self.topic.as_str(), partition, &entries) {
                Ok(done) => done,
                Err(AppendError::UnknownPartition) => {
                    return self.fail(code::UNKNOWN_TOPIC_OR_PARTITION, "no such partition".into())
                }
                Err(e @ AppendError::TooLarge { .. }) => {
                    return self.fail(code::MESSAGE_TOO_LARGE, e.to_string())
                }
                Err(AppendError::Refused(why)) => return self.fail(code::KAFKA_STORAGE_ERROR, why),
            };
            if let Some(first) = appended.first_offset {
                self.base_offset.get_or_insert(first);
                self.end = first + appended.count as u64;
            }
            let all = appended.count == entries.len();
            drop(entries);
            let begun = self.begun.as_mut().expect("begun above");
            if appended.count > 0 {
                begun.next_at += ends[appended.count - 1];
                begun.left -= appended.count as i32;
            }
            if !all {
                // The ring is full: the rest waits for room, from here.
                return;
            }
            if begun.left <= 0 {
                self.batch_at += begun.len;
                self.begun = None;
            }
        }
        self.placed = true;
    }
}

/// A batch partly appended: its records inflated (when compressed; in place
/// otherwise), where the next one starts in them, and how many are left.
struct Begun {
    inflated: Option<Vec<u8>>,
    /// Bytes of the whole batch in the request.
    len: usize,
    next_at: usize,
    left: i32,
}

/// Records read and appended at a time.
const APPEND_CHUNK: usize = 256;

/// Checks a partition's batches whole; the Kafka error and its message if not.
fn check_batches(records: &[u8], inflated: &mut Vec<u8>) -> Result<(), (i16, String)> {
    let corrupt = |e: BatchError| {
        let code = match e {
            BatchError::Codec(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
            BatchError::Magic(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::Malformed | BatchError::Count { .. } => code::INVALID_RECORD,
            _ => code::CORRUPT_MESSAGE,
        };
        (code, e.to_string())
    };
    for batch in batches(records) {
        let batch = batch.map_err(corrupt)?;
        if batch.is_control() {
            return Err((
                code::INVALID_RECORD,
                "control batches are not produced".into(),
            ));
        }
        for r in batch
            .records(inflated, MAX_KAFKA_REQUEST)
            .map_err(corrupt)?
        {
            r.map_err(corrupt)?;
        }
    }
    Ok(())
}

impl Pending for Produce {
    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Result<Answer, Undecodable> {
        if !self.checked {
            self.check(cx);
        }
        self.append(cx);
        let placed = self.parts.iter().all(|p| p.placed);
        if !placed && now < self.deadline {
            return Ok(Answer::NotYet);
        }
        for p in self.parts.iter_mut().filter(|p| !p.placed) {
            p.fail(
                code::REQUEST_TIMED_OUT,
                "the partition's ring stayed full".into(),
            );
        }
        // acks=all under --fsync: answered once every record is on disk.
        let on_disk = self.acks != -1
            || self.parts.iter().all(|p| {
                p.base_offset.is_none()
                    || u32::try_from(p.index)
                        .is_ok_and(|i| cx.log.on_disk(p.topic.as_str(), i, p.end))
            });
        if !on_disk && now < self.deadline {
            return Ok(Answer::NotYet);
        }
        if !on_disk {
            for p in &mut self.parts {
                if p.error == code::NONE {
                    p.error = code::REQUEST_TIMED_OUT;
                    p.message = Some("the records did not reach the disk in time".into());
                }
            }
        }
        Ok(Answer::Done(self.response()?))
    }
}
