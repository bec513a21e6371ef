//! Produce: append each partition's record batches; with `acks=all` answer only once they are
//! fsynced (group commit through the flusher), with `acks=0` not at all.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

/// Answers a Produce request (`None` for `acks=0`).
pub async fn handle(broker: &Broker, r: ProduceRequest) -> Option<ProduceResponse> {
    let mut resp = ProduceResponse::default();
    let mut to_flush = Vec::new();
    for topic in r.topic_data {
        let name = topic.name.0.to_string();
        let mut t = TopicProduceResponse::default().with_name(topic.name.clone());
        for p in topic.partition_data {
            let mut pr = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            match (broker.topics.partition(&name, p.index), p.records) {
                (None, _) => pr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                (Some(_), None) => pr.error_code = errors::INVALID_RECORD,
                (Some(part), Some(records)) => match part.append(&records) {
                    Ok(info) => {
                        pr.base_offset = info.base_offset;
                        pr.log_start_offset = part.log_start_offset();
                        to_flush.push((t.partition_responses.len(), part));
                    }
                    Err(e) => {
                        tracing::info!(topic = %name, partition = p.index, error = %e, "produce refused");
                        pr.error_code = errors::of_log_error(&e);
                        pr.error_message = Some(StrBytes::from_string(e.to_string()));
                    }
                },
            }
            t.partition_responses.push(pr);
        }
        // Ask for every partition's flush, then wait: the flusher groups them.
        if r.acks == -1 && broker.config.log.fsync_on_ack {
            let waits: Vec<_> = to_flush
                .drain(..)
                .map(|(i, part)| (i, broker.flusher.request(part)))
                .collect();
            for (i, wait) in waits {
                let result = wait
                    .await
                    .unwrap_or_else(|_| Err("the flusher has stopped".into()));
                if let Err(e) = result {
                    t.partition_responses[i].error_code = errors::KAFKA_STORAGE_ERROR;
                    t.partition_responses[i].error_message = Some(StrBytes::from_string(e));
                }
            }
        }
        to_flush.clear();
        resp.responses.push(t);
    }
    broker.notify_appended();
    if r.acks == 0 {
        None
    } else {
        Some(resp)
    }
}
