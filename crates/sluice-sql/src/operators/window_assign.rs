//! The window table functions `TUMBLE`, `HOP` and `CUMULATE` when their rows are used as rows
//! (not aggregated at once): every row is repeated once per window it belongs to, with
//! `window_start`, `window_end` and `window_time` appended.

use crate::window::WindowKind;
use arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, Result};
use sluice_engine::{Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// Creates window assigners.
pub struct WindowAssignFactory {
    pub kind: WindowKind,
    pub time_index: usize,
    pub output_schema: SchemaRef,
}

impl OperatorFactory for WindowAssignFactory {
    fn name(&self) -> String {
        format!("WindowTableFunction({})", self.kind.describe())
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WindowAssign {
            kind: self.kind.clone(),
            time_index: self.time_index,
            output_schema: self.output_schema.clone(),
        }))
    }
}

struct WindowAssign {
    kind: WindowKind,
    time_index: usize,
    output_schema: SchemaRef,
}

impl Operator for WindowAssign {
    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let time = cast(
            batch.data.column(self.time_index),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        let mut idx = Vec::with_capacity(time.len());
        let mut starts = Vec::with_capacity(time.len());
        let mut ends = Vec::with_capacity(time.len());
        for (i, t) in time.iter().enumerate() {
            if let Some(t) = t {
                self.kind.assign(t, |s, e| {
                    idx.push(i as u32);
                    starts.push(s);
                    ends.push(e);
                });
            }
        }
        let rows = take_record_batch(&batch.data, &UInt32Array::from(idx))?;
        let mut cols = rows.columns().to_vec();
        let n = self.output_schema.fields().len();
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        for (k, values) in [starts, ends, times].into_iter().enumerate() {
            let a: ArrayRef = Arc::new(TimestampMillisecondArray::from(values));
            cols.push(cast(&a, self.output_schema.field(n - 3 + k).data_type())?);
        }
        let data = RecordBatch::try_new(self.output_schema.clone(), cols)?;
        out.batch(ChangeBatch::inserts(data));
        Ok(())
    }
}
