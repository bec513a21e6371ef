//! Window Top-N: `ROW_NUMBER() OVER (PARTITION BY window_start, window_end, ... ORDER BY ...)`
//! filtered by `rownum <= N`. The rows of a window are held until the watermark passes the
//! window's end; then each partition is sorted and its first N rows are emitted with their
//! row number, once, as Flink's window Top-N does.

use super::df;
use arrow::array::{ArrayRef, AsArray, UInt32Array, UInt64Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError};
use sluice_engine::{Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One `ORDER BY` term.
#[derive(Debug, Clone)]
pub struct SortKey {
    pub expr: Arc<dyn PhysicalExpr>,
    pub descending: bool,
    pub nulls_first: bool,
}

/// Creates window Top-N operators.
pub struct WindowTopNFactory {
    pub name: String,
    /// The column holding the window end.
    pub window_end_index: usize,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub order_by: Vec<SortKey>,
    /// Rows kept per partition.
    pub limit: u64,
    /// Input columns plus the row number.
    pub output_schema: SchemaRef,
}

impl OperatorFactory for WindowTopNFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WindowTopN {
            window_end_index: self.window_end_index,
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            limit: self.limit,
            output_schema: self.output_schema.clone(),
            pending: BTreeMap::new(),
            watermark: sluice_common::MIN_WATERMARK,
            late: ctx.metrics.counter("late rows dropped"),
        }))
    }
}

struct WindowTopN {
    window_end_index: usize,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<SortKey>,
    limit: u64,
    output_schema: SchemaRef,
    /// Rows of open windows, by window end.
    pending: BTreeMap<EventTime, Vec<RecordBatch>>,
    watermark: EventTime,
    late: Arc<std::sync::atomic::AtomicU64>,
}

fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(df)
}

impl WindowTopN {
    fn fire(&self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for p in &self.partition_by {
            let a = eval(p, &batch)?;
            fields.push(SortField::new(a.data_type().clone()));
            columns.push(a);
        }
        let partition_len = columns.len();
        for k in &self.order_by {
            let a = eval(&k.expr, &batch)?;
            fields.push(SortField::new_with_options(
                a.data_type().clone(),
                arrow::compute::SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                },
            ));
            columns.push(a);
        }
        let converter = RowConverter::new(fields)?;
        let rows = converter.convert_columns(&columns)?;
        let partition_converter = RowConverter::new(
            columns[..partition_len]
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let partitions = partition_converter.convert_columns(&columns[..partition_len])?;
        let mut order: Vec<usize> = (0..n).collect();
        // Rows of a partition are adjacent (its key is a prefix), sorted by the ORDER BY.
        order.sort_by(|&a, &b| rows.row(a).cmp(&rows.row(b)).then(a.cmp(&b)));
        let mut keep = Vec::new();
        let mut numbers = Vec::new();
        let mut rank = 0u64;
        for (pos, &i) in order.iter().enumerate() {
            let new_partition = pos == 0 || partitions.row(order[pos - 1]) != partitions.row(i);
            rank = if new_partition { 1 } else { rank + 1 };
            if rank <= self.limit {
                keep.push(i as u32);
                numbers.push(rank);
            }
        }
        let selected = take_record_batch(&batch, &UInt32Array::from(keep))?;
        let mut cols = selected.columns().to_vec();
        let rn: ArrayRef = Arc::new(UInt64Array::from(numbers));
        let rn_type = self.output_schema.field(cols.len()).data_type();
        cols.push(if rn.data_type() == rn_type {
            rn
        } else {
            cast(&rn, rn_type)?
        });
        let result = RecordBatch::try_new(self.output_schema.clone(), cols)
            .map_err(|e| SluiceError::Runtime(format!("window Top-N: {e}")))?;
        out.batch(ChangeBatch::inserts(result));
        Ok(())
    }
}

impl Operator for WindowTopN {
    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.watermark);
        state.put_u64(self.pending.len() as u64);
        for (end, batches) in &self.pending {
            state.put_i64(*end);
            state.put_u64(batches.len() as u64);
            for b in batches {
                state.put_batch(b)?;
            }
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.watermark = state.i64()?;
        for _ in 0..state.count()? {
            let end = state.i64()?;
            let mut batches = Vec::new();
            for _ in 0..state.count()? {
                batches.push(state.batch()?);
            }
            self.pending.insert(end, batches);
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let ends = cast(
            batch.data.column(self.window_end_index),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ends = ends.as_primitive::<TimestampMillisecondType>();
        let mut by_end: BTreeMap<EventTime, Vec<u32>> = BTreeMap::new();
        let mut late = 0;
        for (i, end) in ends.iter().enumerate() {
            match end {
                Some(e) if e - 1 > self.watermark => by_end.entry(e).or_default().push(i as u32),
                _ => late += 1,
            }
        }
        self.late
            .fetch_add(late, std::sync::atomic::Ordering::Relaxed);
        for (end, idx) in by_end {
            let part = if idx.len() == batch.num_rows() {
                batch.data.clone()
            } else {
                take_record_batch(&batch.data, &UInt32Array::from(idx))?
            };
            self.pending.entry(end).or_default().push(part);
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() - 1 > self.watermark {
                break;
            }
            let batches = entry.remove();
            let Some(first) = batches.first() else {
                continue;
            };
            let all = concat_batches(&first.schema(), &batches)?;
            self.fire(all, out)?;
        }
        out.watermark(watermark);
        Ok(())
    }
}
