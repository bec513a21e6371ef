//! Flink's `datagen` connector: random or sequential rows at a given rate.

use crate::Connector;
use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array,
    Int64Array, Int8Array, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_common::{ChangeBatch, Result, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows in one batch at most.
const MAX_BATCH_ROWS: u64 = 4096;

/// The `datagen` connector.
pub struct DataGenConnector;

#[derive(Debug, Clone)]
enum FieldGen {
    Random {
        min: f64,
        max: f64,
        length: usize,
        max_past_ms: i64,
        null_rate: f64,
    },
    Sequence {
        start: i64,
        end: i64,
    },
}

impl Connector for DataGenConnector {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), &[])?;
        let o = &spec.options;
        o.check_known(
            &[
                "connector",
                "rows-per-second",
                "number-of-rows",
                "scan.parallelism",
            ],
            &["fields."],
        )?;
        let field_names: Vec<&str> = spec
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        for (k, _) in o.iter() {
            if let Some(rest) = k.strip_prefix("fields.") {
                let (field, opt) = rest.rsplit_once('.').unwrap_or((rest, ""));
                if !field_names.contains(&field) {
                    return Err(SluiceError::Config(format!(
                        "{}: option '{k}' names no column; columns are: {}",
                        o.owner,
                        field_names.join(", ")
                    )));
                }
                const FIELD_OPTS: &[&str] = &[
                    "kind",
                    "min",
                    "max",
                    "max-past",
                    "length",
                    "start",
                    "end",
                    "null-rate",
                    "var-len",
                ];
                if !FIELD_OPTS.contains(&opt) {
                    return Err(SluiceError::Config(format!(
                        "{}: unknown option '{k}'. Valid field options are: {}",
                        o.owner,
                        FIELD_OPTS.join(", ")
                    )));
                }
            }
        }
        let mut gens = Vec::new();
        let mut sequence_rows: Option<u64> = None;
        for f in spec.schema.fields() {
            let key = |s: &str| format!("fields.{}.{s}", f.name());
            let kind = o.string(&key("kind"), "random");
            let g = match kind.as_str() {
                "random" => {
                    let (dmin, dmax) = default_range(f.data_type());
                    FieldGen::Random {
                        min: o.f64(&key("min"))?.unwrap_or(dmin),
                        max: o.f64(&key("max"))?.unwrap_or(dmax),
                        length: o.i64(&key("length"))?.unwrap_or(100).max(0) as usize,
                        max_past_ms: o
                            .duration(&key("max-past"))?
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0),
                        null_rate: o.f64(&key("null-rate"))?.unwrap_or(0.0),
                    }
                }
                "sequence" => {
                    let start = o.i64(&key("start"))?.ok_or_else(|| {
                        SluiceError::Config(format!(
                            "{}: '{}' is required for a sequence",
                            o.owner,
                            key("start")
                        ))
                    })?;
                    let end = o.i64(&key("end"))?.ok_or_else(|| {
                        SluiceError::Config(format!(
                            "{}: '{}' is required for a sequence",
                            o.owner,
                            key("end")
                        ))
                    })?;
                    if end < start {
                        return Err(SluiceError::Config(format!(
                            "{}: '{}' is below '{}'",
                            o.owner,
                            key("end"),
                            key("start")
                        )));
                    }
                    let n = (end - start + 1) as u64;
                    sequence_rows = Some(sequence_rows.map_or(n, |m| m.min(n)));
                    FieldGen::Sequence { start, end }
                }
                other => {
                    return Err(SluiceError::Config(format!(
                        "{}: option '{}' has value '{other}', expected random or sequence",
                        o.owner,
                        key("kind")
                    )))
                }
            };
            gens.push(g);
        }
        let number_of_rows = match (o.i64("number-of-rows")?, sequence_rows) {
            (Some(n), Some(s)) => Some((n.max(0) as u64).min(s)),
            (Some(n), None) => Some(n.max(0) as u64),
            (None, s) => s,
        };
        Ok(Arc::new(DataGenFactory {
            schema: spec.schema.clone(),
            gens,
            rows_per_second: o.i64("rows-per-second")?.unwrap_or(10_000).max(1) as u64,
            number_of_rows,
        }))
    }
}

fn default_range(t: &DataType) -> (f64, f64) {
    match t {
        DataType::Int8 => (i8::MIN as f64, i8::MAX as f64),
        DataType::Int16 => (i16::MIN as f64, i16::MAX as f64),
        DataType::Int32 => (i32::MIN as f64, i32::MAX as f64),
        DataType::Int64 => (i64::MIN as f64, i64::MAX as f64),
        _ => (0.0, 1.0e6),
    }
}

struct DataGenFactory {
    schema: SchemaRef,
    gens: Vec<FieldGen>,
    rows_per_second: u64,
    number_of_rows: Option<u64>,
}

impl SourceFactory for DataGenFactory {
    fn name(&self) -> String {
        "datagen".into()
    }

    fn is_bounded(&self) -> bool {
        self.number_of_rows.is_some()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let p = ctx.parallelism as u64;
        let i = ctx.subtask_index as u64;
        Ok(Box::new(DataGen {
            schema: self.schema.clone(),
            gens: self.gens.clone(),
            rate: (self.rows_per_second / p).max(1),
            number_of_rows: self.number_of_rows,
            stripes: vec![Stripe::new(i, p, self.number_of_rows)],
            subtask: i,
            parallelism: p,
            started: Instant::now(),
            rng: SmallRng::seed_from_u64(0x5EED ^ i),
        }))
    }
}

/// A split of the generated sequence: rows `offset`, `offset + stride`, `offset + 2 *
/// stride`, ... of the whole sequence. Subtask `i` of `p` starts with the stripe `(i, p)`; a
/// restore at another parallelism deals the old stripes to the new subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stripe {
    offset: u64,
    stride: u64,
    /// Rows of the stripe produced so far.
    produced: u64,
    /// Rows of the stripe still to produce (`None`: unbounded).
    remaining: Option<u64>,
}

impl Stripe {
    /// The whole stripe `(offset, stride)` of a sequence of `rows` rows (`None`: unbounded).
    fn new(offset: u64, stride: u64, rows: Option<u64>) -> Self {
        let len = rows.map(|n| n / stride + u64::from(offset < n % stride));
        Stripe {
            offset,
            stride,
            produced: 0,
            remaining: len,
        }
    }

    /// The index in the whole sequence of the next row.
    fn next_index(&self) -> u64 {
        self.offset + self.produced * self.stride
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// The first field of a datagen position that lists its stripes (Sluice 0.1 wrote only the
/// number of rows produced).
const STRIPES_MAGIC: &str = "datagen-stripes-1";

struct DataGen {
    schema: SchemaRef,
    gens: Vec<FieldGen>,
    /// Rows per second of this subtask.
    rate: u64,
    number_of_rows: Option<u64>,
    stripes: Vec<Stripe>,
    subtask: u64,
    parallelism: u64,
    started: Instant,
    rng: SmallRng,
}

impl DataGen {
    /// A column of `n` values; `seq` holds each row's index in the whole sequence.
    fn column(&mut self, seq: &[i64], g: &FieldGen, t: &DataType, n: usize) -> Result<ArrayRef> {
        let rng = &mut self.rng;
        let mut nums = |min: f64, max: f64| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    if max > min {
                        rng.random_range(min..=max)
                    } else {
                        min
                    }
                })
                .collect()
        };
        let values: Vec<f64> = match g {
            FieldGen::Sequence { start, end } => {
                seq.iter().map(|s| (*start + s).min(*end) as f64).collect()
            }
            FieldGen::Random { min, max, .. } => nums(*min, *max),
        };
        let nulls: Vec<bool> = match g {
            FieldGen::Random { null_rate, .. } if *null_rate > 0.0 => (0..n)
                .map(|_| self.rng.random_bool(null_rate.clamp(0.0, 1.0)))
                .collect(),
            _ => vec![false; n],
        };
        let opt = |i: usize, v: f64| if nulls[i] { None } else { Some(v) };
        let col: ArrayRef = match t {
            DataType::Int8 => Arc::new(Int8Array::from_iter(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| opt(i, *v).map(|v| v as i8)),
            )),
            DataType::Int16 => Arc::new(Int16Array::from_iter(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| opt(i, *v).map(|v| v as i16)),
            )),
            DataType::Int32 => Arc::new(Int32Array::from_iter(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| opt(i, *v).map(|v| v as i32)),
            )),
            DataType::Int64 => match g {
                FieldGen::Sequence { start, end } => Arc::new(Int64Array::from_iter(
                    seq.iter().map(|s| Some((*start + s).min(*end))),
                )),
                _ => Arc::new(Int64Array::from_iter(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| opt(i, *v).map(|v| v as i64)),
                )),
            },
            DataType::Float32 => Arc::new(Float32Array::from_iter(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| opt(i, *v).map(|v| v as f32)),
            )),
            DataType::Float64 => Arc::new(Float64Array::from_iter(
                values.iter().enumerate().map(|(i, v)| opt(i, *v)),
            )),
            DataType::Decimal128(p, s) => {
                Arc::new(
                    Decimal128Array::from_iter(values.iter().enumerate().map(|(i, v)| {
                        opt(i, *v).map(|v| (v * 10f64.powi(*s as i32)).round() as i128)
                    }))
                    .with_precision_and_scale(*p, *s)?,
                )
            }
            DataType::Boolean => Arc::new(BooleanArray::from_iter((0..n).map(|i| {
                if nulls[i] {
                    None
                } else {
                    Some(self.rng.random_bool(0.5))
                }
            }))),
            DataType::Utf8 => match g {
                FieldGen::Sequence { start, end } => Arc::new(StringArray::from_iter_values(
                    seq.iter().map(|s| (*start + s).min(*end).to_string()),
                )),
                FieldGen::Random { length, .. } => {
                    let mut out = Vec::with_capacity(n);
                    for &null in nulls.iter().take(n) {
                        if null {
                            out.push(None);
                            continue;
                        }
                        let s: String = (0..*length)
                            .map(|_| {
                                char::from_digit(self.rng.random_range(0..16), 16).unwrap_or('0')
                            })
                            .collect();
                        out.push(Some(s));
                    }
                    Arc::new(StringArray::from(out))
                }
            },
            DataType::Timestamp(TimeUnit::Millisecond, tz) => {
                let now = chrono::Utc::now().timestamp_millis();
                let past = match g {
                    FieldGen::Random { max_past_ms, .. } => *max_past_ms,
                    _ => 0,
                };
                let v: Vec<Option<i64>> = (0..n)
                    .map(|i| {
                        if nulls[i] {
                            None
                        } else {
                            Some(
                                now - if past > 0 {
                                    self.rng.random_range(0..=past)
                                } else {
                                    0
                                },
                            )
                        }
                    })
                    .collect();
                Arc::new(TimestampMillisecondArray::from(v).with_timezone_opt(tz.clone()))
            }
            other => {
                return Err(SluiceError::Plan(format!(
                    "datagen cannot generate values of type {other}"
                )))
            }
        };
        Ok(col)
    }
}

impl DataGen {
    /// Rows produced so far by this subtask.
    fn produced(&self) -> u64 {
        self.stripes.iter().map(|s| s.produced).sum()
    }

    /// Sets the stripes this subtask goes on with, and keeps the rate: as if the rows so far
    /// had been produced at it.
    fn resume(&mut self, stripes: Vec<Stripe>) {
        self.stripes = stripes;
        let behind = Duration::from_secs_f64(self.produced() as f64 / self.rate.max(1) as f64);
        self.started = Instant::now()
            .checked_sub(behind)
            .unwrap_or_else(Instant::now);
    }

    /// The stripes a position lists; `subtask` and `parallelism` are those of the subtask
    /// that wrote it (a position of Sluice 0.1 is its one stripe's row count).
    fn read_stripes(
        &self,
        state: &mut StateReader<'_>,
        subtask: u64,
        parallelism: u64,
    ) -> Result<Vec<Stripe>> {
        if state.clone().str().ok() != Some(STRIPES_MAGIC) {
            let mut stripe = Stripe::new(subtask, parallelism, self.number_of_rows);
            stripe.produced = state.u64()?;
            stripe.remaining = stripe.remaining.map(|r| r.saturating_sub(stripe.produced));
            return Ok(vec![stripe]);
        }
        state.str()?;
        let mut out = Vec::new();
        for _ in 0..state.count()? {
            let (offset, stride, produced, remaining) =
                (state.u64()?, state.u64()?, state.u64()?, state.u64()?);
            if stride == 0 {
                return Err(SluiceError::Runtime(
                    "a datagen position with a stride of 0 is corrupt".into(),
                ));
            }
            out.push(Stripe {
                offset,
                stride,
                produced,
                remaining: (remaining != u64::MAX).then_some(remaining),
            });
        }
        Ok(out)
    }
}

impl SourceReader for DataGen {
    fn has_nothing_to_read(&self) -> bool {
        self.stripes.iter().all(Stripe::done)
    }

    /// Each stripe's rows produced so far: sequences go on from there after a restore
    /// (random values are drawn anew, as Flink's datagen does).
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_str(STRIPES_MAGIC);
        state.put_u64(self.stripes.len() as u64);
        for s in &self.stripes {
            state.put_u64(s.offset);
            state.put_u64(s.stride);
            state.put_u64(s.produced);
            state.put_u64(s.remaining.unwrap_or(u64::MAX));
        }
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let stripes = self.read_stripes(state, self.subtask, self.parallelism)?;
        self.resume(stripes);
        Ok(())
    }

    /// Every old subtask's unfinished stripes, in order of their offset, are dealt to the
    /// new subtasks in turn (a new subtask may get none, or several).
    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let mut all = Vec::new();
        for (j, state) in states.iter_mut() {
            all.extend(self.read_stripes(state, *j as u64, old as u64)?);
        }
        all.retain(|s| !s.done());
        all.sort_by_key(|s| (s.offset, s.stride));
        let mine = all
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k as u64 % self.parallelism == self.subtask)
            .map(|(_, s)| s)
            .collect();
        self.resume(mine);
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if self.has_nothing_to_read() {
            return Ok(SourcePoll::End);
        }
        // Rows allowed by now at the configured rate.
        let allowed = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64 + 1;
        let produced = self.produced();
        if allowed <= produced {
            let wait =
                Duration::from_secs_f64(1.0 / self.rate as f64).min(Duration::from_millis(50));
            std::thread::sleep(wait);
            return Ok(SourcePoll::Idle);
        }
        let n = (allowed - produced).min(MAX_BATCH_ROWS) as usize;
        let seq = self.next_indexes(n);
        let gens = self.gens.clone();
        let schema = self.schema.clone();
        let mut cols = Vec::with_capacity(gens.len());
        for (g, f) in gens.iter().zip(schema.fields()) {
            cols.push(self.column(&seq, g, f.data_type(), seq.len())?);
        }
        Ok(SourcePoll::Batch(ChangeBatch::inserts(
            RecordBatch::try_new(schema, cols)?,
        )))
    }
}

impl DataGen {
    /// Takes the next `n` rows (fewer if the stripes end first) of this subtask's stripes,
    /// merged in the order of the whole sequence: after a restore at a lower parallelism, the
    /// rows of several stripes come out as the one sequence they are part of.
    fn next_indexes(&mut self, n: usize) -> Vec<i64> {
        if let [s] = self.stripes.as_mut_slice() {
            // One stripe (the usual case): a run of its indexes.
            let take = s.remaining.map_or(n as u64, |r| r.min(n as u64));
            let seq = (0..take)
                .map(|k| (s.next_index() + k * s.stride) as i64)
                .collect();
            s.produced += take;
            if let Some(r) = s.remaining.as_mut() {
                *r -= take;
            }
            return seq;
        }
        let mut seq = Vec::with_capacity(n);
        while seq.len() < n {
            let Some(s) = self
                .stripes
                .iter_mut()
                .filter(|s| !s.done())
                .min_by_key(|s| s.next_index())
            else {
                break;
            };
            seq.push(s.next_index() as i64);
            s.produced += 1;
            if let Some(r) = s.remaining.as_mut() {
                *r -= 1;
            }
        }
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index a set of stripes still produces.
    fn indexes(stripes: &[Stripe]) -> Vec<u64> {
        let mut out: Vec<u64> = stripes
            .iter()
            .flat_map(|s| {
                (0..s.remaining.unwrap_or(0)).map(move |k| s.offset + (s.produced + k) * s.stride)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn stripes_cover_the_sequence_once() {
        for p in 1..5 {
            let stripes: Vec<Stripe> = (0..p).map(|i| Stripe::new(i, p, Some(10))).collect();
            assert_eq!(indexes(&stripes), (0..10).collect::<Vec<_>>(), "p = {p}");
        }
        let mut s = Stripe::new(1, 3, Some(10));
        assert_eq!(s.remaining, Some(3));
        s.produced = 2;
        s.remaining = Some(1);
        assert_eq!(s.next_index(), 7);
        assert_eq!(Stripe::new(0, 2, None).remaining, None);
    }

    #[test]
    fn several_stripes_come_out_as_one_sequence() {
        let mut g = DataGen {
            schema: Arc::new(arrow::datatypes::Schema::empty()),
            gens: Vec::new(),
            rate: 1,
            number_of_rows: Some(10),
            stripes: vec![Stripe::new(1, 2, Some(10)), Stripe::new(0, 2, Some(10))],
            subtask: 0,
            parallelism: 1,
            started: Instant::now(),
            rng: SmallRng::seed_from_u64(0),
        };
        g.stripes[1].produced = 2;
        g.stripes[1].remaining = Some(3);
        assert_eq!(g.next_indexes(3), vec![1, 3, 4]);
        assert_eq!(g.next_indexes(100), vec![5, 6, 7, 8, 9]);
        assert!(g.has_nothing_to_read());
        g.stripes = vec![Stripe::new(1, 3, Some(10))];
        assert_eq!(g.next_indexes(2), vec![1, 4]);
        assert_eq!(g.next_indexes(5), vec![7]);
        assert!(g.has_nothing_to_read());
    }
}
