//! The status report `broker status` prints, as JSON and as text: the ring, what
//! holds it when it is full, each group per topic-partition (position, lag, rate)
//! with its members (share of the rotation, last poll, unacknowledged messages),
//! and the producers with their rates. Shaped like `kafka-consumer-groups
//! --describe`; every row names its topic and partition.

use std::time::Instant;

use control_protocol::WaitingFor;
use serde_json::{json, Value};
use shm_layout::Region;

use crate::audit::state::{DEFAULT_PARTITION, DEFAULT_TOPIC};
use crate::registry::Registry;
use crate::wait_reason::WaitReasons;

/// Builds the report.
pub fn report(
    region: &Region,
    topics: &crate::topics::Topics,
    registry: &Registry,
    wait_reasons: &WaitReasons,
    started: Instant,
    kafka_commits: &[crate::audit::state::Commit],
) -> String {
    let g = region.geometry();
    let next = region.next_offset();
    let kafka_groups = crate::kafka_groups::kafka_groups(registry, kafka_commits, topics, next);
    let (producers, consumers, _) = registry.counts();
    let readers = registry.reader_snapshot().len();
    let groups: Vec<_> = registry
        .group_snapshot()
        .into_iter()
        .map(|s| {
            let members: Vec<_> = s
                .members
                .iter()
                .map(|m| {
                    json!({
                        "id": m.id,
                        "pid": m.pid,
                        "turns": m.turns,
                        "rotation_size": m.rotation_size,
                        "last_poll_s": (m.last_poll_s * 10.0).round() / 10.0,
                        "unacknowledged": m.unacknowledged,
                        "partitions": m.partitions,
                    })
                })
                .collect();
            let partitions: Vec<_> = s
                .partitions
                .iter()
                .map(|p| {
                    json!({
                        "topic": p.topic,
                        "partition": p.partition,
                        "position": p.position,
                        "handed_out": p.handed_out,
                        "end_offset": p.end_offset,
                        "lag": p.end_offset.saturating_sub(p.position),
                        "delivered_per_s": p.delivered_per_s.round(),
                        "redelivered": p.redelivered,
                        "dead_lettered": p.dead_lettered,
                        "dead_letters_waiting": p.dead_letters_waiting,
                        "dead_letter_error": p.dead_letter_error,
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "holds_ring": s.holds_ring,
                "partitions": partitions,
                "members": members,
            })
        })
        .collect();
    let producer_list: Vec<_> = registry
        .producer_snapshot()
        .into_iter()
        .map(|p| json!({ "id": p.id, "pid": p.pid, "sent": p.sent, "sent_per_s": p.sent_per_s.round() }))
        .collect();
    let reader_list: Vec<_> = registry
        .reader_snapshot()
        .into_iter()
        .map(|r| {
            // The topic-partition it read last, and where that one ends.
            let (topic, partition, end) = match topics.ring_of_key(r.partition_key) {
                Some(ring) => (
                    ring.partition.topic.clone(),
                    ring.partition.partition,
                    ring.region.next_offset(),
                ),
                None => (DEFAULT_TOPIC.to_string(), DEFAULT_PARTITION, next),
            };
            json!({
                "id": r.id,
                "pid": r.pid,
                "topic": topic,
                "partition": partition,
                "position": r.position,
                "lag": r.position.map(|p| end.saturating_sub(p)),
                "read": r.read,
                "read_per_s": r.read_per_s.round(),
            })
        })
        .collect();
    let held_by = (!region.has_space_for(1))
        .then(|| wait_reasons.holder(registry, WaitingFor::Space).to_string());
    let uptime = started.elapsed().as_secs_f64();
    json!({
        "region": region.name(),
        "broker_pid": std::process::id(),
        "uptime_s": (uptime * 10.0).round() / 10.0,
        "ring": {
            "topic": DEFAULT_TOPIC,
            "partition": DEFAULT_PARTITION,
            "slots": g.slots,
            "slot_size": g.slot_size,
            "used_slots": region.used_slots(),
            "next_offset": next,
            "persisted_offset": region.persisted_offset(),
            "published_per_s": registry.published_per_s().round(),
            "held_by": held_by,
        },
        "rings": topics.rings().iter().map(|r| {
            let g = r.region.geometry();
            json!({
                "topic": r.partition.topic,
                "partition": r.partition.partition,
                "slots": g.slots,
                "used_slots": r.region.used_slots(),
                "next_offset": r.region.next_offset(),
                "persisted_offset": r.region.persisted_offset(),
            })
        }).collect::<Vec<_>>(),
        "clients": { "producers": producers, "consumers": consumers, "readers": readers },
        "producers": producer_list,
        "readers": reader_list,
        "groups": groups,
        "kafka_groups": crate::kafka_groups::to_json(&kafka_groups),
    })
    .to_string()
}

/// How a column lines up.
#[derive(Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

/// Renders `rows` under `headers`, each column as wide as its widest cell, two
/// spaces apart, so that every cell lines up with its header.
pub(crate) fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            match headers[i].1 {
                Align::Left => {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut s = line(&mut headers.iter().map(|(h, _)| *h));
    for r in rows {
        s.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    s
}

/// A rate, as a whole number.
fn rate(v: &Value) -> String {
    format!("{:.0}", v.as_f64().unwrap_or(0.0))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Renders a report (as parsed JSON) for a terminal.
pub fn render_text(v: &Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let ring = &v["ring"];
    let _ = writeln!(
        s,
        "broker pid {}, region {}, up {} s; {} producers, {} consumers",
        v["broker_pid"],
        text(&v["region"]),
        v["uptime_s"],
        v["clients"]["producers"],
        v["clients"]["consumers"],
    );
    let _ = writeln!(
        s,
        "ring {}/{}: {} of {} slots used, {} msg/s published",
        text(&ring["topic"]),
        ring["partition"],
        ring["used_slots"],
        ring["slots"],
        rate(&ring["published_per_s"]),
    );
    let _ = writeln!(
        s,
        "  next offset {}, persisted below {}",
        ring["next_offset"], ring["persisted_offset"],
    );
    if let Some(held) = ring["held_by"].as_str() {
        let _ = writeln!(s, "ring full: {held}");
    }
    // The other topics' partitions, one line each.
    for r in v["rings"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "ring {}/{}: {} of {} slots used; next offset {}, persisted below {}",
            text(&r["topic"]),
            r["partition"],
            r["used_slots"],
            r["slots"],
            r["next_offset"],
            r["persisted_offset"],
        );
    }
    let groups = v["groups"].as_array().map_or(&[][..], Vec::as_slice);
    let mut partition_rows = Vec::new();
    let mut member_rows = Vec::new();
    let mut blocked = Vec::new();
    for g in groups {
        let name = text(&g["name"]);
        for p in g["partitions"].as_array().into_iter().flatten() {
            if let Some(why) = p["dead_letter_error"].as_str() {
                blocked.push(format!(
                    "group {name}: {} dead letters of {}/{} wait: {why}\n",
                    p["dead_letters_waiting"],
                    text(&p["topic"]),
                    p["partition"]
                ));
            }
            partition_rows.push(vec![
                name.clone(),
                if g["holds_ring"] == Value::Bool(false) {
                    "no".into()
                } else {
                    "yes".into()
                },
                text(&p["topic"]),
                text(&p["partition"]),
                text(&p["position"]),
                text(&p["end_offset"]),
                text(&p["lag"]),
                rate(&p["delivered_per_s"]),
            ]);
        }
        for m in g["members"].as_array().into_iter().flatten() {
            let share = match (m["turns"].as_u64(), m["rotation_size"].as_u64()) {
                (Some(t), Some(n)) if t > 0 && n > 0 => format!("{t}/{n}"),
                _ => "joining".into(),
            };
            member_rows.push(vec![
                name.clone(),
                text(&m["id"]),
                text(&m["pid"]),
                share,
                format!("{:.1}s", m["last_poll_s"].as_f64().unwrap_or(0.0)),
                text(&m["unacknowledged"]),
            ]);
        }
    }
    // Kafka groups read from the file when behind: they never hold a ring.
    let kafka_groups = v["kafka_groups"].as_array().map_or(&[][..], Vec::as_slice);
    let mut kafka_rows = Vec::new();
    for g in kafka_groups {
        let name = text(&g["name"]);
        for p in g["partitions"].as_array().into_iter().flatten() {
            partition_rows.push(vec![
                name.clone(),
                "no".into(),
                text(&p["topic"]),
                text(&p["partition"]),
                text(&p["committed"]),
                text(&p["end_offset"]),
                text(&p["lag"]),
                "-".into(),
            ]);
        }
        let head = [
            name.clone(),
            text(&g["state"]),
            text(&g["generation"]),
            text(&g["protocol"]),
        ];
        let members = g["members"].as_array().map_or(&[][..], Vec::as_slice);
        if members.is_empty() {
            kafka_rows.push(
                head.iter()
                    .cloned()
                    .chain(["-".into(), "-".into(), "-".into()])
                    .collect(),
            );
        }
        for m in members {
            kafka_rows.push(
                head.iter()
                    .cloned()
                    .chain([
                        text(&m["member_id"]),
                        text(&m["client_id"]),
                        text(&m["client_host"]),
                    ])
                    .collect(),
            );
        }
    }
    use Align::{Left, Right};
    s.push('\n');
    s.push_str(&table(
        &[
            ("GROUP", Left),
            ("HOLDS", Left),
            ("TOPIC", Left),
            ("PARTITION", Right),
            ("POSITION", Right),
            ("END-OFFSET", Right),
            ("LAG", Right),
            ("MSG/S", Right),
        ],
        &partition_rows,
    ));
    if !member_rows.is_empty() {
        s.push('\n');
        s.push_str(&table(
            &[
                ("GROUP", Left),
                ("MEMBER", Left),
                ("PID", Right),
                ("SHARE", Right),
                ("LAST-POLL", Right),
                ("UNACKED", Right),
            ],
            &member_rows,
        ));
    }
    if !kafka_rows.is_empty() {
        s.push('\n');
        s.push_str(&table(
            &[
                ("KAFKA-GROUP", Left),
                ("STATE", Left),
                ("GENERATION", Right),
                ("PROTOCOL", Left),
                ("MEMBER", Left),
                ("CLIENT-ID", Left),
                ("HOST", Left),
            ],
            &kafka_rows,
        ));
    }
    for line in blocked {
        s.push_str(&line);
    }
    let producer_rows: Vec<Vec<String>> = v["producers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["id"]),
                text(&p["pid"]),
                text(&p["sent"]),
                rate(&p["sent_per_s"]),
            ]
        })
        .collect();
    if !producer_rows.is_empty() {
        s.push('\n');
        s.push_str(&table(
            &[
                ("PRODUCER", Left),
                ("PID", Right),
                ("SENT", Right),
                ("MSG/S", Right),
            ],
            &producer_rows,
        ));
    }
    let reader_rows: Vec<Vec<String>> = v["readers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["id"]),
                text(&r["pid"]),
                text(&r["topic"]),
                text(&r["partition"]),
                text(&r["position"]),
                text(&r["lag"]),
                text(&r["read"]),
                rate(&r["read_per_s"]),
            ]
        })
        .collect();
    if !reader_rows.is_empty() {
        s.push('\n');
        s.push_str(&table(
            &[
                ("READER", Left),
                ("PID", Right),
                ("TOPIC", Left),
                ("PARTITION", Right),
                ("POSITION", Right),
                ("LAG", Right),
                ("READ", Right),
                ("MSG/S", Right),
            ],
            &reader_rows,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column spans of a table line: where each run of non-space text starts
    /// and ends, cells being separated by at least two spaces.
    fn spans(line: &str) -> Vec<(usize, usize)> {
        let b = line.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b' ' {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !(b[i] == b' ' && b.get(i + 1).is_none_or(|&c| c == b' ')) {
                i += 1;
            }
            out.push((start, i));
        }
        out
    }

    fn sample() -> Value {
        let member = |id: &str, pid: u32| {
            json!({"id": id, "pid": pid, "turns": 1, "rotation_size": 4,
                   "last_poll_s": 0.3, "unacknowledged": 12})
        };
        let group = |name: &str| {
            json!({
                "name": name,
                "partitions": [{"topic": "default", "partition": 0, "position": 1_234_567,
                                "handed_out": 1_234_600, "end_offset": 1_300_000,
                                "lag": 65_433, "delivered_per_s": 2_500_000.0}],
                "members": (0..4).map(|i| member(&format!("consumer-{}", 4_000_000 + i), 4_000_000 + i)).collect::<Vec<_>>(),
            })
        };
        json!({
            "region": "/minikafka-4444", "broker_pid": 42, "uptime_s": 12.5,
            "ring": {"topic": "default", "partition": 0, "slots": 4096, "slot_size": 1024,
                     "used_slots": 4096, "next_offset": 1_300_000, "persisted_offset": 1_299_000,
                     "published_per_s": 2_500_000.0,
                     "held_by": "group group-4 is 4096 messages behind and has no consumers"},
            "clients": {"producers": 1, "consumers": 16},
            "producers": [{"id": "producer-4000100", "pid": 4_000_100, "sent": 1_300_000, "sent_per_s": 2_500_000.0}],
            "readers": [
                {"id": "audit-replay", "pid": 4_000_200, "topic": "default", "partition": 0,
                 "position": 120_000, "lag": 3_880_000, "read": 120_000, "read_per_s": 900_000.0},
                {"id": "reader-7", "pid": 7, "topic": "default", "partition": 0,
                 "position": null, "lag": null, "read": 0, "read_per_s": 0.0},
            ],
            "groups": (1..=4).map(|i| group(&format!("group-{i}"))).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn every_cell_lines_up_under_its_header_and_four_groups_of_four_fit_100_columns() {
        let out = render_text(&sample());
        for line in out.lines() {
            assert!(line.chars().count() <= 100, "too wide: {line:?}");
        }
        let blocks: Vec<Vec<&str>> = out
            .split("\n\n")
            .skip(1)
            .map(|b| b.lines().collect())
            .collect();
        assert_eq!(
            blocks.len(),
            4,
            "groups, members, producers, readers: {out}"
        );
        assert_eq!(blocks[0].len(), 1 + 4, "a row per group and partition");
        assert_eq!(blocks[1].len(), 1 + 16, "a row per member");
        for block in blocks {
            let header = spans(block[0]);
            for row in &block[1..] {
                let cells = spans(row);
                assert_eq!(cells.len(), header.len(), "{row:?} under {:?}", block[0]);
                for (cell, head) in cells.iter().zip(&header) {
                    let left = cell.0 == head.0;
                    let right = cell.1 == head.1;
                    assert!(
                        left || right,
                        "{row:?} does not line up with {:?}",
                        block[0]
                    );
                }
            }
        }
        assert!(out.contains("ring full: group group-4 is 4096 messages behind"));
        assert!(out.contains("1/4"), "{out}");
    }
}
