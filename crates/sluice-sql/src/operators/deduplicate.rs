//! Deduplication on event time: `ROW_NUMBER() OVER (PARTITION BY k ORDER BY rowtime ASC|DESC)
//! = 1`, as Flink 2's deduplicate functions run it, with per-key state in the keyed store
//! behind a hash exchange on the key. The output has the input's columns and the row number
//! (always 1).
//!
//! - Keeping the last row (`DESC`, Flink's `RowTimeDeduplicateFunction`): a row replaces the
//!   kept one if its time is the same or later; the first row of a key is `+I`, a
//!   replacement takes the kept row back (`-U`) and emits the new one (`+U`). The kept row
//!   expires with `table.exec.state.ttl`.
//! - Keeping the first row (`ASC`, Flink's `RowTimeDeduplicateKeepFirstRowFunction`): the
//!   earliest row of a key waits for the watermark (an event-time timer at its time) and is
//!   then emitted once; the output is append-only and keeps the time attribute. A row behind
//!   the watermark is late (dropped and counted); once a key has emitted, its later rows are
//!   ignored (that flag expires with `table.exec.state.ttl`).

use super::df;
use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, RowKind, SluiceError, MIN_WATERMARK};
use sluice_engine::keyed::{RowCodec, ValueState};
use sluice_engine::task_metrics::LateRecords;
use sluice_engine::{KeyedStore, Operator, OperatorFactory, Output, SubtaskContext};
use std::sync::Arc;
use std::time::Duration;

/// Creates deduplicate operators.
pub struct DeduplicateFactory {
    /// The input's schema.
    pub input_schema: SchemaRef,
    /// The input's columns and the row number.
    pub output_schema: SchemaRef,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// The time attribute the rows are ordered by.
    pub rowtime: usize,
    /// `ORDER BY rowtime DESC`: keep the last row, not the first.
    pub keep_last: bool,
    /// `table.exec.state.ttl`.
    pub state_ttl: Option<Duration>,
}

impl OperatorFactory for DeduplicateFactory {
    fn name(&self) -> String {
        if self.keep_last {
            "Deduplicate(keep last row)".into()
        } else {
            "Deduplicate(keep first row)".into()
        }
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let mut store = ctx.keyed_store()?;
        // Keeping the first row, the waiting row must not expire before its timer fires.
        let kept = store.value_state(
            "kept row",
            if self.keep_last { self.state_ttl } else { None },
        )?;
        let emitted = store.value_state("emitted", self.state_ttl)?;
        let types = |s: &SchemaRef| s.fields().iter().map(|f| f.data_type().clone()).collect();
        let key_types = self
            .partition_by
            .iter()
            .map(|e| e.data_type(&self.input_schema).map_err(df))
            .collect::<Result<Vec<DataType>>>()?;
        if !matches!(
            self.input_schema.field(self.rowtime).data_type(),
            DataType::Timestamp(TimeUnit::Millisecond, _)
        ) {
            return Err(SluiceError::Plan(
                "internal: deduplication by a column that is not a TIMESTAMP(3)".into(),
            ));
        }
        Ok(Box::new(Deduplicate {
            name: self.name(),
            output_schema: self.output_schema.clone(),
            partition_by: self.partition_by.clone(),
            rowtime: self.rowtime,
            keep_last: self.keep_last,
            key_codec: RowCodec::new(key_types),
            row_codec: RowCodec::new(types(&self.input_schema)),
            store,
            kept,
            emitted,
            watermark: MIN_WATERMARK,
            late: ctx.late_records(),
        }))
    }
}

struct Deduplicate {
    name: String,
    output_schema: SchemaRef,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    rowtime: usize,
    keep_last: bool,
    key_codec: RowCodec,
    row_codec: RowCodec,
    store: KeyedStore,
    /// The kept row of the current key (keeping the first: the row waiting for the
    /// watermark): its time (8 bytes) and the row.
    kept: ValueState<Vec<u8>>,
    /// Keeping the first row: 1 once the current key's row has been emitted.
    emitted: ValueState<i64>,
    watermark: EventTime,
    late: LateRecords,
}

impl Deduplicate {
    /// Keeping the first row: the row waits for the watermark unless it is late, its key
    /// has emitted, or an earlier row waits.
    fn keep_first(&mut self, t: i64, row: &[u8]) -> Result<()> {
        if t < self.watermark {
            self.late.add(1);
            return Ok(());
        }
        if self.emitted.get(&mut self.store)?.is_some() {
            return Ok(());
        }
        if let Some(prev) = self.kept.get(&mut self.store)? {
            let (prev_t, _) = split_kept(&prev)?;
            if t >= prev_t {
                return Ok(());
            }
            self.store.delete_event_timer(prev_t, &[]);
        }
        self.store.register_event_timer(t, &[])?;
        self.kept.set(&mut self.store, &kept_value(t, row))
    }

    /// Emits `rows` (encoded input rows) with their kinds and the row number.
    fn emit(
        &self,
        rows: Vec<Vec<u8>>,
        kinds: Option<Vec<RowKind>>,
        out: &mut Output,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut columns = self.row_codec.decode(&refs)?;
        columns.push(Arc::new(Int64Array::from(vec![1i64; refs.len()])));
        let columns = columns
            .into_iter()
            .zip(self.output_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    arrow::compute::cast(&c, f.data_type()).map_err(SluiceError::from)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let data = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| SluiceError::Runtime(format!("{}: {e}", self.name)))?;
        out.batch(ChangeBatch::new(data, kinds.map(Arc::from)));
        Ok(())
    }
}

fn kept_value(time: i64, row: &[u8]) -> Vec<u8> {
    let mut v = time.to_le_bytes().to_vec();
    v.extend_from_slice(row);
    v
}

fn split_kept(v: &[u8]) -> Result<(i64, &[u8])> {
    let (t, row) = v
        .split_first_chunk::<8>()
        .ok_or_else(|| SluiceError::Runtime("keyed state of a deduplication is short".into()))?;
    Ok((i64::from_le_bytes(*t), row))
}

impl Operator for Deduplicate {
    fn keyed_store(&mut self) -> Option<&mut KeyedStore> {
        Some(&mut self.store)
    }

    fn process_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let data = &batch.data;
        let n = data.num_rows();
        super::require_inserts(&batch, &self.name)?;
        let keys = super::encode_keys(&self.partition_by, &self.key_codec, data)?;
        let rows = self.row_codec.encode_rows(data.columns(), n)?;
        let times = data
            .column(self.rowtime)
            .as_primitive::<TimestampMillisecondType>();
        let mut emitted: Vec<Vec<u8>> = Vec::new();
        let mut kinds: Vec<RowKind> = Vec::new();
        for (i, (key, row)) in keys.iter().zip(rows).enumerate() {
            // A row without a time has no place in the order.
            if times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            self.store.set_current_key(key)?;
            if !self.keep_last {
                self.keep_first(t, &row)?;
                continue;
            }
            match self.kept.get(&mut self.store)? {
                None => {
                    emitted.push(row.clone());
                    kinds.push(RowKind::Insert);
                }
                Some(prev) => {
                    let (prev_t, prev_row) = split_kept(&prev)?;
                    let replace = if self.keep_last {
                        t >= prev_t
                    } else {
                        t < prev_t
                    };
                    if !replace {
                        continue;
                    }
                    emitted.push(prev_row.to_vec());
                    kinds.push(RowKind::UpdateBefore);
                    emitted.push(row.clone());
                    kinds.push(RowKind::UpdateAfter);
                }
            }
            self.kept.set(&mut self.store, &kept_value(t, &row))?;
        }
        self.emit(emitted, Some(kinds), out)
    }

    fn process_watermark(&mut self, watermark: EventTime, out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        let mut rows = Vec::new();
        for timer in self.store.pop_event_timers(self.watermark) {
            self.store.set_current_timer_key(&timer);
            if let Some(kept) = self.kept.get(&mut self.store)? {
                rows.push(split_kept(&kept)?.1.to_vec());
                self.kept.clear(&mut self.store)?;
                self.emitted.set(&mut self.store, &1)?;
            }
        }
        self.emit(rows, None, out)?;
        out.watermark(watermark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion_physical_expr::expressions::Column;
    use sluice_common::Message;

    fn ctx() -> SubtaskContext {
        crate::operators::test_context()
    }

    fn run(keep_last: bool, rows: &[(&str, i64)]) -> Vec<String> {
        run_with_watermarks(keep_last, &[(rows, None)])
    }

    /// A batch of (key, time) rows and the watermark after it, if any.
    type Step<'a> = (&'a [(&'a str, i64)], Option<i64>);

    /// Batches of rows, each followed by a watermark if given.
    fn run_with_watermarks(keep_last: bool, steps: &[Step<'_>]) -> Vec<String> {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", ts.clone(), true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", ts, true),
            Field::new("rn", DataType::UInt64, true),
        ]));
        let mut op = DeduplicateFactory {
            input_schema: input.clone(),
            output_schema: output,
            partition_by: vec![Arc::new(Column::new("k", 0))],
            rowtime: 1,
            keep_last,
            state_ttl: None,
        }
        .create(&ctx())
        .unwrap();
        let mut out = Output::default();
        for (rows, watermark) in steps {
            let data = RecordBatch::try_new(
                input.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                ],
            )
            .unwrap();
            op.process_batch(0, ChangeBatch::inserts(data), &mut out)
                .unwrap();
            if let Some(w) = watermark {
                op.process_watermark(*w, &mut out).unwrap();
            }
        }
        let mut lines = Vec::new();
        for m in out.drain() {
            if let Message::Data(b) = m {
                let k = b.data.column(0).as_string::<i32>();
                let t = b.data.column(1).as_primitive::<TimestampMillisecondType>();
                for i in 0..b.num_rows() {
                    lines.push(format!(
                        "{}[{}, {}]",
                        b.kind(i).short_string(),
                        k.value(i),
                        t.value(i)
                    ));
                }
            }
        }
        lines
    }

    #[test]
    fn keeping_the_first_row_emits_the_earliest_once_the_watermark_passes_it() {
        let lines = run_with_watermarks(
            false,
            &[
                (
                    &[("a", 10), ("b", 5), ("a", 12), ("a", 8), ("a", 8)],
                    Some(9),
                ),
                // Both are out (in time order); a row behind the watermark is late, and
                // a key that has emitted ignores the rest.
                (&[("a", 3), ("b", 9), ("a", 9)], Some(20)),
                (&[("c", 30), ("c", 25)], Some(40)),
            ],
        );
        assert_eq!(lines, ["+I[b, 5]", "+I[a, 8]", "+I[c, 25]"]);
    }

    #[test]
    fn keeping_the_last_row_replaces_it_with_one_as_late_or_later() {
        let lines = run(true, &[("a", 10), ("a", 9), ("a", 10), ("a", 11)]);
        assert_eq!(
            lines,
            [
                "+I[a, 10]",
                "-U[a, 10]",
                "+U[a, 10]",
                "-U[a, 10]",
                "+U[a, 11]"
            ]
        );
    }
}
