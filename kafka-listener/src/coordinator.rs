//! Kafka's group coordinator for the broker's Kafka groups: membership,
//! rebalances and generations, as Kafka's classic group protocol has them.
//! It is driven by the listener's loop (no thread of its own): requests call
//! in, the loop calls [`Coordinator::advance`] every turn to complete
//! rebalances and expire sessions, and a waiting JoinGroup or SyncGroup polls
//! for its answer.
//!
//! A group goes `Empty` → `PreparingRebalance` when a member joins, leaves or
//! expires. The rebalance completes once every known member has joined again,
//! or at the longest rebalance timeout of its members (those that did not join
//! are removed); the generation is bumped, the first member (or the leader that
//! still is one) leads and gets every member's metadata. `CompletingRebalance`
//! waits for the leader's SyncGroup, whose assignments go to each member as
//! they are: the coordinator never reads them. Then `Stable`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::requests::code;

/// The session timeouts accepted (Kafka's `group.min.session.timeout.ms` is
/// 6 s; a broker on one host can hear from a member sooner).
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Members a group may have (Kafka's `group.max.size` is unbounded by
/// default): what one group's joins can make the broker keep is bounded.
pub const MAX_MEMBERS: usize = 1000;

/// A group's state, by Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinAsk {
    pub group: String,
    /// Empty for a member joining the first time.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// The protocols the member supports, most preferred first, with its
    /// metadata for each.
    pub protocols: Vec<(String, Bytes)>,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: to the leader only.
    pub members: Vec<(String, Bytes)>,
}

impl Joined {
    pub fn refused(error: i16, member_id: &str) -> Joined {
        Joined {
            error,
            generation: -1,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup's answer: an error code, and the member's assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub error: i16,
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

impl Synced {
    pub fn refused(error: i16) -> Synced {
        Synced {
            error,
            protocol_type: String::new(),
            protocol: String::new(),
            assignment: Bytes::new(),
        }
    }
}

/// A member as DescribeGroups and `broker status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as ListGroups, DescribeGroups and `broker status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    id: String,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_heard: Instant,
    /// Its JoinGroup waits for the rebalance to complete.
    joining: bool,
    joined: Option<Joined>,
    /// Its SyncGroup waits for the leader's.
    syncing: bool,
    synced: Option<Synced>,
    assignment: Bytes,
}

impl Member {
    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(p, _)| p == protocol)
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(p, _)| p == protocol)
            .map_or_else(Bytes::new, |(_, m)| m.clone())
    }

    /// Whether it has gone silent past its session timeout. A member whose
    /// request waits on the coordinator is heard from.
    fn expired(&self, now: Instant) -> bool {
        !self.joining && !self.syncing && now.duration_since(self.last_heard) > self.session_timeout
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    /// In join order.
    members: Vec<Member>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: Vec::new(),
            rebalance_deadline: None,
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Starts a rebalance (or goes on with the one under way): waiting
    /// SyncGroups hear that one is in progress.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        if self.state != GroupState::PreparingRebalance {
            let longest = self
                .members
                .iter()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + longest);
            self.state = GroupState::PreparingRebalance;
        }
        for m in &mut self.members {
            if m.syncing {
                m.syncing = false;
                m.synced = Some(Synced::refused(code::REBALANCE_IN_PROGRESS));
            }
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol.clear();
        self.protocol_type.clear();
        self.leader.clear();
        self.rebalance_deadline = None;
    }

    /// Completes a rebalance whose members have all joined, or whose time is up.
    fn try_complete_rebalance(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.iter().all(|m| m.joining);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return;
        }
        self.members.retain(|m| m.joining);
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        if !self.members.iter().any(|m| m.id == self.leader) {
            self.leader = self.members[0].id.clone();
        }
        self.protocol = self.choose_protocol();
        for m in &mut self.members {
            m.assignment = Bytes::new();
        }
        let all: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|m| (m.id.clone(), m.metadata_for(&self.protocol)))
            .collect();
        for m in &mut self.members {
            m.joining = false;
            m.last_heard = now;
            m.joined = Some(Joined {
                error: code::NONE,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == self.leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.state = GroupState::CompletingRebalance;
    }

    /// The protocol most members prefer among those all support; ties go to
    /// the leader's preference.
    fn choose_protocol(&self) -> String {
        let leader = self
            .members
            .iter()
            .find(|m| m.id == self.leader)
            .expect("the leader is a member");
        let candidates: Vec<&str> = leader
            .protocols
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| self.members.iter().all(|m| m.supports(p)))
            .collect();
        let votes = |p: &str| {
            self.members
                .iter()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(q, _)| q.as_str())
                        .find(|q| candidates.contains(q))
                        == Some(p)
                })
                .count()
        };
        let mut best = candidates[0];
        for &c in &candidates[1..] {
            if votes(c) > votes(best) {
                best = c;
            }
        }
        best.to_string()
    }

    fn view(&self, name: &str) -> GroupView {
        GroupView {
            name: name.to_string(),
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&self.protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// Every Kafka group with members, by name.
#[derive(Debug)]
pub struct Coordinator {
    groups: BTreeMap<String, Group>,
    /// Member ids are `<client id>-<instance>-<n>`: unique across restarts too,
    /// so that a client's id from a broker's earlier life is unknown to this one.
    instance: u64,
    members_made: u64,
    /// Something changed since [`Coordinator::take_changed`] was last asked.
    changed: bool,
}

impl Coordinator {
    pub fn new(instance: u64) -> Coordinator {
        Coordinator {
            groups: BTreeMap::new(),
            instance,
            members_made: 0,
            changed: false,
        }
    }

    /// A member joins (or joins again). Its answer comes through
    /// [`Coordinator::joined`] once the rebalance completes; the member id to
    /// ask with is returned, or Kafka's error code when it is refused.
    pub fn join(&mut self, ask: JoinAsk, now: Instant) -> Result<String, i16> {
        let refuse = Err;
        if ask.session_timeout < MIN_SESSION_TIMEOUT || ask.session_timeout > MAX_SESSION_TIMEOUT {
            return refuse(code::INVALID_SESSION_TIMEOUT);
        }
        if ask.protocol_type.is_empty() || ask.protocols.is_empty() {
            return refuse(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let exists = self.groups.contains_key(&ask.group);
        let group = self
            .groups
            .entry(ask.group.clone())
            .or_insert_with(Group::new);
        let known = !ask.member_id.is_empty();
        if known && group.member(&ask.member_id).is_none() {
            if !exists {
                self.groups.remove(&ask.group);
            }
            return refuse(code::UNKNOWN_MEMBER_ID);
        }
        // Everyone else's protocols must meet this member's.
        let others = group.members.iter().filter(|m| m.id != ask.member_id);
        let consistent = group.state == GroupState::Empty
            || (ask.protocol_type == group.protocol_type
                && ask
                    .protocols
                    .iter()
                    .any(|(p, _)| others.clone().all(|m| m.supports(p))));
        if !consistent {
            return refuse(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        if !known && group.members.len() >= MAX_MEMBERS {
            return refuse(code::GROUP_MAX_SIZE_REACHED);
        }
        let id = if known {
            ask.member_id.clone()
        } else {
            self.members_made += 1;
            format!(
                "{}-{:x}-{}",
                ask.client_id, self.instance, self.members_made
            )
        };
        if group.state == GroupState::Empty {
            group.protocol_type = ask.protocol_type.clone();
        }
        match group.member(&id) {
            Some(m) => {
                m.protocols = ask.protocols;
                m.session_timeout = ask.session_timeout;
                m.rebalance_timeout = ask.rebalance_timeout;
                m.client_host = ask.client_host;
                m.last_heard = now;
                m.joining = true;
                m.joined = None;
            }
            None => group.members.push(Member {
                id: id.clone(),
                client_id: ask.client_id,
                client_host: ask.client_host,
                session_timeout: ask.session_timeout,
                rebalance_timeout: ask.rebalance_timeout,
                protocols: ask.protocols,
                last_heard: now,
                joining: true,
                joined: None,
                syncing: false,
                synced: None,
                assignment: Bytes::new(),
            }),
        }
        group.prepare_rebalance(now);
        group.try_complete_rebalance(now);
        self.changed = true;
        Ok(id)
    }

    /// The answer to member `member`'s JoinGroup, once there is one.
    pub fn joined(&mut self, group: &str, member: &str) -> Option<Joined> {
        let Some(m) = self.groups.get_mut(group).and_then(|g| g.member(member)) else {
            return Some(Joined::refused(code::UNKNOWN_MEMBER_ID, member));
        };
        m.joined.take()
    }

    /// A member's SyncGroup; the leader's brings every member's assignment.
    /// Its answer comes through [`Coordinator::synced`]; Kafka's error code at
    /// once.
    pub fn sync(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<(), i16> {
        let state = self.heard_from(group, generation, member, now)?;
        let g = self.groups.get_mut(group).expect("heard from");
        let i = g
            .members
            .iter()
            .position(|m| m.id == member)
            .expect("heard from");
        match state {
            GroupState::Empty | GroupState::PreparingRebalance => Err(code::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                g.members[i].synced = Some(g.synced_of(member));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                g.members[i].syncing = true;
                g.members[i].synced = None;
                if member == g.leader {
                    for m in &mut g.members {
                        m.assignment = assignments
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map_or_else(Bytes::new, |(_, a)| a.clone());
                    }
                    g.state = GroupState::Stable;
                    for i in 0..g.members.len() {
                        if g.members[i].syncing {
                            let answer = g.synced_of(&g.members[i].id);
                            g.members[i].syncing = false;
                            g.members[i].synced = Some(answer);
                        }
                    }
                    self.changed = true;
                }
                Ok(())
            }
        }
    }

    /// The answer to member `member`'s SyncGroup, once there is one.
    pub fn synced(&mut self, group: &str, member: &str) -> Option<Synced> {
        let Some(m) = self.groups.get_mut(group).and_then(|g| g.member(member)) else {
            return Some(Synced::refused(code::UNKNOWN_MEMBER_ID));
        };
        m.synced.take()
    }

    /// A member of `group` in `generation` is heard from: the group's state,
    /// or Kafka's error code for a member or generation it does not know.
    fn heard_from(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        now: Instant,
    ) -> Result<GroupState, i16> {
        let g = self.groups.get_mut(group).ok_or(code::UNKNOWN_MEMBER_ID)?;
        let (state, current) = (g.state, g.generation);
        let m = g.member(member).ok_or(code::UNKNOWN_MEMBER_ID)?;
        m.last_heard = now;
        if generation != current {
            return Err(code::ILLEGAL_GENERATION);
        }
        Ok(state)
    }

    /// A member says it is alive: Kafka's Heartbeat error code.
    pub fn heartbeat(&mut self, group: &str, generation: i32, member: &str, now: Instant) -> i16 {
        match self.heard_from(group, generation, member, now) {
            Ok(GroupState::PreparingRebalance) => code::REBALANCE_IN_PROGRESS,
            Ok(_) => code::NONE,
            Err(e) => e,
        }
    }

    /// A member leaves: the others rebalance.
    pub fn leave(&mut self, group: &str, member: &str, now: Instant) -> i16 {
        let Some(g) = self.groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let before = g.members.len();
        g.members.retain(|m| m.id != member);
        if g.members.len() == before {
            return code::UNKNOWN_MEMBER_ID;
        }
        g.prepare_rebalance(now);
        g.try_complete_rebalance(now);
        self.changed = true;
        code::NONE
    }

    /// Whether a member may commit offsets: Kafka's OffsetCommit error code. A
    /// commit with generation −1 and no member id comes from a consumer
    /// outside the group's membership (one that assigns itself partitions):
    /// allowed while the group has no members.
    pub fn may_commit(&mut self, group: &str, generation: i32, member: &str, now: Instant) -> i16 {
        if generation < 0 && member.is_empty() {
            return match self.groups.get(group) {
                Some(g) if !g.members.is_empty() => code::ILLEGAL_GENERATION,
                _ => code::NONE,
            };
        }
        match self.heard_from(group, generation, member, now) {
            Ok(GroupState::CompletingRebalance) => code::REBALANCE_IN_PROGRESS,
            Ok(_) => code::NONE,
            Err(e) => e,
        }
    }

    /// Expires silent members and completes rebalances that can complete;
    /// groups left empty are forgotten (their committed offsets are the
    /// broker's to keep), and their names returned.
    pub fn advance(&mut self, now: Instant) -> Vec<String> {
        let mut emptied = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            let before = g.members.len();
            g.members.retain(|m| !m.expired(now));
            if g.members.len() != before {
                g.prepare_rebalance(now);
                self.changed = true;
            }
            let state = g.state;
            g.try_complete_rebalance(now);
            self.changed |= state != g.state;
            if g.members.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in &emptied {
            self.groups.remove(name);
        }
        emptied
    }

    /// Whether any group changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every group with members.
    pub fn views(&self) -> Vec<GroupView> {
        self.groups.iter().map(|(n, g)| g.view(n)).collect()
    }

    /// Group `name`, if it has members.
    pub fn view(&self, name: &str) -> Option<GroupView> {
        self.groups.get(name).map(|g| g.view(name))
    }

    /// The group whose members use client id `client_id`, when only one does:
    /// which group a fetch on a connection that never spoke to the coordinator
    /// reads for (a client may keep its group's requests on a connection of
    /// their own).
    pub fn group_of_client(&self, client_id: &str) -> Option<&str> {
        let mut found = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.iter().any(|m| m.client_id == client_id))
            .map(|(n, _)| n.as_str());
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

impl Group {
    fn synced_of(&self, member: &str) -> Synced {
        Synced {
            error: code::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .iter()
                .find(|m| m.id == member)
                .map_or_else(Bytes::new, |m| m.assignment.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(member: &str, protocols: &[&str]) -> JoinAsk {
        JoinAsk {
            group: "g".into(),
            member_id: member.into(),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
        }
    }

    #[test]
    fn a_lone_member_leads_generation_one_and_gets_its_own_assignment() {
        let mut c = Coordinator::new(7);
        let t = Instant::now();
        let id = c.join(ask("", &["range"]), t).unwrap();
        assert_eq!(id, "c-7-1");
        let j = c.joined("g", &id).unwrap();
        assert_eq!((j.error, j.generation, j.leader.as_str()), (0, 1, "c-7-1"));
        assert_eq!(j.members, vec![(id.clone(), Bytes::from("meta-range"))]);
        c.sync("g", 1, &id, vec![(id.clone(), Bytes::from("mine"))], t)
            .unwrap();
        assert_eq!(c.synced("g", &id).unwrap().assignment, Bytes::from("mine"));
        assert_eq!(c.view("g").unwrap().state, GroupState::Stable);
        assert_eq!(c.heartbeat("g", 1, &id, t), code::NONE);
    }

    #[test]
    fn a_second_member_rebalances_the_group_and_the_leader_assigns_both() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        let a = c.join(ask("", &["range", "roundrobin"]), t).unwrap();
        c.joined("g", &a).unwrap();
        c.sync("g", 1, &a, vec![], t).unwrap();
        let b = c.join(ask("", &["roundrobin", "range"]), t).unwrap();
        assert_eq!(c.joined("g", &b), None, "waits for a to join again");
        assert_eq!(c.heartbeat("g", 1, &a, t), code::REBALANCE_IN_PROGRESS);
        c.join(ask(&a, &["range", "roundrobin"]), t).unwrap();
        let ja = c.joined("g", &a).unwrap();
        let jb = c.joined("g", &b).unwrap();
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, a);
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty(), "only the leader sees the members");
        // One vote each: the leader's preference wins.
        assert_eq!(ja.protocol, "range");
        // The follower's sync waits for the leader's.
        c.sync("g", 2, &b, vec![], t).unwrap();
        assert_eq!(c.synced("g", &b), None);
        let plan = vec![
            (a.clone(), Bytes::from("p0")),
            (b.clone(), Bytes::from("p1")),
        ];
        c.sync("g", 2, &a, plan, t).unwrap();
        assert_eq!(c.synced("g", &b).unwrap().assignment, Bytes::from("p1"));
        assert_eq!(c.synced("g", &a).unwrap().assignment, Bytes::from("p0"));
        assert_eq!(c.heartbeat("g", 1, &a, t), code::ILLEGAL_GENERATION);
        assert_eq!(c.heartbeat("g", 2, "nobody", t), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance_without_it() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        let a = c.join(ask("", &["range"]), t).unwrap();
        let b = c.join(ask("", &["range"]), t).unwrap();
        c.join(ask(&a, &["range"]), t).unwrap();
        c.joined("g", &a).unwrap();
        c.joined("g", &b).unwrap();
        c.sync("g", 2, &a, vec![], t).unwrap();
        // a keeps beating; b goes silent.
        let later = t + Duration::from_secs(8);
        assert_eq!(c.heartbeat("g", 2, &a, later), code::NONE);
        c.advance(t + Duration::from_secs(11));
        assert_eq!(c.view("g").unwrap().members.len(), 1);
        let at = t + Duration::from_secs(11);
        assert_eq!(c.heartbeat("g", 2, &a, at), code::REBALANCE_IN_PROGRESS);
        c.join(ask(&a, &["range"]), at).unwrap();
        assert_eq!(c.joined("g", &a).unwrap().generation, 3);
        assert_eq!(c.synced("g", &b).unwrap().error, code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_rebalance_completes_at_its_timeout_without_members_that_did_not_join() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        let a = c.join(ask("", &["range"]), t).unwrap();
        c.joined("g", &a).unwrap();
        let b = c.join(ask("", &["range"]), t).unwrap();
        // a heartbeats (so it does not expire) but never joins again.
        for s in 1..=29 {
            c.heartbeat("g", 1, &a, t + Duration::from_secs(s));
            c.advance(t + Duration::from_secs(s));
        }
        assert_eq!(c.joined("g", &b), None);
        c.advance(t + Duration::from_secs(31));
        let jb = c.joined("g", &b).unwrap();
        assert_eq!((jb.generation, jb.leader.as_str()), (2, b.as_str()));
        assert_eq!(c.heartbeat("g", 2, &a, t), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn joins_that_cannot_be_served_are_refused_with_kafkas_codes() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        let e = c.join(ask("stranger", &["range"]), t).unwrap_err();
        assert_eq!(e, code::UNKNOWN_MEMBER_ID);
        assert!(c.view("g").is_none());
        c.join(ask("", &["range"]), t).unwrap();
        let e = c.join(ask("", &["sticky"]), t).unwrap_err();
        assert_eq!(e, code::INCONSISTENT_GROUP_PROTOCOL);
        let mut short = ask("", &["range"]);
        short.session_timeout = Duration::from_millis(10);
        assert_eq!(c.join(short, t).unwrap_err(), code::INVALID_SESSION_TIMEOUT);
        for _ in 1..MAX_MEMBERS {
            c.join(ask("", &["range"]), t).unwrap();
        }
        assert_eq!(
            c.join(ask("", &["range"]), t).unwrap_err(),
            code::GROUP_MAX_SIZE_REACHED
        );
        let mut other_type = ask("", &["range"]);
        other_type.protocol_type = "connect".into();
        assert_eq!(
            c.join(other_type, t).unwrap_err(),
            code::INCONSISTENT_GROUP_PROTOCOL
        );
    }

    #[test]
    fn the_last_member_leaving_empties_and_forgets_the_group() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        let a = c.join(ask("", &["range"]), t).unwrap();
        c.joined("g", &a).unwrap();
        assert_eq!(c.may_commit("g", -1, "", t), code::ILLEGAL_GENERATION);
        assert_eq!(c.may_commit("g", 1, &a, t), code::REBALANCE_IN_PROGRESS);
        c.sync("g", 1, &a, vec![], t).unwrap();
        assert_eq!(c.may_commit("g", 1, &a, t), code::NONE);
        assert_eq!(c.may_commit("g", 0, &a, t), code::ILLEGAL_GENERATION);
        assert_eq!(c.leave("g", &a, t), code::NONE);
        assert_eq!(c.advance(t), vec!["g".to_string()]);
        assert!(c.views().is_empty());
        assert_eq!(c.may_commit("g", -1, "", t), code::NONE);
        assert_eq!(c.leave("g", &a, t), code::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_fetch_is_put_to_a_group_only_when_its_client_id_names_one() {
        let mut c = Coordinator::new(1);
        let t = Instant::now();
        c.join(ask("", &["range"]), t).unwrap();
        assert_eq!(c.group_of_client("c"), Some("g"));
        let mut other = ask("", &["range"]);
        other.group = "h".into();
        c.join(other, t).unwrap();
        assert_eq!(c.group_of_client("c"), None);
        assert_eq!(c.group_of_client("x"), None);
    }
}
