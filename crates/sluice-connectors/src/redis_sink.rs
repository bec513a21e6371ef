//! The `redis` sink: the latest row of every primary key, for fast lookups by key. Each row is
//! a Redis hash (`data-type` = `hash`: a field per column, a NULL one removed) or a string
//! (`data-type` = `string`: the row in the table's `format`, JSON by default) under the key
//! `key-prefix` + the primary key's values joined by `key-separator`. An insert or update
//! (`+I`, `+U`) writes the key, a retraction (`-U`, `-D`) removes it, as Flink's upsert sinks
//! do: an update's `+U` follows its `-U` and writes the key again, and a row a filter after an
//! aggregate (`HAVING`) no longer passes has only its `-U`.
//! Every batch goes in one pipeline, in order, before the next is taken; a lost connection is
//! opened again and the batch retried (`sink.max-retries`), a command Redis refuses fails the
//! job with its message.
//!
//! Delivery: at least once, idempotent by key: a replay after a crash writes the same keys
//! again with the same values.

use crate::format::{self, encode_rows, text, LineEncoder};
use crate::Connector;
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OPTIONS: &[&str] = &[
    "connector",
    "url",
    "data-type",
    "key-prefix",
    "key-separator",
    "format",
    "sink.max-retries",
    "sink.parallelism",
];

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `redis` connector.
pub struct RedisConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataType {
    Hash,
    String,
}

impl Connector for RedisConnector {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let o = &spec.options;
        let owner = o.owner.clone();
        let data_type = match o.string("data-type", "hash").as_str() {
            "hash" => DataType::Hash,
            "string" => DataType::String,
            other => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'data-type' = '{other}' is not supported; use 'hash' or 'string'"
                )))
            }
        };
        let format = if data_type == DataType::String {
            let with_default = if o.get("format").is_none() {
                let mut values: std::collections::BTreeMap<String, String> = o
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                values.insert("format".into(), "json".into());
                sluice_common::Options::new(owner.clone(), values)
            } else {
                o.clone()
            };
            let f = format::checked_format(&with_default, OPTIONS, format::FORMATS)?;
            format::encoder(&f, spec.schema.clone(), o, &spec.time_zone)?;
            Some(f)
        } else {
            o.check_known(OPTIONS, &[])?;
            if o.get("format").is_some() {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'format' is for 'data-type' = 'string'; a hash holds a field per column"
                )));
            }
            None
        };
        if spec.primary_key.is_empty() {
            return Err(SluiceError::Plan(format!(
                "table '{}': the redis sink needs a PRIMARY KEY (... ) NOT ENFORCED: its values make each row's Redis key",
                spec.table
            )));
        }
        let url = o.required("url")?.to_string();
        // A bad URL fails here, not when the job starts.
        redis::Client::open(url.as_str()).map_err(|e| {
            SluiceError::Config(format!("{owner}: 'url' = '{url}' is not a Redis URL: {e}"))
        })?;
        Ok(Arc::new(RedisFactory {
            spec: spec.clone(),
            url,
            data_type,
            format,
            prefix: o.string("key-prefix", ""),
            separator: o.string("key-separator", ":"),
            max_retries: o.i64("sink.max-retries")?.unwrap_or(3).max(0) as u32,
        }))
    }
}

struct RedisFactory {
    spec: SinkSpec,
    url: String,
    data_type: DataType,
    format: Option<String>,
    prefix: String,
    separator: String,
    max_retries: u32,
}

impl OperatorFactory for RedisFactory {
    fn name(&self) -> String {
        format!("Sink: redis({})", self.spec.table)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let owner = self.spec.options.owner.clone();
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| SluiceError::Config(format!("{owner}: {e}")))?;
        let connection = connect(&client, &owner, &self.url)?;
        let encoder = match &self.format {
            Some(f) => Some(format::encoder(
                f,
                self.spec.schema.clone(),
                &self.spec.options,
                &self.spec.time_zone,
            )?),
            None => None,
        };
        Ok(Box::new(RedisSink {
            owner,
            url: self.url.clone(),
            client,
            connection: Some(connection),
            data_type: self.data_type,
            encoder,
            key: self.spec.primary_key.clone(),
            names: self
                .spec
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            prefix: self.prefix.clone(),
            separator: self.separator.clone(),
            max_retries: self.max_retries,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
            errors: ctx.sink_errors(),
        }))
    }
}

fn connect(client: &redis::Client, owner: &str, url: &str) -> Result<redis::Connection> {
    client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| {
            SluiceError::Runtime(format!("{owner}: cannot connect to Redis at '{url}': {e}"))
        })
}

struct RedisSink {
    owner: String,
    url: String,
    client: redis::Client,
    connection: Option<redis::Connection>,
    data_type: DataType,
    /// For `string`: the row's encoding.
    encoder: Option<Box<dyn LineEncoder>>,
    key: Vec<usize>,
    names: Vec<String>,
    prefix: String,
    separator: String,
    max_retries: u32,
    rows: Arc<AtomicU64>,
    errors: SinkErrors,
}

impl RedisSink {
    fn key_of(&self, batch: &RecordBatch, row: usize) -> String {
        let mut key = self.prefix.clone();
        for (i, &c) in self.key.iter().enumerate() {
            if i > 0 {
                key.push_str(&self.separator);
            }
            key.push_str(&value(batch, c, row).unwrap_or_else(|| "null".into()));
        }
        key
    }

    /// The commands for `batch`, in order; how many rows they write.
    fn pipeline(&mut self, batch: &ChangeBatch) -> Result<(redis::Pipeline, u64)> {
        let data = &batch.data;
        let mut buf = Vec::new();
        let lines = match self.encoder.as_mut() {
            Some(enc) => Some(encode_rows(enc.as_mut(), data, &mut buf)?),
            None => None,
        };
        let mut pipe = redis::pipe();
        let mut written = 0;
        for row in 0..data.num_rows() {
            let key = self.key_of(data, row);
            match batch.kind(row) {
                // As Flink's upsert sinks: `-U` removes the row (the `+U` that follows an
                // update writes it again; after a filter such as HAVING, none may follow).
                RowKind::UpdateBefore | RowKind::Delete => {
                    pipe.cmd("DEL").arg(&key).ignore();
                }
                RowKind::Insert | RowKind::UpdateAfter => match (&lines, self.data_type) {
                    (Some(l), _) => {
                        pipe.cmd("SET")
                            .arg(&key)
                            .arg(&buf[l[row].0..l[row].1])
                            .ignore();
                    }
                    (None, _) => {
                        let mut set = redis::cmd("HSET");
                        set.arg(&key);
                        let mut unset = redis::cmd("HDEL");
                        unset.arg(&key);
                        let (mut sets, mut unsets) = (0, 0);
                        for (c, name) in self.names.iter().enumerate() {
                            match value(data, c, row) {
                                Some(v) => {
                                    set.arg(name).arg(v);
                                    sets += 1;
                                }
                                None => {
                                    unset.arg(name);
                                    unsets += 1;
                                }
                            }
                        }
                        if sets > 0 {
                            pipe.add_command(set).ignore();
                        }
                        if unsets > 0 {
                            pipe.add_command(unset).ignore();
                        }
                    }
                },
            }
            written += 1;
        }
        Ok((pipe, written))
    }
}

/// Column `c` of `row` as text, as the `csv` format writes it (`None`: NULL).
fn value(batch: &RecordBatch, c: usize, row: usize) -> Option<String> {
    text::format_value(batch.column(c), row, text::Style::Sql)
}

impl Operator for RedisSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let (pipe, written) = self.pipeline(&batch)?;
        let mut attempt = 0;
        loop {
            let why = match self.connection.as_mut() {
                None => match connect(&self.client, &self.owner, &self.url) {
                    Ok(c) => {
                        self.connection = Some(c);
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
                Some(c) => match pipe.exec(c) {
                    Ok(()) => break,
                    Err(e) => {
                        let lost = e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_connection_refusal()
                            || e.is_timeout();
                        if !lost {
                            self.errors.add(written);
                            return Err(SluiceError::Runtime(format!(
                                "{}: Redis at '{}' refused a write of {written} rows: {e}",
                                self.owner, self.url
                            )));
                        }
                        e.to_string()
                    }
                },
            };
            self.errors.add(written);
            if attempt >= self.max_retries {
                return Err(SluiceError::Runtime(format!(
                    "{}: cannot write {written} rows to Redis at '{}' after {} attempts: {why}",
                    self.owner,
                    self.url,
                    attempt + 1
                )));
            }
            attempt += 1;
            tracing::warn!(
                "{}: Redis at '{}': {why}; reconnecting (attempt {attempt} of {})",
                self.owner,
                self.url,
                self.max_retries
            );
            self.connection = None;
            std::thread::sleep(Duration::from_secs(attempt as u64));
        }
        self.rows.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }
}
