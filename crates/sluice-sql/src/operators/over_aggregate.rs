//! OVER aggregates on event time: `agg(...) OVER (PARTITION BY k ORDER BY rowtime <frame>)`,
//! as Flink's `RowTime{Range,Rows}{Bounded,Unbounded}PrecedingFunction`s run them. Every
//! input row is emitted once, with the aggregates over its frame appended; the output is
//! append-only and keeps the time attribute.
//!
//! Rows wait per key in keyed state ordered by event time (a [`TimeOrderedState`]) until the
//! watermark passes their time (an event-time timer per key and time); a row at or before
//! the last time its key fired is late (dropped and counted). Then, for the rows at that time:
//!
//! - `RANGE BETWEEN INTERVAL 'x' PRECEDING AND CURRENT ROW`: every row at `t` gets the
//!   aggregates over the key's rows in `[t - x, t]`; rows before `t - x` are dropped.
//! - `ROWS BETWEEN n PRECEDING AND CURRENT ROW`: the rows in time order (arrival order at
//!   equal times), each with the aggregates over itself and the `n` rows before it; the
//!   last `n` rows are kept for the rows to come.
//! - `UNBOUNDED PRECEDING` (the default frame): the accumulators' state is kept per key; with
//!   `RANGE` all rows at `t` get the aggregates over every row up to `t`, with `ROWS` each row
//!   over the rows up to itself.

use super::acc_state::{state_types, BatchInputs, GroupAccumulators};
use super::df;
use super::window_aggregate::AggSpec;
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MIN_WATERMARK};
use sluice_engine::keyed::{RowCodec, TimeOrderedState, ValueState};
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// The frame of an OVER window (it always ends at the current row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `RANGE BETWEEN ... PRECEDING`: the milliseconds before the row's time, or unbounded.
    Range(Option<i64>),
    /// `ROWS BETWEEN ... PRECEDING`: the rows before the row, or unbounded.
    Rows(Option<u64>),
}

/// Creates OVER aggregate operators.
pub struct OverAggregateFactory {
    pub input_schema: SchemaRef,
    /// The input's columns, then one per aggregate.
    pub output_schema: SchemaRef,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub rowtime: usize,
    pub frame: OverFrame,
    pub aggs: Vec<AggSpec>,
}

impl OperatorFactory for OverAggregateFactory {
    fn name(&self) -> String {
        match self.frame {
            OverFrame::Range(Some(ms)) => format!("OverAggregate(RANGE {ms} ms PRECEDING)"),
            OverFrame::Rows(Some(n)) => format!("OverAggregate(ROWS {n} PRECEDING)"),
            OverFrame::Range(None) => "OverAggregate(RANGE UNBOUNDED PRECEDING)".into(),
            OverFrame::Rows(None) => "OverAggregate(ROWS UNBOUNDED PRECEDING)".into(),
        }
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let key_types = self
            .partition_by
            .iter()
            .map(|e| e.data_type(&self.input_schema).map_err(df))
            .collect::<Result<Vec<DataType>>>()?;
        let types = |s: &SchemaRef| s.fields().iter().map(|f| f.data_type().clone()).collect();
        let state_types = state_types(&self.aggs)?;
        Ok(Box::new(OverAggregate {
            name: self.name(),
            input_schema: self.input_schema.clone(),
            output_schema: self.output_schema.clone(),
            partition_by: self.partition_by.clone(),
            rowtime: self.rowtime,
            frame: self.frame,
            aggs: self.aggs.clone(),
            key_codec: RowCodec::new(key_types),
            row_codec: RowCodec::new(types(&self.input_schema)),
            state_codec: RowCodec::new(state_types.clone()),
            state_types,
            rows: store.time_ordered_state("rows", None)?,
            last_fired: store.value_state("last fired", None)?,
            accumulated: store.value_state("accumulated", None)?,
            store,
            watermark: MIN_WATERMARK,
            late: ctx.late_records(),
        }))
    }
}

struct OverAggregate {
    name: String,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    rowtime: usize,
    frame: OverFrame,
    aggs: Vec<AggSpec>,
    key_codec: RowCodec,
    row_codec: RowCodec,
    state_codec: RowCodec,
    state_types: Vec<DataType>,
    store: KeyedStore,
    /// The current key's rows waiting to be emitted (and, for `ROWS n PRECEDING`, the last
    /// `n` emitted; for `RANGE x PRECEDING`, those within `x` of the last emitted).
    rows: TimeOrderedState<Vec<u8>>,
    /// The time the current key last fired at.
    last_fired: ValueState<i64>,
    /// Unbounded frames: the accumulators' state over every emitted row of the key.
    accumulated: ValueState<Vec<u8>>,
    watermark: EventTime,
    late: LateRecords,
}

impl OverAggregate {
    /// The aggregates of `groups` groups over `rows` (encoded input rows): row `idx[i]`
    /// goes into group `gids[i]`, after the stored state `base` (unbounded frames).
    fn aggregate(
        &self,
        rows: &[&[u8]],
        idx: &[u32],
        gids: &[usize],
        groups: usize,
        base: Option<&[ArrayRef]>,
    ) -> Result<GroupAccumulators> {
        let mut accs = GroupAccumulators::new(&self.aggs, groups)?;
        if let Some(state) = base {
            let all: Vec<usize> = (0..groups).collect();
            let repeated: Vec<ArrayRef> = state
                .iter()
                .map(|c| {
                    let at = arrow::array::UInt32Array::from(vec![0u32; groups]);
                    arrow::compute::take(c, &at, None).map_err(SluiceError::from)
                })
                .collect::<Result<_>>()?;
            accs.merge(&repeated, &all)?;
        }
        if !rows.is_empty() {
            let batch = RecordBatch::try_new_with_options(
                self.input_schema.clone(),
                self.row_codec.decode(rows)?,
                &RecordBatchOptions::new().with_row_count(Some(rows.len())),
            )
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
            let inputs = BatchInputs::evaluate(&self.aggs, &batch)?;
            accs.update(&inputs, idx, gids)?;
        }
        Ok(accs)
    }

    /// Fires the current key at `t`: emits its rows at `t` with their aggregates.
    fn fire(&mut self, t: i64, out: &mut Vec<(Vec<u8>, Vec<ArrayRef>)>) -> Result<()> {
        let rows = self.rows;
        let at_t: Vec<Vec<u8>> = rows
            .between(&mut self.store, t, t)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        if at_t.is_empty() {
            return Ok(());
        }
        let k = at_t.len();
        match self.frame {
            OverFrame::Range(Some(preceding)) => {
                let frame: Vec<Vec<u8>> = rows
                    .between(&mut self.store, t.saturating_sub(preceding), t)?
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect();
                let refs: Vec<&[u8]> = frame.iter().map(|r| r.as_slice()).collect();
                let idx: Vec<u32> = (0..refs.len() as u32).collect();
                let results = self
                    .aggregate(&refs, &idx, &vec![0; refs.len()], 1, None)?
                    .evaluate()?;
                for row in at_t {
                    out.push((row, results.clone()));
                }
                rows.take_up_to(
                    &mut self.store,
                    t.saturating_sub(preceding).saturating_sub(1),
                )?;
            }
            OverFrame::Rows(Some(n)) => {
                let before: Vec<Vec<u8>> = rows
                    .between(&mut self.store, i64::MIN, t.saturating_sub(1))?
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect();
                let sequence: Vec<&[u8]> = before
                    .iter()
                    .chain(at_t.iter())
                    .map(|r| r.as_slice())
                    .collect();
                let (mut idx, mut gids) = (Vec::new(), Vec::new());
                for j in 0..k {
                    let at = before.len() + j;
                    for i in at.saturating_sub(n as usize)..=at {
                        idx.push(i as u32);
                        gids.push(j);
                    }
                }
                let results = self
                    .aggregate(&sequence, &idx, &gids, k, None)?
                    .evaluate()?;
                for (j, row) in at_t.iter().enumerate() {
                    out.push((row.clone(), results.iter().map(|c| c.slice(j, 1)).collect()));
                }
                // Keep the last n rows for the rows to come.
                let keep_from = sequence.len().saturating_sub(n as usize);
                let slots = rows.between(&mut self.store, i64::MIN, t)?;
                for (slot, _) in slots.into_iter().take(keep_from) {
                    rows.remove(&mut self.store, slot)?;
                }
            }
            OverFrame::Range(None) | OverFrame::Rows(None) => {
                let base = match self.accumulated.get(&mut self.store)? {
                    Some(b) => Some(self.state_codec.decode(&[b.as_slice()])?),
                    None => None,
                };
                let refs: Vec<&[u8]> = at_t.iter().map(|r| r.as_slice()).collect();
                let (mut idx, mut gids) = (Vec::new(), Vec::new());
                let groups = if self.frame == OverFrame::Range(None) {
                    1
                } else {
                    k
                };
                for g in 0..groups {
                    let upto = if groups == 1 { k } else { g + 1 };
                    for i in 0..upto {
                        idx.push(i as u32);
                        gids.push(g);
                    }
                }
                let results = self
                    .aggregate(&refs, &idx, &gids, groups, base.as_deref())?
                    .evaluate()?;
                for (j, row) in at_t.iter().enumerate() {
                    let g = if groups == 1 { 0 } else { j };
                    out.push((row.clone(), results.iter().map(|c| c.slice(g, 1)).collect()));
                }
                let all: Vec<u32> = (0..k as u32).collect();
                let state = self
                    .aggregate(&refs, &all, &vec![0; k], 1, base.as_deref())?
                    .state(&self.state_types)?;
                let encoded = self
                    .state_codec
                    .encode_rows(&state, 1)?
                    .pop()
                    .ok_or_else(|| SluiceError::Runtime(format!("{}: no state", self.name)))?;
                self.accumulated.set(&mut self.store, &encoded)?;
                rows.take_up_to(&mut self.store, t)?;
            }
        }
        Ok(())
    }

    /// Emits rows with their aggregates.
    fn emit(&self, rows: Vec<(Vec<u8>, Vec<ArrayRef>)>, out: &mut Output) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = rows.iter().map(|(r, _)| r.as_slice()).collect();
        let mut columns = self.row_codec.decode(&refs)?;
        for a in 0..self.aggs.len() {
            let parts: Vec<&dyn Array> = rows.iter().map(|(_, v)| v[a].as_ref()).collect();
            let column = arrow::compute::concat(&parts)?;
            let want = self.output_schema.field(columns.len()).data_type();
            columns.push(if column.data_type() == want {
                column
            } else {
                cast(&column, want)?
            });
        }
        let data = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        out.batch(ChangeBatch::inserts(data));
        Ok(())
    }
}

impl Operator for OverAggregate {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        super::require_inserts(&batch, &self.name)?;
        let keys = super::encode_keys(&self.partition_by, &self.key_codec, data)?;
        let rows = self.row_codec.encode_rows(data.columns(), n)?;
        let times = data
            .column(self.rowtime)
            .as_primitive::<TimestampMillisecondType>();
        let mut late = 0;
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            if times.is_null(i) {
                late += 1;
                continue;
            }
            let t = times.value(i);
            self.store.set_current_key(key)?;
            // As Flink: a row at or before the last time its key fired (0 at first) is late.
            if t <= self.last_fired.get(&mut self.store)?.unwrap_or(0) {
                late += 1;
                continue;
            }
            self.rows.add(&mut self.store, t, &row)?;
            self.store.register_event_timer(t, &[])?;
        }
        self.late.add(late);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut emitted = Vec::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            self.store.set_current_timer_key(&timer);
            self.fire(timer.time_ms, &mut emitted)?;
            self.last_fired.set(&mut self.store, &timer.time_ms)?;
        }
        self.emit(emitted, out)?;
        out.watermark(watermark);
        Ok(())
    }
}
