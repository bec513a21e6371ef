//! Key groups: the unit in which keyed state is split between subtasks and moved between them.
//!
//! A key hashes into one of `max_parallelism` key groups (`pipeline.max-parallelism`, 128 by
//! default, as in Flink); subtask `i` of `p` owns a contiguous range of them. The hash
//! exchange sends a row to the subtask that owns its key's group, so a subtask's keyed state
//! holds only its own groups, and a checkpoint written at one parallelism can be read back at
//! another: each new subtask takes the groups of its new range from whichever old subtasks had
//! them.
//!
//! The hash is XXH3 over the key's stable encoding ([`super::RowCodec`]), so the group of a
//! key never changes between runs, processes or versions of Sluice.
//!
//! ```
//! use sluice_engine::keyed::{key_group_of, KeyGroupRange};
//! let range = KeyGroupRange::for_subtask(128, 2, 1);
//! assert_eq!((range.start, range.end), (64, 128));
//! let g = key_group_of(b"some key", 128);
//! assert!(g < 128);
//! assert_eq!(KeyGroupRange::subtask_of(g, 128, 2), usize::from(g >= 64));
//! ```

/// Flink's default `pipeline.max-parallelism`.
pub const DEFAULT_MAX_PARALLELISM: usize = 128;

/// The most key groups a job may have (a key group is stored as a `u16`), as in Flink.
pub const MAX_KEY_GROUPS: usize = 32_768;

/// The key group of an encoded key.
pub fn key_group_of(key: &[u8], max_parallelism: usize) -> u16 {
    debug_assert!((1..=MAX_KEY_GROUPS).contains(&max_parallelism));
    (xxhash_rust::xxh3::xxh3_64(key) % max_parallelism as u64) as u16
}

/// The key groups `[start, end)` one subtask owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    /// The first key group.
    pub start: u16,
    /// One past the last key group.
    pub end: u16,
}

impl KeyGroupRange {
    /// Every key group (a job of parallelism 1).
    pub fn all(max_parallelism: usize) -> Self {
        KeyGroupRange {
            start: 0,
            end: max_parallelism as u16,
        }
    }

    /// The range of subtask `index` of `parallelism`: the groups `g` with
    /// `g * parallelism / max_parallelism == index`, so that [`KeyGroupRange::subtask_of`]
    /// and this agree.
    pub fn for_subtask(max_parallelism: usize, parallelism: usize, index: usize) -> Self {
        assert!(parallelism > 0 && parallelism <= max_parallelism && index < parallelism);
        let first = |i: usize| (i * max_parallelism).div_ceil(parallelism);
        KeyGroupRange {
            start: first(index) as u16,
            end: first(index + 1) as u16,
        }
    }

    /// The subtask of `parallelism` that owns `key_group`.
    pub fn subtask_of(key_group: u16, max_parallelism: usize, parallelism: usize) -> usize {
        key_group as usize * parallelism / max_parallelism
    }

    /// True if `key_group` is in the range.
    pub fn contains(&self, key_group: u16) -> bool {
        (self.start..self.end).contains(&key_group)
    }

    /// How many key groups the range has.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True if the range has no key group.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The key groups of the range.
    pub fn iter(&self) -> std::ops::Range<u16> {
        self.start..self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_partition_the_key_groups_and_agree_with_subtask_of(
            max in 1usize..600, p_seed in 1usize..600,
        ) {
            let p = 1 + p_seed % max;
            let mut next = 0u16;
            for i in 0..p {
                let r = KeyGroupRange::for_subtask(max, p, i);
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty());
                for g in r.iter() {
                    prop_assert_eq!(KeyGroupRange::subtask_of(g, max, p), i);
                }
                next = r.end;
            }
            prop_assert_eq!(next as usize, max);
        }
    }

    const STABLE_GROUPS: [u16; 4] = [66, 31, 29, 59];

    #[test]
    fn the_hash_is_stable() {
        // These values are in savepoints: they must never change.
        let groups: Vec<u16> = [&b""[..], b"a", b"sluice", b"\x01\x02\x03"]
            .iter()
            .map(|k| key_group_of(k, 128))
            .collect();
        assert_eq!(groups, STABLE_GROUPS);
    }
}
