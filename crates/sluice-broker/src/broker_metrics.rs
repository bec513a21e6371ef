//! The broker's metrics, through the `metrics` crate (read by the Prometheus endpoint of
//! `sluice broker --metrics-addr`): requests and their latency per API, records and bytes
//! produced and bytes fetched per topic, and, sampled every few seconds, the partitions, each
//! partition's log end offset and size in bytes and each consumer group's lag (Kafka's `records-lag`: the log end
//! offset minus the group's committed offset).

use crate::Broker;
use kafka_protocol::messages::ApiKey;
use metrics::{counter, gauge, histogram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Set once metrics are served ([`spawn_sampler`]): until then nothing is recorded, so that a
/// broker without `--metrics-addr` pays nothing per request.
static ENABLED: AtomicBool = AtomicBool::new(false);

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub mod names {
    pub const REQUESTS: &str = "sluice_broker_requests_total";
    pub const REQUEST_SECONDS: &str = "sluice_broker_request_duration_seconds";
    pub const PRODUCED_RECORDS: &str = "sluice_broker_produced_records_total";
    pub const PRODUCED_BYTES: &str = "sluice_broker_produced_bytes_total";
    pub const FETCHED_BYTES: &str = "sluice_broker_fetched_bytes_total";
    pub const PARTITIONS: &str = "sluice_broker_partitions";
    pub const LOG_END_OFFSET: &str = "sluice_broker_log_end_offset";
    pub const LOG_SIZE: &str = "sluice_broker_log_size_bytes";
    pub const GROUP_LAG: &str = "sluice_broker_consumer_group_lag";
}

/// How often the sampled metrics are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// A request of `api` answered in `took` (a produce: appended and, with `acks=all`, synced).
pub fn request(api: ApiKey, took: Duration) {
    if !enabled() {
        return;
    }
    let api = format!("{api:?}");
    counter!(names::REQUESTS, "api" => api.clone()).increment(1);
    histogram!(names::REQUEST_SECONDS, "api" => api).record(took.as_secs_f64());
}

/// Records appended to a partition of `topic` (`records` of them in `bytes`).
pub fn produced(topic: &str, records: u64, bytes: u64) {
    if !enabled() {
        return;
    }
    counter!(names::PRODUCED_RECORDS, "topic" => topic.to_string()).increment(records);
    counter!(names::PRODUCED_BYTES, "topic" => topic.to_string()).increment(bytes);
}

/// Bytes of `topic` handed to a consumer.
pub fn fetched(topic: &str, bytes: u64) {
    if bytes > 0 && enabled() {
        counter!(names::FETCHED_BYTES, "topic" => topic.to_string()).increment(bytes);
    }
}

/// Reads the partitions, log end offsets and group lags once.
pub fn sample(broker: &Broker) {
    let topics = broker.topics.list();
    gauge!(names::PARTITIONS).set(topics.iter().map(|(_, n)| *n as f64).sum::<f64>());
    for (topic, n) in &topics {
        for p in 0..*n as i32 {
            if let Some(part) = broker.topics.partition(topic, p) {
                let labels = [("topic", topic.clone()), ("partition", p.to_string())];
                gauge!(names::LOG_END_OFFSET, &labels).set(part.log_end_offset() as f64);
                gauge!(names::LOG_SIZE, &labels).set(part.size_bytes() as f64);
            }
        }
    }
    for l in broker.consumer_lags() {
        let lag = l.lag() as f64;
        gauge!(
            names::GROUP_LAG,
            "group" => l.group,
            "topic" => l.topic,
            "partition" => l.partition.to_string()
        )
        .set(lag);
    }
}

/// Turns the metrics on and samples every [`SAMPLE_EVERY`] until the runtime stops.
pub fn spawn_sampler(broker: Arc<Broker>) {
    ENABLED.store(true, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        loop {
            every.tick().await;
            sample(&broker);
        }
    });
}
