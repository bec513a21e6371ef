//! Backpressure as the task metrics show it: a fast source feeds a slow operator over a
//! rebalancing exchange. The channels between them fill up, the source's task spends its time
//! waiting for room (backpressured) and the slow task never waits for input; the bytes the
//! source's task writes are the bytes the slow task reads.

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, CheckpointId, Result};
use sluice_engine::task_metrics::{TaskStat, TASK_STATS};
use sluice_engine::{
    run_job, Input, JobGraph, JobHandle, Node, NodeKind, Operator, OperatorFactory, Output,
    Partitioning, SourceFactory, SourcePoll, SourceReader, StateReader, StateWriter,
    SubtaskContext,
};
use std::sync::Arc;
use std::time::Duration;

const BATCHES: i64 = 300;
const ROWS_PER_BATCH: i64 = 100;
/// How long the slow operator takes per batch.
const SLOW: Duration = Duration::from_millis(2);

/// Emits `BATCHES` batches of numbers as fast as it is asked.
struct Fast;
struct FastReader {
    next: i64,
}
impl SourceFactory for Fast {
    fn name(&self) -> String {
        "fast".into()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(FastReader { next: 0 }))
    }
}
impl SourceReader for FastReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        if self.next >= BATCHES * ROWS_PER_BATCH {
            return Ok(SourcePoll::End);
        }
        let v = Int64Array::from_iter_values(self.next..self.next + ROWS_PER_BATCH);
        self.next += ROWS_PER_BATCH;
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        Ok(SourcePoll::Batch(ChangeBatch::inserts(
            RecordBatch::try_new(schema, vec![Arc::new(v)])?,
        )))
    }
    fn snapshot_position(&mut self, _c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.next);
        Ok(())
    }
    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.next = state.i64()?;
        Ok(())
    }
}

/// Takes its time over every batch and emits nothing.
struct Slow;
impl OperatorFactory for Slow {
    fn name(&self) -> String {
        "slow".into()
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Slow))
    }
}
impl Operator for Slow {
    fn process_batch(&mut self, _i: usize, _b: ChangeBatch, _out: &mut Output) -> Result<()> {
        std::thread::sleep(SLOW);
        Ok(())
    }
}

#[test]
fn a_slow_consumer_backpressures_its_producer() {
    let mut g = JobGraph::new("backpressure");
    let fast = g.add(Node {
        name: "fast".into(),
        parallelism: 1,
        kind: NodeKind::Source(Arc::new(Fast)),
        inputs: vec![],
    });
    let slow = g.add(Node {
        name: "slow".into(),
        parallelism: 1,
        kind: NodeKind::Operator(Arc::new(Slow)),
        inputs: vec![Input {
            node: fast,
            partitioning: Partitioning::Rebalance,
        }],
    });
    let handle = JobHandle::default();
    // The fills are gauges, sampled: watch them while the job runs.
    let watcher = handle.clone();
    let watch = std::thread::spawn(move || {
        let mut fullest = [0u64; 2];
        while !watcher.is_cancelled() {
            for (node, _, stats) in watcher.tasks.snapshot() {
                if node == fast {
                    fullest[0] = fullest[0].max(stats[TaskStat::OutputFill as usize]);
                } else if node == slow {
                    fullest[1] = fullest[1].max(stats[TaskStat::InputFill as usize]);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        fullest
    });
    let report = run_job(&g, &handle, None).unwrap();
    handle.cancel();
    let [output_fill, input_fill] = watch.join().unwrap();
    assert!(!report.cancelled);

    let stats = |node: usize| {
        handle
            .tasks
            .snapshot()
            .into_iter()
            .find(|(n, _, _)| *n == node)
            .map(|(_, _, s)| s)
            .expect("the node's task")
    };
    let (source, consumer) = (stats(fast), stats(slow));
    let at = |s: [u64; TASK_STATS], stat: TaskStat| s[stat as usize];
    let ran_ms = (BATCHES as u64) * SLOW.as_millis() as u64;
    // The source spends most of the run waiting for room.
    assert!(
        at(source, TaskStat::Backpressured) > ran_ms / 2,
        "the source was backpressured {} ms of a run of at least {ran_ms} ms",
        at(source, TaskStat::Backpressured)
    );
    // Its channel was full (in thousandths), as seen from both ends.
    assert!(
        output_fill >= 900,
        "the source's output fill: {output_fill}"
    );
    assert!(
        input_fill >= 900,
        "the slow task's input fill: {input_fill}"
    );
    // The slow task is busy, hardly ever idle, and never backpressured (it emits nothing).
    assert!(at(consumer, TaskStat::Busy) >= ran_ms * 9 / 10);
    assert_eq!(at(consumer, TaskStat::Backpressured), 0);
    // Every byte written to the channel is read from it: the Arrow size of the rows.
    let bytes = (BATCHES * ROWS_PER_BATCH * 8) as u64;
    assert_eq!(at(source, TaskStat::BytesOut), bytes);
    assert_eq!(at(consumer, TaskStat::BytesIn), bytes);
    assert_eq!(
        at(source, TaskStat::BytesIn),
        0,
        "a source has no input channel"
    );
}
