//! What joins emit: a left row and a right row side by side (the left input's columns, then
//! the right's, as Flink's joined row), and for outer joins a row of one side padded with
//! NULLs for the other. Join operators keep rows in keyed state as [`RowCodec`] bytes; this
//! turns pairs of such rows back into Arrow batches and evaluates the join's non-equi
//! condition on them, a whole batch of candidate pairs at a time.

use super::df;
use arrow::array::{new_null_array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::RowCodec;
use std::sync::Arc;

/// The kind of a join, as Flink's `FlinkJoinType` for the joins that emit joined rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Left rows with a match (`IN`, `EXISTS`), each once.
    Semi,
    /// Left rows without a match (`NOT IN`, `NOT EXISTS`).
    Anti,
}

impl JoinKind {
    /// Left rows without a match are emitted padded with NULLs.
    pub fn left_outer(self) -> bool {
        matches!(self, JoinKind::Left | JoinKind::Full)
    }

    /// Right rows without a match are emitted padded with NULLs.
    pub fn right_outer(self) -> bool {
        matches!(self, JoinKind::Right | JoinKind::Full)
    }

    /// `INNER`, `LEFT OUTER`, ... for operator names and messages.
    pub fn sql(self) -> &'static str {
        match self {
            JoinKind::Inner => "INNER",
            JoinKind::Left => "LEFT OUTER",
            JoinKind::Right => "RIGHT OUTER",
            JoinKind::Full => "FULL OUTER",
            JoinKind::Semi => "SEMI",
            JoinKind::Anti => "ANTI",
        }
    }
}

/// One input of a join, as the planner describes it.
#[derive(Clone)]
pub struct JoinInput {
    /// The schema of the rows that arrive (the relation's columns, then any key columns
    /// computed for the exchange).
    pub schema: SchemaRef,
    /// The relation's own columns: the first `width` (what the join emits).
    pub width: usize,
    /// The join key's columns (the exchange hashes them).
    pub keys: Vec<usize>,
}

impl JoinInput {
    /// The codec of the relation's own columns (what the join keeps and emits).
    pub fn row_codec(&self) -> RowCodec {
        self.codec(0..self.width)
    }

    /// The codec of the join key.
    pub fn key_codec(&self) -> RowCodec {
        self.codec(self.keys.iter().copied())
    }

    fn codec(&self, cols: impl Iterator<Item = usize>) -> RowCodec {
        RowCodec::new(
            cols.map(|i| self.schema.field(i).data_type().clone())
                .collect(),
        )
    }
}

/// Builds joined rows of one join: left and right rows in their codecs, the joined schema
/// (left columns, then right columns, all nullable) and the residual condition over it.
/// (A semi or anti join emits left rows only, but evaluates its condition on pairs.)
pub struct JoinedRows {
    pub left: RowCodec,
    pub right: RowCodec,
    pub schema: SchemaRef,
    /// The join condition other than the equi-keys (and the time bounds of an interval
    /// join), over the joined schema; `None` when there is none.
    pub condition: Option<Arc<dyn PhysicalExpr>>,
}

impl JoinedRows {
    fn batch(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| SluiceError::Runtime(format!("a joined row: {e}")))
    }

    /// Pair `i` of `left[i]` and `right[i]`.
    pub fn pairs(&self, left: &[&[u8]], right: &[&[u8]]) -> Result<RecordBatch> {
        debug_assert_eq!(left.len(), right.len());
        let mut columns = self.left.decode(left)?;
        columns.extend(self.right.decode(right)?);
        self.batch(columns, left.len())
    }

    /// Left rows with NULLs for the right columns.
    pub fn left_padded(&self, left: &[&[u8]]) -> Result<RecordBatch> {
        if left.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        self.pad_left(self.left.decode(left)?, left.len())
    }

    /// `rows` left rows, given as their columns, with NULLs for the right columns.
    pub fn pad_left(&self, mut columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        columns.extend(self.right.types().iter().map(|t| new_null_array(t, rows)));
        self.batch(columns, rows)
    }

    /// Joined and padded rows in one batch, in `order`: `(0, i)` is row `i` of `joined`,
    /// `(1, i)` row `i` of `padded`.
    pub fn interleaved(
        &self,
        joined: RecordBatch,
        padded: RecordBatch,
        order: &[(usize, usize)],
    ) -> Result<RecordBatch> {
        if padded.num_rows() == 0 {
            return Ok(joined);
        }
        if joined.num_rows() == 0 {
            return Ok(padded);
        }
        let columns = (0..joined.num_columns())
            .map(|c| {
                interleave(
                    &[joined.column(c).as_ref(), padded.column(c).as_ref()],
                    order,
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.batch(columns, order.len())
    }

    /// Right rows with NULLs for the left columns.
    pub fn right_padded(&self, right: &[&[u8]]) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = self
            .left
            .types()
            .iter()
            .map(|t| new_null_array(t, right.len()))
            .collect();
        columns.extend(self.right.decode(right)?);
        self.batch(columns, right.len())
    }

    /// Which pairs of `joined` satisfy the condition (NULL is not true); all of them when
    /// there is no condition.
    pub fn matches(&self, joined: &RecordBatch) -> Result<BooleanArray> {
        let n = joined.num_rows();
        let Some(cond) = &self.condition else {
            return Ok(BooleanArray::from(vec![true; n]));
        };
        let value = cond.evaluate(joined).map_err(df)?;
        let array = value.into_array(n).map_err(df)?;
        let mask = array.as_boolean_opt().ok_or_else(|| {
            SluiceError::Runtime("a join condition did not give a boolean".into())
        })?;
        // NULL is not a match.
        Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
    }
}

/// Rows of the given kinds: an insert-only batch when they are all `+I`.
pub fn with_kinds(data: RecordBatch, kinds: Vec<RowKind>) -> ChangeBatch {
    if kinds.iter().all(|k| *k == RowKind::Insert) {
        ChangeBatch::inserts(data)
    } else {
        ChangeBatch::new(data, Some(kinds.into()))
    }
}

/// A row as a join keeps it in state: a byte that says whether it has been joined (for the
/// outer side of an outer join), then the row's [`RowCodec`] bytes.
pub fn stored_row(joined: bool, row: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(row.len() + 1);
    v.push(joined as u8);
    v.extend_from_slice(row);
    v
}

/// The joined flag and the row of a [`stored_row`].
pub fn split_stored(stored: &[u8]) -> Result<(bool, &[u8])> {
    match stored.split_first() {
        Some((flag, row)) => Ok((*flag != 0, row)),
        None => Err(SluiceError::Runtime(
            "keyed state of a join holds an empty row".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion_expr::Operator as Op;
    use datafusion_physical_expr::expressions::{BinaryExpr, Column};

    fn rows() -> JoinedRows {
        JoinedRows {
            left: RowCodec::new(vec![DataType::Int64]),
            right: RowCodec::new(vec![DataType::Utf8, DataType::Int64]),
            schema: Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, true),
                Field::new("c", DataType::Int64, true),
            ])),
            condition: Some(Arc::new(BinaryExpr::new(
                Arc::new(Column::new("a", 0)),
                Op::Lt,
                Arc::new(Column::new("c", 2)),
            ))),
        }
    }

    #[test]
    fn pairs_and_padded_rows_have_the_joined_schema() {
        let r = rows();
        let l = r
            .left
            .encode(&[Arc::new(Int64Array::from(vec![Some(1), None, Some(5)])) as ArrayRef])
            .unwrap();
        let rr = r
            .right
            .encode(&[
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
                Arc::new(Int64Array::from(vec![2, 2, 2])),
            ])
            .unwrap();
        let lr: Vec<&[u8]> = l.iter().map(|v| v.as_slice()).collect();
        let rrr: Vec<&[u8]> = rr.iter().map(|v| v.as_slice()).collect();
        let joined = r.pairs(&lr, &rrr).unwrap();
        assert_eq!(joined.num_rows(), 3);
        // 1 < 2 true; NULL < 2 unknown: not a match; 5 < 2 false.
        let m = r.matches(&joined).unwrap();
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(false), Some(false)]
        );
        let padded = r.left_padded(&lr).unwrap();
        assert_eq!(padded.column(1).null_count(), 3);
        assert_eq!(padded.column(0).null_count(), 1);
        let padded = r.right_padded(&rrr).unwrap();
        assert_eq!(padded.column(0).null_count(), 3);
        assert_eq!(padded.column(1).null_count(), 0);
    }

    #[test]
    fn a_stored_row_keeps_its_joined_flag() {
        let s = stored_row(true, b"abc");
        assert_eq!(split_stored(&s).unwrap(), (true, &b"abc"[..]));
        let s = stored_row(false, b"");
        assert_eq!(split_stored(&s).unwrap(), (false, &b""[..]));
        assert!(split_stored(&[]).is_err());
    }
}
