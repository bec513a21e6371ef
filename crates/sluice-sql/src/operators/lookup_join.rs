//! The lookup join: `L [LEFT] JOIN t FOR SYSTEM_TIME AS OF L.proc_time ON L.k = t.k`, as
//! Flink's `LookupJoinRunner`. Each row of `L` joins the rows the table `t` has for its key
//! when the row is processed: the join asks the table's connector (a [`LookupSource`]), through
//! a cache if the table's options ask for one ([`super::lookup_cache`]). Rows that fail the
//! rest of the condition do not join; a left join pads a row that joins nothing with NULLs.
//!
//! It keeps no state: it is chained to its input, and the output keeps each row's kind and
//! the input's watermarks. Keys of one batch are looked up once each.

use super::df;
use super::join_rows::{with_kinds, JoinKind, JoinedRows};
use super::lookup_cache::{KeyRows, LookupCache};
use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::RowCodec;
use sluice_engine::{
    LookupFactory, LookupSource, Operator, OperatorFactory, Output, SubtaskContext,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Creates lookup join operators.
pub struct LookupJoinFactory {
    /// `Inner` or `Left`.
    pub kind: JoinKind,
    /// The table's connector.
    pub lookup: Arc<dyn LookupFactory>,
    /// The left input's schema.
    pub left_schema: SchemaRef,
    /// The key: one expression over the left input per key column of the table, of that
    /// column's type.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The table's columns (what a lookup returns).
    pub right_schema: SchemaRef,
    /// The joined schema (left columns, then the table's).
    pub schema: SchemaRef,
    /// The condition other than the key equality, over the joined schema.
    pub condition: Option<Arc<dyn PhysicalExpr>>,
}

impl OperatorFactory for LookupJoinFactory {
    fn name(&self) -> String {
        format!("LookupJoin({}, {})", self.kind.sql(), self.lookup.name())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        if !matches!(self.kind, JoinKind::Inner | JoinKind::Left) {
            return Err(SluiceError::Plan(format!(
                "internal: a lookup join is INNER or LEFT, not {}",
                self.kind.sql()
            )));
        }
        let codec = |s: &SchemaRef| {
            RowCodec::new(s.fields().iter().map(|f| f.data_type().clone()).collect())
        };
        let key_types = self
            .left_keys
            .iter()
            .map(|k| k.data_type(&self.left_schema).map_err(df))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(LookupJoin {
            outer: self.kind == JoinKind::Left,
            source: self.lookup.create(ctx)?,
            cache: self.lookup.cache().map(LookupCache::new),
            left_keys: self.left_keys.clone(),
            key_codec: RowCodec::new(key_types),
            rows: JoinedRows {
                left: codec(&self.left_schema),
                right: codec(&self.right_schema),
                schema: self.schema.clone(),
                condition: self.condition.clone(),
            },
        }))
    }
}

struct LookupJoin {
    outer: bool,
    source: Box<dyn LookupSource>,
    cache: Option<LookupCache>,
    left_keys: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: RowCodec,
    rows: JoinedRows,
}

impl LookupJoin {
    /// The table's rows (encoded) for each row's key; `None` for a NULL key.
    fn rows_by_key(&mut self, batch: &RecordBatch) -> Result<Vec<Option<KeyRows>>> {
        let n = batch.num_rows();
        let key_columns: Vec<ArrayRef> = self
            .left_keys
            .iter()
            .map(|k| k.evaluate(batch).and_then(|v| v.into_array(n)).map_err(df))
            .collect::<Result<_>>()?;
        let keys = self.key_codec.encode_rows(&key_columns, n)?;
        let now = Instant::now();
        let mut found: HashMap<&[u8], KeyRows> = HashMap::new();
        // The first row of each key neither cached nor seen in this batch.
        let mut missing: Vec<u32> = Vec::new();
        let mut missing_keys: HashMap<&[u8], usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            if key_columns.iter().any(|c| c.is_null(i)) || found.contains_key(key.as_slice()) {
                continue;
            }
            if let Some(rows) = self.cache.as_mut().and_then(|c| c.get(key, now)) {
                found.insert(key, rows);
            } else if !missing_keys.contains_key(key.as_slice()) {
                missing_keys.insert(key, missing.len());
                missing.push(i as u32);
            }
        }
        if !missing.is_empty() {
            let indices = UInt32Array::from(missing.clone());
            let wanted = key_columns
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let (table_rows, matched) = self.source.lookup(&wanted)?;
            let encoded = self
                .rows
                .right
                .encode_rows(table_rows.columns(), table_rows.num_rows())?;
            let mut per_key: Vec<Vec<Vec<u8>>> = vec![Vec::new(); missing.len()];
            for (row, &m) in encoded.into_iter().zip(&matched) {
                per_key
                    .get_mut(m as usize)
                    .ok_or_else(|| {
                        SluiceError::Runtime("a lookup matched a key it was not asked for".into())
                    })?
                    .push(row);
            }
            for (&i, rows) in missing.iter().zip(per_key) {
                let key = keys[i as usize].as_slice();
                let rows = Arc::new(rows);
                if let Some(cache) = self.cache.as_mut() {
                    cache.put(key.to_vec(), rows.clone(), now);
                }
                found.insert(key, rows);
            }
        }
        Ok((0..n)
            .map(|i| {
                if key_columns.iter().any(|c| c.is_null(i)) {
                    None
                } else {
                    found.get(keys[i].as_slice()).cloned()
                }
            })
            .collect())
    }
}

impl Operator for LookupJoin {
    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        if n == 0 {
            return Ok(());
        }
        let found = self.rows_by_key(data)?;
        // Every (left row, table row) pair, then those that meet the condition.
        let mut pair_left: Vec<u32> = Vec::new();
        let mut pair_right: Vec<&[u8]> = Vec::new();
        for (i, rows) in found.iter().enumerate() {
            for r in rows.iter().flat_map(|rows| rows.iter()) {
                pair_left.push(i as u32);
                pair_right.push(r);
            }
        }
        let left_rows = UInt32Array::from(pair_left.clone());
        let mut columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &left_rows, None))
            .collect::<std::result::Result<_, _>>()?;
        columns.extend(self.rows.right.decode(&pair_right)?);
        let pairs = RecordBatch::try_new_with_options(
            self.rows.schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(pair_left.len())),
        )?;
        let mask = self.rows.matches(&pairs)?;
        let joined = filter_record_batch(&pairs, &mask)?;
        // In the input's order: each row's joined rows, or the row padded.
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        let mut padded: Vec<u32> = Vec::new();
        let mut next_joined = 0;
        let mut pair = 0;
        for i in 0..n {
            let mut any = false;
            while pair < pair_left.len() && pair_left[pair] as usize == i {
                if mask.value(pair) {
                    order.push((0, next_joined));
                    next_joined += 1;
                    kinds.push(batch.kind(i));
                    any = true;
                }
                pair += 1;
            }
            if !any && self.outer {
                order.push((1, padded.len()));
                padded.push(i as u32);
                kinds.push(batch.kind(i));
            }
        }
        if order.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(padded);
        let left: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        let padded = self.rows.pad_left(left, indices.len())?;
        let output = self.rows.interleaved(joined, padded, &order)?;
        out.batch(with_kinds(output, kinds));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion_physical_expr::expressions::Column;
    use sluice_common::Message;
    use sluice_engine::LookupCacheConfig;
    use std::sync::Mutex;

    /// A table of (k, name): key 1 has two rows, key 2 one, others none. Counts the keys it
    /// is asked for.
    struct Table(Arc<Mutex<Vec<i64>>>, Option<LookupCacheConfig>);

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    impl LookupFactory for Table {
        fn name(&self) -> String {
            "table".into()
        }
        fn cache(&self) -> Option<LookupCacheConfig> {
            self.1.clone()
        }
        fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn LookupSource>> {
            Ok(Box::new(TableSource(self.0.clone())))
        }
    }

    struct TableSource(Arc<Mutex<Vec<i64>>>);

    impl LookupSource for TableSource {
        fn lookup(&mut self, keys: &[ArrayRef]) -> Result<(RecordBatch, Vec<u32>)> {
            let keys = keys[0].as_primitive::<Int64Type>();
            let (mut ks, mut names, mut matched) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..keys.len() {
                let k = keys.value(i);
                self.0.lock().unwrap().push(k);
                let found: &[&str] = match k {
                    1 => &["a", "b"],
                    2 => &["c"],
                    _ => &[],
                };
                for n in found {
                    ks.push(k);
                    names.push(*n);
                    matched.push(i as u32);
                }
            }
            let batch = RecordBatch::try_new(
                table_schema(),
                vec![
                    Arc::new(Int64Array::from(ks)),
                    Arc::new(StringArray::from(names)),
                ],
            )?;
            Ok((batch, matched))
        }
    }

    fn join(
        kind: JoinKind,
        cache: Option<LookupCacheConfig>,
    ) -> (Box<dyn Operator>, Arc<Mutex<Vec<i64>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let left = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut fields: Vec<Field> = left.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(table_schema().fields().iter().map(|f| f.as_ref().clone()));
        let factory = LookupJoinFactory {
            kind,
            lookup: Arc::new(Table(asked.clone(), cache)),
            left_schema: left,
            left_keys: vec![Arc::new(Column::new("id", 0))],
            right_schema: table_schema(),
            schema: Arc::new(Schema::new(fields)),
            condition: None,
        };
        (
            factory.create(&crate::operators::test_context()).unwrap(),
            asked,
        )
    }

    fn ids(ids: &[Option<i64>], kinds: Option<&[RowKind]>) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap();
        ChangeBatch::new(data, kinds.map(|k| k.into()))
    }

    fn lines(out: &mut Output) -> Vec<String> {
        let mut v = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                for i in 0..b.num_rows() {
                    let id = b.data.column(0).as_primitive::<Int64Type>();
                    let name = b.data.column(2).as_string::<i32>();
                    v.push(format!(
                        "{} {}|{}",
                        b.kind(i).short_string(),
                        if id.is_null(i) {
                            "-".into()
                        } else {
                            id.value(i).to_string()
                        },
                        if name.is_null(i) { "-" } else { name.value(i) }
                    ));
                }
            }
        }
        v
    }

    #[test]
    fn rows_join_what_the_table_has_in_input_order_and_keys_are_asked_once_a_batch() {
        let (mut op, asked) = join(JoinKind::Left, None);
        let mut out = Output::default();
        op.process_batch(
            0,
            ids(&[Some(2), Some(1), None, Some(3), Some(1)], None),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            lines(&mut out),
            vec!["+I 2|c", "+I 1|a", "+I 1|b", "+I -|-", "+I 3|-", "+I 1|a", "+I 1|b"]
        );
        assert_eq!(*asked.lock().unwrap(), vec![2, 1, 3]);
        // An inner join drops what found nothing and keeps the rows' kinds.
        let (mut op, _) = join(JoinKind::Inner, None);
        op.process_batch(
            0,
            ids(
                &[Some(3), Some(2)],
                Some(&[RowKind::Insert, RowKind::Delete]),
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(lines(&mut out), vec!["-D 2|c"]);
    }

    #[test]
    fn a_cache_answers_keys_it_holds() {
        let cache = LookupCacheConfig {
            max_rows: 10,
            expire_after_write: None,
            expire_after_access: None,
            cache_missing_key: true,
        };
        let (mut op, asked) = join(JoinKind::Inner, Some(cache));
        let mut out = Output::default();
        op.process_batch(0, ids(&[Some(1), Some(3)], None), &mut out)
            .unwrap();
        op.process_batch(0, ids(&[Some(3), Some(1), Some(2)], None), &mut out)
            .unwrap();
        assert_eq!(
            lines(&mut out),
            vec!["+I 1|a", "+I 1|b", "+I 1|a", "+I 1|b", "+I 2|c"]
        );
        assert_eq!(*asked.lock().unwrap(), vec![1, 3, 2]);
    }
}
