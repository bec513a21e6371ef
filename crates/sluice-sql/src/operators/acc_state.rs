//! Aggregate state in checkpoints: DataFusion's accumulators expose their intermediate state
//! (`state`, the same one partial aggregation ships between nodes) and take it back with
//! `merge_batch`. A snapshot takes the state of every group as columns; since `state` may
//! consume an accumulator, each is replaced by a fresh one holding the merged state, which is
//! also how a restore rebuilds them.

use super::df;
use super::window_aggregate::AggSpec;
use arrow::array::{new_empty_array, ArrayRef};
use datafusion_common::ScalarValue;
use datafusion_expr::{Accumulator, EmitTo, GroupsAccumulator};
use sluice_common::Result;

/// A new accumulator for `spec` (retractable over an updating input).
pub(crate) fn new_accumulator(spec: &AggSpec, retracting: bool) -> Result<Box<dyn Accumulator>> {
    if retracting {
        spec.expr.create_sliding_accumulator().map_err(df)
    } else {
        spec.expr.create_accumulator().map_err(df)
    }
}

/// The state of `accs` (one accumulator per group, all of `spec`) as columns, one per state
/// field; every accumulator is replaced by an equal fresh one.
pub(crate) fn snapshot_accumulators(
    accs: &mut [&mut Box<dyn Accumulator>],
    spec: &AggSpec,
    retracting: bool,
) -> Result<Vec<ArrayRef>> {
    let fields = spec.expr.state_fields().map_err(df)?;
    let mut per_field: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(accs.len()); fields.len()];
    for acc in accs.iter_mut() {
        let state = acc.state().map_err(df)?;
        let arrays = state
            .iter()
            .map(|v| v.to_array())
            .collect::<datafusion_common::Result<Vec<_>>>()
            .map_err(df)?;
        let mut fresh = new_accumulator(spec, retracting)?;
        fresh.merge_batch(&arrays).map_err(df)?;
        **acc = fresh;
        for (f, v) in state.into_iter().enumerate() {
            if let Some(col) = per_field.get_mut(f) {
                col.push(v);
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
        .collect()
}

/// An accumulator of `spec` holding the state in row `row` of `columns`.
pub(crate) fn restore_accumulator(
    spec: &AggSpec,
    retracting: bool,
    columns: &[ArrayRef],
    row: usize,
) -> Result<Box<dyn Accumulator>> {
    let mut acc = new_accumulator(spec, retracting)?;
    let state: Vec<ArrayRef> = columns.iter().map(|c| c.slice(row, 1)).collect();
    acc.merge_batch(&state).map_err(df)?;
    Ok(acc)
}

/// The state of every group of `acc` as columns; `acc` is replaced by an equal fresh one.
pub(crate) fn snapshot_groups_accumulator(
    acc: &mut Box<dyn GroupsAccumulator>,
    spec: &AggSpec,
    groups: usize,
) -> Result<Vec<ArrayRef>> {
    let state = acc.state(EmitTo::All).map_err(df)?;
    *acc = restore_groups_accumulator(spec, &state, groups)?;
    Ok(state)
}

/// A groups accumulator of `spec` whose group `i` holds row `i` of `columns`.
pub(crate) fn restore_groups_accumulator(
    spec: &AggSpec,
    columns: &[ArrayRef],
    groups: usize,
) -> Result<Box<dyn GroupsAccumulator>> {
    let mut acc = spec.expr.create_groups_accumulator().map_err(df)?;
    if groups > 0 {
        let ids: Vec<usize> = (0..groups).collect();
        acc.merge_batch(columns, &ids, groups).map_err(df)?;
    }
    Ok(acc)
}

/// How many state columns each aggregate of `aggs` has.
pub(crate) fn state_widths(aggs: &[AggSpec]) -> Result<Vec<usize>> {
    aggs.iter()
        .map(|a| a.expr.state_fields().map(|f| f.len()).map_err(df))
        .collect()
}
