//! Checkpoints end to end in the runtime: a job with two source subtasks, a hash exchange
//! (so barriers are aligned over two channels) and a keyed running sum is stopped in the
//! middle, restored from its latest checkpoint and run to the end. A two-phase-commit sink
//! publishes rows only when their checkpoint completes; the published rows must equal those
//! of an uninterrupted run, none lost and none twice. A second test fails the commit of the
//! final checkpoint (taken when the input ends) and runs the job again from it.

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, CheckpointId, Result};
use sluice_engine::{
    restore_point, run_job, CheckpointConfig, Input, JobGraph, JobHandle, Node, NodeKind, Operator,
    OperatorFactory, Output, Partitioning, RestoreMode, SourceFactory, SourcePoll, SourceReader,
    StateReader, StateWriter, SubtaskContext,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROWS_PER_SUBTASK: i64 = 6000;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

/// Emits (key, value) rows `i % 7, i` for i in its range, 10 rows a poll, a little slowly.
struct Numbers;
struct NumbersReader {
    next: i64,
    end: i64,
}
impl SourceFactory for Numbers {
    fn name(&self) -> String {
        "numbers".into()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let start = ctx.subtask_index as i64 * ROWS_PER_SUBTASK;
        Ok(Box::new(NumbersReader {
            next: start,
            end: start + ROWS_PER_SUBTASK,
        }))
    }
}
impl SourceReader for NumbersReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        if self.next >= self.end {
            return Ok(SourcePoll::End);
        }
        std::thread::sleep(Duration::from_millis(1));
        let n = 10.min(self.end - self.next);
        let v: Vec<i64> = (self.next..self.next + n).collect();
        self.next += n;
        let k: Vec<i64> = v.iter().map(|x| x % 7).collect();
        let b = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
        )?;
        Ok(SourcePoll::Batch(ChangeBatch::inserts(b)))
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

/// A running sum per key: emits (key, sum so far) for every row.
struct RunningSum;
struct RunningSumOp {
    sums: BTreeMap<i64, i64>,
}
impl OperatorFactory for RunningSum {
    fn name(&self) -> String {
        "sum".into()
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(RunningSumOp {
            sums: BTreeMap::new(),
        }))
    }
}
impl Operator for RunningSumOp {
    fn process_batch(&mut self, _i: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let k = batch.data.column(0).as_primitive::<Int64Type>().clone();
        let v = batch.data.column(1).as_primitive::<Int64Type>().clone();
        let mut sums = Vec::new();
        for i in 0..k.len() {
            let s = self.sums.entry(k.value(i)).or_default();
            *s += v.value(i);
            sums.push(*s);
        }
        let b = RecordBatch::try_new(
            schema(),
            vec![Arc::new(k), Arc::new(Int64Array::from(sums))],
        )?;
        out.batch(ChangeBatch::inserts(b));
        Ok(())
    }
    fn snapshot_state(&mut self, _c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        state.put_u64(self.sums.len() as u64);
        for (k, s) in &self.sums {
            state.put_i64(*k);
            state.put_i64(*s);
        }
        Ok(())
    }
    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        for _ in 0..state.count()? {
            let k = state.i64()?;
            let s = state.i64()?;
            self.sums.insert(k, s);
        }
        Ok(())
    }
}

/// Publishes rows to `published` when their checkpoint completes; what the end of the input
/// leaves is published with the final checkpoint. Published rows by the checkpoint that
/// committed them: publishing is idempotent, as a real two-phase-commit sink's commit must be.
type Published = Arc<Mutex<BTreeMap<CheckpointId, Vec<(i64, i64)>>>>;

#[derive(Clone, Default)]
struct Collect {
    published: Published,
    /// Fails the commit of the final checkpoint once, as a crash there would.
    fail_final_commit: Arc<AtomicBool>,
}
impl Collect {
    fn rows(&self) -> Vec<(i64, i64)> {
        self.published
            .lock()
            .unwrap()
            .values()
            .flatten()
            .copied()
            .collect()
    }
}
struct CollectOp {
    published: Published,
    fail_final_commit: Arc<AtomicBool>,
    current: Vec<(i64, i64)>,
    /// Pre-committed rows by checkpoint (`MAX`: the end of the input).
    pending: BTreeMap<CheckpointId, Vec<(i64, i64)>>,
    ended: bool,
}
impl OperatorFactory for Collect {
    fn name(&self) -> String {
        "collect".into()
    }
    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(CollectOp {
            published: self.published.clone(),
            fail_final_commit: self.fail_final_commit.clone(),
            current: Vec::new(),
            pending: BTreeMap::new(),
            ended: false,
        }))
    }
}
impl CollectOp {
    fn publish(&mut self, c: CheckpointId, rows: Vec<(i64, i64)>) {
        self.published.lock().unwrap().entry(c).or_insert(rows);
    }

    /// Publishes what the checkpoints up to `c` pre-committed.
    fn publish_up_to(&mut self, c: CheckpointId) {
        let later = match c.checked_add(1) {
            Some(next) => self.pending.split_off(&next),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.pending, later);
        for (id, rows) in due {
            self.publish(id, rows);
        }
    }
}
impl Operator for CollectOp {
    fn process_batch(&mut self, _i: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        let k = batch.data.column(0).as_primitive::<Int64Type>();
        let v = batch.data.column(1).as_primitive::<Int64Type>();
        for i in 0..k.len() {
            self.current.push((k.value(i), v.value(i)));
        }
        Ok(())
    }
    fn snapshot_state(&mut self, c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        if !self.ended {
            let rows = std::mem::take(&mut self.current);
            self.pending.insert(c, rows);
        }
        state.put_u64(self.pending.len() as u64);
        for (id, rows) in &self.pending {
            state.put_u64(*id);
            state.put_u64(rows.len() as u64);
            for (k, v) in rows {
                state.put_i64(*k);
                state.put_i64(*v);
            }
        }
        Ok(())
    }
    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        // The restored checkpoint is complete: commit what it pre-committed.
        for _ in 0..state.count()? {
            let id = state.u64()?;
            let mut rows = Vec::new();
            for _ in 0..state.count()? {
                rows.push((state.i64()?, state.i64()?));
            }
            self.publish(id, rows);
        }
        Ok(())
    }
    fn notify_checkpoint_complete(&mut self, c: CheckpointId) -> Result<()> {
        if self.ended && self.fail_final_commit.swap(false, Ordering::SeqCst) {
            return Err(sluice_common::SluiceError::Runtime(
                "the final commit failed (a crash, simulated)".into(),
            ));
        }
        self.publish_up_to(c);
        Ok(())
    }
    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        let rows = std::mem::take(&mut self.current);
        self.pending.insert(CheckpointId::MAX, rows);
        self.ended = true;
        Ok(())
    }
}

fn graph(dir: &std::path::Path, sink: Collect) -> JobGraph {
    let mut g = JobGraph::new("restore-test");
    let mut config = CheckpointConfig::new(dir);
    config.interval = Some(Duration::from_millis(40));
    config.num_retained = 2;
    g.checkpoint = config;
    let src = g.add(Node {
        name: "numbers".into(),
        parallelism: 2,
        kind: NodeKind::Source(Arc::new(Numbers)),
        inputs: vec![],
    });
    let sum = g.add(Node {
        name: "sum".into(),
        parallelism: 2,
        kind: NodeKind::Operator(Arc::new(RunningSum)),
        inputs: vec![Input {
            node: src,
            partitioning: Partitioning::Hash(vec![0]),
        }],
    });
    g.add(Node {
        name: "collect".into(),
        parallelism: 1,
        kind: NodeKind::Operator(Arc::new(sink)),
        inputs: vec![Input {
            node: sum,
            partitioning: Partitioning::Single,
        }],
    });
    g
}

/// The final sum per key: the largest running sum (sums only grow).
fn finals(rows: &[(i64, i64)]) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for (k, s) in rows {
        let e = m.entry(*k).or_insert(*s);
        *e = (*e).max(*s);
    }
    m
}

#[test]
fn a_stopped_job_resumes_from_its_checkpoint_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    // The uninterrupted run.
    let whole = Collect::default();
    let g = graph(&tmp.path().join("whole"), whole.clone());
    let report = run_job(&g, &JobHandle::default(), None).unwrap();
    assert!(!report.cancelled);
    assert!(
        report.checkpoints.iter().any(|c| c.status == "Completed"),
        "{:?}",
        report.checkpoints
    );
    let expected = whole.rows();
    assert_eq!(expected.len() as i64, 2 * ROWS_PER_SUBTASK);
    // The history stays beside the (deleted) checkpoints, for a dashboard or a person.
    let history = std::fs::read_to_string(
        tmp.path()
            .join("whole")
            .join("checkpoints")
            .join("history.json"),
    )
    .unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let last = history.as_array().and_then(|h| h.last()).expect("entries");
    assert_eq!(last["status"], "Completed", "{last}");
    assert!(last["state_size"].as_u64().unwrap() > 0, "{last}");
    let operators: Vec<&str> = last["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(operators, ["numbers", "sum", "collect"], "{last}");

    // Stopped after some checkpoints, then restored.
    let dir = tmp.path().join("stopped");
    let sink = Collect::default();
    let g = graph(&dir, sink.clone());
    let handle = JobHandle::default();
    let stopper = handle.clone();
    let t = std::thread::spawn(move || {
        while stopper.checkpoints.completed() < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        stopper.cancel();
    });
    let report = run_job(&g, &handle, None).unwrap();
    t.join().unwrap();
    assert!(report.cancelled);
    let first = sink.rows();
    assert!(first.len() < expected.len(), "it stopped before the end");

    let restored = restore_point(&g, &g.checkpoint, &RestoreMode::Latest)
        .unwrap()
        .expect("a checkpoint to restore");
    // The same sink (the same "database"): what the restored checkpoint pre-committed may
    // have been published before the stop, or not yet; either way once.
    let g2 = graph(&dir, sink.clone());
    let report = run_job(&g2, &JobHandle::default(), Some(restored)).unwrap();
    assert!(!report.cancelled);
    let all = sink.rows();
    // Running sums depend on how the two sources interleave, which differs from run to run;
    // the number of rows per key and each key's final sum do not.
    let counts = |rows: &[(i64, i64)]| {
        let mut m: BTreeMap<i64, usize> = BTreeMap::new();
        for (k, _) in rows {
            *m.entry(*k).or_default() += 1;
        }
        m
    };
    assert_eq!(all.len(), expected.len(), "no row lost or duplicated");
    assert_eq!(counts(&all), counts(&expected));
    assert_eq!(finals(&all), finals(&expected));
    // A finished job's checkpoints are gone: the next run starts from scratch.
    assert!(restore_point(&g2, &g2.checkpoint, &RestoreMode::Latest)
        .unwrap()
        .is_none());
}

/// The end of the input is committed only by the final checkpoint, which holds every
/// subtask's final state: when that commit fails (as a crash between the end of the input and
/// the end of the job would), the job keeps its checkpoints, and running it again restores the
/// final one, publishes what it pre-committed and replays nothing.
#[test]
fn the_end_of_the_input_commits_with_the_final_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("final");
    let sink = Collect::default();
    sink.fail_final_commit.store(true, Ordering::SeqCst);
    let g = graph(&dir, sink.clone());
    let err = run_job(&g, &JobHandle::default(), None).expect_err("the final commit fails");
    assert!(err.to_string().contains("final commit failed"), "{err}");
    let before = sink.rows().len() as i64;
    assert!(
        before < 2 * ROWS_PER_SUBTASK,
        "what the end of the input left is not published without the final checkpoint"
    );
    let restored = restore_point(&g, &g.checkpoint, &RestoreMode::Latest)
        .unwrap()
        .expect("the final checkpoint is kept");
    let report = run_job(
        &graph(&dir, sink.clone()),
        &JobHandle::default(),
        Some(restored),
    )
    .unwrap();
    assert!(!report.cancelled);
    let rows = sink.rows();
    assert_eq!(
        rows.len() as i64,
        2 * ROWS_PER_SUBTASK,
        "no row lost or duplicated"
    );
    let mut expected = BTreeMap::new();
    for i in 0..2 * ROWS_PER_SUBTASK {
        *expected.entry(i % 7).or_insert(0) += i;
    }
    assert_eq!(finals(&rows), expected);
}

/// A savepoint triggered while the job runs (Flink's `flink savepoint`): the job goes on to
/// the end with every row once, the savepoint commits nothing by itself (the next checkpoint
/// does), and a new run started from it goes on from its state and positions.
#[test]
fn a_savepoint_taken_while_the_job_runs_restores_its_state() {
    use sluice_engine::checkpoint::SavepointStatus;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("running");
    let sink = Collect::default();
    let g = graph(&dir, sink.clone());
    let handle = JobHandle::default();
    let watcher = handle.clone();
    let target = tmp.path().join("savepoints");
    let into = target.clone();
    let t = std::thread::spawn(move || {
        while watcher.checkpoints.completed() < 1 {
            std::thread::sleep(Duration::from_millis(2));
        }
        let request = watcher.savepoint(Some(into), false);
        loop {
            match watcher.savepoint_status(request).expect("a request") {
                SavepointStatus::Completed(path) => return path,
                SavepointStatus::Failed(e) => panic!("the savepoint failed: {e}"),
                _ => {
                    assert!(!watcher.is_cancelled(), "the job does not stop for it");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });
    let report = run_job(&g, &handle, None).unwrap();
    let path = t.join().unwrap();
    assert!(!report.cancelled, "the job ran to its end");
    assert_eq!(report.savepoint, None, "no stop with savepoint");
    assert!(path.starts_with(&target), "{}", path.display());
    let id: CheckpointId = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("savepoint-"))
        .and_then(|n| n.parse().ok())
        .expect("savepoint-<id>");
    let history = &report.checkpoints;
    let entry = history.iter().find(|c| c.id == id).expect("in the history");
    assert!(entry.savepoint && entry.status == "Completed", "{entry:?}");
    assert!(
        history.iter().any(|c| c.id > id && !c.savepoint),
        "checkpoints go on after it: {history:?}"
    );
    let all = sink.rows();
    assert_eq!(all.len() as i64, 2 * ROWS_PER_SUBTASK, "every row once");

    // A new run from the savepoint: a new "database" gets what the savepoint pre-committed
    // and everything after it; the running sums go on from the savepoint's state.
    let again = Collect::default();
    let g2 = graph(&tmp.path().join("from-savepoint"), again.clone());
    let restored = restore_point(&g2, &g2.checkpoint, &RestoreMode::Savepoint(path))
        .unwrap()
        .expect("the savepoint");
    let report = run_job(&g2, &JobHandle::default(), Some(restored)).unwrap();
    assert!(!report.cancelled);
    let rows = again.rows();
    assert!(
        !rows.is_empty() && rows.len() < all.len(),
        "{} rows after the savepoint of {}",
        rows.len(),
        all.len()
    );
    assert_eq!(finals(&rows), finals(&all));
}

/// Numbers that decline checkpoints while they have read less than half of their range, and
/// fail once (the first time they pass three quarters of it) when `fail` is set.
struct Declining {
    fail: Arc<AtomicBool>,
}
struct DecliningReader {
    inner: NumbersReader,
    start: i64,
    fail: Arc<AtomicBool>,
}
impl SourceFactory for Declining {
    fn name(&self) -> String {
        "declining".into()
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let start = ctx.subtask_index as i64 * ROWS_PER_SUBTASK;
        Ok(Box::new(DecliningReader {
            inner: NumbersReader {
                next: start,
                end: start + ROWS_PER_SUBTASK,
            },
            start,
            fail: self.fail.clone(),
        }))
    }
}
impl SourceReader for DecliningReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        if self.inner.next - self.start >= ROWS_PER_SUBTASK * 3 / 4
            && self.fail.swap(false, Ordering::SeqCst)
        {
            return Err(sluice_common::SluiceError::Runtime(
                "the source failed (simulated)".into(),
            ));
        }
        self.inner.poll()
    }
    fn checkpoint_declined(&self) -> Option<String> {
        (self.inner.next - self.start < ROWS_PER_SUBTASK / 2).then(|| "still warming up".into())
    }
    fn snapshot_position(&mut self, c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        self.inner.snapshot_position(c, state)
    }
    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.inner.restore_position(state)
    }
}

fn declining_graph(dir: &std::path::Path, sink: Collect, fail: Arc<AtomicBool>) -> JobGraph {
    let mut g = graph(dir, sink);
    g.nodes[0].kind = NodeKind::Source(Arc::new(Declining { fail }));
    g.restart = sluice_engine::RestartStrategy::FixedDelay {
        attempts: 1,
        delay: Duration::from_millis(10),
    };
    g
}

#[test]
fn a_source_declines_checkpoints_and_a_failed_job_restarts_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = Collect::default();
    run_job(
        &graph(&tmp.path().join("whole"), whole.clone()),
        &JobHandle::default(),
        None,
    )
    .unwrap();
    let expected = finals(&whole.rows());

    // Declined checkpoints fail, the job goes on, later ones complete.
    let sink = Collect::default();
    let g = declining_graph(
        &tmp.path().join("declining"),
        sink.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    let report = run_job(&g, &JobHandle::default(), None).unwrap();
    let statuses: Vec<&str> = report
        .checkpoints
        .iter()
        .map(|c| c.status.as_str())
        .collect();
    assert!(
        statuses.iter().any(|s| s.contains("still warming up")),
        "{statuses:?}"
    );
    assert!(statuses.contains(&"Completed"), "{statuses:?}");
    assert_eq!(finals(&sink.rows()), expected);
    assert_eq!(sink.rows().len() as i64, 2 * ROWS_PER_SUBTASK);

    // A source that fails once: the job restarts from its latest checkpoint, and the sink
    // publishes every row once.
    let sink = Collect::default();
    let g = declining_graph(
        &tmp.path().join("failing"),
        sink.clone(),
        Arc::new(AtomicBool::new(true)),
    );
    let handle = JobHandle::default();
    let mut failures = Vec::new();
    let report =
        sluice_engine::run_job_restarting(&g, &handle, None, RestoreMode::Latest, &mut |f| {
            failures.push((f.error.to_string(), f.restart_in.is_some()))
        })
        .unwrap();
    assert!(!report.cancelled);
    assert_eq!(
        failures,
        [("the source failed (simulated)".to_string(), true)]
    );
    assert_eq!(handle.restarts.load(Ordering::Relaxed), 1);
    assert_eq!(finals(&sink.rows()), expected);
    assert_eq!(sink.rows().len() as i64, 2 * ROWS_PER_SUBTASK);
}
