//! What the registry reports: client counts, message rates, status snapshots
//! of the groups, and their positions for the state file.

use control_protocol::Role;
use shm_layout::group;

use super::Registry;
use crate::audit::state::{GroupState, DEFAULT_PARTITION, DEFAULT_TOPIC};

/// What `broker status` shows of a group.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub name: String,
    pub created: u64,
    /// Whether it holds the ring (producers wait for it); false for a group that
    /// departed or, under `--spill`, has no member.
    pub holds_ring: bool,
    pub members: Vec<MemberSnapshot>,
    pub partitions: Vec<PartitionSnapshot>,
}

/// A group's progress in one topic-partition.
#[derive(Debug, Clone)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: u32,
    /// Every offset below it is acknowledged by the group.
    pub position: u64,
    /// Every offset below it has been handed to a member.
    pub handed_out: u64,
    pub delivered_per_s: f64,
    /// Deliveries logged since the broker started.
    pub delivered: u64,
    /// Messages offered again since the broker started.
    pub redelivered: u64,
}

/// A member of a group.
#[derive(Debug, Clone)]
pub struct MemberSnapshot {
    pub id: String,
    pub pid: u32,
    /// Its turns in the rotation in force: 1 of `rotation_size` (0 while it waits
    /// to join one).
    pub turns: u32,
    pub rotation_size: u32,
    /// Seconds since its poll counter last moved, as sampled by the broker.
    pub last_poll_s: f64,
    /// Messages handed to it and not yet acknowledged (redeliveries included).
    pub unacknowledged: u64,
}

/// A producer.
#[derive(Debug, Clone)]
pub struct ProducerSnapshot {
    pub id: String,
    pub pid: u32,
    pub sent: u64,
    pub sent_per_s: f64,
}

/// A standalone reader.
#[derive(Debug, Clone)]
pub struct ReaderSnapshot {
    pub id: String,
    pub pid: u32,
    /// The offset after the last one its polls returned (None: nothing yet), and
    /// the topic-partition it was in (its journal key, `topic id << 32 |
    /// partition`).
    pub position: Option<u64>,
    pub partition_key: u64,
    /// Messages its polls returned, and their rate.
    pub read: u64,
    pub read_per_s: f64,
}

/// The group furthest behind, which holds the ring when it is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowestGroup {
    pub name: String,
    /// Every offset below this is consumed by the group.
    pub position: u64,
    /// The member that holds the group's position (None: it has no members).
    pub slowest: Option<String>,
}

/// How often the broker samples the clients' progress counters.
const PROGRESS_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Registry {
    /// The group with the lowest position (the first created among equals).
    pub fn slowest_group(&self) -> Option<SlowestGroup> {
        let (_, grp, position) = self
            .groups
            .iter()
            .enumerate()
            .filter(|&(g, _)| self.holds_ring(g as u32))
            .filter_map(|(g, grp)| Some((g, grp.as_ref()?, self.position(g as u32)?)))
            .min_by_key(|&(_, grp, position)| (position, grp.created))?;
        let member_id = |m: u32| self.clients[m as usize].as_ref().map(|c| c.id.to_string());
        // Whoever was handed the offset at the position, if still a member; else
        // the member that has acknowledged least.
        let holder = grp
            .owner_of(position)
            .map(|&(m, _)| m)
            .filter(|m| grp.members.contains(m))
            .or_else(|| {
                grp.members
                    .iter()
                    .copied()
                    .min_by_key(|&m| self.region.client(m).map_or(0, |c| c.acked_upto()))
            });
        Some(SlowestGroup {
            name: grp.name.to_string(),
            position,
            slowest: holder.and_then(member_id),
        })
    }

    /// Number of registered clients of each role (producers, consumers, admins).
    pub fn counts(&self) -> (usize, usize, usize) {
        let producers = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.role == Role::Producer)
            .count();
        let consumers = self
            .clients
            .iter()
            .flatten()
            .filter(|c| c.role == Role::Consumer)
            .count();
        (producers, consumers, self.admins)
    }

    /// A snapshot of every group for status reports, in creation order.
    pub fn group_snapshot(&self) -> Vec<GroupSnapshot> {
        let mut out: Vec<_> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| {
                let grp = grp.as_ref()?;
                let cursor = self.region.group(g as u32).map_or(0, group::cursor);
                let in_force = grp.segments.back().filter(|_| !grp.frozen);
                let members = grp
                    .members
                    .iter()
                    .filter_map(|&m| {
                        let c = self.clients[m as usize].as_ref()?;
                        let ack = self.region.client(m).map_or(0, |e| e.acked_upto());
                        let claimed = self.claimed_redeliveries(g as u32, grp, m);
                        let in_rotation =
                            in_force.is_some_and(|s| s.members.iter().any(|&(x, _)| x == m));
                        Some(MemberSnapshot {
                            id: c.id.to_string(),
                            pid: c.pid,
                            turns: in_rotation as u32,
                            rotation_size: in_force.map_or(0, |s| s.members.len() as u32),
                            last_poll_s: c.activity.moved_at.elapsed().as_secs_f64(),
                            unacknowledged: grp.owned_count(m, ack, cursor) + claimed,
                        })
                    })
                    .collect();
                Some(GroupSnapshot {
                    name: grp.name.to_string(),
                    created: grp.created,
                    holds_ring: self.holds_ring(g as u32),
                    members,
                    partitions: vec![PartitionSnapshot {
                        topic: DEFAULT_TOPIC.to_string(),
                        partition: DEFAULT_PARTITION,
                        position: self.position(g as u32).unwrap_or(0),
                        handed_out: cursor,
                        delivered_per_s: grp.delivered_per_s,
                        delivered: grp.delivered,
                        redelivered: grp.redelivered,
                    }],
                })
            })
            .chain(self.departed.iter().map(|(name, d)| GroupSnapshot {
                name: name.clone(),
                created: u64::MAX,
                holds_ring: false,
                members: Vec::new(),
                partitions: vec![PartitionSnapshot {
                    topic: DEFAULT_TOPIC.to_string(),
                    partition: DEFAULT_PARTITION,
                    position: d.position,
                    handed_out: d.handed_out,
                    delivered_per_s: 0.0,
                    delivered: 0,
                    redelivered: 0,
                }],
            }))
            .collect();
        out.sort_by_key(|g| g.created);
        out
    }

    /// Consumers evicted for the session timeout since the broker started, by group.
    pub fn evictions(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.evictions
    }

    /// Counts an eviction from `group`.
    pub fn note_eviction(&mut self, group: &str) {
        *self.evictions.entry(group.to_string()).or_default() += 1;
    }

    /// Every registered producer.
    pub fn producer_snapshot(&self) -> Vec<ProducerSnapshot> {
        self.clients
            .iter()
            .flatten()
            .filter(|c| c.role == Role::Producer)
            .map(|c| ProducerSnapshot {
                id: c.id.to_string(),
                pid: c.pid,
                sent: c.activity.progress,
                sent_per_s: c.activity.per_s,
            })
            .collect()
    }

    /// Every registered standalone reader.
    pub fn reader_snapshot(&self) -> Vec<ReaderSnapshot> {
        self.clients
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| Some((slot as u32, c.as_ref()?)))
            .filter(|(_, c)| c.role == Role::Reader)
            .map(|(slot, c)| {
                let last = self.region.client(slot).and_then(|e| {
                    let opened = e.journal_opened();
                    (opened > 0).then(|| e.journal_run(opened - 1))
                });
                ReaderSnapshot {
                    id: c.id.to_string(),
                    pid: c.pid,
                    position: last.map(|run| run.upto),
                    partition_key: last.map_or(0, |run| run.partition),
                    read: c.activity.progress,
                    read_per_s: c.activity.per_s,
                }
            })
            .collect()
    }

    /// Samples every client's progress counter (noting when it last moved), at
    /// most every [`PROGRESS_SAMPLE_EVERY`], and, at most once a second,
    /// recomputes message rates.
    pub fn sample_rates(&mut self) {
        let now = std::time::Instant::now();
        // The cleaner passes thousands of times a second under load; a tenth of a
        // second is fine enough for the age of a poll.
        if now.duration_since(self.progress_sampled_at) < PROGRESS_SAMPLE_EVERY {
            return;
        }
        self.progress_sampled_at = now;
        for (slot, c) in self.clients.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            let progress = self
                .region
                .client(slot as u32)
                .map_or(c.activity.progress, |e| e.progress());
            if progress != c.activity.progress {
                c.activity.progress = progress;
                c.activity.moved_at = now;
            }
        }
        let elapsed = self.sampled_at.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return;
        }
        let next = self.region.next_offset();
        self.published_per_s = (next - self.published_at_sample) as f64 / elapsed;
        self.published_at_sample = next;
        for grp in self.groups.iter_mut().flatten() {
            grp.delivered_per_s = (grp.delivered - grp.delivered_at_sample) as f64 / elapsed;
            grp.delivered_at_sample = grp.delivered;
        }
        for c in self.clients.iter_mut().flatten() {
            let a = &mut c.activity;
            a.per_s = a.progress.saturating_sub(a.at_rate_sample) as f64 / elapsed;
            a.at_rate_sample = a.progress;
        }
        self.sampled_at = now;
    }

    /// Messages published per second at the last sample.
    pub fn published_per_s(&self) -> f64 {
        self.published_per_s
    }

    /// Positions of every live group, for the state file.
    pub fn group_states(&self) -> Vec<GroupState> {
        (0..self.groups.len() as u32)
            .filter_map(|g| {
                let grp = self.groups[g as usize].as_ref()?;
                let position = self.position(g)?;
                let cursor = group::cursor(self.region.group(g)?);
                Some(GroupState {
                    name: grp.name.to_string(),
                    topic: DEFAULT_TOPIC.to_string(),
                    partition: DEFAULT_PARTITION,
                    position,
                    handed_out: cursor.max(position),
                })
            })
            .chain(self.departed.iter().map(|(name, d)| GroupState {
                name: name.clone(),
                topic: DEFAULT_TOPIC.to_string(),
                partition: DEFAULT_PARTITION,
                position: d.position,
                handed_out: d.handed_out.max(d.position),
            }))
            .collect()
    }
}
