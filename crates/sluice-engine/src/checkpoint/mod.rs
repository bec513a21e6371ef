//! Checkpoints: aligned barriers, as Flink's asynchronous barrier snapshotting.
//!
//! The coordinator ([`coordinator`]) asks every source subtask to take checkpoint `n`. A
//! source writes its position and sends `Barrier(n)` down its chain; an operator with several
//! input channels waits until the barrier has come on every one (alignment), then every
//! operator of the task snapshots its state as the barrier passes it, the task writes one
//! file and acknowledges. When every subtask has acknowledged, the coordinator writes the
//! checkpoint's metadata and renames it into place ([`storage`]): only then is the checkpoint
//! complete, and only then are sinks told to commit what they pre-committed at the barrier
//! (two-phase commit).

pub mod coordinator;
pub mod storage;
pub(crate) mod writer;

use sluice_common::CheckpointId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How a job takes checkpoints (`execution.checkpointing.*`, `state.checkpoints.*`).
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// `execution.checkpointing.interval`: `None` disables periodic checkpoints.
    pub interval: Option<Duration>,
    /// `execution.checkpointing.timeout`: a checkpoint not complete by then is abandoned.
    pub timeout: Duration,
    /// `execution.checkpointing.min-pause`: the least time between the end of one checkpoint
    /// and the start of the next.
    pub min_pause: Duration,
    /// `state.checkpoints.dir`: where this job's checkpoints are kept (`chk-<id>/`).
    pub dir: PathBuf,
    /// `state.checkpoints.num-retained`: complete checkpoints kept.
    pub num_retained: usize,
    /// `execution.checkpointing.savepoint-dir`: where a stop with savepoint writes.
    pub savepoint_dir: PathBuf,
}

impl CheckpointConfig {
    /// Flink's defaults, with the checkpoints under `job_dir`.
    pub fn new(job_dir: &std::path::Path) -> Self {
        CheckpointConfig {
            interval: None,
            timeout: Duration::from_secs(600),
            min_pause: Duration::ZERO,
            dir: job_dir.join("checkpoints"),
            num_retained: 1,
            savepoint_dir: job_dir.join("savepoints"),
        }
    }

    /// True if periodic checkpoints are on (sinks then commit only on checkpoints).
    pub fn enabled(&self) -> bool {
        self.interval.is_some()
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig::new(std::path::Path::new("sluice-data/jobs/sluice-job"))
    }
}

/// Where a job starts from.
#[derive(Debug, Clone, Default)]
pub enum RestoreMode {
    /// From its latest complete checkpoint, if it has one.
    #[default]
    Latest,
    /// From this savepoint (or checkpoint) directory.
    Savepoint(PathBuf),
}

/// One checkpoint as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct CheckpointStats {
    /// Its id.
    pub id: CheckpointId,
    /// True for a savepoint.
    pub savepoint: bool,
    /// When it was triggered, in milliseconds since the epoch.
    pub trigger_time_ms: i64,
    /// From trigger to complete (or to abandoned).
    pub duration_ms: u64,
    /// The longest synchronous part of a subtask (taking the snapshot at the barrier, while
    /// the task waits).
    pub sync_ms: u64,
    /// The longest asynchronous part of a subtask (writing it, while the task goes on).
    pub async_ms: u64,
    /// The bytes of state it holds (Flink's `state_size`).
    pub size_bytes: u64,
    /// The bytes it wrote (Flink's `checkpointed_size`): less than `size_bytes` when it is
    /// incremental and shares files with the checkpoints before it.
    pub checkpointed_size_bytes: u64,
    /// `Completed`, or why it failed.
    pub status: String,
    /// Per operator (node): its name, the state bytes of all its subtasks, and the longest
    /// time a subtask of it took from trigger to acknowledge.
    pub operators: Vec<OperatorCheckpointStats>,
    /// Where it is kept.
    pub path: PathBuf,
}

/// One operator's part of a checkpoint.
#[derive(Debug, Clone)]
pub struct OperatorCheckpointStats {
    /// The node's index in the job graph.
    pub node: usize,
    /// The operator's name.
    pub name: String,
    /// The state bytes of all its subtasks.
    pub size_bytes: u64,
    /// The longest time a subtask took from trigger to acknowledge.
    pub ack_ms: u64,
    /// The longest synchronous part of a subtask.
    pub sync_ms: u64,
    /// The longest asynchronous part of a subtask.
    pub async_ms: u64,
}

/// The most checkpoints kept in the history.
pub const HISTORY_LIMIT: usize = 100;

/// The file in a job's checkpoint directory that holds its recent checkpoints, for a
/// dashboard or a person (rewritten after every checkpoint).
pub const HISTORY_FILE: &str = "history.json";

impl CheckpointStats {
    /// The checkpoint as JSON, with Flink's REST names where they exist.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "is_savepoint": self.savepoint,
            "trigger_timestamp": self.trigger_time_ms,
            "end_to_end_duration": self.duration_ms,
            "sync_duration": self.sync_ms,
            "async_duration": self.async_ms,
            "state_size": self.size_bytes,
            "checkpointed_size": self.checkpointed_size_bytes,
            "status": self.status,
            "external_path": self.path.display().to_string(),
            "operators": self.operators.iter().map(|o| serde_json::json!({
                "node": o.node,
                "name": o.name,
                "state_size": o.size_bytes,
                "ack_duration": o.ack_ms,
                "sync_duration": o.sync_ms,
                "async_duration": o.async_ms,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Writes `history` as JSON (an array, oldest first) to `dir/history.json`, through a
/// temporary file so a reader never sees half of it.
pub fn write_history(dir: &std::path::Path, history: &[CheckpointStats]) -> std::io::Result<()> {
    let json = serde_json::Value::Array(history.iter().map(CheckpointStats::to_json).collect());
    let path = dir.join(HISTORY_FILE);
    let tmp = dir.join(format!(".{HISTORY_FILE}.tmp"));
    std::fs::create_dir_all(dir)?;
    std::fs::write(&tmp, format!("{json:#}\n"))?;
    std::fs::rename(&tmp, &path)
}

/// The state shared between the coordinator and the tasks of one job.
#[derive(Debug, Default)]
pub struct CheckpointShared {
    /// The latest checkpoint triggered; a source injects its barrier once.
    pub(crate) triggered: AtomicU64,
    /// When set, sources stop reading after injecting this checkpoint's barrier (a stop with
    /// savepoint).
    pub(crate) stop_after: AtomicU64,
    /// The latest complete checkpoint: sinks commit what they pre-committed up to it.
    pub(crate) completed: AtomicU64,
    /// The checkpoint being taken and the directory its parts go to.
    pub(crate) pending_dir: Mutex<Option<(CheckpointId, PathBuf)>>,
    /// The checkpoint in flight that is a savepoint (0: none): its parts are whole, never
    /// incremental.
    pub(crate) savepoint_in_flight: AtomicU64,
    /// The savepoints asked for, by request number - 1.
    pub(crate) savepoint_requests: Mutex<Vec<SavepointRequest>>,
    /// Where the stop's savepoint went, once complete.
    pub(crate) savepoint_path: Mutex<Option<PathBuf>>,
    /// Recent checkpoints, oldest first, at most [`HISTORY_LIMIT`].
    pub(crate) history: Mutex<Vec<CheckpointStats>>,
}

/// A savepoint asked for: taken while the job goes on (Flink's trigger savepoint) or before it
/// stops (stop with savepoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavepointRequest {
    pub stop: bool,
    /// Where it goes (`None`: `execution.checkpointing.savepoint-dir`).
    pub dir: Option<PathBuf>,
    pub status: SavepointStatus,
}

/// Where a savepoint request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointStatus {
    /// Waiting for the checkpoint in flight to end.
    Waiting,
    /// Being taken as checkpoint `id`.
    InProgress(CheckpointId),
    /// Written to this directory.
    Completed(PathBuf),
    /// Not taken, for this reason.
    Failed(String),
}

impl SavepointStatus {
    /// True once it is completed or failed.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            SavepointStatus::Completed(_) | SavepointStatus::Failed(_)
        )
    }
}

impl CheckpointShared {
    /// Asks for a savepoint into `dir` (`stop`: and then for the job to stop); its request
    /// number.
    pub(crate) fn request_savepoint(&self, stop: bool, dir: Option<PathBuf>) -> u64 {
        let mut r = self.requests();
        r.push(SavepointRequest {
            stop,
            dir,
            status: SavepointStatus::Waiting,
        });
        r.len() as u64
    }

    /// Where savepoint request `request` is (`None`: there is no such request).
    pub fn savepoint_status(&self, request: u64) -> Option<SavepointStatus> {
        let r = self.requests();
        let i = usize::try_from(request).ok()?.checked_sub(1)?;
        r.get(i).map(|r| r.status.clone())
    }

    pub(crate) fn requests(&self) -> std::sync::MutexGuard<'_, Vec<SavepointRequest>> {
        match self.savepoint_requests.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        }
    }

    /// The savepoint to take next, if one is asked for: where it goes and whether the job
    /// stops after it. It serves every waiting request for the same directory.
    pub(crate) fn next_savepoint(&self) -> Option<(Option<PathBuf>, bool)> {
        let r = self.requests();
        let mut waiting = r.iter().filter(|r| r.status == SavepointStatus::Waiting);
        let first = waiting.next()?;
        let stop = first.stop || waiting.any(|r| r.stop && r.dir == first.dir);
        Some((first.dir.clone(), stop))
    }

    /// Moves the requests for `dir` whose status is `from` (every one with `dir` `None`) to
    /// `to`.
    pub(crate) fn update_savepoints(
        &self,
        dir: Option<&Option<PathBuf>>,
        from: impl Fn(&SavepointStatus) -> bool,
        to: SavepointStatus,
    ) {
        for r in self
            .requests()
            .iter_mut()
            .filter(|r| from(&r.status) && dir.is_none_or(|d| *d == r.dir))
        {
            r.status = to.clone();
        }
    }

    /// The latest complete checkpoint (0: none yet).
    pub fn completed(&self) -> CheckpointId {
        self.completed.load(Ordering::SeqCst)
    }

    /// Recent checkpoints, oldest first.
    pub fn history(&self) -> Vec<CheckpointStats> {
        match self.history.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Where the stop's savepoint was written, once it is complete.
    pub fn savepoint_path(&self) -> Option<PathBuf> {
        match self.savepoint_path.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn record(&self, stats: CheckpointStats) {
        let mut h = match self.history.lock() {
            Ok(h) => h,
            Err(p) => p.into_inner(),
        };
        if h.len() >= HISTORY_LIMIT {
            h.remove(0);
        }
        h.push(stats);
    }
}
