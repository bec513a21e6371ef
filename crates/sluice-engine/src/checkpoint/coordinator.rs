//! The checkpoint coordinator: triggers checkpoints on the interval (or a savepoint when the
//! user stops the job with one), collects the tasks' acknowledgements, completes a checkpoint
//! when every subtask has acknowledged it, abandons one that takes longer than the timeout,
//! keeps the newest `num-retained` and records the history.

use super::storage::{self, Metadata, NodeInfo, PartInfo, Section};
use super::{
    CheckpointConfig, CheckpointShared, CheckpointStats, OperatorCheckpointStats, SavepointStatus,
};
use crate::job::JobHandle;
use crate::task_metrics::names;
use sluice_common::CheckpointId;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a task subtask tells the coordinator.
#[derive(Debug)]
pub(crate) enum TaskEvent {
    /// The subtask wrote its part of checkpoint `id`.
    Ack {
        id: CheckpointId,
        subtask: SubtaskKey,
        part: PartInfo,
        /// Per node of the task: the bytes of state, and the bytes this checkpoint wrote
        /// (less with incremental checkpoints).
        sizes: Vec<(usize, u64, u64)>,
        /// The files of `shared/` the part lists.
        shared: Vec<String>,
        /// The synchronous part (at the barrier, on the task thread) in ms.
        sync_ms: u64,
        /// The asynchronous part (writing the part file, on the writer thread) in ms.
        async_ms: u64,
    },
    /// The subtask could not take checkpoint `id`.
    Declined { id: CheckpointId, reason: String },
    /// The subtask has finished; this is its final state, for the checkpoints that follow.
    Finished {
        subtask: SubtaskKey,
        sections: Vec<Section>,
    },
    /// The subtask's state could not be taken at all: the job stops.
    Failed { reason: String },
}

/// A task subtask: the first node of its task and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SubtaskKey {
    pub node: usize,
    pub subtask: usize,
}

impl SubtaskKey {
    /// The name of its part file in a checkpoint.
    pub fn file_name(&self) -> String {
        format!("{}-{}.state", self.node, self.subtask)
    }
}

/// A subtask's acknowledgement.
struct AckInfo {
    part: PartInfo,
    /// State bytes and bytes written, per node.
    sizes: Vec<(usize, u64, u64)>,
    shared: Vec<String>,
    /// From trigger to acknowledgement.
    ack_ms: u64,
    sync_ms: u64,
    async_ms: u64,
}

struct Pending {
    id: CheckpointId,
    savepoint: bool,
    /// A savepoint the job stops after.
    stop: bool,
    dir: PathBuf,
    triggered: Instant,
    trigger_time_ms: i64,
    acks: HashMap<SubtaskKey, AckInfo>,
}

pub(crate) struct Coordinator {
    pub config: CheckpointConfig,
    pub shared: Arc<CheckpointShared>,
    pub handle: JobHandle,
    pub events: Receiver<TaskEvent>,
    pub job: String,
    pub nodes: Vec<NodeInfo>,
    /// Every task subtask of the job.
    pub subtasks: Vec<SubtaskKey>,
    /// Subtasks that finished before the job started (nothing to read), with their state.
    pub finished: BTreeMap<SubtaskKey, Vec<Section>>,
    /// The id the next checkpoint gets.
    pub next_id: CheckpointId,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Coordinator {
    /// Runs until every subtask has finished or the job is cancelled; savepoints asked for
    /// and not taken by then fail.
    pub fn run(mut self) {
        self.run_until_the_end();
        self.shared.update_savepoints(
            None,
            |s| !s.is_final(),
            SavepointStatus::Failed("the job ended before the savepoint was taken".into()),
        );
    }

    fn run_until_the_end(&mut self) {
        let mut pending: Option<Pending> = None;
        let mut last_done = Instant::now();
        let mut next_trigger = self.config.interval.map(|i| Instant::now() + i);
        loop {
            if self.finished.len() == self.subtasks.len() {
                if self.config.enabled() && !self.handle.is_cancelled() {
                    self.final_checkpoint(pending.take());
                }
                return;
            }
            let stopping = pending.as_ref().is_some_and(|p| p.stop);
            if self.handle.is_cancelled() && !stopping {
                return;
            }
            if pending.is_none() {
                let periodic_due = next_trigger.is_some_and(|t| Instant::now() >= t)
                    && last_done.elapsed() >= self.config.min_pause;
                // Savepoints asked for wait for the checkpoint in flight; all those waiting
                // are served by one.
                let savepoint = self.shared.next_savepoint();
                if savepoint.is_some() || periodic_due {
                    pending = self.trigger(savepoint);
                    if let Some(i) = self.config.interval {
                        next_trigger = Some(Instant::now() + i);
                    }
                }
            }
            match self.events.recv_timeout(Duration::from_millis(5)) {
                Ok(TaskEvent::Ack {
                    id,
                    subtask,
                    part,
                    sizes,
                    shared,
                    sync_ms,
                    async_ms,
                }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        let ack_ms = p.triggered.elapsed().as_millis() as u64;
                        p.acks.insert(
                            subtask,
                            AckInfo {
                                part,
                                sizes,
                                shared,
                                ack_ms,
                                sync_ms,
                                async_ms,
                            },
                        );
                    }
                }
                Ok(TaskEvent::Failed { reason }) => {
                    tracing::error!("the job stops: {reason}");
                    eprintln!("error: {reason}");
                    self.handle.cancel_run();
                    return;
                }
                Ok(TaskEvent::Declined { id, reason }) => {
                    if let Some(p) = pending.take_if(|p| p.id == id) {
                        self.fail(p, &reason);
                        last_done = Instant::now();
                    }
                }
                Ok(TaskEvent::Finished { subtask, sections }) => {
                    self.finished.insert(subtask, sections);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let Some(p) = pending.as_ref() else { continue };
            let all_in = self
                .subtasks
                .iter()
                .all(|s| p.acks.contains_key(s) || self.finished.contains_key(s));
            if all_in && self.handle.is_cancelled() && !p.stop {
                // Stopped meanwhile: the tasks may be gone before they could commit it.
                return;
            }
            if all_in {
                if let Some(p) = pending.take() {
                    let stop = p.stop;
                    // (A failure is recorded and logged.)
                    let _ = self.complete(p);
                    last_done = Instant::now();
                    if stop {
                        self.handle.cancel();
                    }
                }
            } else if p.triggered.elapsed() >= self.config.timeout {
                if let Some(p) = pending.take() {
                    let reason = format!(
                        "it did not complete within execution.checkpointing.timeout ({} ms)",
                        self.config.timeout.as_millis()
                    );
                    self.fail(p, &reason);
                    last_done = Instant::now();
                }
            }
        }
    }

    /// Every subtask has finished: completes the checkpoint in flight (all its parts are in)
    /// and takes the final one, made of every subtask's final state, which the subtasks wait
    /// for before their sinks commit what the end of the input left.
    /// If it cannot be written, the job is cancelled: the subtasks then close without
    /// committing, and the next run restores the latest checkpoint.
    fn final_checkpoint(&mut self, in_flight: Option<Pending>) {
        if let Some(p) = in_flight {
            let _ = self.complete(p);
        }
        let result = match self.trigger(None) {
            Some(p) => self.complete(p),
            None => Err(sluice_common::SluiceError::Runtime(
                "its directory could not be created".into(),
            )),
        };
        if let Err(e) = result {
            tracing::error!(
                "the final checkpoint failed: {e}; stopping without committing the last output"
            );
            eprintln!("error: the final checkpoint failed: {e}; run the job again to finish it");
            self.handle.cancel();
        }
    }

    /// Triggers the next checkpoint, or the savepoint `savepoint` says (its directory, if not
    /// the configured one, and whether the job stops after it).
    fn trigger(&mut self, savepoint: Option<(Option<PathBuf>, bool)>) -> Option<Pending> {
        let id = self.next_id;
        self.next_id += 1;
        let stop = savepoint.as_ref().is_some_and(|s| s.1);
        let target = savepoint.as_ref().map(|s| s.0.clone());
        let dir = if let Some(target) = &target {
            target
                .as_ref()
                .unwrap_or(&self.config.savepoint_dir)
                .join(format!("savepoint-{id}"))
        } else {
            storage::checkpoint_dir(&self.config.dir, id)
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("checkpoint {id}: cannot create {}: {e}", dir.display());
            if target.is_some() {
                self.shared.update_savepoints(
                    target.as_ref(),
                    |s| *s == SavepointStatus::Waiting,
                    SavepointStatus::Failed(format!("cannot create {}: {e}", dir.display())),
                );
            }
            return None;
        }
        if let Ok(mut d) = self.shared.pending_dir.lock() {
            *d = Some((id, dir.clone()));
        }
        let savepoint = target.is_some();
        if savepoint {
            self.shared.savepoint_in_flight.store(id, Ordering::SeqCst);
            self.shared.update_savepoints(
                target.as_ref(),
                |s| *s == SavepointStatus::Waiting,
                SavepointStatus::InProgress(id),
            );
        }
        if stop {
            self.shared.stop_after.store(id, Ordering::SeqCst);
        }
        self.shared.triggered.store(id, Ordering::SeqCst);
        tracing::debug!(id, savepoint, "checkpoint triggered");
        Some(Pending {
            id,
            savepoint,
            stop,
            dir,
            triggered: Instant::now(),
            trigger_time_ms: now_ms(),
            acks: HashMap::new(),
        })
    }

    fn fail(&self, p: Pending, reason: &str) {
        tracing::warn!("checkpoint {} abandoned: {reason}", p.id);
        let _ = std::fs::remove_dir_all(&p.dir);
        if p.savepoint {
            self.shared.update_savepoints(
                None,
                |s| *s == SavepointStatus::InProgress(p.id),
                SavepointStatus::Failed(reason.to_string()),
            );
        }
        if p.stop {
            // Sources stopped for it: the job cannot go on without it, and stops.
            tracing::error!("the savepoint failed; stopping without one");
            self.handle.cancel();
        }
        self.record(CheckpointStats {
            id: p.id,
            savepoint: p.savepoint,
            trigger_time_ms: p.trigger_time_ms,
            duration_ms: p.triggered.elapsed().as_millis() as u64,
            sync_ms: 0,
            async_ms: 0,
            size_bytes: 0,
            checkpointed_size_bytes: 0,
            status: format!("Failed: {reason}"),
            operators: Vec::new(),
            path: p.dir,
        });
        self.count("checkpoints failed", 1);
        metrics::counter!(names::CHECKPOINTS_FAILED, "job" => self.job.clone()).increment(1);
    }

    /// Adds a checkpoint to the history and rewrites the history file.
    fn record(&self, stats: CheckpointStats) {
        self.shared.record(stats);
        if let Err(e) = super::write_history(&self.config.dir, &self.shared.history()) {
            tracing::warn!(
                "cannot write {}: {e}",
                self.config.dir.join(super::HISTORY_FILE).display()
            );
        }
    }

    fn count(&self, name: &str, n: u64) {
        self.handle
            .metrics
            .counter(name)
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Completes `p` once every part is in; if it cannot be written, it fails.
    fn complete(&mut self, p: Pending) -> sluice_common::Result<()> {
        let mut p = p;
        let result = self.write_completed(&mut p);
        if let Err(e) = &result {
            self.fail(p, &e.to_string());
        }
        result
    }

    fn write_completed(&mut self, p: &mut Pending) -> sluice_common::Result<()> {
        let mut parts = Vec::new();
        let mut shared = Vec::new();
        // Per node: state bytes, bytes written, and the longest ack, sync and async times
        // of its subtasks.
        let mut per_node: BTreeMap<usize, [u64; 5]> = BTreeMap::new();
        for s in &self.subtasks {
            if let Some(ack) = p.acks.remove(s) {
                for (node, size, written) in ack.sizes {
                    let e = per_node.entry(node).or_default();
                    e[0] += size;
                    e[4] += written;
                    e[1] = e[1].max(ack.ack_ms);
                    e[2] = e[2].max(ack.sync_ms);
                    e[3] = e[3].max(ack.async_ms);
                }
                parts.push(ack.part);
                shared.extend(ack.shared);
            } else if let Some(sections) = self.finished.get(s) {
                for section in sections {
                    let e = per_node.entry(section.node).or_default();
                    e[0] += section.size_bytes();
                    e[4] += section.size_bytes();
                    // Its keyed state may be in shared files, which this checkpoint uses.
                    if let Ok(Some(files)) = storage::read_manifest(&section.keyed, "final state") {
                        e[0] += files.iter().map(|f| f.size_bytes).sum::<u64>();
                        shared.extend(files.into_iter().map(|f| f.name));
                    }
                }
                parts.push(storage::write_part(&p.dir.join(s.file_name()), sections)?);
            }
        }
        let written: u64 = per_node.values().map(|e| e[4]).sum();
        let sync_ms = per_node.values().map(|e| e[2]).max().unwrap_or(0);
        let async_ms = per_node.values().map(|e| e[3]).max().unwrap_or(0);
        let size: u64 = per_node
            .values()
            .map(|e| e[0])
            .sum::<u64>()
            .max(parts.iter().map(|x| x.size_bytes).sum());
        storage::write_metadata(
            &p.dir,
            &Metadata {
                job: self.job.clone(),
                id: p.id,
                savepoint: p.savepoint,
                trigger_time_ms: p.trigger_time_ms,
                nodes: self.nodes.clone(),
                parts,
                shared,
            },
        )?;
        // Sinks commit what they pre-committed up to a complete checkpoint, and up to a stop's
        // savepoint; not up to a savepoint the job goes on after (as Flink: such a savepoint
        // commits no side effects; the next checkpoint commits them).
        if !p.savepoint || p.stop {
            self.shared.completed.store(p.id, Ordering::SeqCst);
        }
        let duration_ms = p.triggered.elapsed().as_millis() as u64;
        if p.savepoint {
            self.shared.update_savepoints(
                None,
                |s| *s == SavepointStatus::InProgress(p.id),
                SavepointStatus::Completed(p.dir.clone()),
            );
        }
        if p.stop {
            if let Ok(mut s) = self.shared.savepoint_path.lock() {
                *s = Some(p.dir.clone());
            }
        } else if !p.savepoint {
            storage::prune(&self.config.dir, self.config.num_retained.max(1));
            storage::prune_shared(&self.config.dir);
        }
        tracing::info!(
            id = p.id,
            duration_ms,
            size_bytes = size,
            "checkpoint complete: {}",
            p.dir.display()
        );
        self.count("checkpoints completed", 1);
        let job = [("job", self.job.clone())];
        metrics::counter!(names::CHECKPOINTS_COMPLETED, &job).increment(1);
        metrics::gauge!(names::CHECKPOINT_DURATION, &job).set(duration_ms as f64);
        metrics::gauge!(names::CHECKPOINT_SIZE, &job).set(size as f64);
        for (name, value) in [
            ("last checkpoint duration (ms)", duration_ms),
            ("last checkpoint size (bytes)", size),
            ("last checkpoint bytes written", written),
            ("last checkpoint sync part (ms)", sync_ms),
            ("last checkpoint async part (ms)", async_ms),
        ] {
            self.handle
                .metrics
                .counter(name)
                .store(value, Ordering::Relaxed);
        }
        self.record(CheckpointStats {
            id: p.id,
            savepoint: p.savepoint,
            trigger_time_ms: p.trigger_time_ms,
            duration_ms,
            sync_ms,
            async_ms,
            size_bytes: size,
            checkpointed_size_bytes: written,
            status: "Completed".into(),
            operators: per_node
                .into_iter()
                .map(
                    |(node, [size_bytes, ack_ms, sync_ms, async_ms, _])| OperatorCheckpointStats {
                        node,
                        name: self
                            .nodes
                            .get(node)
                            .map(|n| n.name.clone())
                            .unwrap_or_default(),
                        size_bytes,
                        ack_ms,
                        sync_ms,
                        async_ms,
                    },
                )
                .collect(),
            path: p.dir.clone(),
        });
        Ok(())
    }
}
