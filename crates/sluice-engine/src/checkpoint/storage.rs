//! Checkpoints on disk. A checkpoint is a directory `chk-<id>` (a savepoint `savepoint-<id>`)
//! holding one file per task subtask and a `_metadata` file. A part file holds, for every
//! node of its task, what the operator wrote ([`crate::Operator::snapshot_state`]) and its
//! keyed state ([`crate::keyed::KeyedSnapshot`], by key group, so that any subtask of a job
//! at another parallelism can take its own key groups from it).
//!
//! With incremental checkpoints, keyed state is not inline: it is a manifest of files in the
//! `shared/` directory beside the checkpoints, a full snapshot followed by deltas, and a
//! checkpoint writes only the file of its own delta; checkpoints share the others, and a file
//! is deleted when no retained checkpoint lists it (`_metadata` lists what each one uses).
//! Savepoints are always self-contained. Each part file ends with a
//! CRC-32C of its contents and is fsynced before the task acknowledges; `_metadata` (written
//! to a temporary name, fsynced, then renamed) lists every part with its size and CRC. So a
//! checkpoint is complete exactly when its `_metadata` exists, and a part that was truncated
//! or altered afterwards is detected when the checkpoint is read back.

use sluice_common::{CheckpointId, Result, SluiceError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Part files of Sluice 0.1 (operator state only); still read.
const PART_MAGIC_V1: &[u8; 8] = b"SLUICEK1";
/// Part files with keyed state.
const PART_MAGIC: &[u8; 8] = b"SLUICEK2";
const METADATA: &str = "_metadata";
const FORMAT_VERSION: u64 = 1;

/// One operator (graph node) as a checkpoint records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Its number of subtasks.
    pub parallelism: usize,
}

/// A part file as the metadata lists it.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// The file's name inside the checkpoint directory.
    pub file: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its CRC-32C.
    pub crc: u32,
}

/// A file in `shared/` that checkpoints share: a full snapshot or a delta of one subtask's
/// keyed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Its name in `shared/`.
    pub name: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its CRC-32C.
    pub crc: u32,
}

/// The first field of a keyed section that lists shared files instead of holding the state.
const MANIFEST_MAGIC: &str = "sluice-keyed-manifest-1";

/// Encodes a manifest: the shared files that make up a subtask's keyed state, oldest first.
pub fn manifest_bytes(files: &[SharedFile]) -> Vec<u8> {
    let mut w = crate::state::StateWriter::default();
    w.put_str(MANIFEST_MAGIC);
    w.put_u64(files.len() as u64);
    for f in files {
        w.put_str(&f.name);
        w.put_u64(f.size_bytes);
        w.put_u64(f.crc as u64);
    }
    w.finish()
}

/// Reads a manifest back; `None` if `keyed` is inline state, not a manifest.
pub fn read_manifest(keyed: &[u8], owner: &str) -> Result<Option<Vec<SharedFile>>> {
    let mut r = crate::state::StateReader::new(keyed, owner);
    if keyed.is_empty() || r.str().ok() != Some(MANIFEST_MAGIC) {
        return Ok(None);
    }
    let n = r.count()?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        files.push(SharedFile {
            name: r.str()?.to_string(),
            size_bytes: r.u64()?,
            crc: r.u64()? as u32,
        });
    }
    Ok(Some(files))
}

/// The directory of the files checkpoints in `dir` share.
pub fn shared_dir(dir: &Path) -> PathBuf {
    dir.join("shared")
}

/// Writes `bytes` as the shared file `name` in `shared` (with a CRC, fsynced).
pub fn write_shared(shared: &Path, name: &str, bytes: &[u8]) -> Result<SharedFile> {
    std::fs::create_dir_all(shared).map_err(|e| io(shared, e))?;
    let path = shared.join(name);
    let mut f = File::create(&path).map_err(|e| io(&path, e))?;
    f.write_all(bytes).map_err(|e| io(&path, e))?;
    f.sync_all().map_err(|e| io(&path, e))?;
    Ok(SharedFile {
        name: name.to_string(),
        size_bytes: bytes.len() as u64,
        crc: crc32c::crc32c(bytes),
    })
}

/// Writes the shared file `name` in `shared` from what `fill` hands its sink, chunk by
/// chunk (with a CRC, fsynced). `fill` returning false means no file: it is removed.
pub fn write_shared_with(
    shared: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<bool>,
) -> Result<Option<SharedFile>> {
    std::fs::create_dir_all(shared).map_err(|e| io(shared, e))?;
    let path = shared.join(name);
    let file = File::create(&path).map_err(|e| io(&path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let (mut crc, mut size) = (0u32, 0u64);
    let kept = fill(&mut |chunk| {
        crc = crc32c::crc32c_append(crc, chunk);
        size += chunk.len() as u64;
        w.write_all(chunk).map_err(|e| io(&path, e))
    })?;
    if !kept {
        drop(w);
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    let file = w.into_inner().map_err(|e| io(&path, e.into_error()))?;
    file.sync_all().map_err(|e| io(&path, e))?;
    Ok(Some(SharedFile {
        name: name.to_string(),
        size_bytes: size,
        crc,
    }))
}

/// Keyed state of one subtask as a checkpoint holds it: inline in its part file, or in a
/// shared file (read a piece at a time, so that a state larger than memory restores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedBlob {
    /// The bytes themselves.
    Inline(Vec<u8>),
    /// A file in the shared directory `dir`.
    Shared {
        /// The shared directory.
        dir: PathBuf,
        /// The file.
        file: SharedFile,
    },
}

impl KeyedBlob {
    /// Gives the state to `f` as a stream; a shared file's size and CRC are checked once
    /// `f` is done (it is read to its end).
    pub fn read_with<T>(&self, f: impl FnOnce(&mut dyn Read) -> Result<T>) -> Result<T> {
        match self {
            KeyedBlob::Inline(bytes) => f(&mut &bytes[..]),
            KeyedBlob::Shared { dir, file } => {
                let path = dir.join(&file.name);
                let mut r = CheckedReader::open(&path)?;
                let t = f(&mut r)?;
                r.finish(file)?;
                Ok(t)
            }
        }
    }
}

/// A shared file read through, with the CRC and size of what was read.
struct CheckedReader {
    path: PathBuf,
    inner: std::io::BufReader<File>,
    crc: u32,
    size: u64,
}

impl CheckedReader {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| io(path, e))?;
        Ok(CheckedReader {
            path: path.to_path_buf(),
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            crc: 0,
            size: 0,
        })
    }

    /// Reads what is left, then checks the whole file against what the checkpoint wrote.
    fn finish(mut self, file: &SharedFile) -> Result<()> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|e| io(&self.path, e))?;
        if self.size != file.size_bytes || self.crc != file.crc {
            return Err(SluiceError::Runtime(format!(
                "{}: {} bytes with another checksum than the checkpoint wrote ({} bytes): the file is corrupt",
                self.path.display(),
                self.size,
                file.size_bytes
            )));
        }
        Ok(())
    }
}

impl Read for CheckedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Checks a shared file's size and CRC, reading it through without keeping it.
fn check_shared(shared: &Path, file: &SharedFile) -> Result<KeyedBlob> {
    let blob = KeyedBlob::Shared {
        dir: shared.to_path_buf(),
        file: file.clone(),
    };
    blob.read_with(|_| Ok(()))?;
    Ok(blob)
}

/// In the name of the shared file of a subtask's final state.
pub const FINAL_MARK: &str = "-final-";

/// Deletes the files in `dir`'s `shared/` that no complete checkpoint in `dir` lists (but
/// final states, see [`FINAL_MARK`]).
pub fn prune_shared(dir: &Path) {
    let shared = shared_dir(dir);
    let Ok(entries) = std::fs::read_dir(&shared) else {
        return;
    };
    let mut used = std::collections::HashSet::new();
    for (_, path) in list(dir) {
        match read_metadata(&path) {
            Ok(m) => used.extend(m.shared),
            // An incomplete checkpoint is not read back; anything else keeps every file.
            Err(_) if !is_complete(&path) => {}
            Err(_) => return,
        }
    }
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // A subtask's final state is written when it finishes, before the coordinator hears
        // of it: one no checkpoint lists yet may be about to be. They go with the job.
        if !used.contains(&name) && !name.contains(FINAL_MARK) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!("cannot delete {}: {err}", e.path().display());
            }
        }
    }
}

/// What `_metadata` says.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The job's name.
    pub job: String,
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// True for a savepoint.
    pub savepoint: bool,
    /// When it was triggered (ms since the epoch).
    pub trigger_time_ms: i64,
    /// The graph's nodes, in order.
    pub nodes: Vec<NodeInfo>,
    /// Its part files.
    pub parts: Vec<PartInfo>,
    /// The files of `shared/` its parts list.
    pub shared: Vec<String>,
}

fn io(path: &Path, e: std::io::Error) -> SluiceError {
    SluiceError::io(path.display().to_string(), e)
}

/// The directory of checkpoint `id` under `dir`.
pub fn checkpoint_dir(dir: &Path, id: CheckpointId) -> PathBuf {
    dir.join(format!("chk-{id}"))
}

/// The state one node of a task subtask wrote into a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// The node.
    pub node: usize,
    /// What its operator (or source) wrote itself.
    pub operator: Vec<u8>,
    /// Its keyed state (empty if it keeps none).
    pub keyed: Vec<u8>,
}

impl Section {
    /// The bytes of state it holds.
    pub fn size_bytes(&self) -> u64 {
        (self.operator.len() + self.keyed.len()) as u64
    }
}

/// Writes a part file: the state of each node of one task subtask. Returns its size and CRC.
pub fn write_part(path: &Path, sections: &[Section]) -> Result<PartInfo> {
    let size: usize = sections.iter().map(|s| s.size_bytes() as usize + 24).sum();
    let mut buf = Vec::with_capacity(20 + size);
    buf.extend_from_slice(PART_MAGIC);
    buf.extend_from_slice(&(sections.len() as u64).to_le_bytes());
    for s in sections {
        buf.extend_from_slice(&(s.node as u64).to_le_bytes());
        for bytes in [&s.operator, &s.keyed] {
            buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            buf.extend_from_slice(bytes);
        }
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let mut f = File::create(path).map_err(|e| io(path, e))?;
    f.write_all(&buf).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))?;
    Ok(PartInfo {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        size_bytes: buf.len() as u64,
        crc,
    })
}

/// Reads a part file back, checking it against what the metadata says of it.
pub fn read_part(path: &Path, expected: &PartInfo) -> Result<Vec<Section>> {
    let bad = |what: &str| SluiceError::Runtime(format!("{}: {what}", path.display()));
    let data = std::fs::read(path).map_err(|e| io(path, e))?;
    if data.len() as u64 != expected.size_bytes {
        return Err(bad(&format!(
            "{} bytes, but the checkpoint wrote {} (truncated or altered)",
            data.len(),
            expected.size_bytes
        )));
    }
    if data.len() < 20 || (&data[..8] != PART_MAGIC && &data[..8] != PART_MAGIC_V1) {
        return Err(bad("not a Sluice checkpoint part"));
    }
    let with_keyed = &data[..8] == PART_MAGIC;
    let (body, tail) = data.split_at(data.len() - 4);
    let crc = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if crc != crc32c::crc32c(body) || crc != expected.crc {
        return Err(bad("checksum mismatch (the file is corrupt)"));
    }
    let mut pos = 8;
    let next_u64 = |pos: &mut usize| -> Result<u64> {
        let b = body.get(*pos..*pos + 8).ok_or_else(|| bad("ends early"))?;
        *pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    };
    let n = next_u64(&mut pos)?;
    let mut sections = Vec::new();
    let next_bytes = |pos: &mut usize| -> Result<Vec<u8>> {
        let len = next_u64(pos)? as usize;
        let bytes = body
            .get(*pos..pos.saturating_add(len))
            .ok_or_else(|| bad("ends early"))?;
        *pos += len;
        Ok(bytes.to_vec())
    };
    for _ in 0..n {
        let node = next_u64(&mut pos)? as usize;
        let operator = next_bytes(&mut pos)?;
        let keyed = if with_keyed {
            next_bytes(&mut pos)?
        } else {
            Vec::new()
        };
        sections.push(Section {
            node,
            operator,
            keyed,
        });
    }
    Ok(sections)
}

/// Writes `_metadata` into `dir`, completing the checkpoint.
pub fn write_metadata(dir: &Path, m: &Metadata) -> Result<()> {
    let json = serde_json::json!({
        "version": FORMAT_VERSION,
        "job": m.job,
        "checkpoint": m.id,
        "savepoint": m.savepoint,
        "trigger_time_ms": m.trigger_time_ms,
        "nodes": m.nodes.iter().map(|n| serde_json::json!({"name": n.name, "parallelism": n.parallelism})).collect::<Vec<_>>(),
        "parts": m.parts.iter().map(|p| serde_json::json!({"file": p.file, "size": p.size_bytes, "crc": p.crc})).collect::<Vec<_>>(),
        "shared": m.shared,
    });
    let tmp = dir.join("_metadata.inprogress");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(json.to_string().as_bytes())
        .map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    let path = dir.join(METADATA);
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    sync_dir(dir)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Reads `_metadata` of the checkpoint in `dir`.
pub fn read_metadata(dir: &Path) -> Result<Metadata> {
    let path = dir.join(METADATA);
    let bad = |what: &str| SluiceError::Runtime(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
    let version = v["version"].as_u64().unwrap_or(0);
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version}; this Sluice reads version {FORMAT_VERSION}"
        )));
    }
    let field = |k: &str| v.get(k).ok_or_else(|| bad(&format!("no '{k}'")));
    let nodes = field("nodes")?
        .as_array()
        .ok_or_else(|| bad("'nodes' is not a list"))?
        .iter()
        .map(|n| {
            Ok(NodeInfo {
                name: n["name"]
                    .as_str()
                    .ok_or_else(|| bad("a node without a name"))?
                    .into(),
                parallelism: n["parallelism"]
                    .as_u64()
                    .ok_or_else(|| bad("a node without a parallelism"))?
                    as usize,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let parts = field("parts")?
        .as_array()
        .ok_or_else(|| bad("'parts' is not a list"))?
        .iter()
        .map(|p| {
            Ok(PartInfo {
                file: p["file"]
                    .as_str()
                    .ok_or_else(|| bad("a part without a file"))?
                    .into(),
                size_bytes: p["size"]
                    .as_u64()
                    .ok_or_else(|| bad("a part without a size"))?,
                crc: p["crc"]
                    .as_u64()
                    .ok_or_else(|| bad("a part without a crc"))? as u32,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Metadata {
        job: field("job")?.as_str().unwrap_or_default().to_string(),
        id: field("checkpoint")?
            .as_u64()
            .ok_or_else(|| bad("'checkpoint' is not a number"))?,
        savepoint: v["savepoint"].as_bool().unwrap_or(false),
        trigger_time_ms: v["trigger_time_ms"].as_i64().unwrap_or(0),
        nodes,
        parts,
        shared: v["shared"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A checkpoint read back: the state of every (node, subtask).
#[derive(Debug)]
pub struct Restored {
    /// Its metadata.
    pub metadata: Metadata,
    /// Its directory.
    pub path: PathBuf,
    states: HashMap<(usize, usize), Vec<u8>>,
    /// The keyed state of every subtask of a node.
    keyed: HashMap<usize, Vec<KeyedBlob>>,
}

impl Restored {
    /// What `node`'s subtask `subtask` wrote itself, if it wrote anything.
    pub fn state(&self, node: usize, subtask: usize) -> Option<&[u8]> {
        self.states.get(&(node, subtask)).map(|v| v.as_slice())
    }

    /// The keyed state of every subtask of `node`: a subtask of the restored job takes the
    /// key groups of its range from each.
    pub fn keyed(&self, node: usize) -> &[KeyedBlob] {
        self.keyed
            .get(&node)
            .map(|v| v.as_slice())
            .unwrap_or_default()
    }
}

/// Reads the complete checkpoint in `dir`, checking every part. Part files are named
/// `<node>-<subtask>.state` after the first node of their task.
pub fn load(dir: &Path) -> Result<Restored> {
    let metadata = read_metadata(dir)?;
    let mut states = HashMap::new();
    let mut keyed: HashMap<usize, Vec<KeyedBlob>> = HashMap::new();
    for part in &metadata.parts {
        let subtask = part
            .file
            .trim_end_matches(".state")
            .rsplit_once('-')
            .and_then(|(_, s)| s.parse::<usize>().ok())
            .ok_or_else(|| {
                SluiceError::Runtime(format!(
                    "{}: part '{}' has no subtask in its name",
                    dir.display(),
                    part.file
                ))
            })?;
        for s in read_part(&dir.join(&part.file), part)? {
            match read_manifest(&s.keyed, &part.file)? {
                Some(files) => {
                    // A full snapshot and the deltas after it, applied in this order.
                    let shared = dir.parent().map(shared_dir).unwrap_or_default();
                    for f in &files {
                        keyed
                            .entry(s.node)
                            .or_default()
                            .push(check_shared(&shared, f)?);
                    }
                }
                None if !s.keyed.is_empty() => keyed
                    .entry(s.node)
                    .or_default()
                    .push(KeyedBlob::Inline(s.keyed)),
                None => {}
            }
            states.insert((s.node, subtask), s.operator);
        }
    }
    Ok(Restored {
        metadata,
        path: dir.to_path_buf(),
        states,
        keyed,
    })
}

/// The checkpoint directories under `dir`, newest first, with their ids.
pub fn list(dir: &Path) -> Vec<(CheckpointId, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(id) = name
                .strip_prefix("chk-")
                .and_then(|s| s.parse::<CheckpointId>().ok())
            {
                out.push((id, e.path()));
            }
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    out
}

/// True if the checkpoint in `dir` was completed (its metadata is in place).
pub fn is_complete(dir: &Path) -> bool {
    dir.join(METADATA).is_file()
}

/// Deletes the checkpoints in `dir` but the newest `retained` complete ones (and anything
/// incomplete and older than the newest complete one).
pub fn prune(dir: &Path, retained: usize) {
    let mut kept = 0;
    for (_, path) in list(dir) {
        if kept < retained {
            if is_complete(&path) {
                kept += 1;
            }
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!("cannot delete old checkpoint {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(parts: Vec<PartInfo>) -> Metadata {
        Metadata {
            job: "j".into(),
            id: 3,
            savepoint: false,
            trigger_time_ms: 1,
            nodes: vec![NodeInfo {
                name: "Source".into(),
                parallelism: 1,
            }],
            parts,
            shared: vec![],
        }
    }

    #[test]
    fn shared_files_are_read_through_manifests_and_pruned_when_unlisted() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = shared_dir(tmp.path());
        let base = write_shared(&shared, "0-0-1.full", b"base").unwrap();
        let delta = write_shared(&shared, "0-0-2.delta", b"delta").unwrap();
        write_shared(&shared, "0-0-0.full", b"old").unwrap();
        let dir = checkpoint_dir(tmp.path(), 2);
        std::fs::create_dir_all(&dir).unwrap();
        let keyed = manifest_bytes(&[base.clone(), delta.clone()]);
        assert_eq!(
            read_manifest(&keyed, "t").unwrap().unwrap(),
            vec![base, delta]
        );
        assert!(read_manifest(b"inline state", "t").unwrap().is_none());
        let section = Section {
            node: 0,
            operator: vec![],
            keyed,
        };
        let part = write_part(&dir.join("0-0.state"), &[section]).unwrap();
        let mut m = metadata(vec![part]);
        m.shared = vec!["0-0-1.full".into(), "0-0-2.delta".into()];
        write_metadata(&dir, &m).unwrap();
        let r = load(&dir).unwrap();
        let read = |b: &KeyedBlob| {
            b.read_with(|r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                Ok(v)
            })
            .unwrap()
        };
        let blobs: Vec<_> = r.keyed(0).iter().map(read).collect();
        assert_eq!(blobs, vec![b"base".to_vec(), b"delta".to_vec()]);
        prune_shared(tmp.path());
        let mut left: Vec<String> = std::fs::read_dir(&shared)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec!["0-0-1.full", "0-0-2.delta"]);
        // A corrupt shared file is detected.
        std::fs::write(shared.join("0-0-2.delta"), b"DELTA").unwrap();
        assert!(load(&dir).unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn a_checkpoint_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = checkpoint_dir(tmp.path(), 3);
        std::fs::create_dir_all(&dir).unwrap();
        let section = |node: usize, operator: &[u8], keyed: &[u8]| Section {
            node,
            operator: operator.to_vec(),
            keyed: keyed.to_vec(),
        };
        let part = write_part(
            &dir.join("0-0.state"),
            &[section(0, b"abc", b""), section(1, b"", b"keyed")],
        )
        .unwrap();
        assert!(!is_complete(&dir));
        write_metadata(&dir, &metadata(vec![part])).unwrap();
        assert!(is_complete(&dir));
        let r = load(&dir).unwrap();
        assert_eq!(r.metadata.id, 3);
        assert_eq!(r.state(0, 0).unwrap(), b"abc");
        assert_eq!(r.state(1, 0).unwrap(), b"");
        assert!(r.state(0, 1).is_none());
        assert!(r.keyed(0).is_empty());
        assert_eq!(r.keyed(1), &[KeyedBlob::Inline(b"keyed".to_vec())]);
    }

    #[test]
    fn truncated_or_altered_parts_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = checkpoint_dir(tmp.path(), 3);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0-0.state");
        let section = Section {
            node: 0,
            operator: vec![7; 100],
            keyed: vec![],
        };
        let part = write_part(&path, &[section]).unwrap();
        write_metadata(&dir, &metadata(vec![part])).unwrap();
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = good.clone();
        bad[30] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn prune_keeps_the_newest_complete_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        for id in 1..=4 {
            let dir = checkpoint_dir(tmp.path(), id);
            std::fs::create_dir_all(&dir).unwrap();
            if id != 4 {
                write_metadata(&dir, &metadata(vec![])).unwrap();
            }
        }
        prune(tmp.path(), 2);
        let ids: Vec<u64> = list(tmp.path()).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![4, 3, 2]);
    }
}
