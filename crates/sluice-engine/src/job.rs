//! A running job seen from outside: the handle that watches and stops it, and the report it
//! leaves when it ends.

use crate::checkpoint::{CheckpointShared, CheckpointStats};
use crate::metrics::Metrics;
use crate::preview::Previews;
use crate::task_metrics::{OperatorCounts, OperatorTimes};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to watch and stop a running job from outside (Ctrl-C, the dashboard).
#[derive(Clone, Default)]
pub struct JobHandle {
    cancelled: Arc<AtomicBool>,
    /// The job's counters.
    pub metrics: Arc<Metrics>,
    /// The job's checkpoints.
    pub checkpoints: Arc<CheckpointShared>,
    /// Records in and out of every operator subtask.
    pub operators: Arc<OperatorCounts>,
    /// Busy, idle and backpressured time of every operator subtask.
    pub times: Arc<OperatorTimes>,
    /// The newest rows each sink received.
    pub previews: Arc<Previews>,
}

impl JobHandle {
    /// Asks every source to stop; operators close and sinks flush.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Asks the job to take a savepoint and stop once it is complete (Flink's stop with
    /// savepoint): sources stop reading at the savepoint's barrier, sinks commit, and the
    /// job ends without firing open windows. [`CheckpointShared::savepoint_path`] then says
    /// where it is.
    pub fn stop_with_savepoint(&self) {
        self.checkpoints
            .savepoint_requested
            .store(true, Ordering::SeqCst);
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
