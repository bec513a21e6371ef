//! Aggregate state in keyed state: DataFusion's accumulators expose their intermediate state
//! (`state`, the same one partial aggregation ships between nodes) and take it back with
//! `merge_batch`. [`GroupAccumulators`] holds the accumulators of a set of groups for the
//! length of one batch or one firing: it is loaded from stored state rows, updated with the
//! batch's rows (vectorised, with a `GroupsAccumulator` where the aggregate has one) and
//! written back as state rows, or evaluated into results.

use super::df;
use super::window_aggregate::AggSpec;
use arrow::array::{new_empty_array, Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion_common::ScalarValue;
use datafusion_expr::{Accumulator, EmitTo, GroupsAccumulator};
use sluice_common::{Result, SluiceError};
use std::collections::BTreeMap;

/// A new accumulator for `spec` (retractable over an updating input).
pub(crate) fn new_accumulator(spec: &AggSpec, retracting: bool) -> Result<Box<dyn Accumulator>> {
    if retracting {
        spec.expr.create_sliding_accumulator().map_err(df)
    } else {
        spec.expr.create_accumulator().map_err(df)
    }
}

/// How many state columns each aggregate of `aggs` has.
pub(crate) fn state_widths(aggs: &[AggSpec]) -> Result<Vec<usize>> {
    aggs.iter()
        .map(|a| a.expr.state_fields().map(|f| f.len()).map_err(df))
        .collect()
}

/// The types of the state columns of `aggs`, every aggregate's after the one before.
pub(crate) fn state_types(aggs: &[AggSpec]) -> Result<Vec<DataType>> {
    let mut out = Vec::new();
    for a in aggs {
        for f in a.expr.state_fields().map_err(df)? {
            out.push(f.data_type().clone());
        }
    }
    Ok(out)
}

/// `array` as `t` (an accumulator may give a wider or differently nested type than planned).
pub(crate) fn as_type(array: ArrayRef, t: &DataType) -> Result<ArrayRef> {
    if array.data_type() == t {
        Ok(array)
    } else {
        Ok(cast(&array, t)?)
    }
}

/// The aggregate arguments and `FILTER` masks of one batch, evaluated once.
pub(crate) struct BatchInputs {
    pub args: Vec<Vec<ArrayRef>>,
    pub filters: Vec<Option<ArrayRef>>,
}

impl BatchInputs {
    /// Evaluates the arguments and filters of `aggs` on `batch`.
    pub fn evaluate(aggs: &[AggSpec], batch: &RecordBatch) -> Result<Self> {
        let n = batch.num_rows();
        let mut args = Vec::new();
        let mut filters = Vec::new();
        for a in aggs {
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
}

enum Acc {
    Groups(Box<dyn GroupsAccumulator>),
    Single(Vec<Box<dyn Accumulator>>),
}

/// The accumulators of a number of groups, one per aggregate (vectorised where DataFusion
/// has a `GroupsAccumulator` for it).
pub(crate) struct GroupAccumulators {
    aggs: Vec<AggSpec>,
    accs: Vec<Acc>,
    groups: usize,
}

impl GroupAccumulators {
    /// Fresh accumulators of `groups` groups.
    pub fn new(aggs: &[AggSpec], groups: usize) -> Result<Self> {
        let mut accs = Vec::with_capacity(aggs.len());
        for a in aggs {
            accs.push(if a.expr.groups_accumulator_supported() {
                Acc::Groups(a.expr.create_groups_accumulator().map_err(df)?)
            } else {
                Acc::Single(Vec::new())
            });
        }
        let mut out = GroupAccumulators {
            aggs: aggs.to_vec(),
            accs,
            groups: 0,
        };
        out.grow(groups)?;
        Ok(out)
    }

    /// Makes room for `groups` groups (new ones start empty).
    pub fn grow(&mut self, groups: usize) -> Result<()> {
        for (acc, a) in self.accs.iter_mut().zip(&self.aggs) {
            if let Acc::Single(v) = acc {
                while v.len() < groups {
                    v.push(a.expr.create_accumulator().map_err(df)?);
                }
            }
        }
        self.groups = self.groups.max(groups);
        Ok(())
    }

    /// Merges stored state into the groups: row `i` of `state` (every aggregate's state
    /// columns, as [`state_types`] lays them out) into group `ids[i]`.
    pub fn merge(&mut self, state: &[ArrayRef], ids: &[usize]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut at = 0;
        for (acc, a) in self.accs.iter_mut().zip(&self.aggs) {
            let width = a.expr.state_fields().map_err(df)?.len();
            let cols = state.get(at..at + width).ok_or_else(|| {
                SluiceError::Runtime(format!(
                    "the stored state of {} has {} columns, fewer than this query's aggregates need",
                    a.expr.name(),
                    state.len()
                ))
            })?;
            at += width;
            match acc {
                Acc::Groups(g) => g.merge_batch(cols, ids, self.groups).map_err(df)?,
                Acc::Single(v) => {
                    for (row, &g) in ids.iter().enumerate() {
                        let one: Vec<ArrayRef> = cols.iter().map(|c| c.slice(row, 1)).collect();
                        v[g].merge_batch(&one).map_err(df)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds rows `idx` of the batch to the groups `gids` (one per row of `idx`).
    pub fn update(&mut self, inputs: &BatchInputs, idx: &[u32], gids: &[usize]) -> Result<()> {
        let take_idx = UInt32Array::from(idx.to_vec());
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
                    .update_batch(&args, gids, filter.as_ref(), self.groups)
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

    /// The state of every group as columns of `types` (see [`state_types`]).
    pub fn state(mut self, types: &[DataType]) -> Result<Vec<ArrayRef>> {
        let mut out = Vec::with_capacity(types.len());
        for (acc, a) in self.accs.iter_mut().zip(&self.aggs) {
            let fields = a.expr.state_fields().map_err(df)?;
            let cols = match acc {
                Acc::Groups(g) => g.state(EmitTo::All).map_err(df)?,
                Acc::Single(v) => {
                    let mut per_field: Vec<Vec<ScalarValue>> =
                        vec![Vec::with_capacity(v.len()); fields.len()];
                    for acc in v.iter_mut() {
                        for (f, value) in acc.state().map_err(df)?.into_iter().enumerate() {
                            if let Some(col) = per_field.get_mut(f) {
                                col.push(value);
                            }
                        }
                    }
                    per_field
                        .into_iter()
                        .zip(&fields)
                        .map(|(values, field)| {
                            if values.is_empty() {
                                Ok(new_empty_array(field.data_type()))
                            } else {
                                ScalarValue::iter_to_array(values).map_err(df)
                            }
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            for c in cols {
                let t = types.get(out.len()).ok_or_else(|| {
                    SluiceError::Runtime(format!(
                        "{} has more state than this query planned",
                        a.expr.name()
                    ))
                })?;
                out.push(as_type(c, t)?);
            }
        }
        Ok(out)
    }

    /// The result of every aggregate for every group.
    pub fn evaluate(mut self) -> Result<Vec<ArrayRef>> {
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
        Ok(results)
    }
}
