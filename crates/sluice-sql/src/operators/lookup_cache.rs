//! The cache in front of a lookup join's table (Flink's `lookup.cache` = `PARTIAL`): per key,
//! the rows the table had for it, kept at most `max-rows` keys (the least recently read goes
//! first) and for at most `expire-after-write` since they were looked up and
//! `expire-after-access` since they were last read. It lives in memory and is not
//! checkpointed: after a restore the table is asked again, as in Flink.

use sluice_engine::LookupCacheConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// The rows a table has for one key, each in the join's row encoding.
pub type KeyRows = Arc<Vec<Vec<u8>>>;

struct Entry {
    rows: KeyRows,
    written: Instant,
    read: Instant,
    /// The entry's place in the order of reads (its key in `by_read`).
    read_seq: u64,
}

/// Rows by key, each row in the join's row encoding.
pub struct LookupCache {
    config: LookupCacheConfig,
    entries: HashMap<Vec<u8>, Entry>,
    /// Keys by when they were last read, least recent first.
    by_read: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
}

impl LookupCache {
    pub fn new(config: LookupCacheConfig) -> Self {
        LookupCache {
            config,
            entries: HashMap::new(),
            by_read: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The rows cached for `key` at `now`, unless it is not there or has expired.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<KeyRows> {
        let entry = self.entries.get_mut(key)?;
        let expired = |after: Option<std::time::Duration>, since: Instant| {
            after.is_some_and(|d| now.saturating_duration_since(since) >= d)
        };
        if expired(self.config.expire_after_write, entry.written)
            || expired(self.config.expire_after_access, entry.read)
        {
            let seq = entry.read_seq;
            self.entries.remove(key);
            self.by_read.remove(&seq);
            return None;
        }
        self.by_read.remove(&entry.read_seq);
        entry.read_seq = self.next_seq;
        entry.read = now;
        self.by_read.insert(self.next_seq, key.to_vec());
        self.next_seq += 1;
        Some(entry.rows.clone())
    }

    /// Caches the rows looked up for `key` at `now` (an empty list only if missing keys are
    /// cached), evicting the least recently read keys beyond `max_rows`.
    pub fn put(&mut self, key: Vec<u8>, rows: KeyRows, now: Instant) {
        if rows.is_empty() && !self.config.cache_missing_key {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.by_read.remove(&old.read_seq);
        }
        self.by_read.insert(self.next_seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                rows,
                written: now,
                read: now,
                read_seq: self.next_seq,
            },
        );
        self.next_seq += 1;
        while self.entries.len() as u64 > self.config.max_rows {
            let Some((_, oldest)) = self.by_read.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(max_rows: u64) -> LookupCacheConfig {
        LookupCacheConfig {
            max_rows,
            expire_after_write: Some(Duration::from_secs(10)),
            expire_after_access: Some(Duration::from_secs(4)),
            cache_missing_key: false,
        }
    }

    fn rows(v: &[u8]) -> KeyRows {
        Arc::new(vec![v.to_vec()])
    }

    #[test]
    fn the_least_recently_read_key_goes_first() {
        let mut c = LookupCache::new(config(2));
        let t = Instant::now();
        c.put(b"a".to_vec(), rows(b"1"), t);
        c.put(b"b".to_vec(), rows(b"2"), t);
        assert!(c.get(b"a", t).is_some());
        c.put(b"c".to_vec(), rows(b"3"), t);
        assert_eq!(c.len(), 2);
        assert!(c.get(b"b", t).is_none());
        assert_eq!(c.get(b"a", t).unwrap()[0], b"1");
        assert!(c.get(b"c", t).is_some());
    }

    #[test]
    fn entries_expire_after_write_and_after_access() {
        let mut c = LookupCache::new(config(10));
        let t = Instant::now();
        c.put(b"a".to_vec(), rows(b"1"), t);
        c.put(b"b".to_vec(), rows(b"2"), t);
        // Read every 3 s, `a` stays until 10 s after it was written; `b`, not read, goes
        // 4 s after it was.
        for s in [3, 6, 9] {
            assert!(c.get(b"a", t + Duration::from_secs(s)).is_some(), "{s}");
        }
        assert!(c.get(b"b", t + Duration::from_secs(9)).is_none());
        assert!(c.get(b"a", t + Duration::from_secs(10)).is_none());
        assert_eq!(c.len(), 0);
        // A key with no rows is not kept unless missing keys are cached.
        c.put(b"m".to_vec(), Arc::new(Vec::new()), t);
        assert_eq!(c.len(), 0);
        let mut c = LookupCache::new(LookupCacheConfig {
            cache_missing_key: true,
            ..config(10)
        });
        c.put(b"m".to_vec(), Arc::new(Vec::new()), t);
        assert_eq!(c.get(b"m", t).map(|r| r.len()), Some(0));
    }
}
