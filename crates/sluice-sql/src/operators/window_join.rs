//! The window join: two window table functions joined on their windows (`L.window_start =
//! R.window_start AND L.window_end = R.window_end`) and keys, inner, left, right or full
//! outer, as Flink's `WindowJoinOperator` runs it.
//!
//! The join key includes the window columns, so the rows of one window and key meet in one
//! subtask. Each side's rows wait in keyed state (a map of arrival number to row) until the
//! watermark reaches the window's end - 1 (an event-time timer); then the two sides' rows are
//! joined pairwise where the residual condition holds, an outer side's rows without a match
//! are emitted padded with NULLs, and the state of that window is dropped. A row whose window
//! has already been joined is late: dropped and counted. The output is append-only; the
//! watermark passes unchanged (a joined row's time is at most its window's end - 1).
//!
//! A window semi or anti join (`IN` / `EXISTS` / `NOT EXISTS` between two windowed inputs)
//! emits, when the window is joined, the left rows that have a match (semi) or none (anti),
//! each once, append-only, as Flink's `SemiAntiJoinOperator` for windows.

use super::join_rows::{JoinInput, JoinKind, JoinedRows};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError, MAX_WATERMARK, MIN_WATERMARK};
use sluice_engine::keyed::{MapState, RowCodec, ValueState};
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;

/// Creates window join operators.
pub struct WindowJoinFactory {
    pub kind: JoinKind,
    pub left: JoinInput,
    pub right: JoinInput,
    /// The `window_end` column of each input.
    pub window_ends: (usize, usize),
    /// The joined schema (left columns, then right columns).
    pub schema: arrow::datatypes::SchemaRef,
    /// The left input's own columns: what a semi or anti join emits.
    pub left_schema: arrow::datatypes::SchemaRef,
    /// The condition other than the key and window equality, over the joined schema.
    pub condition: Option<Arc<dyn datafusion_physical_expr::PhysicalExpr>>,
}

impl OperatorFactory for WindowJoinFactory {
    fn name(&self) -> String {
        format!("WindowJoin({})", self.kind.sql())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        let key_codecs = [self.left.key_codec(), self.right.key_codec()];
        if key_codecs[0].types() != key_codecs[1].types() {
            return Err(SluiceError::Plan(
                "internal: the keys of a window join's inputs differ in type".into(),
            ));
        }
        for (input, end) in [
            (&self.left, self.window_ends.0),
            (&self.right, self.window_ends.1),
        ] {
            if !matches!(
                input.schema.field(end).data_type(),
                DataType::Timestamp(TimeUnit::Millisecond, _)
            ) {
                return Err(SluiceError::Plan(
                    "internal: a window join's window_end is not a TIMESTAMP(3)".into(),
                ));
            }
        }
        Ok(Box::new(WindowJoin {
            name: self.name(),
            kind: self.kind,
            inputs: [self.left.clone(), self.right.clone()],
            window_ends: [self.window_ends.0, self.window_ends.1],
            left_schema: self.left_schema.clone(),
            key_codecs,
            joined: JoinedRows {
                left: self.left.row_codec(),
                right: self.right.row_codec(),
                schema: self.schema.clone(),
                condition: self.condition.clone(),
            },
            rows: [
                store.map_state("left rows", None)?,
                store.map_state("right rows", None)?,
            ],
            counts: [
                store.value_state("left row count", None)?,
                store.value_state("right row count", None)?,
            ],
            store,
            watermark: MIN_WATERMARK,
            late: ctx.late_records(),
        }))
    }
}

struct WindowJoin {
    name: String,
    kind: JoinKind,
    inputs: [JoinInput; 2],
    window_ends: [usize; 2],
    left_schema: arrow::datatypes::SchemaRef,
    key_codecs: [RowCodec; 2],
    joined: JoinedRows,
    /// Each side's rows of the current key (its window included), by arrival number.
    rows: [MapState<Vec<u8>, Vec<u8>>; 2],
    /// How many rows each side has for the current key.
    counts: [ValueState<u64>; 2],
    store: KeyedStore,
    watermark: EventTime,
    late: LateRecords,
}

const LEFT: usize = 0;

/// The most pairs of rows evaluated at once.
const MAX_PAIRS: usize = 64 * 1024;

impl WindowJoin {
    fn outer(&self, side: usize) -> bool {
        if side == LEFT {
            self.kind.left_outer()
        } else {
            self.kind.right_outer()
        }
    }

    /// Takes the current key's rows of `side` out of state.
    fn take_rows(&mut self, side: usize) -> Result<Vec<Vec<u8>>> {
        let (rows, count) = (self.rows[side], self.counts[side]);
        let taken: Vec<Vec<u8>> = rows
            .entries(&mut self.store)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rows.clear(&mut self.store)?;
        count.clear(&mut self.store)?;
        Ok(taken)
    }

    /// Joins one window of one key, whose rows are `left` and `right`.
    fn join_window(&self, left: &[Vec<u8>], right: &[Vec<u8>], out: &mut Output) -> Result<()> {
        let semi_anti = matches!(self.kind, JoinKind::Semi | JoinKind::Anti);
        let mut left_joined = vec![false; left.len()];
        let mut right_joined = vec![false; right.len()];
        // A few left rows at a time, so that the pairs evaluated at once stay bounded.
        let step = (MAX_PAIRS / right.len().max(1)).max(1);
        for (chunk, lefts) in left.chunks(step).enumerate() {
            let mut ls: Vec<&[u8]> = Vec::new();
            let mut rs: Vec<&[u8]> = Vec::new();
            for l in lefts {
                for r in right {
                    ls.push(l);
                    rs.push(r);
                }
            }
            if ls.is_empty() {
                continue;
            }
            let pairs = self.joined.pairs(&ls, &rs)?;
            let mask = self.joined.matches(&pairs)?;
            for (p, m) in mask.iter().enumerate() {
                if m == Some(true) {
                    left_joined[chunk * step + p / right.len()] = true;
                    right_joined[p % right.len()] = true;
                }
            }
            if semi_anti {
                continue;
            }
            let joined = filter_record_batch(&pairs, &mask)?;
            if joined.num_rows() > 0 {
                out.batch(ChangeBatch::inserts(joined));
            }
        }
        if semi_anti {
            let keep = self.kind == JoinKind::Semi;
            let kept: Vec<&[u8]> = left
                .iter()
                .zip(&left_joined)
                .filter(|(_, j)| **j == keep)
                .map(|(r, _)| r.as_slice())
                .collect();
            if !kept.is_empty() {
                let columns = self.joined.left.decode(&kept)?;
                out.batch(ChangeBatch::inserts(RecordBatch::try_new(
                    self.left_schema.clone(),
                    columns,
                )?));
            }
            return Ok(());
        }
        if self.outer(LEFT) {
            let unmatched: Vec<&[u8]> = left
                .iter()
                .zip(&left_joined)
                .filter(|(_, j)| !**j)
                .map(|(r, _)| r.as_slice())
                .collect();
            if !unmatched.is_empty() {
                out.batch(ChangeBatch::inserts(self.joined.left_padded(&unmatched)?));
            }
        }
        if self.outer(1) {
            let unmatched: Vec<&[u8]> = right
                .iter()
                .zip(&right_joined)
                .filter(|(_, j)| !**j)
                .map(|(r, _)| r.as_slice())
                .collect();
            if !unmatched.is_empty() {
                out.batch(ChangeBatch::inserts(self.joined.right_padded(&unmatched)?));
            }
        }
        Ok(())
    }
}

impl Operator for WindowJoin {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, input: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        let side = if input == 0 { LEFT } else { 1 };
        let data = &batch.data;
        let n = data.num_rows();
        super::require_inserts(&batch, &self.name)?;
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
        let ends = data
            .column(self.window_ends[side])
            .as_primitive::<TimestampMillisecondType>();
        let (state, count) = (self.rows[side], self.counts[side]);
        let mut late = 0u64;
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            if ends.is_null(i) {
                continue;
            }
            let fires_at = ends.value(i).saturating_sub(1);
            if fires_at <= self.watermark {
                late += 1;
                continue;
            }
            // A NULL key joins nothing, but an outer side's row is still emitted padded (and
            // an anti join's left row, which has no match).
            let null_key = key_columns.iter().any(|c| c.is_null(i));
            let kept_unmatched = self.outer(side) || (side == LEFT && self.kind == JoinKind::Anti);
            if null_key && !kept_unmatched {
                continue;
            }
            self.store.set_current_key(key)?;
            let next = count.get(&mut self.store)?.unwrap_or(0);
            state.put(&mut self.store, &next.to_be_bytes().to_vec(), &row)?;
            count.set(&mut self.store, &(next + 1))?;
            self.store.register_event_timer(fires_at, &[])?;
        }
        self.late.add(late);
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        for timer in self.store.pop_event_timers(self.watermark) {
            self.store.set_current_timer_key(&timer);
            let left = self.take_rows(LEFT)?;
            let right = self.take_rows(1)?;
            if self.key_has_null(&timer.key)? {
                // Rows with a NULL key join nothing: only their padded rows.
                self.join_window(&left, &[], out)?;
                self.join_window(&[], &right, out)?;
            } else {
                self.join_window(&left, &right, out)?;
            }
        }
        out.watermark(watermark);
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

impl WindowJoin {
    /// True if an encoded key has a NULL column.
    fn key_has_null(&self, key: &[u8]) -> Result<bool> {
        let columns = self.key_codecs[LEFT].decode(&[key])?;
        Ok(columns.iter().any(|c| c.is_null(0)))
    }
}
