//! The event-time temporal join: `L [LEFT] JOIN V FOR SYSTEM_TIME AS OF L.rt ON L.k = V.k`,
//! as Flink's `TemporalRowTimeJoinOperator` runs it. Each left row joins the version of the
//! versioned table `V` (a table with a primary key and a time attribute: an upsert table, a
//! changelog, or a deduplicating view) that was valid at the left row's time.
//!
//! Both inputs are hashed on the join key. Per key, in keyed state:
//! - the left rows wait, by event time, until the watermark reaches their time (versions
//!   up to then may still arrive); each keeps its row kind and its arrival number, so that
//!   the rows one watermark releases are emitted in the order they arrived, as Flink's;
//! - the versions are kept by their time, one per time (a later one at the same time
//!   replaces it). A delete (`-D`) is a version too: from its time on, no row joins. An
//!   update's old value (`-U`) is not a version (Flink asks the versioned table for its new
//!   values only);
//! - one event-time timer per key, at the earliest time that waits. When it fires, every
//!   left row at or before the watermark joins the latest version at or before its own time,
//!   if that version is not a delete and the rest of the condition holds; otherwise an inner
//!   join drops the row and a left join pads it with NULLs. Then the versions that no left
//!   row can need any more go: all before the latest one at or before the watermark.
//!
//! The output keeps each left row's kind, and its watermark is the input watermark: a left
//! row is emitted only when the watermark has reached its time.

use super::interval_join::times;
use super::join_rows::{with_kinds, JoinInput, JoinKind, JoinedRows};
use arrow::array::{Array, ArrayRef};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, RowKind, SluiceError, MIN_WATERMARK};
use sluice_engine::keyed::{RowCodec, TimeOrderedState, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;
use std::time::Duration;

/// Creates event-time temporal join operators.
pub struct TemporalJoinFactory {
    /// `Inner` or `Left`.
    pub kind: JoinKind,
    /// The probe side (its rows are joined as of their time).
    pub left: JoinInput,
    /// The versioned table.
    pub right: JoinInput,
    /// The time attributes of the left and the right input (columns of their schemas).
    pub times: (usize, usize),
    /// The joined schema (left columns, then right columns).
    pub schema: SchemaRef,
    /// The condition other than the key equality, over the joined schema.
    pub condition: Option<Arc<dyn PhysicalExpr>>,
    /// `table.exec.state.ttl`: how long a left row or a version is kept after it was
    /// written (`None`: until the watermark lets it go).
    pub state_ttl: Option<Duration>,
}

impl OperatorFactory for TemporalJoinFactory {
    fn name(&self) -> String {
        format!("TemporalJoin({})", self.kind.sql())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        if !matches!(self.kind, JoinKind::Inner | JoinKind::Left) {
            return Err(SluiceError::Plan(format!(
                "internal: a temporal join is INNER or LEFT, not {}",
                self.kind.sql()
            )));
        }
        let mut store = ctx.keyed_store()?;
        let ttl = self.state_ttl;
        Ok(Box::new(TemporalJoin {
            name: self.name(),
            outer: self.kind == JoinKind::Left,
            times: self.times,
            key_codec: self.left.key_codec(),
            right_key_codec: self.right.key_codec(),
            inputs: [self.left.clone(), self.right.clone()],
            rows: JoinedRows {
                left: self.left.row_codec(),
                right: self.right.row_codec(),
                schema: self.schema.clone(),
                condition: self.condition.clone(),
            },
            left_rows: store.time_ordered_state("left rows", ttl)?,
            next_index: store.value_state("next left index", ttl)?,
            versions: store.time_ordered_state("versions", ttl)?,
            timer: store.value_state("timer", ttl)?,
            store,
            watermark: MIN_WATERMARK,
        }))
    }
}

struct TemporalJoin {
    name: String,
    outer: bool,
    times: (usize, usize),
    key_codec: RowCodec,
    right_key_codec: RowCodec,
    inputs: [JoinInput; 2],
    rows: JoinedRows,
    /// Left rows by time: kind, arrival number, row.
    left_rows: TimeOrderedState<Vec<u8>>,
    next_index: ValueState<u64>,
    /// Versions by time: kind, row.
    versions: TimeOrderedState<Vec<u8>>,
    /// The time of the key's timer, if one is set.
    timer: ValueState<i64>,
    store: KeyedStore,
    watermark: EventTime,
}

/// The timer namespace (one timer per key).
const TIMER_NAMESPACE: &[u8] = b"T";

fn kind_byte(kind: RowKind) -> u8 {
    match kind {
        RowKind::Insert => 0,
        RowKind::UpdateBefore => 1,
        RowKind::UpdateAfter => 2,
        RowKind::Delete => 3,
    }
}

fn byte_kind(b: u8) -> Result<RowKind> {
    Ok(match b {
        0 => RowKind::Insert,
        1 => RowKind::UpdateBefore,
        2 => RowKind::UpdateAfter,
        3 => RowKind::Delete,
        _ => return Err(corrupt()),
    })
}

fn corrupt() -> SluiceError {
    SluiceError::Runtime("keyed state of a temporal join is corrupt".into())
}

/// A left row as kept: its kind, its arrival number and the row.
fn split_left(stored: &[u8]) -> Result<(RowKind, u64, &[u8])> {
    let kind = byte_kind(*stored.first().ok_or_else(corrupt)?)?;
    let index = stored
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(corrupt)?;
    Ok((kind, index, &stored[9..]))
}

/// A version as kept: its kind and the row.
fn split_version(stored: &[u8]) -> Result<(RowKind, &[u8])> {
    let kind = byte_kind(*stored.first().ok_or_else(corrupt)?)?;
    Ok((kind, &stored[1..]))
}

/// A left row that the watermark released, with the version it joins, if any.
struct Released {
    kind: RowKind,
    index: u64,
    row: Vec<u8>,
    version: Option<Vec<u8>>,
}

impl TemporalJoin {
    /// Sets the key's timer to `time_ms` unless it is set earlier (one timer per key).
    fn register_smallest_timer(&mut self, time_ms: i64) -> Result<()> {
        match self.timer.get(&mut self.store)? {
            Some(t) if t <= time_ms => Ok(()),
            current => {
                if let Some(t) = current {
                    self.store.delete_event_timer(t, TIMER_NAMESPACE);
                }
                self.store.register_event_timer(time_ms, TIMER_NAMESPACE)?;
                self.timer.set(&mut self.store, &time_ms)
            }
        }
    }

    fn add_left(&mut self, kind: RowKind, time_ms: i64, row: &[u8]) -> Result<()> {
        let index = self.next_index.get(&mut self.store)?.unwrap_or(0);
        self.next_index.set(&mut self.store, &(index + 1))?;
        let mut stored = Vec::with_capacity(row.len() + 9);
        stored.push(kind_byte(kind));
        stored.extend_from_slice(&index.to_le_bytes());
        stored.extend_from_slice(row);
        self.left_rows.add(&mut self.store, time_ms, &stored)?;
        self.register_smallest_timer(time_ms)
    }

    /// Sets the version at `time_ms` (replacing one at the same time).
    fn add_version(&mut self, kind: RowKind, time_ms: i64, row: &[u8]) -> Result<()> {
        let mut stored = Vec::with_capacity(row.len() + 1);
        stored.push(kind_byte(kind));
        stored.extend_from_slice(row);
        let same_time = self.versions.between(&mut self.store, time_ms, time_ms)?;
        match same_time.split_first() {
            Some(((slot, _), rest)) => {
                self.versions.replace(&mut self.store, *slot, &stored)?;
                for (slot, _) in rest {
                    self.versions.remove(&mut self.store, *slot)?;
                }
            }
            None => self.versions.add(&mut self.store, time_ms, &stored)?,
        }
        self.register_smallest_timer(time_ms)
    }

    /// The key's timer fired: releases the left rows the watermark reached (each with the
    /// version it joins) and drops the versions no left row can need.
    fn on_timer(&mut self, released: &mut Vec<Released>) -> Result<()> {
        self.timer.clear(&mut self.store)?;
        let due = self.left_rows.take_up_to(&mut self.store, self.watermark)?;
        let versions = self.versions.rows(&mut self.store)?;
        let mut mine = Vec::with_capacity(due.len());
        for (t, stored) in due {
            let (kind, index, row) = split_left(&stored)?;
            // The latest version at or before the row's time.
            let at = versions.partition_point(|(vt, _)| *vt <= t);
            let version = match at.checked_sub(1).map(|i| split_version(&versions[i].1)) {
                Some(Ok((vkind, vrow))) if vkind.is_addition() => Some(vrow.to_vec()),
                Some(Err(e)) => return Err(e),
                _ => None,
            };
            mine.push(Released {
                kind,
                index,
                row: row.to_vec(),
                version,
            });
        }
        // Arrival order within the key.
        mine.sort_by_key(|r| r.index);
        released.extend(mine);
        // Keep the latest version at or before the watermark and all later ones.
        let at_or_before = versions.partition_point(|(vt, _)| *vt <= self.watermark);
        if at_or_before > 1 {
            let last_dropped = versions[at_or_before - 2].0;
            self.versions.take_up_to(&mut self.store, last_dropped)?;
        }
        match self.left_rows.earliest(&mut self.store)? {
            Some(t) => self.register_smallest_timer(t),
            None => self.next_index.clear(&mut self.store),
        }
    }

    /// Emits released rows in their order: joined where their version satisfies the
    /// condition, padded with NULLs (a left join) otherwise.
    fn emit(&self, released: &[Released], out: &mut Output) -> Result<()> {
        let with_version: Vec<usize> = (0..released.len())
            .filter(|&i| released[i].version.is_some())
            .collect();
        let mut joined = vec![false; released.len()];
        let mut pairs = RecordBatch::new_empty(self.rows.schema.clone());
        if !with_version.is_empty() {
            let left: Vec<&[u8]> = with_version
                .iter()
                .map(|&i| released[i].row.as_slice())
                .collect();
            let right: Vec<&[u8]> = with_version
                .iter()
                .map(|&i| released[i].version.as_deref().unwrap_or_default())
                .collect();
            let batch = self.rows.pairs(&left, &right)?;
            let mask = self.rows.matches(&batch)?;
            for (&i, m) in with_version.iter().zip(mask.iter()) {
                joined[i] = m == Some(true);
            }
            pairs = filter_record_batch(&batch, &mask)?;
        }
        // Where each output row comes from: (0, i) the i-th joined pair, (1, i) the i-th
        // padded row.
        let mut order = Vec::with_capacity(released.len());
        let mut kinds = Vec::with_capacity(released.len());
        let mut padded: Vec<&[u8]> = Vec::new();
        let mut pairs_taken = 0;
        for (i, r) in released.iter().enumerate() {
            if joined[i] {
                order.push((0, pairs_taken));
                pairs_taken += 1;
            } else if self.outer {
                order.push((1, padded.len()));
                padded.push(&r.row);
            } else {
                continue;
            }
            kinds.push(r.kind);
        }
        if order.is_empty() {
            return Ok(());
        }
        let padded = self.rows.left_padded(&padded)?;
        let data = self.rows.interleaved(pairs, padded, &order)?;
        out.batch(with_kinds(data, kinds));
        Ok(())
    }
}

impl Operator for TemporalJoin {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        let side = &self.inputs[input.min(1)];
        let codec = if input == 0 {
            &self.rows.left
        } else {
            &self.rows.right
        };
        let rows = codec.encode_rows(&data.columns()[..side.width], n)?;
        let key_columns: Vec<ArrayRef> =
            side.keys.iter().map(|&i| data.column(i).clone()).collect();
        let key_codec = if input == 0 {
            &self.key_codec
        } else {
            &self.right_key_codec
        };
        let keys = key_codec.encode_rows(&key_columns, n)?;
        let time_column = if input == 0 {
            self.times.0
        } else {
            self.times.1
        };
        let times = times(data.column(time_column), &self.name)?;
        let mut unjoinable: Vec<Released> = Vec::new();
        for i in 0..n {
            let kind = batch.kind(i);
            if input == 0 {
                match times[i] {
                    Some(t) => {
                        // A NULL key is kept too: it finds no version (none is kept for
                        // it) and is padded or dropped when the watermark comes.
                        self.store.set_current_key(&keys[i])?;
                        self.add_left(kind, t, &rows[i])?;
                    }
                    // No time, no version: it joins nothing.
                    None => unjoinable.push(Released {
                        kind,
                        index: 0,
                        row: rows[i].clone(),
                        version: None,
                    }),
                }
            } else {
                let Some(t) = times[i] else { continue };
                if kind == RowKind::UpdateBefore || key_columns.iter().any(|c| c.is_null(i)) {
                    continue;
                }
                self.store.set_current_key(&keys[i])?;
                self.add_version(kind, t, &rows[i])?;
            }
        }
        self.emit(&unjoinable, out)
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut released = Vec::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            if timer.namespace.as_slice() != TIMER_NAMESPACE {
                continue;
            }
            self.store.set_current_timer_key(&timer);
            self.on_timer(&mut released)?;
        }
        self.emit(&released, out)?;
        out.watermark(self.watermark);
        Ok(())
    }

    /// Every input has ended: the final watermark releases every left row.
    fn end_input(&mut self, out: &mut Output) -> Result<()> {
        if self.watermark < sluice_common::MAX_WATERMARK {
            self.process_watermark(sluice_common::MAX_WATERMARK, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMillisecondType};
    use datafusion_expr::Operator as Op;
    use datafusion_physical_expr::expressions::{BinaryExpr, Column, Literal};
    use sluice_common::{Message, MAX_WATERMARK};

    /// `(k, t, v)` on both sides.
    fn schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(
                format!("{prefix}t"),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Field::new(format!("{prefix}v"), DataType::Int64, true),
        ]))
    }

    fn factory(kind: JoinKind, condition: Option<Arc<dyn PhysicalExpr>>) -> TemporalJoinFactory {
        let input = |p: &str| JoinInput {
            schema: schema(p),
            width: 3,
            keys: vec![0],
        };
        let mut fields: Vec<Field> = Vec::new();
        for p in ["l", "r"] {
            fields.extend(schema(p).fields().iter().map(|f| f.as_ref().clone()));
        }
        TemporalJoinFactory {
            kind,
            left: input("l"),
            right: input("r"),
            times: (1, 1),
            schema: Arc::new(Schema::new(fields)),
            condition,
            state_ttl: None,
        }
    }

    fn rows(
        prefix: &str,
        rows: &[(Option<i64>, i64, i64)],
        kinds: Option<&[RowKind]>,
    ) -> ChangeBatch {
        let data = RecordBatch::try_new(
            schema(prefix),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        ChangeBatch::new(data, kinds.map(|k| k.into()))
    }

    /// Output rows as `kind l.k,l.t,l.v|r.v` (`-` for NULL), in order.
    fn drain(out: &mut Output) -> Vec<String> {
        let mut lines = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let cell = |c: usize, i: usize| {
                    let a = b.data.column(c);
                    if a.is_null(i) {
                        "-".to_string()
                    } else if c % 3 == 1 {
                        a.as_primitive::<TimestampMillisecondType>()
                            .value(i)
                            .to_string()
                    } else {
                        a.as_primitive::<arrow::datatypes::Int64Type>()
                            .value(i)
                            .to_string()
                    }
                };
                for i in 0..b.num_rows() {
                    lines.push(format!(
                        "{} {},{},{}|{}",
                        b.kind(i).short_string(),
                        cell(0, i),
                        cell(1, i),
                        cell(2, i),
                        cell(5, i)
                    ));
                }
            }
        }
        lines
    }

    #[test]
    fn a_row_joins_the_version_valid_at_its_time_once_the_watermark_reaches_it() {
        let mut op = factory(JoinKind::Inner, None)
            .create(&crate::operators::test_context())
            .unwrap();
        let mut out = Output::default();
        // Versions of key 1 at 10 (v 100), 20 (v 200) and 30 (v 300).
        op.process_batch(
            1,
            rows("r", &[(Some(1), 20, 200), (Some(1), 10, 100)], None),
            &mut out,
        )
        .unwrap();
        // Left rows arrive out of order; one is before any version.
        op.process_batch(
            0,
            rows(
                "l",
                &[
                    (Some(1), 25, 1),
                    (Some(1), 5, 2),
                    (Some(1), 20, 3),
                    (Some(1), 35, 4),
                ],
                None,
            ),
            &mut out,
        )
        .unwrap();
        assert!(drain(&mut out).is_empty());
        op.process_watermark(25, &mut out).unwrap();
        // Arrival order; the row at 5 has no version yet.
        assert_eq!(drain(&mut out), vec!["+I 1,25,1|200", "+I 1,20,3|200"]);
        // A version at 30 arrives before the watermark passes 35: the row at 35 takes it.
        op.process_batch(1, rows("r", &[(Some(1), 30, 300)], None), &mut out)
            .unwrap();
        op.process_watermark(40, &mut out).unwrap();
        assert_eq!(drain(&mut out), vec!["+I 1,35,4|300"]);
        // A late left row still finds the latest version kept at or before its time (20
        // was dropped once the watermark passed 30).
        op.process_batch(0, rows("l", &[(Some(1), 22, 5)], None), &mut out)
            .unwrap();
        op.process_watermark(41, &mut out).unwrap();
        assert_eq!(drain(&mut out), vec![] as Vec<String>);
        op.process_batch(0, rows("l", &[(Some(1), 31, 6)], None), &mut out)
            .unwrap();
        op.process_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(drain(&mut out), vec!["+I 1,31,6|300"]);
    }

    #[test]
    fn a_left_join_pads_rows_without_a_version_a_deleted_one_or_a_failed_condition() {
        // l.v < r.v
        let cond: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("lv", 2)),
            Op::Lt,
            Arc::new(Column::new("rv", 5)),
        ));
        let mut op = factory(JoinKind::Left, Some(cond))
            .create(&crate::operators::test_context())
            .unwrap();
        let mut out = Output::default();
        let kinds = [
            RowKind::Insert,
            RowKind::UpdateBefore,
            RowKind::UpdateAfter,
            RowKind::Delete,
        ];
        // Key 1: 50 at 10; the old value (-U) of an update is not a version; 70 at 20;
        // deleted at 30.
        op.process_batch(
            1,
            rows(
                "r",
                &[
                    (Some(1), 10, 50),
                    (Some(1), 10, 50),
                    (Some(1), 20, 70),
                    (Some(1), 30, 0),
                ],
                Some(&kinds),
            ),
            &mut out,
        )
        .unwrap();
        op.process_batch(
            0,
            rows(
                "l",
                &[
                    (Some(1), 15, 1),
                    (Some(1), 16, 60),
                    (Some(1), 25, 60),
                    (Some(1), 35, 1),
                    (Some(2), 15, 1),
                    (None, 15, 1),
                ],
                Some(&[
                    RowKind::Insert,
                    RowKind::Insert,
                    RowKind::Insert,
                    RowKind::Insert,
                    RowKind::Insert,
                    RowKind::UpdateAfter,
                ]),
            ),
            &mut out,
        )
        .unwrap();
        op.process_watermark(MAX_WATERMARK, &mut out).unwrap();
        let mut lines = drain(&mut out);
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "+I 1,15,1|50",
                "+I 1,16,60|-",
                "+I 1,25,60|70",
                "+I 1,35,1|-",
                "+I 2,15,1|-",
                "+U -,15,1|-",
            ]
        );
    }

    #[test]
    fn a_later_version_at_the_same_time_replaces_the_earlier_one() {
        let always: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(
            datafusion_common::ScalarValue::Boolean(Some(true)),
        ));
        let mut op = factory(JoinKind::Inner, Some(always))
            .create(&crate::operators::test_context())
            .unwrap();
        let mut out = Output::default();
        op.process_batch(
            1,
            rows("r", &[(Some(1), 10, 1), (Some(1), 10, 2)], None),
            &mut out,
        )
        .unwrap();
        op.process_batch(0, rows("l", &[(Some(1), 10, 0)], None), &mut out)
            .unwrap();
        op.process_watermark(10, &mut out).unwrap();
        assert_eq!(drain(&mut out), vec!["+I 1,10,0|2"]);
    }
}
