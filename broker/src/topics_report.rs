//! `broker topics`: every topic with, per partition, its end offset, what is
//! persisted and how full its ring is (SPEC §11).
//!
//! ```text
//! TOPIC    ID  PARTITION  END     PERSISTED  RING       REGION
//! default   0          0  10000       10000  0/4096     5.1 MiB
//! orders    1          0    120         120  3/256      232 KiB
//! ```

use serde_json::{json, Value};
use shm_layout::Region;

use crate::audit::state::DEFAULT_TOPIC;
use crate::status::{table, Align};
use crate::topics::Topics;

/// One partition's figures.
fn partition(number: u32, region: &Region) -> Value {
    let g = region.geometry();
    json!({
        "partition": number,
        "end_offset": region.next_offset(),
        "persisted": region.persisted_offset(),
        "ring_used": region.used_slots(),
        "ring_slots": g.slots,
        "region_bytes": region.layout().total,
    })
}

/// The report as JSON: `{"topics": [{name, id, slots, slot_size, max_message,
/// partitions: [{partition, end_offset, persisted, ring_used, ring_slots,
/// region_bytes}]}], "region_bytes": total}`.
pub fn report(control: &Region, topics: &Topics) -> String {
    let g = control.geometry();
    let mut total = control.layout().total;
    let mut list = vec![json!({
        "name": DEFAULT_TOPIC,
        "id": 0,
        "slots": g.slots,
        "slot_size": g.slot_size,
        "max_message": g.max_message,
        "partitions": [partition(0, control)],
    })];
    let rings = topics.rings();
    for record in topics.records() {
        let partitions: Vec<Value> = rings
            .iter()
            .filter(|r| r.partition.topic_id == record.id)
            .map(|r| {
                total += r.region.layout().total;
                partition(r.partition.partition, &r.region)
            })
            .collect();
        list.push(json!({
            "name": record.name,
            "id": record.id,
            "slots": record.slots,
            "slot_size": record.slot_size,
            "max_message": record.max_message,
            "partitions": partitions,
        }));
    }
    json!({ "topics": list, "region_bytes": total }).to_string()
}

/// The report as a table, one row per topic-partition, and the shared memory
/// they take in all.
pub fn render_text(report: &Value) -> String {
    let mut rows = Vec::new();
    for t in report["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            rows.push(vec![
                t["name"].as_str().unwrap_or("?").to_string(),
                t["id"].to_string(),
                p["partition"].to_string(),
                p["end_offset"].to_string(),
                p["persisted"].to_string(),
                format!("{}/{}", p["ring_used"], p["ring_slots"]),
                bytes(p["region_bytes"].as_u64().unwrap_or(0)),
            ]);
        }
    }
    let mut text = table(
        &[
            ("TOPIC", Align::Left),
            ("ID", Align::Right),
            ("PARTITION", Align::Right),
            ("END", Align::Right),
            ("PERSISTED", Align::Right),
            ("RING", Align::Left),
            ("REGION", Align::Right),
        ],
        &rows,
    );
    text.push_str(&format!(
        "shared memory in all: {}\n",
        bytes(report["region_bytes"].as_u64().unwrap_or(0))
    ));
    text
}

/// Bytes for people: `5.1 MiB`, `232 KiB`.
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    match n {
        n if n >= GIB => format!("{:.1} GiB", n as f64 / GIB as f64),
        n if n >= MIB => format!("{:.1} MiB", n as f64 / MIB as f64),
        n if n >= KIB => format!("{} KiB", n / KIB),
        n => format!("{n} B"),
    }
}
