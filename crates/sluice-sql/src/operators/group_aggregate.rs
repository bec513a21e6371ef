//! Non-windowed aggregation (`GROUP BY key` without a window): an updating stream. For each
//! input row, in order, the row's group is updated and the change is emitted as Flink's
//! `GroupAggFunction` emits it (without mini-batch): `+I` for a new group, `-U` old and `+U`
//! new when the result changed, nothing when it did not.
//!
//! Over an updating input (an `upsert-kafka` table, another aggregate), `-U` and `-D` rows are
//! taken back out of their group with retractable accumulators; a group whose last row is
//! retracted is deleted (`-D`), and a retraction for a group that does not exist is ignored,
//! as Flink's `GroupAggFunction` does.

use super::acc_state::{
    check_retractable_state, restore_accumulator, snapshot_accumulators, state_widths,
};
use super::df;
use super::window_aggregate::AggSpec;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::{Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext};
use std::collections::HashMap;
use std::sync::Arc;

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
}

impl OperatorFactory for GroupAggregateFactory {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let fields = if self.key_types.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            self.key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect()
        };
        Ok(Box::new(GroupAggregate {
            name: self.name.clone(),
            keys: self.keys.clone(),
            aggs: self.aggs.clone(),
            output_schema: self.output_schema.clone(),
            converter: RowConverter::new(fields)?,
            groups: HashMap::new(),
            retracting: self.retracting,
        }))
    }
}

struct Group {
    accs: Vec<Box<dyn Accumulator>>,
    /// The last result emitted.
    last: Option<Vec<ScalarValue>>,
    /// Rows accumulated minus rows retracted.
    rows: i64,
}

struct GroupAggregate {
    name: String,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<AggSpec>,
    output_schema: SchemaRef,
    converter: RowConverter,
    groups: HashMap<OwnedRow, Group>,
    retracting: bool,
}

impl GroupAggregate {
    /// The number of columns of a key row (one boolean for a keyless aggregate).
    fn converter_width(&self) -> usize {
        self.keys.len().max(1)
    }
}

fn eval(e: &Arc<dyn PhysicalExpr>, b: &RecordBatch) -> Result<ArrayRef> {
    e.evaluate(b)
        .and_then(|v| v.into_array(b.num_rows()))
        .map_err(df)
}

impl Operator for GroupAggregate {
    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        if self.retracting {
            for a in &self.aggs {
                check_retractable_state(a, &self.name)?;
            }
        }
        let n = self.groups.len();
        // Columns: the key row's columns, the row count, the last emitted values, then the
        // accumulators' state.
        let mut keys = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        let mut last: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); self.aggs.len()];
        let mut accs: Vec<Vec<&mut Box<dyn Accumulator>>> =
            self.aggs.iter().map(|_| Vec::with_capacity(n)).collect();
        for (k, g) in self.groups.iter_mut() {
            // A group always has a result once its first row is in.
            let Some(values) = g.last.as_ref() else {
                continue;
            };
            keys.push(k.row());
            rows.push(g.rows);
            for (col, v) in last.iter_mut().zip(values) {
                col.push(v.clone());
            }
            for (j, acc) in g.accs.iter_mut().enumerate() {
                accs[j].push(acc);
            }
        }
        let n = keys.len();
        state.put_u64(n as u64);
        if n == 0 {
            return Ok(());
        }
        let mut columns = self.converter.convert_rows(keys)?;
        columns.push(Arc::new(Int64Array::from(rows)));
        for values in last {
            columns.push(ScalarValue::iter_to_array(values).map_err(df)?);
        }
        for (mut a, spec) in accs.into_iter().zip(&self.aggs) {
            columns.extend(snapshot_accumulators(&mut a, spec, self.retracting)?);
        }
        state.put_columns(columns, n)
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let n = state.count()?;
        if n == 0 {
            return Ok(());
        }
        let batch = state.batch()?;
        let bad = || {
            SluiceError::Runtime(format!(
                "{}: the checkpointed state does not match this query's keys and aggregates",
                self.name
            ))
        };
        let k = self.converter_width();
        let widths = state_widths(&self.aggs)?;
        if batch.num_columns() != k + 1 + self.aggs.len() + widths.iter().sum::<usize>() {
            return Err(bad());
        }
        let rows = self.converter.convert_columns(&batch.columns()[..k])?;
        let counts = batch
            .column(k)
            .as_primitive_opt::<arrow::datatypes::Int64Type>()
            .ok_or_else(bad)?
            .clone();
        let mut at = k + 1 + self.aggs.len();
        let mut state_cols = Vec::new();
        for w in widths {
            state_cols.push(batch.columns()[at..at + w].to_vec());
            at += w;
        }
        for i in 0..batch.num_rows() {
            let last = (0..self.aggs.len())
                .map(|j| ScalarValue::try_from_array(batch.column(k + 1 + j), i))
                .collect::<datafusion_common::Result<Vec<_>>>()
                .map_err(df)?;
            let accs = self
                .aggs
                .iter()
                .zip(&state_cols)
                .map(|(spec, cols)| restore_accumulator(spec, self.retracting, cols, i))
                .collect::<Result<Vec<_>>>()?;
            self.groups.insert(
                rows.row(i).owned(),
                Group {
                    accs,
                    last: Some(last),
                    rows: counts.value(i),
                },
            );
        }
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        let key_cols: Vec<ArrayRef> = if self.keys.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; n]))]
        } else {
            self.keys
                .iter()
                .map(|k| eval(k, data))
                .collect::<Result<_>>()?
        };
        let rows = self.converter.convert_columns(&key_cols)?;
        let mut args = Vec::with_capacity(self.aggs.len());
        let mut filters = Vec::with_capacity(self.aggs.len());
        for a in &self.aggs {
            args.push(
                a.expr
                    .expressions()
                    .iter()
                    .map(|e| eval(e, data))
                    .collect::<Result<Vec<_>>>()?,
            );
            filters.push(match &a.filter {
                Some(f) => Some(eval(f, data)?.as_boolean().clone()),
                None => None,
            });
        }
        // Changes in input order: (kind, key row, values).
        let mut changes: Vec<(RowKind, OwnedRow, Vec<ScalarValue>)> = Vec::new();
        for i in 0..n {
            let key = rows.row(i).owned();
            let adds = batch.kind(i).is_addition();
            let group = match self.groups.get_mut(&key) {
                Some(g) => g,
                // A retraction for a group that is not there (nothing to take back).
                None if !adds => continue,
                None => {
                    let accs = self
                        .aggs
                        .iter()
                        .map(|a| {
                            if self.retracting {
                                a.expr.create_sliding_accumulator()
                            } else {
                                a.expr.create_accumulator()
                            }
                        })
                        .collect::<datafusion_common::Result<Vec<_>>>()
                        .map_err(df)?;
                    self.groups.entry(key.clone()).or_insert(Group {
                        accs,
                        last: None,
                        rows: 0,
                    })
                }
            };
            group.rows += if adds { 1 } else { -1 };
            for (a, acc) in group.accs.iter_mut().enumerate() {
                if filters[a]
                    .as_ref()
                    .is_some_and(|f| !(f.is_valid(i) && f.value(i)))
                {
                    continue;
                }
                let one: Vec<ArrayRef> = args[a].iter().map(|c| c.slice(i, 1)).collect();
                if adds {
                    acc.update_batch(&one).map_err(df)?;
                } else {
                    acc.retract_batch(&one).map_err(df)?;
                }
            }
            if group.rows <= 0 {
                // Every row of the group was taken back: the group is gone.
                if let Some(g) = self.groups.remove(&key) {
                    if let Some(old) = g.last {
                        changes.push((RowKind::Delete, key, old));
                    }
                }
                continue;
            }
            let values = group
                .accs
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<datafusion_common::Result<Vec<_>>>()
                .map_err(df)?;
            match group.last.replace(values.clone()) {
                None => changes.push((RowKind::Insert, key, values)),
                Some(old) if old == values => {}
                Some(old) => {
                    changes.push((RowKind::UpdateBefore, key.clone(), old));
                    changes.push((RowKind::UpdateAfter, key, values));
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = Vec::new();
        if !self.keys.is_empty() {
            columns = self
                .converter
                .convert_rows(changes.iter().map(|(_, k, _)| k.row()))?;
        }
        let offset = columns.len();
        for j in 0..self.aggs.len() {
            let values = changes.iter().map(|(_, _, v)| v[j].clone());
            let array = ScalarValue::iter_to_array(values).map_err(df)?;
            let t = self.output_schema.field(offset + j).data_type();
            columns.push(if array.data_type() == t {
                array
            } else {
                cast(&array, t)?
            });
        }
        let kinds: Arc<[RowKind]> = changes.iter().map(|(k, _, _)| *k).collect();
        let data = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}
