//! [`ChangeSet`]: the entries of a keyed store changed since a snapshot, for incremental
//! checkpoints, kept compact: a checkpoint that waits behind a long full snapshot may track
//! millions of them.
//!
//! The keys live one after another in one buffer (key group, length, bytes), and a hash
//! table holds only their offsets: about 20 bytes per entry beyond the key, where a set of
//! `(u16, Vec<u8>)` took about 80 (a heap block per key, and the set and sort structures
//! the delta was written from). A delta is written a key group at a time from
//! [`ChangedKeys`], which merges several sets in (key group, key) order without copying them.
//!
//! ```
//! use sluice_engine::keyed::{ChangeSet, ChangedKeys};
//! let mut a = ChangeSet::default();
//! assert!(a.insert(3, b"x"));
//! assert!(!a.insert(3, b"x"));
//! a.insert(1, b"y");
//! let mut b = ChangeSet::default();
//! b.insert(3, b"w");
//! b.insert(3, b"x");
//! let mut keys = ChangedKeys::new(&[&a, &b]);
//! assert_eq!(keys.group(1), vec![&b"y"[..]]);
//! assert_eq!(keys.group(3), vec![&b"w"[..], &b"x"[..]]);
//! ```

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Bytes before each key in the buffer: its key group (2) and its length (4).
const HEADER: usize = 6;

/// A set of changed entries: (key group, backend key).
#[derive(Default)]
pub struct ChangeSet {
    buf: Vec<u8>,
    /// Offsets into `buf`, by the hash of their entry.
    index: HashTable<u64>,
}

fn hash(group: u16, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, group as u64)
}

/// The entry at `offset` of `buf`.
fn entry(buf: &[u8], offset: u64) -> (u16, &[u8]) {
    let at = offset as usize;
    let group = u16::from_be_bytes([buf[at], buf[at + 1]]);
    let len = u32::from_le_bytes([buf[at + 2], buf[at + 3], buf[at + 4], buf[at + 5]]) as usize;
    (group, &buf[at + HEADER..at + HEADER + len])
}

impl ChangeSet {
    /// Adds an entry; false if it was there.
    pub fn insert(&mut self, group: u16, key: &[u8]) -> bool {
        let h = hash(group, key);
        let buf = &self.buf;
        if self
            .index
            .find(h, |&o| entry(buf, o) == (group, key))
            .is_some()
        {
            return false;
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(&group.to_be_bytes());
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
        let buf = &self.buf;
        self.index.insert_unique(h, offset, |&o| {
            let (g, k) = entry(buf, o);
            hash(g, k)
        });
        true
    }

    /// The entries in it.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True if it has none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Its entries in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            (at < self.buf.len()).then(|| {
                let e = entry(&self.buf, at as u64);
                at += HEADER + e.1.len();
                e
            })
        })
    }

    /// The offsets of its entries, ordered by key group, then key.
    fn sorted(&self) -> Vec<u64> {
        let mut order: Vec<u64> = self.index.iter().copied().collect();
        order.sort_unstable_by(|&a, &b| entry(&self.buf, a).cmp(&entry(&self.buf, b)));
        order
    }
}

/// The keys of several change sets, a key group at a time (groups asked in increasing
/// order), sorted and each once.
pub struct ChangedKeys<'a> {
    /// Each set with its entries in order and how many of them were taken.
    sets: Vec<(&'a ChangeSet, Vec<u64>, usize)>,
}

impl<'a> ChangedKeys<'a> {
    /// The keys of `sets` (sorting each: 8 bytes per entry).
    pub fn new(sets: &[&'a ChangeSet]) -> Self {
        ChangedKeys {
            sets: sets.iter().map(|s| (*s, s.sorted(), 0)).collect(),
        }
    }

    /// The changed keys of key group `group`; the groups before it are passed over.
    pub fn group(&mut self, group: u16) -> Vec<&'a [u8]> {
        let mut keys = Vec::new();
        for (set, order, taken) in &mut self.sets {
            while let Some(&o) = order.get(*taken) {
                let (g, k) = entry(&set.buf, o);
                if g > group {
                    break;
                }
                if g == group {
                    keys.push(k);
                }
                *taken += 1;
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    proptest! {
        /// The same entries as a set of (group, key) would hold, and the same keys per
        /// group as a sorted set over all of them.
        #[test]
        fn change_sets_hold_what_a_set_holds(
            sets in prop::collection::vec(
                prop::collection::vec((0u16..6, prop::collection::vec(0u8..4, 0..4)), 0..60),
                1..4)
        ) {
            let mut built = Vec::new();
            let mut all = BTreeSet::new();
            for entries in &sets {
                let mut cs = ChangeSet::default();
                let mut model = HashSet::new();
                for (g, k) in entries {
                    prop_assert_eq!(cs.insert(*g, k), model.insert((*g, k.clone())));
                    all.insert((*g, k.clone()));
                }
                prop_assert_eq!(cs.len(), model.len());
                let seen: HashSet<(u16, Vec<u8>)> =
                    cs.iter().map(|(g, k)| (g, k.to_vec())).collect();
                prop_assert_eq!(seen, model);
                built.push(cs);
            }
            let refs: Vec<&ChangeSet> = built.iter().collect();
            let mut keys = ChangedKeys::new(&refs);
            for g in [0u16, 2, 3, 5] {
                let want: Vec<&[u8]> =
                    all.iter().filter(|(x, _)| *x == g).map(|(_, k)| k.as_slice()).collect();
                prop_assert_eq!(keys.group(g), want);
            }
        }
    }
}
