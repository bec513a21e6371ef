//! The metrics the runtime keeps for every subtask, through the `metrics` crate (Flink's task
//! and operator metric groups): records into and out of each operator of the chain, the
//! watermarks it last received and emitted; per subtask, the time it spent busy, idle
//! (waiting for input) and backpressured (waiting for room in a full output channel), the
//! bytes it read and wrote through its channels and how full those are.
//!
//! Operators do not count for themselves: the runtime counts what it hands them and what they
//! emit. Every metric carries the labels `job`, `operator` (or `task`) and `subtask`; without
//! a recorder installed (the `metrics` crate's default), updating them costs nothing.
//! Prometheus names: see [`names`].

use metrics::{counter, gauge, Counter, CounterFn, Gauge};
use sluice_common::ChangeBatch;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The metric names, as Prometheus shows them.
pub mod names {
    pub const RECORDS_IN: &str = "sluice_operator_records_in_total";
    pub const RECORDS_OUT: &str = "sluice_operator_records_out_total";
    pub const INPUT_WATERMARK: &str = "sluice_operator_current_input_watermark_ms";
    pub const OUTPUT_WATERMARK: &str = "sluice_operator_current_output_watermark_ms";
    pub const LATE_RECORDS_DROPPED: &str = "sluice_operator_late_records_dropped_total";
    pub const SINK_ERRORS: &str = "sluice_sink_errors_total";
    pub const BUSY: &str = "sluice_task_busy_ms_total";
    pub const IDLE: &str = "sluice_task_idle_ms_total";
    pub const BACKPRESSURED: &str = "sluice_task_backpressured_ms_total";
    pub const BYTES_IN: &str = "sluice_task_bytes_in_total";
    pub const BYTES_OUT: &str = "sluice_task_bytes_out_total";
    pub const INPUT_QUEUE_FILL: &str = "sluice_task_input_queue_fill";
    pub const OUTPUT_QUEUE_FILL: &str = "sluice_task_output_queue_fill";
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
    /// The watermarks for the REST view: input, output.
    watermarks: [Arc<AtomicI64>; 2],
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
        let OperatorStats {
            records: [records_in, records_out],
            watermarks,
        } = counts.of(id, subtask);
        let m = OperatorMetrics {
            records_in: tee(records_in, counter!(names::RECORDS_IN, &labels)),
            records_out: tee(records_out, counter!(names::RECORDS_OUT, &labels)),
            input_watermark: gauge!(names::INPUT_WATERMARK, &labels),
            output_watermark: gauge!(names::OUTPUT_WATERMARK, &labels),
            watermarks,
        };
        // No watermark yet: the minimum, as Flink shows it.
        m.input_watermark(i64::MIN);
        m.output_watermark(i64::MIN);
        m
    }

    pub fn input_watermark(&self, w: i64) {
        self.input_watermark.set(watermark_value(w));
        self.watermarks[0].store(w, Ordering::Relaxed);
    }

    pub fn output_watermark(&self, w: i64) {
        self.output_watermark.set(watermark_value(w));
        self.watermarks[1].store(w, Ordering::Relaxed);
    }
}

/// The records in and out and the watermarks of every operator subtask of a job, for its
/// REST view (the `metrics` recorder is write-only).
#[derive(Debug, Default)]
pub struct OperatorCounts {
    counts: Mutex<BTreeMap<(usize, usize), OperatorStats>>,
}

/// Records in and out of one operator subtask, and its input and output watermarks.
#[derive(Debug, Clone)]
struct OperatorStats {
    records: [Arc<AtomicU64>; 2],
    watermarks: [Arc<AtomicI64>; 2],
}

impl Default for OperatorStats {
    fn default() -> Self {
        OperatorStats {
            records: Default::default(),
            watermarks: [
                Arc::new(AtomicI64::new(i64::MIN)),
                Arc::new(AtomicI64::new(i64::MIN)),
            ],
        }
    }
}

/// One operator subtask's figures, as [`OperatorCounts::snapshot`] gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorSnapshot {
    pub node: usize,
    pub subtask: usize,
    pub records_in: u64,
    pub records_out: u64,
    /// The last watermark it received (`i64::MIN`: none yet).
    pub input_watermark: i64,
    /// The last watermark it emitted (`i64::MIN`: none yet).
    pub output_watermark: i64,
}

impl OperatorCounts {
    fn of(&self, node: usize, subtask: usize) -> OperatorStats {
        let mut map = match self.counts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry((node, subtask)).or_default().clone()
    }

    /// Every operator subtask's figures.
    pub fn snapshot(&self) -> Vec<OperatorSnapshot> {
        let map = match self.counts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|(&(node, subtask), s)| OperatorSnapshot {
                node,
                subtask,
                records_in: s.records[0].load(Ordering::Relaxed),
                records_out: s.records[1].load(Ordering::Relaxed),
                input_watermark: s.watermarks[0].load(Ordering::Relaxed),
                output_watermark: s.watermarks[1].load(Ordering::Relaxed),
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

/// A count an operator keeps for the job's report (under a plain name) and as a labelled
/// metric of the operator: the rows it drops as late, the records a sink fails to write.
#[derive(Clone)]
pub struct OperatorCounter {
    job_total: Arc<AtomicU64>,
    counter: Counter,
}

impl OperatorCounter {
    pub(crate) fn new(
        job_total: Arc<AtomicU64>,
        name: &'static str,
        labels: &[(&'static str, String)],
    ) -> Self {
        OperatorCounter {
            job_total,
            counter: counter!(name, labels),
        }
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.job_total.fetch_add(n, Ordering::Relaxed);
            self.counter.increment(n);
        }
    }
}

/// The rows an operator drops as late (Flink's `numLateRecordsDropped`): counted for the
/// job's report and as [`names::LATE_RECORDS_DROPPED`] of the operator.
pub type LateRecords = OperatorCounter;

/// The records a sink failed to write (Flink's `numRecordsSendErrors`; each failed attempt
/// counts the records it tried, retried or not): counted for the job's report and as
/// [`names::SINK_ERRORS`] of the operator.
pub type SinkErrors = OperatorCounter;

/// A subtask's task metrics, as Flink's task metric group has them: where its time goes, busy
/// (working, any time backpressured included), idle (waiting for input) and backpressured
/// (waiting for room in a full output channel); the bytes it read from its input channels and
/// wrote to its output channels (the Arrow size of the batches' rows); and how full those
/// channels are (sampled).
pub(crate) struct TaskMetrics {
    pub busy: TimeCounter,
    pub idle: TimeCounter,
    pub bytes_in: Counter,
    bytes_out: Counter,
    input_fill: Fill,
    output_fill: Fill,
    labels: [(&'static str, String); 3],
    /// This subtask's figures for the REST view (see [`TaskStat`]).
    local: TaskStats,
    last_sample: Instant,
}

impl TaskMetrics {
    /// The metrics of subtask `subtask` of the task `task`, made of the nodes `nodes` (each
    /// shows the task's figures in `stats`).
    pub fn new(
        job: &str,
        task: &str,
        subtask: usize,
        nodes: &[usize],
        stats: &OperatorTaskStats,
    ) -> Self {
        let labels = [
            ("job", job.to_string()),
            ("task", task.to_string()),
            ("subtask", subtask.to_string()),
        ];
        let local = stats.register(nodes, subtask);
        let cell = |s: TaskStat| local[s as usize].clone();
        TaskMetrics {
            busy: TimeCounter::new(tee(cell(TaskStat::Busy), counter!(names::BUSY, &labels))),
            idle: TimeCounter::new(tee(cell(TaskStat::Idle), counter!(names::IDLE, &labels))),
            bytes_in: tee(cell(TaskStat::BytesIn), counter!(names::BYTES_IN, &labels)),
            bytes_out: tee(
                cell(TaskStat::BytesOut),
                counter!(names::BYTES_OUT, &labels),
            ),
            input_fill: Fill {
                local: cell(TaskStat::InputFill),
                gauge: gauge!(names::INPUT_QUEUE_FILL, &labels),
            },
            output_fill: Fill {
                local: cell(TaskStat::OutputFill),
                gauge: gauge!(names::OUTPUT_QUEUE_FILL, &labels),
            },
            labels,
            local,
            last_sample: Instant::now(),
        }
    }

    /// A counter of the time this subtask waits for room in its output channels (one per
    /// output: they add up under the same name).
    pub fn backpressured(&self) -> TimeCounter {
        TimeCounter::new(tee(
            self.local[TaskStat::Backpressured as usize].clone(),
            counter!(names::BACKPRESSURED, &self.labels),
        ))
    }

    /// The counter of the bytes this subtask sends downstream (shared by its outputs).
    pub fn bytes_out(&self) -> Counter {
        self.bytes_out.clone()
    }

    /// True if the queue fills are due to be sampled again (at `now`).
    pub fn fill_due(&mut self, now: Instant) -> bool {
        if now.duration_since(self.last_sample) < FILL_SAMPLE_EVERY {
            return false;
        }
        self.last_sample = now;
        true
    }

    /// How full its input channels (`None`: it has none) and output channels are, 0 to 1.
    pub fn set_fill(&self, input: Option<f64>, output: f64) {
        if let Some(f) = input {
            self.input_fill.set(f);
        }
        self.output_fill.set(output);
    }
}

/// How often a subtask samples how full its channels are.
const FILL_SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// A fill level, 0 to 1: a gauge, and in thousandths for the REST view.
struct Fill {
    local: Arc<AtomicU64>,
    gauge: Gauge,
}

impl Fill {
    fn set(&self, f: f64) {
        let f = f.clamp(0.0, 1.0);
        self.local
            .store((f * 1000.0).round() as u64, Ordering::Relaxed);
        self.gauge.set(f);
    }
}

/// The bytes of a batch's rows, as Arrow holds them (the slices of its buffers it uses), and
/// of their row kinds.
pub(crate) fn batch_bytes(batch: &ChangeBatch) -> u64 {
    let kinds = batch.kinds.as_ref().map_or(0, |k| k.len() as u64);
    batch
        .data
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum::<u64>()
        + kinds
}

/// The figures of a subtask the REST view shows, by their index in [`TaskStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStat {
    /// Milliseconds busy.
    Busy,
    /// Milliseconds idle.
    Idle,
    /// Milliseconds backpressured.
    Backpressured,
    /// Bytes read from the input channels.
    BytesIn,
    /// Bytes written to the output channels.
    BytesOut,
    /// How full the input channels were when last sampled, in thousandths.
    InputFill,
    /// How full the output channels were when last sampled, in thousandths.
    OutputFill,
}

/// How many [`TaskStat`]s there are.
pub const TASK_STATS: usize = 7;

/// A subtask's figures, indexed by [`TaskStat`].
type TaskStats = [Arc<AtomicU64>; TASK_STATS];

/// The task figures ([`TaskStat`]) of every operator subtask of a job (an operator shows
/// those of the task it is chained in), for its REST view.
#[derive(Debug, Default)]
pub struct OperatorTaskStats {
    times: Mutex<BTreeMap<(usize, usize), TaskStats>>,
}

impl OperatorTaskStats {
    fn register(&self, nodes: &[usize], subtask: usize) -> TaskStats {
        let times: TaskStats = Default::default();
        let mut map = match self.times.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for &n in nodes {
            map.insert((n, subtask), times.clone());
        }
        times
    }

    /// (node, subtask, figures indexed by [`TaskStat`]) of every operator subtask.
    pub fn snapshot(&self) -> Vec<(usize, usize, [u64; TASK_STATS])> {
        let map = match self.times.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|(&(node, subtask), t)| {
                (
                    node,
                    subtask,
                    std::array::from_fn(|i| t[i].load(Ordering::Relaxed)),
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
    use arrow::array::{Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn batch_bytes_count_the_rows_a_slice_holds() {
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from_iter_values(0..100)) as _),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..100).map(|i| format!("{i:04}")),
                )) as _,
            ),
        ])
        .unwrap();
        let whole = batch_bytes(&ChangeBatch::inserts(batch.clone()));
        // 100 i64s, 100 strings of 4 bytes and their 101 i32 offsets.
        assert_eq!(whole, 800 + 400 + 404);
        let half = batch_bytes(&ChangeBatch::inserts(batch.slice(0, 50)));
        assert_eq!(half, 400 + 200 + 204);
    }

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
