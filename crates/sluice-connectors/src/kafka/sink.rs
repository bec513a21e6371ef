//! The Kafka sink: each subtask writes with one librdkafka producer; a record's key and value
//! are encoded with the table's formats. `upsert-kafka` writes `+I`/`+U` as upserts and `-D`
//! as tombstones (an empty value), and leaves `-U` out, as Flink does.

use super::options::{client_config, KafkaOptions, LogContext, Partitioner, Topics};
use crate::format::{self, LineEncoder};
use arrow::record_batch::RecordBatch;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long closing waits for outstanding records (librdkafka fails each after its
/// `message.timeout.ms`).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) fn factory(spec: SinkSpec, options: KafkaOptions) -> Result<Arc<dyn OperatorFactory>> {
    let value_schema = options.value_schema(&spec.schema);
    let key_schema = options.key_schema(&spec.schema);
    format::encoder(
        &options.value_format,
        value_schema,
        &options.value_format_options,
        &spec.time_zone,
    )?;
    if let Some(k) = &options.key_format {
        format::encoder(k, key_schema, &options.key_format_options, &spec.time_zone)?;
    }
    drop(producer(&options, 0)?);
    Ok(Arc::new(KafkaSinkFactory { spec, options }))
}

fn producer(options: &KafkaOptions, subtask: usize) -> Result<ThreadedProducer<SinkContext>> {
    let mut c = client_config(options);
    c.set("client.id", format!("sluice-sink-{subtask}"));
    if !options.properties.contains_key("partitioner") {
        // The Java client's key hash, so that keys land where Flink and Kafka Streams put them.
        c.set("partitioner", "murmur2_random");
    }
    c.create_with_context(SinkContext {
        log: LogContext {
            owner: options.owner.clone(),
        },
        failure: Arc::new(Mutex::new(None)),
    })
    .map_err(|e| SluiceError::Config(format!("{}: Kafka client: {e}", options.owner)))
}

/// Remembers the first record the brokers did not take.
struct SinkContext {
    log: LogContext,
    failure: Arc<Mutex<Option<String>>>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason)
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if let Ok(mut slot) = self.failure.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

struct KafkaSinkFactory {
    spec: SinkSpec,
    options: KafkaOptions,
}

impl OperatorFactory for KafkaSinkFactory {
    fn name(&self) -> String {
        format!(
            "Sink: {}({})",
            if self.options.upsert {
                "upsert-kafka"
            } else {
                "kafka"
            },
            self.topic()
        )
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let o = &self.options;
        let producer = producer(o, ctx.subtask_index)?;
        let failure = producer.context().failure.clone();
        Ok(Box::new(KafkaSink {
            producer,
            failure,
            topic: self.topic(),
            value_encoder: format::encoder(
                &o.value_format,
                o.value_schema(&self.spec.schema),
                &o.value_format_options,
                &self.spec.time_zone,
            )?,
            key_encoder: match &o.key_format {
                Some(k) => Some(format::encoder(
                    k,
                    o.key_schema(&self.spec.schema),
                    &o.key_format_options,
                    &self.spec.time_zone,
                )?),
                None => None,
            },
            options: o.clone(),
            subtask: ctx.subtask_index,
            partitions: None,
            round_robin: ctx.subtask_index,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
        }))
    }
}

impl KafkaSinkFactory {
    fn topic(&self) -> String {
        match &self.options.topics {
            Topics::List(t) => t.first().cloned().unwrap_or_default(),
            Topics::Pattern(p) => p.as_str().to_string(),
        }
    }
}

struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    failure: Arc<Mutex<Option<String>>>,
    topic: String,
    value_encoder: Box<dyn LineEncoder>,
    key_encoder: Option<Box<dyn LineEncoder>>,
    options: KafkaOptions,
    subtask: usize,
    /// The topic's partition count, for the `fixed` and `round-robin` partitioners.
    partitions: Option<i32>,
    round_robin: usize,
    rows: Arc<AtomicU64>,
}

/// Encodes `batch` and returns one slice per row (the lines, without newlines).
fn encode_rows(
    encoder: &mut dyn LineEncoder,
    batch: &RecordBatch,
    buf: &mut Vec<u8>,
) -> Result<Vec<(usize, usize)>> {
    buf.clear();
    encoder.encode(batch, buf)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        out.push((start, end));
        start = end + 1;
    }
    if out.len() != batch.num_rows() {
        return Err(SluiceError::Runtime(format!(
            "internal: {} rows encoded as {} lines",
            batch.num_rows(),
            out.len()
        )));
    }
    Ok(out)
}

impl KafkaSink {
    fn check_failure(&self) -> Result<()> {
        if let Ok(slot) = self.failure.lock() {
            if let Some(e) = slot.as_ref() {
                return Err(SluiceError::Runtime(format!(
                    "{}: a record could not be written to topic '{}': {e}",
                    self.options.owner, self.topic
                )));
            }
        }
        Ok(())
    }

    fn partition_count(&mut self) -> Result<i32> {
        if let Some(n) = self.partitions {
            return Ok(n);
        }
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(|e| {
                SluiceError::Runtime(format!(
                    "{}: cannot read the partitions of topic '{}' from '{}': {e}",
                    self.options.owner, self.topic, self.options.bootstrap_servers
                ))
            })?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if n == 0 {
            return Err(SluiceError::Runtime(format!(
                "{}: topic '{}' has no partitions (does it exist?)",
                self.options.owner, self.topic
            )));
        }
        self.partitions = Some(n);
        Ok(n)
    }

    fn send(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<()> {
        let partition = match self.options.partitioner {
            Partitioner::Default => None,
            Partitioner::Fixed => Some(self.subtask as i32 % self.partition_count()?),
            Partitioner::RoundRobin => {
                let n = self.partition_count()?;
                self.round_robin = self.round_robin.wrapping_add(1);
                Some((self.round_robin % n as usize) as i32)
            }
        };
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: wait for the brokers to take some.
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                    self.check_failure()?;
                }
                Err((e, _)) => {
                    return Err(SluiceError::Runtime(format!(
                        "{}: cannot write to topic '{}': {e}",
                        self.options.owner, self.topic
                    )))
                }
            }
        }
    }
}

impl Operator for KafkaSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        self.check_failure()?;
        let data = &batch.data;
        let value_batch = data.project(&self.options.value_columns)?;
        let mut value_buf = Vec::new();
        let values = encode_rows(self.value_encoder.as_mut(), &value_batch, &mut value_buf)?;
        let mut key_buf = Vec::new();
        let keys = match self.key_encoder.as_mut() {
            Some(enc) => {
                let key_batch = data.project(&self.options.key_columns)?;
                Some(encode_rows(enc.as_mut(), &key_batch, &mut key_buf)?)
            }
            None => None,
        };
        let mut written = 0;
        for i in 0..data.num_rows() {
            let key = keys.as_ref().map(|k| &key_buf[k[i].0..k[i].1]);
            let kind = batch.kind(i);
            let value = match kind {
                RowKind::Insert | RowKind::UpdateAfter => {
                    Some(&value_buf[values[i].0..values[i].1])
                }
                RowKind::Delete if self.options.upsert => None,
                RowKind::UpdateBefore if self.options.upsert => continue,
                _ => {
                    return Err(SluiceError::Runtime(format!(
                        "{}: the kafka sink got a {} row; it only takes inserts",
                        self.options.owner,
                        kind.short_string()
                    )))
                }
            };
            self.send(key, value)?;
            written += 1;
        }
        self.rows.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// At-least-once: every record sent before the barrier is acknowledged before the
    /// checkpoint counts, as Flink's Kafka sink flushes on checkpoints.
    fn snapshot_state(
        &mut self,
        _checkpoint: sluice_common::CheckpointId,
        _state: &mut sluice_engine::StateWriter,
    ) -> Result<()> {
        self.flush()
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()
    }
}

impl KafkaSink {
    fn flush(&mut self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            SluiceError::Runtime(format!(
                "{}: records to topic '{}' were not all written: {e}",
                self.options.owner, self.topic
            ))
        })?;
        self.check_failure()
    }
}
