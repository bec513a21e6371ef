//! A sparse index beside a segment: sorted (key, value) entries persisted as 12-byte records.
//! The offset index maps a relative offset to a byte position; the time index maps a
//! timestamp to a relative offset. Both are rebuilt from the segment when missing or stale.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const ENTRY_BYTES: usize = 12;

/// Sorted (key, value) entries and their file.
#[derive(Debug)]
pub struct SparseIndex {
    path: PathBuf,
    file: File,
    entries: Vec<(i64, u32)>,
}

impl SparseIndex {
    /// Opens (or creates) the index at `path`. Entries that are not in increasing key order,
    /// or a file whose size is not a whole number of entries, mean a stale index: it is
    /// emptied and `false` returned so that the caller rebuilds it.
    pub fn open(path: &Path) -> io::Result<(SparseIndex, bool)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
        let mut valid = bytes.len() % ENTRY_BYTES == 0;
        for chunk in bytes.chunks_exact(ENTRY_BYTES) {
            let mut k = [0u8; 8];
            k.copy_from_slice(&chunk[..8]);
            let key = i64::from_be_bytes(k);
            let value = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if entries.last().is_some_and(|&(last, _)| key < last) {
                valid = false;
                break;
            }
            entries.push((key, value));
        }
        let mut index = SparseIndex {
            path: path.to_path_buf(),
            file,
            entries,
        };
        if !valid {
            index.reset(Vec::new())?;
        }
        Ok((index, valid))
    }

    /// Adds an entry (keys must not decrease).
    pub fn append(&mut self, key: i64, value: u32) -> io::Result<()> {
        debug_assert!(self.entries.last().is_none_or(|&(k, _)| key >= k));
        let mut rec = [0u8; ENTRY_BYTES];
        rec[..8].copy_from_slice(&key.to_be_bytes());
        rec[8..].copy_from_slice(&value.to_be_bytes());
        self.file.write_all(&rec)?;
        self.entries.push((key, value));
        Ok(())
    }

    /// The last entry whose key is at most `key`.
    pub fn floor(&self, key: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|&(k, _)| k <= key);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The first entry whose key is at least `key`.
    pub fn ceiling(&self, key: i64) -> Option<(i64, u32)> {
        let i = self.entries.partition_point(|&(k, _)| k < key);
        self.entries.get(i).copied()
    }

    /// The entries.
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    /// Replaces every entry (after a rebuild or a truncation).
    pub fn reset(&mut self, entries: Vec<(i64, u32)>) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * ENTRY_BYTES);
        for (k, v) in &entries {
            bytes.extend_from_slice(&k.to_be_bytes());
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        let tmp = self.path.with_extension("rebuild");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.entries = entries;
        Ok(())
    }

    /// Another handle on the index file (for syncing it elsewhere).
    pub fn file_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Makes the index durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_detects_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.index");
        let (mut idx, valid) = SparseIndex::open(&p).unwrap();
        assert!(valid);
        idx.append(0, 0).unwrap();
        idx.append(10, 4096).unwrap();
        idx.append(25, 8192).unwrap();
        assert_eq!(idx.floor(12), Some((10, 4096)));
        assert_eq!(idx.ceiling(11), Some((25, 8192)));
        assert_eq!(idx.floor(-1), None);
        drop(idx);
        let (idx, valid) = SparseIndex::open(&p).unwrap();
        assert!(valid);
        assert_eq!(idx.entries().len(), 3);
        // A torn entry makes the index stale.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let (idx, valid) = SparseIndex::open(&p).unwrap();
        assert!(!valid);
        assert!(idx.entries().is_empty());
    }
}
