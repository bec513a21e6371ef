//! The job manager of `sluice server`: runs submitted Flink SQL scripts as jobs, each on its
//! own threads, watches them, cancels or stops them with a savepoint, and remembers them in
//! `<data dir>/server/jobs/<id>.json`, so that a restarted server lists the jobs it had and
//! starts again those that were running, each from its latest checkpoint (a job's checkpoints
//! live under `<data dir>/jobs/<pipeline.name>/`, as with `sluice run`).

use serde_json::{json, Value};
use sluice_common::{Result, SluiceError};
use sluice_engine::task_metrics::{OperatorSnapshot, TaskStat, TASK_STATS};
use sluice_engine::{restore_point, run_job_restarting, JobGraph, JobHandle, RestoreMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Plans a script into a job (`sluice-sql` with the built-in connectors; the binary wires
/// it): the script, the data directory, and the job's name unless the script sets
/// `pipeline.name`.
pub type Planner = dyn Fn(&str, &Path, &str) -> Result<Option<JobGraph>> + Send + Sync;

/// A job's state, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
    Canceled,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "RUNNING",
            JobState::Finished => "FINISHED",
            JobState::Canceled => "CANCELED",
            JobState::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "RUNNING" => JobState::Running,
            "FINISHED" => JobState::Finished,
            "CANCELED" => JobState::Canceled,
            "FAILED" => JobState::Failed,
            _ => return None,
        })
    }
}

/// An operator of a job's graph (Flink's job vertex).
#[derive(Debug, Clone)]
pub struct Vertex {
    pub id: usize,
    pub name: String,
    pub parallelism: usize,
}

/// What can change while a job runs.
#[derive(Debug, Clone)]
struct Status {
    state: JobState,
    end_ms: Option<i64>,
    /// Errors, newest last: (time, message).
    exceptions: Vec<(i64, String)>,
    savepoint: Option<PathBuf>,
}

/// A job the server knows: running, or ended (kept for the history).
pub struct ManagedJob {
    pub id: String,
    pub name: String,
    pub script: String,
    pub start_ms: i64,
    pub vertices: Vec<Vertex>,
    /// Watches and stops it (an ended job's is idle).
    pub handle: JobHandle,
    /// The checkpoint or savepoint it started from: (id, where, savepoint, when).
    restored: Option<(u64, PathBuf, bool, i64)>,
    /// The savepoint it was submitted to start from (used until it has checkpoints).
    from_savepoint: Option<PathBuf>,
    status: Mutex<Status>,
}

impl ManagedJob {
    pub fn state(&self) -> JobState {
        self.status().state
    }

    fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Flink's `/jobs/:id` answer: state, times, savepoint, and the vertices with the
    /// records into and out of each (Flink's `read-records`, `write-records`), in all and per
    /// subtask.
    pub fn details(&self) -> Value {
        let s = self.status();
        let end = s.end_ms.unwrap_or(-1);
        let now = now_ms();
        let counts = self.handle.operators.snapshot();
        let tasks = self.handle.tasks.snapshot();
        json!({
            "jid": self.id,
            "name": self.name,
            "state": s.state.name(),
            "start-time": self.start_ms,
            "end-time": end,
            "duration": if end >= 0 { end - self.start_ms } else { now - self.start_ms },
            "now": now,
            "savepoint-path": s.savepoint.as_ref().map(|p| p.display().to_string()),
            // Flink's numRestarts: restarts after failures (restart-strategy.*).
            "restarts": self.handle.restarts.load(Ordering::Relaxed),
            "vertices": self.vertices.iter().map(|v| {
                let subtasks: Vec<_> = counts.iter().filter(|c| c.node == v.id).collect();
                // The operator's input watermark: the least of its subtasks' (none while one
                // has none), as Flink's currentInputWatermark of a vertex.
                let watermark = |w: fn(&&OperatorSnapshot) -> i64| {
                    subtasks.iter().map(w).min().filter(|w| *w != i64::MIN)
                };
                let input_watermark = watermark(|s| s.input_watermark);
                let output_watermark = watermark(|s| s.output_watermark);
                // The figures of the task the operator is chained in: times and bytes summed
                // over the subtasks, queue fills the fullest subtask's.
                let mut sum = [0u64; TASK_STATS];
                let mut max = [0u64; TASK_STATS];
                for (_, _, t) in tasks.iter().filter(|t| t.0 == v.id) {
                    for i in 0..TASK_STATS {
                        sum[i] += t[i];
                        max[i] = max[i].max(t[i]);
                    }
                }
                let fill = |s: TaskStat| max[s as usize] as f64 / 1000.0;
                json!({
                    "id": v.id.to_string(),
                    "name": v.name,
                    "parallelism": v.parallelism,
                    "metrics": {
                        "read-records": subtasks.iter().map(|s| s.records_in).sum::<u64>(),
                        "write-records": subtasks.iter().map(|s| s.records_out).sum::<u64>(),
                        "current-input-watermark": input_watermark,
                        "current-output-watermark": output_watermark,
                        "read-bytes": sum[TaskStat::BytesIn as usize],
                        "write-bytes": sum[TaskStat::BytesOut as usize],
                        "busy-ms": sum[TaskStat::Busy as usize],
                        "idle-ms": sum[TaskStat::Idle as usize],
                        "backpressured-ms": sum[TaskStat::Backpressured as usize],
                        "input-queue-fill": fill(TaskStat::InputFill),
                        "output-queue-fill": fill(TaskStat::OutputFill),
                    },
                    "subtasks": subtasks.iter().map(|s| json!({
                        "subtask": s.subtask,
                        "metrics": {
                            "read-records": s.records_in,
                            "write-records": s.records_out,
                            "current-input-watermark": (s.input_watermark != i64::MIN).then_some(s.input_watermark),
                        },
                    })).collect::<Vec<_>>(),
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// The newest rows each sink received (`/jobs/:id/preview`): per sink, its columns and
    /// up to 20 rows per subtask, oldest first.
    pub fn preview(&self) -> Value {
        let mut sinks: BTreeMap<usize, (Vec<String>, Vec<Value>)> = BTreeMap::new();
        for (node, _subtask, p) in self.handle.previews.snapshot() {
            let entry = sinks.entry(node).or_default();
            if entry.0.is_empty() {
                entry.0 = p.columns.clone();
            }
            entry.1.extend(
                p.rows
                    .iter()
                    .map(|(kind, values)| json!({"kind": kind, "values": values})),
            );
        }
        let sinks: Vec<Value> = sinks
            .into_iter()
            .map(|(node, (columns, rows))| {
                let name = self
                    .vertices
                    .iter()
                    .find(|v| v.id == node)
                    .map(|v| v.name.clone())
                    .unwrap_or_default();
                json!({"vertex": node.to_string(), "name": name, "columns": columns, "rows": rows})
            })
            .collect();
        json!({ "sinks": sinks })
    }

    /// Flink's `/jobs/:id/exceptions` answer.
    pub fn exceptions(&self) -> Value {
        let s = self.status();
        let all: Vec<Value> = s
            .exceptions
            .iter()
            .map(|(t, m)| json!({"timestamp": t, "exception": m}))
            .collect();
        json!({
            "root-exception": s.exceptions.last().map(|(_, m)| m.clone()),
            "timestamp": s.exceptions.last().map(|(t, _)| *t),
            "all-exceptions": all,
            "truncated": false,
        })
    }

    /// Flink's `/jobs/:id/checkpoints` answer: counts, the latest and the history.
    pub fn checkpoints(&self) -> Value {
        let history = self.handle.checkpoints.history();
        let completed = history.iter().filter(|c| c.status == "Completed").count();
        let failed = history.len() - completed;
        let latest = history
            .iter()
            .rev()
            .find(|c| c.status == "Completed")
            .map(|c| c.to_json());
        let restored = self.restored.as_ref().map(|(id, path, savepoint, at)| {
            json!({
                "id": id,
                "external_path": path.display().to_string(),
                "is_savepoint": savepoint,
                "restore_timestamp": at,
            })
        });
        json!({
            "counts": {"completed": completed, "failed": failed, "total": history.len()},
            "latest": {"completed": latest, "restored": restored},
            "history": history.iter().rev().map(|c| c.to_json()).collect::<Vec<_>>(),
        })
    }

    fn record(&self) -> Value {
        let s = self.status();
        json!({
            "id": self.id,
            "name": self.name,
            "script": self.script,
            "start-time": self.start_ms,
            "state": s.state.name(),
            "end-time": s.end_ms,
            "exceptions": s.exceptions.iter().map(|(t, m)| json!([t, m])).collect::<Vec<_>>(),
            "savepoint-path": s.savepoint.as_ref().map(|p| p.display().to_string()),
            "from-savepoint": self.from_savepoint.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// Why a script was not taken.
#[derive(Debug)]
pub enum SubmitError {
    /// The script is wrong: the planner's message (it names the line and column).
    Invalid(String),
    /// A running job already has this name (they would share checkpoints).
    Conflict(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Invalid(m) | SubmitError::Conflict(m) => f.write_str(m),
        }
    }
}

/// Runs and remembers the server's jobs.
pub struct JobManager {
    data_dir: PathBuf,
    planner: Box<Planner>,
    jobs: Mutex<BTreeMap<String, Arc<ManagedJob>>>,
    next: AtomicU64,
    /// Set when the server stops: its running jobs are stopped but stay RUNNING in their
    /// records, to start again with the next server.
    shutting_down: AtomicBool,
    /// The threads of the jobs started, which [`JobManager::shutdown`] waits for.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// How long a stopping server waits for its jobs to stop (their sinks to flush).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl JobManager {
    /// A manager over `data_dir`: the jobs a server there had are listed again, and those
    /// that were running start again from their latest checkpoints.
    pub fn open(data_dir: &Path, planner: Box<Planner>) -> Result<Arc<JobManager>> {
        let manager = Arc::new(JobManager {
            data_dir: data_dir.to_path_buf(),
            planner,
            jobs: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let dir = manager.jobs_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| SluiceError::io(format!("creating {}", dir.display()), e))?;
        let mut records: Vec<Value> = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| SluiceError::io(dir.display().to_string(), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
            {
                Ok(v) => records.push(v),
                Err(e) => tracing::warn!("{}: not a job record ({e}); skipped", path.display()),
            }
        }
        records.sort_by_key(|r| r["start-time"].as_i64().unwrap_or(0));
        for r in records {
            manager.reopen(&r);
        }
        Ok(manager)
    }

    fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("server").join("jobs")
    }

    /// Lists an ended job of an earlier server, or starts again one that was running.
    fn reopen(self: &Arc<Self>, r: &Value) {
        let (Some(id), Some(script)) = (r["id"].as_str(), r["script"].as_str()) else {
            return;
        };
        let state = r["state"]
            .as_str()
            .and_then(JobState::parse)
            .unwrap_or(JobState::Failed);
        let mut exceptions: Vec<(i64, String)> = r["exceptions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| Some((e[0].as_i64()?, e[1].as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let (mut state, mut end_ms) = (state, r["end-time"].as_i64());
        if state == JobState::Running {
            let from = r["from-savepoint"].as_str().map(PathBuf::from);
            match self.start(id.to_string(), script, from) {
                Ok(()) => return,
                Err(e) => {
                    // Listed as failed, with why, rather than lost.
                    tracing::error!("job {id} could not start again: {e}");
                    state = JobState::Failed;
                    end_ms = Some(now_ms());
                    exceptions.push((now_ms(), format!("could not start again: {e}")));
                }
            }
        }
        let job = Arc::new(ManagedJob {
            id: id.to_string(),
            name: r["name"].as_str().unwrap_or_default().to_string(),
            script: script.to_string(),
            start_ms: r["start-time"].as_i64().unwrap_or(0),
            vertices: Vec::new(),
            handle: JobHandle::default(),
            restored: None,
            from_savepoint: r["from-savepoint"].as_str().map(PathBuf::from),
            status: Mutex::new(Status {
                state,
                end_ms,
                exceptions,
                savepoint: r["savepoint-path"].as_str().map(PathBuf::from),
            }),
        });
        if state == JobState::Failed {
            self.persist(&job);
        }
        self.insert(job);
    }

    fn insert(&self, job: Arc<ManagedJob>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job.id.clone(), job);
        }
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<Arc<ManagedJob>> {
        let mut all: Vec<Arc<ManagedJob>> = match self.jobs.lock() {
            Ok(j) => j.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        all.sort_by_key(|j| j.start_ms);
        all
    }

    pub fn get(&self, id: &str) -> Option<Arc<ManagedJob>> {
        self.jobs.lock().ok()?.get(id).cloned()
    }

    /// Plans `script` and starts it (from the savepoint `from` if given); its id.
    pub fn submit(
        self: &Arc<Self>,
        script: &str,
        from: Option<PathBuf>,
    ) -> std::result::Result<String, SubmitError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // 32 hex digits, as Flink's job ids.
        let id = format!(
            "{:016x}{:016x}",
            nanos as u64,
            n ^ (std::process::id() as u64)
        );
        self.start(id.clone(), script, from)?;
        Ok(id)
    }

    /// Plans and runs `script` as job `id`, from its latest checkpoint if it has one.
    fn start(
        self: &Arc<Self>,
        id: String,
        script: &str,
        from_savepoint: Option<PathBuf>,
    ) -> std::result::Result<(), SubmitError> {
        // A job is known by its id unless it names itself: its checkpoints stay its own across
        // server restarts.
        let graph = (self.planner)(script, &self.data_dir, &format!("job-{id}"))
            .map_err(|e| SubmitError::Invalid(e.to_string()))?
            .ok_or_else(|| {
                SubmitError::Invalid(
                    "the script has no INSERT or SELECT: there is no job to run".into(),
                )
            })?;
        if let Some(other) = self
            .list()
            .into_iter()
            .find(|j| j.name == graph.name && j.state() == JobState::Running)
        {
            return Err(SubmitError::Conflict(format!(
                "job '{}' ({}) is running: a job's 'pipeline.name' must be unique among running jobs",
                graph.name, other.id
            )));
        }
        // Its latest checkpoint; before it has one, the savepoint it was given.
        let mut restored = restore_point(&graph, &graph.checkpoint, &RestoreMode::Latest)
            .map_err(|e| SubmitError::Invalid(format!("job '{}': {e}", graph.name)))?;
        if let (None, Some(path)) = (&restored, &from_savepoint) {
            restored = restore_point(
                &graph,
                &graph.checkpoint,
                &RestoreMode::Savepoint(path.clone()),
            )
            .map_err(|e| SubmitError::Invalid(format!("job '{}': {e}", graph.name)))?;
        }
        // Where a restart goes back to before the job completes a checkpoint of its own.
        let mode = match (&from_savepoint, restored.as_ref()) {
            (Some(p), Some(r)) if r.metadata.savepoint => RestoreMode::Savepoint(p.clone()),
            _ => RestoreMode::Latest,
        };
        let from = restored.as_ref().map(|r| {
            (
                r.metadata.id,
                r.path.clone(),
                r.metadata.savepoint,
                now_ms(),
            )
        });
        let job = Arc::new(ManagedJob {
            id: id.clone(),
            restored: from,
            from_savepoint,
            name: graph.name.clone(),
            script: script.to_string(),
            start_ms: now_ms(),
            vertices: graph
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| Vertex {
                    id: i,
                    name: n.name.clone(),
                    parallelism: n.parallelism,
                })
                .collect(),
            handle: JobHandle::default(),
            status: Mutex::new(Status {
                state: JobState::Running,
                end_ms: None,
                exceptions: Vec::new(),
                savepoint: None,
            }),
        });
        self.insert(job.clone());
        self.persist(&job);
        let manager = self.clone();
        let runner = job.clone();
        let thread = std::thread::Builder::new()
            .name(format!("job {}", job.name))
            .spawn(move || {
                // A failure the restart strategy recovers from is in the exception history,
                // as Flink's; the last one ends the job below.
                let mut on_failure = |f: sluice_engine::restart::Failure<'_>| {
                    if f.restart_in.is_some() {
                        runner.update(|s| s.exceptions.push((now_ms(), f.error.to_string())));
                    }
                };
                let result =
                    run_job_restarting(&graph, &runner.handle, restored, mode, &mut on_failure);
                if manager.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                runner.update(|s| {
                    s.end_ms = Some(now_ms());
                    match result {
                        Ok(report) => {
                            s.savepoint = report.savepoint;
                            s.state = if report.cancelled && s.savepoint.is_none() {
                                JobState::Canceled
                            } else {
                                JobState::Finished
                            };
                        }
                        Err(e) => {
                            s.state = JobState::Failed;
                            s.exceptions.push((now_ms(), e.to_string()));
                        }
                    }
                });
                manager.persist(&runner);
            })
            .map_err(|e| SubmitError::Invalid(format!("cannot start a job thread: {e}")))?;
        let mut threads = match self.threads.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
        Ok(())
    }

    /// Writes a job's record (atomically: a temporary file renamed).
    fn persist(&self, job: &ManagedJob) {
        let path = self.jobs_dir().join(format!("{}.json", job.id));
        let tmp = path.with_extension("json.tmp");
        let text = job.record().to_string();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }

    /// Stops the jobs' threads without marking them ended (the server is going away: they
    /// start again with it), and waits for them to stop (their sinks to flush), at most
    /// [`SHUTDOWN_WAIT`]. False if some did not stop in time.
    pub fn shutdown(&self) -> bool {
        self.shutting_down.store(true, Ordering::SeqCst);
        for j in self.list() {
            if j.state() == JobState::Running {
                j.handle.cancel();
            }
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
        while threads.iter().any(|t| !t.is_finished()) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for t in threads {
            let _ = t.join();
        }
        true
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that was running when the server stopped and cannot start again (its script no
    /// longer plans) is listed as failed, with why, and stays so.
    #[test]
    fn a_job_that_cannot_start_again_is_listed_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("server").join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        std::fs::write(
            jobs.join("abc.json"),
            json!({"id": "abc", "name": "gone", "script": "INSERT INTO t SELECT 1",
                   "start-time": 5, "state": "RUNNING"})
            .to_string(),
        )
        .unwrap();
        let planner = || -> Box<Planner> {
            Box::new(|_, _, _| Err(SluiceError::Plan("table 't' not found".into())))
        };
        let manager = JobManager::open(dir.path(), planner()).unwrap();
        let job = manager.get("abc").unwrap();
        assert_eq!(job.state(), JobState::Failed);
        let why = job.exceptions();
        assert!(
            why["root-exception"]
                .as_str()
                .is_some_and(|m| m.contains("table 't' not found")),
            "{why}"
        );
        // The record says so: the next server lists it as failed without trying again.
        let again = JobManager::open(dir.path(), planner()).unwrap();
        assert_eq!(again.get("abc").unwrap().state(), JobState::Failed);
        assert_eq!(again.list().len(), 1);
    }
}
