//! Top-N over an updating stream: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY ...)` filtered
//! by `rownum <= N` when the input has updates and deletes (an aggregate's result, a join's),
//! as Flink's `RetractableTopNFunction` runs it, with an updating result.
//!
//! Each partition keeps all its rows in keyed state, ordered by sort key and, among equal
//! keys, by arrival (a map from sort key and arrival number to row): a row that leaves the
//! top N may come back when a better one is taken back. An addition (`+I`, `+U`) adds its row;
//! a retraction (`-U`, `-D`) removes the first kept row equal to it (a retraction of a row not
//! kept changes nothing). The top N before and after each change are compared, as Flink
//! emits them:
//!
//! - when the query outputs the row number: each rank whose row changed is taken back (`-U`
//!   of the old row) and emitted again (`+U` of the new one); a rank that appears is `+I`, a
//!   rank that disappears `-D`;
//! - otherwise: the rows that left the top N are deleted (`-D`), those that entered inserted
//!   (`+I`).

use super::encode_keys;
use super::rank_rows::{Emitted, RankRows, TopNSpec};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind};
use sluice_engine::keyed::{MapState, RowCodec, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// Creates Top-N operators over updating input.
pub struct RetractTopNFactory(pub TopNSpec);

impl OperatorFactory for RetractTopNFactory {
    fn name(&self) -> String {
        format!("RetractRank(rownum <= {})", self.0.limit)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let spec = &self.0;
        Ok(Box::new(RetractTopN {
            partition_by: spec.partition_by.clone(),
            rank: spec.rank_rows(self.name())?,
            limit: usize::try_from(spec.limit).unwrap_or(usize::MAX),
            output_rank: spec.output_rank,
            key_codec: spec.key_codec()?,
            rows: store.map_state("rows", spec.state_ttl)?,
            next_arrival: store.value_state("next arrival", spec.state_ttl)?,
            store,
        }))
    }
}

struct RetractTopN {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    rank: RankRows,
    limit: usize,
    output_rank: bool,
    key_codec: RowCodec,
    /// The current partition's rows by sort key, then arrival number (big-endian).
    rows: MapState<Vec<u8>, Vec<u8>>,
    next_arrival: ValueState<u64>,
    store: KeyedStore,
}

/// A partition's top rows: (sort key and arrival number, row), best first.
type Top = Vec<(Vec<u8>, Vec<u8>)>;

impl RetractTopN {
    fn top(&mut self) -> Result<Top> {
        self.rows.first_entries(&mut self.store, self.limit)
    }

    /// Applies one change to the current partition; says whether it changed anything.
    fn apply(&mut self, kind: RowKind, sort_key: &[u8], row: &[u8]) -> Result<bool> {
        if kind.is_addition() {
            let arrival = self.next_arrival.get(&mut self.store)?.unwrap_or(0);
            self.next_arrival.set(&mut self.store, &(arrival + 1))?;
            let mut key = sort_key.to_vec();
            key.extend_from_slice(&arrival.to_be_bytes());
            self.rows.put(&mut self.store, &key, &row.to_vec())?;
            return Ok(true);
        }
        let same_key = self.rows.entries_with_prefix(&mut self.store, sort_key)?;
        // The prefix also matches longer sort keys: only exact ones (key + 8 bytes) count.
        let found = same_key
            .into_iter()
            .find(|(k, v)| k.len() == sort_key.len() + 8 && v.as_slice() == row);
        match found {
            Some((k, _)) => {
                self.rows.remove(&mut self.store, &k)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The changes from `before` to `after` (the top rows of one partition).
    fn diff(&self, before: &Top, after: &Top, out: &mut Emitted) {
        if self.output_rank {
            for i in 0..before.len().max(after.len()) {
                let rank = i as u64 + 1;
                match (before.get(i), after.get(i)) {
                    (Some((a, _)), Some((b, _))) if a == b => {}
                    (Some((_, old)), Some((_, new))) => {
                        out.push((RowKind::UpdateBefore, old.clone(), rank));
                        out.push((RowKind::UpdateAfter, new.clone(), rank));
                    }
                    (None, Some((_, new))) => out.push((RowKind::Insert, new.clone(), rank)),
                    (Some((_, old)), None) => out.push((RowKind::Delete, old.clone(), rank)),
                    (None, None) => {}
                }
            }
            return;
        }
        for (i, (k, row)) in before.iter().enumerate() {
            if !after.iter().any(|(a, _)| a == k) {
                out.push((RowKind::Delete, row.clone(), i as u64 + 1));
            }
        }
        for (i, (k, row)) in after.iter().enumerate() {
            if !before.iter().any(|(b, _)| b == k) {
                out.push((RowKind::Insert, row.clone(), i as u64 + 1));
            }
        }
    }
}

impl Operator for RetractTopN {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        let keys = encode_keys(&self.partition_by, &self.key_codec, data)?;
        let rows = self.rank.row_codec.encode_rows(data.columns(), n)?;
        let sort_keys = self.rank.sort_keys_of(data)?;
        let mut emitted: Emitted = Vec::new();
        // The top rows of the partition last changed, while the batch stays on it.
        let mut current: Option<(usize, Top)> = None;
        for i in 0..n {
            let before = match current.take() {
                Some((j, top)) if keys[j] == keys[i] => top,
                _ => {
                    self.store.set_current_key(&keys[i])?;
                    self.top()?
                }
            };
            if !self.apply(batch.kind(i), &sort_keys[i], &rows[i])? {
                current = Some((i, before));
                continue;
            }
            let after = self.top()?;
            self.diff(&before, &after, &mut emitted);
            current = Some((i, after));
        }
        self.rank.emit(emitted, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::top_n::SortKey;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};
    use arrow::record_batch::RecordBatch;
    use datafusion_physical_expr::expressions::Column;
    use sluice_common::Message;

    fn op(output_rank: bool) -> Box<dyn Operator> {
        let input = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let output = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("rn", DataType::UInt64, false),
        ]));
        RetractTopNFactory(TopNSpec {
            input_schema: input,
            output_schema: output,
            partition_by: vec![],
            order_by: vec![SortKey {
                expr: Arc::new(Column::new("v", 0)),
                descending: true,
                nulls_first: false,
            }],
            limit: 2,
            output_rank,
            state_ttl: None,
        })
        .create(&crate::operators::test_context())
        .unwrap()
    }

    /// Feeds `changes` one batch each; the output as `kind v@rn`.
    fn run(op: &mut Box<dyn Operator>, changes: &[(RowKind, i64)]) -> Vec<String> {
        let mut out = Output::default();
        for (kind, v) in changes {
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
            let data =
                RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![*v]))]).unwrap();
            op.process_batch(
                0,
                ChangeBatch::new(data, Some(vec![*kind].into())),
                &mut out,
            )
            .unwrap();
        }
        let mut lines = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                for i in 0..b.num_rows() {
                    lines.push(format!(
                        "{} {}@{}",
                        b.kind(i).short_string(),
                        b.data.column(0).as_primitive::<Int64Type>().value(i),
                        b.data.column(1).as_primitive::<UInt64Type>().value(i)
                    ));
                }
            }
        }
        lines
    }

    #[test]
    fn a_row_taken_back_lets_the_next_one_in() {
        use RowKind::*;
        let mut o = op(true);
        assert_eq!(
            run(&mut o, &[(Insert, 5), (Insert, 3), (Insert, 4)]),
            ["+I 5@1", "+I 3@2", "-U 3@2", "+U 4@2"]
        );
        // 5 is taken back: 4 moves up, 3 (kept outside the top) comes back.
        assert_eq!(
            run(&mut o, &[(Delete, 5)]),
            ["-U 5@1", "+U 4@1", "-U 4@2", "+U 3@2"]
        );
        // An update that moves a row down; a retraction of a row never seen does nothing.
        assert_eq!(
            run(&mut o, &[(UpdateBefore, 4), (UpdateAfter, 1), (Delete, 42)]),
            ["-U 4@1", "+U 3@1", "-D 3@2", "+I 1@2"]
        );
        let mut o = op(false);
        assert_eq!(
            run(
                &mut o,
                &[(Insert, 5), (Insert, 3), (Insert, 4), (Delete, 5)]
            ),
            ["+I 5@1", "+I 3@2", "-D 3@2", "+I 4@2", "-D 5@1", "+I 3@2"]
        );
    }
}
