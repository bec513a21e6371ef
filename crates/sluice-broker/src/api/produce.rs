//! Produce: append each partition's record batches; with `acks=all` answer only once they are
//! fsynced (group commit through the flusher), with `acks=0` not at all.
//!
//! The work is split in two so that a connection can pipeline: [`append`] writes the
//! batches at once, in request order; [`PendingProduce::finish`] waits for the fsyncs and
//! gives the response, and may run while later requests are read.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

/// The flusher's answer for one partition of a produce: (topic index, partition index, answer).
type FlushWait = (usize, usize, oneshot::Receiver<Result<(), String>>);

/// A produce whose batches are written and whose answer may wait for fsyncs.
pub struct PendingProduce {
    response: ProduceResponse,
    waits: Vec<FlushWait>,
    acks: i16,
}

/// Appends every partition's batches now and asks the flusher for what `acks=all` needs.
pub fn append(broker: &Broker, r: ProduceRequest) -> PendingProduce {
    let mut response = ProduceResponse::default();
    let mut waits = Vec::new();
    let all = r.acks == -1;
    for (ti, topic) in r.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let mut t = TopicProduceResponse::default().with_name(topic.name.clone());
        for (pi, p) in topic.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            match (broker.topics.partition(&name, p.index), p.records) {
                (None, _) => pr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                (Some(_), None) => pr.error_code = errors::INVALID_RECORD,
                (Some(part), Some(records)) => {
                    match check_transaction(broker, &name, p.index, &records).and_then(|()| {
                        part.append(&records)
                            .map_err(|e| (errors::of_log_error(&e), e.to_string()))
                    }) {
                        Ok(info) => {
                            if !info.duplicate {
                                crate::broker_metrics::produced(
                                    &name,
                                    (info.last_offset - info.base_offset + 1).max(0) as u64,
                                    records.len() as u64,
                                );
                            }
                            pr.base_offset = info.base_offset;
                            pr.log_start_offset = part.log_start_offset();
                            if all && part.fsync_on_ack {
                                waits.push((ti, pi, broker.flusher.request(part)));
                            }
                        }
                        Err((code, message)) => {
                            tracing::info!(topic = %name, partition = p.index, error = %message, "produce refused");
                            pr.error_code = code;
                            pr.error_message = Some(StrBytes::from_string(message));
                        }
                    }
                }
            }
            t.partition_responses.push(pr);
        }
        response.responses.push(t);
    }
    broker.notify_appended();
    PendingProduce {
        response,
        waits,
        acks: r.acks,
    }
}

/// A transactional producer may write only to partitions of its open transaction, with its
/// current epoch (checked on the first batch: a request's batches share their producer).
fn check_transaction(
    broker: &Broker,
    topic: &str,
    partition: i32,
    records: &[u8],
) -> Result<(), (i16, String)> {
    let Ok(h) = sluice_log::BatchHeader::parse(records) else {
        return Ok(()); // the append reports what is wrong with the batch
    };
    if !h.is_transactional() || h.is_control() {
        return Ok(());
    }
    broker
        .transactions
        .check_produce(h.producer_id, h.producer_epoch, topic, partition)
        .map_err(|code| {
            let message = format!(
                "producer {} (epoch {}) has no open transaction holding {topic}-{partition}",
                h.producer_id, h.producer_epoch
            );
            (code, message)
        })
}

impl PendingProduce {
    /// Waits for the fsyncs `acks=all` needs; `None` for `acks=0`.
    pub async fn finish(mut self) -> Option<ProduceResponse> {
        for (ti, pi, wait) in self.waits {
            let result = wait
                .await
                .unwrap_or_else(|_| Err("the flusher has stopped".into()));
            if let Err(e) = result {
                let pr = &mut self.response.responses[ti].partition_responses[pi];
                pr.error_code = errors::KAFKA_STORAGE_ERROR;
                pr.error_message = Some(StrBytes::from_string(e));
            }
        }
        (self.acks != 0).then_some(self.response)
    }
}
