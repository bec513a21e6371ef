//! Window aggregation: `GROUP BY key, window_start, window_end` over a window relation, or
//! `GROUP BY key, TUMBLE(ts, ...)`. Rows are assigned to their windows, aggregated per
//! (window, key) with DataFusion's accumulators, and each window fires once, when the
//! watermark reaches its end - 1. Rows for a window that has fired are late: dropped and
//! counted, as Flink does.
//!
//! Tumbling, hopping and cumulating windows keep their state in a map ordered by window end,
//! so a watermark pops the finished windows without a scan. Session windows are kept per key
//! and merged when a row bridges them.

use super::acc_state::{
    restore_accumulator, restore_groups_accumulator, snapshot_accumulators,
    snapshot_groups_accumulator, state_widths,
};
use super::df;
use crate::window::WindowKind;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MIN_WATERMARK};
use sluice_engine::{Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One aggregate call and its `FILTER (WHERE ...)`.
#[derive(Debug, Clone)]
pub struct AggSpec {
    pub expr: Arc<AggregateFunctionExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// Where an output column of the group part comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutCol {
    /// The n-th key expression.
    Key(usize),
    Start,
    End,
    Time,
}

/// Creates window aggregate operators.
pub struct WindowAggregateFactory {
    pub name: String,
    pub kind: WindowKind,
    pub time_index: usize,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub key_types: Vec<DataType>,
    pub layout: Vec<OutCol>,
    pub aggs: Vec<AggSpec>,
    pub output_schema: SchemaRef,
}

impl OperatorFactory for WindowAggregateFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let fields = self
            .key_types
            .iter()
            .map(|t| SortField::new(t.clone()))
            .collect();
        Ok(Box::new(WindowAggregate {
            spec: WindowAggregateFactory {
                name: self.name.clone(),
                kind: self.kind.clone(),
                time_index: self.time_index,
                keys: self.keys.clone(),
                key_types: self.key_types.clone(),
                layout: self.layout.clone(),
                aggs: self.aggs.clone(),
                output_schema: self.output_schema.clone(),
            },
            converter: RowConverter::new(fields)?,
            watermark: MIN_WATERMARK,
            windows: BTreeMap::new(),
            sessions: HashMap::new(),
            late: ctx.metrics.counter("late rows dropped"),
        }))
    }
}

enum Acc {
    Groups(Box<dyn GroupsAccumulator>),
    Single(Vec<Box<dyn Accumulator>>),
}

/// The groups (keys) of one window and their accumulators.
struct GroupTable {
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    accs: Vec<Acc>,
}

impl GroupTable {
    fn new(aggs: &[AggSpec]) -> Result<Self> {
        let mut accs = Vec::with_capacity(aggs.len());
        for a in aggs {
            accs.push(if a.expr.groups_accumulator_supported() {
                Acc::Groups(a.expr.create_groups_accumulator().map_err(df)?)
            } else {
                Acc::Single(Vec::new())
            });
        }
        Ok(GroupTable {
            index: HashMap::new(),
            keys: Vec::new(),
            accs,
        })
    }

    fn group_ids(&mut self, rows: &Rows, idx: &[u32], aggs: &[AggSpec]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(idx.len());
        for &r in idx {
            let key = rows.row(r as usize);
            let bytes = key.as_ref();
            let id = match self.index.get(bytes) {
                Some(&id) => id,
                None => {
                    let id = self.keys.len();
                    self.keys.push(bytes.into());
                    self.index.insert(bytes.into(), id);
                    for (acc, a) in self.accs.iter_mut().zip(aggs) {
                        if let Acc::Single(v) = acc {
                            v.push(a.expr.create_accumulator().map_err(df)?);
                        }
                    }
                    id
                }
            };
            out.push(id);
        }
        Ok(out)
    }

    fn update(&mut self, inputs: &BatchInputs, idx: &[u32], gids: &[usize]) -> Result<()> {
        let take_idx = UInt32Array::from(idx.to_vec());
        let n_groups = self.keys.len();
        for (a, acc) in self.accs.iter_mut().enumerate() {
            let args = inputs.args[a]
                .iter()
                .map(|c| take(c, &take_idx, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let filter = match &inputs.filters[a] {
                Some(f) => Some(take(f, &take_idx, None)?.as_boolean().clone()),
                None => None,
            };
            match acc {
                Acc::Groups(g) => g
                    .update_batch(&args, gids, filter.as_ref(), n_groups)
                    .map_err(df)?,
                Acc::Single(v) => {
                    let mut per_group: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
                    for (pos, &g) in gids.iter().enumerate() {
                        if filter
                            .as_ref()
                            .is_none_or(|f| f.is_valid(pos) && f.value(pos))
                        {
                            per_group.entry(g).or_default().push(pos as u32);
                        }
                    }
                    for (g, positions) in per_group {
                        let p = UInt32Array::from(positions);
                        let sub = args
                            .iter()
                            .map(|c| take(c, &p, None))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        v[g].update_batch(&sub).map_err(df)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The key rows and aggregate results of every group.
    fn finish(mut self) -> Result<GroupResults> {
        let mut results = Vec::with_capacity(self.accs.len());
        for acc in self.accs.iter_mut() {
            results.push(match acc {
                Acc::Groups(g) => g.evaluate(EmitTo::All).map_err(df)?,
                Acc::Single(v) => {
                    let values = v
                        .iter_mut()
                        .map(|a| a.evaluate())
                        .collect::<datafusion_common::Result<Vec<_>>>()
                        .map_err(df)?;
                    ScalarValue::iter_to_array(values).map_err(df)?
                }
            });
        }
        Ok((self.keys, results))
    }
}

/// Key rows and aggregate results of the groups of one window.
type GroupResults = (Vec<Box<[u8]>>, Vec<ArrayRef>);

/// A fired window: its bounds, key rows and aggregate results.
type Fired = ((EventTime, EventTime), Vec<Box<[u8]>>, Vec<ArrayRef>);

/// A fired session: start, end, key row and aggregate values.
type FiredSession = (EventTime, EventTime, Box<[u8]>, Vec<ScalarValue>);

/// The aggregate arguments and filters of one batch, evaluated once.
struct BatchInputs {
    args: Vec<Vec<ArrayRef>>,
    filters: Vec<Option<ArrayRef>>,
}

struct Session {
    start: EventTime,
    end: EventTime,
    accs: Vec<Box<dyn Accumulator>>,
    /// Rows of the current batch not yet added to `accs`.
    pending: Vec<u32>,
}

struct WindowAggregate {
    spec: WindowAggregateFactory,
    converter: RowConverter,
    watermark: EventTime,
    /// Open windows by (end, start).
    windows: BTreeMap<(EventTime, EventTime), GroupTable>,
    /// Open sessions by key.
    sessions: HashMap<Box<[u8]>, Vec<Session>>,
    late: Arc<AtomicU64>,
}

impl WindowAggregate {
    fn inputs(&self, batch: &RecordBatch) -> Result<BatchInputs> {
        let n = batch.num_rows();
        let mut args = Vec::new();
        let mut filters = Vec::new();
        for a in &self.spec.aggs {
            args.push(
                a.expr
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<datafusion_common::Result<Vec<_>>>()
                    .map_err(df)?,
            );
            filters.push(match &a.filter {
                Some(f) => Some(
                    f.evaluate(batch)
                        .and_then(|v| v.into_array(n))
                        .map_err(df)?,
                ),
                None => None,
            });
        }
        Ok(BatchInputs { args, filters })
    }

    fn key_rows(&self, batch: &RecordBatch) -> Result<Rows> {
        let n = batch.num_rows();
        let cols = self
            .spec
            .keys
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion_common::Result<Vec<_>>>()
            .map_err(df)?;
        if cols.is_empty() {
            // No key: every row is in the one group.
            let empty = RowConverter::new(vec![SortField::new(DataType::Boolean)])?;
            let ones: ArrayRef = Arc::new(BooleanArray::from(vec![true; n]));
            return Ok(empty.convert_columns(&[ones])?);
        }
        Ok(self.converter.convert_columns(&cols)?)
    }

    fn emit(&self, windows: Vec<Fired>, out: &mut Output) -> Result<()> {
        for ((start, end), keys, results) in windows {
            let n = keys.len();
            if n == 0 {
                continue;
            }
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
            let key_columns = self.key_columns(&key_refs)?;
            let mut columns: Vec<ArrayRef> = Vec::new();
            for (i, c) in self.spec.layout.iter().enumerate() {
                let field = self.spec.output_schema.field(i);
                let ts = |v: i64| -> Result<ArrayRef> {
                    let a: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![v; n]));
                    Ok(cast(&a, field.data_type())?)
                };
                columns.push(match c {
                    OutCol::Key(k) => key_columns[*k].clone(),
                    OutCol::Start => ts(start)?,
                    OutCol::End => ts(end)?,
                    OutCol::Time => ts(end - 1)?,
                });
            }
            let offset = self.spec.layout.len();
            for (j, r) in results.into_iter().enumerate() {
                let t = self.spec.output_schema.field(offset + j).data_type();
                columns.push(if r.data_type() == t { r } else { cast(&r, t)? });
            }
            let batch = RecordBatch::try_new(self.spec.output_schema.clone(), columns)
                .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.spec.name)))?;
            out.batch(ChangeBatch::inserts(batch));
        }
        Ok(())
    }

    fn process_sessions(
        &mut self,
        gap: i64,
        times: &[i64],
        rows: &Rows,
        inputs: &BatchInputs,
    ) -> Result<()> {
        // Group the batch's rows by key, in event-time order.
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for i in 0..times.len() {
            by_key.entry(rows.row(i).data()).or_default().push(i as u32);
        }
        let aggs = self.spec.aggs.clone();
        let mut late = 0;
        for (key, mut idx) in by_key {
            idx.sort_by_key(|&i| times[i as usize]);
            let sessions = self.sessions.entry(key.into()).or_default();
            for i in idx {
                let ts = times[i as usize];
                let (s, e) = (ts, ts + gap);
                // Flink merges windows that touch: [a, b) and [b, c).
                let overlapping: Vec<usize> = (0..sessions.len())
                    .filter(|&k| sessions[k].start <= e && s <= sessions[k].end)
                    .collect();
                if overlapping.is_empty() {
                    if e - 1 <= self.watermark {
                        late += 1;
                        continue;
                    }
                    let accs = aggs
                        .iter()
                        .map(|a| a.expr.create_accumulator())
                        .collect::<datafusion_common::Result<Vec<_>>>()
                        .map_err(df)?;
                    sessions.push(Session {
                        start: s,
                        end: e,
                        accs,
                        pending: vec![i],
                    });
                    continue;
                }
                // Merge every overlapping session into the first.
                let first = overlapping[0];
                for &k in overlapping[1..].iter().rev() {
                    let mut other = sessions.remove(k);
                    let target = &mut sessions[first];
                    target.start = target.start.min(other.start);
                    target.end = target.end.max(other.end);
                    target.pending.append(&mut other.pending);
                    for (acc, mut o) in target.accs.iter_mut().zip(other.accs) {
                        let state = o
                            .state()
                            .map_err(df)?
                            .into_iter()
                            .map(|v| v.to_array())
                            .collect::<datafusion_common::Result<Vec<_>>>()
                            .map_err(df)?;
                        acc.merge_batch(&state).map_err(df)?;
                    }
                }
                let target = &mut sessions[first];
                target.start = target.start.min(s);
                target.end = target.end.max(e);
                target.pending.push(i);
            }
            for session in sessions.iter_mut() {
                if session.pending.is_empty() {
                    continue;
                }
                let p = UInt32Array::from(std::mem::take(&mut session.pending));
                for (a, acc) in session.accs.iter_mut().enumerate() {
                    let mut args = inputs.args[a]
                        .iter()
                        .map(|c| take(c, &p, None))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    if let Some(f) = &inputs.filters[a] {
                        let f = take(f, &p, None)?;
                        let mask = f.as_boolean();
                        args = args
                            .iter()
                            .map(|c| arrow::compute::filter(c, mask))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                    }
                    acc.update_batch(&args).map_err(df)?;
                }
            }
        }
        self.late.fetch_add(late, Ordering::Relaxed);
        Ok(())
    }
}

impl WindowAggregate {
    /// The key row of every row of a keyless aggregate.
    fn keyless_key() -> Result<Box<[u8]>> {
        let c = RowConverter::new(vec![SortField::new(DataType::Boolean)])?;
        let ones: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        Ok(c.convert_columns(&[ones])?.row(0).as_ref().into())
    }

    /// Key rows as columns (none for a keyless aggregate).
    fn key_columns(&self, keys: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        if self.spec.keys.is_empty() {
            return Ok(Vec::new());
        }
        let parser = self.converter.parser();
        Ok(self
            .converter
            .convert_rows(keys.iter().map(|k| parser.parse(k)))?)
    }

    /// Key rows back from the first `self.spec.keys.len()` columns of `batch`.
    fn key_rows_of(&self, batch: &RecordBatch) -> Result<Vec<Box<[u8]>>> {
        let n = batch.num_rows();
        if self.spec.keys.is_empty() {
            let k = Self::keyless_key()?;
            return Ok(vec![k; n]);
        }
        let cols = batch.columns()[..self.spec.keys.len()].to_vec();
        let rows = self.converter.convert_columns(&cols)?;
        Ok((0..n).map(|i| rows.row(i).as_ref().into()).collect())
    }

    /// Splits the state columns after `from` into one group per aggregate.
    fn agg_columns(&self, batch: &RecordBatch, from: usize) -> Result<Vec<Vec<ArrayRef>>> {
        let mut at = from;
        let mut out = Vec::new();
        for width in state_widths(&self.spec.aggs)? {
            let cols = batch
                .columns()
                .get(at..at + width)
                .ok_or_else(|| {
                    SluiceError::Runtime(format!(
                        "{}: the checkpointed state has {} columns, fewer than this query's aggregates need",
                        self.spec.name,
                        batch.num_columns()
                    ))
                })?
                .to_vec();
            out.push(cols);
            at += width;
        }
        Ok(out)
    }
}

impl Operator for WindowAggregate {
    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.watermark);
        let windows: Vec<(EventTime, EventTime)> = self.windows.keys().copied().collect();
        state.put_u64(windows.len() as u64);
        for w in windows {
            let Some(mut table) = self.windows.remove(&w) else {
                continue;
            };
            let n = table.keys.len();
            let keys: Vec<&[u8]> = table.keys.iter().map(|k| k.as_ref()).collect();
            let mut columns = self.key_columns(&keys)?;
            for (acc, spec) in table.accs.iter_mut().zip(&self.spec.aggs) {
                columns.extend(match acc {
                    Acc::Groups(g) => snapshot_groups_accumulator(g, spec, n)?,
                    Acc::Single(v) => {
                        let mut refs: Vec<&mut Box<dyn Accumulator>> = v.iter_mut().collect();
                        snapshot_accumulators(&mut refs, spec, false)?
                    }
                });
            }
            state.put_i64(w.0);
            state.put_i64(w.1);
            state.put_columns(columns, n)?;
            self.windows.insert(w, table);
        }
        // Sessions: one row per session.
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        let mut bounds: Vec<(i64, i64)> = Vec::new();
        let mut per_agg: Vec<Vec<&mut Box<dyn Accumulator>>> =
            self.spec.aggs.iter().map(|_| Vec::new()).collect();
        for (key, sessions) in self.sessions.iter_mut() {
            for session in sessions.iter_mut() {
                keys.push(key.clone());
                bounds.push((session.start, session.end));
                for (a, acc) in session.accs.iter_mut().enumerate() {
                    per_agg[a].push(acc);
                }
            }
        }
        state.put_u64(keys.len() as u64);
        if !keys.is_empty() {
            let mut state_cols = Vec::new();
            for (mut accs, spec) in per_agg.into_iter().zip(&self.spec.aggs) {
                state_cols.extend(snapshot_accumulators(&mut accs, spec, false)?);
            }
            let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
            let mut columns = self.key_columns(&key_refs)?;
            columns.push(Arc::new(Int64Array::from_iter_values(
                bounds.iter().map(|b| b.0),
            )));
            columns.push(Arc::new(Int64Array::from_iter_values(
                bounds.iter().map(|b| b.1),
            )));
            columns.extend(state_cols);
            state.put_columns(columns, keys.len())?;
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.watermark = state.i64()?;
        for _ in 0..state.count()? {
            let end = state.i64()?;
            let start = state.i64()?;
            let batch = state.batch()?;
            let n = batch.num_rows();
            let keys = self.key_rows_of(&batch)?;
            let agg_cols = self.agg_columns(&batch, self.spec.keys.len())?;
            let mut table = GroupTable::new(&self.spec.aggs)?;
            for (i, k) in keys.into_iter().enumerate() {
                table.index.insert(k.clone(), i);
                table.keys.push(k);
            }
            for ((acc, spec), cols) in table.accs.iter_mut().zip(&self.spec.aggs).zip(&agg_cols) {
                match acc {
                    Acc::Groups(g) => *g = restore_groups_accumulator(spec, cols, n)?,
                    Acc::Single(v) => {
                        for row in 0..n {
                            v.push(restore_accumulator(spec, false, cols, row)?);
                        }
                    }
                }
            }
            self.windows.insert((end, start), table);
        }
        let sessions = state.count()?;
        if sessions > 0 {
            let batch = state.batch()?;
            let keys = self.key_rows_of(&batch)?;
            let k = self.spec.keys.len();
            let column = |i: usize| -> Result<Int64Array> {
                batch
                    .columns()
                    .get(i)
                    .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                    .cloned()
                    .ok_or_else(|| {
                        SluiceError::Runtime(format!(
                            "{}: the checkpointed sessions have no bounds",
                            self.spec.name
                        ))
                    })
            };
            let (starts, ends) = (column(k)?, column(k + 1)?);
            let agg_cols = self.agg_columns(&batch, k + 2)?;
            for (row, key) in keys.into_iter().enumerate() {
                let accs = self
                    .spec
                    .aggs
                    .iter()
                    .zip(&agg_cols)
                    .map(|(spec, cols)| restore_accumulator(spec, false, cols, row))
                    .collect::<Result<Vec<_>>>()?;
                self.sessions.entry(key).or_default().push(Session {
                    start: starts.value(row),
                    end: ends.value(row),
                    accs,
                    pending: Vec::new(),
                });
            }
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        if batch.kinds.is_some() {
            return Err(SluiceError::Plan(format!(
                "{}: window aggregation needs an insert-only input, but its input has updates",
                self.spec.name
            )));
        }
        let data = &batch.data;
        let time = cast(
            data.column(self.spec.time_index),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        if time.null_count() > 0 {
            return Err(SluiceError::Runtime(format!(
                "{}: a row has a NULL time attribute",
                self.spec.name
            )));
        }
        let times = time.values();
        let rows = self.key_rows(data)?;
        let inputs = self.inputs(data)?;
        if let WindowKind::Session { gap } = self.spec.kind {
            return self.process_sessions(gap, times, &rows, &inputs);
        }
        let mut per_window: HashMap<(EventTime, EventTime), Vec<u32>> = HashMap::new();
        let mut late = 0u64;
        let wm = self.watermark;
        for (i, &ts) in times.iter().enumerate() {
            let mut assigned = false;
            self.spec.kind.assign(ts, |start, end| {
                if end - 1 > wm {
                    per_window.entry((end, start)).or_default().push(i as u32);
                    assigned = true;
                }
            });
            if !assigned {
                late += 1;
            }
        }
        if late > 0 {
            self.late.fetch_add(late, Ordering::Relaxed);
        }
        for (w, idx) in per_window {
            let table = match self.windows.get_mut(&w) {
                Some(t) => t,
                None => self
                    .windows
                    .entry(w)
                    .or_insert(GroupTable::new(&self.spec.aggs)?),
            };
            let gids = table.group_ids(&rows, &idx, &self.spec.aggs)?;
            table.update(&inputs, &idx, &gids)?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let wm = self.watermark;
        let mut fired = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            let (end, start) = *entry.key();
            if end - 1 > wm {
                break;
            }
            let table = entry.remove();
            let (keys, results) = table.finish()?;
            fired.push(((start, end), keys, results));
        }
        if !self.sessions.is_empty() {
            let mut done: Vec<FiredSession> = Vec::new();
            for (key, sessions) in self.sessions.iter_mut() {
                let mut k = 0;
                while k < sessions.len() {
                    if sessions[k].end - 1 <= wm {
                        let mut s = sessions.remove(k);
                        let values = s
                            .accs
                            .iter_mut()
                            .map(|a| a.evaluate())
                            .collect::<datafusion_common::Result<Vec<_>>>()
                            .map_err(df)?;
                        done.push((s.start, s.end, key.clone(), values));
                    } else {
                        k += 1;
                    }
                }
            }
            self.sessions.retain(|_, v| !v.is_empty());
            done.sort_by_key(|a| (a.1, a.0));
            for (start, end, key, values) in done {
                let results = values
                    .into_iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion_common::Result<Vec<_>>>()
                    .map_err(df)?;
                fired.push(((start, end), vec![key], results));
            }
        }
        self.emit(fired, out)?;
        out.watermark(watermark);
        Ok(())
    }
}
