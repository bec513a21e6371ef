//! Flink's sink NOT NULL enforcer (`table.exec.sink.not-null-enforcer`): before a sink, a
//! NULL in a column the table declares `NOT NULL` (or in its primary key) fails the job
//! (`ERROR`, the default) or drops the row (`DROP`); the rows then carry the table's
//! nullability to the sink.

use arrow::array::{Array, BooleanArray};
use arrow::compute::{and, is_not_null};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use sluice_common::{
    ChangeBatch, CheckpointId, EventTime, Result, SluiceError, SplitId, SplitStatus,
};
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
use std::sync::Arc;

/// What the enforcer does with a NULL in a NOT NULL column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNullEnforcer {
    Error,
    Drop,
}

impl NotNullEnforcer {
    /// The value of `table.exec.sink.not-null-enforcer`.
    pub fn parse(value: &str) -> Result<NotNullEnforcer> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ERROR" => Ok(NotNullEnforcer::Error),
            "DROP" => Ok(NotNullEnforcer::Drop),
            other => Err(SluiceError::Config(format!(
                "'table.exec.sink.not-null-enforcer' = '{other}': expected 'ERROR' or 'DROP'"
            ))),
        }
    }
}

/// `sink`, with the enforcer before it: its rows are checked (and carry the table's
/// nullability) before the sink sees them. The sink keeps its name, so that the job's
/// checkpoints still fit it.
pub fn enforcing(
    sink: Arc<dyn OperatorFactory>,
    schema: SchemaRef,
    mode: NotNullEnforcer,
) -> Arc<dyn OperatorFactory> {
    let checked: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !schema.field(i).is_nullable())
        .collect();
    if checked.is_empty() {
        return sink;
    }
    Arc::new(EnforcingFactory {
        sink,
        enforcer: Arc::new(Enforcer {
            schema,
            mode,
            checked,
        }),
    })
}

struct EnforcingFactory {
    sink: Arc<dyn OperatorFactory>,
    enforcer: Arc<Enforcer>,
}

impl OperatorFactory for EnforcingFactory {
    fn name(&self) -> String {
        self.sink.name()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(EnforcingSink {
            sink: self.sink.create(ctx)?,
            enforcer: self.enforcer.clone(),
        }))
    }

    fn input_column_names(&self) -> Option<Vec<String>> {
        self.sink.input_column_names()
    }
}

/// A sink behind its enforcer: everything but the batches goes straight to the sink.
struct EnforcingSink {
    sink: Box<dyn Operator>,
    enforcer: Arc<Enforcer>,
}

impl Operator for EnforcingSink {
    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let batch = self.enforcer.enforce(batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.sink.process_batch(input, batch, out)
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.sink.process_watermark(watermark, out)
    }

    fn process_split(
        &mut self,
        split: SplitId,
        status: SplitStatus,
        out: &mut Output,
    ) -> Result<()> {
        self.sink.process_split(split, status, out)
    }

    fn end_input(&mut self, out: &mut Output) -> Result<()> {
        self.sink.end_input(out)
    }

    fn close(&mut self, out: &mut Output) -> Result<()> {
        self.sink.close(out)
    }

    fn snapshot_state(&mut self, checkpoint: CheckpointId, state: &mut StateWriter) -> Result<()> {
        self.sink.snapshot_state(checkpoint, state)
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.sink.restore_state(state)
    }

    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        self.sink.restore_rescaled(old, states)
    }

    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        self.sink.keyed_store()
    }

    fn on_processing_time(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        self.sink.on_processing_time(now_ms, out)
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.sink.notify_checkpoint_complete(checkpoint)
    }
}

struct Enforcer {
    schema: SchemaRef,
    mode: NotNullEnforcer,
    checked: Vec<usize>,
}

impl Enforcer {
    fn enforce(&self, batch: ChangeBatch) -> Result<ChangeBatch> {
        let mut keep: Option<BooleanArray> = None;
        for &i in &self.checked {
            let column = batch.data.column(i);
            if column.null_count() == 0 {
                continue;
            }
            if self.mode == NotNullEnforcer::Error {
                return Err(SluiceError::Runtime(format!(
                    "Column '{}' is NOT NULL, however, a null value is being written into it. You can set job configuration 'table.exec.sink.not-null-enforcer'='DROP' to suppress this exception and drop such records silently.",
                    self.schema.field(i).name()
                )));
            }
            let valid = is_not_null(column.as_ref())?;
            keep = Some(match keep {
                Some(k) => and(&k, &valid)?,
                None => valid,
            });
        }
        let batch = match &keep {
            None => batch,
            Some(mask) => batch.filter(mask)?,
        };
        let rows = batch.num_rows();
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.data.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok(ChangeBatch { data, ..batch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_common::RowKind;

    fn enforcer(mode: NotNullEnforcer) -> Enforcer {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        Enforcer {
            schema,
            mode,
            checked: vec![0],
        }
    }

    fn batch() -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        ChangeBatch::new(
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                    Arc::new(StringArray::from(vec![None, Some("x"), Some("y")])),
                ],
            )
            .unwrap(),
            Some(vec![RowKind::Insert, RowKind::Insert, RowKind::Delete].into()),
        )
    }

    #[test]
    fn a_null_in_a_not_null_column_fails_or_is_dropped() {
        let err = enforcer(NotNullEnforcer::Error)
            .enforce(batch())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Column 'id' is NOT NULL"), "{err}");
        let out = enforcer(NotNullEnforcer::Drop).enforce(batch()).unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(out.kind(1), RowKind::Delete);
        // The rows carry the sink's names and nullability; a NULL elsewhere is fine.
        assert!(!out.data.schema().field(0).is_nullable());
        assert_eq!(out.data.schema().field(1).name(), "name");
        assert!(out.data.column(1).is_null(0));
        assert_eq!(
            NotNullEnforcer::parse("drop").unwrap(),
            NotNullEnforcer::Drop
        );
        assert!(NotNullEnforcer::parse("TRIM").is_err());
    }
}
