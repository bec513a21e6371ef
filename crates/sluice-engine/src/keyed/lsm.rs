//! The disk state backend (`state.backend.type` = `rocksdb`, Flink's name for it): keyed
//! state in an embedded LSM tree ([`fjall`]) on local disk, for state larger than memory.
//!
//! A job opens one database in its local state directory; every operator subtask with keyed
//! state gets a keyspace in it, whose keys are its entries' keys behind their key group (two
//! bytes, big-endian, so that a key group is one contiguous range). Memory is bounded by
//! `state.backend.memory.size`: half for the block cache, a quarter for write buffers
//! (memtables), the rest for everything else. The local directory is scratch space: the
//! state's durable copy is the checkpoints. Each process has its own directory
//! (`<local-state>/<pid>`), deleted when the job ends; one left by a process that died is
//! deleted by the next job that opens its database beside it.
//!
//! A snapshot is the database's own snapshot (a sequence number: writes after it are not
//! seen), read on the checkpoint writer's thread while the task goes on.

use super::backend::{BackendSnapshot, EntryVisitor, StateBackend};
use fjall::config::{PartitioningPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use sluice_common::{Result, SluiceError};
use std::path::{Path, PathBuf};

/// The smallest memory the disk backend is given.
pub const MIN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// One job's state database.
pub struct LsmDatabase {
    db: Database,
    dir: PathBuf,
    memtable_bytes: u64,
}

fn err(dir: &Path, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Runtime(format!("the disk state backend in {}: {e}", dir.display()))
}

impl LsmDatabase {
    /// Opens a fresh database in `base/<pid>` using at most about `memory_bytes` of memory;
    /// the directories of processes that are gone are removed.
    pub fn open(base: &Path, memory_bytes: u64) -> Result<Self> {
        let memory = memory_bytes.max(MIN_MEMORY_BYTES);
        remove_stale(base);
        let dir = base.join(std::process::id().to_string());
        let dir = dir.as_path();
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| err(dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        #[allow(deprecated)]
        let db = Database::builder(dir)
            .cache_size(memory / 2)
            .max_write_buffer_size(Some(memory / 4))
            // Checkpoints make the state durable; the journal need not be synced.
            .manual_journal_persist(true)
            .temporary(true)
            .open()
            .map_err(|e| err(dir, e))?;
        Ok(LsmDatabase {
            db,
            dir: dir.to_path_buf(),
            memtable_bytes: (memory / 16).clamp(1024 * 1024, 64 * 1024 * 1024),
        })
    }

    /// A backend for the key groups `[start, end)` of one operator subtask, named `name`
    /// (letters, digits, `-` and `_`; unique in the job).
    pub fn backend(&self, name: &str, start: u16, end: u16) -> Result<LsmBackend> {
        let memtable = self.memtable_bytes;
        let ks = self
            .db
            .keyspace(name, move || {
                // Index and filter blocks partitioned on every level and never pinned: they
                // go through the block cache, so memory stays within its bound however
                // many keys there are (a full filter is built in memory for a whole table,
                // and pinned blocks grow with the number of tables).
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .filter_block_partitioning_policy(PartitioningPolicy::all(true))
                    .index_block_partitioning_policy(PartitioningPolicy::all(true))
                    .filter_block_pinning_policy(PinningPolicy::all(false))
                    .index_block_pinning_policy(PinningPolicy::all(false))
            })
            .map_err(|e| err(&self.dir, e))?;
        Ok(LsmBackend {
            db: self.db.clone(),
            ks,
            dir: self.dir.clone(),
            start,
            end,
        })
    }
}

/// Removes the directories in `base` of processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let gone = name
            .parse::<u32>()
            .is_ok_and(|pid| pid != std::process::id() && !Path::new("/proc").join(&name).exists());
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// One operator subtask's keyspace.
pub struct LsmBackend {
    db: Database,
    ks: Keyspace,
    dir: PathBuf,
    start: u16,
    end: u16,
}

fn full_key(group: u16, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 2);
    k.extend_from_slice(&group.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl StateBackend for LsmBackend {
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.ks
            .get(full_key(group, key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| err(&self.dir, e))
    }

    fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.ks
            .insert(full_key(group, key), value)
            .map_err(|e| err(&self.dir, e))
    }

    fn delete(&mut self, group: u16, key: &[u8]) -> Result<()> {
        self.ks
            .remove(full_key(group, key))
            .map_err(|e| err(&self.dir, e))
    }

    fn scan(&self, group: u16, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let start = full_key(group, from);
        let end = (group as u32 + 1).to_be_bytes();
        let range = if group == u16::MAX {
            self.ks.range::<Vec<u8>, _>(start..)
        } else {
            self.ks.range(start..end[2..].to_vec())
        };
        for item in range {
            let (k, v) = item.into_inner().map_err(|e| err(&self.dir, e))?;
            if !f(&k[2..], &v) {
                break;
            }
        }
        Ok(())
    }

    fn for_each_in_group(&self, group: u16, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        for item in self.ks.prefix(group.to_be_bytes()) {
            let (k, v) = item.into_inner().map_err(|e| err(&self.dir, e))?;
            f(&k[2..], &v);
        }
        Ok(())
    }

    fn group_len(&self, _group: u16) -> usize {
        // Counting would read the group: the average is enough to pace the clean-up.
        self.ks.approximate_len() / (self.end - self.start).max(1) as usize
    }

    fn snapshot(&self) -> Box<dyn BackendSnapshot> {
        Box::new(LsmSnapshot {
            snapshot: self.db.snapshot(),
            ks: self.ks.clone(),
            dir: self.dir.clone(),
            start: self.start,
            end: self.end,
        })
    }

    fn entries(&self) -> u64 {
        self.ks.approximate_len() as u64
    }

    fn size_bytes(&self) -> u64 {
        self.ks.disk_space()
    }
}

struct LsmSnapshot {
    snapshot: fjall::Snapshot,
    ks: Keyspace,
    dir: PathBuf,
    start: u16,
    end: u16,
}

impl BackendSnapshot for LsmSnapshot {
    fn groups(&self) -> std::ops::Range<u16> {
        self.start..self.end
    }

    fn for_each(&self, group: u16, f: &mut EntryVisitor<'_>) -> Result<()> {
        for item in self.snapshot.prefix(&self.ks, group.to_be_bytes()) {
            let (k, v) = item.into_inner().map_err(|e| err(&self.dir, e))?;
            f(&k[2..], &v)?;
        }
        Ok(())
    }

    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snapshot
            .get(&self.ks, full_key(group, key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| err(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_backend_keeps_groups_apart_and_snapshots_a_point_in_time() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory of a process that is gone is removed.
        std::fs::create_dir_all(tmp.path().join("state/999999999")).unwrap();
        let db = LsmDatabase::open(&tmp.path().join("state"), 0).unwrap();
        assert!(!tmp.path().join("state/999999999").exists());
        let mut b = db.backend("n1s0", 4, 8).unwrap();
        b.put(5, b"a", b"1".to_vec()).unwrap();
        b.put(5, b"b", b"2".to_vec()).unwrap();
        b.put(6, b"a", b"3".to_vec()).unwrap();
        let snap = b.snapshot();
        b.put(5, b"a", b"changed".to_vec()).unwrap();
        b.delete(5, b"b").unwrap();
        assert_eq!(b.get(5, b"a").unwrap().unwrap(), b"changed");
        assert_eq!(b.get(5, b"b").unwrap(), None);
        let mut seen = Vec::new();
        b.scan(5, b"", &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(seen, vec![(b"a".to_vec(), b"changed".to_vec())]);
        let mut old = Vec::new();
        for g in snap.groups() {
            snap.for_each(g, &mut |k, v| {
                old.push((g, k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(
            old,
            vec![
                (5, b"a".to_vec(), b"1".to_vec()),
                (5, b"b".to_vec(), b"2".to_vec()),
                (6, b"a".to_vec(), b"3".to_vec())
            ]
        );
        assert_eq!(snap.get(5, b"b").unwrap().unwrap(), b"2");
        drop(b);
        drop(snap);
        drop(db);
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("state"))
            .unwrap()
            .collect();
        assert!(
            left.is_empty(),
            "the scratch directory is removed: {left:?}"
        );
    }
}
