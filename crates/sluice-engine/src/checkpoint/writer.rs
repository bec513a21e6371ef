//! The asynchronous part of a checkpoint: each task subtask has a writer thread that turns
//! the snapshot taken at the barrier (operator bytes and O(1) views of keyed state) into a
//! part file, fsyncs it and acknowledges it to the coordinator, while the task goes on with
//! the records after the barrier.
//!
//! With `shared` set (incremental checkpoints, or the disk backend), the keyed state of a
//! checkpoint goes to a file of its own in the shared directory, streamed a key group at a
//! time: the delta since the latest complete checkpoint when the snapshot has one and the
//! chain it builds on is short, else a full snapshot; the part file holds the manifest (the
//! chain's files). Savepoints are always inline and full.
//!
//! The writer is the only one to speak to the coordinator for its subtask, so that the
//! subtask's final state (when its input ends) never overtakes an acknowledgement still
//! being written. It takes one job at a time, with one more queued: a task that reaches the
//! next barrier while two checkpoints are still being written waits (a bound, not a buffer).

use super::coordinator::{SubtaskKey, TaskEvent};
use super::storage::{self, Section, SharedFile};
use crate::keyed::KeyedSnapshot;
use sluice_common::{CheckpointId, Result, SluiceError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

/// The state of one node of a subtask as taken at the barrier.
pub(crate) struct TakenSection {
    pub node: usize,
    pub operator: Vec<u8>,
    pub keyed: Option<KeyedSnapshot>,
}

impl TakenSection {
    /// Writes the keyed snapshot out (the asynchronous part).
    pub fn finish(self) -> Result<Section> {
        Ok(Section {
            node: self.node,
            operator: self.operator,
            keyed: match self.keyed {
                Some(k) => k.write()?,
                None => Vec::new(),
            },
        })
    }
}

/// Writes all of `sections` out.
pub(crate) fn finish_all(sections: Vec<TakenSection>) -> Result<Vec<Section>> {
    sections.into_iter().map(TakenSection::finish).collect()
}

/// The longest chain of deltas after a full snapshot; the next checkpoint writes a full one.
const MAX_DELTAS: usize = 20;

/// The most checkpoints whose manifests a writer remembers (a delta builds on the latest
/// complete one, which is among the last few).
const MANIFESTS_KEPT: usize = 8;

enum Job {
    Checkpoint {
        id: CheckpointId,
        /// Where the part goes; `None` if the checkpoint was abandoned before the barrier.
        dir: Option<PathBuf>,
        savepoint: bool,
        sections: Vec<TakenSection>,
        sync_ms: u64,
    },
    Finished(Vec<TakenSection>),
    /// The subtask declines checkpoint `id`.
    Decline {
        id: CheckpointId,
        reason: String,
    },
}

/// The writer's own state: what it needs to write deltas.
struct Incremental {
    shared: PathBuf,
    /// The keyed-state files of each node, per checkpoint this writer wrote.
    manifests: BTreeMap<CheckpointId, HashMap<usize, Vec<SharedFile>>>,
}

/// What the writer wrote of one section.
struct Written {
    section: Section,
    /// The bytes of state the section stands for (inline or in its shared files).
    state_bytes: u64,
    /// The bytes this checkpoint wrote for it.
    written_bytes: u64,
    /// The shared files it lists.
    shared: Vec<String>,
}

/// A subtask's writer thread.
pub(crate) struct SnapshotWriter {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts the writer of `subtask`, which reports to the coordinator through `events`;
    /// with `shared`, its checkpoints are incremental and their keyed state goes there.
    pub fn start(
        subtask: SubtaskKey,
        events: Sender<TaskEvent>,
        shared: Option<PathBuf>,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel::<Job>(1);
        let mut incremental = shared.map(|shared| Incremental {
            shared,
            manifests: BTreeMap::new(),
        });
        let thread = std::thread::Builder::new()
            .name(format!(
                "checkpoint writer {}-{}",
                subtask.node, subtask.subtask
            ))
            .spawn(move || {
                for job in rx {
                    let event = match job {
                        Job::Checkpoint {
                            id,
                            dir,
                            savepoint,
                            sections,
                            sync_ms,
                        } => {
                            let inc = incremental.as_mut().filter(|_| !savepoint);
                            write(subtask, id, dir, sections, sync_ms, inc)
                        }
                        Job::Decline { id, reason } => TaskEvent::Declined { id, reason },
                        Job::Finished(sections) => {
                            match write_final(subtask, sections, incremental.as_ref()) {
                                Ok(sections) => TaskEvent::Finished { subtask, sections },
                                Err(e) => TaskEvent::Failed {
                                    reason: format!("the final state could not be written: {e}"),
                                },
                            }
                        }
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| SluiceError::io("starting a checkpoint writer", e))?;
        Ok(SnapshotWriter {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or(SluiceError::Cancelled)?
            .send(job)
            .map_err(|_| SluiceError::Cancelled)
    }

    /// Hands the snapshot of checkpoint `id` over, to be written to `dir`.
    pub fn checkpoint(
        &self,
        id: CheckpointId,
        dir: Option<PathBuf>,
        savepoint: bool,
        sections: Vec<TakenSection>,
        sync_ms: u64,
    ) -> Result<()> {
        self.send(Job::Checkpoint {
            id,
            dir,
            savepoint,
            sections,
            sync_ms,
        })
    }

    /// Declines checkpoint `id` for `reason` (in order with the checkpoints before it).
    pub fn decline(&self, id: CheckpointId, reason: String) -> Result<()> {
        self.send(Job::Decline { id, reason })
    }

    /// Hands the subtask's final state over.
    pub fn finished(&self, sections: Vec<TakenSection>) -> Result<()> {
        self.send(Job::Finished(sections))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Let it write what it has, then stop.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The subtask's final state, for the checkpoints taken after it finished: with shared
/// files, each keyed state is streamed to a full snapshot file of its own (the final
/// checkpoint's id is not known yet, so the name carries the time); else inline.
fn write_final(
    subtask: SubtaskKey,
    sections: Vec<TakenSection>,
    inc: Option<&Incremental>,
) -> Result<Vec<Section>> {
    let Some(inc) = inc else {
        return finish_all(sections);
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    sections
        .into_iter()
        .map(|t| {
            let Some(snapshot) = t.keyed.as_ref() else {
                return t.finish();
            };
            let name = format!(
                "{}-{}{}{nanos}.full",
                t.node,
                subtask.subtask,
                storage::FINAL_MARK
            );
            let file = storage::write_shared_with(&inc.shared, &name, |out| {
                snapshot.write_into(false, out)
            })?;
            Ok(Section {
                node: t.node,
                keyed: storage::manifest_bytes(&file.into_iter().collect::<Vec<_>>()),
                operator: t.operator,
            })
        })
        .collect()
}

/// Writes one section of checkpoint `id`: inline, or (incremental) as a file in the shared
/// directory, a delta when it can build on the manifest of its parent checkpoint.
fn write_section(
    subtask: SubtaskKey,
    id: CheckpointId,
    taken: TakenSection,
    inc: Option<&mut Incremental>,
) -> Result<Written> {
    let operator = taken.operator;
    let (Some(inc), Some(snapshot)) = (inc, taken.keyed.as_ref()) else {
        let section = TakenSection {
            node: taken.node,
            operator,
            keyed: taken.keyed,
        }
        .finish()?;
        let bytes = section.size_bytes();
        return Ok(Written {
            section,
            state_bytes: bytes,
            written_bytes: bytes,
            shared: Vec::new(),
        });
    };
    let node = taken.node;
    let parent = snapshot
        .delta
        .as_ref()
        .and_then(|d| inc.manifests.get(&d.parent))
        .and_then(|m| m.get(&node))
        .filter(|files| {
            // A chain no longer than MAX_DELTAS, and its deltas at most twice its base (a
            // restore reads at most three times the state).
            let base = files.first().map(|f| f.size_bytes).unwrap_or(0);
            let deltas: u64 = files.iter().skip(1).map(|f| f.size_bytes).sum();
            !files.is_empty() && files.len() <= MAX_DELTAS && deltas <= 2 * base
        })
        .cloned();
    let stem = format!("{node}-{}-{id}", subtask.subtask);
    // Written straight to the file, a key group at a time.
    let delta = match parent {
        Some(_) => storage::write_shared_with(&inc.shared, &format!("{stem}.delta"), |out| {
            snapshot.write_into(true, out)
        })?,
        None => None,
    };
    let files = match (parent, delta) {
        (Some(mut files), Some(delta)) => {
            files.push(delta);
            files
        }
        _ => {
            let full = storage::write_shared_with(&inc.shared, &format!("{stem}.full"), |out| {
                snapshot.write_into(false, out)
            })?;
            full.into_iter().collect()
        }
    };
    if let Some(parent) = snapshot.delta.as_ref().map(|d| d.parent) {
        // Later deltas build on `parent` or a later checkpoint.
        inc.manifests.retain(|&c, _| c >= parent);
    }
    while inc.manifests.len() >= MANIFESTS_KEPT {
        inc.manifests.pop_first();
    }
    inc.manifests
        .entry(id)
        .or_default()
        .insert(node, files.clone());
    let keyed = storage::manifest_bytes(&files);
    let written = files.last().map(|f| f.size_bytes).unwrap_or(0);
    Ok(Written {
        state_bytes: (operator.len() + keyed.len()) as u64
            + files.iter().map(|f| f.size_bytes).sum::<u64>(),
        written_bytes: (operator.len() + keyed.len()) as u64 + written,
        shared: files.into_iter().map(|f| f.name).collect(),
        section: Section {
            node,
            operator,
            keyed,
        },
    })
}

fn write(
    subtask: SubtaskKey,
    id: CheckpointId,
    dir: Option<PathBuf>,
    sections: Vec<TakenSection>,
    sync_ms: u64,
    mut inc: Option<&mut Incremental>,
) -> TaskEvent {
    let Some(dir) = dir else {
        return TaskEvent::Declined {
            id,
            reason: "it was abandoned".into(),
        };
    };
    let started = Instant::now();
    let result = sections
        .into_iter()
        .map(|t| write_section(subtask, id, t, inc.as_deref_mut()))
        .collect::<Result<Vec<_>>>()
        .and_then(|written| {
            let sections: Vec<Section> = written.iter().map(|w| w.section.clone()).collect();
            let part = storage::write_part(&dir.join(subtask.file_name()), &sections)?;
            Ok((part, written))
        });
    match result {
        Ok((part, written)) => TaskEvent::Ack {
            id,
            subtask,
            part,
            sizes: written
                .iter()
                .map(|w| (w.section.node, w.state_bytes, w.written_bytes))
                .collect(),
            shared: written.into_iter().flat_map(|w| w.shared).collect(),
            sync_ms,
            async_ms: started.elapsed().as_millis() as u64,
        },
        Err(e) => TaskEvent::Declined {
            id,
            reason: e.to_string(),
        },
    }
}
