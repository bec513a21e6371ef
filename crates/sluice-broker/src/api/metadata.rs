//! Metadata: the broker (this one) and the topics asked for, created on the fly when
//! `auto.create.topics.enable` allows it.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

fn topic_entry(broker: &Broker, name: &str, partitions: usize) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_partitions(
            (0..partitions as i32)
                .map(|i| {
                    MetadataResponsePartition::default()
                        .with_partition_index(i)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                })
                .collect(),
        )
}

/// Answers a Metadata request.
pub fn handle(broker: &Broker, r: MetadataRequest, version: i16) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.config.node_id))
        .with_host(StrBytes::from_string(broker.config.advertised_host.clone()))
        .with_port(broker.config.advertised_port)];
    resp.cluster_id = Some(StrBytes::from_string(broker.config.cluster_id.clone()));
    resp.controller_id = BrokerId(broker.config.node_id);
    // v0 asks for every topic with an empty list; later versions with null.
    let wanted: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    match wanted {
        None => {
            for (name, n) in broker.topics.list() {
                resp.topics.push(topic_entry(broker, &name, n));
            }
        }
        Some(names) => {
            // Before v4 there is no flag; topics are created if the broker allows it.
            let allow =
                broker.config.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
            for name in names {
                let count = match broker.topics.partition_count(&name) {
                    Some(n) => Ok(n),
                    None if allow => broker
                        .topics
                        .create(&name, 0, Default::default())
                        .map_err(|(code, _)| code),
                    None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
                };
                resp.topics.push(match count {
                    Ok(n) => topic_entry(broker, &name, n),
                    Err(code) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                        .with_error_code(code),
                });
            }
        }
    }
    resp
}
