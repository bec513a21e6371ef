//! The regular (non-windowed) join: `L [LEFT|RIGHT|FULL] JOIN R ON L.k = R.k AND ...` over
//! append-only or updating inputs, with an updating result, as Flink's
//! `StreamingJoinOperator` runs it.
//!
//! Both inputs are hashed on the join key. Per key, each side keeps every row it holds in
//! keyed state (a map from the row to how many times it is there and, on an outer side, with
//! how many rows of the other side it joins), expiring with `table.exec.state.ttl`. A row
//! that arrives joins the other side's rows of its key for which the residual condition
//! holds, as Flink:
//!
//! - an insert (`+I`/`+U`) of an inner side emits the joined rows with its own kind when the
//!   other side is inner too, `+I` otherwise; an insert of an outer side with no match emits
//!   itself padded with NULLs (`+I`); an outer row of the other side that had no match so
//!   far takes back its padded row (`-D`) before its first joined row;
//! - a retraction (`-U`/`-D`) emits the joined rows it took part in with its own kind
//!   (`-D` when its side is outer), or its padded row (`-D`) if it had none; an outer row of
//!   the other side left with no match emits its padded row again (`+I`).
//!
//! The result is append-only only for an inner join of append-only inputs; otherwise it
//! is updating, and the planner tells sinks so.

use super::join_rows::{JoinInput, JoinKind, JoinedRows};
use arrow::array::{Array, ArrayRef};
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::keyed::{MapState, RowCodec};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;
use std::time::Duration;

/// Creates regular join operators.
pub struct RegularJoinFactory {
    pub kind: JoinKind,
    pub left: JoinInput,
    pub right: JoinInput,
    /// The joined schema (left columns, then right columns).
    pub schema: arrow::datatypes::SchemaRef,
    /// What a semi or anti join emits: the left input's columns.
    pub left_schema: arrow::datatypes::SchemaRef,
    /// The condition other than the key equality, over the joined schema.
    pub condition: Option<Arc<dyn datafusion_physical_expr::PhysicalExpr>>,
    /// `table.exec.state.ttl`: a row not updated for this long is forgotten.
    pub state_ttl: Option<Duration>,
}

impl OperatorFactory for RegularJoinFactory {
    fn name(&self) -> String {
        format!("Join({})", self.kind.sql())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let key_codecs = [self.left.key_codec(), self.right.key_codec()];
        if key_codecs[0].types() != key_codecs[1].types() {
            return Err(SluiceError::Plan(
                "internal: the keys of a join's inputs differ in type".into(),
            ));
        }
        let rows = [
            store.map_state("left rows", self.state_ttl)?,
            store.map_state("right rows", self.state_ttl)?,
        ];
        Ok(Box::new(RegularJoin {
            kind: self.kind,
            inputs: [self.left.clone(), self.right.clone()],
            key_codecs,
            joined: JoinedRows {
                left: self.left.row_codec(),
                right: self.right.row_codec(),
                schema: self.schema.clone(),
                condition: self.condition.clone(),
            },
            rows,
            store,
            left_schema: self.left_schema.clone(),
        }))
    }
}

/// How often a row is in a side's state, and (outer sides) how many rows it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Held {
    count: u32,
    associations: u32,
}

impl Held {
    fn encode(self) -> Vec<u8> {
        let mut v = self.count.to_le_bytes().to_vec();
        v.extend_from_slice(&self.associations.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Held> {
        match b {
            [c0, c1, c2, c3, a0, a1, a2, a3] => Ok(Held {
                count: u32::from_le_bytes([*c0, *c1, *c2, *c3]),
                associations: u32::from_le_bytes([*a0, *a1, *a2, *a3]),
            }),
            _ => Err(SluiceError::Runtime(
                "keyed state of a join holds a bad row count".into(),
            )),
        }
    }
}

struct RegularJoin {
    kind: JoinKind,
    inputs: [JoinInput; 2],
    key_codecs: [RowCodec; 2],
    joined: JoinedRows,
    /// Each side's rows of the current key: row -> [`Held`].
    rows: [MapState<Vec<u8>, Vec<u8>>; 2],
    store: KeyedStore,
    left_schema: arrow::datatypes::SchemaRef,
}

const LEFT: usize = 0;

/// The most candidate pairs a batch evaluates at once (a bound on memory: a batch whose rows
/// meet more is taken in parts; a single row meets all its matches at once).
const MAX_PAIRS: usize = 64 * 1024;

/// A changelog being built: (kind, left row, right row), `None` for a padded side.
type Emitted = Vec<(RowKind, Option<Vec<u8>>, Option<Vec<u8>>)>;

impl RegularJoin {
    fn outer(&self, side: usize) -> bool {
        if side == LEFT {
            self.kind.left_outer()
        } else {
            self.kind.right_outer()
        }
    }

    fn held(&mut self, side: usize, row: &[u8]) -> Result<Held> {
        let state = self.rows[side];
        state
            .get(&mut self.store, &row.to_vec())?
            .map(|b| Held::decode(&b))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn set_held(&mut self, side: usize, row: &[u8], held: Held) -> Result<()> {
        let state = self.rows[side];
        if held.count == 0 {
            state.remove(&mut self.store, &row.to_vec())
        } else {
            state.put(&mut self.store, &row.to_vec(), &held.encode())
        }
    }

    fn emit(&self, out: &mut Output, emitted: Emitted) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let null_left = self.joined.left.null_row();
        let null_right = self.joined.right.null_row();
        let lefts: Vec<&[u8]> = emitted
            .iter()
            .map(|(_, l, _)| l.as_deref().unwrap_or(&null_left))
            .collect();
        let rights: Vec<&[u8]> = emitted
            .iter()
            .map(|(_, _, r)| r.as_deref().unwrap_or(&null_right))
            .collect();
        let data = self.joined.pairs(&lefts, &rights)?;
        let kinds: Arc<[RowKind]> = emitted.iter().map(|(k, _, _)| *k).collect();
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}

impl RegularJoin {
    /// A semi or anti join, as Flink's `StreamingSemiAntiJoinOperator`: a left row is emitted
    /// (with its kind) when it arrives with a match (semi) or without one (anti); a right row
    /// that gives a left row its first match emits it (semi: with the right row's kind) or
    /// takes it back (anti: `-D`), and one that takes its last match away does the opposite.
    fn semi_anti(
        &mut self,
        side: usize,
        batch: &ChangeBatch,
        keys: &[Vec<u8>],
        rows: &[Vec<u8>],
        candidates: &[(usize, Vec<u8>)],
        matched: &[bool],
    ) -> Result<Vec<(RowKind, Vec<u8>)>> {
        let anti = self.kind == JoinKind::Anti;
        let mut emitted = Vec::new();
        let mut next = 0;
        for (i, row) in rows.iter().enumerate() {
            self.store.set_current_key(&keys[i])?;
            let mut associated: Vec<(&[u8], Held)> = Vec::new();
            while next < candidates.len() && candidates[next].0 == i {
                if matched[next] {
                    let other = candidates[next].1.as_slice();
                    let held = if side == LEFT {
                        Held::default()
                    } else {
                        self.held(LEFT, other)?
                    };
                    associated.push((other, held));
                }
                next += 1;
            }
            let kind = batch.kind(i);
            if side == LEFT {
                if associated.is_empty() == anti {
                    emitted.push((kind, row.clone()));
                }
                let mut held = self.held(LEFT, row)?;
                if kind.is_addition() {
                    held.count += 1;
                    held.associations = associated.len() as u32;
                } else {
                    held.count = held.count.saturating_sub(1);
                }
                self.set_held(LEFT, row, held)?;
                continue;
            }
            let mut held = self.held(side, row)?;
            if kind.is_addition() {
                held.count += 1;
                self.set_held(side, row, held)?;
                for (left, h) in &associated {
                    if h.associations == 0 {
                        let k = if anti { RowKind::Delete } else { kind };
                        emitted.push((k, left.to_vec()));
                    }
                    let updated = Held {
                        associations: h.associations + 1,
                        ..*h
                    };
                    self.set_held(LEFT, left, updated)?;
                }
            } else {
                if held.count > 0 {
                    held.count -= 1;
                    self.set_held(side, row, held)?;
                }
                for (left, h) in &associated {
                    if h.associations == 1 {
                        let k = if anti { RowKind::Insert } else { kind };
                        emitted.push((k, left.to_vec()));
                    }
                    let updated = Held {
                        associations: h.associations.saturating_sub(1),
                        ..*h
                    };
                    self.set_held(LEFT, left, updated)?;
                }
            }
        }
        Ok(emitted)
    }

    fn emit_left(&self, out: &mut Output, emitted: Vec<(RowKind, Vec<u8>)>) -> Result<()> {
        if emitted.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = emitted.iter().map(|(_, r)| r.as_slice()).collect();
        let data = arrow::record_batch::RecordBatch::try_new(
            self.left_schema.clone(),
            self.joined.left.decode(&refs)?,
        )
        .map_err(|e| SluiceError::Runtime(format!("a {} join's row: {e}", self.kind.sql())))?;
        let kinds: Arc<[RowKind]> = emitted.iter().map(|(k, _)| *k).collect();
        out.batch(ChangeBatch::new(data, Some(kinds)));
        Ok(())
    }
}

impl Operator for RegularJoin {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let side = if input == 0 { LEFT } else { 1 };
        let other = 1 - side;
        let data = &batch.data;
        let n = data.num_rows();
        let codec = if side == LEFT {
            &self.joined.left
        } else {
            &self.joined.right
        };
        let rows = codec.encode_rows(&data.columns()[..self.inputs[side].width], n)?;
        let key_columns: Vec<ArrayRef> = self.inputs[side]
            .keys
            .iter()
            .map(|&i| data.column(i).clone())
            .collect();
        let keys = self.key_codecs[side].encode_rows(&key_columns, n)?;

        // The other side's rows of each row's key (it does not change in this batch, only
        // the association counts do), and which of them satisfy the condition, evaluated
        // once for the whole batch. A NULL key joins nothing.
        let mut candidates: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if i > 0 && candidates.len() >= MAX_PAIRS {
                // Too many pairs for one pass: the rows so far, then the rest.
                self.process_batch(input, batch.slice(0, i), out)?;
                return self.process_batch(input, batch.slice(i, n - i), out);
            }
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            self.store.set_current_key(key)?;
            for (row, held) in self.rows[other].entries(&mut self.store)? {
                let count = Held::decode(&held)?.count;
                for _ in 0..count {
                    candidates.push((i, row.clone()));
                }
            }
        }
        let mut matched = vec![false; candidates.len()];
        if !candidates.is_empty() {
            let mine: Vec<&[u8]> = candidates
                .iter()
                .map(|(i, _)| rows[*i].as_slice())
                .collect();
            let theirs: Vec<&[u8]> = candidates.iter().map(|(_, r)| r.as_slice()).collect();
            let pairs = if side == LEFT {
                self.joined.pairs(&mine, &theirs)?
            } else {
                self.joined.pairs(&theirs, &mine)?
            };
            for (m, v) in matched.iter_mut().zip(self.joined.matches(&pairs)?.iter()) {
                *m = v == Some(true);
            }
        }

        if matches!(self.kind, JoinKind::Semi | JoinKind::Anti) {
            let emitted = self.semi_anti(side, &batch, &keys, &rows, &candidates, &matched)?;
            return self.emit_left(out, emitted);
        }
        let pair = |mine: &[u8], theirs: &[u8]| -> (Option<Vec<u8>>, Option<Vec<u8>>) {
            if side == LEFT {
                (Some(mine.to_vec()), Some(theirs.to_vec()))
            } else {
                (Some(theirs.to_vec()), Some(mine.to_vec()))
            }
        };
        let padded = |row: &[u8], of: usize| -> (Option<Vec<u8>>, Option<Vec<u8>>) {
            if of == LEFT {
                (Some(row.to_vec()), None)
            } else {
                (None, Some(row.to_vec()))
            }
        };
        let (input_outer, other_outer) = (self.outer(side), self.outer(other));
        let mut emitted: Emitted = Vec::new();
        let mut next = 0;
        for i in 0..n {
            // This row's matches, with the other side's association counts as they are now.
            let mut associated: Vec<(&[u8], Held)> = Vec::new();
            self.store.set_current_key(&keys[i])?;
            while next < candidates.len() && candidates[next].0 == i {
                if matched[next] {
                    let other_row = candidates[next].1.as_slice();
                    let held = self.held(other, other_row)?;
                    associated.push((other_row, held));
                }
                next += 1;
            }
            let row = rows[i].as_slice();
            let kind = batch.kind(i);
            if kind.is_addition() {
                if other_outer {
                    for (o, held) in &associated {
                        if held.associations == 0 {
                            let (l, r) = padded(o, other);
                            emitted.push((RowKind::Delete, l, r));
                        }
                        let updated = Held {
                            associations: held.associations + 1,
                            ..*held
                        };
                        self.set_held(other, o, updated)?;
                    }
                }
                let out_kind = if input_outer || other_outer {
                    RowKind::Insert
                } else {
                    kind
                };
                for (o, _) in &associated {
                    let (l, r) = pair(row, o);
                    emitted.push((out_kind, l, r));
                }
                if input_outer && associated.is_empty() {
                    let (l, r) = padded(row, side);
                    emitted.push((RowKind::Insert, l, r));
                }
                let mut held = self.held(side, row)?;
                held.count += 1;
                held.associations = associated.len() as u32;
                self.set_held(side, row, held)?;
            } else {
                let mut held = self.held(side, row)?;
                if held.count > 0 {
                    held.count -= 1;
                    self.set_held(side, row, held)?;
                }
                if associated.is_empty() {
                    if input_outer {
                        let (l, r) = padded(row, side);
                        emitted.push((RowKind::Delete, l, r));
                    }
                } else {
                    let out_kind = if input_outer { RowKind::Delete } else { kind };
                    for (o, _) in &associated {
                        let (l, r) = pair(row, o);
                        emitted.push((out_kind, l, r));
                    }
                    if other_outer {
                        for (o, held) in &associated {
                            if held.associations == 1 {
                                let (l, r) = padded(o, other);
                                emitted.push((RowKind::Insert, l, r));
                            }
                            let updated = Held {
                                associations: held.associations.saturating_sub(1),
                                ..*held
                            };
                            self.set_held(other, o, updated)?;
                        }
                    }
                }
            }
        }
        self.emit(out, emitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
    use arrow::record_batch::RecordBatch;
    use sluice_common::Message;

    fn ctx() -> SubtaskContext {
        crate::operators::test_context()
    }

    fn schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(format!("{prefix}v"), DataType::Int64, true),
        ]))
    }

    fn join(kind: JoinKind) -> Box<dyn Operator> {
        let input = |p| JoinInput {
            schema: schema(p),
            width: 2,
            keys: vec![0],
        };
        let mut fields: Vec<Field> = Vec::new();
        for p in ["l", "r"] {
            fields.extend(schema(p).fields().iter().map(|f| f.as_ref().clone()));
        }
        RegularJoinFactory {
            kind,
            left: input("l"),
            right: input("r"),
            schema: Arc::new(Schema::new(fields)),
            left_schema: schema("l"),
            condition: None,
            state_ttl: None,
        }
        .create(&ctx())
        .unwrap()
    }

    fn rows(prefix: &str, rows: &[(RowKind, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            schema(prefix),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        ChangeBatch::new(data, Some(rows.iter().map(|r| r.0).collect()))
    }

    /// The changelog as `+I[lk, lv | rk, rv]` (`-` for NULL).
    fn changelog(out: &mut Output) -> Vec<String> {
        let mut lines = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let cell = |c: usize, i: usize| {
                    let a = b.data.column(c);
                    if a.is_null(i) {
                        "-".to_string()
                    } else {
                        a.as_primitive::<Int64Type>().value(i).to_string()
                    }
                };
                for i in 0..b.num_rows() {
                    lines.push(format!(
                        "{}[{},{}|{},{}]",
                        b.kind(i).short_string(),
                        cell(0, i),
                        cell(1, i),
                        cell(2, i),
                        cell(3, i)
                    ));
                }
            }
        }
        lines
    }

    use RowKind::{Delete as D, Insert as I, UpdateAfter as UA, UpdateBefore as UB};

    #[test]
    fn an_inner_join_passes_on_the_kinds_of_its_inputs() {
        let mut op = join(JoinKind::Inner);
        let mut out = Output::default();
        op.process_batch(0, rows("l", &[(I, 1, 10), (I, 1, 11)]), &mut out)
            .unwrap();
        op.process_batch(1, rows("r", &[(I, 1, 20), (I, 2, 30)]), &mut out)
            .unwrap();
        op.process_batch(0, rows("l", &[(UB, 1, 10), (UA, 1, 12)]), &mut out)
            .unwrap();
        assert_eq!(
            changelog(&mut out),
            [
                "+I[1,10|1,20]",
                "+I[1,11|1,20]",
                "-U[1,10|1,20]",
                "+U[1,12|1,20]"
            ]
        );
    }

    #[test]
    fn an_outer_row_is_padded_until_it_joins_and_again_when_its_last_match_goes() {
        let mut op = join(JoinKind::Left);
        let mut out = Output::default();
        op.process_batch(0, rows("l", &[(I, 1, 10)]), &mut out)
            .unwrap();
        assert_eq!(changelog(&mut out), ["+I[1,10|-,-]"]);
        op.process_batch(1, rows("r", &[(I, 1, 20), (I, 1, 21)]), &mut out)
            .unwrap();
        assert_eq!(
            changelog(&mut out),
            ["-D[1,10|-,-]", "+I[1,10|1,20]", "+I[1,10|1,21]"]
        );
        op.process_batch(1, rows("r", &[(D, 1, 20), (D, 1, 21)]), &mut out)
            .unwrap();
        assert_eq!(
            changelog(&mut out),
            ["-D[1,10|1,20]", "-D[1,10|1,21]", "+I[1,10|-,-]"]
        );
        // A right row without a left match in a left join: nothing.
        op.process_batch(1, rows("r", &[(I, 5, 50)]), &mut out)
            .unwrap();
        assert!(changelog(&mut out).is_empty());
        // The left row goes: its padded row is taken back.
        op.process_batch(0, rows("l", &[(D, 1, 10)]), &mut out)
            .unwrap();
        assert_eq!(changelog(&mut out), ["-D[1,10|-,-]"]);
    }

    #[test]
    fn a_full_join_pads_both_sides_and_counts_duplicates() {
        let mut op = join(JoinKind::Full);
        let mut out = Output::default();
        op.process_batch(1, rows("r", &[(I, 1, 20), (I, 1, 20)]), &mut out)
            .unwrap();
        assert_eq!(changelog(&mut out), ["+I[-,-|1,20]", "+I[-,-|1,20]"]);
        op.process_batch(0, rows("l", &[(I, 1, 10)]), &mut out)
            .unwrap();
        // Both copies of the right row join; the padded row is taken back once per copy.
        assert_eq!(
            changelog(&mut out),
            [
                "-D[-,-|1,20]",
                "-D[-,-|1,20]",
                "+I[1,10|1,20]",
                "+I[1,10|1,20]"
            ]
        );
    }

    #[test]
    fn a_semi_join_emits_a_left_row_on_its_first_match_and_an_anti_join_until_then() {
        let mut semi = join(JoinKind::Semi);
        let mut anti = join(JoinKind::Anti);
        let mut out = Output::default();
        for op in [&mut semi, &mut anti] {
            op.process_batch(0, rows("l", &[(I, 1, 10)]), &mut out)
                .unwrap();
            op.process_batch(1, rows("r", &[(I, 1, 20), (I, 1, 21)]), &mut out)
                .unwrap();
            op.process_batch(1, rows("r", &[(D, 1, 20), (D, 1, 21)]), &mut out)
                .unwrap();
        }
        // Semi: in with the first match, out with the last; anti: the other way round.
        assert_eq!(
            changelog_left(&mut out),
            ["+I[1,10]", "-D[1,10]", "+I[1,10]", "-D[1,10]", "+I[1,10]"]
        );
    }

    /// A semi or anti join's changelog (left columns only).
    fn changelog_left(out: &mut Output) -> Vec<String> {
        let mut lines = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                for i in 0..b.num_rows() {
                    let v = |c: usize| b.data.column(c).as_primitive::<Int64Type>().value(i);
                    lines.push(format!("{}[{},{}]", b.kind(i).short_string(), v(0), v(1)));
                }
            }
        }
        lines
    }

    #[test]
    fn a_batch_with_more_pairs_than_the_bound_is_joined_in_parts_with_the_same_rows() {
        let mut op = join(JoinKind::Left);
        let mut out = Output::default();
        let lefts: Vec<(RowKind, i64, i64)> = (0..300).map(|v| (I, 1, v)).collect();
        op.process_batch(0, rows("l", &lefts), &mut out).unwrap();
        assert_eq!(changelog(&mut out).len(), 300); // all padded
        let rights: Vec<(RowKind, i64, i64)> = (0..300).map(|v| (I, 1, 1000 + v)).collect();
        const { assert!(300 * 300 > MAX_PAIRS) };
        op.process_batch(1, rows("r", &rights), &mut out).unwrap();
        let lines = changelog(&mut out);
        // Each padded left row taken back once, then every pair once.
        assert_eq!(lines.iter().filter(|l| l.starts_with("-D")).count(), 300);
        assert_eq!(lines.iter().filter(|l| l.starts_with("+I")).count(), 90_000);
        let distinct: std::collections::HashSet<&String> = lines.iter().collect();
        assert_eq!(distinct.len(), 90_300);
    }
}
