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
    pub delivered_per_s: f64,
    pub created: u64,
    pub members: Vec<String>,
    pub position: u64,
    pub cursor: u64,
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

impl Registry {
    /// The group with the lowest position (the first created among equals).
    pub fn slowest_group(&self) -> Option<SlowestGroup> {
        let (_, grp, position) = self
            .groups
            .iter()
            .enumerate()
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

    /// A snapshot of every group for status reports: name, member ids, position.
    pub fn group_snapshot(&self) -> Vec<GroupSnapshot> {
        let mut out: Vec<_> = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| {
                let grp = grp.as_ref()?;
                Some(GroupSnapshot {
                    name: grp.name.to_string(),
                    created: grp.created,
                    members: grp
                        .members
                        .iter()
                        .filter_map(|&m| {
                            self.clients[m as usize].as_ref().map(|c| c.id.to_string())
                        })
                        .collect(),
                    delivered_per_s: grp.delivered_per_s,
                    position: self.position(g as u32).unwrap_or(0),
                    cursor: self.region.group(g as u32).map_or(0, group::cursor),
                })
            })
            .collect();
        out.sort_by_key(|g| g.created);
        out
    }

    /// Recomputes message rates, at most once a second.
    pub fn sample_rates(&mut self) {
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
        self.sampled_at = std::time::Instant::now();
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
            .collect()
    }
}
