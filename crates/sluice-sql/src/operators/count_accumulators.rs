//! `COUNT` and `COUNT(DISTINCT integer)` of a non-windowed group, kept natively: the group
//! aggregate updates its groups one row at a time (it emits the change every row makes), and
//! a DataFusion accumulator costs an array slice, a dynamic call and a `ScalarValue` per row
//! and aggregate. These keep a count, or a hash set of the distinct values, and read and
//! write exactly DataFusion's intermediate state (a BIGINT count; a list of the distinct
//! values), so that checkpoints and savepoints are the same whichever kept the group.

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type};
use datafusion_common::ScalarValue;
use sluice_common::{Result, SluiceError};
use std::collections::HashSet;
use std::sync::Arc;

/// True if `COUNT(DISTINCT x)` with this state (DataFusion's: a list of `x`'s type) is kept
/// as a [`DistinctInts`].
pub(crate) fn counts_distinct_ints(state: &[DataType]) -> bool {
    match state {
        [DataType::List(item)] => matches!(
            item.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
        ),
        _ => false,
    }
}

/// The distinct non-null values a group has seen of an integer argument.
#[derive(Debug, Clone)]
pub(crate) struct DistinctInts {
    values: HashSet<i64, foldhash::fast::RandomState>,
    /// The argument's type (that of the state list's items).
    item: DataType,
}

impl DistinctInts {
    /// An empty set for `COUNT(DISTINCT x)` whose state is `state` (see
    /// [`counts_distinct_ints`]).
    pub fn new(state: &DataType) -> Result<Self> {
        let DataType::List(item) = state else {
            return Err(SluiceError::Runtime(format!(
                "COUNT(DISTINCT ...) with a state of type {state}, not a list"
            )));
        };
        Ok(DistinctInts {
            values: HashSet::default(),
            item: item.data_type().clone(),
        })
    }

    /// The argument of a batch as BIGINT, to [`DistinctInts::insert`] from.
    pub fn argument(column: &ArrayRef) -> Result<Int64Array> {
        Ok(cast(column, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    }

    /// Adds row `i` of `argument` (nothing if it is NULL).
    pub fn insert(&mut self, argument: &Int64Array, i: usize) {
        if argument.is_valid(i) {
            self.values.insert(argument.value(i));
        }
    }

    pub fn count(&self) -> i64 {
        self.values.len() as i64
    }

    /// DataFusion's state: one list of the values.
    pub fn state(&self) -> Result<ScalarValue> {
        let values: ArrayRef = Arc::new(Int64Array::from_iter_values(self.values.iter().copied()));
        let values = cast(&values, &self.item)?;
        let field = Arc::new(Field::new_list_field(self.item.clone(), true));
        let offsets = OffsetBuffer::from_lengths([values.len()]);
        let list = ListArray::try_new(field, offsets, values, None)
            .map_err(|e| SluiceError::Runtime(format!("COUNT(DISTINCT ...) state: {e}")))?;
        Ok(ScalarValue::List(Arc::new(list)))
    }

    /// Takes back the values of row `i` of a state column written by [`DistinctInts::state`]
    /// or by DataFusion's accumulator.
    pub fn merge_state(&mut self, state: &ArrayRef, i: usize) -> Result<()> {
        let list = state.as_list_opt::<i32>().ok_or_else(|| {
            SluiceError::Runtime(format!(
                "COUNT(DISTINCT ...): a stored state of type {}, not a list",
                state.data_type()
            ))
        })?;
        if list.is_null(i) {
            return Ok(());
        }
        let values = Self::argument(&list.value(i))?;
        for v in values.iter().flatten() {
            self.values.insert(v);
        }
        Ok(())
    }
}

/// A count as DataFusion's `COUNT` keeps it.
pub(crate) fn count_state(n: i64) -> ScalarValue {
    ScalarValue::Int64(Some(n))
}

/// Row `i` of a stored `COUNT` state column.
pub(crate) fn count_from_state(state: &ArrayRef, i: usize) -> Result<i64> {
    let c = state.as_primitive_opt::<Int64Type>().ok_or_else(|| {
        SluiceError::Runtime(format!(
            "COUNT: a stored state of type {}, not BIGINT",
            state.data_type()
        ))
    })?;
    Ok(if c.is_valid(i) { c.value(i) } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state goes to DataFusion's accumulator and back unchanged.
    #[test]
    fn distinct_state_is_datafusions() {
        let t = DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)));
        assert!(counts_distinct_ints(std::slice::from_ref(&t)));
        assert!(!counts_distinct_ints(&[DataType::List(Arc::new(
            Field::new_list_field(DataType::Utf8, true)
        ))]));
        let mut s = DistinctInts::new(&t).unwrap();
        let arg: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![
            Some(3),
            None,
            Some(5),
            Some(3),
        ]));
        let ints = DistinctInts::argument(&arg).unwrap();
        for i in 0..ints.len() {
            s.insert(&ints, i);
        }
        assert_eq!(s.count(), 2);

        // DataFusion's COUNT(DISTINCT) takes the state and counts the same.
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "x",
            DataType::Int32,
            true,
        )]));
        let x = datafusion_physical_expr::expressions::col("x", &schema).unwrap();
        let expr = datafusion_physical_expr::aggregate::AggregateExprBuilder::new(
            datafusion_functions_aggregate::count::count_udaf(),
            vec![x],
        )
        .schema(schema)
        .alias("c")
        .distinct()
        .build()
        .unwrap();
        let mut df_acc = expr.create_accumulator().unwrap();
        let state = s.state().unwrap().to_array().unwrap();
        df_acc.merge_batch(std::slice::from_ref(&state)).unwrap();
        assert_eq!(df_acc.evaluate().unwrap(), ScalarValue::Int64(Some(2)));

        // And its state comes back.
        let theirs = df_acc.state().unwrap()[0].to_array().unwrap();
        let mut back = DistinctInts::new(&t).unwrap();
        back.merge_state(&theirs, 0).unwrap();
        back.merge_state(&state, 0).unwrap();
        assert_eq!(back.count(), 2);
        assert_eq!(
            count_from_state(&count_state(7).to_array().unwrap(), 0).unwrap(),
            7
        );
    }
}
