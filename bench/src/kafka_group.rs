//! W10: 1 million 64 B messages read through a Kafka consumer group of two
//! members over the broker's Kafka port, by the bench's own client: each
//! member joins (JoinGroup, SyncGroup with Kafka's consumer protocol, the
//! leader dealing the partitions), fetches its partition from the committed
//! offset, and commits after each fetch (OffsetCommit, answered once the
//! broker's state file holds it), as a Kafka consumer with synchronous commits
//! does.
//!
//! Each member is a worker process that prints `ready` once connected, and at
//! the end one JSON line `{"start_us", "end_us", "count", "cpu_s"}`: the wall
//! clock from when the group was settled to its last record, so that the
//! bench measures both members together.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kacrab_protocol::generated::consumer_protocol_assignment::{
    ConsumerProtocolAssignmentData, TopicPartition as AssignedPartitions,
};
use kacrab_protocol::generated::consumer_protocol_subscription::ConsumerProtocolSubscriptionData;
use kacrab_protocol::generated::fetch_request::{FetchPartition, FetchRequestData, FetchTopic};
use kacrab_protocol::generated::fetch_response::FetchResponseData;
use kacrab_protocol::generated::heartbeat_request::HeartbeatRequestData;
use kacrab_protocol::generated::heartbeat_response::HeartbeatResponseData;
use kacrab_protocol::generated::join_group_request::{
    JoinGroupRequestData, JoinGroupRequestProtocol,
};
use kacrab_protocol::generated::join_group_response::JoinGroupResponseData;
use kacrab_protocol::generated::leave_group_request::LeaveGroupRequestData;
use kacrab_protocol::generated::offset_commit_request::{
    OffsetCommitRequestData, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kacrab_protocol::generated::offset_commit_response::OffsetCommitResponseData;
use kacrab_protocol::generated::sync_group_request::{
    SyncGroupRequestAssignment, SyncGroupRequestData,
};
use kacrab_protocol::generated::sync_group_response::SyncGroupResponseData;
use kacrab_protocol::KafkaString;
use kafka_listener::batch::batches;
use serde_json::json;

use crate::kafka_port::{cpu_seconds, frame, response, FETCH_BYTES, FETCH_VERSION};
use crate::workers::Args;

const JOIN_VERSION: i16 = 2;
const SYNC_VERSION: i16 = 1;
const HEARTBEAT_VERSION: i16 = 1;
const COMMIT_VERSION: i16 = 2;
const LEAVE_VERSION: i16 = 1;
const PROTOCOL: &str = "range";
const REBALANCE_IN_PROGRESS: i16 = 27;

/// One member's connection, numbering its requests.
struct Connection {
    stream: TcpStream,
    correlation: i32,
}

impl Connection {
    /// Sends a request and reads its response body.
    fn ask(&mut self, api_key: i16, version: i16, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        self.correlation += 1;
        let bytes = frame(api_key, version, self.correlation, write);
        self.stream.write_all(&bytes).expect("send");
        response(&mut self.stream, self.correlation)
    }
}

fn text(s: &str) -> KafkaString {
    KafkaString::from(s.to_string())
}

/// Kafka's consumer protocol: a version, then the message.
fn versioned(write: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    write(&mut out);
    out.freeze()
}

fn wall_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as u64
}

/// The group as settled: this member's id, the generation, its partitions.
struct Settled {
    member: String,
    generation: i32,
    partitions: Vec<i32>,
}

/// Joins until the group has `members` members and this one holds its share
/// of `partitions` (the first to join holds them all until the other comes).
fn settle(
    c: &mut Connection,
    group: &str,
    topic: &str,
    members: usize,
    partitions: i32,
) -> Settled {
    let subscription = versioned(|out| {
        ConsumerProtocolSubscriptionData {
            topics: vec![text(topic)],
            ..Default::default()
        }
        .write(out, 0)
        .expect("subscription")
    });
    let mut member = String::new();
    loop {
        let join = JoinGroupRequestData {
            group_id: text(group),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            member_id: text(&member),
            protocol_type: text("consumer"),
            protocols: vec![JoinGroupRequestProtocol {
                name: text(PROTOCOL),
                metadata: subscription.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = c.ask(11, JOIN_VERSION, |out| {
            join.write(out, JOIN_VERSION).expect("join")
        });
        let joined = JoinGroupResponseData::read(&mut body, JOIN_VERSION).expect("join response");
        assert_eq!(joined.error_code, 0, "JoinGroup failed");
        member = joined.member_id.as_str().to_string();
        // The leader deals the partitions over the members, in id order.
        let mut ids: Vec<String> = joined
            .members
            .iter()
            .map(|m| m.member_id.as_str().to_string())
            .collect();
        ids.sort();
        let assignments = ids
            .iter()
            .enumerate()
            .map(|(i, id)| SyncGroupRequestAssignment {
                member_id: text(id),
                assignment: versioned(|out| {
                    ConsumerProtocolAssignmentData {
                        assigned_partitions: vec![AssignedPartitions {
                            topic: text(topic),
                            partitions: (0..partitions)
                                .filter(|p| *p as usize % ids.len() == i)
                                .collect(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                    .write(out, 0)
                    .expect("assignment")
                }),
                ..Default::default()
            })
            .collect();
        let sync = SyncGroupRequestData {
            group_id: text(group),
            generation_id: joined.generation_id,
            member_id: text(&member),
            assignments,
            ..Default::default()
        };
        let mut body = c.ask(14, SYNC_VERSION, |out| {
            sync.write(out, SYNC_VERSION).expect("sync")
        });
        let synced = SyncGroupResponseData::read(&mut body, SYNC_VERSION).expect("sync response");
        if synced.error_code == REBALANCE_IN_PROGRESS {
            continue;
        }
        assert_eq!(synced.error_code, 0, "SyncGroup failed");
        let mut assignment = synced.assignment.slice(2..);
        let mine: Vec<i32> = ConsumerProtocolAssignmentData::read(&mut assignment, 0)
            .expect("assignment")
            .assigned_partitions
            .into_iter()
            .flat_map(|t| t.partitions)
            .collect();
        if mine.len() == partitions as usize / members {
            return Settled {
                member,
                generation: joined.generation_id,
                partitions: mine,
            };
        }
        // Not everyone is in yet: beat until the group rebalances.
        loop {
            let beat = HeartbeatRequestData {
                group_id: text(group),
                generation_id: joined.generation_id,
                member_id: text(&member),
                ..Default::default()
            };
            let mut body = c.ask(12, HEARTBEAT_VERSION, |out| {
                beat.write(out, HEARTBEAT_VERSION).expect("heartbeat")
            });
            let code = HeartbeatResponseData::read(&mut body, HEARTBEAT_VERSION)
                .expect("heartbeat response")
                .error_code;
            if code == REBALANCE_IN_PROGRESS {
                break;
            }
            assert_eq!(code, 0, "Heartbeat failed");
            // The others' joining, not a result: a member's heartbeat pace.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `kafka-group-consume broker=HOST:PORT topic=T group=G members=M
/// partitions=P count=N`: reads its share of the N records of T's P
/// partitions as one of M members of G.
pub fn kafka_group_consume(args: &Args) {
    let topic = args.get("topic").to_string();
    let group = args.get("group").to_string();
    let members = args.num("members") as usize;
    let partitions = args.num("partitions") as i32;
    let per_partition = args.num("count") / partitions as u64;
    let stream = TcpStream::connect(args.get("broker")).expect("connect to the Kafka port");
    stream.set_nodelay(true).expect("nodelay");
    let mut c = Connection {
        stream,
        correlation: 0,
    };
    crate::workers::ready();
    let settled = settle(&mut c, &group, &topic, members, partitions);
    let start_us = wall_micros();
    // Nothing committed yet in a fresh group: from offset 0.
    let mut next: Vec<(i32, u64)> = settled.partitions.iter().map(|&p| (p, 0)).collect();
    let mut got = 0u64;
    let mut scratch = Vec::new();
    while next.iter().any(|(_, n)| *n < per_partition) {
        let fetch = FetchRequestData {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: FETCH_BYTES,
            topics: vec![FetchTopic {
                topic: text(&topic),
                partitions: next
                    .iter()
                    .map(|&(p, n)| FetchPartition {
                        partition: p,
                        fetch_offset: n as i64,
                        partition_max_bytes: FETCH_BYTES,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = c.ask(1, FETCH_VERSION, |out| {
            fetch.write(out, FETCH_VERSION).expect("fetch")
        });
        let r = FetchResponseData::read(&mut body, FETCH_VERSION).expect("fetch response");
        for p in r.responses.iter().flat_map(|t| &t.partitions) {
            assert_eq!(p.error_code, 0, "fetch failed");
            let slot = next
                .iter_mut()
                .find(|(q, _)| *q == p.partition_index)
                .expect("a partition asked for");
            let records = p.records.clone().unwrap_or_default();
            for b in batches(&records) {
                let b = b.expect("a whole batch");
                for rec in b.records(&mut scratch, usize::MAX).expect("records") {
                    let offset = b.base_offset() + rec.expect("a record").offset_delta as u64;
                    assert_eq!(offset, slot.1, "records in offset order");
                    slot.1 += 1;
                    got += 1;
                }
            }
        }
        // What was read is committed before the next fetch.
        let commit = OffsetCommitRequestData {
            group_id: text(&group),
            generation_id_or_member_epoch: settled.generation,
            member_id: text(&settled.member),
            retention_time_ms: -1,
            topics: vec![OffsetCommitRequestTopic {
                name: text(&topic),
                partitions: next
                    .iter()
                    .map(|&(p, n)| OffsetCommitRequestPartition {
                        partition_index: p,
                        committed_offset: n as i64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut body = c.ask(8, COMMIT_VERSION, |out| {
            commit.write(out, COMMIT_VERSION).expect("commit")
        });
        let r = OffsetCommitResponseData::read(&mut body, COMMIT_VERSION).expect("commit response");
        for p in r.topics.iter().flat_map(|t| &t.partitions) {
            assert_eq!(p.error_code, 0, "commit failed");
        }
    }
    let end_us = wall_micros();
    let leave = LeaveGroupRequestData {
        group_id: text(&group),
        member_id: text(&settled.member),
        ..Default::default()
    };
    c.ask(13, LEAVE_VERSION, |out| {
        leave.write(out, LEAVE_VERSION).expect("leave")
    });
    println!(
        "{}",
        json!({"start_us": start_us, "end_us": end_us, "count": got, "cpu_s": cpu_seconds()})
    );
}
