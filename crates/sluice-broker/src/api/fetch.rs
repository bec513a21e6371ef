//! Fetch: whole stored batches from each partition's fetch offset, waiting up to `max_wait_ms`
//! for `min_bytes` to arrive (long poll), within `max_bytes` and each partition's max bytes.

use crate::errors;
use crate::Broker;
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use std::time::Duration;

fn read_all(broker: &Broker, r: &FetchRequest) -> (FetchResponse, usize) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let read_committed = r.isolation_level == 1;
    let max_bytes = if r.max_bytes > 0 {
        r.max_bytes as usize
    } else {
        usize::MAX
    };
    for topic in &r.topics {
        let name = topic.topic.0.to_string();
        let mut t = FetchableTopicResponse::default().with_topic(topic.topic.clone());
        for p in &topic.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            match broker.topics.partition(&name, p.partition) {
                None => pd.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => {
                    // Up to the partition's limit within what is left of max_bytes; a read
                    // returns at least one whole batch, so the first partition with data may
                    // exceed the limits by one batch, as in Kafka.
                    let room = max_bytes.saturating_sub(total);
                    let limit = (p.partition_max_bytes.max(1) as usize).min(room).max(1);
                    let read = if read_committed {
                        part.read_committed(p.fetch_offset, limit)
                    } else {
                        part.read(p.fetch_offset, limit)
                    };
                    match read {
                        Ok(read) => {
                            pd.high_watermark = read.log_end_offset;
                            pd.last_stable_offset = read.last_stable_offset;
                            pd.log_start_offset = read.log_start_offset;
                            if read_committed {
                                let aborted = read.aborted.iter().map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                });
                                pd.aborted_transactions = Some(aborted.collect());
                            }
                            if !read.bytes.is_empty()
                                && (total == 0 || total + read.bytes.len() <= max_bytes)
                            {
                                total += read.bytes.len();
                                crate::broker_metrics::fetched(&name, read.bytes.len() as u64);
                                pd.records = Some(Bytes::from(read.bytes));
                            } else {
                                pd.records = Some(Bytes::new());
                            }
                        }
                        Err(e) => {
                            pd.error_code = errors::of_log_error(&e);
                            pd.high_watermark = part.log_end_offset();
                            pd.log_start_offset = part.log_start_offset();
                        }
                    }
                }
            }
            t.partitions.push(pd);
        }
        resp.responses.push(t);
    }
    (resp, total)
}

/// Answers a Fetch request.
pub async fn handle(broker: &Broker, r: FetchRequest) -> FetchResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let mut appended = broker.appended.subscribe();
    loop {
        appended.borrow_and_update();
        let (resp, total) = read_all(broker, &r);
        let has_error = resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code != errors::NONE);
        if total >= r.min_bytes.max(1) as usize
            || has_error
            || tokio::time::Instant::now() >= deadline
        {
            return resp;
        }
        // Wait for an append (or the deadline), then read again.
        if tokio::time::timeout_at(deadline, appended.changed())
            .await
            .is_err()
        {
            return read_all(broker, &r).0;
        }
    }
}
