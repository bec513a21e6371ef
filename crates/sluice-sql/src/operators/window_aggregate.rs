//! Window aggregation: `GROUP BY key, window_start, window_end` over a window relation, or
//! `GROUP BY key, TUMBLE(ts, ...)`. Rows are assigned to their windows, aggregated per
//! (window, key) with DataFusion's accumulators, and each window fires once, when the
//! watermark reaches its end - 1. Rows for a window that has fired are late: dropped and
//! counted, as Flink does.
//!
//! The state lives in the subtask's keyed state ([`KeyedStore`]), as Flink's `WindowOperator`
//! keeps it: per key, a map from window (the namespace, `[start, end)`) to the accumulators'
//! intermediate state, and an event-time timer per (key, window) at its end - 1. A batch
//! loads the (key, window) groups it touches once, updates them with a vectorised
//! `GroupsAccumulator` where DataFusion has one, and writes them back; a watermark pops the
//! due timers (in time order, so the finished windows come without a scan) and emits them.
//! Session windows are the same map per key: a row that bridges sessions merges them (their
//! states into one, their timers into one), as Flink's merging window set does.

use super::acc_state::{as_type, state_types, BatchInputs, GroupAccumulators};
use super::df;
use crate::window::WindowKind;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MIN_WATERMARK};
use sluice_engine::keyed::{MapState, RowCodec};
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
use std::collections::HashMap;
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
        let state_types = state_types(&self.aggs)?;
        let mut store = ctx.keyed_store()?;
        let windows = store.map_state("windows", None)?;
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
            key_codec: RowCodec::new(self.key_types.clone()),
            state_codec: RowCodec::new(state_types.clone()),
            state_types,
            store,
            windows,
            watermark: MIN_WATERMARK,
            late: ctx.metrics.counter("late rows dropped"),
        }))
    }
}

/// The most (key, window) results emitted in one batch.
const EMIT_BATCH_ROWS: usize = 8192;

/// A window as a namespace: `[start, end)`, ordered by start then end.
fn window_ns(start: EventTime, end: EventTime) -> Vec<u8> {
    let mut ns = Vec::with_capacity(16);
    ns.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    ns.extend_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    ns
}

/// A window back from its namespace.
fn window_of(ns: &[u8]) -> Result<(EventTime, EventTime)> {
    let field = |at: usize| -> Result<i64> {
        ns.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| (u64::from_be_bytes(b) ^ (1 << 63)) as i64)
            .ok_or_else(|| SluiceError::Runtime("window state is corrupt: a bad window".into()))
    };
    Ok((field(0)?, field(8)?))
}

/// A (key, window) group due to fire: start, end, key and stored state.
struct Due {
    start: EventTime,
    end: EventTime,
    key: Vec<u8>,
    state: Vec<u8>,
}

/// Rows of a batch for one (key, window) group.
struct GroupUpdate<'a> {
    key: &'a [u8],
    window: (EventTime, EventTime),
    /// The stored windows of the key whose state the group takes over (itself, or the
    /// sessions it merges); those other than `window` are removed.
    merged: Vec<(EventTime, EventTime)>,
    /// The rows of the batch that go into it.
    rows: Vec<u32>,
}

/// A session of one key while a batch is merged into that key's sessions.
struct OpenSession {
    start: EventTime,
    end: EventTime,
    /// The stored sessions merged into this one (indexes into the key's stored sessions).
    merged: Vec<usize>,
    /// Rows of the batch that fall into it.
    rows: Vec<u32>,
}

struct WindowAggregate {
    spec: WindowAggregateFactory,
    key_codec: RowCodec,
    /// Encodes the accumulators' state of a (key, window) group.
    state_codec: RowCodec,
    state_types: Vec<DataType>,
    store: KeyedStore,
    /// Per key: window namespace -> the accumulators' state.
    windows: MapState<Vec<u8>, Vec<u8>>,
    watermark: EventTime,
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

    /// The stable key of every row of `batch` (the empty key for a keyless aggregate).
    fn keys(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let n = batch.num_rows();
        let cols = self
            .spec
            .keys
            .iter()
            .zip(&self.spec.key_types)
            .map(|(e, t)| {
                let c = e
                    .evaluate(batch)
                    .and_then(|v| v.into_array(n))
                    .map_err(df)?;
                as_type(c, t)
            })
            .collect::<Result<Vec<_>>>()?;
        self.key_codec.encode_rows(&cols, n)
    }

    /// Adds the rows of each [`GroupUpdate`] to its (key, window) group: the stored states it
    /// takes over are loaded (and those of merged sessions removed with their timers), the
    /// rows added in one vectorised pass over all groups, and the states written back; a new
    /// group gets its timer.
    fn accumulate(&mut self, inputs: &BatchInputs, groups: &[GroupUpdate<'_>]) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        // The stored states to merge: bytes, and the group each goes to.
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let mut stored_ids: Vec<usize> = Vec::new();
        let mut idx: Vec<u32> = Vec::new();
        let mut gids: Vec<usize> = Vec::new();
        for (g, u) in groups.iter().enumerate() {
            let (key, (start, end)) = (u.key, u.window);
            self.store.set_current_key(key)?;
            let mut has_timer = false;
            for &(s, e) in &u.merged {
                let ns = window_ns(s, e);
                let Some(b) = self.windows.get(&mut self.store, &ns)? else {
                    continue;
                };
                stored.push(b);
                stored_ids.push(g);
                if (s, e) == (start, end) {
                    has_timer = true;
                } else {
                    // A session merged into a larger one: its state and timer go.
                    self.windows.remove(&mut self.store, &ns)?;
                    self.store.delete_event_timer(e - 1, &ns);
                }
            }
            if !has_timer {
                self.store
                    .register_event_timer(end - 1, &window_ns(start, end))?;
            }
            idx.extend_from_slice(&u.rows);
            gids.extend(std::iter::repeat_n(g, u.rows.len()));
        }
        let aggs = &self.spec.aggs;
        let mut accs = GroupAccumulators::new(aggs, groups.len())?;
        if !stored.is_empty() {
            let rows: Vec<&[u8]> = stored.iter().map(|b| b.as_slice()).collect();
            accs.merge(&self.state_codec.decode(&rows)?, &stored_ids)?;
        }
        accs.update(inputs, &idx, &gids)?;
        // (A query without aggregates has no state columns: every group's state is empty.)
        let state = self
            .state_codec
            .encode_rows(&accs.state(&self.state_types)?, groups.len())?;
        for (u, bytes) in groups.iter().zip(state) {
            self.store.set_current_key(u.key)?;
            let (start, end) = u.window;
            self.windows
                .put(&mut self.store, &window_ns(start, end), &bytes)?;
        }
        Ok(())
    }

    /// Tumbling, hopping and cumulating windows: every row goes to each of its windows that
    /// has not fired.
    fn process_windows(
        &mut self,
        times: &[i64],
        keys: &[Vec<u8>],
        inputs: &BatchInputs,
    ) -> Result<()> {
        let mut per_group: HashMap<(&[u8], EventTime, EventTime), Vec<u32>> = HashMap::new();
        let mut late = 0u64;
        let wm = self.watermark;
        for (i, &ts) in times.iter().enumerate() {
            let mut assigned = false;
            let key = keys[i].as_slice();
            self.spec.kind.assign(ts, |start, end| {
                if end - 1 > wm {
                    per_group
                        .entry((key, start, end))
                        .or_default()
                        .push(i as u32);
                    assigned = true;
                }
            });
            if !assigned {
                late += 1;
            }
        }
        self.late.fetch_add(late, Ordering::Relaxed);
        let groups: Vec<_> = per_group
            .into_iter()
            .map(|((key, s, e), rows)| GroupUpdate {
                key,
                window: (s, e),
                merged: vec![(s, e)],
                rows,
            })
            .collect();
        self.accumulate(inputs, &groups)
    }

    /// Session windows: the rows of each key are merged into its stored sessions; a row
    /// whose session would already have fired, and that bridges no open session, is late.
    fn process_sessions(
        &mut self,
        gap: i64,
        times: &[i64],
        keys: &[Vec<u8>],
        inputs: &BatchInputs,
    ) -> Result<()> {
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_key.entry(key.as_slice()).or_default().push(i as u32);
        }
        let mut late = 0;
        let mut groups = Vec::new();
        for (key, mut idx) in by_key {
            idx.sort_by_key(|&i| times[i as usize]);
            self.store.set_current_key(key)?;
            let stored: Vec<(EventTime, EventTime)> = self
                .windows
                .entries(&mut self.store)?
                .iter()
                .map(|(ns, _)| window_of(ns))
                .collect::<Result<_>>()?;
            let mut sessions: Vec<OpenSession> = stored
                .iter()
                .enumerate()
                .map(|(k, &(start, end))| OpenSession {
                    start,
                    end,
                    merged: vec![k],
                    rows: Vec::new(),
                })
                .collect();
            for i in idx {
                let ts = times[i as usize];
                let (s, e) = (ts, ts + gap);
                // Flink merges windows that touch: [a, b) and [b, c).
                let overlapping: Vec<usize> = (0..sessions.len())
                    .filter(|&k| sessions[k].start <= e && s <= sessions[k].end)
                    .collect();
                let Some(&first) = overlapping.first() else {
                    if e - 1 <= self.watermark {
                        late += 1;
                    } else {
                        sessions.push(OpenSession {
                            start: s,
                            end: e,
                            merged: Vec::new(),
                            rows: vec![i],
                        });
                    }
                    continue;
                };
                for &k in overlapping[1..].iter().rev() {
                    let mut other = sessions.remove(k);
                    let target = &mut sessions[first];
                    target.start = target.start.min(other.start);
                    target.end = target.end.max(other.end);
                    target.merged.append(&mut other.merged);
                    target.rows.append(&mut other.rows);
                }
                let target = &mut sessions[first];
                target.start = target.start.min(s);
                target.end = target.end.max(e);
                target.rows.push(i);
            }
            for session in sessions {
                if session.rows.is_empty() {
                    continue; // untouched by this batch
                }
                groups.push(GroupUpdate {
                    key,
                    window: (session.start, session.end),
                    merged: session.merged.iter().map(|&k| stored[k]).collect(),
                    rows: session.rows,
                });
            }
        }
        self.late.fetch_add(late, Ordering::Relaxed);
        self.accumulate(inputs, &groups)
    }

    /// Evaluates due groups (in the order given) and emits them.
    fn fire(&self, due: &[Due], out: &mut Output) -> Result<()> {
        for chunk in due.chunks(EMIT_BATCH_ROWS) {
            let n = chunk.len();
            let rows: Vec<&[u8]> = chunk.iter().map(|d| d.state.as_slice()).collect();
            let mut accs = GroupAccumulators::new(&self.spec.aggs, n)?;
            let ids: Vec<usize> = (0..n).collect();
            accs.merge(&self.state_codec.decode(&rows)?, &ids)?;
            let results = accs.evaluate()?;
            let keys: Vec<&[u8]> = chunk.iter().map(|d| d.key.as_slice()).collect();
            let key_columns = self.key_codec.decode(&keys)?;
            let mut columns: Vec<ArrayRef> = Vec::new();
            for (i, c) in self.spec.layout.iter().enumerate() {
                let field = self.spec.output_schema.field(i);
                let ts = |f: fn(&Due) -> i64| -> Result<ArrayRef> {
                    let a: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(
                        chunk.iter().map(f),
                    ));
                    Ok(cast(&a, field.data_type())?)
                };
                columns.push(match c {
                    OutCol::Key(k) => key_columns[*k].clone(),
                    OutCol::Start => ts(|d| d.start)?,
                    OutCol::End => ts(|d| d.end)?,
                    OutCol::Time => ts(|d| d.end - 1)?,
                });
            }
            let offset = self.spec.layout.len();
            for (j, r) in results.into_iter().enumerate() {
                let t = self.spec.output_schema.field(offset + j).data_type();
                columns.push(as_type(r, t)?);
            }
            let batch = RecordBatch::try_new(self.spec.output_schema.clone(), columns)
                .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.spec.name)))?;
            out.batch(ChangeBatch::inserts(batch));
        }
        Ok(())
    }

    /// Reads a checkpoint of Sluice 0.1 (or 0.2), which kept the windows in the operator: a
    /// batch of key columns and accumulator states per window, then one of every session
    /// with its bounds. Each subtask moves the groups of its key groups into keyed state.
    fn restore_operator_windows(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let k = self.spec.keys.len();
        for _ in 0..state.count()? {
            let end = state.i64()?;
            let start = state.i64()?;
            let batch = state.batch()?;
            let cols = batch.columns();
            self.restore_groups(
                &cols[..k.min(cols.len())],
                &cols[k.min(cols.len())..],
                |_| Ok((start, end)),
            )?;
        }
        if state.count()? > 0 {
            let batch = state.batch()?;
            let cols = batch.columns();
            let bound = |i: usize| -> Result<Int64Array> {
                cols.get(i)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .cloned()
                    .ok_or_else(|| {
                        SluiceError::Runtime(format!(
                            "{}: the checkpointed sessions have no bounds",
                            self.spec.name
                        ))
                    })
            };
            let (starts, ends) = (bound(k)?, bound(k + 1)?);
            self.restore_groups(&cols[..k], &cols[k + 2..], |row| {
                Ok((starts.value(row), ends.value(row)))
            })?;
        }
        Ok(())
    }

    /// Puts the groups of this subtask's key groups into keyed state: row `i` has key
    /// `key_cols`, state `state_cols` and window `window(i)`.
    fn restore_groups(
        &mut self,
        key_cols: &[ArrayRef],
        state_cols: &[ArrayRef],
        window: impl Fn(usize) -> Result<(EventTime, EventTime)>,
    ) -> Result<()> {
        let n = state_cols.first().map(|c| c.len()).unwrap_or(0);
        if state_cols.len() != self.state_types.len() {
            return Err(SluiceError::Runtime(format!(
                "{}: the checkpointed state does not match this query's aggregates",
                self.spec.name
            )));
        }
        let state_cols = state_cols
            .iter()
            .zip(&self.state_types)
            .map(|(c, t)| as_type(c.clone(), t))
            .collect::<Result<Vec<_>>>()?;
        let key_cols = key_cols
            .iter()
            .zip(&self.spec.key_types)
            .map(|(c, t)| as_type(c.clone(), t))
            .collect::<Result<Vec<_>>>()?;
        let keys = self.key_codec.encode_rows(&key_cols, n)?;
        let states = self.state_codec.encode_rows(&state_cols, n)?;
        for (i, (key, bytes)) in keys.iter().zip(states).enumerate() {
            if !self.store.owns_key(key) {
                continue;
            }
            let (start, end) = window(i)?;
            let ns = window_ns(start, end);
            self.store.set_current_key(key)?;
            self.windows.put(&mut self.store, &ns, &bytes)?;
            self.store.register_event_timer(end - 1, &ns)?;
        }
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.watermark);
        // No windows and no sessions here: they are in keyed state (earlier versions wrote
        // them here, and a restore still reads them).
        state.put_u64(0);
        state.put_u64(0);
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.watermark = state.i64()?;
        self.restore_operator_windows(state)
    }

    /// The windows are keyed state; the watermark is the smallest the old subtasks had.
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let mut watermark = EventTime::MAX;
        for (_, state) in states.iter_mut() {
            self.restore_state(state)?;
            watermark = watermark.min(self.watermark);
        }
        self.watermark = watermark.min(self.watermark);
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
        let keys = self.keys(data)?;
        let inputs = self.inputs(data)?;
        match self.spec.kind {
            WindowKind::Session { gap } => {
                self.process_sessions(gap, time.values(), &keys, &inputs)
            }
            _ => self.process_windows(time.values(), &keys, &inputs),
        }
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut due = Vec::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            self.store.set_current_timer_key(&timer);
            let Some(state) = self.windows.get(&mut self.store, &timer.namespace)? else {
                continue;
            };
            self.windows.remove(&mut self.store, &timer.namespace)?;
            let (start, end) = window_of(&timer.namespace)?;
            due.push(Due {
                start,
                end,
                key: timer.key,
                state,
            });
        }
        // Windows in the order they end (sessions of one end by start).
        due.sort_by_key(|d| (d.end, d.start));
        self.fire(&due, out)?;
        out.watermark(watermark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_namespaces_order_by_start_then_end_and_read_back() {
        let windows = [(-5_000, 0), (-1, 9), (0, 10), (0, 20), (10, 20)];
        let encoded: Vec<Vec<u8>> = windows.iter().map(|&(s, e)| window_ns(s, e)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        for (ns, w) in encoded.iter().zip(windows) {
            assert_eq!(window_of(ns).unwrap(), w);
        }
        assert!(window_of(&[1, 2, 3]).is_err());
    }
}
