//! Top-N over an append-only stream: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY ...)`
//! filtered by `rownum <= N`, as Flink's `AppendOnlyTopNFunction` runs it, with an updating
//! result.
//!
//! Each partition keeps its best rows in keyed state (expiring with `table.exec.state.ttl`):
//! entries of equal sort keys in order, rows of one entry in arrival order. A row enters if
//! the buffer holds fewer than N rows or it sorts before the worst one. Then, as Flink:
//!
//! - when the query outputs the row number: every row whose rank changes is taken back
//!   (`-U` at its old rank) and emitted again (`+U` at its new rank), the row pushed past N is
//!   dropped, and a new last rank is `+I`;
//! - otherwise: the row pushed out is deleted (`-D`) and the new row inserted (`+I`), nothing
//!   if the new row is itself the one pushed out.

use super::df;
use super::top_n::SortKey;
use arrow::array::{ArrayRef, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::{RowCodec, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, StateReader, SubtaskContext};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Creates append-only Top-N operators.
pub struct AppendOnlyTopNFactory {
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

impl OperatorFactory for AppendOnlyTopNFactory {
    fn name(&self) -> String {
        format!("Rank(rownum <= {})", self.limit)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let key_types = self
            .partition_by
            .iter()
            .map(|e| e.data_type(&self.input_schema).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        let sort_fields = self
            .order_by
            .iter()
            .map(|k| {
                Ok(SortField::new_with_options(
                    k.expr.data_type(&self.input_schema).map_err(df)?,
                    arrow::compute::SortOptions {
                        descending: k.descending,
                        nulls_first: k.nulls_first,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(AppendOnlyTopN {
            name: self.name(),
            input_schema: self.input_schema.clone(),
            output_schema: self.output_schema.clone(),
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            sort: RowConverter::new(sort_fields)?,
            limit: self.limit,
            output_rank: self.output_rank,
            key_codec: RowCodec::new(key_types),
            row_codec: RowCodec::new(
                self.input_schema
                    .fields()
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect(),
            ),
            top: store.value_state("top rows", self.state_ttl)?,
            store,
        }))
    }
}

struct AppendOnlyTopN {
    name: String,
    input_schema: SchemaRef,
    output_schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<SortKey>,
    /// Sort keys as byte strings that compare as the `ORDER BY` does (in memory only; state
    /// holds the rows).
    sort: RowConverter,
    limit: u64,
    output_rank: bool,
    key_codec: RowCodec,
    row_codec: RowCodec,
    /// The current partition's kept rows, in rank order.
    top: ValueState<Vec<u8>>,
    store: KeyedStore,
}

/// A partition's buffer: entries of equal sort keys, best first.
type Buffer = Vec<(Vec<u8>, Vec<Vec<u8>>)>;

/// What the operator emits: (kind, row, row number).
type Emitted = Vec<(RowKind, Vec<u8>, u64)>;

fn encode_rows(rows: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(&r);
    }
    out
}

fn decode_rows(mut b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (len, rest) = b
            .split_first_chunk::<4>()
            .ok_or_else(|| SluiceError::Runtime("keyed state of a Top-N is cut short".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        let row = rest
            .get(..len)
            .ok_or_else(|| SluiceError::Runtime("keyed state of a Top-N is cut short".into()))?;
        out.push(row.to_vec());
        b = &rest[len..];
    }
    Ok(out)
}

impl AppendOnlyTopN {
    /// The sort keys of `rows` (encoded input rows).
    fn sort_keys(&self, rows: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
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

    fn sort_keys_of(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
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

    /// The current partition's buffer, from state.
    fn load(&mut self) -> Result<Buffer> {
        let Some(stored) = self.top.get(&mut self.store)? else {
            return Ok(Vec::new());
        };
        let rows = decode_rows(&stored)?;
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let keys = self.sort_keys(&refs)?;
        let mut buffer: Buffer = Vec::new();
        for (k, r) in keys.into_iter().zip(rows) {
            match buffer.last_mut() {
                Some((last, rs)) if *last == k => rs.push(r),
                _ => buffer.push((k, vec![r])),
            }
        }
        Ok(buffer)
    }

    /// One row into a partition's buffer, as Flink's `AppendOnlyTopNFunction`.
    fn process(&self, buffer: &mut Buffer, key: Vec<u8>, row: Vec<u8>, out: &mut Emitted) {
        let total: usize = buffer.iter().map(|(_, r)| r.len()).sum();
        let in_range = match buffer.last() {
            None => true,
            Some((worst, _)) => key < *worst || (total as u64) < self.limit,
        };
        if !in_range {
            return;
        }
        // Into its entry, after the rows of an equal key.
        let at = buffer.partition_point(|(k, _)| *k < key);
        match buffer.get_mut(at) {
            Some((k, rows)) if *k == key => rows.push(row.clone()),
            _ => buffer.insert(at, (key.clone(), vec![row.clone()])),
        }
        let rank_end = self.limit;
        if self.output_rank {
            let mut rank = 0u64;
            let mut found = false;
            let mut current = row.clone();
            let mut entry = 0;
            while entry < buffer.len() && rank <= rank_end {
                let (k, rows) = &buffer[entry];
                entry += 1;
                if !found && *k == key {
                    rank += rows.len() as u64;
                    current = row.clone();
                    found = true;
                } else if found {
                    for prev in rows {
                        if rank > rank_end {
                            break;
                        }
                        out.push((RowKind::UpdateBefore, prev.clone(), rank));
                        out.push((RowKind::UpdateAfter, current.clone(), rank));
                        current = prev.clone();
                        rank += 1;
                    }
                } else {
                    rank += rows.len() as u64;
                }
            }
            if rank <= rank_end {
                out.push((RowKind::Insert, current, rank));
            }
            // The entries past N are dropped.
            buffer.truncate(entry);
        } else {
            let total = total + 1;
            if total as u64 > rank_end {
                let Some((_, last_rows)) = buffer.last_mut() else {
                    return;
                };
                let size = last_rows.len();
                let last = last_rows.pop();
                if last_rows.is_empty() {
                    buffer.pop();
                }
                match last {
                    Some(last) if size > 0 && last != row => {
                        out.push((RowKind::Delete, last, rank_end));
                    }
                    _ => return,
                }
            }
            let rank = buffer[..at.min(buffer.len())]
                .iter()
                .map(|(_, r)| r.len() as u64)
                .sum::<u64>()
                + 1;
            out.push((RowKind::Insert, row, rank.min(rank_end)));
        }
    }

    fn emit(&self, emitted: Emitted, out: &mut Output) -> Result<()> {
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

impl Operator for AppendOnlyTopN {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        super::require_inserts(&batch, &self.name)?;
        let keys = super::encode_keys(&self.partition_by, &self.key_codec, data)?;
        let rows = self.row_codec.encode_rows(data.columns(), n)?;
        let sort_keys = self.sort_keys_of(data)?;
        // Each partition's buffer is loaded once per batch and written back at its end.
        let mut buffers: HashMap<Vec<u8>, Buffer> = HashMap::new();
        let mut emitted: Emitted = Vec::new();
        for ((key, row), sk) in keys.into_iter().zip(rows).zip(sort_keys) {
            if !buffers.contains_key(&key) {
                self.store.set_current_key(&key)?;
                let loaded = self.load()?;
                buffers.insert(key.clone(), loaded);
            }
            if let Some(buffer) = buffers.get_mut(&key) {
                self.process(buffer, sk, row, &mut emitted);
            }
        }
        for (key, buffer) in buffers {
            self.store.set_current_key(&key)?;
            if buffer.is_empty() {
                self.top.clear(&mut self.store)?;
            } else {
                let rows = buffer.into_iter().flat_map(|(_, rows)| rows);
                self.top.set(&mut self.store, &encode_rows(rows))?;
            }
        }
        self.emit(emitted, out)
    }

    fn restore_rescaled(
        &mut self,
        _old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        // Everything is keyed state, which the runtime divides by key group.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of keys, each a one-byte sort key and a one-byte row.
    fn run(limit: u64, output_rank: bool, rows: &[(u8, u8)]) -> Vec<String> {
        let op = AppendOnlyTopN {
            name: "t".into(),
            input_schema: Arc::new(arrow::datatypes::Schema::empty()),
            output_schema: Arc::new(arrow::datatypes::Schema::empty()),
            partition_by: vec![],
            order_by: vec![],
            sort: RowConverter::new(vec![]).unwrap(),
            limit,
            output_rank,
            key_codec: RowCodec::new(vec![]),
            row_codec: RowCodec::new(vec![]),
            top: sluice_engine::KeyedStore::in_memory(
                128,
                sluice_engine::keyed::KeyGroupRange::all(128),
            )
            .value_state("t", None)
            .unwrap(),
            store: sluice_engine::KeyedStore::in_memory(
                128,
                sluice_engine::keyed::KeyGroupRange::all(128),
            ),
        };
        let mut buffer = Buffer::new();
        let mut out = Emitted::new();
        for (k, r) in rows {
            op.process(&mut buffer, vec![*k], vec![*r], &mut out);
        }
        out.iter()
            .map(|(k, r, n)| format!("{}{}@{n}", k.short_string(), r[0] as char))
            .collect()
    }

    #[test]
    fn with_row_numbers_every_shifted_rank_is_updated() {
        // Keys sort ascending; rows are letters.
        let lines = run(2, true, &[(5, b'a'), (3, b'b'), (4, b'c'), (9, b'd')]);
        assert_eq!(
            lines,
            ["+Ia@1", "-Ua@1", "+Ub@1", "+Ia@2", "-Ua@2", "+Uc@2"]
        );
    }

    #[test]
    fn without_row_numbers_the_row_pushed_out_is_deleted() {
        let lines = run(
            2,
            false,
            &[(5, b'a'), (3, b'b'), (4, b'c'), (4, b'e'), (1, b'f')],
        );
        // "e" ties with "c" and is not better than the worst: it does not enter.
        assert_eq!(
            lines,
            ["+Ia@1", "+Ib@1", "-Da@2", "+Ic@2", "-Dc@2", "+If@1"]
        );
    }
}
