//! `MATCH_RECOGNIZE ... ONE ROW PER MATCH`, as Flink's `CepOperator` runs it.
//!
//! Rows wait per partition key in keyed state ordered by event time (a [`TimeOrderedState`])
//! until the watermark passes their time (an event-time timer per key and time); a row at or
//! before the operator's watermark is late (dropped and counted). Then the rows at each time,
//! in the order of the secondary `ORDER BY` columns (arrival order at ties), go through the
//! key's automaton ([`Nfa`], kept in keyed state between firings), and every match becomes one
//! row: the partition columns, then the measures. The output is append-only. On a
//! processing-time attribute, rows go through their key's automaton as they arrive, at the
//! wall-clock time, and `WITHIN` uses processing-time timers.
//!
//! Conditions and measures are DataFusion expressions over the input's columns (the current
//! row, or the last row of a match) plus one column per navigation term (`FIRST`/`LAST`, a
//! column of another variable, an aggregate over a variable's rows, `MATCH_ROWTIME()`), which
//! this operator computes from the path of the match. A condition without such terms depends
//! on the row only: it is evaluated once per input batch, vectorised, and kept with the row.

use super::df;
use super::nfa::{Conditions, Match, Nfa, PathView, Program, Var};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::{lexsort_to_indices, SortColumn, SortOptions};
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MIN_WATERMARK};
use sluice_engine::keyed::{RowCodec, TimeOrderedState, ValueState};
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{
    KeyedStore, Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext,
};
use std::collections::HashMap;
use std::sync::Arc;

/// An aggregate over the rows mapped to a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Sum,
    Avg,
    Min,
    Max,
    /// `COUNT(v.col)`: the rows where `col` is not null.
    Count,
    /// `COUNT(*)` / `COUNT(v.*)`: the rows.
    CountRows,
}

/// A value an expression needs from the match besides the current row.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// `LAST(v.col, n)` (`first`: `FIRST(v.col, n)`); a bare `v.col` is `LAST(v.col, 0)`;
    /// `var: None` for the rows of every variable.
    Nav {
        var: Option<Var>,
        col: usize,
        first: bool,
        offset: usize,
    },
    /// An aggregate over the rows mapped to `var`.
    Agg {
        kind: AggKind,
        var: Option<Var>,
        arg: AggArg,
        data_type: DataType,
    },
    /// `MATCH_ROWTIME()`: when the match was found.
    MatchRowtime { data_type: DataType },
    /// `MATCH_PROCTIME()`: the wall-clock time the match is emitted at.
    MatchProctime,
}

/// What an aggregate of a variable's rows aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggArg {
    /// The rows themselves (`COUNT(*)`).
    Rows,
    /// An input column.
    Column(usize),
    /// An expression over the input's columns: [`TermExpr::agg_args`].
    Expr(usize),
}

/// An expression over the input's columns followed by one column per term.
#[derive(Debug, Clone)]
pub struct TermExpr {
    pub expr: Arc<dyn PhysicalExpr>,
    /// The input's columns, then `__mr0`, `__mr1`, ... for the terms.
    pub schema: SchemaRef,
    pub terms: Vec<Term>,
    /// The arguments of aggregates over expressions, over the input's columns.
    pub agg_args: Vec<Arc<dyn PhysicalExpr>>,
    /// For each input column the expression does not read, a one-row NULL to stand in.
    pub unused: Vec<Option<ArrayRef>>,
    /// The expression for one row without Arrow, when it is simple enough.
    pub scalar: Option<super::scalar_eval::Scalar>,
}

/// Creates `MATCH_RECOGNIZE` operators.
pub struct MatchRecognizeFactory {
    pub input_schema: SchemaRef,
    /// The partition columns, then one column per measure.
    pub output_schema: SchemaRef,
    pub partition: Vec<usize>,
    pub rowtime: usize,
    /// `ORDER BY` a processing-time attribute: rows are matched as they arrive.
    pub proctime: bool,
    /// The `ORDER BY` columns after the time attribute.
    pub order: Vec<(usize, SortOptions)>,
    pub program: Program,
    /// Each variable's `DEFINE` condition (`None`: true).
    pub defines: Vec<Option<TermExpr>>,
    pub measures: Vec<TermExpr>,
}

impl OperatorFactory for MatchRecognizeFactory {
    fn name(&self) -> String {
        "MatchRecognize".into()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let types: Vec<DataType> = self
            .input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let key_types = self.partition.iter().map(|&i| types[i].clone()).collect();
        if self.defines.len() > 64 {
            return Err(SluiceError::Plan(
                "MATCH_RECOGNIZE: at most 64 pattern variables".into(),
            ));
        }
        Ok(Box::new(MatchRecognize {
            key_codec: RowCodec::new(key_types),
            row_codec: RowCodec::new(types),
            rows: store.time_ordered_state("rows", None)?,
            nfa: store.value_state("nfa", None)?,
            store,
            watermark: MIN_WATERMARK,
            late: ctx.late_records(),
            cache: HashMap::new(),
            pending: Vec::new(),
            spec: SpecRef {
                input_schema: self.input_schema.clone(),
                output_schema: self.output_schema.clone(),
                partition: self.partition.clone(),
                rowtime: self.rowtime,
                proctime: self.proctime,
                order: self.order.clone(),
                program: self.program.clone(),
                defines: self.defines.clone(),
                measures: self.measures.clone(),
            },
        }))
    }
}

struct SpecRef {
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    partition: Vec<usize>,
    rowtime: usize,
    proctime: bool,
    order: Vec<(usize, SortOptions)>,
    program: Program,
    defines: Vec<Option<TermExpr>>,
    measures: Vec<TermExpr>,
}

/// How many keys' automatons stay decoded between firings before they are written back.
const CACHED_KEYS: usize = 4096;

/// A match's partition values and, per measure, the values the measure is evaluated on.
type OutputRow = (Vec<ScalarValue>, Vec<Vec<ScalarValue>>);

/// A row in the automaton: its values, and which row-only conditions hold for it.
#[derive(Debug, Clone)]
struct EventRow {
    values: Vec<ScalarValue>,
    holds: u64,
}

struct MatchRecognize {
    spec: SpecRef,
    key_codec: RowCodec,
    row_codec: RowCodec,
    store: KeyedStore,
    /// Rows waiting for the watermark: 8 bytes of row-only condition results, then the row.
    rows: TimeOrderedState<Vec<u8>>,
    /// The key's automaton, when something is under way.
    nfa: ValueState<Vec<u8>>,
    watermark: EventTime,
    late: LateRecords,
    /// Automatons decoded and changed since the last checkpoint, by key (written back to
    /// keyed state at a checkpoint or when there are too many).
    cache: HashMap<Vec<u8>, Nfa<EventRow>>,
    /// Matches found and not yet emitted.
    pending: Vec<OutputRow>,
}

impl SpecRef {
    /// A match's output: its partition values, and for each measure the values it is
    /// evaluated on (the match's last row, then the measure's terms).
    fn output_row(&self, nfa: &Nfa<EventRow>, m: &Match) -> Result<OutputRow> {
        let Some(&(_, last)) = m.rows.last() else {
            return Err(SluiceError::Runtime(
                "MATCH_RECOGNIZE: an empty match".into(),
            ));
        };
        let last_row = &nfa.row(last).values;
        let partition = self
            .partition
            .iter()
            .map(|&c| last_row[c].clone())
            .collect();
        // FINAL semantics: a variable's rows are all the match mapped to it.
        let rows_of = |var: Option<Var>| -> Vec<u32> {
            m.rows
                .iter()
                .filter(|(v, _)| var.is_none_or(|x| x == *v))
                .map(|(_, e)| *e)
                .collect()
        };
        let mut measures = Vec::with_capacity(self.measures.len());
        for measure in &self.measures {
            let mut row = last_row.clone();
            for t in &measure.terms {
                row.push(self.term(t, &measure.agg_args, nfa, rows_of, m.time)?);
            }
            measures.push(row);
        }
        Ok((partition, measures))
    }

    /// The value of `term` for a match found at `time`; `rows_of(var)` gives the rows mapped
    /// to a variable (`None`: all), in order.
    fn term(
        &self,
        term: &Term,
        agg_args: &[Arc<dyn PhysicalExpr>],
        nfa: &Nfa<EventRow>,
        rows_of: impl Fn(Option<Var>) -> Vec<u32>,
        time: i64,
    ) -> Result<ScalarValue> {
        match term {
            Term::Nav {
                var,
                col,
                first,
                offset,
            } => {
                let rows = rows_of(*var);
                let at = if *first {
                    rows.get(*offset)
                } else {
                    rows.len().checked_sub(1 + offset).and_then(|i| rows.get(i))
                };
                match at {
                    Some(&e) => Ok(nfa.row(e).values[*col].clone()),
                    None => {
                        ScalarValue::try_from(self.input_schema.field(*col).data_type()).map_err(df)
                    }
                }
            }
            Term::Agg {
                kind,
                var,
                arg,
                data_type,
            } => {
                let rows = rows_of(*var);
                let computed: Vec<ScalarValue>;
                let values: Vec<&ScalarValue> = match arg {
                    AggArg::Rows => Vec::new(),
                    AggArg::Column(c) => rows.iter().map(|&e| &nfa.row(e).values[*c]).collect(),
                    AggArg::Expr(k) => {
                        computed = self.evaluate_on_rows(&agg_args[*k], nfa, &rows)?;
                        computed.iter().collect()
                    }
                };
                aggregate(*kind, rows.len(), &values, data_type)
            }
            Term::MatchProctime => {
                let now = crate::functions::wall_clock_ms();
                Ok(ScalarValue::TimestampMillisecond(
                    Some(now),
                    Some(crate::types::LTZ_ZONE.into()),
                ))
            }
            Term::MatchRowtime { data_type } => match data_type {
                DataType::Timestamp(_, tz) => {
                    Ok(ScalarValue::TimestampMillisecond(Some(time), tz.clone()))
                }
                _ => Ok(ScalarValue::Int64(Some(time))),
            },
        }
    }

    /// The values of `e`, an expression over the input's columns, for `rows`.
    fn evaluate_on_rows(
        &self,
        e: &Arc<dyn PhysicalExpr>,
        nfa: &Nfa<EventRow>,
        rows: &[u32],
    ) -> Result<Vec<ScalarValue>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let n = rows.len();
        let columns = input_columns(
            &self.input_schema,
            rows.iter().map(|&r| &nfa.row(r).values[..]),
            n,
        )?;
        let batch = RecordBatch::try_new(self.input_schema.clone(), columns)
            .map_err(|x| SluiceError::Runtime(format!("MATCH_RECOGNIZE: {x}")))?;
        let a = e
            .evaluate(&batch)
            .and_then(|v| v.into_array(n))
            .map_err(df)?;
        (0..n)
            .map(|i| ScalarValue::try_from_array(&a, i).map_err(df))
            .collect()
    }

    /// Evaluates `e` on rows: each the input values followed by its terms.
    fn evaluate(&self, e: &TermExpr, rows: &[Vec<ScalarValue>]) -> Result<ArrayRef> {
        let n = rows.len();
        let mut columns = Vec::with_capacity(e.schema.fields().len());
        for (i, f) in e.schema.fields().iter().enumerate() {
            let column = if rows.is_empty() {
                arrow::array::new_empty_array(f.data_type())
            } else {
                ScalarValue::iter_to_array(rows.iter().map(|r| r[i].clone())).map_err(df)?
            };
            columns.push(column);
        }
        self.evaluate_columns(e, columns, n)
    }

    /// Evaluates `e` on `n` rows given as columns (cast to the schema's types if need be).
    fn evaluate_columns(
        &self,
        e: &TermExpr,
        mut columns: Vec<ArrayRef>,
        n: usize,
    ) -> Result<ArrayRef> {
        for (c, f) in columns.iter_mut().zip(e.schema.fields()) {
            if c.data_type() != f.data_type() {
                *c = arrow::compute::cast(c, f.data_type())?;
            }
        }
        let batch = RecordBatch::try_new_with_options(
            e.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|x| SluiceError::Runtime(format!("MATCH_RECOGNIZE: {x}")))?;
        e.expr
            .evaluate(&batch)
            .and_then(|v| v.into_array(n))
            .map_err(df)
    }
}

/// The columns of `schema` for `rows` (each a row's values).
fn input_columns<'r>(
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'r [ScalarValue]> + Clone,
    n: usize,
) -> Result<Vec<ArrayRef>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if n == 0 {
                return Ok(arrow::array::new_empty_array(f.data_type()));
            }
            let a = ScalarValue::iter_to_array(rows.clone().map(|r| r[i].clone())).map_err(df)?;
            Ok(if a.data_type() == f.data_type() {
                a
            } else {
                arrow::compute::cast(&a, f.data_type())?
            })
        })
        .collect()
}

/// An aggregate over `values` (of `count` rows), of type `data_type`.
fn aggregate(
    kind: AggKind,
    count: usize,
    values: &[&ScalarValue],
    data_type: &DataType,
) -> Result<ScalarValue> {
    let present: Vec<&ScalarValue> = values.iter().copied().filter(|v| !v.is_null()).collect();
    let null = || ScalarValue::try_from(data_type).map_err(df);
    match kind {
        AggKind::CountRows => Ok(ScalarValue::Int64(Some(count as i64))),
        AggKind::Count => Ok(ScalarValue::Int64(Some(present.len() as i64))),
        AggKind::Min | AggKind::Max => {
            let mut best: Option<&ScalarValue> = None;
            for v in present {
                let better = match best {
                    None => true,
                    Some(b) => match v.partial_cmp(b) {
                        Some(std::cmp::Ordering::Less) => kind == AggKind::Min,
                        Some(std::cmp::Ordering::Greater) => kind == AggKind::Max,
                        _ => false,
                    },
                };
                if better {
                    best = Some(v);
                }
            }
            match best {
                Some(v) => v.cast_to(data_type).map_err(df),
                None => null(),
            }
        }
        AggKind::Sum | AggKind::Avg => {
            if present.is_empty() {
                return null();
            }
            let wide = if data_type.is_integer() {
                DataType::Int64
            } else if matches!(data_type, DataType::Decimal128(..)) {
                data_type.clone()
            } else {
                DataType::Float64
            };
            let mut sum = present[0].cast_to(&wide).map_err(df)?;
            for v in &present[1..] {
                sum = sum.add(v.cast_to(&wide).map_err(df)?).map_err(df)?;
            }
            if kind == AggKind::Avg {
                let n = present.len();
                sum = match sum {
                    // Flink's AVG of integers is an integer (truncated).
                    ScalarValue::Int64(Some(s)) => ScalarValue::Int64(Some(s / n as i64)),
                    ScalarValue::Float64(Some(s)) => ScalarValue::Float64(Some(s / n as f64)),
                    other => other
                        .div(
                            ScalarValue::Int64(Some(n as i64))
                                .cast_to(&wide)
                                .map_err(df)?,
                        )
                        .map_err(df)?,
                };
            }
            sum.cast_to(data_type).map_err(df)
        }
    }
}

/// Evaluates the `DEFINE` conditions for the automaton.
struct Defines<'a> {
    spec: &'a SpecRef,
    /// The conditions evaluated for the current row, by (variable, path): a greedy
    /// quantifier asks again for a condition the row was just tried against.
    seen: Vec<(Var, u32, u32, bool)>,
}

impl Conditions<EventRow> for Defines<'_> {
    fn holds(
        &mut self,
        var: Var,
        path: &PathView<'_, EventRow>,
        nfa: &Nfa<EventRow>,
        event: u32,
    ) -> Result<bool> {
        let Some(e) = &self.spec.defines[var] else {
            return Ok(true);
        };
        if e.terms.is_empty() {
            return Ok(nfa.row(event).holds & (1 << var) != 0);
        }
        if self.seen.first().is_some_and(|s| s.2 != event) {
            self.seen.clear();
        }
        if let Some(s) = self.seen.iter().find(|s| s.0 == var && s.1 == path.id()) {
            return Ok(s.3);
        }
        // The row being tried counts as one of `var`'s rows (Flink's running semantics).
        let rows_of = |v: Option<Var>| {
            let mut rows = path.rows(v);
            if v.is_none_or(|x| x == var) {
                rows.push(event);
            }
            rows
        };
        let values = &nfa.row(event).values;
        if let Some(fast) = &e.scalar {
            let mut terms = Vec::with_capacity(e.terms.len());
            for t in &e.terms {
                terms.push(
                    self.spec
                        .term(t, &e.agg_args, nfa, rows_of, nfa.time(event))?,
                );
            }
            let width = values.len();
            let column = |i: usize| {
                if i < width {
                    &values[i]
                } else {
                    &terms[i - width]
                }
            };
            if let Some(b) = super::scalar_eval::eval_bool(fast, &column) {
                let holds = b == Some(true);
                self.seen.push((var, path.id(), event, holds));
                return Ok(holds);
            }
        }
        // One row: the columns the condition reads (others a cached NULL), then the terms.
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(e.schema.fields().len());
        for (i, v) in values.iter().enumerate() {
            columns.push(match &e.unused[i] {
                Some(null) => null.clone(),
                None => v.to_array_of_size(1).map_err(df)?,
            });
        }
        for t in &e.terms {
            let v = self
                .spec
                .term(t, &e.agg_args, nfa, rows_of, nfa.time(event))?;
            columns.push(v.to_array_of_size(1).map_err(df)?);
        }
        let result = self.spec.evaluate_columns(e, columns, 1)?;
        let b = result.as_boolean_opt().ok_or_else(|| {
            SluiceError::Runtime("MATCH_RECOGNIZE: a DEFINE condition that is not BOOLEAN".into())
        })?;
        let holds = b.is_valid(0) && b.value(0);
        self.seen.push((var, path.id(), event, holds));
        Ok(holds)
    }
}

impl MatchRecognize {
    fn encode_rows(&self, rows: &[&EventRow]) -> Result<Vec<Vec<u8>>> {
        let columns = self.columns(rows.iter().map(|r| &r.values[..]), rows.len())?;
        let encoded = self.row_codec.encode_rows(&columns, rows.len())?;
        Ok(encoded
            .into_iter()
            .zip(rows)
            .map(|(bytes, r)| {
                let mut v = r.holds.to_le_bytes().to_vec();
                v.extend_from_slice(&bytes);
                v
            })
            .collect())
    }

    fn decode_rows(&self, rows: &[&[u8]]) -> Result<Vec<EventRow>> {
        let mut holds = Vec::with_capacity(rows.len());
        let mut bodies = Vec::with_capacity(rows.len());
        for r in rows {
            if r.len() < 8 {
                return Err(SluiceError::Runtime(
                    "MATCH_RECOGNIZE: corrupt buffered row".into(),
                ));
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[..8]);
            holds.push(u64::from_le_bytes(b));
            bodies.push(&r[8..]);
        }
        let columns = if bodies.is_empty() {
            Vec::new()
        } else {
            self.row_codec.decode(&bodies)?
        };
        (0..rows.len())
            .map(|i| {
                Ok(EventRow {
                    values: columns
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, i).map_err(df))
                        .collect::<Result<_>>()?,
                    holds: holds[i],
                })
            })
            .collect()
    }

    /// The input's columns of `rows`.
    fn columns<'r>(
        &self,
        rows: impl Iterator<Item = &'r [ScalarValue]> + Clone,
        n: usize,
    ) -> Result<Vec<ArrayRef>> {
        input_columns(&self.spec.input_schema, rows, n)
    }

    /// Runs the current key's rows at `t` through its automaton (and time up to the
    /// watermark, once no row of the key is due any more); the matches' rows go to `pending`.
    fn fire(&mut self) -> Result<()> {
        let key = self.store.current_key().to_vec();
        let mut nfa = self.take_nfa(&key)?;
        let program = &self.spec.program;
        // Every row of the key the watermark has passed, earliest first, in one go.
        let due = self.rows.take_up_to(&mut self.store, self.watermark)?;
        let mut matches = Vec::new();
        if !due.is_empty() {
            let raw: Vec<&[u8]> = due.iter().map(|(_, r)| r.as_slice()).collect();
            let mut rows = self.decode_rows(&raw)?.into_iter();
            let mut defines = Defines {
                spec: &self.spec,
                seen: Vec::new(),
            };
            let mut i = 0;
            while i < due.len() {
                let t = due[i].0;
                let n = due[i..].iter().take_while(|(x, _)| *x == t).count();
                let mut at_t: Vec<EventRow> = rows.by_ref().take(n).collect();
                if !self.spec.order.is_empty() && n > 1 {
                    at_t = self.sorted(at_t)?;
                }
                // As Flink's CepOperator: time advances to each row time before its rows.
                matches.extend(nfa.advance_time(program, t)?);
                for row in at_t {
                    matches.extend(nfa.process(program, row, t, &mut defines)?);
                }
                i += n;
            }
        }
        matches.extend(nfa.advance_time(program, self.watermark)?);
        for m in &matches {
            self.pending.push(self.spec.output_row(&nfa, m)?);
        }
        if !nfa.is_idle() && program.within.is_some() {
            // Come back when time moves on: partial matches may time out, and matches held
            // back by them be released.
            self.store
                .register_event_timer(self.watermark.saturating_add(1), &[])?;
        }
        self.put_nfa(key, nfa)
    }

    /// The current key's automaton.
    fn take_nfa(&mut self, key: &[u8]) -> Result<Nfa<EventRow>> {
        if let Some(nfa) = self.cache.remove(key) {
            return Ok(nfa);
        }
        Ok(match self.nfa.get(&mut self.store)? {
            Some(bytes) => Nfa::decode(&self.spec.program, &bytes, |rows| self.decode_rows(rows))?,
            None => Nfa::new(&self.spec.program),
        })
    }

    /// Keeps the current key's automaton (in the cache), or drops it when nothing is under way.
    fn put_nfa(&mut self, key: Vec<u8>, mut nfa: Nfa<EventRow>) -> Result<()> {
        nfa.compact_if_sparse();
        if nfa.is_idle() {
            self.nfa.clear(&mut self.store)?;
            return Ok(());
        }
        self.cache.insert(key, nfa);
        if self.cache.len() > CACHED_KEYS {
            self.flush()?;
        }
        Ok(())
    }

    /// Processing time: each row goes through its key's automaton as it arrives, at the
    /// current time.
    fn process_arrivals(
        &mut self,
        data: &RecordBatch,
        keys: &[Vec<u8>],
        holds: &[u64],
        out: &mut Output,
    ) -> Result<()> {
        for (i, key) in keys.iter().enumerate() {
            let values = data
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, i).map_err(df))
                .collect::<Result<Vec<_>>>()?;
            self.store.set_current_key(key)?;
            let now = self.store.now_ms();
            let mut nfa = self.take_nfa(key)?;
            let program = &self.spec.program;
            let mut matches = nfa.advance_time(program, now)?;
            let mut defines = Defines {
                spec: &self.spec,
                seen: Vec::new(),
            };
            let row = EventRow {
                values,
                holds: holds[i],
            };
            matches.extend(nfa.process(program, row, now, &mut defines)?);
            for m in &matches {
                self.pending.push(self.spec.output_row(&nfa, m)?);
            }
            if let Some(within) = program.within.filter(|_| !nfa.is_idle()) {
                self.store
                    .register_processing_timer(now.saturating_add(within), &[])?;
            }
            self.put_nfa(key.clone(), nfa)?;
        }
        self.emit(out)
    }

    /// Writes the cached automatons into keyed state.
    fn flush(&mut self) -> Result<()> {
        for (key, nfa) in std::mem::take(&mut self.cache) {
            self.store.set_current_key(&key)?;
            let mut bytes = Vec::new();
            nfa.encode(&mut bytes, |rows| self.encode_rows(rows))?;
            self.nfa.set(&mut self.store, &bytes)?;
        }
        Ok(())
    }

    /// Rows at one time in the order of the secondary `ORDER BY` columns (stable).
    fn sorted(&self, rows: Vec<EventRow>) -> Result<Vec<EventRow>> {
        let n = rows.len();
        let columns = self.columns(rows.iter().map(|r| &r.values[..]), n)?;
        let mut sort: Vec<SortColumn> = self
            .spec
            .order
            .iter()
            .map(|(c, o)| SortColumn {
                values: columns[*c].clone(),
                options: Some(*o),
            })
            .collect();
        sort.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            options: None,
        });
        let order = lexsort_to_indices(&sort, None)?;
        let mut slots: Vec<Option<EventRow>> = rows.into_iter().map(Some).collect();
        Ok(order
            .values()
            .iter()
            .filter_map(|&i| slots[i as usize].take())
            .collect())
    }

    /// One output row per pending match: the partition columns, then the measures.
    fn emit(&mut self, out: &mut Output) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut partition_rows = Vec::with_capacity(pending.len());
        let mut measure_rows: Vec<Vec<Vec<ScalarValue>>> =
            vec![Vec::with_capacity(pending.len()); self.spec.measures.len()];
        for (partition, measures) in pending {
            partition_rows.push(partition);
            for (k, row) in measures.into_iter().enumerate() {
                measure_rows[k].push(row);
            }
        }
        let n = partition_rows.len();
        if n == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (j, _) in self.spec.partition.iter().enumerate() {
            let want = self.spec.output_schema.field(j).data_type();
            let a = ScalarValue::iter_to_array(partition_rows.iter().map(|r| r[j].clone()))
                .map_err(df)?;
            columns.push(if a.data_type() == want {
                a
            } else {
                arrow::compute::cast(&a, want)?
            });
        }
        for (k, measure) in self.spec.measures.iter().enumerate() {
            let want = self.spec.output_schema.field(columns.len()).data_type();
            let a = self.spec.evaluate(measure, &measure_rows[k])?;
            columns.push(if a.data_type() == want {
                a
            } else {
                arrow::compute::cast(&a, want)?
            });
        }
        let batch = RecordBatch::try_new_with_options(
            self.spec.output_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )
        .map_err(|e| SluiceError::Runtime(format!("MATCH_RECOGNIZE: {e}")))?;
        out.batch(ChangeBatch::inserts(batch));
        Ok(())
    }
}

impl Operator for MatchRecognize {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        super::require_inserts(&batch, "MATCH_RECOGNIZE")?;
        let data = &batch.data;
        let n = data.num_rows();
        let partition: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|&c| data.column(c).clone())
            .collect();
        let keys = self.key_codec.encode_rows(&partition, n)?;
        // The conditions that look at the row only, for all rows at once.
        let mut holds = vec![0u64; n];
        for (v, define) in self.spec.defines.iter().enumerate() {
            if let Some(e) = define.as_ref().filter(|e| e.terms.is_empty()) {
                let result = e
                    .expr
                    .evaluate(data)
                    .and_then(|r| r.into_array(n))
                    .map_err(df)?;
                let b: &BooleanArray = result.as_boolean_opt().ok_or_else(|| {
                    SluiceError::Runtime(
                        "MATCH_RECOGNIZE: a DEFINE condition that is not BOOLEAN".into(),
                    )
                })?;
                for (i, h) in holds.iter_mut().enumerate() {
                    if b.is_valid(i) && b.value(i) {
                        *h |= 1 << v;
                    }
                }
            }
        }
        if self.spec.proctime {
            return self.process_arrivals(data, &keys, &holds, out);
        }
        // Event time: the rows wait, encoded, for the watermark.
        let rows = self.row_codec.encode_rows(data.columns(), n)?;
        let times = data
            .column(self.spec.rowtime)
            .as_primitive::<TimestampMillisecondType>();
        let mut late = 0;
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            // As Flink's CepOperator: a row at or before the watermark is late.
            if times.is_null(i) || times.value(i) <= self.watermark {
                late += 1;
                continue;
            }
            let t = times.value(i);
            self.store.set_current_key(key)?;
            let mut value = holds[i].to_le_bytes().to_vec();
            value.extend_from_slice(&row);
            self.rows.add(&mut self.store, t, &value)?;
            self.store.register_event_timer(t, &[])?;
        }
        self.late.add(late);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        // Each key once, however many of its times are due.
        let mut seen = std::collections::HashSet::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            if !seen.insert(timer.key.clone()) {
                continue;
            }
            self.store.set_current_timer_key(&timer);
            self.fire()?;
            if self.pending.len() >= 1024 {
                self.emit(out)?;
            }
        }
        self.emit(out)?;
        out.watermark(watermark);
        Ok(())
    }

    /// Processing time: partial matches time out (`WITHIN`).
    fn on_processing_time(&mut self, now_ms: i64, out: &mut Output) -> Result<()> {
        for timer in self.store.pop_processing_timers(now_ms) {
            self.store.set_current_timer_key(&timer);
            let key = self.store.current_key().to_vec();
            let mut nfa = self.take_nfa(&key)?;
            for m in nfa.advance_time(&self.spec.program, now_ms)? {
                self.pending.push(self.spec.output_row(&nfa, &m)?);
            }
            if let Some(within) = self.spec.program.within.filter(|_| !nfa.is_idle()) {
                self.store
                    .register_processing_timer(now_ms.saturating_add(within), &[])?;
            }
            self.put_nfa(key, nfa)?;
        }
        self.emit(out)
    }

    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        self.flush()?;
        state.put_i64(self.watermark);
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.watermark = state.i64()?;
        Ok(())
    }

    /// Everything else is keyed state; the watermark is the smallest the old subtasks had.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_follow_flink() {
        let ints = [
            ScalarValue::Int32(Some(3)),
            ScalarValue::Int32(None),
            ScalarValue::Int32(Some(4)),
        ];
        let refs: Vec<&ScalarValue> = ints.iter().collect();
        let int = DataType::Int32;
        assert_eq!(
            aggregate(AggKind::Avg, 3, &refs, &int).unwrap(),
            ScalarValue::Int32(Some(3))
        );
        assert_eq!(
            aggregate(AggKind::Sum, 3, &refs, &int).unwrap(),
            ScalarValue::Int32(Some(7))
        );
        assert_eq!(
            aggregate(AggKind::Count, 3, &refs, &DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(2))
        );
        assert_eq!(
            aggregate(AggKind::CountRows, 3, &refs, &DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(3))
        );
        assert_eq!(
            aggregate(AggKind::Min, 3, &refs, &int).unwrap(),
            ScalarValue::Int32(Some(3))
        );
        assert_eq!(
            aggregate(AggKind::Max, 3, &refs, &int).unwrap(),
            ScalarValue::Int32(Some(4))
        );
        assert_eq!(
            aggregate(AggKind::Sum, 0, &[], &int).unwrap(),
            ScalarValue::Int32(None)
        );
        let d = [
            ScalarValue::Float64(Some(1.0)),
            ScalarValue::Float64(Some(2.0)),
        ];
        let refs: Vec<&ScalarValue> = d.iter().collect();
        assert_eq!(
            aggregate(AggKind::Avg, 2, &refs, &DataType::Float64).unwrap(),
            ScalarValue::Float64(Some(1.5))
        );
    }
}
