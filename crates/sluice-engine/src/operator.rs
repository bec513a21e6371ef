//! The operator interface: what a step of a dataflow does with batches, watermarks and the end
//! of its input.

use crate::graph::StateConfig;
use crate::keyed::{KeyGroupRange, KeyedStore, StateResources};
use crate::metrics::Metrics;
use crate::state::{StateReader, StateWriter};
use crate::task_metrics::{names, LateRecords, OperatorCounter, SinkErrors};
use sluice_common::{ChangeBatch, CheckpointId, EventTime, Message, Result, SplitId, SplitStatus};
use std::sync::Arc;

/// What an operator instance knows about where it runs.
#[derive(Debug, Clone)]
pub struct SubtaskContext {
    /// The job's name (`pipeline.name`).
    pub job_name: String,
    /// The operator's name, for metrics and logs.
    pub operator_name: String,
    /// Which of the parallel instances this is, from 0.
    pub subtask_index: usize,
    /// How many parallel instances there are.
    pub parallelism: usize,
    /// The job's counters.
    pub metrics: Arc<Metrics>,
    /// True if the job takes periodic checkpoints: a two-phase-commit sink then makes its
    /// output visible only when a checkpoint completes (or at the end of the input).
    pub checkpointing: bool,
    /// The job's keyed state settings.
    pub state: StateConfig,
    /// The index of the operator's node in the job graph.
    pub node: usize,
    /// What the job's state backends share (the disk backend's database).
    pub state_resources: Arc<StateResources>,
}

impl SubtaskContext {
    /// The key groups this subtask owns: the hash exchange sends it exactly the keys of
    /// these groups.
    pub fn key_groups(&self) -> KeyGroupRange {
        KeyGroupRange::for_subtask(
            self.state.max_parallelism,
            self.parallelism,
            self.subtask_index,
        )
    }

    /// The counter of the rows this operator drops as late: in the job's report ("late
    /// rows dropped") and in its metrics.
    pub fn late_records(&self) -> LateRecords {
        self.counter("late rows dropped", names::LATE_RECORDS_DROPPED)
    }

    /// The counter of the records this subtask's sink fails to write (see [`SinkErrors`]).
    pub fn sink_errors(&self) -> SinkErrors {
        self.counter("sink errors", names::SINK_ERRORS)
    }

    /// A count of this operator subtask, in the job's report as `report_name` and as the
    /// metric `metric` with its labels.
    fn counter(&self, report_name: &str, metric: &'static str) -> OperatorCounter {
        OperatorCounter::new(
            self.metrics.counter(report_name),
            metric,
            &[
                ("job", self.job_name.clone()),
                ("operator", self.operator_name.clone()),
                ("operator_id", self.node.to_string()),
                ("subtask", self.subtask_index.to_string()),
            ],
        )
    }

    /// A keyed state store for this subtask, on the job's state backend. An operator that
    /// keeps one returns it from [`Operator::keyed_store`], so that the runtime checkpoints
    /// and restores it.
    pub fn keyed_store(&self) -> Result<KeyedStore> {
        let range = self.key_groups();
        let name = format!("node{}-subtask{}", self.node, self.subtask_index);
        let backend = self.state_resources.create(&name, range.start, range.end)?;
        Ok(KeyedStore::new(backend, self.state.max_parallelism, range)
            .with_incremental_checkpoints(self.state.incremental && self.checkpointing))
    }
}

/// Where an operator puts what it emits.
#[derive(Debug, Default)]
pub struct Output {
    messages: Vec<Message>,
}

impl Output {
    /// Emits a batch (an empty one is dropped).
    pub fn batch(&mut self, batch: ChangeBatch) {
        if batch.num_rows() > 0 {
            self.messages.push(Message::Data(batch));
        }
    }

    /// Emits a watermark.
    pub fn watermark(&mut self, watermark: EventTime) {
        self.messages.push(Message::Watermark(watermark));
    }

    /// Passes on that the input is idle.
    pub fn idle(&mut self) {
        self.messages.push(Message::Idle);
    }

    /// Passes on a source split's status.
    pub fn split(&mut self, split: SplitId, status: SplitStatus) {
        self.messages.push(Message::Split(split, status));
    }

    /// Takes what was emitted so far.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Message> {
        self.messages.drain(..)
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// One step of a dataflow, instantiated once per subtask.
///
/// The runtime calls an operator from a single thread. Per-key state belongs in a
/// [`KeyedStore`] (from [`SubtaskContext::keyed_store`], returned by
/// [`Operator::keyed_store`]): the runtime snapshots it asynchronously and redistributes it
/// by key group on a restore at another parallelism. What is not per key (a sink's
/// transaction, a watermark) goes through [`Operator::snapshot_state`].
pub trait Operator: Send {
    /// Handles a batch that arrived on logical input `input` (0 for single-input operators).
    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()>;

    /// Handles a watermark, already the minimum over all inputs. The default forwards it.
    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        out.watermark(watermark);
        Ok(())
    }

    /// Handles a source split's change of status (only operators chained to a source see
    /// it). The default forwards it.
    fn process_split(
        &mut self,
        split: SplitId,
        status: SplitStatus,
        out: &mut Output,
    ) -> Result<()> {
        out.split(split, status);
        Ok(())
    }

    /// Called once when every input has ended (a bounded input, after its final watermark),
    /// before [`Operator::close`]; not called when the job is cancelled. A two-phase-commit
    /// sink commits everything here, as Flink's sinks do at the end of input.
    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Called once after the last input (after [`Operator::end_input`], or after
    /// cancellation): flush and release resources.
    fn close(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Writes the operator's state for checkpoint `checkpoint`, taken when the barrier
    /// passes it: everything before the barrier is in the state, nothing after. A
    /// two-phase-commit sink pre-commits here. It is called before the runtime snapshots
    /// the keyed store, so an operator that buffers per-key changes in memory writes them
    /// to the store here. The default has no state.
    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut StateWriter,
    ) -> Result<()> {
        Ok(())
    }

    /// Restores what [`Operator::snapshot_state`] wrote, before any input arrives. A
    /// two-phase-commit sink commits what the restored checkpoint had pre-committed.
    fn restore_state(&mut self, _state: &mut StateReader<'_>) -> Result<()> {
        Ok(())
    }

    /// Restores operator state written by a run of this operator at another parallelism
    /// (`old` subtasks): `states` holds, by old subtask index, what every old subtask that
    /// wrote something wrote.
    /// Keyed state needs nothing here (each subtask already took its key groups), and an
    /// operator whose old subtasks wrote no operator state is not asked; what is not keyed
    /// must be merged or divided, as Flink's union and split list states are. The default
    /// refuses: an operator that keeps non-keyed state says how to rescale it.
    fn restore_rescaled(
        &mut self,
        old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        Err(rescale_refused(old))
    }

    /// The operator's keyed state, if it keeps any: the runtime snapshots it at every
    /// barrier (an O(1) view, written on another thread while the task goes on) and restores
    /// it, with the key groups of this subtask, before [`Operator::restore_state`].
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        None
    }

    /// Processing time has reached `now_ms` and the keyed store has processing-time timers
    /// due: the operator takes them with [`KeyedStore::pop_processing_timers`].
    fn on_processing_time(&mut self, _now_ms: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint` (and every one before it) is complete: a two-phase-commit sink
    /// commits what it pre-committed for it. After `end_input`, the final checkpoint is told
    /// as `CheckpointId::MAX`: everything pre-committed, what `end_input` left included.
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// The refusal of an operator or source whose state cannot be divided among another number
/// of subtasks (the runtime adds which subtask it is).
pub(crate) fn rescale_refused(old: usize) -> sluice_common::SluiceError {
    sluice_common::SluiceError::Config(format!(
        "this job's state was written at parallelism {old}, and this state cannot be divided among another number of subtasks; restore it at parallelism {old}"
    ))
}

/// Creates the instances of an operator, one per subtask.
pub trait OperatorFactory: Send + Sync {
    /// A short name for plans and metrics (`WindowAggregate`, `Sink: print`).
    fn name(&self) -> String;

    /// Creates the instance for one subtask.
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>>;

    /// The names of the columns it receives, where they are not the batches' own (a sink:
    /// its table's columns), for the dashboard's preview of its rows.
    fn input_column_names(&self) -> Option<Vec<String>> {
        None
    }
}
