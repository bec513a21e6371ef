//! CreateTopics and DeleteTopics.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Answers a CreateTopics request.
pub fn create_topics(broker: &Broker, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut res = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let outcome = if t.replication_factor > 1 {
            Err((
                errors::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} is larger than the one broker",
                    t.replication_factor
                ),
            ))
        } else if !t.assignments.is_empty() {
            Err((
                errors::INVALID_REQUEST,
                "manual replica assignment is not supported".to_string(),
            ))
        } else if r.validate_only {
            let overrides: crate::topic_config::Overrides = t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            crate::topic_config::apply(&broker.config.log, &overrides)
                .and_then(|_| {
                    crate::topics::check_topic_name(&name)
                        .map_err(|m| (errors::INVALID_TOPIC_EXCEPTION, m))
                })
                .map(|_| {
                    if t.num_partitions > 0 {
                        t.num_partitions as usize
                    } else {
                        broker.config.default_partitions as usize
                    }
                })
        } else {
            let overrides = t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            broker.topics.create(&name, t.num_partitions, overrides)
        };
        match outcome {
            Ok(n) => {
                res.num_partitions = n as i32;
                res.replication_factor = 1;
            }
            Err((code, message)) => {
                res.error_code = code;
                res.error_message = Some(StrBytes::from_string(message));
            }
        }
        resp.topics.push(res);
    }
    resp
}

/// Answers a DeleteTopics request.
pub fn delete_topics(broker: &Broker, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let names: Vec<TopicName> = r
        .topic_names
        .into_iter()
        .chain(r.topics.into_iter().filter_map(|t| t.name))
        .collect();
    for name in names {
        let mut res = DeletableTopicResult::default().with_name(Some(name.clone()));
        if let Err((code, message)) = broker.topics.delete(&name.0) {
            res.error_code = code;
            res.error_message = Some(StrBytes::from_string(message));
        }
        resp.responses.push(res);
    }
    resp
}

/// CreatePartitions: grows topics.
pub fn create_partitions(broker: &Broker, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in r.topics {
        let mut res = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
            Err((
                errors::INVALID_REQUEST,
                "manual replica assignment is not supported".to_string(),
            ))
        } else if r.validate_only {
            match broker.topics.partition_count(&t.name.0) {
                None => Err((
                    errors::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic '{}' does not exist", t.name.0.as_str()),
                )),
                Some(n) if t.count as usize <= n => Err((
                    errors::INVALID_PARTITIONS,
                    format!("the topic already has {n} partitions"),
                )),
                Some(_) => Ok(()),
            }
        } else {
            broker.topics.add_partitions(&t.name.0, t.count)
        };
        if let Err((code, message)) = outcome {
            res.error_code = code;
            res.error_message = Some(StrBytes::from_string(message));
        }
        resp.results.push(res);
    }
    resp
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn ms(d: Option<std::time::Duration>) -> String {
    d.map(|d| d.as_millis().to_string())
        .unwrap_or_else(|| "-1".into())
}

/// The configuration in force for a topic or the broker, with Kafka's names.
fn configs(broker: &Broker, resource_type: i8, topic: &str) -> Vec<(&'static str, String)> {
    let topic_log = broker.topics.log_config(topic);
    let log = if resource_type == RESOURCE_TOPIC {
        &topic_log
    } else {
        &broker.config.log
    };
    let c = &broker.config;
    match resource_type {
        RESOURCE_TOPIC => vec![
            ("cleanup.policy", "delete".into()),
            ("compression.type", "producer".into()),
            (
                "flush.messages",
                if log.fsync_on_ack {
                    "1".into()
                } else {
                    "9223372036854775807".into()
                },
            ),
            ("max.message.bytes", c.max_request_bytes.to_string()),
            ("message.timestamp.type", "CreateTime".into()),
            ("min.insync.replicas", "1".into()),
            (
                "retention.bytes",
                log.retention_bytes
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "-1".into()),
            ),
            ("retention.ms", ms(log.retention_ms)),
            ("segment.bytes", log.segment_bytes.to_string()),
            ("segment.index.bytes", "10485760".into()),
            ("segment.ms", ms(log.segment_ms)),
        ],
        _ => vec![
            (
                "auto.create.topics.enable",
                c.auto_create_topics.to_string(),
            ),
            ("broker.id", c.node_id.to_string()),
            (
                "group.initial.rebalance.delay.ms",
                c.initial_rebalance_delay.as_millis().to_string(),
            ),
            ("log.dirs", c.data_dir.display().to_string()),
            ("log.retention.ms", ms(log.retention_ms)),
            ("log.segment.bytes", log.segment_bytes.to_string()),
            ("num.partitions", c.default_partitions.to_string()),
            ("socket.request.max.bytes", c.max_request_bytes.to_string()),
            (
                "transaction.max.timeout.ms",
                c.transaction_max_timeout.as_millis().to_string(),
            ),
            (
                "transactional.id.expiration.ms",
                c.transactional_id_expiration.as_millis().to_string(),
            ),
        ],
    }
}

/// DescribeConfigs: the configuration in force (Sluice has no per-topic overrides yet).
pub fn describe_configs(broker: &Broker, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let known = match res.resource_type {
            RESOURCE_TOPIC => broker.topics.partition_count(&res.resource_name).is_some(),
            RESOURCE_BROKER => true,
            _ => false,
        };
        if !known {
            out.error_code = if res.resource_type == RESOURCE_TOPIC {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                errors::INVALID_REQUEST
            };
            out.error_message = Some(StrBytes::from_string(format!(
                "unknown resource '{}'",
                res.resource_name.as_str()
            )));
        } else {
            let wanted: Option<Vec<String>> = res
                .configuration_keys
                .map(|k| k.iter().map(|k| k.to_string()).collect());
            let overrides = broker.topics.overrides(&res.resource_name);
            out.configs = configs(broker, res.resource_type, &res.resource_name)
                .into_iter()
                .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == k)))
                .map(|(k, v)| {
                    let source = match res.resource_type {
                        RESOURCE_TOPIC if overrides.contains_key(k) => SOURCE_DYNAMIC_TOPIC,
                        RESOURCE_TOPIC => SOURCE_DEFAULT,
                        _ => SOURCE_STATIC_BROKER,
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str(k))
                        .with_value(Some(StrBytes::from_string(v)))
                        .with_read_only(res.resource_type != RESOURCE_TOPIC)
                        .with_config_source(source)
                })
                .collect();
        }
        resp.results.push(out);
    }
    resp
}
