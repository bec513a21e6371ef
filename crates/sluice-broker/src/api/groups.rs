//! The consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups. The logic is in
//! `crate::groups` and `crate::offsets`; this is the translation to and from the wire.

use super::RequestContext;
use crate::errors;
use crate::groups::JoinRequest;
use crate::offsets::Committed;
use crate::Broker;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// FindCoordinator: this broker coordinates every group. Versions 0 to 3 answer for one key
/// in top-level fields; from version 4, for each key in `coordinators` (and the top-level
/// fields must stay empty).
pub fn find_coordinator(
    broker: &Broker,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let node = BrokerId(broker.config.node_id);
    let host = s(broker.config.advertised_host.clone());
    let port = broker.config.advertised_port;
    if version >= 4 {
        let mut resp = FindCoordinatorResponse::default();
        resp.coordinators = r
            .coordinator_keys
            .into_iter()
            .map(|key| {
                WireCoordinator::default()
                    .with_key(key)
                    .with_node_id(node)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return resp;
    }
    FindCoordinatorResponse::default()
        .with_node_id(node)
        .with_host(host)
        .with_port(port)
}

/// JoinGroup: waits until the join phase completes.
pub async fn join(broker: &Broker, r: JoinGroupRequest, ctx: &RequestContext) -> JoinGroupResponse {
    let rebalance = if ctx.version >= 1 {
        r.rebalance_timeout_ms
    } else {
        r.session_timeout_ms
    };
    let wait = broker.groups.join(JoinRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.group_instance_id.map(|i| i.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout: Duration::from_millis(r.session_timeout_ms.max(0) as u64),
        rebalance_timeout: Duration::from_millis(rebalance.max(0) as u64),
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: ctx.version >= 4,
    });
    let result = wait.await.unwrap_or_else(|_| crate::groups::JoinResult {
        error: errors::COORDINATOR_NOT_AVAILABLE,
        ..Default::default()
    });
    let mut resp = JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(if result.error == 0 {
            result.generation
        } else {
            -1
        })
        .with_protocol_type(result.protocol_type.map(s))
        .with_leader(s(result.leader))
        .with_member_id(s(result.member_id));
    // Before v7 the protocol name is not nullable.
    resp.protocol_name = Some(s(result.protocol.unwrap_or_default()));
    resp.members = result
        .members
        .into_iter()
        .map(|(id, instance, meta)| {
            JoinGroupResponseMember::default()
                .with_member_id(s(id))
                .with_group_instance_id(instance.map(s))
                .with_metadata(meta)
        })
        .collect();
    resp
}

/// SyncGroup: the leader hands out assignments; everyone gets theirs.
pub async fn sync(broker: &Broker, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let wait = broker
        .groups
        .sync(&r.group_id.0, r.generation_id, &r.member_id, assignments);
    let result = wait.await.unwrap_or_else(|_| crate::groups::SyncResult {
        error: errors::COORDINATOR_NOT_AVAILABLE,
        ..Default::default()
    });
    SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_protocol_type(result.protocol_type.map(s))
        .with_protocol_name(result.protocol.map(s))
        .with_assignment(result.assignment)
}

/// Heartbeat.
pub fn heartbeat(broker: &Broker, r: HeartbeatRequest) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(broker.groups.heartbeat(
        &r.group_id.0,
        r.generation_id,
        &r.member_id,
    ))
}

/// LeaveGroup: one member (before v3) or several.
pub fn leave(broker: &Broker, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = r.group_id.0.to_string();
    let mut resp = LeaveGroupResponse::default();
    if r.members.is_empty() {
        resp.error_code = broker.groups.leave(&group, &r.member_id);
    } else {
        for m in r.members {
            let code = broker.groups.leave(&group, &m.member_id);
            resp.members.push(
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(code),
            );
        }
    }
    resp
}

/// OffsetCommit: durable before the answer.
pub fn offset_commit(broker: &Broker, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let mut code =
        broker
            .groups
            .check_commit(&group, r.generation_id_or_member_epoch, &r.member_id);
    let mut entries = Vec::new();
    if code == errors::NONE {
        for t in &r.topics {
            for p in &t.partitions {
                entries.push((
                    (t.name.0.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                ));
            }
        }
        if let Err(e) = broker.offsets.commit(&group, entries) {
            tracing::warn!(%group, error = %e, "offset commit failed");
            code = errors::COORDINATOR_NOT_AVAILABLE;
        }
    }
    let mut resp = OffsetCommitResponse::default();
    for t in r.topics {
        let mut rt = OffsetCommitResponseTopic::default().with_name(t.name);
        for p in t.partitions {
            rt.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        resp.topics.push(rt);
    }
    resp
}

/// Committed offsets by topic: (partition, offset if committed).
type TopicOffsets = Vec<(TopicName, Vec<(i32, Option<Committed>)>)>;

/// The committed offsets of a group for the topics asked for (all when `None`).
fn fetch_offsets(
    broker: &Broker,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> TopicOffsets {
    match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(name, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, broker.offsets.get(group, &name.0, p)))
                    .collect();
                (name, found)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for ((topic, p), c) in broker.offsets.all(group) {
                by_topic.entry(topic).or_default().push((p, Some(c)));
            }
            by_topic
                .into_iter()
                .map(|(t, v)| (TopicName(s(t)), v))
                .collect()
        }
    }
}

/// OffsetFetch: one group (before v8) or several.
pub fn offset_fetch(broker: &Broker, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version < 8 {
        let topics = r.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect()
        });
        for (name, parts) in fetch_offsets(broker, &r.group_id.0, topics) {
            let mut t = OffsetFetchResponseTopic::default().with_name(name);
            for (p, c) in parts {
                t.partitions.push(
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(c.as_ref().map_or(-1, |c| c.offset))
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(s(c.and_then(|c| c.metadata).unwrap_or_default()))),
                );
            }
            resp.topics.push(t);
        }
        return resp;
    }
    for g in r.groups {
        let topics = g.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect()
        });
        let mut rg = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        for (name, parts) in fetch_offsets(broker, &g.group_id.0, topics) {
            let mut t = OffsetFetchResponseTopics::default().with_name(name);
            for (p, c) in parts {
                t.partitions.push(
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(c.as_ref().map_or(-1, |c| c.offset))
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(s(c.and_then(|c| c.metadata).unwrap_or_default()))),
                );
            }
            rg.topics.push(t);
        }
        resp.groups.push(rg);
    }
    resp
}

/// ListGroups: groups with members, and groups with only committed offsets (as Empty).
pub fn list_groups(broker: &Broker) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    let mut seen = std::collections::HashSet::new();
    for (id, state, protocol_type) in broker.groups.list() {
        seen.insert(id.clone());
        resp.groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s(protocol_type.unwrap_or_default()))
                .with_group_state(s(state.name()))
                .with_group_type(s("classic")),
        );
    }
    for id in broker.offsets.groups() {
        if seen.insert(id.clone()) {
            resp.groups.push(
                ListedGroup::default()
                    .with_group_id(GroupId(s(id)))
                    .with_protocol_type(s("consumer"))
                    .with_group_state(s("Empty"))
                    .with_group_type(s("classic")),
            );
        }
    }
    resp
}

/// DescribeGroups.
pub fn describe_groups(broker: &Broker, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    for id in r.groups {
        let mut g = DescribedGroup::default()
            .with_group_id(id.clone())
            .with_authorized_operations(i32::MIN);
        match broker.groups.describe(&id.0) {
            Some(crate::groups::GroupDescription {
                state,
                protocol_type,
                protocol,
                members,
            }) => {
                g.group_state = s(state.name());
                g.protocol_type = s(protocol_type.unwrap_or_default());
                g.protocol_data = s(protocol.clone().unwrap_or_default());
                g.members = members
                    .into_iter()
                    .map(|m| {
                        let meta = m
                            .protocols
                            .iter()
                            .find(|(n, _)| Some(n) == protocol.as_ref())
                            .map(|(_, b)| b.clone())
                            .unwrap_or_default();
                        DescribedGroupMember::default()
                            .with_member_id(s(m.id))
                            .with_group_instance_id(m.instance_id.map(s))
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(meta)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
            None => {
                g.group_state = s(if broker.offsets.has_group(&id.0) {
                    "Empty"
                } else {
                    "Dead"
                });
            }
        }
        resp.groups.push(g);
    }
    resp
}

/// DeleteGroups: only groups without members.
pub fn delete_groups(broker: &Broker, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for id in r.groups_names {
        let known = broker.groups.describe(&id.0).is_some() || broker.offsets.has_group(&id.0);
        let mut code = if known {
            broker.groups.delete(&id.0)
        } else {
            errors::GROUP_ID_NOT_FOUND
        };
        if code == errors::NONE {
            if let Err(e) = broker.offsets.delete(&id.0) {
                tracing::warn!(group = %id.0.as_str(), error = %e, "deleting offsets failed");
                code = errors::COORDINATOR_NOT_AVAILABLE;
            }
        }
        resp.results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    resp
}
