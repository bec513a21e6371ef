//! The group coordinator of Kafka's classic consumer group protocol: members join, the
//! coordinator waits for every known member (or its rebalance timeout), picks a protocol and a
//! leader, the leader's assignment (computed by the client's assignor, as in Kafka) is handed
//! out at SyncGroup, heartbeats keep members alive, and a member silent for its session
//! timeout is removed and the group rebalances.

use crate::errors;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where a group is in its life, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name DescribeGroups reports.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat: Instant,
    joined: bool,
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member and its metadata, for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a SyncGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used.
    pending_ids: HashSet<String>,
    joins: HashMap<String, oneshot::Sender<JoinResult>>,
    syncs: HashMap<String, oneshot::Sender<SyncResult>>,
    /// When the current rebalance phase gives up waiting.
    deadline: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashSet::new(),
            joins: HashMap::new(),
            syncs: HashMap::new(),
            deadline: None,
        }
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(5))
    }

    /// Starts a rebalance: every member must join again.
    fn prepare_rebalance(&mut self, delay: Duration) {
        for (_, s) in self.syncs.drain() {
            let _ = s.send(SyncResult {
                error: errors::REBALANCE_IN_PROGRESS,
                ..Default::default()
            });
        }
        if self.state != GroupState::PreparingRebalance {
            for m in self.members.values_mut() {
                m.joined = self.joins.contains_key(&m.id);
            }
            self.deadline = Some(Instant::now() + delay.max(Duration::from_millis(1)));
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn all_joined(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.joined)
    }

    /// Ends the join phase: drops members that did not join, picks protocol and leader,
    /// answers every waiting JoinGroup.
    fn complete_join(&mut self) {
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in absent {
            self.members.remove(&id);
        }
        self.generation += 1;
        self.deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        // The leader's most preferred protocol that every member supports.
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        let candidates: Vec<String> = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        self.protocol = candidates.into_iter().find(|p| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == p))
        });
        let protocol = self.protocol.clone().unwrap_or_default();
        let listing: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (m.id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        self.state = GroupState::CompletingRebalance;
        self.deadline = Some(Instant::now() + self.max_rebalance_timeout());
        let now = Instant::now();
        for m in self.members.values_mut() {
            m.joined = false;
            m.last_heartbeat = now;
        }
        for (id, tx) in self.joins.drain() {
            let _ = tx.send(JoinResult {
                error: errors::NONE,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: leader.clone(),
                members: if id == leader {
                    listing.clone()
                } else {
                    Vec::new()
                },
                member_id: id,
            });
        }
    }

    fn remove_member(&mut self, id: &str, rebalance_delay: Duration) {
        self.members.remove(id);
        if let Some(tx) = self.joins.remove(id) {
            let _ = tx.send(JoinResult {
                error: errors::UNKNOWN_MEMBER_ID,
                member_id: id.to_string(),
                ..Default::default()
            });
        }
        if let Some(tx) = self.syncs.remove(id) {
            let _ = tx.send(SyncResult {
                error: errors::UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
        }
        if self.members.is_empty() {
            self.complete_join();
        } else {
            self.prepare_rebalance(rebalance_delay);
            if self.all_joined() {
                self.complete_join();
            }
        }
    }
}

/// A group as DescribeGroups shows it.
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub members: Vec<Member>,
}

/// A JoinGroup request, as the coordinator needs it.
pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Clients from JoinGroup v4 on must first ask for a member id.
    pub require_known_member_id: bool,
}

/// Every group of the broker.
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// How long a new group waits for more members (`group.initial.rebalance.delay.ms`).
    pub initial_delay: Duration,
    next_id: std::sync::atomic::AtomicU64,
}

impl Coordinator {
    pub fn new(initial_delay: Duration) -> Coordinator {
        Coordinator {
            groups: Mutex::new(HashMap::new()),
            initial_delay,
            next_id: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        match self.groups.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{client_id}-{nanos:x}-{n}")
    }

    /// Handles a JoinGroup; the result comes when the join phase completes.
    pub fn join(&self, r: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let fail = |tx: oneshot::Sender<JoinResult>, error: i16, member_id: String| {
            let _ = tx.send(JoinResult {
                error,
                member_id,
                ..Default::default()
            });
        };
        if r.group.is_empty() {
            fail(tx, errors::INVALID_GROUP_ID, r.member_id);
            return rx;
        }
        if r.session_timeout < Duration::from_millis(100)
            || r.session_timeout > Duration::from_secs(30 * 60)
        {
            fail(tx, errors::INVALID_SESSION_TIMEOUT, r.member_id);
            return rx;
        }
        let mut groups = self.lock();
        let group = groups.entry(r.group.clone()).or_insert_with(Group::new);
        if group.state != GroupState::Empty
            && group
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != r.protocol_type)
        {
            fail(tx, errors::INCONSISTENT_GROUP_PROTOCOL, r.member_id);
            return rx;
        }
        let member_id = if r.member_id.is_empty() {
            let id = self.new_member_id(&r.client_id);
            if r.require_known_member_id {
                group.pending_ids.insert(id.clone());
                fail(tx, errors::MEMBER_ID_REQUIRED, id);
                return rx;
            }
            id
        } else if group.members.contains_key(&r.member_id) || group.pending_ids.remove(&r.member_id)
        {
            r.member_id.clone()
        } else {
            fail(tx, errors::UNKNOWN_MEMBER_ID, r.member_id);
            return rx;
        };
        let was_empty = group.members.is_empty();
        group.protocol_type = Some(r.protocol_type.clone());
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                id: member_id.clone(),
                instance_id: r.instance_id.clone(),
                client_id: r.client_id.clone(),
                client_host: r.client_host.clone(),
                session_timeout: r.session_timeout,
                rebalance_timeout: r.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                last_heartbeat: Instant::now(),
                joined: false,
            });
        let changed = member.protocols != r.protocols;
        member.protocols = r.protocols;
        member.session_timeout = r.session_timeout;
        member.rebalance_timeout = r.rebalance_timeout;
        member.last_heartbeat = Instant::now();
        member.joined = true;
        if let Some(old) = group.joins.insert(member_id.clone(), tx) {
            let _ = old.send(JoinResult {
                error: errors::UNKNOWN_MEMBER_ID,
                ..Default::default()
            });
        }
        match group.state {
            GroupState::Stable if !changed && group.leader.as_deref() != Some(&member_id) => {
                // A follower rejoining with the same protocols in a stable group: no rebalance.
                let tx = group.joins.remove(&member_id);
                if let Some(tx) = tx {
                    let _ = tx.send(JoinResult {
                        error: errors::NONE,
                        generation: group.generation,
                        protocol_type: group.protocol_type.clone(),
                        protocol: group.protocol.clone(),
                        leader: group.leader.clone().unwrap_or_default(),
                        member_id: member_id.clone(),
                        members: Vec::new(),
                    });
                }
                if let Some(m) = group.members.get_mut(&member_id) {
                    m.joined = false;
                }
            }
            GroupState::PreparingRebalance => {
                if group.all_joined()
                    && group
                        .deadline
                        .is_some_and(|d| d <= Instant::now() || !was_empty)
                {
                    group.complete_join();
                }
            }
            _ => {
                let delay = if was_empty {
                    self.initial_delay
                } else {
                    group.max_rebalance_timeout()
                };
                group.prepare_rebalance(delay);
                if !was_empty && group.all_joined() {
                    group.complete_join();
                }
            }
        }
        rx
    }

    /// Handles a SyncGroup; followers wait for the leader's assignment.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let reply = |tx: oneshot::Sender<SyncResult>, error: i16| {
            let _ = tx.send(SyncResult {
                error,
                ..Default::default()
            });
        };
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            reply(tx, errors::UNKNOWN_MEMBER_ID);
            return rx;
        };
        if !group.members.contains_key(member_id) {
            reply(tx, errors::UNKNOWN_MEMBER_ID);
            return rx;
        }
        if generation != group.generation {
            reply(tx, errors::ILLEGAL_GENERATION);
            return rx;
        }
        match group.state {
            GroupState::PreparingRebalance | GroupState::Empty => {
                reply(tx, errors::REBALANCE_IN_PROGRESS)
            }
            GroupState::Stable => {
                let assignment = group.members[member_id].assignment.clone();
                let _ = tx.send(SyncResult {
                    error: errors::NONE,
                    protocol_type: group.protocol_type.clone(),
                    protocol: group.protocol.clone(),
                    assignment,
                });
            }
            GroupState::CompletingRebalance => {
                group.syncs.insert(member_id.to_string(), tx);
                if group.leader.as_deref() == Some(member_id) {
                    for m in group.members.values_mut() {
                        m.assignment = Bytes::new();
                    }
                    for (id, a) in assignments {
                        if let Some(m) = group.members.get_mut(&id) {
                            m.assignment = a;
                        }
                    }
                    group.state = GroupState::Stable;
                    group.deadline = None;
                    for (id, tx) in group.syncs.drain() {
                        let assignment = group
                            .members
                            .get(&id)
                            .map(|m| m.assignment.clone())
                            .unwrap_or_default();
                        let _ = tx.send(SyncResult {
                            error: errors::NONE,
                            protocol_type: group.protocol_type.clone(),
                            protocol: group.protocol.clone(),
                            assignment,
                        });
                    }
                }
            }
        }
        rx
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return errors::UNKNOWN_MEMBER_ID;
        };
        let state = group.state;
        let current = group.generation;
        let Some(m) = group.members.get_mut(member_id) else {
            return errors::UNKNOWN_MEMBER_ID;
        };
        m.last_heartbeat = Instant::now();
        match state {
            GroupState::PreparingRebalance => errors::REBALANCE_IN_PROGRESS,
            _ if generation != current => errors::ILLEGAL_GENERATION,
            _ => errors::NONE,
        }
    }

    /// Handles a LeaveGroup for one member.
    pub fn leave(&self, group_id: &str, member_id: &str) -> i16 {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return errors::UNKNOWN_MEMBER_ID;
        };
        if !group.members.contains_key(member_id) {
            return errors::UNKNOWN_MEMBER_ID;
        }
        let delay = group.max_rebalance_timeout();
        group.remove_member(member_id, delay);
        errors::NONE
    }

    /// Checks whether a member may commit offsets with this generation (-1: outside any group).
    pub fn check_commit(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return if generation < 0 {
                errors::NONE
            } else {
                errors::ILLEGAL_GENERATION
            };
        };
        if generation < 0 {
            return if group.members.is_empty() {
                errors::NONE
            } else {
                errors::UNKNOWN_MEMBER_ID
            };
        }
        if !group.members.contains_key(member_id) {
            return errors::UNKNOWN_MEMBER_ID;
        }
        // As Kafka: commits of the current generation are taken while the group prepares a
        // rebalance (members commit as their partitions are revoked), refused while it waits
        // for the new assignment.
        if group.state == GroupState::CompletingRebalance {
            return errors::REBALANCE_IN_PROGRESS;
        }
        if generation != group.generation {
            return errors::ILLEGAL_GENERATION;
        }
        errors::NONE
    }

    /// Removes members whose session expired and ends join phases whose time is up. Called
    /// periodically.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for (name, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    !group.joins.contains_key(&m.id)
                        && now.duration_since(m.last_heartbeat) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(group = %name, member = %id, "session timed out; member removed");
                let delay = group.max_rebalance_timeout();
                group.remove_member(&id, delay);
            }
            match group.state {
                GroupState::PreparingRebalance if group.deadline.is_some_and(|d| d <= now) => {
                    group.complete_join()
                }
                GroupState::CompletingRebalance if group.deadline.is_some_and(|d| d <= now) => {
                    // The leader never sent the assignment: start over.
                    let delay = group.max_rebalance_timeout();
                    group.prepare_rebalance(delay);
                }
                _ => {}
            }
        }
    }

    /// Every group with its state and protocol type.
    pub fn list(&self) -> Vec<(String, GroupState, Option<String>)> {
        self.lock()
            .iter()
            .map(|(k, g)| (k.clone(), g.state, g.protocol_type.clone()))
            .collect()
    }

    /// A group's state, protocol and members.
    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        self.lock().get(group_id).map(|g| GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            members: g.members.values().cloned().collect(),
        })
    }

    /// Removes an empty group; `NON_EMPTY_GROUP` if it has members.
    pub fn delete(&self, group_id: &str) -> i16 {
        let mut groups = self.lock();
        match groups.get(group_id) {
            Some(g) if !g.members.is_empty() => errors::NON_EMPTY_GROUP,
            _ => {
                groups.remove(group_id);
                errors::NONE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(c: &Coordinator, member: &str) -> oneshot::Receiver<JoinResult> {
        c.join(JoinRequest {
            group: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: false,
        })
    }

    #[tokio::test]
    async fn two_members_join_sync_and_one_leaves() {
        let c = Coordinator::new(Duration::from_millis(20));
        let a = join(&c, "");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = join(&c, "");
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.tick();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.error, b.error), (0, 0));
        assert_eq!(a.generation, 1);
        assert_eq!(a.leader, b.leader);
        let (leader, follower) = if a.leader == a.member_id {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(leader.members.len(), 2);
        assert!(follower.members.is_empty());
        let fs = c.sync("g", 1, &follower.member_id, vec![]);
        let ls = c.sync(
            "g",
            1,
            &leader.member_id,
            vec![
                (leader.member_id.clone(), Bytes::from_static(b"L")),
                (follower.member_id.clone(), Bytes::from_static(b"F")),
            ],
        );
        assert_eq!(&fs.await.unwrap().assignment[..], b"F");
        assert_eq!(&ls.await.unwrap().assignment[..], b"L");
        assert_eq!(c.heartbeat("g", 1, &leader.member_id), 0);
        // The follower leaves: the leader is told to rejoin, and alone it completes at once.
        assert_eq!(c.leave("g", &follower.member_id), 0);
        assert_eq!(
            c.heartbeat("g", 1, &leader.member_id),
            errors::REBALANCE_IN_PROGRESS
        );
        let again = join(&c, &leader.member_id).await.unwrap();
        assert_eq!(again.generation, 2);
        assert_eq!(again.members.len(), 1);
        // Waiting for the new assignment: commits are refused until SyncGroup; then an old
        // generation is refused and the current one taken.
        assert_eq!(
            c.check_commit("g", 2, &leader.member_id),
            errors::REBALANCE_IN_PROGRESS
        );
        let synced = c.sync("g", 2, &leader.member_id, vec![]).await.unwrap();
        assert_eq!(synced.error, 0);
        assert_eq!(
            c.check_commit("g", 1, &leader.member_id),
            errors::ILLEGAL_GENERATION
        );
        assert_eq!(c.check_commit("g", 2, &leader.member_id), errors::NONE);
    }

    #[tokio::test]
    async fn a_silent_member_is_removed_after_its_session_timeout() {
        let c = Coordinator::new(Duration::from_millis(1));
        let mut r = JoinRequest {
            group: "g".into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_millis(150),
            rebalance_timeout: Duration::from_millis(150),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            require_known_member_id: true,
        };
        let first = c.join(JoinRequest { ..clone_req(&r) }).await.unwrap();
        assert_eq!(first.error, errors::MEMBER_ID_REQUIRED);
        r.member_id = first.member_id.clone();
        let rx = c.join(r);
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.tick();
        let joined = rx.await.unwrap();
        assert_eq!(joined.error, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.tick();
        assert_eq!(
            c.heartbeat("g", joined.generation, &joined.member_id),
            errors::UNKNOWN_MEMBER_ID
        );
        assert_eq!(c.describe("g").unwrap().state, GroupState::Empty);
    }

    fn clone_req(r: &JoinRequest) -> JoinRequest {
        JoinRequest {
            group: r.group.clone(),
            member_id: r.member_id.clone(),
            instance_id: r.instance_id.clone(),
            client_id: r.client_id.clone(),
            client_host: r.client_host.clone(),
            session_timeout: r.session_timeout,
            rebalance_timeout: r.rebalance_timeout,
            protocol_type: r.protocol_type.clone(),
            protocols: r.protocols.clone(),
            require_known_member_id: r.require_known_member_id,
        }
    }
}
