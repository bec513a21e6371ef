//! The broker's settings.

use sluice_log::LogConfig;
use std::path::PathBuf;

/// How a broker runs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where partitions live (`<data_dir>/<topic>-<partition>/`).
    pub data_dir: PathBuf,
    /// The host and port clients are told to connect to (Metadata).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Partitions of a topic created automatically or without a count (`num.partitions`).
    pub default_partitions: i32,
    /// Create unknown topics when a client asks for their metadata
    /// (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// The largest request accepted (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Segment, retention and flush settings of every partition.
    pub log: LogConfig,
    /// This broker's id.
    pub node_id: i32,
    pub cluster_id: String,
    /// How long a new consumer group waits for more members before its first assignment
    /// (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: std::time::Duration,
}

impl BrokerConfig {
    /// Defaults for a broker storing data in `data_dir` and reachable at `host:port`.
    pub fn new(data_dir: PathBuf, host: &str, port: u16) -> Self {
        BrokerConfig {
            data_dir,
            advertised_host: host.to_string(),
            advertised_port: port as i32,
            default_partitions: 1,
            auto_create_topics: true,
            max_request_bytes: 100 << 20,
            log: LogConfig::default(),
            node_id: 1,
            cluster_id: "sluice".into(),
            initial_rebalance_delay: std::time::Duration::from_millis(300),
        }
    }
}
