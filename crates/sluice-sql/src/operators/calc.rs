//! Filter and projection: the stateless part of a query (`WHERE`, `SELECT` expressions,
//! computed columns, casts to the sink's types), evaluated on whole batches.

use super::df;
use arrow::array::AsArray;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, SluiceError};
use sluice_engine::{Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// What a calc does to each batch.
#[derive(Debug, Clone)]
pub enum CalcStep {
    /// Keep the rows for which the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute new columns.
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

/// Creates calc operators.
pub struct CalcFactory {
    pub name: String,
    pub step: CalcStep,
}

impl OperatorFactory for CalcFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Calc {
            step: self.step.clone(),
        }))
    }
}

struct Calc {
    step: CalcStep,
}

/// Applies one calc step to a batch.
pub fn apply(step: &CalcStep, batch: ChangeBatch) -> Result<ChangeBatch> {
    match step {
        CalcStep::Filter(pred) => {
            let mask = pred.evaluate(&batch.data).map_err(df)?;
            let mask = mask.into_array(batch.num_rows()).map_err(df)?;
            let mask = mask.as_boolean_opt().ok_or_else(|| {
                SluiceError::Runtime("a WHERE condition did not give a boolean".into())
            })?;
            Ok(batch.filter(mask)?)
        }
        CalcStep::Project(exprs, schema) => {
            let n = batch.num_rows();
            let columns = exprs
                .iter()
                .map(|e| e.evaluate(&batch.data).and_then(|v| v.into_array(n)))
                .collect::<datafusion_common::Result<Vec<_>>>()
                .map_err(df)?;
            let data = RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?;
            Ok(ChangeBatch {
                data,
                kinds: batch.kinds,
                split: batch.split,
            })
        }
    }
}

impl Operator for Calc {
    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        out.batch(apply(&self.step, batch)?);
        Ok(())
    }
}
