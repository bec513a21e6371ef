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
        // Subtask i produces rows i, i + p, i + 2p, ... of the whole sequence.
        let my_rows = self.number_of_rows.map(|n| n / p + u64::from(i < n % p));
        Ok(Box::new(DataGen {
            schema: self.schema.clone(),
            gens: self.gens.clone(),
            rate: (self.rows_per_second / p).max(1),
            remaining: my_rows,
            produced: 0,
            subtask: i,
            parallelism: p,
            started: Instant::now(),
            rng: SmallRng::seed_from_u64(0x5EED ^ i),
        }))
    }
}

struct DataGen {
    schema: SchemaRef,
    gens: Vec<FieldGen>,
    rate: u64,
    remaining: Option<u64>,
    produced: u64,
    subtask: u64,
    parallelism: u64,
    started: Instant,
    rng: SmallRng,
}

impl DataGen {
    fn column(&mut self, g: &FieldGen, t: &DataType, n: usize) -> Result<ArrayRef> {
        let seq: Vec<i64> = (0..n as u64)
            .map(|k| ((self.produced + k) * self.parallelism + self.subtask) as i64)
            .collect();
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

impl SourceReader for DataGen {
    fn has_nothing_to_read(&self) -> bool {
        self.remaining == Some(0)
    }

    /// The rows produced so far: sequences go on from there after a restore (random values
    /// are drawn anew, as Flink's datagen does).
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_u64(self.produced);
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let produced = state.u64()?;
        if let Some(r) = self.remaining.as_mut() {
            *r = r.saturating_sub(produced);
        }
        self.produced = produced;
        // Keep the rate: as if the rows so far had been produced at it.
        let behind = Duration::from_secs_f64(produced as f64 / self.rate.max(1) as f64);
        self.started = Instant::now()
            .checked_sub(behind)
            .unwrap_or_else(Instant::now);
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if self.remaining == Some(0) {
            return Ok(SourcePoll::End);
        }
        // Rows allowed by now at the configured rate.
        let allowed = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64 + 1;
        if allowed <= self.produced {
            let wait =
                Duration::from_secs_f64(1.0 / self.rate as f64).min(Duration::from_millis(50));
            std::thread::sleep(wait);
            return Ok(SourcePoll::Idle);
        }
        let mut n = (allowed - self.produced).min(MAX_BATCH_ROWS);
        if let Some(r) = self.remaining {
            n = n.min(r);
        }
        let gens = self.gens.clone();
        let schema = self.schema.clone();
        let mut cols = Vec::with_capacity(gens.len());
        for (g, f) in gens.iter().zip(schema.fields()) {
            cols.push(self.column(g, f.data_type(), n as usize)?);
        }
        self.produced += n;
        if let Some(r) = self.remaining.as_mut() {
            *r -= n;
        }
        Ok(SourcePoll::Batch(ChangeBatch::inserts(
            RecordBatch::try_new(schema, cols)?,
        )))
    }
}
