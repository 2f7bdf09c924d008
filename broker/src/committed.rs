//! Committed offsets (SPEC §10): what `broker committed` and `consumer --from
//! committed` ask for. A group's committed offset is its acknowledged position
//! (live, or as the state file keeps it); a standalone reader's is what it
//! committed under its `--id`.

use control_protocol::{CommittedOffset, OwnerKind};

use crate::audit::state::StateFile;
use crate::registry::Registry;

/// Every committed offset, or those of `owner`, sorted by kind, owner, topic and
/// partition.
pub fn committed_offsets(
    registry: &Registry,
    state_file: &StateFile,
    owner: Option<&(OwnerKind, String)>,
) -> Vec<CommittedOffset> {
    let saved = state_file.snapshot();
    let live = registry.group_states();
    let mut out: Vec<CommittedOffset> = Vec::new();
    // Live groups first: their positions are newer than the file's.
    for g in live.iter().chain(&saved.groups) {
        let known = out
            .iter()
            .any(|o| o.owner == g.name && o.topic == g.topic && o.partition == g.partition);
        if !known {
            out.push(CommittedOffset {
                kind: OwnerKind::Group,
                owner: g.name.clone(),
                topic: g.topic.clone(),
                partition: g.partition,
                offset: g.position,
            });
        }
    }
    out.extend(saved.kafka_groups.iter().map(|k| CommittedOffset {
        kind: OwnerKind::Group,
        owner: k.name.clone(),
        topic: k.topic.clone(),
        partition: k.partition,
        offset: k.offset,
    }));
    out.extend(saved.readers.iter().map(|r| CommittedOffset {
        kind: OwnerKind::Reader,
        owner: r.name.clone(),
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
    }));
    out.retain(|o| owner.is_none_or(|(kind, name)| o.kind == *kind && o.owner == *name));
    out.sort_by(|a, b| {
        (a.kind, &a.owner, &a.topic, a.partition).cmp(&(b.kind, &b.owner, &b.topic, b.partition))
    });
    out
}

/// `broker committed --json`: `{"committed": [{kind, owner, topic, partition,
/// offset}, ...]}`.
pub fn to_json(offsets: &[CommittedOffset]) -> String {
    let list: Vec<serde_json::Value> = offsets
        .iter()
        .map(|o| {
            serde_json::json!({
                "kind": o.kind.name(),
                "owner": o.owner,
                "topic": o.topic,
                "partition": o.partition,
                "offset": o.offset,
            })
        })
        .collect();
    serde_json::json!({ "committed": list }).to_string()
}

/// `broker committed`: a table, one row per owner and topic-partition.
pub fn render_text(offsets: &[CommittedOffset]) -> String {
    use crate::status::{table, Align};
    if offsets.is_empty() {
        return "no committed offsets\n".into();
    }
    let rows: Vec<Vec<String>> = offsets
        .iter()
        .map(|o| {
            vec![
                o.kind.name().to_string(),
                o.owner.clone(),
                o.topic.clone(),
                o.partition.to_string(),
                o.offset.to_string(),
            ]
        })
        .collect();
    table(
        &[
            ("KIND", Align::Left),
            ("OWNER", Align::Left),
            ("TOPIC", Align::Left),
            ("PARTITION", Align::Right),
            ("COMMITTED", Align::Right),
        ],
        &rows,
    )
}
