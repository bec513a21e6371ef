//! Per-topic configuration (the `configs` of CreateTopics), with Kafka's names, over the
//! broker's defaults; kept in `<data_dir>/__topic_configs/` so that it survives restarts.

use crate::errors;
use sluice_log::LogConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A topic's overrides, by Kafka config name.
pub type Overrides = BTreeMap<String, String>;

/// The topic-level keys Sluice honours.
pub const TOPIC_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "flush.messages",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// The log configuration of a topic: the broker's, with the topic's overrides applied.
/// Unknown keys or values Sluice cannot honour are refused (Kafka's INVALID_CONFIG).
pub fn apply(base: &LogConfig, overrides: &Overrides) -> Result<LogConfig, (i16, String)> {
    let mut c = base.clone();
    for (key, value) in overrides {
        let bad = |expected: &str| {
            (
                errors::INVALID_CONFIG,
                format!("config '{key}' = '{value}': {expected}"),
            )
        };
        let int = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| bad("expected a whole number"))
        };
        match key.as_str() {
            "retention.ms" => {
                c.retention_ms = match int()? {
                    -1 => None,
                    v if v >= 0 => Some(Duration::from_millis(v as u64)),
                    _ => return Err(bad("expected -1 or a number of milliseconds")),
                }
            }
            "retention.bytes" => {
                c.retention_bytes = match int()? {
                    -1 => None,
                    v if v >= 0 => Some(v as u64),
                    _ => return Err(bad("expected -1 or a number of bytes")),
                }
            }
            "segment.bytes" => {
                c.segment_bytes = match int()? {
                    v if v >= 1024 => v as u64,
                    _ => return Err(bad("expected at least 1024")),
                }
            }
            "segment.ms" => {
                c.segment_ms = match int()? {
                    v if v >= 1 => Some(Duration::from_millis(v as u64)),
                    _ => return Err(bad("expected a positive number of milliseconds")),
                }
            }
            // Kafka fsyncs every `flush.messages` messages; Sluice either fsyncs before it
            // acknowledges acks=all (1) or leaves it to the OS (anything larger).
            "flush.messages" => {
                c.fsync_on_ack = match int()? {
                    1 => true,
                    v if v > 1 => false,
                    _ => return Err(bad("expected a positive number")),
                }
            }
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(bad(
                    "only 'delete' is supported (log compaction is not implemented yet)",
                ))
            }
            "min.insync.replicas" if value.trim() == "1" => {}
            "min.insync.replicas" => {
                return Err(bad("a single broker has one replica: only 1 is possible"))
            }
            "message.timestamp.type" if value == "CreateTime" => {}
            "message.timestamp.type" => return Err(bad("only CreateTime is supported")),
            "compression.type" if value == "producer" => {}
            "compression.type" => {
                return Err(bad(
                    "only 'producer' is supported: batches are stored as sent",
                ))
            }
            "max.message.bytes" => {
                int()?;
            }
            other => {
                return Err((
                    errors::INVALID_CONFIG,
                    format!(
                        "unknown topic config '{other}'; Sluice supports: {}",
                        TOPIC_KEYS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(c)
}

fn path(data_dir: &Path, topic: &str) -> PathBuf {
    let hex: String = topic.bytes().map(|b| format!("{b:02x}")).collect();
    data_dir
        .join("__topic_configs")
        .join(format!("{hex}.properties"))
}

/// Reads a topic's overrides (none if it has no file).
pub fn load(data_dir: &Path, topic: &str) -> std::io::Result<Overrides> {
    match std::fs::read_to_string(path(data_dir, topic)) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::new()),
        Err(e) => Err(e),
    }
}

/// Writes a topic's overrides durably (none: removes the file).
pub fn store(data_dir: &Path, topic: &str, overrides: &Overrides) -> std::io::Result<()> {
    let p = path(data_dir, topic);
    if overrides.is_empty() {
        return match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(p.parent().unwrap_or(data_dir))?;
    let text: String = overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_bad_ones_are_refused() {
        let base = LogConfig::default();
        let o: Overrides = [
            ("retention.ms".to_string(), "60000".to_string()),
            ("flush.messages".into(), "100".into()),
        ]
        .into();
        let c = apply(&base, &o).unwrap();
        assert_eq!(c.retention_ms, Some(Duration::from_secs(60)));
        assert!(!c.fsync_on_ack);
        let bad: Overrides = [("cleanup.policy".to_string(), "compact".to_string())].into();
        assert!(apply(&base, &bad).unwrap_err().1.contains("only 'delete'"));
        let unknown: Overrides = [("retention.mss".to_string(), "1".to_string())].into();
        assert!(apply(&base, &unknown)
            .unwrap_err()
            .1
            .contains("unknown topic config 'retention.mss'"));
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "t/x", &o).unwrap();
        assert_eq!(load(dir.path(), "t/x").unwrap(), o);
    }
}
