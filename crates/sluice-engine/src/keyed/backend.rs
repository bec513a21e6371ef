//! Where keyed state lives: a [`StateBackend`] is a sorted map of byte keys to byte values per
//! key group, with a snapshot that is taken at once (on the task thread, at the barrier) and
//! written afterwards (on another thread, while the task goes on).
//!
//! `hashmap` ([`HashMapBackend`]) keeps the maps in memory as copy-on-write trees, so a
//! snapshot is an O(1) view and a write after it copies only the path it changes. A disk
//! backend implements the same trait; operators see only [`super::KeyedStore`].

use super::lsm::LsmDatabase;
use sluice_common::Result;
use std::ops::Bound;
use std::path::Path;

/// Flink's `state.backend.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// In memory (`hashmap`, the default).
    #[default]
    HashMap,
    /// On local disk, in an embedded LSM tree, memory bounded (`rocksdb` or `forst`, Flink's
    /// names for its disk backends; see [`super::lsm`]).
    Disk,
}

impl StateBackendKind {
    /// Parses `state.backend.type`.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "hashmap" | "" => Ok(StateBackendKind::HashMap),
            "rocksdb" | "forst" => Ok(StateBackendKind::Disk),
            _ => Err(format!(
                "SET 'state.backend.type' = '{value}': expected 'hashmap' (in memory) or 'rocksdb' (on disk)"
            )),
        }
    }
}

/// What the backends of one job share: for the disk backend, the job's database.
pub struct StateResources {
    kind: StateBackendKind,
    lsm: Option<LsmDatabase>,
}

impl StateResources {
    /// Opens what `kind` needs: the disk backend opens its database in `local_dir`, with
    /// `memory_bytes` of memory for all of the job's keyed state.
    pub fn open(kind: StateBackendKind, local_dir: &Path, memory_bytes: u64) -> Result<Self> {
        let lsm = match kind {
            StateBackendKind::HashMap => None,
            StateBackendKind::Disk => Some(LsmDatabase::open(local_dir, memory_bytes)?),
        };
        Ok(StateResources { kind, lsm })
    }

    /// Only in-memory state (for tests and jobs without a data directory).
    pub fn in_memory() -> Self {
        StateResources {
            kind: StateBackendKind::HashMap,
            lsm: None,
        }
    }

    /// A backend for the key groups `[start, end)` of the operator subtask `name` (unique
    /// in the job: letters, digits, `-`, `_`).
    pub fn create(&self, name: &str, start: u16, end: u16) -> Result<Box<dyn StateBackend>> {
        match (self.kind, &self.lsm) {
            (StateBackendKind::Disk, Some(db)) => Ok(Box::new(db.backend(name, start, end)?)),
            _ => Ok(Box::new(HashMapBackend::new(start, end))),
        }
    }
}

impl std::fmt::Debug for StateResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateResources")
            .field("kind", &self.kind)
            .finish()
    }
}

impl Default for StateResources {
    fn default() -> Self {
        StateResources::in_memory()
    }
}

/// A sorted byte map per key group.
pub trait StateBackend: Send {
    /// The value of `key` in `group`.
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets `key` in `group` to `value`.
    fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()>;
    /// Removes `key` from `group`.
    fn delete(&mut self, group: u16, key: &[u8]) -> Result<()>;
    /// Calls `f` on the entries of `group` from `from` on, in key order, while it returns
    /// true.
    fn scan(&self, group: u16, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
    /// A view of every group as it is now, to be written later.
    fn snapshot(&self) -> Box<dyn BackendSnapshot>;
    /// The number of entries.
    fn entries(&self) -> u64;
    /// The bytes of keys and values held.
    fn size_bytes(&self) -> u64;
}

/// What a snapshot calls with every entry (key, value) it writes.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A point-in-time view of a backend.
pub trait BackendSnapshot: Send {
    /// The key groups it holds.
    fn groups(&self) -> std::ops::Range<u16>;
    /// Calls `f` on every entry of `group`, in key order.
    fn for_each(&self, group: u16, f: &mut EntryVisitor<'_>) -> Result<()>;
    /// The value of `key` in `group` as it was.
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

type Tree = imbl::OrdMap<Vec<u8>, Vec<u8>>;

/// The in-memory backend.
pub struct HashMapBackend {
    start: u16,
    groups: Vec<Tree>,
    entries: u64,
    size_bytes: u64,
}

impl HashMapBackend {
    /// An empty backend for the key groups `[start, end)`.
    pub fn new(start: u16, end: u16) -> Self {
        HashMapBackend {
            start,
            groups: (start..end).map(|_| Tree::new()).collect(),
            entries: 0,
            size_bytes: 0,
        }
    }

    fn tree(&self, group: u16) -> &Tree {
        &self.groups[(group - self.start) as usize]
    }
}

impl StateBackend for HashMapBackend {
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(group).get(key).cloned())
    }

    fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()> {
        let added = (key.len() + value.len()) as u64;
        let tree = &mut self.groups[(group - self.start) as usize];
        match tree.insert(key.to_vec(), value) {
            Some(old) => {
                self.size_bytes = self.size_bytes + added - (key.len() + old.len()) as u64;
            }
            None => {
                self.entries += 1;
                self.size_bytes += added;
            }
        }
        Ok(())
    }

    fn delete(&mut self, group: u16, key: &[u8]) -> Result<()> {
        let tree = &mut self.groups[(group - self.start) as usize];
        if let Some(old) = tree.remove(key) {
            self.entries -= 1;
            self.size_bytes -= (key.len() + old.len()) as u64;
        }
        Ok(())
    }

    fn scan(&self, group: u16, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        for (k, v) in self
            .tree(group)
            .range::<_, [u8]>((Bound::Included(from), Bound::Unbounded))
        {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Box<dyn BackendSnapshot> {
        Box::new(HashMapSnapshot {
            start: self.start,
            groups: self.groups.clone(),
        })
    }

    fn entries(&self) -> u64 {
        self.entries
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

struct HashMapSnapshot {
    start: u16,
    groups: Vec<Tree>,
}

impl BackendSnapshot for HashMapSnapshot {
    fn groups(&self) -> std::ops::Range<u16> {
        self.start..self.start + self.groups.len() as u16
    }

    fn for_each(&self, group: u16, f: &mut EntryVisitor<'_>) -> Result<()> {
        for (k, v) in &self.groups[(group - self.start) as usize] {
            f(k, v)?;
        }
        Ok(())
    }

    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.groups[(group - self.start) as usize].get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        let mut b = HashMapBackend::new(4, 8);
        b.put(5, b"a", b"1".to_vec()).unwrap();
        b.put(5, b"b", b"2".to_vec()).unwrap();
        let snap = b.snapshot();
        b.put(5, b"a", b"changed".to_vec()).unwrap();
        b.delete(5, b"b").unwrap();
        b.put(6, b"c", b"3".to_vec()).unwrap();
        let mut seen = Vec::new();
        for g in snap.groups() {
            snap.for_each(g, &mut |k, v| {
                seen.push((g, k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(
            seen,
            vec![
                (5, b"a".to_vec(), b"1".to_vec()),
                (5, b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(b.get(5, b"a").unwrap().unwrap(), b"changed");
        assert_eq!((b.entries(), b.size_bytes()), (2, 1 + 7 + 1 + 1));
    }

    #[test]
    fn scan_starts_at_a_key_and_stops_when_told() {
        let mut b = HashMapBackend::new(0, 1);
        for k in [b"a1", b"b1", b"b2", b"c1"] {
            b.put(0, k, vec![]).unwrap();
        }
        let mut seen = Vec::new();
        b.scan(0, b"b", &mut |k, _| {
            if !k.starts_with(b"b") {
                return false;
            }
            seen.push(k.to_vec());
            true
        })
        .unwrap();
        assert_eq!(seen, vec![b"b1".to_vec(), b"b2".to_vec()]);
    }
}
