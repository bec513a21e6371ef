//! When the filesystem sink commits a partition (Flink's `sink.partition-commit.*`): once the
//! checkpoint holding its files is complete and its trigger says so, the commit policy runs:
//! `success-file` writes an empty `_SUCCESS` file into the partition's directory, so that a
//! downstream reader knows the partition is whole. At the end of a bounded input every
//! partition is committed.

use sluice_common::{Options, Result, SluiceError};
use std::path::Path;

/// The options the partition commit reads.
pub const OPTIONS: &[&str] = &[
    "sink.partition-commit.trigger",
    "sink.partition-commit.delay",
    "sink.partition-commit.policy.kind",
    "sink.partition-commit.success-file.name",
    "sink.partition-commit.watermark-time-zone",
    "partition.time-extractor.kind",
    "partition.time-extractor.timestamp-pattern",
    "partition.time-extractor.timestamp-formatter",
];

/// What makes a partition ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// `process-time`: the processing time passed the partition's creation plus the delay.
    ProcessTime,
    /// `partition-time`: the watermark passed the time extracted from the partition's
    /// values plus the delay.
    PartitionTime { pattern: Option<String> },
}

/// A table's partition commit settings.
#[derive(Debug, Clone)]
pub struct CommitPolicy {
    pub trigger: Trigger,
    pub delay_ms: i64,
    /// The success file's name, if the `success-file` policy is on.
    pub success_file: Option<String>,
}

impl CommitPolicy {
    /// The settings of a table's options.
    pub fn from_options(o: &Options) -> Result<Self> {
        let trigger = match o.string("sink.partition-commit.trigger", "process-time").as_str() {
            "process-time" => Trigger::ProcessTime,
            "partition-time" => Trigger::PartitionTime {
                pattern: o
                    .get("partition.time-extractor.timestamp-pattern")
                    .map(String::from),
            },
            other => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'sink.partition-commit.trigger' has value '{other}', expected process-time or partition-time",
                    o.owner
                )))
            }
        };
        let kind = o.string("partition.time-extractor.kind", "default");
        if kind != "default" {
            return Err(SluiceError::Config(format!(
                "{}: option 'partition.time-extractor.kind' has value '{kind}'; only 'default' is supported",
                o.owner
            )));
        }
        let formatter = o.string(
            "partition.time-extractor.timestamp-formatter",
            "yyyy-MM-dd HH:mm:ss",
        );
        if formatter != "yyyy-MM-dd HH:mm:ss" {
            return Err(SluiceError::Config(format!(
                "{}: option 'partition.time-extractor.timestamp-formatter' has value '{formatter}'; only 'yyyy-MM-dd HH:mm:ss' is supported",
                o.owner
            )));
        }
        let mut success_file = None;
        if let Some(kinds) = o.get("sink.partition-commit.policy.kind") {
            for k in kinds.split(',').map(str::trim) {
                match k {
                    "success-file" => {
                        success_file = Some(o.string(
                            "sink.partition-commit.success-file.name",
                            "_SUCCESS",
                        ))
                    }
                    other => {
                        return Err(SluiceError::Config(format!(
                            "{}: partition commit policy '{other}' is not supported; Sluice has 'success-file' (a metastore needs Hive)",
                            o.owner
                        )))
                    }
                }
            }
        }
        Ok(CommitPolicy {
            trigger,
            delay_ms: o
                .duration("sink.partition-commit.delay")?
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            success_file,
        })
    }

    /// True if a partition (`values`: its columns' names and values, in order) created at
    /// processing time `created_ms` may be committed at processing time `now_ms` and
    /// watermark `watermark`.
    pub fn ready(
        &self,
        values: &[(String, Option<String>)],
        created_ms: i64,
        now_ms: i64,
        watermark: i64,
    ) -> bool {
        match &self.trigger {
            Trigger::ProcessTime => created_ms + self.delay_ms <= now_ms,
            Trigger::PartitionTime { pattern } => partition_time(values, pattern.as_deref())
                .is_some_and(|t| t + self.delay_ms <= watermark),
        }
    }

    /// Commits a partition: writes its success file, if the policy says so.
    pub fn commit(
        &self,
        dir: &Path,
        storage: Option<&crate::object_storage::ObjectStorage>,
    ) -> Result<()> {
        if let Some(name) = &self.success_file {
            let path = dir.join(name);
            if let Some(s) = storage {
                return s.put(&path, Vec::new());
            }
            std::fs::write(&path, b"")
                .map_err(|e| SluiceError::io(path.display().to_string(), e))?;
        }
        Ok(())
    }
}

/// The time (epoch milliseconds, UTC) of a partition, as Flink's default extractor finds
/// it: `pattern` with each `$column` replaced by that partition value (without a pattern, the
/// first partition value), read as `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd`.
pub fn partition_time(values: &[(String, Option<String>)], pattern: Option<&str>) -> Option<i64> {
    let text = match pattern {
        None => values.first()?.1.clone()?,
        Some(p) => {
            let mut text = p.to_string();
            // Longest names first, so that `$dt` does not eat into `$dtx`.
            let mut by_len: Vec<&(String, Option<String>)> = values.iter().collect();
            by_len.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
            for (k, v) in by_len {
                text = text.replace(&format!("${k}"), v.as_deref()?);
            }
            text
        }
    };
    chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
        })
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn values(v: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn partition_time_follows_the_pattern() {
        let v = values(&[("dt", "2026-01-01"), ("hm", "10:05")]);
        assert_eq!(
            partition_time(&v, Some("$dt $hm:00")),
            Some(1_767_261_900_000)
        );
        assert_eq!(partition_time(&v, None), Some(1_767_225_600_000));
        assert_eq!(partition_time(&values(&[("dt", "soon")]), None), None);
    }

    #[test]
    fn triggers_wait_for_the_delay() {
        let map: BTreeMap<String, String> = [
            ("sink.partition-commit.trigger", "partition-time"),
            ("sink.partition-commit.delay", "1 min"),
            ("sink.partition-commit.policy.kind", "success-file"),
            ("partition.time-extractor.timestamp-pattern", "$dt $hm:00"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = CommitPolicy::from_options(&Options::new("t", map)).unwrap();
        let v = values(&[("dt", "2026-01-01"), ("hm", "10:05")]);
        let t = 1_767_261_900_000;
        assert!(!p.ready(&v, 0, 0, t + 59_999));
        assert!(p.ready(&v, 0, 0, t + 60_000));
        assert_eq!(p.success_file.as_deref(), Some("_SUCCESS"));
        let map: BTreeMap<String, String> = [("sink.partition-commit.policy.kind", "metastore")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = CommitPolicy::from_options(&Options::new("t", map))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'metastore'"), "{err}");
    }
}
