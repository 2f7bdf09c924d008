//! The status report `broker status` prints: ring occupancy, groups with their
//! members, positions and lag, as JSON.

use std::time::Instant;

use serde_json::json;
use shm_layout::Region;

use crate::registry::Registry;

/// Builds the report.
pub fn report(region: &Region, registry: &Registry, started: Instant) -> String {
    let g = region.geometry();
    let next = region.next_offset();
    let (producers, consumers, _) = registry.counts();
    let groups: Vec<_> = registry
        .group_snapshot()
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "members": s.members,
                "position": s.position,
                "handed_out": s.cursor,
                "lag": next.saturating_sub(s.position),
                "delivered_per_s": s.delivered_per_s.round(),
            })
        })
        .collect();
    let uptime = started.elapsed().as_secs_f64();
    json!({
        "region": region.name(),
        "broker_pid": std::process::id(),
        "uptime_s": (uptime * 10.0).round() / 10.0,
        "ring": {
            "slots": g.slots,
            "slot_size": g.slot_size,
            "used_slots": region.used_slots(),
            "next_offset": next,
        },
        "persisted_offset": region.persisted_offset(),
        "rates": {
            "published_per_s": registry.published_per_s().round(),
        },
        "producers": producers,
        "consumers": consumers,
        "groups": groups,
    })
    .to_string()
}

/// Renders a report (as parsed JSON) for a terminal.
pub fn render_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let ring = &v["ring"];
    let _ = writeln!(
        s,
        "broker pid {} region {} up {}s",
        v["broker_pid"],
        v["region"].as_str().unwrap_or("?"),
        v["uptime_s"]
    );
    let _ = writeln!(
        s,
        "ring: {}/{} slots used, next offset {}, persisted below {}, {} msg/s published",
        ring["used_slots"],
        ring["slots"],
        ring["next_offset"],
        v["persisted_offset"],
        v["rates"]["published_per_s"]
    );
    let _ = writeln!(
        s,
        "clients: {} producers, {} consumers",
        v["producers"], v["consumers"]
    );
    let _ = writeln!(
        s,
        "{:<24} {:>10} {:>10} {:>8}  members",
        "group", "position", "lag", "count"
    );
    for g in v["groups"].as_array().into_iter().flatten() {
        let members: Vec<&str> = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        let _ = writeln!(
            s,
            "{:<24} {:>10} {:>10} {:>10} {:>8}  {}",
            g["name"].as_str().unwrap_or("?"),
            g["position"].to_string(),
            g["lag"].to_string(),
            g["delivered_per_s"].to_string(),
            members.len(),
            members.join(",")
        );
    }
    s
}
