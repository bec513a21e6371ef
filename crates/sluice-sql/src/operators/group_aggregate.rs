//! Non-windowed aggregation (`GROUP BY key` without a window): an updating stream. For each
//! input row, in order, the row's group is updated and the change is emitted as Flink's
//! `GroupAggFunction` emits it (without mini-batch): `+I` for a new group, `-U` old and `+U`
//! new when the result changed, nothing when it did not.
//!
//! Over an updating input (an `upsert-kafka` table, another aggregate), `-U` and `-D` rows are
//! taken back out of their group with retractable accumulators; a group whose last row is
//! retracted is deleted (`-D`), and a retraction for a group that does not exist is ignored,
//! as Flink's `GroupAggFunction` does. `MIN` and `MAX` over such an input keep every value of
//! the group with its count in a map state, as Flink's `MinWithRetractAggFunction` does, so
//! that retracting the current extreme finds the next one.
//!
//! Every group lives in the subtask's keyed state ([`KeyedStore`]): a value per key holding the
//! row count, the last emitted result and the accumulators' intermediate state, stably
//! encoded ([`RowCodec`]). A batch loads the groups it touches once, updates them row by row
//! and writes them back, so that the keyed state is checkpointed asynchronously, can be
//! restored at another parallelism and expires with `table.exec.state.ttl`.

use super::acc_state::{as_type, new_accumulator, state_widths};
use super::count_accumulators::{
    count_from_state, count_state, counts_distinct_ints, DistinctInts,
};
use super::df;
use super::window_aggregate::AggSpec;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::{MapState, RowCodec, ValueState};
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Creates group aggregate operators.
pub struct GroupAggregateFactory {
    pub name: String,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub key_types: Vec<DataType>,
    pub aggs: Vec<AggSpec>,
    /// Keys then aggregates.
    pub output_schema: SchemaRef,
    /// True if the input has retractions (then accumulators must support retracting).
    pub retracting: bool,
    /// `table.exec.state.ttl`: a group not updated for this long is forgotten.
    pub state_ttl: Option<Duration>,
}

/// How one aggregate of a group is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AggKind {
    /// A DataFusion accumulator, stored as its intermediate state.
    Accumulator,
    /// MIN (`false`) or MAX (`true`) over an updating input: every value with its count in
    /// a map state.
    Extreme { is_max: bool },
    /// `COUNT`, kept as a number (DataFusion's state).
    Count,
    /// `COUNT(DISTINCT x)` of an integer `x` over an insert-only input, kept as a hash set
    /// (DataFusion's state: a list of the values).
    DistinctInts,
}

impl OperatorFactory for GroupAggregateFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        // The state each aggregate's DataFusion accumulator keeps: the stored layout, whoever
        // keeps the group (a retractable one may keep more than `state_fields` says: a
        // sliding SUM keeps its count too).
        let df_states = self
            .aggs
            .iter()
            .map(|a| {
                let state = new_accumulator(a, self.retracting)?.state().map_err(df)?;
                Ok(state.iter().map(|v| v.data_type()).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?;
        let kinds: Vec<AggKind> = self
            .aggs
            .iter()
            .zip(&df_states)
            .map(
                |(a, state)| match a.expr.fun().name().to_ascii_lowercase().as_str() {
                    "min" if self.retracting => AggKind::Extreme { is_max: false },
                    "max" if self.retracting => AggKind::Extreme { is_max: true },
                    "count" if !a.expr.is_distinct() && state == &[DataType::Int64] => {
                        AggKind::Count
                    }
                    "count"
                        if a.expr.is_distinct()
                            && !self.retracting
                            && a.expr.expressions().len() == 1
                            && counts_distinct_ints(state) =>
                    {
                        AggKind::DistinctInts
                    }
                    _ => AggKind::Accumulator,
                },
            )
            .collect();
        let out_types: Vec<DataType> = self
            .aggs
            .iter()
            .map(|a| a.expr.field().data_type().clone())
            .collect();
        // A group: its row count, the last result, then each accumulator's state.
        let mut state_types = vec![DataType::Int64];
        state_types.extend(out_types.iter().cloned());
        let mut widths = Vec::new();
        for (state, k) in df_states.into_iter().zip(&kinds) {
            if matches!(k, AggKind::Extreme { .. }) {
                widths.push(0);
            } else {
                widths.push(state.len());
                state_types.extend(state);
            }
        }
        // MIN and MAX have the type of their argument.
        let value_codecs = out_types
            .iter()
            .map(|t| RowCodec::new(vec![t.clone()]))
            .collect();
        let mut store = ctx.keyed_store()?;
        let groups = store.value_state("groups", self.state_ttl)?;
        let extremes = store.map_state("min-max values", self.state_ttl)?;
        Ok(Box::new(GroupAggregate {
            name: self.name.clone(),
            keys: self.keys.clone(),
            key_types: self.key_types.clone(),
            aggs: self.aggs.clone(),
            kinds,
            out_types,
            widths,
            output_schema: self.output_schema.clone(),
            key_codec: RowCodec::new(self.key_types.clone()),
            state_codec: RowCodec::new(state_types),
            value_codecs,
            store,
            groups,
            extremes,
            retracting: self.retracting,
            live: HashMap::new(),
            dirty: HashSet::new(),
            caching: self.state_ttl.is_none(),
        }))
    }
}

enum Acc {
    Df(Box<dyn Accumulator>),
    Extreme(ScalarValue),
    Count(i64),
    Distinct(DistinctInts),
}

struct Group {
    accs: Vec<Acc>,
    /// The last result emitted.
    last: Option<Vec<ScalarValue>>,
    /// Rows accumulated minus rows retracted.
    rows: i64,
}

struct GroupAggregate {
    name: String,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    key_types: Vec<DataType>,
    aggs: Vec<AggSpec>,
    kinds: Vec<AggKind>,
    /// The type of each aggregate's result.
    out_types: Vec<DataType>,
    /// The number of state columns of each aggregate.
    widths: Vec<usize>,
    output_schema: SchemaRef,
    key_codec: RowCodec,
    state_codec: RowCodec,
    /// For each aggregate, the codec of its values (those of MIN/MAX are kept).
    value_codecs: Vec<RowCodec>,
    store: KeyedStore,
    groups: ValueState<Vec<u8>>,
    /// (aggregate index, value) -> how many rows have that value, per key.
    extremes: MapState<Vec<u8>, i64>,
    retracting: bool,
    /// Groups kept decoded between batches (their accumulators live, not re-read and
    /// re-written for every batch), written back at a checkpoint or when there are too many;
    /// none when state expires (`table.exec.state.ttl` counts from the last write).
    live: HashMap<Vec<u8>, Group>,
    /// The live groups changed since they were last written.
    dirty: HashSet<Vec<u8>>,
    caching: bool,
}

/// The changes a batch makes, in input order: their kinds, keys and, per aggregate, results
/// (a column each, filled a change at a time, not a `Vec` per change).
struct Changes<'k> {
    kinds: Vec<RowKind>,
    keys: Vec<&'k [u8]>,
    values: Vec<Vec<ScalarValue>>,
}

impl<'k> Changes<'k> {
    /// Room for `rows` changes (a row makes one or two; most make one or none).
    fn new(aggs: usize, rows: usize) -> Self {
        Changes {
            kinds: Vec::with_capacity(rows),
            keys: Vec::with_capacity(rows),
            values: (0..aggs).map(|_| Vec::with_capacity(rows)).collect(),
        }
    }

    fn push(
        &mut self,
        kind: RowKind,
        key: &'k [u8],
        values: impl IntoIterator<Item = ScalarValue>,
    ) {
        self.kinds.push(kind);
        self.keys.push(key);
        for (column, v) in self.values.iter_mut().zip(values) {
            column.push(v);
        }
    }
}

/// How many groups stay decoded between batches.
const LIVE_GROUPS: usize = 65_536;

fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(df)
}

impl GroupAggregate {
    fn new_group(&self) -> Result<Group> {
        let accs = self
            .aggs
            .iter()
            .zip(&self.kinds)
            .zip(&self.out_types)
            .enumerate()
            .map(|(j, ((a, k), t))| match k {
                AggKind::Accumulator => Ok(Acc::Df(new_accumulator(a, self.retracting)?)),
                AggKind::Extreme { .. } => Ok(Acc::Extreme(ScalarValue::try_from(t).map_err(df)?)),
                AggKind::Count => Ok(Acc::Count(0)),
                AggKind::DistinctInts => Ok(Acc::Distinct(DistinctInts::new(
                    &self.state_codec.types()[self.state_at(j)],
                )?)),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Group {
            accs,
            last: None,
            rows: 0,
        })
    }

    /// The first state column of aggregate `j`: after the row count, the last results and
    /// the aggregates before it.
    fn state_at(&self, j: usize) -> usize {
        1 + self.aggs.len() + self.widths[..j].iter().sum::<usize>()
    }

    /// Rebuilds groups from their stored bytes (one decode for all of them).
    fn decode_groups(&self, stored: &[Vec<u8>]) -> Result<Vec<Group>> {
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<&[u8]> = stored.iter().map(|b| b.as_slice()).collect();
        let cols = self.state_codec.decode(&rows)?;
        self.groups_from_columns(&cols, stored.len())
    }

    /// Groups from columns laid out as [row count, last results..., accumulator states...].
    fn groups_from_columns(&self, cols: &[ArrayRef], n: usize) -> Result<Vec<Group>> {
        let bad = || {
            SluiceError::Runtime(format!(
                "{}: the stored state does not match this query's keys and aggregates",
                self.name
            ))
        };
        let counts = cols
            .first()
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(bad)?;
        let aggs = self.aggs.len();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let last = (0..aggs)
                .map(|j| ScalarValue::try_from_array(&cols[1 + j], i))
                .collect::<datafusion_common::Result<Vec<_>>>()
                .map_err(df)?;
            let mut at = 1 + aggs;
            let mut accs = Vec::with_capacity(aggs);
            for (j, (a, k)) in self.aggs.iter().zip(&self.kinds).enumerate() {
                match k {
                    AggKind::Accumulator => {
                        let w = self.widths[j];
                        let state: Vec<ArrayRef> = cols
                            .get(at..at + w)
                            .ok_or_else(bad)?
                            .iter()
                            .map(|c| c.slice(i, 1))
                            .collect();
                        at += w;
                        let mut acc = new_accumulator(a, self.retracting)?;
                        acc.merge_batch(&state).map_err(df)?;
                        accs.push(Acc::Df(acc));
                    }
                    AggKind::Extreme { .. } => accs.push(Acc::Extreme(last[j].clone())),
                    AggKind::Count => {
                        let state = cols.get(at).ok_or_else(bad)?;
                        at += 1;
                        accs.push(Acc::Count(count_from_state(state, i)?));
                    }
                    AggKind::DistinctInts => {
                        let state = cols.get(at).ok_or_else(bad)?;
                        at += 1;
                        let mut set = DistinctInts::new(state.data_type())?;
                        set.merge_state(state, i)?;
                        accs.push(Acc::Distinct(set));
                    }
                }
            }
            out.push(Group {
                accs,
                last: Some(last),
                rows: counts.value(i),
            });
        }
        Ok(out)
    }

    /// The stored bytes of `groups` (one encode for all of them).
    fn encode_groups(&self, groups: &mut [&mut Group]) -> Result<Vec<Vec<u8>>> {
        let n = groups.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let aggs = self.aggs.len();
        let mut counts = Vec::with_capacity(n);
        let mut last: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); aggs];
        let mut states: Vec<Vec<Vec<ScalarValue>>> = self
            .widths
            .iter()
            .map(|w| vec![Vec::with_capacity(n); *w])
            .collect();
        for g in groups.iter_mut() {
            counts.push(g.rows);
            let values = g.last.as_ref().ok_or_else(|| {
                SluiceError::Runtime(format!("{}: a stored group without a result", self.name))
            })?;
            for (col, v) in last.iter_mut().zip(values) {
                col.push(v.clone());
            }
            for (j, acc) in g.accs.iter_mut().enumerate() {
                let state = match acc {
                    Acc::Df(acc) => acc.state().map_err(df)?,
                    Acc::Count(n) => vec![count_state(*n)],
                    Acc::Distinct(set) => vec![set.state()?],
                    Acc::Extreme(_) => continue,
                };
                for (f, v) in state.into_iter().enumerate() {
                    if let Some(col) = states[j].get_mut(f) {
                        col.push(v);
                    }
                }
            }
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(counts))];
        let types = self.state_codec.types();
        for (j, values) in last.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(values).map_err(df)?;
            columns.push(as_type(array, &types[1 + j])?);
        }
        for values in states.into_iter().flatten() {
            let t = &types[columns.len()];
            let array = ScalarValue::iter_to_array(values).map_err(df)?;
            columns.push(as_type(array, t)?);
        }
        self.state_codec.encode(&columns)
    }

    /// A value of aggregate `j` as the user key of the min-max map.
    fn extreme_key(j: usize, value: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(value.len() + 1);
        k.push(j as u8);
        k.extend_from_slice(value);
        k
    }

    /// The MIN or MAX of aggregate `j` over the values the current key still has.
    fn rescan_extreme(&mut self, j: usize, is_max: bool) -> Result<ScalarValue> {
        let entries = self.extremes.entries(&mut self.store)?;
        let values: Vec<&[u8]> = entries
            .iter()
            .filter(|(k, n)| k.first() == Some(&(j as u8)) && *n > 0)
            .map(|(k, _)| &k[1..])
            .collect();
        let mut best = ScalarValue::try_from(&self.out_types[j]).map_err(df)?;
        if values.is_empty() {
            return Ok(best);
        }
        let decoded = self.value_codecs[j].decode(&values)?;
        let col = as_type(decoded[0].clone(), &self.out_types[j])?;
        for i in 0..col.len() {
            let v = ScalarValue::try_from_array(&col, i).map_err(df)?;
            if better(&v, &best, is_max) {
                best = v;
            }
        }
        Ok(best)
    }
}

/// True if `v` replaces `current` as the MIN (or MAX); nulls never do, and anything
/// replaces a null.
fn better(v: &ScalarValue, current: &ScalarValue, is_max: bool) -> bool {
    if v.is_null() {
        return false;
    }
    if current.is_null() {
        return true;
    }
    match v.partial_cmp(current) {
        Some(Ordering::Greater) => is_max,
        Some(Ordering::Less) => !is_max,
        _ => false,
    }
}

impl GroupAggregate {
    /// Writes the changed live groups into keyed state and forgets the live ones.
    fn flush(&mut self) -> Result<()> {
        let mut keys = Vec::with_capacity(self.dirty.len());
        let mut groups = Vec::with_capacity(self.dirty.len());
        let mut live = std::mem::take(&mut self.live);
        for (key, g) in live.iter_mut() {
            if self.dirty.contains(key) {
                keys.push(key.clone());
                groups.push(g);
            }
        }
        let bytes = self.encode_groups(&mut groups)?;
        for (key, b) in keys.iter().zip(bytes) {
            self.store.set_current_key(key)?;
            self.groups.set(&mut self.store, &b)?;
        }
        self.dirty.clear();
        Ok(())
    }
}

impl Operator for GroupAggregate {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    /// The live groups go into keyed state before it is snapshotted (nothing of the
    /// operator's own is written).
    fn snapshot_state(&mut self, _checkpoint: u64, _state: &mut StateWriter) -> Result<()> {
        self.flush()
    }

    /// Reads the state of Sluice 0.1, which kept the groups in the operator (a batch of
    /// key columns, row counts, last results and accumulator states), into keyed state.
    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let n = state.count()?;
        if n == 0 {
            return Ok(());
        }
        let batch = state.batch()?;
        let k = self.keys.len().max(1);
        let widths = state_widths(&self.aggs)?;
        if self.retracting {
            return Err(SluiceError::Config(format!(
                "{}: the checkpoint was written by Sluice 0.1, whose aggregates over an updating input kept an incomplete state; start this job without it (a new 'pipeline.name' or an empty checkpoint directory)",
                self.name
            )));
        }
        if widths != self.widths
            || batch.num_columns() != k + 1 + self.aggs.len() + widths.iter().sum::<usize>()
        {
            return Err(SluiceError::Runtime(format!(
                "{}: the checkpointed state does not match this query's keys and aggregates",
                self.name
            )));
        }
        let key_cols: Vec<ArrayRef> = if self.keys.is_empty() {
            Vec::new()
        } else {
            batch.columns()[..k].to_vec()
        };
        let keys = self.key_codec.encode_rows(&key_cols, batch.num_rows())?;
        let mut groups = self.groups_from_columns(&batch.columns()[k..], batch.num_rows())?;
        let mut mine = Vec::new();
        for (key, g) in keys.into_iter().zip(groups.iter_mut()) {
            // At parallelism > 1, each subtask keeps the keys of its own key groups.
            if self.store.owns_key(&key) {
                mine.push((key, g));
            }
        }
        let (keys, mut gs): (Vec<_>, Vec<_>) = mine.into_iter().unzip();
        let bytes = self.encode_groups(&mut gs)?;
        for (key, b) in keys.iter().zip(bytes) {
            self.store.set_current_key(key)?;
            self.groups.set(&mut self.store, &b)?;
        }
        Ok(())
    }

    /// Only a checkpoint of Sluice 0.1 has operator state here: each old subtask's groups,
    /// of which this subtask keeps those of its key groups.
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        for (_, state) in states.iter_mut() {
            self.restore_state(state)?;
        }
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        let key_cols: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|k| eval(k, data))
            .collect::<Result<_>>()?;
        let key_cols = key_cols
            .into_iter()
            .zip(&self.key_types)
            .map(|(c, t)| as_type(c, t))
            .collect::<Result<Vec<_>>>()?;
        let keys = self.key_codec.encode_rows(&key_cols, n)?;
        let mut args = Vec::with_capacity(self.aggs.len());
        let mut filters = Vec::with_capacity(self.aggs.len());
        // The encoded argument of each MIN/MAX over an updating input, per row.
        let mut extreme_values: Vec<Option<Vec<Vec<u8>>>> = Vec::with_capacity(self.aggs.len());
        // The argument of each native COUNT(DISTINCT), as BIGINT.
        let mut distinct_args: Vec<Option<Int64Array>> = Vec::with_capacity(self.aggs.len());
        for (j, a) in self.aggs.iter().enumerate() {
            let cols = a
                .expr
                .expressions()
                .iter()
                .map(|e| eval(e, data))
                .collect::<Result<Vec<_>>>()?;
            extreme_values.push(match self.kinds[j] {
                AggKind::Extreme { .. } => {
                    let t = &self.value_codecs[j].types()[0];
                    let c = as_type(cols[0].clone(), t)?;
                    Some(self.value_codecs[j].encode(&[c])?)
                }
                _ => None,
            });
            distinct_args.push(match self.kinds[j] {
                AggKind::DistinctInts => Some(DistinctInts::argument(&cols[0])?),
                _ => None,
            });
            args.push(cols);
            filters.push(match &a.filter {
                Some(f) => Some(eval(f, data)?.as_boolean().clone()),
                None => None,
            });
        }

        // The groups this batch touches, loaded once from the keyed state (None: deleted
        // or not there).
        let mut cache: HashMap<&[u8], Option<Group>> = HashMap::new();
        let mut missing: Vec<&[u8]> = Vec::new();
        let mut stored: Vec<Vec<u8>> = Vec::new();
        for key in &keys {
            if cache.contains_key(key.as_slice()) {
                continue;
            }
            if let Some(g) = self.live.remove(key.as_slice()) {
                cache.insert(key, Some(g));
                continue;
            }
            cache.insert(key, None);
            self.store.set_current_key(key)?;
            if let Some(b) = self.groups.get(&mut self.store)? {
                missing.push(key);
                stored.push(b);
            }
        }
        for (key, g) in missing.into_iter().zip(self.decode_groups(&stored)?) {
            cache.insert(key, Some(g));
        }

        // Changes in input order: (kind, key, values).
        let mut changes = Changes::new(self.aggs.len(), n);
        // One row's results (reused).
        let mut values: Vec<ScalarValue> = Vec::with_capacity(self.aggs.len());
        let mut touched: Vec<&[u8]> = Vec::new();
        // One row's arguments of one aggregate (reused: no allocation per row).
        let mut one: Vec<ArrayRef> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let key = key.as_slice();
            let adds = batch.kind(i).is_addition();
            let slot = cache.get_mut(key).ok_or_else(|| {
                SluiceError::Runtime(format!("{}: a key lost from its batch", self.name))
            })?;
            if slot.is_none() {
                if !adds {
                    // A retraction for a group that is not there (nothing to take back).
                    continue;
                }
                *slot = Some(self.new_group()?);
            }
            let Some(group) = slot.as_mut() else { continue };
            touched.push(key);
            group.rows += if adds { 1 } else { -1 };
            for (a, acc) in group.accs.iter_mut().enumerate() {
                if filters[a]
                    .as_ref()
                    .is_some_and(|f| !(f.is_valid(i) && f.value(i)))
                {
                    continue;
                }
                match acc {
                    Acc::Count(count) => {
                        // COUNT(x) counts the rows where x is not NULL (COUNT(*): a literal).
                        if args[a].iter().all(|c| c.is_valid(i)) {
                            *count += if adds { 1 } else { -1 };
                        }
                    }
                    Acc::Distinct(set) => {
                        let (true, Some(values)) = (adds, &distinct_args[a]) else {
                            return Err(SluiceError::Runtime(format!(
                                "{}: COUNT(DISTINCT ...) kept as a set cannot take a row back",
                                self.name
                            )));
                        };
                        set.insert(values, i);
                    }
                    Acc::Df(acc) => {
                        one.clear();
                        one.extend(args[a].iter().map(|c| c.slice(i, 1)));
                        if adds {
                            acc.update_batch(&one).map_err(df)?;
                        } else {
                            acc.retract_batch(&one).map_err(df)?;
                        }
                    }
                    Acc::Extreme(current) => {
                        let AggKind::Extreme { is_max } = self.kinds[a] else {
                            continue;
                        };
                        let v = ScalarValue::try_from_array(&args[a][0], i).map_err(df)?;
                        if v.is_null() {
                            continue;
                        }
                        let encoded = extreme_values[a]
                            .as_ref()
                            .map(|e| Self::extreme_key(a, &e[i]))
                            .unwrap_or_default();
                        self.store.set_current_key(key)?;
                        let count = self.extremes.get(&mut self.store, &encoded)?.unwrap_or(0);
                        let count = count + if adds { 1 } else { -1 };
                        if count > 0 {
                            self.extremes.put(&mut self.store, &encoded, &count)?;
                        } else {
                            self.extremes.remove(&mut self.store, &encoded)?;
                        }
                        if adds {
                            if better(&v, current, is_max) {
                                *current = v;
                            }
                        } else if count <= 0 && v.partial_cmp(current) == Some(Ordering::Equal) {
                            // The extreme left the group: find the next one.
                            *current = self.rescan_extreme(a, is_max)?;
                        }
                    }
                }
            }
            if group.rows <= 0 {
                // Every row of the group was taken back: the group is gone.
                if let Some(g) = slot.take() {
                    if let Some(old) = g.last {
                        changes.push(RowKind::Delete, key, old);
                    }
                }
                continue;
            }
            values.clear();
            for a in group.accs.iter_mut() {
                values.push(match a {
                    Acc::Df(acc) => acc.evaluate().map_err(df)?,
                    Acc::Extreme(v) => v.clone(),
                    Acc::Count(n) => ScalarValue::Int64(Some(*n)),
                    Acc::Distinct(set) => ScalarValue::Int64(Some(set.count())),
                });
            }
            match group.last.as_mut() {
                None => {
                    changes.push(RowKind::Insert, key, values.iter().cloned());
                    group.last = Some(std::mem::take(&mut values));
                }
                Some(old) if *old == values => {}
                Some(old) => {
                    // `values` becomes the old result, `old` the new one.
                    std::mem::swap(old, &mut values);
                    changes.push(RowKind::UpdateBefore, key, values.drain(..));
                    changes.push(RowKind::UpdateAfter, key, old.iter().cloned());
                }
            }
        }

        // Keep the groups (touched ones to be written back), remove deleted ones and their
        // MIN/MAX values.
        touched.sort_unstable();
        touched.dedup();
        let mut gone = Vec::new();
        for (key, slot) in cache.drain() {
            let was_touched = touched.binary_search(&key).is_ok();
            match slot {
                Some(g) => {
                    if was_touched {
                        self.dirty.insert(key.to_vec());
                    }
                    self.live.insert(key.to_vec(), g);
                }
                None if was_touched => {
                    self.dirty.remove(key);
                    gone.push(key);
                }
                None => {}
            }
        }
        if !self.caching || self.live.len() > LIVE_GROUPS {
            self.flush()?;
        }
        let has_extremes = self
            .kinds
            .iter()
            .any(|k| matches!(k, AggKind::Extreme { .. }));
        for key in gone {
            self.store.set_current_key(key)?;
            self.groups.clear(&mut self.store)?;
            if has_extremes {
                self.extremes.clear(&mut self.store)?;
            }
        }

        if changes.kinds.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        if !self.keys.is_empty() {
            columns = self.key_codec.decode(&changes.keys)?;
        }
        let offset = columns.len();
        for (j, values) in changes.values.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(values).map_err(df)?;
            columns.push(as_type(
                array,
                self.output_schema.field(offset + j).data_type(),
            )?);
        }
        for (c, f) in columns.iter_mut().zip(self.output_schema.fields()) {
            if c.data_type() != f.data_type() {
                *c = cast(c, f.data_type())?;
            }
        }
        let kinds: Arc<[RowKind]> = changes.kinds.into();
        let data = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}
