//! A source subtask that has no data must not hold back the watermark of the others once the
//! idle timeout has passed (Flink's `table.exec.source.idle-timeout`), and must hold it back
//! without the timeout.

use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, EventTime, Result};
use sluice_engine::{
    run_job, Input, JobGraph, JobHandle, Node, NodeKind, Operator, OperatorFactory, Output,
    Partitioning, SourceFactory, SourcePoll, SourceReader, StateReader, StateWriter,
    SubtaskContext,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subtask 0 emits one batch with event time 1000, then nothing; subtask 1 never has data.
struct Src;
struct Reader {
    sent: bool,
    subtask: usize,
}

impl SourceFactory for Src {
    fn name(&self) -> String {
        "test".into()
    }
    fn is_bounded(&self) -> bool {
        false
    }
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(Reader {
            sent: false,
            subtask: ctx.subtask_index,
        }))
    }
}

impl SourceReader for Reader {
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_bool(self.sent);
        Ok(())
    }
    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.sent = state.bool()?;
        Ok(())
    }
    fn poll(&mut self) -> Result<SourcePoll> {
        if self.subtask == 0 && !self.sent {
            self.sent = true;
            let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
            let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1000]))])?;
            return Ok(SourcePoll::Batch(ChangeBatch::inserts(b)));
        }
        std::thread::sleep(Duration::from_millis(2));
        Ok(SourcePoll::Idle)
    }
}

/// Emits the watermark of its rows' event time, as a watermark assigner does.
struct Assign;
impl OperatorFactory for Assign {
    fn name(&self) -> String {
        "assign".into()
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(AssignOp))
    }
}
struct AssignOp;
impl Operator for AssignOp {
    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        out.batch(batch);
        out.watermark(1000);
        Ok(())
    }
}

/// Records the watermarks it sees.
struct Record(Arc<Mutex<Vec<EventTime>>>);
impl OperatorFactory for Record {
    fn name(&self) -> String {
        "record".into()
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(RecordOp(self.0.clone())))
    }
}
struct RecordOp(Arc<Mutex<Vec<EventTime>>>);
impl Operator for RecordOp {
    fn process_batch(
        &mut self,
        _input: usize,
        _batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        Ok(())
    }
    fn process_watermark(&mut self, w: EventTime, _out: &mut Output) -> Result<()> {
        self.0.lock().unwrap().push(w);
        Ok(())
    }
}

fn watermarks_seen(idle_timeout: Option<Duration>, run_for: Duration) -> Vec<EventTime> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut g = JobGraph::new("idle");
    g.source_idle_timeout = idle_timeout;
    let s = g.add(Node {
        name: "src".into(),
        parallelism: 2,
        kind: NodeKind::Source(Arc::new(Src)),
        inputs: vec![],
    });
    let a = g.add(Node {
        name: "assign".into(),
        parallelism: 2,
        kind: NodeKind::Operator(Arc::new(Assign)),
        inputs: vec![Input {
            node: s,
            partitioning: Partitioning::Forward,
        }],
    });
    g.add(Node {
        name: "record".into(),
        parallelism: 1,
        kind: NodeKind::Operator(Arc::new(Record(seen.clone()))),
        inputs: vec![Input {
            node: a,
            partitioning: Partitioning::Single,
        }],
    });
    let handle = JobHandle::default();
    let stopper = handle.clone();
    let stop = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(10));
        }
        stopper.cancel();
    });
    let report = run_job(&g, &handle, None).unwrap();
    stop.join().unwrap();
    assert!(report.cancelled);
    let v = seen.lock().unwrap().clone();
    v
}

#[test]
fn an_idle_subtask_holds_the_watermark_back_without_a_timeout() {
    assert_eq!(
        watermarks_seen(None, Duration::from_millis(300)),
        Vec::<EventTime>::new()
    );
}

#[test]
fn an_idle_subtask_is_left_out_after_the_timeout() {
    let seen = watermarks_seen(Some(Duration::from_millis(50)), Duration::from_millis(600));
    assert_eq!(seen, vec![1000]);
}
