//! Runs a [`JobGraph`]: chains nodes into tasks, starts one thread per subtask of each task,
//! wires them with bounded channels and carries watermarks (the minimum over a task's input
//! channels). The first error cancels the whole job.

use crate::exchange::{hash_targets, split_by_target};
use crate::graph::{JobGraph, NodeKind, Partitioning};
use crate::metrics::Metrics;
use crate::operator::{Operator, Output, SubtaskContext};
use crate::source::{SourcePoll, SourceReader};
use sluice_common::{EventTime, Message, Result, SluiceError, MAX_WATERMARK, MIN_WATERMARK};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages a channel buffers before its sender blocks (the backpressure).
pub const CHANNEL_CAPACITY_MESSAGES: usize = 16;

/// How long a source sleeps when it has nothing.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// A message with the index of the input channel it arrived on.
type Envelope = (usize, Message);

/// How to stop a running job from outside (Ctrl-C).
#[derive(Clone, Default)]
pub struct JobHandle {
    cancelled: Arc<AtomicBool>,
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
    operators: Vec<Box<dyn Operator>>,
    routers: Vec<Router>,
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

    /// Closes every operator in order, passing what each emits down the chain.
    fn close(&mut self) -> Result<()> {
        for pos in 0..self.operators.len() {
            let mut out = Output::default();
            self.operators[pos].close(&mut out)?;
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
}

fn out_passthrough(out: &mut Output, m: Message) {
    match m {
        Message::Data(b) => out.batch(b),
        Message::Idle => out.idle(),
        _ => {}
    }
}

/// Runs `graph` to the end (bounded input) or until `handle` is cancelled, and returns the
/// job's counters.
pub fn run_job(graph: &JobGraph, handle: &JobHandle) -> Result<JobReport> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::default());
    let first_error: Arc<Mutex<Option<SluiceError>>> = Arc::new(Mutex::new(None));

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

    // Every subtask is set up before any thread starts.
    type Pending = (
        String,
        Option<Box<dyn SourceReader>>,
        Option<Receiver<Envelope>>,
        Vec<(usize, usize, usize)>,
        Subtask,
    );
    let mut pending: Vec<Pending> = Vec::new();
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
            let mut source: Option<Box<dyn SourceReader>> = None;
            for &n in &task.nodes {
                let node = &graph.nodes[n];
                let ctx = SubtaskContext {
                    job_name: graph.name.clone(),
                    operator_name: node.name.clone(),
                    subtask_index: subtask,
                    parallelism: node.parallelism,
                    metrics: metrics.clone(),
                };
                match &node.kind {
                    NodeKind::Source(f) => source = Some(f.create(&ctx)?),
                    NodeKind::Operator(f) => operators.push(f.create(&ctx)?),
                }
            }
            let mut sub = Subtask { operators, routers };
            if source.as_ref().is_some_and(|r| r.has_nothing_to_read()) {
                // End this subtask's stream now, before any thread runs (see
                // `SourceReader::has_nothing_to_read`).
                sub.push(0, 0, Message::Watermark(MAX_WATERMARK))?;
                sub.close()?;
                sub.end_outputs();
                continue;
            }
            let rx = receivers[t].get_mut(subtask).and_then(Option::take);
            let layout = channel_layout[t].clone();
            let name = format!("{} ({}/{})", head.name, subtask + 1, head.parallelism);
            pending.push((name, source, rx, layout, sub));
        }
    }
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
    if let Ok(mut slot) = first_error.lock() {
        if let Some(e) = slot.take() {
            return Err(e);
        }
    }
    Ok(JobReport {
        counters: metrics.snapshot(),
        elapsed: started.elapsed(),
        cancelled: handle.is_cancelled(),
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
    loop {
        if handle.is_cancelled() {
            // Cancelled: close operators (sinks flush) but do not fire open windows.
            sub.close()?;
            return Ok(());
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
                sub.close()?;
                sub.end_outputs();
                return Ok(());
            }
        }
    }
}

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
    while open > 0 {
        let Ok((channel, msg)) = rx.recv() else {
            // Every upstream is gone without ending its stream: cancelled or failed.
            sub.close()?;
            return Ok(());
        };
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
            Message::Barrier(_) | Message::Split(..) => {}
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
                }
            }
        }
    }
    sub.close()?;
    sub.end_outputs();
    Ok(())
}

/// The minimum watermark over the channels that are neither ended nor idle; `None` if no
/// channel is active (then nothing may advance the watermark).
fn min_active(watermarks: &[EventTime], ended: &[bool], idle: &[bool]) -> Option<EventTime> {
    (0..watermarks.len())
        .filter(|&c| !ended[c] && !idle[c])
        .map(|c| watermarks[c])
        .min()
}
