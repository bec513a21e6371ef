//! The source interface: where batches enter a job.

use crate::operator::SubtaskContext;
use crate::state::{StateReader, StateWriter};
use sluice_common::{ChangeBatch, CheckpointId, Result, SplitId, SplitStatus};

/// What a source has for the runtime when asked.
#[derive(Debug)]
pub enum SourcePoll {
    /// New rows (of one split, if the source has splits).
    Batch(ChangeBatch),
    /// A split changed status (for per-split watermarks).
    Split(SplitId, SplitStatus),
    /// Nothing right now; ask again soon.
    Idle,
    /// The (bounded) input is exhausted.
    End,
}

/// One subtask's reader of a source.
pub trait SourceReader: Send {
    /// Returns the next batch. May block briefly (a few hundred milliseconds at most) so that
    /// cancellation is noticed.
    fn poll(&mut self) -> Result<SourcePoll>;

    /// True if this reader has nothing at all to read (no split was assigned to it). The
    /// runtime then ends its stream before any task starts, so that the others' watermarks
    /// do not wait on it: the result does not depend on which thread starts first.
    fn has_nothing_to_read(&self) -> bool {
        false
    }

    /// Writes the reader's position for checkpoint `checkpoint`: just after the last batch
    /// `poll` returned (file offsets, Kafka partition offsets).
    fn snapshot_position(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut StateWriter,
    ) -> Result<()>;

    /// Why the reader cannot take part in a checkpoint now, if it cannot (a CDC source in
    /// the middle of its initial snapshot, which it cannot resume): the checkpoint is then
    /// declined (it fails, and the job goes on), as Flink's sources hold checkpoints back.
    fn checkpoint_declined(&self) -> Option<String> {
        None
    }

    /// Goes back to a position [`SourceReader::snapshot_position`] wrote, before the first
    /// `poll`.
    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()>;

    /// Goes back to the positions a run at another parallelism (`old` subtasks) wrote:
    /// `states` holds, by old subtask index, what every old subtask that wrote something
    /// wrote. Every new subtask is given all of them and takes the splits the new
    /// parallelism gives it (files, Kafka partitions, generator sequences), so that all of
    /// them together go on from where the old ones stopped. The default refuses.
    fn restore_rescaled(
        &mut self,
        old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        Err(crate::operator::rescale_refused(old))
    }

    /// Checkpoint `checkpoint` is complete (a Kafka source commits its offsets to the group).
    fn notify_checkpoint_complete(&mut self, _checkpoint: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// Creates the readers of a source, one per subtask.
pub trait SourceFactory: Send + Sync {
    /// A short name for plans (`filesystem`, `datagen`).
    fn name(&self) -> String;

    /// True if the source ends by itself.
    fn is_bounded(&self) -> bool;

    /// True if the source produces a changelog (updates and deletes), not only inserts.
    fn produces_updates(&self) -> bool {
        false
    }

    /// True if the changes are upserts (Flink's upsert changelog mode): `+U` is the latest
    /// row of its primary key, whatever came before, and `-D` carries only the key columns.
    /// The planner then adds a `ChangelogNormalize` keyed by the primary key, which keeps
    /// the last row of every key and emits a proper changelog (`+I`, `-U`/`+U`, `-D`).
    fn produces_upserts(&self) -> bool {
        false
    }

    /// Creates the reader of one subtask; the readers of all subtasks divide the input.
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>>;
}
