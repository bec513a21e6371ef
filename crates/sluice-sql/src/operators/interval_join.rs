//! The event-time interval join: `L JOIN R ON L.k = R.k AND L.rt BETWEEN R.rt - a AND
//! R.rt + b` (inner, left, right or full outer), as Flink's `RowTimeIntervalJoin` runs it.
//!
//! Both inputs are append-only and hashed on the join key. Per key, each side's rows wait
//! in keyed state ordered by event time (a [`TimeOrderedState`]) for as long as a row of the
//! other side may still join them; an arriving row joins the other side's rows whose time
//! is in its interval (a range scan, not a pass over the key's rows). Writing `lower` and
//! `upper` for the bounds of `L.rt - R.rt`:
//!
//! - a left row at `t` joins right rows in `[t - upper, t - lower]`; it is kept while the
//!   watermark is before `t - lower` (a right row still to come may join it), and removed
//!   by a clean-up timer once the watermark has passed that; a right row at `t` likewise
//!   joins left rows in `[t + lower, t + upper]` and is kept until `t + upper`;
//! - the operator time is the watermark (0 before the first positive one), as Flink's;
//!   a row that arrives after its interval has passed joins what is still kept and is not
//!   kept itself;
//! - an outer side's row that never joined is emitted padded with NULLs when it is removed
//!   (or at once when it is not kept); a row joins only if the residual condition holds;
//! - the output is append-only; its watermark is held back by the larger of the two
//!   relative interval sizes, so that a joined row is never late downstream.
//!
//! Clean-up is one timer per key and side (Flink's), at the earliest row's expiry plus
//! `table.exec.interval-join.min-cleanup-interval`.

use super::join_rows::{split_stored, stored_row, JoinInput, JoinKind, JoinedRows};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef, TimestampMillisecondType};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MAX_WATERMARK, MIN_WATERMARK};
use sluice_engine::keyed::{RowCodec, TimeOrderedState, TimeSlot, ValueState};
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// Creates interval join operators.
pub struct IntervalJoinFactory {
    pub kind: JoinKind,
    pub left: JoinInput,
    pub right: JoinInput,
    /// The time attributes of the left and the right input (columns of their schemas).
    pub times: (usize, usize),
    /// `L.rt - R.rt` must be in `[lower_ms, upper_ms]`.
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// The joined schema (left columns, then right columns).
    pub schema: SchemaRef,
    /// The condition other than the key equality and the time bounds, over the joined
    /// schema.
    pub condition: Option<Arc<dyn PhysicalExpr>>,
    /// `table.exec.interval-join.min-cleanup-interval`.
    pub min_cleanup_ms: i64,
}

impl IntervalJoinFactory {
    /// How long the output watermark is held back.
    pub fn watermark_delay_ms(&self) -> i64 {
        (-self.lower_ms).max(self.upper_ms).max(0)
    }
}

impl OperatorFactory for IntervalJoinFactory {
    fn name(&self) -> String {
        format!("IntervalJoin({})", self.kind.sql())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let sides = [
            Side::new(&mut store, "left", &self.left, self.times.0)?,
            Side::new(&mut store, "right", &self.right, self.times.1)?,
        ];
        if sides[0].key_codec.types() != sides[1].key_codec.types() {
            return Err(SluiceError::Plan(
                "internal: the keys of an interval join's inputs differ in type".into(),
            ));
        }
        Ok(Box::new(IntervalJoin {
            name: self.name(),
            kind: self.kind,
            lower_ms: self.lower_ms,
            upper_ms: self.upper_ms,
            min_cleanup_ms: self.min_cleanup_ms.max(0),
            delay_ms: self.watermark_delay_ms(),
            rows: JoinedRows {
                left: self.left.row_codec(),
                right: self.right.row_codec(),
                schema: self.schema.clone(),
                condition: self.condition.clone(),
            },
            sides,
            store,
            watermark: MIN_WATERMARK,
        }))
    }
}

/// One input's state and columns.
struct Side {
    input: JoinInput,
    /// The time attribute's column.
    time: usize,
    key_codec: RowCodec,
    /// The rows waiting for the other side, by event time.
    rows: TimeOrderedState<Vec<u8>>,
    /// The time of the clean-up timer registered for these rows, if any.
    timer: ValueState<i64>,
}

impl Side {
    fn new(store: &mut KeyedStore, name: &str, input: &JoinInput, time: usize) -> Result<Side> {
        Ok(Side {
            time,
            key_codec: input.key_codec(),
            rows: store.time_ordered_state(&format!("{name} rows"), None)?,
            timer: store.value_state(&format!("{name} clean-up timer"), None)?,
            input: input.clone(),
        })
    }
}

struct IntervalJoin {
    name: String,
    kind: JoinKind,
    lower_ms: i64,
    upper_ms: i64,
    min_cleanup_ms: i64,
    delay_ms: i64,
    rows: JoinedRows,
    sides: [Side; 2],
    store: KeyedStore,
    watermark: EventTime,
}

/// A row of the other side that an arriving row may join.
struct Candidate {
    /// The arriving row's index in its batch.
    row: usize,
    slot: TimeSlot,
    stored: Vec<u8>,
}

const LEFT: usize = 0;

/// The most candidate pairs a batch evaluates at once (a bound on memory: a batch whose rows
/// meet more is taken in parts).
const MAX_PAIRS: usize = 64 * 1024;
const RIGHT: usize = 1;
/// The timer namespace of each side's clean-up.
const TIMER_NAMESPACE: [&[u8]; 2] = [b"L", b"R"];

impl IntervalJoin {
    /// The operator time: the watermark, 0 before the first positive one (as Flink's).
    fn operator_time(&self) -> i64 {
        self.watermark.max(0)
    }

    fn outer(&self, side: usize) -> bool {
        if side == LEFT {
            self.kind.left_outer()
        } else {
            self.kind.right_outer()
        }
    }

    /// The times of the other side's rows that a row of `side` at `t` joins.
    fn interval(&self, side: usize, t: i64) -> (i64, i64) {
        if side == LEFT {
            (
                t.saturating_sub(self.upper_ms),
                t.saturating_sub(self.lower_ms),
            )
        } else {
            (
                t.saturating_add(self.lower_ms),
                t.saturating_add(self.upper_ms),
            )
        }
    }

    /// How long after its time a row of `side` may still be joined: the other side's
    /// interval of a row at 0 ends there.
    fn relative_size(&self, side: usize) -> i64 {
        self.interval(side, 0).1
    }

    /// Registers the clean-up of `side`'s rows of the current key for a row at `t`,
    /// unless one is registered.
    fn register_cleanup(&mut self, side: usize, t: i64) -> Result<()> {
        let at = t
            .saturating_add(self.relative_size(side))
            .saturating_add(self.min_cleanup_ms)
            .saturating_add(1);
        let s = &self.sides[side];
        self.store.register_event_timer(at, TIMER_NAMESPACE[side])?;
        s.timer.set(&mut self.store, &at)
    }

    /// Emits `side`'s rows padded with NULLs for the other side.
    fn emit_padded(&self, side: usize, rows: &[&[u8]], out: &mut Output) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = if side == LEFT {
            self.rows.left_padded(rows)?
        } else {
            self.rows.right_padded(rows)?
        };
        out.batch(ChangeBatch::inserts(batch));
        Ok(())
    }

    /// The clean-up timer of `side`'s rows of the current key fired at `time`: removes the
    /// rows no row of the other side can join any more (padding the unjoined ones of an
    /// outer side) and registers the next clean-up if rows are left.
    fn clean_up(&mut self, side: usize, time: i64, padded: &mut Vec<Vec<u8>>) -> Result<()> {
        let s = &self.sides[side];
        if s.timer.get(&mut self.store)? != Some(time) {
            return Ok(());
        }
        let expiry = if self.watermark == MAX_WATERMARK {
            MAX_WATERMARK
        } else {
            self.operator_time()
                .saturating_sub(self.relative_size(side))
                .saturating_sub(1)
        };
        let rows = s.rows;
        let timer = s.timer;
        for (_, stored) in rows.take_up_to(&mut self.store, expiry)? {
            let (joined, row) = split_stored(&stored)?;
            if !joined && self.outer(side) {
                padded.push(row.to_vec());
            }
        }
        match rows.earliest(&mut self.store)? {
            Some(t) => self.register_cleanup(side, t),
            None => timer.clear(&mut self.store),
        }
    }
}

/// The event times of a batch's time attribute column.
pub(crate) fn times(column: &ArrayRef, name: &str) -> Result<Vec<Option<i64>>> {
    match column.data_type() {
        DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => Ok(column
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect()),
        other => Err(SluiceError::Runtime(format!(
            "{name}: the time attribute is {other}, not a TIMESTAMP(3)"
        ))),
    }
}

impl Operator for IntervalJoin {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let side = if input == 0 { LEFT } else { RIGHT };
        let other = 1 - side;
        super::require_inserts(&batch, &self.name)?;
        let data = &batch.data;
        let n = data.num_rows();
        let this = &self.sides[side];
        let codec = if side == LEFT {
            &self.rows.left
        } else {
            &self.rows.right
        };
        let rows = codec.encode_rows(&data.columns()[..this.input.width], n)?;
        let key_columns: Vec<ArrayRef> = this
            .input
            .keys
            .iter()
            .map(|&i| data.column(i).clone())
            .collect();
        let keys = this.key_codec.encode_rows(&key_columns, n)?;
        let times = times(data.column(this.time), &self.name)?;
        // A NULL key or time joins nothing (SQL's equality is never true for NULL).
        let joinable: Vec<bool> = (0..n)
            .map(|i| times[i].is_some() && key_columns.iter().all(|c| c.is_valid(i)))
            .collect();

        // The other side's rows in each row's interval.
        let mut candidates: Vec<Candidate> = Vec::new();
        for i in 0..n {
            if i > 0 && candidates.len() >= MAX_PAIRS {
                // Too many pairs for one pass: the rows so far, then the rest.
                self.process_batch(input, batch.slice(0, i), out)?;
                return self.process_batch(input, batch.slice(i, n - i), out);
            }
            let Some(t) = times[i].filter(|_| joinable[i]) else {
                continue;
            };
            self.store.set_current_key(&keys[i])?;
            let (from, to) = self.interval(side, t);
            for (slot, stored) in self.sides[other].rows.between(&mut self.store, from, to)? {
                candidates.push(Candidate {
                    row: i,
                    slot,
                    stored,
                });
            }
        }
        // Which of them satisfy the rest of the condition, in one evaluation.
        let mut joined_rows = None;
        let mut matched = vec![false; candidates.len()];
        if !candidates.is_empty() {
            let mine: Vec<&[u8]> = candidates.iter().map(|c| rows[c.row].as_slice()).collect();
            let theirs: Vec<&[u8]> = candidates
                .iter()
                .map(|c| split_stored(&c.stored).map(|(_, r)| r))
                .collect::<Result<_>>()?;
            let pairs = if side == LEFT {
                self.rows.pairs(&mine, &theirs)?
            } else {
                self.rows.pairs(&theirs, &mine)?
            };
            let mask = self.rows.matches(&pairs)?;
            for (m, v) in matched.iter_mut().zip(mask.iter()) {
                *m = v == Some(true);
            }
            joined_rows = Some(filter_record_batch(&pairs, &mask)?);
        }
        // Mark the other side's rows that joined (for its outer padding), keep this side's
        // rows that rows still to come may join, pad the others that joined nothing.
        let mut emitted = vec![false; n];
        let other_outer = self.outer(other);
        let mut current: Option<usize> = None;
        for (c, ok) in candidates.iter().zip(&matched) {
            if !ok {
                continue;
            }
            emitted[c.row] = true;
            let (was_joined, row) = split_stored(&c.stored)?;
            if other_outer && !was_joined {
                if current != Some(c.row) {
                    self.store.set_current_key(&keys[c.row])?;
                    current = Some(c.row);
                }
                let rows = self.sides[other].rows;
                rows.replace(&mut self.store, c.slot, &stored_row(true, row))?;
            }
        }
        let now = self.operator_time();
        let mut padded: Vec<&[u8]> = Vec::new();
        for i in 0..n {
            let kept = match times[i].filter(|_| joinable[i]) {
                // Rows of the other side up to the end of this row's interval may come.
                Some(t) => now < self.interval(side, t).1,
                None => false,
            };
            if kept {
                let t = times[i].unwrap_or_default();
                self.store.set_current_key(&keys[i])?;
                let s = &self.sides[side];
                let (state, timer) = (s.rows, s.timer);
                state.add(&mut self.store, t, &stored_row(emitted[i], &rows[i]))?;
                if timer.get(&mut self.store)?.is_none() {
                    self.register_cleanup(side, t)?;
                }
            } else if !emitted[i] && self.outer(side) {
                padded.push(&rows[i]);
            }
        }
        if let Some(joined) = joined_rows.filter(|b| b.num_rows() > 0) {
            out.batch(ChangeBatch::inserts(joined));
        }
        self.emit_padded(side, &padded, out)
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut padded: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for timer in self.store.pop_event_timers(self.watermark) {
            let Some(side) = TIMER_NAMESPACE
                .iter()
                .position(|ns| *ns == timer.namespace.as_slice())
            else {
                continue;
            };
            self.store.set_current_timer_key(&timer);
            self.clean_up(side, timer.time_ms, &mut padded[side])?;
        }
        for (side, rows) in padded.iter().enumerate() {
            let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
            self.emit_padded(side, &refs, out)?;
        }
        out.watermark(if self.watermark == MAX_WATERMARK {
            MAX_WATERMARK
        } else {
            self.watermark.saturating_sub(self.delay_ms)
        });
        Ok(())
    }

    /// Every input has ended: what the final watermark fires, in case it did not arrive
    /// (a two-input gate gets none when its last inputs end without one, as after a restore
    /// of inputs that had ended), as at Flink's end of input.
    fn end_input(&mut self, out: &mut Output) -> Result<()> {
        if self.watermark < MAX_WATERMARK {
            self.process_watermark(MAX_WATERMARK, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use sluice_common::Message;

    fn ctx() -> SubtaskContext {
        crate::operators::test_context()
    }

    fn schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(
                format!("{prefix}t"),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn input(prefix: &str) -> JoinInput {
        JoinInput {
            schema: schema(prefix),
            width: 2,
            keys: vec![0],
        }
    }

    fn factory(kind: JoinKind, lower_ms: i64, upper_ms: i64) -> IntervalJoinFactory {
        let mut fields: Vec<Field> = Vec::new();
        for p in ["l", "r"] {
            fields.extend(schema(p).fields().iter().map(|f| f.as_ref().clone()));
        }
        IntervalJoinFactory {
            kind,
            left: input("l"),
            right: input("r"),
            times: (1, 1),
            lower_ms,
            upper_ms,
            schema: Arc::new(Schema::new(fields)),
            condition: None,
            min_cleanup_ms: 0,
        }
    }

    fn rows(prefix: &str, rows: &[(i64, i64)]) -> ChangeBatch {
        ChangeBatch::inserts(
            RecordBatch::try_new(
                schema(prefix),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    /// Joined rows as `lk,lt|rk,rt` (`-` for NULL), sorted; and the last watermark.
    fn drain(out: &mut Output) -> (Vec<String>, Option<i64>) {
        let mut lines = Vec::new();
        let mut wm = None;
        for m in out.drain() {
            match m {
                Message::Data(b) => {
                    let cell = |c: usize, i: usize| {
                        let a = b.data.column(c);
                        if a.is_null(i) {
                            "-".to_string()
                        } else if c.is_multiple_of(2) {
                            a.as_primitive::<arrow::datatypes::Int64Type>()
                                .value(i)
                                .to_string()
                        } else {
                            a.as_primitive::<TimestampMillisecondType>()
                                .value(i)
                                .to_string()
                        }
                    };
                    for i in 0..b.num_rows() {
                        lines.push(format!(
                            "{},{}|{},{}",
                            cell(0, i),
                            cell(1, i),
                            cell(2, i),
                            cell(3, i)
                        ));
                    }
                }
                Message::Watermark(w) => wm = Some(w),
                _ => {}
            }
        }
        lines.sort();
        (lines, wm)
    }

    #[test]
    fn rows_join_within_the_interval_from_either_side() {
        // l.t BETWEEN r.t - 10 AND r.t + 5: l.t - r.t in [-10, 5].
        let mut op = factory(JoinKind::Inner, -10, 5).create(&ctx()).unwrap();
        let mut out = Output::default();
        op.process_batch(0, rows("l", &[(1, 100), (2, 100)]), &mut out)
            .unwrap();
        op.process_batch(
            1,
            rows("r", &[(1, 95), (1, 110), (1, 111), (2, 200)]),
            &mut out,
        )
        .unwrap();
        op.process_batch(0, rows("l", &[(1, 105)]), &mut out)
            .unwrap();
        let (lines, _) = drain(&mut out);
        assert_eq!(
            lines,
            vec!["1,100|1,110", "1,100|1,95", "1,105|1,110", "1,105|1,111"]
        );
    }

    #[test]
    fn the_watermark_is_held_back_and_outer_rows_are_padded_when_they_expire() {
        let mut op = factory(JoinKind::Full, -10, 5).create(&ctx()).unwrap();
        let mut out = Output::default();
        op.process_batch(0, rows("l", &[(1, 100), (3, 100)]), &mut out)
            .unwrap();
        op.process_batch(1, rows("r", &[(1, 104), (2, 100)]), &mut out)
            .unwrap();
        assert_eq!(drain(&mut out).0, vec!["1,100|1,104"]);
        // Left rows at 100 wait until 110 (a right row up to 110 may join them); right rows
        // at 100 until 105.
        op.process_watermark(106, &mut out).unwrap();
        let (lines, wm) = drain(&mut out);
        assert_eq!(lines, vec!["-,-|2,100"]);
        assert_eq!(wm, Some(96));
        op.process_watermark(111, &mut out).unwrap();
        assert_eq!(drain(&mut out).0, vec!["3,100|-,-"]);
        // A left row too late to be kept, with nothing to join: padded at once.
        op.process_batch(0, rows("l", &[(4, 50)]), &mut out)
            .unwrap();
        assert_eq!(drain(&mut out).0, vec!["4,50|-,-"]);
        op.process_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(drain(&mut out), (vec![], Some(MAX_WATERMARK)));
    }

    #[test]
    fn an_outer_row_that_joined_is_not_padded_and_null_keys_join_nothing() {
        let mut op = factory(JoinKind::Left, 0, 0).create(&ctx()).unwrap();
        let mut out = Output::default();
        op.process_batch(0, rows("l", &[(1, 10), (1, 20)]), &mut out)
            .unwrap();
        op.process_batch(1, rows("r", &[(1, 10)]), &mut out)
            .unwrap();
        let null_key = ChangeBatch::inserts(
            RecordBatch::try_new(
                schema("l"),
                vec![
                    Arc::new(Int64Array::from(vec![None])),
                    Arc::new(TimestampMillisecondArray::from(vec![10])),
                ],
            )
            .unwrap(),
        );
        op.process_batch(0, null_key, &mut out).unwrap();
        op.process_watermark(MAX_WATERMARK, &mut out).unwrap();
        assert_eq!(drain(&mut out).0, vec!["-,10|-,-", "1,10|1,10", "1,20|-,-"]);
    }
}
