//! Runs a [`JobGraph`]: chains nodes into tasks, starts one thread per subtask of each task,
//! wires them with bounded channels (one per pair of upstream and downstream subtask, read
//! through an [`InputGate`]) and carries watermarks. The first error cancels the whole job.
//!
//! Checkpoint barriers travel with the data: a source subtask injects one when the
//! coordinator triggers a checkpoint, the input gate of a task with several input channels
//! aligns them, and each task takes a snapshot of its operators as the barrier passes (the
//! synchronous part: operator bytes and O(1) views of keyed state), passes the barrier on and
//! hands the snapshot to its writer thread, which writes and acknowledges it while the task
//! goes on (see [`crate::checkpoint`]).

use crate::checkpoint::coordinator::{Coordinator, SubtaskKey, TaskEvent};
use crate::checkpoint::storage::{self, NodeInfo, Restored};
use crate::checkpoint::writer::{finish_all, SnapshotWriter, TakenSection};
use crate::checkpoint::{CheckpointConfig, CheckpointShared, RestoreMode};
use crate::exchange::{hash_targets, split_by_target};
use crate::graph::{JobGraph, NodeKind, Partitioning};
use crate::input_gate::{GateEvent, InputGate};
use crate::job::{JobHandle, JobReport};
use crate::keyed::{StateBackendKind, StateResources};
use crate::operator::{Operator, Output, SubtaskContext};
use crate::preview::PreviewTap;
use crate::source::{SourcePoll, SourceReader};
use crate::state::{StateReader, StateWriter};
use crate::task_metrics::{batch_bytes, OperatorMetrics, TaskMetrics, TimeCounter};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use metrics::Counter;
use sluice_common::{CheckpointId, Message, Result, SluiceError, MAX_WATERMARK};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages one channel buffers before its sender blocks (the backpressure).
pub const CHANNEL_CAPACITY_MESSAGES: usize = 16;

/// How long a source sleeps when it has nothing.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// How long an operator task waits for input before it looks for completed checkpoints and
/// due processing-time timers.
const NOTIFY_POLL: Duration = Duration::from_millis(20);

/// The channels into a task over one edge: `[upstream subtask][downstream subtask]`.
type ChannelGrid = Vec<Vec<Option<Sender<Message>>>>;

/// The input channels of one subtask, each with the logical input it belongs to.
type InputChannels = Vec<(Receiver<Message>, usize)>;

/// One chain of nodes run as one task.
struct Task {
    nodes: Vec<usize>,
}

/// Where a task sends its output: to the subtasks of one consumer task, over one edge.
struct Router {
    partitioning: Partitioning,
    /// The channel from this subtask to each subtask of the consumer (`None` where a
    /// forward edge has none).
    senders: Vec<Option<Sender<Message>>>,
    /// This subtask's index (the target of a forward edge).
    subtask: usize,
    max_parallelism: usize,
    round_robin: usize,
    /// The time spent waiting for room in a full channel.
    backpressured: TimeCounter,
    /// The bytes of the rows sent.
    bytes_out: Counter,
}

impl Router {
    fn send(&mut self, msg: Message) -> Result<()> {
        let n = self.senders.len();
        match msg {
            Message::Data(batch) => match &self.partitioning {
                Partitioning::Forward => self.deliver(self.subtask, Message::Data(batch)),
                Partitioning::Single => self.deliver(0, Message::Data(batch)),
                Partitioning::Rebalance => {
                    self.round_robin = (self.round_robin + 1) % n;
                    self.deliver(self.round_robin, Message::Data(batch))
                }
                Partitioning::Broadcast => {
                    for i in 0..n {
                        self.deliver(i, Message::Data(batch.clone()))?;
                    }
                    Ok(())
                }
                Partitioning::Hash(keys) => {
                    let targets = hash_targets(&batch, keys, self.max_parallelism, n)?;
                    for (i, part) in split_by_target(&batch, &targets, n)?
                        .into_iter()
                        .enumerate()
                    {
                        if let Some(p) = part {
                            self.deliver(i, Message::Data(p))?;
                        }
                    }
                    Ok(())
                }
            },
            // Split status is for the source's own chain.
            Message::Split(..) => Ok(()),
            other => {
                if self.partitioning == Partitioning::Forward {
                    return self.deliver(self.subtask, other);
                }
                for i in 0..n {
                    self.deliver(i, other.clone())?;
                }
                Ok(())
            }
        }
    }

    /// How full its channels are: what they buffer over what they can hold.
    fn fill(&self) -> (usize, usize) {
        self.senders.iter().flatten().fold((0, 0), |(q, c), tx| {
            (q + tx.len(), c + tx.capacity().unwrap_or(0))
        })
    }

    fn deliver(&mut self, target: usize, msg: Message) -> Result<()> {
        if let Message::Data(b) = &msg {
            self.bytes_out.increment(batch_bytes(b));
        }
        match self.senders.get(target) {
            Some(Some(tx)) => match tx.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(msg)) => {
                    // The consumer is behind: wait for room (the backpressure), timed.
                    let waited = Instant::now();
                    let sent = tx.send(msg).map_err(|_| SluiceError::Cancelled);
                    self.backpressured.add(waited.elapsed());
                    sent
                }
                Err(TrySendError::Disconnected(_)) => Err(SluiceError::Cancelled),
            },
            _ => Err(SluiceError::Runtime(format!(
                "no channel to subtask {target} of the next task"
            ))),
        }
    }
}

/// The running state of one subtask of a task.
struct Subtask {
    /// The node of each operator in `operators`.
    nodes: Vec<usize>,
    /// The node of the task's source, if it has one.
    source_node: Option<usize>,
    operators: Vec<Box<dyn Operator>>,
    /// The metrics of each operator in `operators`.
    metrics: Vec<OperatorMetrics>,
    /// For each operator in `operators` that is a sink (it has no consumers): what takes its
    /// newest rows for the preview.
    previews: Vec<Option<PreviewTap>>,
    /// The source's, if the task has one.
    source_metrics: Option<OperatorMetrics>,
    task_metrics: TaskMetrics,
    routers: Vec<Router>,
    checkpoints: Arc<CheckpointShared>,
    /// Writes snapshots and speaks to the coordinator.
    writer: SnapshotWriter,
    /// The latest complete checkpoint the operators were told of.
    notified: CheckpointId,
    /// True if the job takes checkpoints: the end of the input then waits for a checkpoint
    /// that holds the subtask's final state before its sinks commit (see [`Subtask::end`]).
    checkpointing: bool,
    handle: JobHandle,
}

impl Subtask {
    /// Pushes `msg` into operator `from` of the chain and everything it emits further down,
    /// then out through the routers.
    fn push(&mut self, from: usize, input: usize, msg: Message) -> Result<()> {
        let mut pending = vec![msg];
        for (pos, op) in self.operators.iter_mut().enumerate().skip(from) {
            let mut out = Output::default();
            let logical_input = if pos == from { input } else { 0 };
            let metrics = &self.metrics[pos];
            let preview = &mut self.previews[pos];
            for m in pending.drain(..) {
                match &m {
                    Message::Data(b) => {
                        metrics.records_in.increment(b.num_rows() as u64);
                        if let Some(tap) = preview {
                            tap.offer(b);
                        }
                    }
                    Message::Watermark(w) => metrics.input_watermark(*w),
                    _ => {}
                }
                match m {
                    Message::Data(b) => op.process_batch(logical_input, b, &mut out)?,
                    Message::Watermark(w) => op.process_watermark(w, &mut out)?,
                    Message::Split(split, status) => op.process_split(split, status, &mut out)?,
                    other => out_passthrough(&mut out, other),
                }
            }
            pending = out.drain().collect();
            count_out(metrics, &pending);
            if pending.is_empty() {
                return Ok(());
            }
        }
        for m in pending {
            self.emit(m)?;
        }
        Ok(())
    }

    fn emit(&mut self, m: Message) -> Result<()> {
        let last = self.routers.len().saturating_sub(1);
        for (i, r) in self.routers.iter_mut().enumerate() {
            if i == last {
                return r.send(m);
            }
            r.send(m.clone())?;
        }
        Ok(())
    }

    /// Ends the input of every operator (only when the input really ended) and closes them
    /// in order, passing what each emits down the chain.
    fn close(&mut self, end_of_input: bool) -> Result<()> {
        if end_of_input {
            self.each_in_order(|op, out| op.end_input(out))?;
        }
        self.each_in_order(|op, out| op.close(out))
    }

    /// Calls `f` on every operator in chain order, passing what each emits down the chain.
    fn each_in_order(
        &mut self,
        mut f: impl FnMut(&mut Box<dyn Operator>, &mut Output) -> Result<()>,
    ) -> Result<()> {
        for pos in 0..self.operators.len() {
            let mut out = Output::default();
            f(&mut self.operators[pos], &mut out)?;
            let emitted: Vec<Message> = out.drain().collect();
            count_out(&self.metrics[pos], &emitted);
            for m in emitted {
                if pos + 1 < self.operators.len() {
                    self.push(pos + 1, 0, m)?;
                } else {
                    self.emit(m)?;
                }
            }
        }
        Ok(())
    }

    /// Fires the processing-time timers that are due, operator by operator.
    fn fire_processing_timers(&mut self) -> Result<()> {
        self.each_in_order(|op, out| {
            let due = op
                .keyed_store()
                .and_then(|s| s.next_processing_timer().map(|t| (t, s.now_ms())))
                .filter(|(t, now)| t <= now);
            match due {
                Some((_, now)) => op.on_processing_time(now, out),
                None => Ok(()),
            }
        })
    }

    /// Samples how full its input (from `gate`, if it has one) and output channels are, at
    /// most every so often.
    fn sample_fill(&mut self, now: Instant, gate: Option<&InputGate>) {
        if !self.task_metrics.fill_due(now) {
            return;
        }
        let (queued, capacity) = self
            .routers
            .iter()
            .map(Router::fill)
            .fold((0, 0), |(q, c), (rq, rc)| (q + rq, c + rc));
        let output = if capacity == 0 {
            0.0
        } else {
            queued as f64 / capacity as f64
        };
        self.task_metrics
            .set_fill(gate.map(InputGate::fill), output);
    }

    fn end_outputs(&mut self) {
        for r in &mut self.routers {
            let _ = r.send(Message::EndOfStream);
        }
    }

    /// The state of the source (if any) and of every operator, by node, as the barrier
    /// passes: the operators' own bytes and views of their keyed state.
    fn snapshot(
        &mut self,
        id: CheckpointId,
        reader: Option<&mut Box<dyn SourceReader>>,
    ) -> Result<Vec<TakenSection>> {
        let mut sections = Vec::with_capacity(self.operators.len() + 1);
        if let (Some(r), Some(node)) = (reader, self.source_node) {
            let mut w = StateWriter::default();
            r.snapshot_position(id, &mut w)?;
            sections.push(TakenSection {
                node,
                operator: w.finish(),
                keyed: None,
            });
        }
        for (op, &node) in self.operators.iter_mut().zip(&self.nodes) {
            let mut w = StateWriter::default();
            op.snapshot_state(id, &mut w)?;
            let keyed = op.keyed_store().map(|s| s.snapshot(id));
            sections.push(TakenSection {
                node,
                operator: w.finish(),
                keyed,
            });
        }
        Ok(sections)
    }

    /// The barrier of checkpoint `id` has reached this task (on every input): snapshot,
    /// pass the barrier on, and hand the snapshot to the writer.
    fn checkpoint(
        &mut self,
        id: CheckpointId,
        reader: Option<&mut Box<dyn SourceReader>>,
    ) -> Result<()> {
        if let Some(why) = reader.as_ref().and_then(|r| r.checkpoint_declined()) {
            self.emit(Message::Barrier(id))?;
            return self.writer.decline(id, why);
        }
        let started = Instant::now();
        let sections = self.snapshot(id, reader)?;
        let sync_ms = started.elapsed().as_millis() as u64;
        self.emit(Message::Barrier(id))?;
        let dir = match self.checkpoints.pending_dir.lock() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let dir = dir.filter(|(pending, _)| *pending == id).map(|(_, d)| d);
        let savepoint = self.checkpoints.savepoint_in_flight.load(Ordering::SeqCst) == id;
        self.writer
            .checkpoint(id, dir, savepoint, sections, sync_ms)
    }

    /// Tells the operators (and the source) of a newly completed checkpoint.
    fn notify(&mut self, reader: Option<&mut Box<dyn SourceReader>>) -> Result<()> {
        let completed = self.checkpoints.completed();
        if completed <= self.notified {
            return Ok(());
        }
        self.notified = completed;
        self.notify_all(completed, reader)
    }

    fn notify_all(
        &mut self,
        id: CheckpointId,
        reader: Option<&mut Box<dyn SourceReader>>,
    ) -> Result<()> {
        if let Some(r) = reader {
            r.notify_checkpoint_complete(id)?;
        }
        for op in &mut self.operators {
            if let Some(store) = op.keyed_store() {
                store.notify_checkpoint_complete(id);
            }
            op.notify_checkpoint_complete(id)?;
        }
        Ok(())
    }

    /// The input has ended: end every operator's input, end the outputs and hand the final
    /// state to the coordinator, then close.
    ///
    /// With checkpoints, this is Flink's final checkpoint: `end_input` only pre-commits what
    /// two-phase-commit sinks hold, and the subtask waits for a checkpoint that holds its final
    /// state (one triggered after it finished) before telling its operators, with
    /// `CheckpointId::MAX`: that checkpoint holds everything they pre-committed, what the end
    /// of the input left included, so they commit it all. A crash before that checkpoint
    /// restores an earlier one and replays, with nothing of the replayed part committed
    /// twice; a crash after it restores the final state. A cancel while waiting closes
    /// without committing.
    fn end(&mut self, mut reader: Option<&mut Box<dyn SourceReader>>) -> Result<()> {
        if !self.checkpointing {
            self.close(true)?;
            self.end_outputs();
            return self.finished(reader);
        }
        self.each_in_order(|op, out| op.end_input(out))?;
        self.end_outputs();
        // Any checkpoint after the latest triggered or completed one holds the final state.
        let before = self
            .checkpoints
            .triggered
            .load(Ordering::SeqCst)
            .max(self.checkpoints.completed());
        self.finished(reader.as_deref_mut())?;
        while self.checkpoints.completed() <= before {
            if self.handle.is_cancelled() {
                return self.each_in_order(|op, out| op.close(out));
            }
            std::thread::sleep(NOTIFY_POLL);
        }
        self.notify_all(CheckpointId::MAX, reader)?;
        self.each_in_order(|op, out| op.close(out))
    }

    /// This subtask has ended its output: tell the coordinator its final state.
    fn finished(&mut self, reader: Option<&mut Box<dyn SourceReader>>) -> Result<()> {
        let mut sections = self.snapshot(self.checkpoints.completed(), reader)?;
        if !self.checkpointing {
            // No final checkpoint will hold it: do not write the keyed state out.
            for s in &mut sections {
                s.keyed = None;
            }
        }
        self.writer.finished(sections)
    }
}

/// Counts what an operator emitted.
fn count_out(metrics: &OperatorMetrics, emitted: &[Message]) {
    for m in emitted {
        match m {
            Message::Data(b) => metrics.records_out.increment(b.num_rows() as u64),
            Message::Watermark(w) => metrics.output_watermark(*w),
            _ => {}
        }
    }
}

fn out_passthrough(out: &mut Output, m: Message) {
    match m {
        Message::Data(b) => out.batch(b),
        Message::Idle => out.idle(),
        _ => {}
    }
}

/// Finds the checkpoint a job starts from: the savepoint it is told to use, or its latest
/// complete checkpoint that reads back whole (a corrupt or truncated one is reported and the
/// one before it used). `None`: start from scratch.
pub fn restore_point(
    graph: &JobGraph,
    config: &CheckpointConfig,
    mode: &RestoreMode,
) -> Result<Option<Restored>> {
    let restored = match mode {
        RestoreMode::Savepoint(path) => storage::load(path).map_err(|e| {
            SluiceError::Config(format!(
                "cannot restore from savepoint {}: {e}",
                path.display()
            ))
        })?,
        RestoreMode::Latest => {
            let mut found = None;
            let mut corrupt = Vec::new();
            for (id, path) in storage::list(&config.dir) {
                if !storage::is_complete(&path) {
                    continue;
                }
                match storage::load(&path) {
                    Ok(r) => {
                        found = Some(r);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "checkpoint {id} of job '{}' cannot be used: {e}; trying the previous complete checkpoint",
                            graph.name
                        );
                        corrupt.push(format!("checkpoint {id}: {e}"));
                    }
                }
            }
            match found {
                Some(r) => r,
                None if corrupt.is_empty() => return Ok(None),
                None => {
                    return Err(SluiceError::Config(format!(
                        "job '{}' has checkpoints in {}, but none is readable ({}); delete the directory to start from scratch",
                        graph.name,
                        config.dir.display(),
                        corrupt.join("; ")
                    )))
                }
            }
        }
    };
    let nodes = node_infos(graph);
    let taken = &restored.metadata.nodes;
    // The same operators in the same order; their parallelism may differ (keyed state is
    // redistributed by key group, sources' splits and operator state are handed over, see
    // `SourceReader::restore_rescaled` and `Operator::restore_rescaled`).
    let same_shape =
        taken.len() == nodes.len() && taken.iter().zip(&nodes).all(|(a, b)| a.name == b.name);
    if !same_shape {
        let describe = |n: &[NodeInfo]| {
            n.iter()
                .map(|x| format!("{} (parallelism {})", x.name, x.parallelism))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(SluiceError::Config(format!(
            "checkpoint {} in {} was taken from a different job: it has [{}], this job has [{}]; give the job another 'pipeline.name', or restore with the query it was taken with",
            restored.metadata.id,
            restored.path.display(),
            describe(taken),
            describe(&nodes)
        )));
    }
    Ok(Some(restored))
}

/// An error of a restore at another parallelism, naming the subtask.
fn rescale_error(owner: &str, e: SluiceError) -> SluiceError {
    match e {
        SluiceError::Config(m) => SluiceError::Config(format!("{owner}: {m}")),
        SluiceError::Runtime(m) => SluiceError::Runtime(format!("{owner}: {m}")),
        other => other,
    }
}

/// Readers of the old subtasks' states, each with its index (`names` for errors).
fn readers<'a>(all: &'a [(usize, Vec<u8>)], names: &'a [String]) -> Vec<(usize, StateReader<'a>)> {
    all.iter()
        .zip(names)
        .map(|((j, b), name)| (*j, StateReader::new(b, name)))
        .collect()
}

/// What a restored checkpoint holds for one subtask of a node.
enum RestoredState {
    /// Nothing (no checkpoint, or the subtask wrote nothing).
    None,
    /// What the same subtask wrote, at the same parallelism.
    Same(Vec<u8>),
    /// The node ran at parallelism `old`: what every old subtask that wrote something wrote,
    /// by old subtask index.
    Rescaled {
        old: usize,
        all: Vec<(usize, Vec<u8>)>,
    },
}

impl RestoredState {
    fn of(r: &Restored, node: usize, subtask: usize, parallelism: usize) -> Self {
        let old = r
            .metadata
            .nodes
            .get(node)
            .map(|n| n.parallelism)
            .unwrap_or(parallelism);
        if old == parallelism {
            return match r.state(node, subtask) {
                Some(b) if !b.is_empty() => RestoredState::Same(b.to_vec()),
                _ => RestoredState::None,
            };
        }
        let all = (0..old)
            .filter_map(|j| {
                r.state(node, j)
                    .filter(|b| !b.is_empty())
                    .map(|b| (j, b.to_vec()))
            })
            .collect();
        RestoredState::Rescaled { old, all }
    }
}

fn node_infos(graph: &JobGraph) -> Vec<NodeInfo> {
    graph
        .nodes
        .iter()
        .map(|n| NodeInfo {
            name: n.name.clone(),
            parallelism: n.parallelism,
        })
        .collect()
}

/// Runs `graph` to the end (bounded input) or until `handle` is cancelled, and returns the
/// job's counters. With `restored`, every operator and source starts from its state in that
/// checkpoint.
pub fn run_job(
    graph: &JobGraph,
    handle: &JobHandle,
    restored: Option<Restored>,
) -> Result<JobReport> {
    let started = Instant::now();
    let metrics = handle.metrics.clone();
    let shared = handle.checkpoints.clone();
    let config = graph.checkpoint.clone();
    let max_parallelism = graph.state.max_parallelism;
    for n in &graph.nodes {
        if n.parallelism > max_parallelism {
            return Err(SluiceError::Config(format!(
                "{} has parallelism {}, more than 'pipeline.max-parallelism' = '{max_parallelism}'",
                n.name, n.parallelism
            )));
        }
    }
    let first_error: Arc<Mutex<Option<SluiceError>>> = Arc::new(Mutex::new(None));
    let (events_tx, events_rx) = channel::<TaskEvent>();
    let state_resources = Arc::new(StateResources::open(
        graph.state.backend,
        &graph.state.local_dir,
        graph.state.memory_bytes,
    )?);

    // Chain nodes into tasks.
    let mut task_of = vec![usize::MAX; graph.nodes.len()];
    let mut tasks: Vec<Task> = Vec::new();
    for i in 0..graph.nodes.len() {
        if graph.is_chained_to_input(i) {
            let t = task_of[graph.nodes[i].inputs[0].node];
            task_of[i] = t;
            tasks[t].nodes.push(i);
        } else {
            task_of[i] = tasks.len();
            tasks.push(Task { nodes: vec![i] });
        }
    }

    // One bounded channel per (edge into a task, upstream subtask, downstream subtask); a
    // forward edge has only the channels i -> i.
    // senders[(task, edge)][upstream subtask][downstream subtask]
    let mut senders: HashMap<(usize, usize), ChannelGrid> = HashMap::new();
    // receivers[task][downstream subtask]: (channel, logical input)
    let mut receivers: Vec<Vec<InputChannels>> = Vec::new();
    for (t, task) in tasks.iter().enumerate() {
        let head = &graph.nodes[task.nodes[0]];
        let mut per_subtask: Vec<InputChannels> =
            (0..head.parallelism).map(|_| Vec::new()).collect();
        for (edge, input) in head.inputs.iter().enumerate() {
            let up = graph.nodes[input.node].parallelism;
            let mut grid: ChannelGrid = (0..up).map(|_| vec![None; head.parallelism]).collect();
            for (j, row) in grid.iter_mut().enumerate() {
                for (s, slot) in row.iter_mut().enumerate() {
                    if input.partitioning == Partitioning::Forward && j != s {
                        continue;
                    }
                    let (tx, rx) = bounded(CHANNEL_CAPACITY_MESSAGES);
                    *slot = Some(tx);
                    per_subtask[s].push((rx, edge));
                }
            }
            senders.insert((t, edge), grid);
        }
        receivers.push(per_subtask);
    }

    // Every subtask is set up (and restored) before any thread starts.
    type Pending = (
        String,
        Option<Box<dyn SourceReader>>,
        Option<InputChannels>,
        Subtask,
    );
    let mut pending: Vec<Pending> = Vec::new();
    let mut all_subtasks = Vec::new();
    let mut finished_early = std::collections::BTreeMap::new();
    for (t, task) in tasks.iter().enumerate() {
        let head = &graph.nodes[task.nodes[0]];
        let tail = *task.nodes.last().unwrap_or(&task.nodes[0]);
        let consumers = graph.consumers(tail);
        for subtask in 0..head.parallelism {
            let task_metrics =
                TaskMetrics::new(&graph.name, &head.name, subtask, &task.nodes, &handle.tasks);
            let mut routers = Vec::new();
            for &c in &consumers {
                let ct = task_of[c];
                for (edge, input) in graph.nodes[c].inputs.iter().enumerate() {
                    if input.node != tail {
                        continue;
                    }
                    let row = senders
                        .get(&(ct, edge))
                        .and_then(|g| g.get(subtask))
                        .cloned()
                        .unwrap_or_default();
                    routers.push(Router {
                        partitioning: input.partitioning.clone(),
                        senders: row,
                        subtask,
                        max_parallelism,
                        round_robin: subtask,
                        backpressured: task_metrics.backpressured(),
                        bytes_out: task_metrics.bytes_out(),
                    });
                }
            }
            let mut operators = Vec::new();
            let mut nodes = Vec::new();
            let mut source: Option<Box<dyn SourceReader>> = None;
            let mut source_node = None;
            for &n in &task.nodes {
                let node = &graph.nodes[n];
                let ctx = SubtaskContext {
                    job_name: graph.name.clone(),
                    operator_name: node.name.clone(),
                    subtask_index: subtask,
                    parallelism: node.parallelism,
                    metrics: metrics.clone(),
                    checkpointing: config.enabled(),
                    state: graph.state.clone(),
                    node: n,
                    state_resources: state_resources.clone(),
                };
                let owner = format!("{} ({}/{})", node.name, subtask + 1, node.parallelism);
                let state = match restored.as_ref() {
                    Some(r) => RestoredState::of(r, n, subtask, node.parallelism),
                    None => RestoredState::None,
                };
                // Names of the old subtasks, for errors.
                let old_names = |old: usize, all: &[(usize, Vec<u8>)]| -> Vec<String> {
                    all.iter()
                        .map(|(j, _)| format!("{} ({}/{old})", node.name, j + 1))
                        .collect()
                };
                match &node.kind {
                    NodeKind::Source(f) => {
                        let mut reader = f.create(&ctx)?;
                        match &state {
                            RestoredState::None => {}
                            RestoredState::Same(bytes) => {
                                reader.restore_position(&mut StateReader::new(bytes, &owner))?
                            }
                            RestoredState::Rescaled { old, all } => {
                                let names = old_names(*old, all);
                                reader
                                    .restore_rescaled(*old, &mut readers(all, &names))
                                    .map_err(|e| rescale_error(&owner, e))?;
                            }
                        }
                        source = Some(reader);
                        source_node = Some(n);
                    }
                    NodeKind::Operator(f) => {
                        let mut op = f.create(&ctx)?;
                        if let (Some(store), Some(r)) = (op.keyed_store(), restored.as_ref()) {
                            for blob in r.keyed(n) {
                                blob.read_with(|src| store.restore_from(src, &owner))?;
                            }
                        }
                        match &state {
                            RestoredState::None => {}
                            RestoredState::Same(bytes) => {
                                op.restore_state(&mut StateReader::new(bytes, &owner))?
                            }
                            RestoredState::Rescaled { old, all } if !all.is_empty() => {
                                let names = old_names(*old, all);
                                op.restore_rescaled(*old, &mut readers(all, &names))
                                    .map_err(|e| rescale_error(&owner, e))?;
                            }
                            RestoredState::Rescaled { .. } => {}
                        }
                        operators.push(op);
                        nodes.push(n);
                    }
                }
            }
            let key = SubtaskKey {
                node: task.nodes[0],
                subtask,
            };
            all_subtasks.push(key);
            let metrics = nodes
                .iter()
                .map(|&n| {
                    OperatorMetrics::new(
                        &graph.name,
                        n,
                        &graph.nodes[n].name,
                        subtask,
                        &handle.operators,
                    )
                })
                .collect();
            let previews = nodes
                .iter()
                .map(|&n| {
                    graph.consumers(n).is_empty().then(|| {
                        let columns = match &graph.nodes[n].kind {
                            NodeKind::Operator(f) => f.input_column_names(),
                            NodeKind::Source(_) => None,
                        };
                        PreviewTap::new(handle.previews.clone(), n, subtask, columns)
                    })
                })
                .collect();
            let source_metrics = source_node.map(|n| {
                OperatorMetrics::new(
                    &graph.name,
                    n,
                    &graph.nodes[n].name,
                    subtask,
                    &handle.operators,
                )
            });
            let mut sub = Subtask {
                nodes,
                source_node,
                operators,
                metrics,
                previews,
                source_metrics,
                task_metrics,
                routers,
                checkpoints: shared.clone(),
                writer: SnapshotWriter::start(
                    key,
                    events_tx.clone(),
                    // The disk backend's state can be larger than memory: it is streamed to
                    // shared files (full ones unless incremental), never built in memory.
                    (graph.state.incremental || graph.state.backend == StateBackendKind::Disk)
                        .then(|| storage::shared_dir(&config.dir)),
                )?,
                notified: shared.completed(),
                checkpointing: config.enabled(),
                handle: handle.clone(),
            };
            if source.as_ref().is_some_and(|r| r.has_nothing_to_read()) {
                // End this subtask's stream now, before any thread runs (see
                // `SourceReader::has_nothing_to_read`).
                sub.push(0, 0, Message::Watermark(MAX_WATERMARK))?;
                sub.close(true)?;
                sub.end_outputs();
                finished_early.insert(key, finish_all(sub.snapshot(0, source.as_mut())?)?);
                continue;
            }
            let rx = receivers[t].get_mut(subtask).map(std::mem::take);
            let name = format!("{} ({}/{})", head.name, subtask + 1, head.parallelism);
            pending.push((name, source, rx, sub));
        }
    }
    drop(events_tx);
    let next_id = storage::list(&config.dir)
        .first()
        .map(|(id, _)| *id)
        .unwrap_or(0)
        .max(restored.as_ref().map(|r| r.metadata.id).unwrap_or(0))
        + 1;
    shared.completed.store(next_id - 1, Ordering::SeqCst);
    for p in &mut pending {
        p.3.notified = next_id - 1;
    }
    let coordinator = Coordinator {
        config: config.clone(),
        shared: shared.clone(),
        handle: handle.clone(),
        events: events_rx,
        job: graph.name.clone(),
        nodes: node_infos(graph),
        subtasks: all_subtasks,
        finished: finished_early,
        next_id,
    };
    let coordinator = std::thread::Builder::new()
        .name("checkpoint coordinator".into())
        .spawn(move || coordinator.run())
        .map_err(|e| SluiceError::io("starting the checkpoint coordinator", e))?;

    let idle_timeout = graph.source_idle_timeout;
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (name, source, rx, sub) in pending {
        let handle = handle.clone();
        let first_error = first_error.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let result = match (source, rx) {
                    (Some(reader), _) => run_source(reader, sub, &handle, idle_timeout),
                    (None, Some(rx)) => run_operator(rx, sub),
                    (None, None) => Ok(()),
                };
                if let Err(e) = result {
                    if !matches!(e, SluiceError::Cancelled) {
                        tracing::debug!(task = %name, error = %e, "task failed");
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                    handle.cancel_run();
                }
            })
            .map_err(|e| SluiceError::io("starting a task thread", e))?;
        threads.push(thread);
    }
    // Only the tasks hold senders now, so a finished upstream disconnects its consumers.
    drop(senders);

    for t in threads {
        if t.join().is_err() {
            handle.cancel_run();
            if let Ok(mut slot) = first_error.lock() {
                slot.get_or_insert(SluiceError::Runtime("a task panicked".into()));
            }
        }
    }
    let cancelled = handle.is_cancelled();
    // Every task has ended: the coordinator has nothing more to wait for.
    handle.cancel_run();
    let _ = coordinator.join();
    if let Ok(mut slot) = first_error.lock() {
        if let Some(e) = slot.take() {
            return Err(e);
        }
    }
    if !cancelled {
        // A finished job starts from scratch when it runs again, as Flink discards a
        // finished job's checkpoints.
        for (_, path) in storage::list(&config.dir) {
            let _ = std::fs::remove_dir_all(path);
        }
        let _ = std::fs::remove_dir_all(storage::shared_dir(&config.dir));
    }
    Ok(JobReport {
        counters: metrics.snapshot(),
        elapsed: started.elapsed(),
        cancelled,
        checkpoints: shared.history(),
        savepoint: shared.savepoint_path(),
    })
}

fn run_source(
    mut reader: Box<dyn SourceReader>,
    mut sub: Subtask,
    handle: &JobHandle,
    idle_timeout: Option<Duration>,
) -> Result<()> {
    let mut last_data = Instant::now();
    let mut idle = false;
    let mut injected = sub.notified;
    let mut stopped = false;
    loop {
        sub.notify(Some(&mut reader))?;
        if handle.is_cancelled() {
            // Cancelled: close operators (sinks flush) but do not fire open windows.
            sub.close(false)?;
            return Ok(());
        }
        let triggered = sub.checkpoints.triggered.load(Ordering::SeqCst);
        if triggered > injected && !stopped {
            injected = triggered;
            sub.checkpoint(triggered, Some(&mut reader))?;
            // A stop with savepoint: nothing after its barrier.
            stopped = sub.checkpoints.stop_after.load(Ordering::SeqCst) == triggered;
        }
        if stopped {
            std::thread::sleep(IDLE_SLEEP);
            continue;
        }
        sub.fire_processing_timers()?;
        let polled = Instant::now();
        sub.sample_fill(polled, None);
        match reader.poll()? {
            SourcePoll::Batch(b) => {
                if b.num_rows() > 0 {
                    last_data = Instant::now();
                    idle = false;
                    if let Some(m) = &sub.source_metrics {
                        m.records_out.increment(b.num_rows() as u64);
                    }
                    sub.push(0, 0, Message::Data(b))?;
                }
                sub.task_metrics.busy.add(polled.elapsed());
            }
            SourcePoll::Split(split, status) => sub.push(0, 0, Message::Split(split, status))?,
            SourcePoll::Idle => {
                if let Some(timeout) = idle_timeout {
                    if !idle && last_data.elapsed() >= timeout {
                        idle = true;
                        sub.push(0, 0, Message::Idle)?;
                    }
                }
                std::thread::sleep(IDLE_SLEEP);
                sub.task_metrics.idle.add(polled.elapsed());
            }
            SourcePoll::End => {
                sub.push(0, 0, Message::Watermark(MAX_WATERMARK))?;
                return sub.end(Some(&mut reader));
            }
        }
    }
}

fn run_operator(channels: InputChannels, mut sub: Subtask) -> Result<()> {
    let mut gate = InputGate::new(channels, sub.notified);
    loop {
        let waiting = Instant::now();
        let event = gate.next(NOTIFY_POLL);
        let working = Instant::now();
        sub.task_metrics.idle.add(working - waiting);
        sub.sample_fill(working, Some(&gate));
        match event {
            GateEvent::Data { input, batch } => {
                sub.task_metrics.bytes_in.increment(batch_bytes(&batch));
                sub.push(0, input, Message::Data(batch))?
            }
            GateEvent::Watermark(w) => sub.push(0, 0, Message::Watermark(w))?,
            GateEvent::Idle => sub.push(0, 0, Message::Idle)?,
            GateEvent::Barrier(id) => sub.checkpoint(id, None)?,
            GateEvent::Timeout => {}
            GateEvent::Ended => return sub.end(None),
            GateEvent::Disconnected => {
                // An upstream is gone without ending its stream: cancelled or failed.
                sub.notify(None)?;
                sub.close(false)?;
                return Ok(());
            }
        }
        sub.notify(None)?;
        sub.fire_processing_timers()?;
        sub.task_metrics.busy.add(working.elapsed());
    }
}
