//! The source interface: where batches enter a job.

use crate::operator::SubtaskContext;
use arrow::record_batch::RecordBatch;
use sluice_common::Result;

/// What a source has for the runtime when asked.
#[derive(Debug)]
pub enum SourcePoll {
    /// New rows.
    Batch(RecordBatch),
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
}

/// Creates the readers of a source, one per subtask.
pub trait SourceFactory: Send + Sync {
    /// A short name for plans (`filesystem`, `datagen`).
    fn name(&self) -> String;

    /// True if the source ends by itself.
    fn is_bounded(&self) -> bool;

    /// Creates the reader of one subtask; the readers of all subtasks divide the input.
    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>>;
}
