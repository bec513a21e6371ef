//! The asynchronous part of a checkpoint: each task subtask has a writer thread that turns
//! the snapshot taken at the barrier (operator bytes and O(1) views of keyed state) into a
//! part file, fsyncs it and acknowledges it to the coordinator, while the task goes on with
//! the records after the barrier.
//!
//! The writer is the only one to speak to the coordinator for its subtask, so that the
//! subtask's final state (when its input ends) never overtakes an acknowledgement still
//! being written. It takes one job at a time, with one more queued: a task that reaches the
//! next barrier while two checkpoints are still being written waits (a bound, not a buffer).

use super::coordinator::{SubtaskKey, TaskEvent};
use super::storage::{self, Section};
use crate::keyed::KeyedSnapshot;
use sluice_common::{CheckpointId, Result, SluiceError};
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

enum Job {
    Checkpoint {
        id: CheckpointId,
        /// Where the part goes; `None` if the checkpoint was abandoned before the barrier.
        dir: Option<PathBuf>,
        sections: Vec<TakenSection>,
        sync_ms: u64,
    },
    Finished(Vec<TakenSection>),
}

/// A subtask's writer thread.
pub(crate) struct SnapshotWriter {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts the writer of `subtask`, which reports to the coordinator through `events`.
    pub fn start(subtask: SubtaskKey, events: Sender<TaskEvent>) -> Result<Self> {
        let (tx, rx) = sync_channel::<Job>(1);
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
                            sections,
                            sync_ms,
                        } => write(subtask, id, dir, sections, sync_ms),
                        Job::Finished(sections) => match finish_all(sections) {
                            Ok(sections) => TaskEvent::Finished { subtask, sections },
                            Err(e) => TaskEvent::Failed {
                                reason: format!("the final state could not be written: {e}"),
                            },
                        },
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
        sections: Vec<TakenSection>,
        sync_ms: u64,
    ) -> Result<()> {
        self.send(Job::Checkpoint {
            id,
            dir,
            sections,
            sync_ms,
        })
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

fn write(
    subtask: SubtaskKey,
    id: CheckpointId,
    dir: Option<PathBuf>,
    sections: Vec<TakenSection>,
    sync_ms: u64,
) -> TaskEvent {
    let Some(dir) = dir else {
        return TaskEvent::Declined {
            id,
            reason: "it was abandoned".into(),
        };
    };
    let started = Instant::now();
    let result = finish_all(sections).and_then(|sections| {
        let part = storage::write_part(&dir.join(subtask.file_name()), &sections)?;
        Ok((part, sections))
    });
    match result {
        Ok((part, sections)) => TaskEvent::Ack {
            id,
            subtask,
            part,
            sizes: sections.iter().map(|s| (s.node, s.size_bytes())).collect(),
            sync_ms,
            async_ms: started.elapsed().as_millis() as u64,
        },
        Err(e) => TaskEvent::Declined {
            id,
            reason: e.to_string(),
        },
    }
}
