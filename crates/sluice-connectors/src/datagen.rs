//! Flink's `datagen` connector: random or sequential rows at a given rate.

use crate::stripes::Stripes;
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
            stripes: Stripes::new(ctx.subtask_index, ctx.parallelism, self.number_of_rows),
            started: Instant::now(),
            rng: SmallRng::seed_from_u64(0x5EED ^ i),
        }))
    }
}

struct DataGen {
    schema: SchemaRef,
    gens: Vec<FieldGen>,
    /// Rows per second of this subtask.
    rate: u64,
    stripes: Stripes,
    started: Instant,
    rng: SmallRng,
}

impl DataGen {
    /// A column of `n` values; `seq` holds each row's index in the whole sequence.
    fn column(&mut self, seq: &[i64], g: &FieldGen, t: &DataType, n: usize) -> Result<ArrayRef> {
        let rng = &mut self.rng;
        // Integers are drawn from min to max, both included, as Flink's datagen does (a
        // double truncated to an integer would almost never reach max).
        let integer = t.is_integer();
        let mut nums = |min: f64, max: f64| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    if integer && max.floor() > min.ceil() {
                        rng.random_range(min.ceil() as i64..=max.floor() as i64) as f64
                    } else if max > min {
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
    /// Keeps the rate after a restore: as if the rows so far had been produced at it.
    fn resume(&mut self) {
        let behind =
            Duration::from_secs_f64(self.stripes.produced() as f64 / self.rate.max(1) as f64);
        self.started = Instant::now()
            .checked_sub(behind)
            .unwrap_or_else(Instant::now);
    }
}

impl SourceReader for DataGen {
    fn has_nothing_to_read(&self) -> bool {
        self.stripes.done()
    }

    /// Each stripe's rows produced so far: sequences go on from there after a restore
    /// (random values are drawn anew, as Flink's datagen does).
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        self.stripes.write(state);
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.stripes.restore(state)?;
        self.resume();
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        self.stripes.restore_rescaled(old, states)?;
        self.resume();
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if self.has_nothing_to_read() {
            return Ok(SourcePoll::End);
        }
        // Rows allowed by now at the configured rate.
        let allowed = (self.started.elapsed().as_secs_f64() * self.rate as f64) as u64 + 1;
        let produced = self.stripes.produced();
        if allowed <= produced {
            let wait =
                Duration::from_secs_f64(1.0 / self.rate as f64).min(Duration::from_millis(50));
            std::thread::sleep(wait);
            return Ok(SourcePoll::Idle);
        }
        let n = (allowed - produced).min(MAX_BATCH_ROWS) as usize;
        let seq: Vec<i64> = self
            .stripes
            .next_indexes(n)
            .into_iter()
            .map(|k| k as i64)
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn random_integers_reach_both_bounds() {
        let mut g = DataGen {
            schema: Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)])),
            gens: Vec::new(),
            rate: 1,
            stripes: Stripes::new(0, 1, Some(1)),
            started: Instant::now(),
            rng: SmallRng::seed_from_u64(1),
        };
        let gen = FieldGen::Random {
            min: 0.0,
            max: 2.0,
            length: 0,
            max_past_ms: 0,
            null_rate: 0.0,
        };
        let c = g.column(&[0; 300], &gen, &DataType::Int32, 300).unwrap();
        let values = c.as_primitive::<arrow::datatypes::Int32Type>();
        let mut seen = [0usize; 3];
        for v in values.values() {
            seen[*v as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
