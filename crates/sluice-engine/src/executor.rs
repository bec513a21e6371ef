//! Runs a [`JobGraph`]: chains nodes into tasks, starts one thread per subtask of each task,
//! wires them with bounded channels and carries watermarks (the minimum over a task's input
//! channels). The first error cancels the whole job.
//!
//! Checkpoint barriers travel with the data: a source subtask injects one when the
//! coordinator triggers a checkpoint, a task with several input channels aligns them (it holds
//! back what arrives on a channel after its barrier until the barrier has come on every
//! channel), and each task snapshots its operators as the barrier passes (see
//! [`crate::checkpoint`]).

use crate::checkpoint::coordinator::{Coordinator, SubtaskKey, TaskEvent};
use crate::checkpoint::storage::{self, NodeInfo, Restored};
use crate::checkpoint::{CheckpointConfig, CheckpointShared, CheckpointStats, RestoreMode};
use crate::exchange::{hash_targets, split_by_target};
use crate::graph::{JobGraph, NodeKind, Partitioning};
use crate::metrics::Metrics;
use crate::operator::{Operator, Output, SubtaskContext};
use crate::source::{SourcePoll, SourceReader};
use crate::state::{StateReader, StateWriter};
use sluice_common::{
    CheckpointId, EventTime, Message, Result, SluiceError, MAX_WATERMARK, MIN_WATERMARK,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages a channel buffers before its sender blocks (the backpressure).
pub const CHANNEL_CAPACITY_MESSAGES: usize = 16;

/// How long a source sleeps when it has nothing.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// A message with the index of the input channel it arrived on.
type Envelope = (usize, Message);

/// How to watch and stop a running job from outside (Ctrl-C, the dashboard).
#[derive(Clone, Default)]
pub struct JobHandle {
    cancelled: Arc<AtomicBool>,
    /// The job's counters.
    pub metrics: Arc<Metrics>,
    /// The job's checkpoints.
    pub checkpoints: Arc<CheckpointShared>,
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

/// One chain of nodes run as one task.
struct Task {
    nodes: Vec<usize>,
}

/// Where a task sends its output: to the subtasks of one consumer task.
struct Router {
    partitioning: Partitioning,
    senders: Vec<SyncSender<Envelope>>,
    /// The channel index this subtask has at the receivers.
    channel: usize,
    /// This subtask's index (the target of a forward edge).
    subtask: usize,
    round_robin: usize,
}

impl Router {
    fn send(&mut self, msg: Message) -> Result<()> {
        let n = self.senders.len();
        match msg {
            Message::Data(batch) => match &self.partitioning {
                Partitioning::Forward => {
                    let i = self.channel_target();
                    self.deliver(i, Message::Data(batch))
                }
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
                    let targets = hash_targets(&batch, keys, n)?;
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
                    let i = self.channel_target();
                    return self.deliver(i, other);
                }
                for i in 0..n {
                    self.deliver(i, other.clone())?;
                }
                Ok(())
            }
        }
    }

    fn channel_target(&self) -> usize {
        // Forward: upstream subtask i feeds downstream subtask i (same parallelism).
        self.subtask % self.senders.len()
    }

    fn deliver(&self, target: usize, msg: Message) -> Result<()> {
        self.senders[target]
            .send((self.channel, msg))
            .map_err(|_| SluiceError::Cancelled)
    }
}

/// The running state of one subtask of a task.
struct Subtask {
    /// This subtask: the first node of its task and its index.
    key: SubtaskKey,
    /// The node of each operator in `operators`.
    nodes: Vec<usize>,
    /// The node of the task's source, if it has one.
    source_node: Option<usize>,
    operators: Vec<Box<dyn Operator>>,
    routers: Vec<Router>,
    checkpoints: Arc<CheckpointShared>,
    events: Sender<TaskEvent>,
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
            for m in pending.drain(..) {
                match m {
                    Message::Data(b) => op.process_batch(logical_input, b, &mut out)?,
                    Message::Watermark(w) => op.process_watermark(w, &mut out)?,
                    Message::Split(split, status) => op.process_split(split, status, &mut out)?,
                    other => out_passthrough(&mut out, other),
                }
            }
            pending = out.drain().collect();
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

    fn end_outputs(&mut self) {
        for r in &mut self.routers {
            let _ = r.send(Message::EndOfStream);
        }
    }

    /// The state of the source (if any) and of every operator, by node.
    fn snapshot(
        &mut self,
        id: CheckpointId,
        reader: Option<&mut Box<dyn SourceReader>>,
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let mut sections = Vec::with_capacity(self.operators.len() + 1);
        if let (Some(r), Some(node)) = (reader, self.source_node) {
            let mut w = StateWriter::default();
            r.snapshot_position(id, &mut w)?;
            sections.push((node, w.finish()));
        }
        for (op, &node) in self.operators.iter_mut().zip(&self.nodes) {
            let mut w = StateWriter::default();
            op.snapshot_state(id, &mut w)?;
            sections.push((node, w.finish()));
        }
        Ok(sections)
    }

    /// The barrier of checkpoint `id` has reached this task (on every input): snapshot,
    /// pass the barrier on, write the part file and acknowledge.
    fn checkpoint(
        &mut self,
        id: CheckpointId,
        reader: Option<&mut Box<dyn SourceReader>>,
    ) -> Result<()> {
        let sections = self.snapshot(id, reader)?;
        self.emit(Message::Barrier(id))?;
        let dir = match self.checkpoints.pending_dir.lock() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let event = match dir.filter(|(pending, _)| *pending == id) {
            None => TaskEvent::Declined {
                id,
                reason: "it was abandoned".into(),
            },
            Some((_, dir)) => match storage::write_part(&dir.join(self.key.file_name()), &sections)
            {
                Ok(part) => TaskEvent::Ack {
                    id,
                    subtask: self.key,
                    part,
                    sizes: sections.iter().map(|(n, b)| (*n, b.len() as u64)).collect(),
                },
                Err(e) => TaskEvent::Declined {
                    id,
                    reason: e.to_string(),
                },
            },
        };
        let _ = self.events.send(event);
        Ok(())
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
    /// of the input left included, so they commit it all. A crash before that checkpoint restores an earlier one and replays, with
    /// nothing of the replayed part committed twice; a crash after it restores the final
    /// state. A cancel while waiting closes without committing.
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
        let sections = self.snapshot(self.checkpoints.completed(), reader)?;
        let _ = self.events.send(TaskEvent::Finished {
            subtask: self.key,
            sections,
        });
        Ok(())
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
    let same_shape = taken.len() == nodes.len()
        && taken
            .iter()
            .zip(&nodes)
            .all(|(a, b)| a.parallelism == b.parallelism);
    if !same_shape {
        let describe = |n: &[NodeInfo]| {
            n.iter()
                .map(|x| format!("{} (parallelism {})", x.name, x.parallelism))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(SluiceError::Config(format!(
            "checkpoint {} in {} was taken from a different job: it has [{}], this job has [{}]; give the job another 'pipeline.name', or restore with the query and parallelism it was taken with",
            restored.metadata.id,
            restored.path.display(),
            describe(taken),
            describe(&nodes)
        )));
    }
    Ok(Some(restored))
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
    mut restored: Option<Restored>,
) -> Result<JobReport> {
    let started = Instant::now();
    let metrics = handle.metrics.clone();
    let shared = handle.checkpoints.clone();
    let config = graph.checkpoint.clone();
    let first_error: Arc<Mutex<Option<SluiceError>>> = Arc::new(Mutex::new(None));
    let (events_tx, events_rx) = channel::<TaskEvent>();

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

    // One receiver per subtask of every task; channel indexes per input edge.
    let mut senders: Vec<Vec<SyncSender<Envelope>>> = Vec::new();
    let mut receivers: Vec<Vec<Option<Receiver<Envelope>>>> = Vec::new();
    // For each task: (channel offset, logical input, upstream parallelism) per input edge.
    let mut channel_layout: Vec<Vec<(usize, usize, usize)>> = Vec::new();
    for task in &tasks {
        let head = &graph.nodes[task.nodes[0]];
        let mut s = Vec::new();
        let mut r = Vec::new();
        for _ in 0..head.parallelism {
            let (tx, rx) = sync_channel(CHANNEL_CAPACITY_MESSAGES);
            s.push(tx);
            r.push(Some(rx));
        }
        senders.push(s);
        receivers.push(r);
        let mut layout = Vec::new();
        let mut offset = 0;
        for (logical, input) in head.inputs.iter().enumerate() {
            let p = graph.nodes[input.node].parallelism;
            layout.push((offset, logical, p));
            offset += p;
        }
        channel_layout.push(layout);
    }

    // Every subtask is set up (and restored) before any thread starts.
    type Pending = (
        String,
        Option<Box<dyn SourceReader>>,
        Option<Receiver<Envelope>>,
        Vec<(usize, usize, usize)>,
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
            let mut routers = Vec::new();
            for &c in &consumers {
                let ct = task_of[c];
                let edge_pos = graph.nodes[c]
                    .inputs
                    .iter()
                    .position(|i| i.node == tail)
                    .unwrap_or(0);
                let (offset, _, _) = channel_layout[ct][edge_pos];
                routers.push(Router {
                    partitioning: graph.nodes[c].inputs[edge_pos].partitioning.clone(),
                    senders: senders[ct].clone(),
                    channel: offset + subtask,
                    subtask,
                    round_robin: subtask,
                });
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
                };
                let state = restored.as_mut().and_then(|r| r.take(n, subtask));
                let owner = format!("{} ({}/{})", node.name, subtask + 1, node.parallelism);
                match &node.kind {
                    NodeKind::Source(f) => {
                        let mut reader = f.create(&ctx)?;
                        if let Some(bytes) = state.filter(|b| !b.is_empty()) {
                            reader.restore_position(&mut StateReader::new(&bytes, &owner))?;
                        }
                        source = Some(reader);
                        source_node = Some(n);
                    }
                    NodeKind::Operator(f) => {
                        let mut op = f.create(&ctx)?;
                        if let Some(bytes) = state.filter(|b| !b.is_empty()) {
                            op.restore_state(&mut StateReader::new(&bytes, &owner))?;
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
            let mut sub = Subtask {
                key,
                nodes,
                source_node,
                operators,
                routers,
                checkpoints: shared.clone(),
                events: events_tx.clone(),
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
                finished_early.insert(key, sub.snapshot(0, source.as_mut())?);
                continue;
            }
            let rx = receivers[t].get_mut(subtask).and_then(Option::take);
            let layout = channel_layout[t].clone();
            let name = format!("{} ({}/{})", head.name, subtask + 1, head.parallelism);
            pending.push((name, source, rx, layout, sub));
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
        p.4.notified = next_id - 1;
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
    for (name, source, rx, layout, sub) in pending {
        let handle = handle.clone();
        let first_error = first_error.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let result = match (source, rx) {
                    (Some(reader), _) => run_source(reader, sub, &handle, idle_timeout),
                    (None, Some(rx)) => run_operator(rx, layout, sub),
                    (None, None) => Ok(()),
                };
                if let Err(e) = result {
                    if !matches!(e, SluiceError::Cancelled) {
                        tracing::debug!(task = %name, error = %e, "task failed");
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                    handle.cancel();
                }
            })
            .map_err(|e| SluiceError::io("starting a task thread", e))?;
        threads.push(thread);
    }
    // Only the tasks hold senders now, so a finished upstream disconnects its consumers.
    drop(senders);

    for t in threads {
        if t.join().is_err() {
            handle.cancel();
            if let Ok(mut slot) = first_error.lock() {
                slot.get_or_insert(SluiceError::Runtime("a task panicked".into()));
            }
        }
    }
    let cancelled = handle.is_cancelled();
    // Every task has ended: the coordinator has nothing more to wait for.
    handle.cancel();
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
        match reader.poll()? {
            SourcePoll::Batch(b) => {
                if b.num_rows() > 0 {
                    last_data = Instant::now();
                    idle = false;
                    sub.push(0, 0, Message::Data(b))?;
                }
            }
            SourcePoll::Split(split, status) => sub.push(0, 0, Message::Split(split, status))?,
            SourcePoll::Idle => {
                if let Some(timeout) = idle_timeout {
                    if !idle && last_data.elapsed() >= timeout {
                        idle = true;
                        sub.push(0, 0, Message::Idle)?;
                    }
                }
                std::thread::sleep(IDLE_SLEEP)
            }
            SourcePoll::End => {
                sub.push(0, 0, Message::Watermark(MAX_WATERMARK))?;
                return sub.end(Some(&mut reader));
            }
        }
    }
}

/// How long an operator task waits for input before it looks for completed checkpoints.
const NOTIFY_POLL: Duration = Duration::from_millis(20);

fn run_operator(
    rx: Receiver<Envelope>,
    layout: Vec<(usize, usize, usize)>,
    mut sub: Subtask,
) -> Result<()> {
    let channels: usize = layout.iter().map(|(_, _, p)| p).sum();
    let mut logical_of = vec![0usize; channels];
    for &(offset, logical, p) in &layout {
        for slot in logical_of.iter_mut().skip(offset).take(p) {
            *slot = logical;
        }
    }
    let mut watermarks = vec![MIN_WATERMARK; channels];
    // Ended or idle channels do not hold the watermark back.
    let mut ended = vec![false; channels];
    let mut idle = vec![false; channels];
    let mut current: EventTime = MIN_WATERMARK;
    let mut open = channels;
    // Barrier alignment: the checkpoint being aligned, the channels whose barrier has come,
    // what they sent after it (held back), and held-back messages to take before new ones.
    let mut aligning: Option<CheckpointId> = None;
    let mut blocked = vec![false; channels];
    let mut held: VecDeque<Envelope> = VecDeque::new();
    let mut replay: VecDeque<Envelope> = VecDeque::new();
    let mut last_barrier: CheckpointId = sub.notified;
    while open > 0 {
        let (channel, msg) = match replay.pop_front() {
            Some(e) => e,
            None => match rx.recv_timeout(NOTIFY_POLL) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    sub.notify(None)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every upstream is gone without ending its stream: cancelled or failed.
                    sub.notify(None)?;
                    sub.close(false)?;
                    return Ok(());
                }
            },
        };
        if blocked[channel] {
            held.push_back((channel, msg));
            continue;
        }
        let mut aligned = false;
        match msg {
            Message::Data(b) => {
                idle[channel] = false;
                sub.push(0, logical_of[channel], Message::Data(b))?
            }
            Message::Watermark(w) => {
                idle[channel] = false;
                watermarks[channel] = watermarks[channel].max(w);
                if let Some(min) = min_active(&watermarks, &ended, &idle) {
                    if min > current {
                        current = min;
                        sub.push(0, 0, Message::Watermark(current))?;
                    }
                }
            }
            Message::Idle => {
                idle[channel] = true;
                if (0..channels).all(|c| ended[c] || idle[c]) {
                    // Every input is idle: as Flink, advance to the largest watermark any
                    // input has reached, then this task is idle too.
                    let max = (0..channels)
                        .filter(|&c| !ended[c])
                        .map(|c| watermarks[c])
                        .max()
                        .unwrap_or(MIN_WATERMARK);
                    if max > current {
                        current = max;
                        sub.push(0, 0, Message::Watermark(current))?;
                    }
                    sub.push(0, 0, Message::Idle)?;
                } else if let Some(min) = min_active(&watermarks, &ended, &idle) {
                    if min > current {
                        current = min;
                        sub.push(0, 0, Message::Watermark(current))?;
                    }
                }
            }
            Message::Barrier(id) => {
                if id <= last_barrier || aligning.is_some_and(|a| id < a) {
                    // A barrier of a checkpoint already taken or given up.
                    continue;
                }
                if aligning.is_some_and(|a| id > a) {
                    // A newer checkpoint overtook the one being aligned: give that one up.
                    release(&mut blocked, &mut held, &mut replay);
                }
                aligning = Some(id);
                blocked[channel] = true;
                aligned = (0..channels).all(|c| blocked[c] || ended[c]);
            }
            Message::Split(..) => {}
            Message::EndOfStream => {
                if !ended[channel] {
                    ended[channel] = true;
                    open -= 1;
                    if let Some(min) = min_active(&watermarks, &ended, &idle) {
                        if min > current {
                            current = min;
                            sub.push(0, 0, Message::Watermark(current))?;
                        }
                    }
                    aligned = aligning.is_some() && (0..channels).all(|c| blocked[c] || ended[c]);
                }
            }
        }
        if aligned {
            if let Some(id) = aligning.take() {
                sub.checkpoint(id, None)?;
                last_barrier = id;
                release(&mut blocked, &mut held, &mut replay);
            }
        }
        sub.notify(None)?;
    }
    sub.end(None)
}

/// Ends an alignment: every channel flows again, and what was held back is taken before
/// what is still to replay (it arrived earlier on its channel).
fn release(blocked: &mut [bool], held: &mut VecDeque<Envelope>, replay: &mut VecDeque<Envelope>) {
    blocked.iter_mut().for_each(|b| *b = false);
    let mut rest = std::mem::take(held);
    rest.append(replay);
    *replay = rest;
}

/// The minimum watermark over the channels that are neither ended nor idle; `None` if no
/// channel is active (then nothing may advance the watermark).
fn min_active(watermarks: &[EventTime], ended: &[bool], idle: &[bool]) -> Option<EventTime> {
    (0..watermarks.len())
        .filter(|&c| !ended[c] && !idle[c])
        .map(|c| watermarks[c])
        .min()
}
