//! The metrics the runtime keeps for every subtask, through the `metrics` crate (Flink's task
//! and operator metric groups): records into and out of each operator of the chain, the
//! watermarks it last received and emitted, and the time the subtask spent busy, idle
//! (waiting for input) and backpressured (waiting for room in a full output channel).
//!
//! Operators do not count for themselves: the runtime counts what it hands them and what they
//! emit. Every metric carries the labels `job`, `operator` (or `task`) and `subtask`; without
//! a recorder installed (the `metrics` crate's default), updating them costs nothing.
//! Prometheus names: see [`names`].

use metrics::{counter, gauge, Counter, CounterFn, Gauge};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The metric names, as Prometheus shows them.
pub mod names {
    pub const RECORDS_IN: &str = "sluice_operator_records_in_total";
    pub const RECORDS_OUT: &str = "sluice_operator_records_out_total";
    pub const INPUT_WATERMARK: &str = "sluice_operator_current_input_watermark_ms";
    pub const OUTPUT_WATERMARK: &str = "sluice_operator_current_output_watermark_ms";
    pub const LATE_RECORDS_DROPPED: &str = "sluice_operator_late_records_dropped_total";
    pub const BUSY: &str = "sluice_task_busy_ms_total";
    pub const IDLE: &str = "sluice_task_idle_ms_total";
    pub const BACKPRESSURED: &str = "sluice_task_backpressured_ms_total";
    pub const CHECKPOINTS_COMPLETED: &str = "sluice_checkpoints_completed_total";
    pub const CHECKPOINTS_FAILED: &str = "sluice_checkpoints_failed_total";
    pub const CHECKPOINT_DURATION: &str = "sluice_last_checkpoint_duration_ms";
    pub const CHECKPOINT_SIZE: &str = "sluice_last_checkpoint_size_bytes";
}

/// One operator of a subtask's chain (its source included).
#[derive(Clone)]
pub(crate) struct OperatorMetrics {
    pub records_in: Counter,
    pub records_out: Counter,
    input_watermark: Gauge,
    output_watermark: Gauge,
}

impl OperatorMetrics {
    /// The metrics of operator `name` (node `id` of the job graph: two operators may have
    /// the same name) in subtask `subtask`; its records are counted in `counts` too.
    pub fn new(job: &str, id: usize, name: &str, subtask: usize, counts: &OperatorCounts) -> Self {
        let labels = [
            ("job", job.to_string()),
            ("operator", name.to_string()),
            ("operator_id", id.to_string()),
            ("subtask", subtask.to_string()),
        ];
        let [records_in, records_out] = counts.of(id, subtask);
        let m = OperatorMetrics {
            records_in: tee(records_in, counter!(names::RECORDS_IN, &labels)),
            records_out: tee(records_out, counter!(names::RECORDS_OUT, &labels)),
            input_watermark: gauge!(names::INPUT_WATERMARK, &labels),
            output_watermark: gauge!(names::OUTPUT_WATERMARK, &labels),
        };
        // No watermark yet: the minimum, as Flink shows it.
        m.input_watermark(i64::MIN);
        m.output_watermark(i64::MIN);
        m
    }

    pub fn input_watermark(&self, w: i64) {
        self.input_watermark.set(watermark_value(w));
    }

    pub fn output_watermark(&self, w: i64) {
        self.output_watermark.set(watermark_value(w));
    }
}

/// The records in and out of every operator subtask of a job, for its REST view (the
/// `metrics` recorder is write-only).
#[derive(Debug, Default)]
pub struct OperatorCounts {
    counts: Mutex<BTreeMap<(usize, usize), InOut>>,
}

/// Records in and out of one operator subtask.
type InOut = [Arc<AtomicU64>; 2];

impl OperatorCounts {
    fn of(&self, node: usize, subtask: usize) -> InOut {
        let mut map = match self.counts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry((node, subtask)).or_default().clone()
    }

    /// (node, subtask, records in, records out) of every operator subtask.
    pub fn snapshot(&self) -> Vec<(usize, usize, u64, u64)> {
        let map = match self.counts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|(&(node, subtask), [i, o])| {
                (
                    node,
                    subtask,
                    i.load(Ordering::Relaxed),
                    o.load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// A counter that adds to `local` and to the recorder's `global`.
fn tee(local: Arc<AtomicU64>, global: Counter) -> Counter {
    struct Tee {
        local: Arc<AtomicU64>,
        global: Counter,
    }
    impl CounterFn for Tee {
        fn increment(&self, value: u64) {
            self.local.fetch_add(value, Ordering::Relaxed);
            self.global.increment(value);
        }
        fn absolute(&self, value: u64) {
            self.local.fetch_max(value, Ordering::Relaxed);
            self.global.absolute(value);
        }
    }
    Counter::from_arc(Arc::new(Tee { local, global }))
}

/// A watermark as a gauge: milliseconds since the epoch; none yet is the minimum
/// (`-9223372036854775808`, as Flink shows it), the end of input the maximum.
fn watermark_value(w: i64) -> f64 {
    w as f64
}

/// The rows an operator drops as late (Flink's `numLateRecordsDropped`): counted for the
/// job's report and as [`names::LATE_RECORDS_DROPPED`] of the operator.
#[derive(Clone)]
pub struct LateRecords {
    job_total: Arc<AtomicU64>,
    counter: Counter,
}

impl LateRecords {
    pub(crate) fn new(job_total: Arc<AtomicU64>, labels: &[(&'static str, String)]) -> Self {
        LateRecords {
            job_total,
            counter: counter!(names::LATE_RECORDS_DROPPED, labels),
        }
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.job_total.fetch_add(n, Ordering::Relaxed);
            self.counter.increment(n);
        }
    }
}

/// Where a subtask's time goes: busy (working, any time backpressured included), idle
/// (waiting for input) and backpressured (waiting for room in a full output channel).
pub(crate) struct TaskMetrics {
    pub busy: TimeCounter,
    pub idle: TimeCounter,
    labels: [(&'static str, String); 3],
    /// This subtask's times for the REST view: busy, idle, backpressured.
    local: TaskTimes,
}

impl TaskMetrics {
    /// The times of subtask `subtask` of the task `task`, made of the nodes `nodes` (each
    /// shows the task's times in `times`).
    pub fn new(
        job: &str,
        task: &str,
        subtask: usize,
        nodes: &[usize],
        times: &OperatorTimes,
    ) -> Self {
        let labels = [
            ("job", job.to_string()),
            ("task", task.to_string()),
            ("subtask", subtask.to_string()),
        ];
        let local = times.register(nodes, subtask);
        TaskMetrics {
            busy: TimeCounter::new(tee(local[0].clone(), counter!(names::BUSY, &labels))),
            idle: TimeCounter::new(tee(local[1].clone(), counter!(names::IDLE, &labels))),
            labels,
            local,
        }
    }

    /// A counter of the time this subtask waits for room in its output channels (one per
    /// output: they add up under the same name).
    pub fn backpressured(&self) -> TimeCounter {
        TimeCounter::new(tee(
            self.local[2].clone(),
            counter!(names::BACKPRESSURED, &self.labels),
        ))
    }
}

/// A subtask's busy, idle and backpressured milliseconds.
type TaskTimes = [Arc<AtomicU64>; 3];

/// The busy, idle and backpressured time of every operator subtask of a job (an operator
/// shows those of the task it is chained in), for its REST view.
#[derive(Debug, Default)]
pub struct OperatorTimes {
    times: Mutex<BTreeMap<(usize, usize), TaskTimes>>,
}

impl OperatorTimes {
    fn register(&self, nodes: &[usize], subtask: usize) -> TaskTimes {
        let times: TaskTimes = Default::default();
        let mut map = match self.times.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for &n in nodes {
            map.insert((n, subtask), times.clone());
        }
        times
    }

    /// (node, subtask, busy ms, idle ms, backpressured ms) of every operator subtask.
    pub fn snapshot(&self) -> Vec<(usize, usize, [u64; 3])> {
        let map = match self.times.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|(&(node, subtask), t)| {
                (
                    node,
                    subtask,
                    [0, 1, 2].map(|i| t[i].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }
}

/// A counter of milliseconds that adds up intervals shorter than one, so that many short
/// ones are not all lost.
pub(crate) struct TimeCounter {
    counter: Counter,
    pending: Duration,
}

impl TimeCounter {
    fn new(counter: Counter) -> Self {
        TimeCounter {
            counter,
            pending: Duration::ZERO,
        }
    }

    pub fn add(&mut self, d: Duration) {
        self.pending += d;
        if self.pending >= Duration::from_millis(1) {
            let ms = self.pending.as_millis() as u64;
            self.counter.increment(ms);
            self.pending -= Duration::from_millis(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_counter_loses_no_time_to_short_intervals() {
        let total = Arc::new(AtomicU64::new(0));
        let mut t = TimeCounter::new(Counter::from_arc(total.clone()));
        for _ in 0..10_000 {
            t.add(Duration::from_micros(30));
        }
        assert_eq!(total.load(Ordering::Relaxed), 300);
    }
}
