//! Window aggregation: `GROUP BY key, window_start, window_end` over a window relation, or
//! `GROUP BY key, TUMBLE(ts, ...)`. Rows are assigned to their windows, aggregated per
//! (window, key) with DataFusion's accumulators, and each window fires once, when the
//! watermark reaches its end - 1. Rows for a window that has fired are late: dropped and
//! counted, as Flink does.
//!
//! The state lives in the subtask's keyed state ([`KeyedStore`]), as Flink's `WindowOperator`
//! keeps it: per key, a map from window (the namespace, `[start, end)`) to the accumulators'
//! intermediate state, and an event-time timer per (key, window) at its end - 1. A watermark
//! pops the due timers (in time order, so the finished windows come without a scan) and
//! emits them.
//!
//! Tumbling, hopping and cumulating windows first combine rows in memory, as Flink's window
//! buffer (mini-batch) does: per window, a vectorised `GroupsAccumulator` over its keys. The
//! buffer goes to keyed state (each group merged with what the state has, and given its
//! timer) at a checkpoint barrier and when it holds too many groups; a window that fires
//! before either never touches the state.
//!
//! Session windows are the same map per key, written with every batch (the groups a batch
//! touches are loaded once, updated and written back): a row that bridges sessions merges
//! them (their states into one, their timers into one), as Flink's merging window set does.

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
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
use std::collections::{BTreeMap, HashMap};
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
    /// Windows of processing time (`PROCTIME()`): a row goes into the windows of the
    /// wall-clock time it arrives at, and windows fire when the clock passes their end
    /// (processing-time timers), not on watermarks; at the end of a bounded input the open
    /// windows are dropped, as in Flink.
    pub proctime: bool,
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
                proctime: self.proctime,
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
            buffer: BTreeMap::new(),
            buffered: 0,
            watermark: MIN_WATERMARK,
            late: ctx.late_records(),
        }))
    }
}

/// The most (key, window) results emitted in one batch.
const EMIT_BATCH_ROWS: usize = 8192;

/// The most (key, window) groups the window buffer holds; past it, it is written to keyed
/// state (a bound on memory, whatever the number of keys).
const MAX_BUFFERED_GROUPS: usize = 250_000;

/// The keys of a batch's rows, in one buffer.
struct KeyRows {
    data: Vec<u8>,
    /// Where each row's key ends in `data`.
    ends: Vec<usize>,
}

impl KeyRows {
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

/// The groups of one window combined in memory since the buffer was last written out.
struct BufferedWindow {
    index: HashMap<Vec<u8>, usize>,
    keys: Vec<Vec<u8>>,
    accs: GroupAccumulators,
}

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
    /// The window buffer, by (end, start).
    buffer: BTreeMap<(EventTime, EventTime), BufferedWindow>,
    /// Groups in the buffer.
    buffered: usize,
    watermark: EventTime,
    late: LateRecords,
}

impl WindowAggregate {
    fn inputs(&self, batch: &RecordBatch) -> Result<BatchInputs> {
        BatchInputs::evaluate(&self.spec.aggs, batch)
    }

    /// The stable key of every row of `batch` (the empty key for a keyless aggregate).
    fn keys(&self, batch: &RecordBatch) -> Result<KeyRows> {
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
        let mut rows = KeyRows {
            data: Vec::with_capacity(n * 16),
            ends: Vec::with_capacity(n),
        };
        self.key_codec.for_each_row(&cols, n, |_, key| {
            rows.data.extend_from_slice(key);
            rows.ends.push(rows.data.len());
        })?;
        Ok(rows)
    }

    /// Adds the rows of each [`GroupUpdate`] to its (key, window) group, in one vectorised
    /// pass over all groups, and writes them to keyed state ([`Self::store_groups`]).
    fn accumulate(&mut self, inputs: &BatchInputs, groups: &[GroupUpdate<'_>]) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut idx: Vec<u32> = Vec::new();
        let mut gids: Vec<usize> = Vec::new();
        for (g, u) in groups.iter().enumerate() {
            idx.extend_from_slice(&u.rows);
            gids.extend(std::iter::repeat_n(g, u.rows.len()));
        }
        let mut accs = GroupAccumulators::new(&self.spec.aggs, groups.len())?;
        accs.update(inputs, &idx, &gids)?;
        self.store_groups(groups, accs)
    }

    /// Writes groups to keyed state: group `g` of `accs` is `groups[g]`, merged with the
    /// stored states it takes over (and those of merged sessions removed with their
    /// timers); a new group gets its timer.
    fn store_groups(
        &mut self,
        groups: &[GroupUpdate<'_>],
        mut accs: GroupAccumulators,
    ) -> Result<()> {
        // The stored states to merge: bytes, and the group each goes to.
        let mut stored: Vec<Vec<u8>> = Vec::new();
        let mut stored_ids: Vec<usize> = Vec::new();
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
        }
        if !stored.is_empty() {
            let rows: Vec<&[u8]> = stored.iter().map(|b| b.as_slice()).collect();
            accs.merge(&self.state_codec.decode(&rows)?, &stored_ids)?;
        }
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

    /// Writes the window buffer to keyed state.
    fn flush_buffer(&mut self) -> Result<()> {
        let buffer = std::mem::take(&mut self.buffer);
        self.buffered = 0;
        for ((end, start), w) in buffer {
            let groups: Vec<GroupUpdate<'_>> = w
                .keys
                .iter()
                .map(|key| GroupUpdate {
                    key,
                    window: (start, end),
                    merged: vec![(start, end)],
                    rows: Vec::new(),
                })
                .collect();
            self.store_groups(&groups, w.accs)?;
        }
        Ok(())
    }

    /// Tumbling, hopping and cumulating windows: every row goes to each of its windows that
    /// has not fired, in the window buffer.
    fn process_windows(
        &mut self,
        times: &[i64],
        keys: &KeyRows,
        inputs: &BatchInputs,
    ) -> Result<()> {
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
        self.late.add(late);
        self.buffer_rows(per_window, keys, inputs)
    }

    /// Rows that carry their windows (`starts`, `ends`), from a window aggregate before: each
    /// goes to its window, unless that has fired.
    fn process_attached(
        &mut self,
        starts: &[i64],
        ends: &[i64],
        keys: &KeyRows,
        inputs: &BatchInputs,
    ) -> Result<()> {
        let mut per_window: HashMap<(EventTime, EventTime), Vec<u32>> = HashMap::new();
        let mut late = 0u64;
        for (i, (&start, &end)) in starts.iter().zip(ends).enumerate() {
            if end - 1 > self.watermark {
                per_window.entry((end, start)).or_default().push(i as u32);
            } else {
                late += 1;
            }
        }
        self.late.add(late);
        self.buffer_rows(per_window, keys, inputs)
    }

    /// Adds rows to the buffered windows (by `(end, start)`), their groups' accumulators.
    fn buffer_rows(
        &mut self,
        per_window: HashMap<(EventTime, EventTime), Vec<u32>>,
        keys: &KeyRows,
        inputs: &BatchInputs,
    ) -> Result<()> {
        for (w, idx) in per_window {
            let window = match self.buffer.entry(w) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(BufferedWindow {
                    index: HashMap::new(),
                    keys: Vec::new(),
                    accs: GroupAccumulators::new(&self.spec.aggs, 0)?,
                }),
            };
            let mut gids = Vec::with_capacity(idx.len());
            for &r in &idx {
                let key = keys.get(r as usize);
                let id = match window.index.get(key) {
                    Some(&id) => id,
                    None => {
                        let id = window.keys.len();
                        window.index.insert(key.to_vec(), id);
                        window.keys.push(key.to_vec());
                        self.buffered += 1;
                        id
                    }
                };
                gids.push(id);
            }
            window.accs.grow(window.keys.len())?;
            window.accs.update(inputs, &idx, &gids)?;
        }
        if self.buffered > MAX_BUFFERED_GROUPS {
            self.flush_buffer()?;
        }
        Ok(())
    }

    /// Session windows: the rows of each key are merged into its stored sessions; a row
    /// whose session would already have fired, and that bridges no open session, is late.
    fn process_sessions(
        &mut self,
        gap: i64,
        times: &[i64],
        keys: &KeyRows,
        inputs: &BatchInputs,
    ) -> Result<()> {
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::new();
        for i in 0..times.len() {
            by_key.entry(keys.get(i)).or_default().push(i as u32);
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
        self.late.add(late);
        self.accumulate(inputs, &groups)
    }

    /// Evaluates due groups (in the order given; the states of one (window, key) listed
    /// more than once are merged) and emits them.
    fn fire(&self, due: &[Due], out: &mut Output) -> Result<()> {
        let mut index: HashMap<(EventTime, EventTime, &[u8]), usize> = HashMap::new();
        let mut groups: Vec<&Due> = Vec::new();
        let mut ids = Vec::with_capacity(due.len());
        for d in due {
            let id = *index.entry((d.start, d.end, &d.key)).or_insert_with(|| {
                groups.push(d);
                groups.len() - 1
            });
            ids.push(id);
        }
        let rows: Vec<&[u8]> = due.iter().map(|d| d.state.as_slice()).collect();
        let mut accs = GroupAccumulators::new(&self.spec.aggs, groups.len())?;
        accs.merge(&self.state_codec.decode(&rows)?, &ids)?;
        let results = accs.evaluate()?;
        self.emit(
            &groups.iter().map(|d| (d.start, d.end)).collect::<Vec<_>>(),
            &groups.iter().map(|d| d.key.as_slice()).collect::<Vec<_>>(),
            &results,
            out,
        )
    }

    /// Emits results: row `i` is window `windows[i]` of key `keys[i]`.
    fn emit(
        &self,
        windows: &[(EventTime, EventTime)],
        keys: &[&[u8]],
        results: &[ArrayRef],
        out: &mut Output,
    ) -> Result<()> {
        for at in (0..keys.len()).step_by(EMIT_BATCH_ROWS) {
            let n = EMIT_BATCH_ROWS.min(keys.len() - at);
            let windows = &windows[at..at + n];
            let key_columns = self.key_codec.decode(&keys[at..at + n])?;
            let mut columns: Vec<ArrayRef> = Vec::new();
            for (i, c) in self.spec.layout.iter().enumerate() {
                let field = self.spec.output_schema.field(i);
                let ts = |f: fn(&(EventTime, EventTime)) -> i64| -> Result<ArrayRef> {
                    let a: ArrayRef = Arc::new(TimestampMillisecondArray::from_iter_values(
                        windows.iter().map(f),
                    ));
                    Ok(cast(&a, field.data_type())?)
                };
                columns.push(match c {
                    OutCol::Key(k) => key_columns[*k].clone(),
                    OutCol::Start => ts(|w| w.0)?,
                    OutCol::End => ts(|w| w.1)?,
                    OutCol::Time => ts(|w| w.1 - 1)?,
                });
            }
            let offset = self.spec.layout.len();
            for (j, r) in results.iter().enumerate() {
                let t = self.spec.output_schema.field(offset + j).data_type();
                columns.push(as_type(r.slice(at, n), t)?);
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

    /// The window buffer goes to keyed state first (the runtime snapshots the keyed store
    /// after this).
    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        self.flush_buffer()?;
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
        let current = self.watermark;
        self.watermark = super::restore_smallest_watermark(states, current, |state| {
            self.restore_state(state)?;
            Ok(self.watermark)
        })?;
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if batch.kinds.is_some() {
            return Err(SluiceError::Plan(format!(
                "{}: window aggregation needs an insert-only input, but its input has updates",
                self.spec.name
            )));
        }
        let data = &batch.data;
        if self.spec.proctime {
            // The windows of the clock the rows arrive at (Flink's processing-time assigner).
            let now = self.store.now_ms();
            let n = data.num_rows();
            let time: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![now; n]));
            let time = time.as_primitive::<TimestampMillisecondType>();
            let keys = self.keys(data)?;
            let inputs = self.inputs(data)?;
            self.process_windows(time.values(), &keys, &inputs)?;
            if n > 0 {
                return self.advance_processing_time(now, out);
            }
            return Ok(());
        }
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
            WindowKind::Attached { start_index } => {
                let starts = cast(
                    data.column(start_index),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                let starts = starts.as_primitive::<TimestampMillisecondType>();
                if starts.null_count() > 0 {
                    return Err(SluiceError::Runtime(format!(
                        "{}: a row has a NULL window_start",
                        self.spec.name
                    )));
                }
                self.process_attached(starts.values(), time.values(), &keys, &inputs)
            }
            _ => self.process_windows(time.values(), &keys, &inputs),
        }
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        if !self.spec.proctime {
            self.watermark = self.watermark.max(watermark);
            self.fire_due(out)?;
        }
        out.watermark(watermark);
        Ok(())
    }

    /// Processing time: the windows the clock has passed fire.
    fn on_processing_time(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        let timers = self.store.pop_processing_timers(now_ms);
        if let Some(t) = timers.first() {
            self.store.set_current_timer_key(t);
            self.advance_processing_time(now_ms, out)?;
        }
        Ok(())
    }
}

impl WindowAggregate {
    /// Fires the windows whose end the watermark (or, for processing-time windows, the
    /// clock) has passed.
    fn fire_due(&mut self, out: &mut Output) -> Result<()> {
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
        let mut buffered = Vec::new();
        while let Some(entry) = self.buffer.first_entry() {
            if entry.key().0 - 1 > self.watermark {
                break;
            }
            let ((end, start), w) = entry.remove_entry();
            self.buffered -= w.keys.len();
            buffered.push((start, end, w));
        }
        if due.is_empty() {
            // Windows that never reached the state: straight from the buffer.
            for (start, end, w) in buffered {
                let results = w.accs.evaluate()?;
                let keys: Vec<&[u8]> = w.keys.iter().map(|k| k.as_slice()).collect();
                self.emit(&vec![(start, end); keys.len()], &keys, &results, out)?;
            }
        } else {
            for (start, end, w) in buffered {
                let n = w.keys.len();
                let states = self
                    .state_codec
                    .encode_rows(&w.accs.state(&self.state_types)?, n)?;
                for (key, state) in w.keys.into_iter().zip(states) {
                    due.push(Due {
                        start,
                        end,
                        key,
                        state,
                    });
                }
            }
            // Windows in the order they end (sessions of one end by start).
            due.sort_by_key(|d| (d.end, d.start));
            self.fire(&due, out)?;
        }
        Ok(())
    }

    /// Processing time moves to `now`: due windows fire, and a timer wakes the operator at
    /// the end of the next window while windows are open.
    fn advance_processing_time(&mut self, now: i64, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(now - 1);
        self.fire_due(out)?;
        if !self.buffer.is_empty() || self.store.timers() > 0 {
            let mut next = i64::MAX;
            self.spec.kind.assign(now, |_, end| next = next.min(end));
            if next != i64::MAX {
                self.store.register_processing_timer(next - 1, &[])?;
            }
        }
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
