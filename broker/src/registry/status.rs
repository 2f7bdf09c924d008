//! What the registry reports: client counts, message rates, status snapshots
//! of the groups, and their positions for the state file.

use control_protocol::Role;

use super::Registry;
use crate::audit::state::GroupState;

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
    /// The partition's next offset.
    pub end_offset: u64,
    pub delivered_per_s: f64,
    /// Deliveries logged since the broker started.
    pub delivered: u64,
    /// Messages offered again since the broker started.
    pub redelivered: u64,
    /// Messages published to the dead-letter topic since the broker started.
    pub dead_lettered: u64,
    /// Dead letters not yet published, which hold the group's position.
    pub dead_letters_waiting: u64,
    /// Why they wait, when the dead-letter topic cannot be created.
    pub dead_letter_error: Option<String>,
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
    /// The topic-partitions (`topic/partition`) whose rotation in force it
    /// takes turns in: in a `partition` group, those it owns.
    pub partitions: Vec<String>,
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
    /// Why a dead letter at the group's position is not published yet, when
    /// its dead-letter topic cannot be created.
    pub dead_letter_blocked: Option<String>,
}

/// How often the broker samples the clients' progress counters.
const PROGRESS_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Registry {
    /// The group with the lowest position in ring `ring` (0: `default`/0) among
    /// those holding it (the first created among equals).
    pub fn slowest_group(&self, ring: u32) -> Option<SlowestGroup> {
        let (g, r, grp, position) = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, grp)| {
                let grp = grp.as_ref()?;
                let r = grp.ring_at(ring)?;
                let g = g as u32;
                self.holds_ring(g, r)
                    .then(|| Some((g, r, grp, self.position(g, r)?)))?
            })
            .min_by_key(|&(_, _, grp, position)| (position, grp.created))?;
        let gr = &grp.rings[r];
        let member_id = |m: u32| self.clients[m as usize].as_ref().map(|c| c.id.to_string());
        // Whoever was handed the offset at the position, if still a member; else
        // the member that has acknowledged least.
        let holder = gr
            .owner_of(position)
            .map(|&(m, _)| m)
            .filter(|m| gr.members.contains(m))
            .or_else(|| gr.members.iter().copied().min_by_key(|&m| gr.acked_upto(m)));
        let _ = g;
        let dead_letter_blocked =
            gr.dead
                .front()
                .filter(|&&(o, _)| o == position)
                .and_then(|&(o, _)| {
                    let why = self.dead_letter_failure(&gr.topic)?;
                    Some(format!("its dead letter at offset {o} waits: {why}"))
                });
        Some(SlowestGroup {
            name: grp.name.to_string(),
            position,
            slowest: holder.and_then(member_id),
            dead_letter_blocked,
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
                let g = g as u32;
                let in_force = |gr: &super::groups::GroupRing| {
                    gr.segments.back().filter(|_| !gr.frozen).cloned()
                };
                let members = grp
                    .members
                    .iter()
                    .filter_map(|&m| {
                        let c = self.clients[m as usize].as_ref()?;
                        let unacknowledged = grp
                            .rings
                            .iter()
                            .map(|gr| {
                                let cursor = gr.cursor(g);
                                gr.owned_count(m, gr.acked_upto(m), cursor)
                                    + gr.claimed_redeliveries(g, m)
                            })
                            .sum();
                        // The rings whose rotation in force it takes turns in.
                        let turning: Vec<_> = grp
                            .rings
                            .iter()
                            .filter_map(|gr| {
                                let seg = in_force(gr)?;
                                seg.members
                                    .iter()
                                    .any(|&(x, _)| x == m)
                                    .then_some((gr, seg))
                            })
                            .collect();
                        let rotation_size = turning
                            .first()
                            .map_or(0, |(_, seg)| seg.members.len() as u32);
                        Some(MemberSnapshot {
                            id: c.id.to_string(),
                            pid: c.pid,
                            turns: u32::from(!turning.is_empty()),
                            rotation_size,
                            partitions: turning
                                .iter()
                                .map(|(gr, _)| format!("{}/{}", gr.topic, gr.partition))
                                .collect(),
                            last_poll_s: c.activity.moved_at.elapsed().as_secs_f64(),
                            unacknowledged,
                        })
                    })
                    .collect();
                let partitions = grp
                    .rings
                    .iter()
                    .enumerate()
                    .map(|(r, gr)| PartitionSnapshot {
                        topic: gr.topic.to_string(),
                        partition: gr.partition,
                        position: self.position(g, r).unwrap_or(0),
                        handed_out: gr.cursor(g),
                        end_offset: gr.region.next_offset(),
                        delivered_per_s: gr.delivered_per_s,
                        delivered: gr.delivered,
                        redelivered: gr.redelivered,
                        dead_lettered: gr.dead_lettered,
                        dead_letters_waiting: gr.dead.len() as u64,
                        dead_letter_error: (!gr.dead.is_empty())
                            .then(|| self.dead_letter_failure(&gr.topic))
                            .flatten(),
                    })
                    .collect();
                Some(GroupSnapshot {
                    name: grp.name.to_string(),
                    created: grp.created,
                    holds_ring: (0..grp.rings.len()).any(|r| self.holds_ring(g, r)),
                    members,
                    partitions,
                })
            })
            .collect();
        // Departed groups, one snapshot each with all their topic-partitions.
        for ((name, topic, partition), d) in &self.departed {
            let at = PartitionSnapshot {
                topic: topic.clone(),
                partition: *partition,
                position: d.position,
                handed_out: d.handed_out,
                end_offset: self.end_of(topic, *partition).unwrap_or(d.handed_out),
                delivered_per_s: 0.0,
                delivered: 0,
                redelivered: 0,
                dead_lettered: 0,
                dead_letters_waiting: 0,
                dead_letter_error: None,
            };
            // A live group's too (a reset of a topic it does not read yet).
            match out.iter_mut().find(|g| &g.name == name) {
                Some(known) => known.partitions.push(at),
                None => out.push(GroupSnapshot {
                    name: name.clone(),
                    created: u64::MAX,
                    holds_ring: false,
                    members: Vec::new(),
                    partitions: vec![at],
                }),
            }
        }
        out.sort_by_key(|g| g.created);
        out
    }

    /// The next offset of `topic`'s partition `partition`, if it exists.
    fn end_of(&self, topic: &str, partition: u32) -> Option<u64> {
        if topic == crate::audit::state::DEFAULT_TOPIC {
            return Some(self.region.next_offset());
        }
        let ring = self.topics.as_ref()?.ring_of(topic, partition)?;
        Some(ring.region.next_offset())
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
        for gr in self.groups.iter_mut().flatten().flat_map(|g| &mut g.rings) {
            gr.delivered_per_s = (gr.delivered - gr.delivered_at_sample) as f64 / elapsed;
            gr.delivered_at_sample = gr.delivered;
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

    /// Positions of every live group in every ring it reads, and of departed
    /// groups, for the state file.
    pub fn group_states(&self) -> Vec<GroupState> {
        let mut out = Vec::new();
        for (g, grp) in self.groups.iter().enumerate() {
            let Some(grp) = grp else { continue };
            for (r, gr) in grp.rings.iter().enumerate() {
                let Some(position) = self.position(g as u32, r) else {
                    continue;
                };
                out.push(GroupState {
                    name: grp.name.to_string(),
                    topic: gr.topic.to_string(),
                    partition: gr.partition,
                    position,
                    handed_out: gr.cursor(g as u32).max(position),
                });
            }
        }
        out.extend(
            self.departed
                .iter()
                .map(|((name, topic, partition), d)| GroupState {
                    name: name.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    position: d.position,
                    handed_out: d.handed_out.max(d.position),
                }),
        );
        out
    }
}
