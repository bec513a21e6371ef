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
    /// The longest transaction timeout a producer may ask for (`transaction.max.timeout.ms`).
    pub transaction_max_timeout: std::time::Duration,
    /// How long an idle transactional id is remembered
    /// (`transactional.id.expiration.ms`).
    pub transactional_id_expiration: std::time::Duration,
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
            transaction_max_timeout: std::time::Duration::from_secs(15 * 60),
            transactional_id_expiration: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The `server.properties` keys `sluice broker --config` understands.
pub const PROPERTY_KEYS: &[&str] = &[
    "advertised.listeners",
    "auto.create.topics.enable",
    "flush.on.ack",
    "group.initial.rebalance.delay.ms",
    "listeners",
    "log.dir",
    "log.dirs",
    "log.retention.bytes",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.roll.hours",
    "log.roll.ms",
    "log.segment.bytes",
    "num.partitions",
    "socket.request.max.bytes",
    "transaction.max.timeout.ms",
    "transactional.id.expiration.ms",
];

/// The host:port of a Kafka listener (`PLAINTEXT://host:port` or `host:port`).
pub fn listener_address(value: &str) -> String {
    let first = value.split(',').next().unwrap_or(value).trim();
    match first.split_once("://") {
        Some((_, addr)) => addr.to_string(),
        None => first.to_string(),
    }
}

impl BrokerConfig {
    /// Applies a Kafka `server.properties` file; returns the `listeners` address if it sets
    /// one. Errors name the file and line; keys Sluice does not use are reported, not fatal.
    pub fn apply_properties(&mut self, text: &str, file: &str) -> Result<Option<String>, String> {
        use std::time::Duration;
        let mut listen = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let at = format!("{file}, line {}", n + 1);
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("{at}: expected key=value, found '{line}'"));
            };
            let (key, value) = (key.trim(), value.trim());
            let int = |v: &str| -> Result<u64, String> {
                v.parse::<u64>()
                    .map_err(|_| format!("{at}: '{key}' must be a whole number, got '{v}'"))
            };
            let boolean = |v: &str| -> Result<bool, String> {
                match v {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(format!("{at}: '{key}' must be true or false, got '{v}'")),
                }
            };
            let ms = |v: u64, unit: u64| (v > 0).then(|| Duration::from_millis(v * unit));
            match key {
                "listeners" => listen = Some(listener_address(value)),
                "advertised.listeners" => {
                    let addr = listener_address(value);
                    let (host, port) = addr
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)))
                        .ok_or_else(|| {
                            format!("{at}: 'advertised.listeners' needs host:port, got '{value}'")
                        })?;
                    self.advertised_host = host;
                    self.advertised_port = port;
                }
                "log.dirs" | "log.dir" => {
                    self.data_dir = value.split(',').next().unwrap_or(value).trim().into()
                }
                "num.partitions" => self.default_partitions = int(value)?.clamp(1, 10_000) as i32,
                "auto.create.topics.enable" => self.auto_create_topics = boolean(value)?,
                "flush.on.ack" => self.log.fsync_on_ack = boolean(value)?,
                "log.retention.ms" => self.log.retention_ms = ms(int(value)?, 1),
                "log.retention.minutes" => self.log.retention_ms = ms(int(value)?, 60_000),
                "log.retention.hours" => self.log.retention_ms = ms(int(value)?, 3_600_000),
                "log.retention.bytes" => {
                    self.log.retention_bytes = Some(int(value)?).filter(|b| *b > 0)
                }
                "log.segment.bytes" => self.log.segment_bytes = int(value)?.max(1024),
                "log.roll.ms" => self.log.segment_ms = ms(int(value)?, 1),
                "log.roll.hours" => self.log.segment_ms = ms(int(value)?, 3_600_000),
                "group.initial.rebalance.delay.ms" => {
                    self.initial_rebalance_delay = Duration::from_millis(int(value)?)
                }
                "socket.request.max.bytes" => {
                    self.max_request_bytes = int(value)?.clamp(1024, 1 << 30) as usize
                }
                "transaction.max.timeout.ms" => {
                    self.transaction_max_timeout = Duration::from_millis(int(value)?.max(1))
                }
                "transactional.id.expiration.ms" => {
                    self.transactional_id_expiration = Duration::from_millis(int(value)?.max(1))
                }
                other => tracing::warn!(
                    "{at}: '{other}' is not used by Sluice; it uses: {}",
                    PROPERTY_KEYS.join(", ")
                ),
            }
        }
        Ok(listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_properties() {
        let mut c = BrokerConfig::new("d".into(), "127.0.0.1", 9092);
        let listen = c
            .apply_properties(
                "# a comment\nlisteners=PLAINTEXT://0.0.0.0:19092\nadvertised.listeners=PLAINTEXT://broker.local:19092\nnum.partitions=6\nlog.retention.hours=24\nlog.segment.bytes=1048576\nzookeeper.connect=x:2181\n",
                "server.properties",
            )
            .unwrap();
        assert_eq!(listen.as_deref(), Some("0.0.0.0:19092"));
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("broker.local", 19092)
        );
        assert_eq!(c.default_partitions, 6);
        assert_eq!(
            c.log.retention_ms,
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(c.log.segment_bytes, 1 << 20);
        let err = c
            .apply_properties("num.partitions=many", "f.properties")
            .unwrap_err();
        assert_eq!(
            err,
            "f.properties, line 1: 'num.partitions' must be a whole number, got 'many'"
        );
    }
}
