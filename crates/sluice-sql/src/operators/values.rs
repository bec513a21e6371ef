//! The source of a `VALUES` clause (`INSERT INTO t VALUES (1, 'a'), (2, 'b')`): its rows,
//! once, then the end (Flink plans it as a bounded source too).

use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, CheckpointId, Result};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, StateReader, StateWriter, SubtaskContext,
};

/// The rows of a `VALUES` clause.
pub struct ValuesFactory {
    pub rows: RecordBatch,
}

impl SourceFactory for ValuesFactory {
    fn name(&self) -> String {
        format!("values ({} rows)", self.rows.num_rows())
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        // One subtask emits them; the others have nothing to read.
        Ok(Box::new(ValuesReader {
            rows: (ctx.subtask_index == 0).then(|| self.rows.clone()),
        }))
    }
}

struct ValuesReader {
    /// The rows, until they are emitted.
    rows: Option<RecordBatch>,
}

impl SourceReader for ValuesReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        Ok(match self.rows.take() {
            Some(rows) => SourcePoll::Batch(ChangeBatch::inserts(rows)),
            None => SourcePoll::End,
        })
    }

    fn has_nothing_to_read(&self) -> bool {
        self.rows.is_none()
    }

    fn snapshot_position(&mut self, _c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        state.put_bool(self.rows.is_none());
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        if !state.is_empty() && state.bool()? {
            self.rows = None;
        }
        Ok(())
    }
}
