//! Splitting a batch over the subtasks of the next node: by key group, round robin or all to one.

use crate::keyed::{key_group_of, KeyGroupRange, RowCodec};
use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use sluice_common::{ChangeBatch, Result, RowKind};
use std::sync::Arc;

/// Sends every row to the subtask (of `n`) that owns the key group of its key columns (see
/// [`crate::keyed::key_group`]): the subtask whose keyed state holds that key. The same key
/// always goes to the same subtask, in every run and every version.
pub fn hash_targets(
    batch: &ChangeBatch,
    key_columns: &[usize],
    max_parallelism: usize,
    n: usize,
) -> Result<Vec<u32>> {
    assert!(n > 0 && n <= max_parallelism);
    let rows = batch.num_rows();
    // No key columns: every row has the empty key, and goes to the owner of its key group.
    let columns: Vec<_> = key_columns
        .iter()
        .map(|&i| batch.data.column(i).clone())
        .collect();
    let codec = RowCodec::new(columns.iter().map(|c| c.data_type().clone()).collect());
    let mut targets = Vec::with_capacity(rows);
    codec.for_each_row(&columns, rows, |_, key| {
        let group = key_group_of(key, max_parallelism);
        targets.push(KeyGroupRange::subtask_of(group, max_parallelism, n) as u32);
    })?;
    Ok(targets)
}

/// Splits `batch` into one batch per subtask following `targets` (a subtask index per row).
/// Subtasks that get no row get `None`.
pub fn split_by_target(
    batch: &ChangeBatch,
    targets: &[u32],
    n: usize,
) -> Result<Vec<Option<ChangeBatch>>> {
    assert_eq!(targets.len(), batch.num_rows());
    let mut indexes: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, &t) in targets.iter().enumerate() {
        indexes[t as usize].push(row as u32);
    }
    let mut out = Vec::with_capacity(n);
    for idx in indexes {
        if idx.is_empty() {
            out.push(None);
            continue;
        }
        if idx.len() == batch.num_rows() {
            out.push(Some(batch.clone()));
            continue;
        }
        let kinds: Option<Arc<[RowKind]>> = batch
            .kinds
            .as_ref()
            .map(|k| idx.iter().map(|&i| k[i as usize]).collect());
        let data = take_record_batch(&batch.data, &UInt32Array::from(idx))?;
        out.push(Some(ChangeBatch::new(data, kinds)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    fn batch(keys: &[&str]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let v: Vec<i64> = (0..keys.len() as i64).collect();
        ChangeBatch::inserts(
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(keys.to_vec())),
                    Arc::new(Int64Array::from(v)),
                ],
            )
            .unwrap(),
        )
    }

    #[test]
    fn equal_keys_go_to_the_same_subtask_and_no_row_is_lost() {
        let b = batch(&["a", "b", "a", "c", "b", "a"]);
        let t = hash_targets(&b, &[0], 128, 3).unwrap();
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            let mut key = vec![1u8];
            key.extend_from_slice(&(k.len() as u32).to_le_bytes());
            key.extend_from_slice(k.as_bytes());
            let owner = KeyGroupRange::subtask_of(key_group_of(&key, 128), 128, 3);
            assert_eq!(
                t[[0, 1, 3][i]] as usize,
                owner,
                "{k} goes to the owner of its key group"
            );
        }
        assert_eq!(t[0], t[2]);
        assert_eq!(t[0], t[5]);
        assert_eq!(t[1], t[4]);
        let parts = split_by_target(&b, &t, 3).unwrap();
        let total: usize = parts.iter().flatten().map(|p| p.num_rows()).sum();
        assert_eq!(total, 6);
    }
}
