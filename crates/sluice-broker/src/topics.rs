//! Topics and their partitions, each partition a `PartitionLog` in
//! `<data_dir>/<topic>-<partition>/`, found again on start by listing the data directory.

use crate::config::BrokerConfig;
use crate::topic_config::{self, Overrides};
use sluice_common::{Result, SluiceError};
use sluice_log::partition::LogError;
use sluice_log::{AppendInfo, LogConfig, PartitionLog, ReadResult};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// One partition: its log behind a lock.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// Whether `acks=all` waits for an fsync of this partition (broker or topic setting).
    pub fsync_on_ack: bool,
    log: Mutex<PartitionLog>,
}

impl Partition {
    fn lock(&self) -> std::sync::MutexGuard<'_, PartitionLog> {
        match self.log.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn append(&self, records: &[u8]) -> Result<AppendInfo, LogError> {
        self.lock().append(records)
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.lock().read(offset, max_bytes)
    }

    /// A `read_committed` read (up to the last stable offset, with the aborted transactions).
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.lock().read_committed(offset, max_bytes)
    }

    /// Writes a transaction marker for `producer_id`.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: sluice_log::batch::Marker,
        timestamp_ms: i64,
    ) -> Result<i64, LogError> {
        self.lock()
            .append_marker(producer_id, producer_epoch, marker, timestamp_ms)
    }

    pub fn last_stable_offset(&self) -> i64 {
        self.lock().last_stable_offset()
    }

    /// Makes every append so far durable. The fsyncs run without the partition's lock, so
    /// that producers keep appending meanwhile.
    pub fn sync(&self) -> Result<(), LogError> {
        let files = self.lock().take_unsynced()?;
        for f in files {
            f.sync_data().map_err(|source| LogError::Io {
                context: format!("{}-{}", self.topic, self.index),
                source,
            })?;
        }
        Ok(())
    }

    pub fn log_end_offset(&self) -> i64 {
        self.lock().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().size_bytes()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.lock().offset_for_timestamp(ts)
    }
}

/// Why a topic name is refused, as Kafka checks it.
pub fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid topic name"));
    }
    if name.len() > 249 {
        return Err("a topic name has at most 249 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name '{name}' contains '{c}'; use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Every topic of the broker.
pub struct TopicManager {
    config: BrokerConfig,
    topics: RwLock<BTreeMap<String, Vec<Arc<Partition>>>>,
    /// Per-topic configuration overrides.
    overrides: RwLock<BTreeMap<String, Overrides>>,
}

fn open_partition(
    config: &BrokerConfig,
    topic: &str,
    index: i32,
    log_config: &LogConfig,
) -> std::result::Result<Arc<Partition>, (i16, String)> {
    let dir = config.data_dir.join(format!("{topic}-{index}"));
    let log = PartitionLog::open(&dir, log_config.clone()).map_err(|e| {
        (
            crate::errors::KAFKA_STORAGE_ERROR,
            format!("opening {topic}-{index}: {e}"),
        )
    })?;
    Ok(Arc::new(Partition {
        topic: topic.to_string(),
        index,
        fsync_on_ack: log_config.fsync_on_ack,
        log: Mutex::new(log),
    }))
}

impl TopicManager {
    /// Opens every partition found in the data directory, with its topic's configuration.
    pub fn open(config: &BrokerConfig) -> Result<TopicManager> {
        let dir = &config.data_dir;
        let io = |e| SluiceError::io(dir.display().to_string(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut found: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().to_string();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if check_topic_name(topic).is_err() || !entry.path().is_dir() {
                continue;
            }
            found.entry(topic.to_string()).or_default().push(index);
        }
        let mut topics = BTreeMap::new();
        let mut all_overrides = BTreeMap::new();
        for (topic, mut indexes) in found {
            indexes.sort_unstable();
            // Partitions are numbered from 0 without gaps.
            if !indexes.iter().copied().eq(0..indexes.len() as i32) {
                tracing::warn!(%topic, "partition directories are not numbered 0..n; topic skipped");
                continue;
            }
            let overrides = topic_config::load(dir, &topic).map_err(io)?;
            let log_config =
                topic_config::apply(&config.log, &overrides).unwrap_or_else(|(_, m)| {
                    tracing::warn!(%topic, problem = %m, "stored topic configuration ignored");
                    config.log.clone()
                });
            let mut parts = Vec::with_capacity(indexes.len());
            for index in indexes {
                parts.push(
                    open_partition(config, &topic, index, &log_config)
                        .map_err(|(_, m)| SluiceError::Runtime(m))?,
                );
            }
            if !overrides.is_empty() {
                all_overrides.insert(topic.clone(), overrides);
            }
            topics.insert(topic, parts);
        }
        Ok(TopicManager {
            config: config.clone(),
            topics: RwLock::new(topics),
            overrides: RwLock::new(all_overrides),
        })
    }

    /// A topic's configuration overrides.
    pub fn overrides(&self, topic: &str) -> Overrides {
        match self.overrides.read() {
            Ok(g) => g.get(topic).cloned().unwrap_or_default(),
            Err(p) => p.into_inner().get(topic).cloned().unwrap_or_default(),
        }
    }

    /// A topic's log configuration (the broker's with the topic's overrides).
    pub fn log_config(&self, topic: &str) -> LogConfig {
        topic_config::apply(&self.config.log, &self.overrides(topic))
            .unwrap_or_else(|_| self.config.log.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Vec<Arc<Partition>>>> {
        match self.topics.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Vec<Arc<Partition>>>> {
        match self.topics.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The partition, if it exists.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.read()
            .get(topic)
            .and_then(|p| p.get(usize::try_from(index).ok()?).cloned())
    }

    /// The number of partitions of a topic.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.read().get(topic).map(Vec::len)
    }

    /// Every topic and its partition count.
    pub fn list(&self) -> Vec<(String, usize)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }

    /// Creates a topic with `partitions` partitions (the default if not positive) and its
    /// configuration overrides.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        overrides: Overrides,
    ) -> std::result::Result<usize, (i16, String)> {
        check_topic_name(name).map_err(|m| (crate::errors::INVALID_TOPIC_EXCEPTION, m))?;
        let n = if partitions <= 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if n > 10_000 {
            return Err((
                crate::errors::INVALID_PARTITIONS,
                format!("{n} partitions is too many (at most 10000)"),
            ));
        }
        let log_config = topic_config::apply(&self.config.log, &overrides)?;
        let mut topics = self.write();
        if topics.contains_key(name) {
            return Err((
                crate::errors::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            ));
        }
        topic_config::store(&self.config.data_dir, name, &overrides)
            .map_err(|e| (crate::errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
        let parts = (0..n)
            .map(|index| open_partition(&self.config, name, index, &log_config))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        topics.insert(name.to_string(), parts);
        if let Ok(mut o) = self.overrides.write() {
            if overrides.is_empty() {
                o.remove(name);
            } else {
                o.insert(name.to_string(), overrides);
            }
        }
        tracing::info!(topic = name, partitions = n, "topic created");
        Ok(n as usize)
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks one).
    pub fn add_partitions(&self, name: &str, count: i32) -> std::result::Result<(), (i16, String)> {
        let log_config = self.log_config(name);
        let mut topics = self.write();
        let parts = topics.get_mut(name).ok_or((
            crate::errors::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic '{name}' does not exist"),
        ))?;
        let current = parts.len() as i32;
        if count <= current || count > 10_000 {
            return Err((
                crate::errors::INVALID_PARTITIONS,
                format!("topic '{name}' has {current} partitions; the new count must be larger (and at most 10000), got {count}"),
            ));
        }
        for index in current..count {
            parts.push(open_partition(&self.config, name, index, &log_config)?);
        }
        tracing::info!(topic = name, partitions = count, "partitions added");
        Ok(())
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> std::result::Result<(), (i16, String)> {
        let parts = self.write().remove(name).ok_or((
            crate::errors::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic '{name}' does not exist"),
        ))?;
        for p in parts {
            let dir = self.config.data_dir.join(format!("{name}-{}", p.index));
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not delete a partition directory");
            }
        }
        if let Ok(mut o) = self.overrides.write() {
            o.remove(name);
        }
        if let Err(e) = topic_config::store(&self.config.data_dir, name, &Overrides::new()) {
            tracing::warn!(topic = name, error = %e, "could not delete the topic's configuration");
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Deletes segments past each partition's retention.
    pub fn apply_retention(&self) {
        let now = std::time::SystemTime::now();
        for parts in self.read().values() {
            for p in parts {
                match p.lock().apply_retention(now) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments")
                    }
                    Err(e) => {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    /// Syncs every partition (on shutdown).
    pub fn sync_all(&self) {
        for parts in self.read().values() {
            for p in parts {
                if let Err(e) = p.sync() {
                    tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "sync failed");
                }
            }
        }
    }
}
