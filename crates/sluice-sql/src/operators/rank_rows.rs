//! What the non-window Top-N operators share: the rows they keep (in their input's
//! [`RowCodec`] encoding), their `ORDER BY` as byte strings that compare as it does, and the
//! output of changes with their row numbers.

use super::df;
use super::top_n::SortKey;
use arrow::array::{ArrayRef, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::RowCodec;
use sluice_engine::Output;
use std::sync::Arc;
use std::time::Duration;

/// What a non-window Top-N is: `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)` kept
/// where `rownum <= limit`.
pub struct TopNSpec {
    pub input_schema: SchemaRef,
    /// The input's columns, then the row number.
    pub output_schema: SchemaRef,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub order_by: Vec<SortKey>,
    /// Rows kept per partition.
    pub limit: u64,
    /// The query outputs the row number: every change of rank is emitted.
    pub output_rank: bool,
    /// `table.exec.state.ttl`.
    pub state_ttl: Option<Duration>,
}

impl TopNSpec {
    /// The codec of the partition key.
    pub fn key_codec(&self) -> Result<RowCodec> {
        let types = self
            .partition_by
            .iter()
            .map(|e| e.data_type(&self.input_schema).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        Ok(RowCodec::new(types))
    }

    /// The rows of an operator called `name`.
    pub fn rank_rows(&self, name: String) -> Result<RankRows> {
        RankRows::new(
            name,
            self.input_schema.clone(),
            self.output_schema.clone(),
            self.order_by.clone(),
        )
    }
}

/// What a Top-N emits: (kind, row, row number).
pub type Emitted = Vec<(RowKind, Vec<u8>, u64)>;

/// The rows of a Top-N: their codec, their sort keys and their output.
pub struct RankRows {
    name: String,
    input_schema: SchemaRef,
    /// The input's columns and the row number.
    output_schema: SchemaRef,
    order_by: Vec<SortKey>,
    /// Sort keys as byte strings that compare as the `ORDER BY` does.
    sort: RowConverter,
    /// The encoding of the input's rows (what state keeps).
    pub row_codec: RowCodec,
}

impl RankRows {
    pub fn new(
        name: String,
        input_schema: SchemaRef,
        output_schema: SchemaRef,
        order_by: Vec<SortKey>,
    ) -> Result<Self> {
        let sort_fields = order_by
            .iter()
            .map(|k| {
                Ok(SortField::new_with_options(
                    k.expr.data_type(&input_schema).map_err(df)?,
                    arrow::compute::SortOptions {
                        descending: k.descending,
                        nulls_first: k.nulls_first,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let row_codec = RowCodec::new(
            input_schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        );
        Ok(RankRows {
            name,
            input_schema,
            output_schema,
            order_by,
            sort: RowConverter::new(sort_fields)?,
            row_codec,
        })
    }

    /// The sort keys of `rows` (encoded input rows).
    pub fn sort_keys(&self, rows: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let batch = RecordBatch::try_new_with_options(
            self.input_schema.clone(),
            self.row_codec.decode(rows)?,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        self.sort_keys_of(&batch)
    }

    /// The sort keys of a batch of input rows.
    pub fn sort_keys_of(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let n = batch.num_rows();
        let columns: Vec<ArrayRef> = self
            .order_by
            .iter()
            .map(|k| k.expr.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion_common::Result<_>>()
            .map_err(df)?;
        let rows = self.sort.convert_columns(&columns)?;
        Ok((0..n).map(|i| rows.row(i).as_ref().to_vec()).collect())
    }

    /// Emits changes: each row with its row number in the last column.
    pub fn emit(&self, emitted: Emitted, out: &mut Output) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = emitted.iter().map(|(_, r, _)| r.as_slice()).collect();
        let mut columns = self.row_codec.decode(&refs)?;
        let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(
            emitted.iter().map(|(_, _, n)| *n),
        ));
        let want = self.output_schema.field(columns.len()).data_type();
        columns.push(if ranks.data_type() == want {
            ranks
        } else {
            cast(&ranks, want)?
        });
        let data = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        let kinds: Arc<[RowKind]> = emitted.iter().map(|(k, _, _)| *k).collect();
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}
