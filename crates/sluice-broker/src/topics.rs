//! Topics and their partitions, each partition a `PartitionLog` in
//! `<data_dir>/<topic>-<partition>/`, found again on start by listing the data directory.

use crate::config::BrokerConfig;
use sluice_common::{Result, SluiceError};
use sluice_log::partition::LogError;
use sluice_log::{AppendInfo, PartitionLog, ReadResult};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// One partition: its log behind a lock.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
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
}

impl TopicManager {
    /// Opens every partition found in the data directory.
    pub fn open(config: &BrokerConfig) -> Result<TopicManager> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| SluiceError::io(dir.display().to_string(), e))?;
        let mut found: BTreeMap<String, BTreeMap<i32, Arc<Partition>>> = BTreeMap::new();
        for entry in
            std::fs::read_dir(dir).map_err(|e| SluiceError::io(dir.display().to_string(), e))?
        {
            let entry = entry.map_err(|e| SluiceError::io(dir.display().to_string(), e))?;
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
            let log = PartitionLog::open(&entry.path(), config.log.clone())
                .map_err(|e| SluiceError::Runtime(format!("opening {name}: {e}")))?;
            found.entry(topic.to_string()).or_default().insert(
                index,
                Arc::new(Partition {
                    topic: topic.to_string(),
                    index,
                    log: Mutex::new(log),
                }),
            );
        }
        let mut topics = BTreeMap::new();
        for (topic, parts) in found {
            // Partitions are numbered from 0 without gaps.
            let n = parts.len() as i32;
            if parts.keys().copied().eq(0..n) {
                topics.insert(topic, parts.into_values().collect());
            } else {
                tracing::warn!(%topic, "partition directories are not numbered 0..n; topic skipped");
            }
        }
        Ok(TopicManager {
            config: config.clone(),
            topics: RwLock::new(topics),
        })
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

    /// Creates a topic with `partitions` partitions (the default if not positive).
    pub fn create(&self, name: &str, partitions: i32) -> std::result::Result<usize, (i16, String)> {
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
        let mut topics = self.write();
        if topics.contains_key(name) {
            return Err((
                crate::errors::TOPIC_ALREADY_EXISTS,
                format!("topic '{name}' already exists"),
            ));
        }
        let mut parts = Vec::new();
        for index in 0..n {
            let dir = self.config.data_dir.join(format!("{name}-{index}"));
            let log = PartitionLog::open(&dir, self.config.log.clone())
                .map_err(|e| (crate::errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
            parts.push(Arc::new(Partition {
                topic: name.to_string(),
                index,
                log: Mutex::new(log),
            }));
        }
        topics.insert(name.to_string(), parts);
        tracing::info!(topic = name, partitions = n, "topic created");
        Ok(n as usize)
    }

    /// Grows a topic to `count` partitions (Kafka never shrinks one).
    pub fn add_partitions(&self, name: &str, count: i32) -> std::result::Result<(), (i16, String)> {
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
            let dir = self.config.data_dir.join(format!("{name}-{index}"));
            let log = PartitionLog::open(&dir, self.config.log.clone())
                .map_err(|e| (crate::errors::KAFKA_STORAGE_ERROR, e.to_string()))?;
            parts.push(Arc::new(Partition {
                topic: name.to_string(),
                index,
                log: Mutex::new(log),
            }));
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
