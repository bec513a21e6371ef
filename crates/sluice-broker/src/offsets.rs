//! Committed consumer group offsets, kept in memory and written durably: one file per group
//! under `<data_dir>/__consumer_offsets/`, replaced atomically (write, fsync, rename) on every
//! commit, so that a commit acknowledged to a client survives a crash.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A committed offset and its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: Option<String>,
}

type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// Every group's committed offsets.
pub struct OffsetStore {
    dir: PathBuf,
    groups: Mutex<HashMap<String, GroupOffsets>>,
}

pub(crate) fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl OffsetStore {
    /// Loads every group's offsets from `data_dir`.
    pub fn open(data_dir: &Path) -> std::io::Result<OffsetStore> {
        let dir = data_dir.join("__consumer_offsets");
        std::fs::create_dir_all(&dir)?;
        let mut groups = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".offsets"))
            else {
                continue;
            };
            let Some(group) = unhex(stem).and_then(|g| String::from_utf8(g).ok()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let mut offsets = GroupOffsets::new();
            for line in text.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() != 4 {
                    continue;
                }
                let (Some(topic), Ok(p), Ok(offset)) = (
                    unhex(f[0]).and_then(|t| String::from_utf8(t).ok()),
                    f[1].parse(),
                    f[2].parse(),
                ) else {
                    continue;
                };
                let metadata = if f[3] == "-" {
                    None
                } else {
                    unhex(f[3]).and_then(|m| String::from_utf8(m).ok())
                };
                offsets.insert((topic, p), Committed { offset, metadata });
            }
            groups.insert(group, offsets);
        }
        Ok(OffsetStore {
            dir,
            groups: Mutex::new(groups),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupOffsets>> {
        match self.groups.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{}.offsets", hex(group.as_bytes())))
    }

    /// Commits offsets for a group and makes them durable before returning.
    pub fn commit(
        &self,
        group: &str,
        entries: Vec<((String, i32), Committed)>,
    ) -> std::io::Result<()> {
        let mut groups = self.lock();
        let offsets = groups.entry(group.to_string()).or_default();
        for (k, v) in entries {
            offsets.insert(k, v);
        }
        let mut text = String::new();
        for ((topic, p), c) in offsets.iter() {
            let meta = c
                .metadata
                .as_ref()
                .map(|m| hex(m.as_bytes()))
                .unwrap_or_else(|| "-".into());
            text.push_str(&format!(
                "{}\t{p}\t{}\t{meta}\n",
                hex(topic.as_bytes()),
                c.offset
            ));
        }
        let path = self.path(group);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The committed offset of a partition.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.lock()
            .get(group)
            .and_then(|g| g.get(&(topic.to_string(), partition)).cloned())
    }

    /// Every committed offset of a group.
    pub fn all(&self, group: &str) -> Vec<((String, i32), Committed)> {
        self.lock()
            .get(group)
            .map(|g| g.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// True if the group has committed offsets.
    pub fn has_group(&self, group: &str) -> bool {
        self.lock().contains_key(group)
    }

    /// Every group with committed offsets.
    pub fn groups(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Forgets a group's offsets.
    pub fn delete(&self, group: &str) -> std::io::Result<()> {
        self.lock().remove(group);
        match std::fs::remove_file(self.path(group)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        s.commit(
            "g 1/ü",
            vec![(
                ("t\tx".into(), 0),
                Committed {
                    offset: 5,
                    metadata: Some("m|d".into()),
                },
            )],
        )
        .unwrap();
        s.commit(
            "g 1/ü",
            vec![(
                ("t\tx".into(), 1),
                Committed {
                    offset: 7,
                    metadata: None,
                },
            )],
        )
        .unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get("g 1/ü", "t\tx", 0),
            Some(Committed {
                offset: 5,
                metadata: Some("m|d".into())
            })
        );
        assert_eq!(s.get("g 1/ü", "t\tx", 1).unwrap().offset, 7);
        assert_eq!(s.groups(), vec!["g 1/ü".to_string()]);
        s.delete("g 1/ü").unwrap();
        assert!(!s.has_group("g 1/ü"));
    }
}
