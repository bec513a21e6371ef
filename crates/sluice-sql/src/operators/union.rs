//! `UNION ALL`: the rows of every input, as they come, under the union's schema (each input
//! arrives with its own column names; the planner has cast the types to the union's). The
//! runtime's input gate merges the inputs' watermarks (the minimum) and aligns their
//! barriers; row kinds pass through, so a union of updating inputs is updating.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use sluice_common::{ChangeBatch, Result, SluiceError};
use sluice_engine::{Operator, OperatorFactory, Output, StateReader, SubtaskContext};

/// Creates union operators.
pub struct UnionFactory {
    pub schema: SchemaRef,
}

impl OperatorFactory for UnionFactory {
    fn name(&self) -> String {
        "Union".into()
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Union {
            schema: self.schema.clone(),
        }))
    }
}

struct Union {
    schema: SchemaRef,
}

impl Operator for Union {
    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.data.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| SluiceError::Runtime(format!("UNION ALL, input {}: {e}", input + 1)))?;
        out.batch(ChangeBatch::new(data, batch.kinds));
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        _old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        // No state.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_common::{Message, RowKind};
    use std::sync::Arc;

    #[test]
    fn rows_take_the_union_schema_and_keep_their_kinds() {
        let union = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let input = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(input, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        let kinds = Some(vec![RowKind::Insert, RowKind::Delete].into());
        let ctx_free = UnionFactory {
            schema: union.clone(),
        };
        let mut op = Union {
            schema: ctx_free.schema.clone(),
        };
        let mut out = Output::default();
        op.process_batch(1, ChangeBatch::new(data, kinds), &mut out)
            .unwrap();
        let Some(Message::Data(b)) = out.drain().next() else {
            panic!("no batch")
        };
        assert_eq!(b.data.schema(), union);
        assert_eq!(b.kind(1), RowKind::Delete);
    }
}
