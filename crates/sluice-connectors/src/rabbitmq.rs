//! The `rabbitmq` connector (AMQP 0.9.1): a source that consumes a queue and a sink that
//! publishes to an exchange, one row per message, in any record format.
//!
//! The source acknowledges what it read only when the checkpoint after it completes (without
//! checkpoints: once it has handed the rows on). A crash leaves the rest unacknowledged, and
//! RabbitMQ delivers it again: at least once. The subtasks are competing consumers of the
//! queue. The sink publishes persistent messages with publisher confirms and waits for every
//! confirm at each checkpoint and at the end of the input: at least once.
//!
//! lapin is asynchronous: each subtask keeps a small tokio runtime (one worker, which drives
//! the connection between calls) and blocks on it from the task thread.

use crate::format::record::{check_sink_changes, is_changelog, RecordDecoder, RecordEncoder};
use crate::format::{self, BATCH_ROWS};
use crate::Connector;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use sluice_common::{ChangeBatch, CheckpointId, Options, Result, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{
    Operator, OperatorFactory, Output, SinkSpec, SourceFactory, SourcePoll, SourceReader,
    SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OPTIONS: &[&str] = &[
    "connector",
    "url",
    "queue",
    "queue.declare",
    "exchange",
    "routing-key",
    "prefetch-count",
    "format",
    "sink.parallelism",
];

/// How long `poll` waits for a first message.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How long the broker may take to confirm what was published, at a checkpoint.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The `rabbitmq` connector.
pub struct RabbitMqConnector;

/// The options both sides share.
#[derive(Debug, Clone)]
struct AmqpOptions {
    owner: String,
    url: String,
    format: String,
}

impl AmqpOptions {
    fn parse(o: &Options) -> Result<Self> {
        let format = format::checked_format(o, OPTIONS, &format::record_formats())?;
        let url = o.required("url")?.to_string();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(SluiceError::Config(format!(
                "{}: 'url' = '{url}' is not an AMQP address such as 'amqp://guest:guest@127.0.0.1:5672/%2f'",
                o.owner
            )));
        }
        Ok(AmqpOptions {
            owner: o.owner.clone(),
            url,
            format,
        })
    }

    /// A runtime and a channel on a new connection.
    fn open(&self) -> Result<(tokio::runtime::Runtime, Connection, Channel)> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rabbitmq")
            .enable_all()
            .build()
            .map_err(|e| SluiceError::io("starting the RabbitMQ client's runtime", e))?;
        let url = self.url.clone();
        let (connection, channel) = rt
            .block_on(async move {
                let c = Connection::connect(&url, ConnectionProperties::default()).await?;
                let ch = c.create_channel().await?;
                Ok::<_, lapin::Error>((c, ch))
            })
            .map_err(|e| {
                SluiceError::Config(format!(
                    "{}: cannot connect to RabbitMQ at '{}': {e}",
                    self.owner,
                    redact(&self.url)
                ))
            })?;
        Ok((rt, connection, channel))
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Connector for RabbitMqConnector {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), &["routing-key"])?;
        let options = AmqpOptions::parse(&spec.options)?;
        RecordDecoder::new(&options.format, spec.schema.clone(), &spec.options)?;
        let queue = spec.options.required("queue")?.to_string();
        let prefetch = match spec.options.i64("prefetch-count")?.unwrap_or(10_000) {
            n @ 1..=65535 => n as u16,
            n => {
                return Err(SluiceError::Config(format!(
                    "{}: 'prefetch-count' = '{n}' must be 1 to 65535",
                    options.owner
                )))
            }
        };
        Ok(Arc::new(RabbitSourceFactory {
            spec: spec.clone(),
            declare: spec.options.bool("queue.declare", false)?,
            options,
            queue,
            prefetch,
        }))
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let options = AmqpOptions::parse(&spec.options)?;
        // Its options fail at planning.
        RecordEncoder::new(
            &options.format,
            spec.schema.clone(),
            &spec.options,
            &spec.time_zone,
        )?;
        check_sink_changes("rabbitmq", &spec.table, &options.format, spec.updating)?;
        let exchange = spec.options.string("exchange", "");
        let routing_key = match (spec.options.get("routing-key"), spec.options.get("queue")) {
            (Some(k), _) | (None, Some(k)) => k.to_string(),
            (None, None) => {
                return Err(SluiceError::Config(format!(
                    "{}: give 'routing-key' (or 'queue', to publish to that queue through the default exchange)",
                    options.owner
                )))
            }
        };
        Ok(Arc::new(RabbitSinkFactory {
            spec: spec.clone(),
            declare: spec.options.bool("queue.declare", false)?,
            queue: spec.options.get("queue").map(str::to_string),
            options,
            exchange,
            routing_key,
        }))
    }
}

/// Checks that `queue` is there (`declare`: creates it, durable, if not).
fn check_queue(
    rt: &tokio::runtime::Runtime,
    channel: &Channel,
    owner: &str,
    queue: &str,
    declare: bool,
) -> Result<()> {
    let options = QueueDeclareOptions {
        passive: !declare,
        durable: true,
        ..QueueDeclareOptions::default()
    };
    rt.block_on(channel.queue_declare(queue.into(), options, FieldTable::default()))
        .map(|_| ())
        .map_err(|e| {
            SluiceError::Config(format!(
                "{owner}: RabbitMQ queue '{queue}': {e}{}",
                if declare {
                    ""
                } else {
                    " (set 'queue.declare' = 'true' to create it)"
                }
            ))
        })
}

struct RabbitSourceFactory {
    spec: SourceSpec,
    options: AmqpOptions,
    queue: String,
    declare: bool,
    prefetch: u16,
}

impl SourceFactory for RabbitSourceFactory {
    fn name(&self) -> String {
        format!("rabbitmq [{}]", self.queue)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn produces_updates(&self) -> bool {
        is_changelog(&self.options.format)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let owner = self.options.owner.clone();
        let (rt, connection, channel) = self.options.open()?;
        check_queue(&rt, &channel, &owner, &self.queue, self.declare)?;
        let tag = format!("sluice-{}-{}-{}", ctx.job_name, ctx.node, ctx.subtask_index);
        let consumer = rt
            .block_on(async {
                channel
                    .basic_qos(self.prefetch, BasicQosOptions::default())
                    .await?;
                channel
                    .basic_consume(
                        self.queue.as_str().into(),
                        tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            })
            .map_err(|e| {
                SluiceError::Config(format!(
                    "{owner}: cannot consume RabbitMQ queue '{}': {e}",
                    self.queue
                ))
            })?;
        Ok(Box::new(RabbitReader {
            owner,
            decoder: RecordDecoder::new(
                &self.options.format,
                self.spec.schema.clone(),
                &self.spec.options,
            )?,
            produced: self.spec.produced_schema(),
            with_key: !self.spec.metadata.is_empty(),
            rt,
            connection,
            channel,
            consumer,
            last_tag: 0,
            acked: 0,
            pending_acks: Vec::new(),
            checkpointing: ctx.checkpointing,
            skipped: ctx
                .metrics
                .counter(&format!("{}: malformed messages skipped", self.spec.table)),
        }))
    }
}

/// Fails if the connection or the channel is no longer open.
fn check_connected(connection: &Connection, channel: &Channel, owner: &str) -> Result<()> {
    if connection.status().connected() && channel.status().connected() {
        Ok(())
    } else {
        Err(SluiceError::Runtime(format!(
            "{owner}: lost the connection to RabbitMQ"
        )))
    }
}

struct RabbitReader {
    owner: String,
    decoder: RecordDecoder,
    produced: arrow::datatypes::SchemaRef,
    with_key: bool,
    rt: tokio::runtime::Runtime,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// The delivery tag of the last message read, and of the last acknowledged (acknowledging
    /// a tag twice closes the channel).
    last_tag: u64,
    acked: u64,
    /// Per checkpoint taken and not yet complete, the last delivery tag it covers.
    pending_acks: Vec<(CheckpointId, u64)>,
    checkpointing: bool,
    skipped: Arc<AtomicU64>,
}

impl RabbitReader {
    /// Acknowledges every delivery up to `tag`.
    fn ack_up_to(&mut self, tag: u64) -> Result<()> {
        if tag <= self.acked {
            return Ok(());
        }
        self.acked = tag;
        self.rt
            .block_on(
                self.channel
                    .basic_ack(tag, BasicAckOptions { multiple: true }),
            )
            .map_err(|e| {
                SluiceError::Runtime(format!(
                    "{}: cannot acknowledge RabbitMQ messages: {e}",
                    self.owner
                ))
            })
    }
}

impl SourceReader for RabbitReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        let consumer = &mut self.consumer;
        let deliveries = self.rt.block_on(async {
            let mut got = Vec::new();
            match tokio::time::timeout(POLL_WAIT, consumer.next()).await {
                Ok(Some(d)) => got.push(d),
                Ok(None) => return Err(()),
                Err(_) => return Ok(got),
            }
            while got.len() < BATCH_ROWS {
                match futures_util::FutureExt::now_or_never(consumer.next()) {
                    Some(Some(d)) => got.push(d),
                    Some(None) => break,
                    None => break,
                }
            }
            Ok(got)
        });
        let deliveries = match deliveries {
            Ok(d) => d,
            Err(_) => {
                return Err(SluiceError::Runtime(format!(
                "{}: RabbitMQ closed the consumer (the queue was deleted or the connection lost)",
                self.owner
            )))
            }
        };
        if deliveries.is_empty() {
            // A lost connection ends no stream: it is seen here, and fails the job (which
            // restarts from its checkpoint when its restart strategy says so).
            check_connected(&self.connection, &self.channel, &self.owner)?;
            return Ok(SourcePoll::Idle);
        }
        let mut messages = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let d =
                d.map_err(|e| SluiceError::Runtime(format!("{}: RabbitMQ: {e}", self.owner)))?;
            self.last_tag = self.last_tag.max(d.delivery_tag);
            messages.push((d.routing_key.to_string(), d.data));
        }
        let records: Vec<&[u8]> = messages.iter().map(|m| m.1.as_slice()).collect();
        let decoded = self.decoder.decode(
            &records,
            None,
            &|i| format!("RabbitMQ message with routing key '{}'", messages[i].0),
            &self.skipped,
        )?;
        let rows = if self.with_key {
            let mut columns = decoded.rows.columns().to_vec();
            let keys: arrow::array::ArrayRef =
                Arc::new(arrow::array::StringArray::from_iter_values(
                    decoded.origins.iter().map(|&i| messages[i].0.as_str()),
                ));
            let target = self.produced.field(columns.len()).data_type();
            columns.push(arrow::compute::cast(&keys, target)?);
            arrow::record_batch::RecordBatch::try_new(self.produced.clone(), columns)?
        } else {
            decoded.rows
        };
        if !self.checkpointing {
            // Nothing to go back to: acknowledged once handed on.
            self.ack_up_to(self.last_tag)?;
        }
        if rows.num_rows() == 0 {
            return Ok(SourcePoll::Idle);
        }
        Ok(SourcePoll::Batch(match decoded.kinds {
            Some(k) => ChangeBatch::new(rows, Some(k.into())),
            None => ChangeBatch::inserts(rows),
        }))
    }

    /// Nothing is written: the queue keeps what is not acknowledged. The deliveries read so
    /// far are acknowledged when this checkpoint completes.
    fn snapshot_position(&mut self, checkpoint: CheckpointId, _s: &mut StateWriter) -> Result<()> {
        self.pending_acks.push((checkpoint, self.last_tag));
        Ok(())
    }

    fn restore_position(&mut self, _state: &mut StateReader<'_>) -> Result<()> {
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        _old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let done: Vec<u64> = self
            .pending_acks
            .iter()
            .filter(|(c, _)| *c <= checkpoint)
            .map(|(_, t)| *t)
            .collect();
        self.pending_acks.retain(|(c, _)| *c > checkpoint);
        match done.into_iter().max() {
            Some(tag) => self.ack_up_to(tag),
            None => Ok(()),
        }
    }
}

struct RabbitSinkFactory {
    spec: SinkSpec,
    options: AmqpOptions,
    exchange: String,
    routing_key: String,
    queue: Option<String>,
    declare: bool,
}

impl OperatorFactory for RabbitSinkFactory {
    fn name(&self) -> String {
        format!("Sink: rabbitmq({}{})", self.exchange, self.routing_key)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let owner = self.options.owner.clone();
        let (rt, connection, channel) = self.options.open()?;
        if let Some(q) = &self.queue {
            check_queue(&rt, &channel, &owner, q, self.declare)?;
        }
        rt.block_on(channel.confirm_select(ConfirmSelectOptions::default()))
            .map_err(|e| SluiceError::Config(format!("{owner}: RabbitMQ confirms: {e}")))?;
        let encoder = RecordEncoder::new(
            &self.options.format,
            self.spec.schema.clone(),
            &self.spec.options,
            &self.spec.time_zone,
        )?;
        Ok(Box::new(RabbitSink {
            owner,
            rt,
            connection,
            channel,
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            encoder,
            confirms: Vec::new(),
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
            errors: ctx.sink_errors(),
        }))
    }
}

struct RabbitSink {
    owner: String,
    rt: tokio::runtime::Runtime,
    connection: Connection,
    channel: Channel,
    exchange: String,
    routing_key: String,
    encoder: RecordEncoder,
    /// The confirms of what was published and not yet confirmed.
    confirms: Vec<lapin::PublisherConfirm>,
    rows: Arc<AtomicU64>,
    errors: SinkErrors,
}

/// Unconfirmed messages the sink lets pile up before it waits for their confirms.
const MAX_UNCONFIRMED: usize = 10_000;

impl RabbitSink {
    /// Waits for every confirm; a message the broker refused (nack) fails the job.
    fn flush(&mut self) -> Result<()> {
        let confirms = std::mem::take(&mut self.confirms);
        if confirms.is_empty() {
            return check_connected(&self.connection, &self.channel, &self.owner);
        }
        let n = confirms.len();
        let outcome = self.rt.block_on(async {
            tokio::time::timeout(CONFIRM_TIMEOUT, futures_util::future::join_all(confirms)).await
        });
        let results = outcome.map_err(|_| {
            self.errors.add(n as u64);
            SluiceError::Runtime(format!(
                "{}: RabbitMQ did not confirm {n} messages within {} s",
                self.owner,
                CONFIRM_TIMEOUT.as_secs()
            ))
        })?;
        let refused = results
            .iter()
            .filter(|r| !matches!(r, Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested)))
            .count();
        if refused > 0 {
            self.errors.add(refused as u64);
            let why = results
                .into_iter()
                .find_map(|r| match r {
                    Err(e) => Some(e.to_string()),
                    Ok(Confirmation::Nack(_)) => Some("the broker refused (nack)".into()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(SluiceError::Runtime(format!(
                "{}: RabbitMQ did not take {refused} of {n} messages: {why}",
                self.owner
            )));
        }
        Ok(())
    }
}

impl Operator for RabbitSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let data = &batch.data;
        let records = self.encoder.encode(&batch, &self.owner)?;
        for i in 0..records.len() {
            let payload = records.get(i).unwrap_or_default();
            let published = self.rt.block_on(self.channel.basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_delivery_mode(2),
            ));
            match published {
                Ok(confirm) => self.confirms.push(confirm),
                Err(e) => {
                    self.errors.add(1);
                    return Err(SluiceError::Runtime(format!(
                        "{}: cannot publish to RabbitMQ: {e}",
                        self.owner
                    )));
                }
            }
            if self.confirms.len() >= MAX_UNCONFIRMED {
                self.flush()?;
            }
        }
        self.rows
            .fetch_add(data.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Everything published before the barrier is confirmed before the checkpoint counts.
    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut StateWriter,
    ) -> Result<()> {
        self.flush()
    }

    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
