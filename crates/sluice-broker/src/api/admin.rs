//! CreateTopics and DeleteTopics.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
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
            crate::topics::check_topic_name(&name)
                .map(|_| {
                    if t.num_partitions > 0 {
                        t.num_partitions as usize
                    } else {
                        broker.config.default_partitions as usize
                    }
                })
                .map_err(|m| (errors::INVALID_TOPIC_EXCEPTION, m))
        } else {
            broker.topics.create(&name, t.num_partitions)
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
