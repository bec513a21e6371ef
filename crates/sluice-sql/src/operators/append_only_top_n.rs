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

use super::rank_rows::{Emitted, RankRows, TopNSpec};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::{RowCodec, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::collections::HashMap;
use std::sync::Arc;

/// Creates append-only Top-N operators.
pub struct AppendOnlyTopNFactory(pub TopNSpec);

impl OperatorFactory for AppendOnlyTopNFactory {
    fn name(&self) -> String {
        format!("Rank(rownum <= {})", self.0.limit)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let spec = &self.0;
        Ok(Box::new(AppendOnlyTopN {
            name: self.name(),
            partition_by: spec.partition_by.clone(),
            rank: spec.rank_rows(self.name())?,
            limit: spec.limit,
            output_rank: spec.output_rank,
            key_codec: spec.key_codec()?,
            top: store.value_state("top rows", spec.state_ttl)?,
            store,
        }))
    }
}

struct AppendOnlyTopN {
    name: String,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    rank: RankRows,
    limit: u64,
    output_rank: bool,
    key_codec: RowCodec,
    /// The current partition's kept rows, in rank order.
    top: ValueState<Vec<u8>>,
    store: KeyedStore,
}

/// A partition's buffer: entries of equal sort keys, best first.
type Buffer = Vec<(Vec<u8>, Vec<Vec<u8>>)>;

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
    /// The current partition's buffer, from state.
    fn load(&mut self) -> Result<Buffer> {
        let Some(stored) = self.top.get(&mut self.store)? else {
            return Ok(Vec::new());
        };
        let rows = decode_rows(&stored)?;
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let keys = self.rank.sort_keys(&refs)?;
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
        let rows = self.rank.row_codec.encode_rows(data.columns(), n)?;
        let sort_keys = self.rank.sort_keys_of(data)?;
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
        self.rank.emit(emitted, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of keys, each a one-byte sort key and a one-byte row.
    fn run(limit: u64, output_rank: bool, rows: &[(u8, u8)]) -> Vec<String> {
        let empty = Arc::new(arrow::datatypes::Schema::empty());
        let op = AppendOnlyTopN {
            name: "t".into(),
            partition_by: vec![],
            rank: RankRows::new("t".into(), empty.clone(), empty, vec![]).unwrap(),
            limit,
            output_rank,
            key_codec: RowCodec::new(vec![]),
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
