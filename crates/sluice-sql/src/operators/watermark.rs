//! Watermark generation for a table with `WATERMARK FOR col AS expr`, as Flink's
//! `WatermarkAssignerOperator` does: the watermark is the largest value of `expr` seen so far,
//! emitted as soon as it has advanced by more than `pipeline.auto-watermark-interval`.
//!
//! Rows travel in batches, but lateness must be judged per row as in Flink: when a row is at
//! or behind a watermark that Flink would already have emitted before it, the batch is cut
//! there and that watermark is sent ahead of the row. Rows in order (the usual case) never cut
//! a batch.

use super::df;
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MIN_WATERMARK};
use sluice_engine::{Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// Creates watermark assigners.
pub struct WatermarkAssignerFactory {
    pub table: String,
    pub rowtime_index: usize,
    pub expr: Arc<dyn PhysicalExpr>,
    pub interval_ms: i64,
}

impl OperatorFactory for WatermarkAssignerFactory {
    fn name(&self) -> String {
        format!("WatermarkAssigner({})", self.table)
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WatermarkAssigner {
            table: self.table.clone(),
            rowtime_index: self.rowtime_index,
            expr: self.expr.clone(),
            interval_ms: self.interval_ms,
            current: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
            sent: MIN_WATERMARK,
        }))
    }
}

struct WatermarkAssigner {
    table: String,
    rowtime_index: usize,
    expr: Arc<dyn PhysicalExpr>,
    interval_ms: i64,
    /// The largest watermark expression value seen.
    current: EventTime,
    /// The watermark Flink would have emitted by now.
    emitted: EventTime,
    /// The watermark sent downstream.
    sent: EventTime,
}

fn millis(a: &dyn Array) -> Result<arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    let c = cast(
        &a.slice(0, a.len()),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    Ok(c.as_primitive::<TimestampMillisecondType>().clone())
}

impl Operator for WatermarkAssigner {
    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        let rowtime = millis(batch.data.column(self.rowtime_index).as_ref())?;
        if rowtime.null_count() > 0 {
            return Err(SluiceError::Runtime(format!(
                "table '{}': the time attribute '{}' is NULL in a row; every row needs an event time (filter NULLs out or give a default in a computed column)",
                self.table,
                batch.data.schema().field(self.rowtime_index).name()
            )));
        }
        let wm = self
            .expr
            .evaluate(&batch.data)
            .and_then(|v| v.into_array(n))
            .map_err(df)?;
        let wm = millis(wm.as_ref())?;
        let mut segment_start = 0;
        for i in 0..n {
            if rowtime.value(i) <= self.emitted && self.emitted > self.sent {
                out.batch(ChangeBatch {
                    data: batch.data.slice(segment_start, i - segment_start),
                    kinds: None,
                });
                out.watermark(self.emitted);
                self.sent = self.emitted;
                segment_start = i;
            }
            if wm.is_valid(i) {
                self.current = self.current.max(wm.value(i));
                if self.current.saturating_sub(self.emitted) > self.interval_ms {
                    self.emitted = self.current;
                }
            }
        }
        let rest = if segment_start == 0 {
            batch
        } else {
            ChangeBatch {
                data: batch.data.slice(segment_start, n - segment_start),
                kinds: None,
            }
        };
        out.batch(rest);
        if self.emitted > self.sent {
            out.watermark(self.emitted);
            self.sent = self.emitted;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        // Only the end of input (the maximum) passes; the source itself has no event time.
        if watermark > self.sent {
            self.sent = watermark;
            out.watermark(watermark);
        }
        Ok(())
    }
}
