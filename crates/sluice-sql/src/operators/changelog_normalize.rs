//! ChangelogNormalize: turns upserts (an `upsert-kafka` table: `+U` is the latest row of its
//! primary key, `-D` carries the key only) into a changelog (`+I`, `-U` old / `+U` new,
//! `-D` old), as Flink's `ChangelogNormalize` does behind such a source. The last row of
//! every key is kept in keyed state (a value per key, expiring with
//! `table.exec.state.ttl`), behind a hash exchange on the primary key.
//!
//! As Flink's `DeduplicateFunctionHelper.processLastRowOnChangelog`: the first row of a key
//! is `+I`; a later one is `-U` of the previous row and `+U` of the new one, nothing if it
//! equals the previous row (unless state expires, when it is always emitted); a delete of a
//! key emits the previous row as `-D` and forgets it, and a delete of a key not there emits
//! nothing.

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::{RowCodec, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;
use std::time::Duration;

/// Creates ChangelogNormalize operators.
pub struct ChangelogNormalizeFactory {
    /// The table it normalises, for messages.
    pub table: String,
    /// The primary key's columns (the exchange hashes them).
    pub key_columns: Vec<usize>,
    pub schema: SchemaRef,
    /// `table.exec.state.ttl`: a key not updated for this long is forgotten.
    pub state_ttl: Option<Duration>,
}

impl OperatorFactory for ChangelogNormalizeFactory {
    fn name(&self) -> String {
        format!("ChangelogNormalize({})", self.table)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let types = |cols: &mut dyn Iterator<Item = usize>| {
            cols.map(|i| self.schema.field(i).data_type().clone())
                .collect()
        };
        let mut store = ctx.keyed_store()?;
        let last = store.value_state("last row", self.state_ttl)?;
        Ok(Box::new(ChangelogNormalize {
            name: self.name(),
            key_columns: self.key_columns.clone(),
            schema: self.schema.clone(),
            key_codec: RowCodec::new(types(&mut self.key_columns.iter().copied())),
            row_codec: RowCodec::new(types(&mut (0..self.schema.fields().len()))),
            skip_unchanged: self.state_ttl.is_none(),
            store,
            last,
        }))
    }
}

struct ChangelogNormalize {
    name: String,
    key_columns: Vec<usize>,
    schema: SchemaRef,
    key_codec: RowCodec,
    row_codec: RowCodec,
    /// An upsert equal to the last row emits nothing (only without a TTL, as Flink: with
    /// one, the row refreshes what downstream operators may have let expire).
    skip_unchanged: bool,
    store: KeyedStore,
    /// The last row of the current key, encoded.
    last: ValueState<Vec<u8>>,
}

impl Operator for ChangelogNormalize {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        let key_cols: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| data.column(i).clone())
            .collect();
        let keys = self.key_codec.encode_rows(&key_cols, n)?;
        let rows = self.row_codec.encode_rows(data.columns(), n)?;
        let mut emitted: Vec<Vec<u8>> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            self.store.set_current_key(key)?;
            let previous = self.last.get(&mut self.store)?;
            if batch.kind(i).is_addition() {
                match previous {
                    None => {
                        emitted.push(row.clone());
                        kinds.push(RowKind::Insert);
                    }
                    Some(p) if self.skip_unchanged && p == row => continue,
                    Some(p) => {
                        emitted.push(p);
                        kinds.push(RowKind::UpdateBefore);
                        emitted.push(row.clone());
                        kinds.push(RowKind::UpdateAfter);
                    }
                }
                self.last.set(&mut self.store, &row)?;
            } else if let Some(p) = previous {
                emitted.push(p);
                kinds.push(RowKind::Delete);
                self.last.clear(&mut self.store)?;
            }
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = emitted.iter().map(|r| r.as_slice()).collect();
        let columns = self.row_codec.decode(&refs)?;
        let data = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        let kinds: Arc<[RowKind]> = kinds.into();
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_engine::keyed::StateResources;
    use sluice_engine::{Metrics, StateConfig};

    fn ctx() -> SubtaskContext {
        SubtaskContext {
            job_name: "t".into(),
            operator_name: "n".into(),
            subtask_index: 0,
            parallelism: 1,
            metrics: Arc::new(Metrics::default()),
            checkpointing: false,
            state: StateConfig::default(),
            node: 0,
            state_resources: Arc::new(StateResources::default()),
        }
    }

    fn upserts(rows: &[(&str, Option<i64>, RowKind)]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        ChangeBatch::new(data, Some(rows.iter().map(|r| r.2).collect()))
    }

    /// The changelog as `+I[k, v]` lines.
    fn changelog(out: &mut Output) -> Vec<String> {
        let mut lines = Vec::new();
        for m in out.drain() {
            if let sluice_common::Message::Data(b) = m {
                let k = b
                    .data
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let v = b
                    .data
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                for i in 0..b.num_rows() {
                    lines.push(format!(
                        "{}[{}, {}]",
                        b.kind(i).short_string(),
                        k.value(i),
                        v.value(i)
                    ));
                }
            }
        }
        lines
    }

    #[test]
    fn upserts_become_a_changelog_as_flink_normalizes_them() {
        let f = ChangelogNormalizeFactory {
            table: "t".into(),
            key_columns: vec![0],
            schema: upserts(&[]).data.schema(),
            state_ttl: None,
        };
        let mut op = f.create(&ctx()).unwrap();
        let mut out = Output::default();
        use RowKind::{Delete as D, UpdateAfter as U};
        op.process_batch(
            0,
            upserts(&[
                ("a", Some(1), U),
                ("b", Some(5), U),
                ("a", Some(2), U),
                ("a", Some(2), U), // the same row again: nothing
                ("c", None, D),    // a key never seen: nothing
                ("b", None, D),
                ("b", Some(6), U),
            ]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            changelog(&mut out),
            ["+I[a, 1]", "+I[b, 5]", "-U[a, 1]", "+U[a, 2]", "-D[b, 5]", "+I[b, 6]"]
        );
    }
}
