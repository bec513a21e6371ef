//! Window Top-N: `ROW_NUMBER() OVER (PARTITION BY window_start, window_end, ... ORDER BY ...)`
//! filtered by `rownum <= N`. Each partition keeps, in keyed state, its best N rows of each
//! window so far (a later row that ties with the N-th does not replace it); an event-time
//! timer at the window's end - 1 emits them with their row number, once, as Flink's window
//! Top-N does, and clears them. Rows for a window that has fired are late: dropped and
//! counted.

use super::df;
use arrow::array::{Array, ArrayRef, AsArray, UInt32Array, UInt64Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError};
use sluice_engine::keyed::{MapState, RowCodec};
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
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
        let input_fields = &self.output_schema.fields()[..self.output_schema.fields().len() - 1];
        let input_schema = Arc::new(arrow::datatypes::Schema::new(input_fields.to_vec()));
        let mut store = ctx.keyed_store()?;
        let best = store.map_state("best rows", None)?;
        Ok(Box::new(WindowTopN {
            name: self.name.clone(),
            window_end_index: self.window_end_index,
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            limit: self.limit,
            output_schema: self.output_schema.clone(),
            rows_codec: RowCodec::new(
                input_schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect(),
            ),
            input_schema,
            store,
            best,
            watermark: sluice_common::MIN_WATERMARK,
            late: ctx.late_records(),
        }))
    }
}

struct WindowTopN {
    name: String,
    window_end_index: usize,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<SortKey>,
    limit: u64,
    output_schema: SchemaRef,
    /// The input's columns (the output without the row number).
    input_schema: SchemaRef,
    /// Encodes the kept rows.
    rows_codec: RowCodec,
    store: KeyedStore,
    /// Per partition key: window end -> its best rows so far, in order.
    best: MapState<i64, Vec<u8>>,
    watermark: EventTime,
    late: LateRecords,
}

fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(df)
}

/// Rows as one value: the count of rows, then each row's length and encoding.
fn pack(rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

fn unpack(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let bad = || SluiceError::Runtime("window Top-N: a kept row is corrupt".into());
    let u32_at = |pos: usize| -> Result<usize> {
        bytes
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(bad)
    };
    let n = u32_at(0)?;
    let mut pos = 4;
    let mut rows = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        let len = u32_at(pos)?;
        rows.push(bytes.get(pos + 4..pos + 4 + len).ok_or_else(bad)?);
        pos += 4 + len;
    }
    Ok(rows)
}

impl WindowTopN {
    /// The order of the rows of `batch` by the ORDER BY, ties in arrival order.
    fn sorted(&self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for k in &self.order_by {
            let a = eval(&k.expr, batch)?;
            fields.push(SortField::new_with_options(
                a.data_type().clone(),
                arrow::compute::SortOptions {
                    descending: k.descending,
                    nulls_first: k.nulls_first,
                },
            ));
            columns.push(a);
        }
        let mut order: Vec<usize> = (0..batch.num_rows()).collect();
        if columns.is_empty() {
            return Ok(order);
        }
        let rows = RowConverter::new(fields)?.convert_columns(&columns)?;
        order.sort_by(|&a, &b| rows.row(a).cmp(&rows.row(b)).then(a.cmp(&b)));
        Ok(order)
    }

    /// The kept rows of the current key's window `end` as a batch.
    fn kept(&mut self, end: i64) -> Result<Option<RecordBatch>> {
        let Some(bytes) = self.best.get(&mut self.store, &end)? else {
            return Ok(None);
        };
        let rows = unpack(&bytes)?;
        let columns = self.rows_codec.decode(&rows)?;
        Ok(Some(RecordBatch::try_new(
            self.input_schema.clone(),
            columns,
        )?))
    }

    /// Adds `rows` (of one partition key, the current one, and window `end`) to the best
    /// rows kept, keeping the first `limit` in order.
    fn add(&mut self, end: i64, rows: RecordBatch) -> Result<()> {
        let all = match self.kept(end)? {
            Some(kept) => concat_batches(&self.input_schema, &[kept, rows])?,
            None => {
                self.store.register_event_timer(end - 1, &[])?;
                rows
            }
        };
        let order = self.sorted(&all)?;
        let keep: Vec<u32> = order
            .into_iter()
            .take(self.limit as usize)
            .map(|i| i as u32)
            .collect();
        let best = take_record_batch(&all, &UInt32Array::from(keep))?;
        let encoded = self
            .rows_codec
            .encode_rows(best.columns(), best.num_rows())?;
        self.best.put(&mut self.store, &end, &pack(&encoded))
    }

    /// The partition key of every row of `batch`, stably encoded (what the store keys by).
    fn partition_keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let keys: Vec<ArrayRef> = self
            .partition_by
            .iter()
            .map(|p| eval(p, batch))
            .collect::<Result<_>>()?;
        let codec = RowCodec::new(keys.iter().map(|k| k.data_type().clone()).collect());
        codec.encode_rows(&keys, batch.num_rows())
    }

    /// Takes rows `idx` of `data` into the state, by partition key and window.
    fn insert(&mut self, data: &RecordBatch, idx: &[u32]) -> Result<()> {
        let rows = take_record_batch(data, &UInt32Array::from(idx.to_vec()))?;
        let keys = self.partition_keys(&rows)?;
        let ends = cast(
            rows.column(self.window_end_index),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ends = ends.as_primitive::<TimestampMillisecondType>();
        // (key, window end) -> rows, in arrival order.
        let mut groups: BTreeMap<(&[u8], i64), Vec<u32>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            groups
                .entry((key.as_slice(), ends.value(i)))
                .or_default()
                .push(i as u32);
        }
        for ((key, end), idx) in groups {
            self.store.set_current_key(key)?;
            let part = take_record_batch(&rows, &UInt32Array::from(idx))?;
            self.add(end, part)?;
        }
        Ok(())
    }
}

impl Operator for WindowTopN {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.watermark);
        // No buffered batches: the rows are in keyed state (Sluice 0.1 wrote them here).
        state.put_u64(0);
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.watermark = state.i64()?;
        for _ in 0..state.count()? {
            let _end = state.i64()?;
            for _ in 0..state.count()? {
                // A checkpoint of Sluice 0.1: its buffered rows go into keyed state (each
                // subtask keeps those of its key groups).
                let batch = state.batch()?;
                let mine: Vec<u32> = self
                    .partition_keys(&batch)?
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| self.store.owns_key(k))
                    .map(|(i, _)| i as u32)
                    .collect();
                self.insert(&batch, &mine)?;
            }
        }
        Ok(())
    }

    /// The kept rows are keyed state; the watermark is the smallest the old subtasks had.
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let current = self.watermark;
        self.watermark = super::restore_smallest_watermark(states, current, |state| {
            self.restore_state(state)?;
            Ok(self.watermark)
        })?;
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
        let mut on_time = Vec::with_capacity(ends.len());
        let mut late = 0;
        for (i, end) in ends.iter().enumerate() {
            match end {
                Some(e) if e - 1 > self.watermark => on_time.push(i as u32),
                _ => late += 1,
            }
        }
        self.late.add(late);
        if !on_time.is_empty() {
            self.insert(&batch.data, &on_time)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut fired = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            self.store.set_current_timer_key(&timer);
            let end = timer.time_ms + 1;
            if let Some(rows) = self.kept(end)? {
                numbers.extend(1..=rows.num_rows() as u64);
                fired.push(rows);
            }
            self.best.remove(&mut self.store, &end)?;
        }
        if !fired.is_empty() {
            let all = concat_batches(&self.input_schema, &fired)?;
            let mut cols = all.columns().to_vec();
            let rn: ArrayRef = Arc::new(UInt64Array::from(numbers));
            let rn_type = self.output_schema.field(cols.len()).data_type();
            cols.push(if rn.data_type() == rn_type {
                rn
            } else {
                cast(&rn, rn_type)?
            });
            let result = RecordBatch::try_new(self.output_schema.clone(), cols)
                .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
            out.batch(ChangeBatch::inserts(result));
        }
        out.watermark(watermark);
        Ok(())
    }
}
