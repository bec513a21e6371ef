//! Watermark generation for a table with `WATERMARK FOR col AS expr`, as Flink's
//! `WatermarkAssignerOperator` does: the watermark is the largest value of `expr` seen so far,
//! emitted as soon as it has advanced by more than `pipeline.auto-watermark-interval`.
//!
//! Rows travel in batches, but lateness must be judged per row as in Flink: when a row is at
//! or behind a watermark that Flink would already have emitted before it, the batch is cut
//! there and that watermark is sent ahead of the row. Rows in order (the usual case) never cut
//! a batch.
//!
//! A source with splits (Kafka partitions) gets one watermark per split, as Flink's per-split
//! watermark generation: the minimum over the active splits drives time; an idle or finished
//! split holds nothing back.

use super::df;
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{
    ChangeBatch, EventTime, Result, SluiceError, SplitId, SplitStatus, MIN_WATERMARK,
};
use sluice_engine::{Operator, OperatorFactory, Output, StateReader, StateWriter, SubtaskContext};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Creates watermark assigners.
pub struct WatermarkAssignerFactory {
    pub table: String,
    pub rowtime_index: usize,
    pub expr: Arc<dyn PhysicalExpr>,
    pub interval_ms: i64,
}

impl OperatorFactory for WatermarkAssignerFactory {
    fn name(&self) -> String {
        format!("WatermarkAssigner({})", self.table)
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(WatermarkAssigner {
            table: self.table.clone(),
            rowtime_index: self.rowtime_index,
            expr: self.expr.clone(),
            interval_ms: self.interval_ms,
            splits: BTreeMap::new(),
            emitted: MIN_WATERMARK,
            sent: MIN_WATERMARK,
        }))
    }
}

/// The split that rows of a source without splits count as.
const WHOLE_SOURCE: SplitId = SplitId::MAX;

/// The watermark of one source split (a Kafka partition), as Flink keeps one per split.
#[derive(Debug, Clone, Copy)]
struct SplitClock {
    /// The largest watermark expression value seen in the split.
    current: EventTime,
    /// The split's watermark as Flink would have emitted it by now.
    emitted: EventTime,
    status: SplitStatus,
}

impl SplitClock {
    fn new() -> Self {
        SplitClock {
            current: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
            status: SplitStatus::Active,
        }
    }
}

struct WatermarkAssigner {
    table: String,
    rowtime_index: usize,
    expr: Arc<dyn PhysicalExpr>,
    interval_ms: i64,
    splits: BTreeMap<SplitId, SplitClock>,
    /// The minimum over the active splits' emitted watermarks: the watermark Flink would
    /// have emitted by now.
    emitted: EventTime,
    /// The watermark sent downstream.
    sent: EventTime,
}

fn millis(a: &dyn Array) -> Result<arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    let c = cast(
        &a.slice(0, a.len()),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    Ok(c.as_primitive::<TimestampMillisecondType>().clone())
}

impl WatermarkAssigner {
    /// Recomputes the combined watermark: the minimum over active splits (idle and finished
    /// ones hold nothing back). It never goes back.
    fn combine(&mut self) {
        let min = self
            .splits
            .values()
            .filter(|c| c.status == SplitStatus::Active)
            .map(|c| c.emitted)
            .min();
        if let Some(min) = min {
            self.emitted = self.emitted.max(min);
        }
    }

    fn flush_watermark(&mut self, out: &mut Output) {
        if self.emitted > self.sent {
            out.watermark(self.emitted);
            self.sent = self.emitted;
        }
    }
}

fn status_code(s: SplitStatus) -> u64 {
    match s {
        SplitStatus::Active => 0,
        SplitStatus::Idle => 1,
        SplitStatus::Finished => 2,
    }
}

/// What [`WatermarkAssigner`] checkpoints: the watermark emitted and sent, and every split's
/// clock.
type Clocks = (EventTime, EventTime, Vec<(SplitId, SplitClock)>);

fn read_clocks(state: &mut StateReader<'_>) -> Result<Clocks> {
    let emitted = state.i64()?;
    let sent = state.i64()?;
    let mut splits = Vec::new();
    for _ in 0..state.count()? {
        let split = state.u64()? as SplitId;
        let current = state.i64()?;
        let clock_emitted = state.i64()?;
        let status = match state.u64()? {
            0 => SplitStatus::Active,
            1 => SplitStatus::Idle,
            _ => SplitStatus::Finished,
        };
        splits.push((
            split,
            SplitClock {
                current,
                emitted: clock_emitted,
                status,
            },
        ));
    }
    Ok((emitted, sent, splits))
}

impl Operator for WatermarkAssigner {
    fn snapshot_state(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_i64(self.emitted);
        state.put_i64(self.sent);
        state.put_u64(self.splits.len() as u64);
        for (split, clock) in &self.splits {
            state.put_u64(*split as u64);
            state.put_i64(clock.current);
            state.put_i64(clock.emitted);
            state.put_u64(status_code(clock.status));
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let (emitted, sent, splits) = read_clocks(state)?;
        self.emitted = emitted;
        self.sent = sent;
        self.splits.extend(splits);
        Ok(())
    }

    /// At another parallelism the splits are divided anew: this subtask's watermark starts
    /// from the smallest the old subtasks had emitted, and every split's clock from the
    /// smallest any of them kept for it, idle until its rows arrive (a split that went to
    /// another subtask must not hold this one back).
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let (mut emitted, mut sent) = (EventTime::MAX, EventTime::MAX);
        for (_, state) in states.iter_mut() {
            let (e, s, splits) = read_clocks(state)?;
            emitted = emitted.min(e);
            sent = sent.min(s);
            for (split, mut clock) in splits {
                clock.status = SplitStatus::Idle;
                self.splits
                    .entry(split)
                    .and_modify(|c| {
                        c.current = c.current.min(clock.current);
                        c.emitted = c.emitted.min(clock.emitted);
                    })
                    .or_insert(clock);
            }
        }
        if !states.is_empty() {
            self.emitted = emitted;
            self.sent = sent;
        }
        Ok(())
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        let rowtime = millis(batch.data.column(self.rowtime_index).as_ref())?;
        // A delete of an upsert source carries only its key: no time (as in Flink, it does
        // not move the watermark). Every other row needs one.
        let timeless_delete = |i: usize| rowtime.is_null(i) && !batch.kind(i).is_addition();
        if rowtime.null_count() > 0 && (0..n).any(|i| rowtime.is_null(i) && !timeless_delete(i)) {
            return Err(SluiceError::Runtime(format!(
                "table '{}': the time attribute '{}' is NULL in a row; every row needs an event time (filter NULLs out or give a default in a computed column)",
                self.table,
                batch.data.schema().field(self.rowtime_index).name()
            )));
        }
        let wm = self
            .expr
            .evaluate(&batch.data)
            .and_then(|v| v.into_array(n))
            .map_err(df)?;
        let wm = millis(wm.as_ref())?;
        let split = batch.split.unwrap_or(WHOLE_SOURCE);
        let mut clock = self
            .splits
            .get(&split)
            .copied()
            .unwrap_or(SplitClock::new());
        if clock.status != SplitStatus::Active {
            // Data again: the split holds time back from its own watermark.
            clock.status = SplitStatus::Active;
            self.splits.insert(split, clock);
        }
        let mut segment_start = 0;
        for i in 0..n {
            if rowtime.is_null(i) {
                continue;
            }
            if rowtime.value(i) <= self.emitted && self.emitted > self.sent {
                out.batch(batch.slice(segment_start, i - segment_start));
                out.watermark(self.emitted);
                self.sent = self.emitted;
                segment_start = i;
            }
            if wm.is_valid(i) {
                clock.current = clock.current.max(wm.value(i));
                if clock.current.saturating_sub(clock.emitted) > self.interval_ms {
                    clock.emitted = clock.current;
                    self.splits.insert(split, clock);
                    self.combine();
                }
            }
        }
        self.splits.insert(split, clock);
        let rest = if segment_start == 0 {
            batch
        } else {
            batch.slice(segment_start, n - segment_start)
        };
        out.batch(rest);
        self.flush_watermark(out);
        Ok(())
    }

    fn process_split(
        &mut self,
        split: SplitId,
        status: SplitStatus,
        out: &mut Output,
    ) -> Result<()> {
        let clock = self.splits.entry(split).or_insert_with(SplitClock::new);
        clock.status = status;
        self.combine();
        tracing::debug!(split, ?status, watermark = self.emitted, "split status");
        self.flush_watermark(out);
        let any_active = self
            .splits
            .values()
            .any(|c| c.status == SplitStatus::Active);
        if status == SplitStatus::Idle && !any_active {
            // Every split is idle or finished: so is this source subtask.
            out.idle();
        }
        Ok(())
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        // Only the end of input (the maximum) passes; the source itself has no event time.
        if watermark > self.sent {
            self.sent = watermark;
            out.watermark(watermark);
        }
        Ok(())
    }
}
