//! How a partition log rolls, retains and flushes, with Kafka's names and defaults.

use std::time::Duration;

/// A log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment older than this.
    pub segment_ms: Option<Duration>,
    /// `retention.ms`: delete segments whose newest record is older (None: forever).
    pub retention_ms: Option<Duration>,
    /// `retention.bytes`: delete the oldest segments past this size (None: no limit).
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: an offset index entry every this many bytes.
    pub index_interval_bytes: u64,
    /// Whether an `acks=all` produce waits for fsync (`flush.messages=1` in Kafka terms).
    pub fsync_on_ack: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            index_interval_bytes: 4096,
            fsync_on_ack: true,
        }
    }
}
