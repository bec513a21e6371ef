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
use std::sync::Arc;

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

/// Where the key of an entry ends and its user key (a map state's key, a time) begins: a
/// store's entry keys are a state id (1 byte), the key's length (`u32`, big-endian), the key,
/// then the user key. Entries of one key and state share the first part (the *primary*).
pub fn split_key(key: &[u8]) -> (&[u8], &[u8]) {
    let primary = key
        .get(1..5)
        .map(|l| 5 + u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .filter(|end| *end <= key.len())
        .unwrap_or(key.len());
    key.split_at(primary)
}

/// A byte map per key group, ordered within the entries of one primary (see
/// [`split_key`]).
pub trait StateBackend: Send {
    /// The value of `key` in `group`.
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets `key` in `group` to `value`.
    fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()>;
    /// Removes `key` from `group`.
    fn delete(&mut self, group: u16, key: &[u8]) -> Result<()>;
    /// Calls `f` on the entries of `from`'s primary in `group`, from `from` on, in user-key
    /// order, while it returns true.
    fn scan(&self, group: u16, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()>;
    /// Calls `f` on every entry of `group`, in no particular order (for clean-ups).
    fn for_each_in_group(&self, group: u16, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>;
    /// About how many entries `group` has.
    fn group_len(&self, group: u16) -> usize;
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
    /// Calls `f` on every entry of `group`.
    fn for_each(&self, group: u16, f: &mut EntryVisitor<'_>) -> Result<()>;
    /// The value of `key` in `group` as it was.
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// The entries of one primary: most have one (a value state), a map state's have many.
/// Behind `Arc`s, so that copying a tree node after a snapshot copies pointers, not bytes.
#[derive(Clone)]
enum Slot {
    One(Arc<(Vec<u8>, Vec<u8>)>),
    Many(imbl::OrdMap<Vec<u8>, Arc<Vec<u8>>>),
}

/// One key group: primary -> its entries (user key -> value).
type Table = imbl::HashMap<Arc<[u8]>, Slot>;

/// The in-memory backend: per key group a hash map (copy-on-write) of primaries, each with
/// its entries ordered by user key.
pub struct HashMapBackend {
    start: u16,
    groups: Vec<Table>,
    entries: u64,
    size_bytes: u64,
}

fn join(primary: &[u8], user: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(primary.len() + user.len());
    k.extend_from_slice(primary);
    k.extend_from_slice(user);
    k
}

fn lookup(table: &Table, key: &[u8]) -> Option<Vec<u8>> {
    let (primary, user) = split_key(key);
    match table.get(primary)? {
        Slot::One(e) if e.0.as_slice() == user => Some(e.1.clone()),
        Slot::One(..) => None,
        Slot::Many(m) => m.get(user).map(|v| v.to_vec()),
    }
}

fn visit(table: &Table, f: &mut EntryVisitor<'_>) -> Result<()> {
    for (primary, slot) in table {
        match slot {
            Slot::One(e) => f(&join(primary, &e.0), &e.1)?,
            Slot::Many(m) => {
                for (u, v) in m {
                    f(&join(primary, u), v)?;
                }
            }
        }
    }
    Ok(())
}

impl HashMapBackend {
    /// An empty backend for the key groups `[start, end)`.
    pub fn new(start: u16, end: u16) -> Self {
        HashMapBackend {
            start,
            groups: (start..end).map(|_| Table::new()).collect(),
            entries: 0,
            size_bytes: 0,
        }
    }

    fn table(&self, group: u16) -> &Table {
        &self.groups[(group - self.start) as usize]
    }
}

impl StateBackend for HashMapBackend {
    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(lookup(self.table(group), key))
    }

    fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()> {
        let (primary, user) = split_key(key);
        let added = (key.len() + value.len()) as u64;
        let table = &mut self.groups[(group - self.start) as usize];
        let old_len = match table.get_mut(primary) {
            None => {
                table.insert(primary.into(), Slot::One(Arc::new((user.to_vec(), value))));
                None
            }
            Some(Slot::One(e)) if e.0.as_slice() == user => {
                let old = e.1.len();
                *e = Arc::new((user.to_vec(), value));
                Some(old)
            }
            Some(slot) => {
                if let Slot::One(e) = slot {
                    let mut m = imbl::OrdMap::new();
                    m.insert(e.0.clone(), Arc::new(e.1.clone()));
                    *slot = Slot::Many(m);
                }
                match slot {
                    Slot::Many(m) => m.insert(user.to_vec(), Arc::new(value)).map(|v| v.len()),
                    Slot::One(..) => None,
                }
            }
        };
        match old_len {
            Some(old) => self.size_bytes = self.size_bytes + added - (key.len() + old) as u64,
            None => {
                self.entries += 1;
                self.size_bytes += added;
            }
        }
        Ok(())
    }

    fn delete(&mut self, group: u16, key: &[u8]) -> Result<()> {
        let (primary, user) = split_key(key);
        let table = &mut self.groups[(group - self.start) as usize];
        let (old_len, empty) = match table.get_mut(primary) {
            None => (None, false),
            Some(Slot::One(e)) if e.0.as_slice() != user => (None, false),
            Some(Slot::One(e)) => (Some(e.1.len()), true),
            Some(Slot::Many(m)) => {
                let old = m.remove(user).map(|v| v.len());
                (old, m.is_empty())
            }
        };
        if empty {
            table.remove(primary);
        }
        if let Some(old) = old_len {
            self.entries -= 1;
            self.size_bytes -= (key.len() + old) as u64;
        }
        Ok(())
    }

    fn scan(&self, group: u16, from: &[u8], f: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
        let (primary, user) = split_key(from);
        match self.table(group).get(primary) {
            None => {}
            Some(Slot::One(e)) if e.0.as_slice() >= user => {
                f(&join(primary, &e.0), &e.1);
            }
            Some(Slot::One(_)) => {}
            Some(Slot::Many(m)) => {
                for (u, v) in m.range::<_, [u8]>((Bound::Included(user), Bound::Unbounded)) {
                    if !f(&join(primary, u), v) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn for_each_in_group(&self, group: u16, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        visit(self.table(group), &mut |k, v| {
            f(k, v);
            Ok(())
        })
    }

    fn group_len(&self, group: u16) -> usize {
        self.table(group).len()
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
    groups: Vec<Table>,
}

impl BackendSnapshot for HashMapSnapshot {
    fn groups(&self) -> std::ops::Range<u16> {
        self.start..self.start + self.groups.len() as u16
    }

    fn for_each(&self, group: u16, f: &mut EntryVisitor<'_>) -> Result<()> {
        visit(&self.groups[(group - self.start) as usize], f)
    }

    fn get(&self, group: u16, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(lookup(&self.groups[(group - self.start) as usize], key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's entry key: state 0, `key`, then `user`.
    fn k(key: &[u8], user: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(key.len() as u32).to_be_bytes());
        v.extend_from_slice(key);
        v.extend_from_slice(user);
        v
    }

    #[test]
    fn split_key_finds_the_primary() {
        let full = k(b"abc", b"xy");
        assert_eq!(split_key(&full), (&full[..8], &b"xy"[..]));
        assert_eq!(split_key(b"\x00\x00"), (&b"\x00\x00"[..], &b""[..]));
    }

    #[test]
    fn a_snapshot_does_not_see_later_writes() {
        let mut b = HashMapBackend::new(4, 8);
        b.put(5, &k(b"a", b""), b"1".to_vec()).unwrap();
        b.put(5, &k(b"b", b""), b"2".to_vec()).unwrap();
        b.put(5, &k(b"m", b"1"), b"x".to_vec()).unwrap();
        b.put(5, &k(b"m", b"2"), b"y".to_vec()).unwrap();
        let snap = b.snapshot();
        b.put(5, &k(b"a", b""), b"changed".to_vec()).unwrap();
        b.delete(5, &k(b"b", b"")).unwrap();
        b.delete(5, &k(b"m", b"1")).unwrap();
        b.put(6, &k(b"c", b""), b"3".to_vec()).unwrap();
        let mut seen = Vec::new();
        for g in snap.groups() {
            snap.for_each(g, &mut |key, v| {
                seen.push((g, key.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (5, k(b"a", b""), b"1".to_vec()),
                (5, k(b"b", b""), b"2".to_vec()),
                (5, k(b"m", b"1"), b"x".to_vec()),
                (5, k(b"m", b"2"), b"y".to_vec()),
            ]
        );
        assert_eq!(snap.get(5, &k(b"m", b"1")).unwrap().unwrap(), b"x");
        assert_eq!(b.get(5, &k(b"a", b"")).unwrap().unwrap(), b"changed");
        assert_eq!(b.get(5, &k(b"m", b"1")).unwrap(), None);
        assert_eq!(b.entries(), 3);
        assert_eq!(b.group_len(5), 2);
    }

    #[test]
    fn scan_goes_through_one_primary_in_user_key_order() {
        let mut b = HashMapBackend::new(0, 1);
        for u in [&b"3"[..], b"1", b"2"] {
            b.put(0, &k(b"m", u), u.to_vec()).unwrap();
        }
        b.put(0, &k(b"n", b"0"), vec![]).unwrap();
        let mut seen = Vec::new();
        b.scan(0, &k(b"m", b"2"), &mut |key, v| {
            seen.push((key.to_vec(), v.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (k(b"m", b"2"), b"2".to_vec()),
                (k(b"m", b"3"), b"3".to_vec())
            ]
        );
        // A primary with one entry that becomes two and back.
        b.put(0, &k(b"v", b""), b"a".to_vec()).unwrap();
        b.put(0, &k(b"v", b"x"), b"b".to_vec()).unwrap();
        b.delete(0, &k(b"v", b"")).unwrap();
        assert_eq!(b.get(0, &k(b"v", b"x")).unwrap().unwrap(), b"b");
        assert_eq!(b.entries(), 5);
    }
}
