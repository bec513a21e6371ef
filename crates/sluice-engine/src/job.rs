//! A running job seen from outside: the handle that watches and stops it, and the report it
//! leaves when it ends.

use crate::checkpoint::{CheckpointShared, CheckpointStats, SavepointStatus};
use crate::metrics::Metrics;
use crate::preview::Previews;
use crate::task_metrics::{OperatorCounts, OperatorTaskStats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to watch and stop a running job from outside (Ctrl-C, the dashboard).
#[derive(Clone, Default)]
pub struct JobHandle {
    /// The running job's tasks stop (a cancel, or a task's failure).
    cancelled: Arc<AtomicBool>,
    /// Somebody asked the job to stop: a failure then does not restart it.
    cancel_requested: Arc<AtomicBool>,
    /// The job's counters.
    pub metrics: Arc<Metrics>,
    /// The job's checkpoints.
    pub checkpoints: Arc<CheckpointShared>,
    /// Records in and out of every operator subtask.
    pub operators: Arc<OperatorCounts>,
    /// The task figures (time busy, idle, backpressured; bytes; queue fill) of every
    /// operator subtask.
    pub tasks: Arc<OperatorTaskStats>,
    /// The newest rows each sink received.
    pub previews: Arc<Previews>,
    /// How many times the job restarted after a failure (Flink's `numRestarts`).
    pub restarts: Arc<AtomicU64>,
}

impl JobHandle {
    /// Asks every source to stop; operators close and sinks flush.
    pub fn cancel(&self) {
        self.cancel_requested.store(true, Ordering::SeqCst);
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Stops the tasks of the current run (a task failed, or all have ended); the job may
    /// run again (a restart).
    pub(crate) fn cancel_run(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Readies the handle for another run of the job, unless it was asked to stop.
    pub(crate) fn reset_run(&self) {
        self.cancelled
            .store(self.cancel_requested(), Ordering::SeqCst);
    }

    /// True once the current run is stopping (cancelled, or failed).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// True once somebody asked the job to stop ([`JobHandle::cancel`]).
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::SeqCst)
    }

    /// Asks the job to take a savepoint and stop once it is complete (Flink's stop with
    /// savepoint): sources stop reading at the savepoint's barrier, sinks commit, and the
    /// job ends without firing open windows. [`CheckpointShared::savepoint_path`] then says
    /// where it is.
    /// Returns the request's number (see [`JobHandle::savepoint_status`]).
    pub fn stop_with_savepoint(&self) -> u64 {
        self.savepoint(None, true)
    }

    /// Asks for a savepoint while the job goes on (Flink's trigger savepoint), or, with
    /// `stop`, before it stops: taken after the checkpoint in flight, written whole (never
    /// incremental) to `dir` (`None`: the job's savepoint directory). One the job goes on
    /// after commits no side effects of sinks (the next checkpoint does). Returns the
    /// request's number.
    pub fn savepoint(&self, dir: Option<PathBuf>, stop: bool) -> u64 {
        self.checkpoints.request_savepoint(stop, dir)
    }

    /// Where savepoint request `request` is (`None`: no such request).
    pub fn savepoint_status(&self, request: u64) -> Option<SavepointStatus> {
        self.checkpoints.savepoint_status(request)
    }
}

/// What a finished job reports.
#[derive(Debug)]
pub struct JobReport {
    /// The counters, by name.
    pub counters: Vec<(String, u64)>,
    /// How long it ran.
    pub elapsed: Duration,
    /// True if it was cancelled rather than reaching the end of its input.
    pub cancelled: bool,
    /// Its checkpoints, oldest first.
    pub checkpoints: Vec<CheckpointStats>,
    /// Where a stop with savepoint wrote the savepoint.
    pub savepoint: Option<std::path::PathBuf>,
}
