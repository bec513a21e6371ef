//! The `nats` connector, on NATS JetStream: a source that reads a stream and a sink that
//! publishes to a subject a stream takes, one row per message, in any record format.
//!
//! A JetStream stream is a log with sequence numbers, like a Kafka partition: the source keeps
//! the sequence of the last message it read in each checkpoint and, restored, goes on from
//! the next one (an ordered consumer of its own, nothing for the server to remember): exactly
//! once. The sink waits for the stream's acknowledgement of every message at each checkpoint
//! and at the end: at least once (JetStream's duplicate window drops a replayed message only
//! if it carries the same `Nats-Msg-Id`, which rows do not).
//!
//! async-nats is asynchronous: each subtask keeps a small tokio runtime (one worker, which
//! drives the connection between calls) and blocks on it from the task thread.

use crate::format::record::{check_sink_changes, is_changelog, RecordDecoder, RecordEncoder};
use crate::format::{self, BATCH_ROWS};
use crate::Connector;
use async_nats::jetstream::{self, consumer::pull::Ordered, consumer::DeliverPolicy};
use futures_util::StreamExt;
use sluice_common::{ChangeBatch, CheckpointId, Result, SluiceError};
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
    "stream",
    "subject",
    "scan.startup.mode",
    "scan.startup.sequence",
    "format",
    "sink.parallelism",
];

const POLL_WAIT: Duration = Duration::from_millis(100);
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Unacknowledged messages the sink lets pile up before it waits for their acknowledgements:
/// fewer than the JetStream context's in-flight limit (5000 by default), past which a publish
/// waits for an acknowledgement that only a wait for the earlier ones would take in (a
/// publisher that never waits would hang).
const MAX_UNACKED: usize = 1_000;

/// The `nats` connector.
pub struct NatsConnector;

/// Where a source starts without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    Earliest,
    Latest,
    Sequence(u64),
}

fn runtime(owner: &str, url: &str) -> Result<(tokio::runtime::Runtime, async_nats::Client)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("nats")
        .enable_all()
        .build()
        .map_err(|e| SluiceError::io("starting the NATS client's runtime", e))?;
    // (Not retrying the first connection: a wrong address is said at once; the client
    // reconnects by itself after it has been connected.)
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    let url_owned = url.to_string();
    let client = rt
        .block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                async_nats::connect_with_options(url_owned, options),
            )
            .await
        })
        .map_err(|_| "no answer within 5 s".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            SluiceError::Config(format!("{owner}: cannot connect to NATS at '{url}': {e}"))
        })?;
    Ok((rt, client))
}

impl Connector for NatsConnector {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        let o = &spec.options;
        spec.check_metadata(self.name(), &["subject"])?;
        let format = format::checked_format(o, OPTIONS, &format::record_formats())?;
        RecordDecoder::new(&format, spec.schema.clone(), o)?;
        let startup = match o.string("scan.startup.mode", "earliest-offset").as_str() {
            "earliest-offset" => Startup::Earliest,
            "latest-offset" => Startup::Latest,
            "specific-offsets" => match o.i64("scan.startup.sequence")? {
                Some(n) if n >= 1 => Startup::Sequence(n as u64),
                _ => {
                    return Err(SluiceError::Config(format!(
                        "{}: 'scan.startup.mode' = 'specific-offsets' needs 'scan.startup.sequence' (a stream sequence, from 1)",
                        o.owner
                    )))
                }
            },
            other => {
                return Err(SluiceError::Config(format!(
                    "{}: 'scan.startup.mode' = '{other}' is not one of earliest-offset, latest-offset, specific-offsets",
                    o.owner
                )))
            }
        };
        Ok(Arc::new(NatsSourceFactory {
            spec: spec.clone(),
            url: o.required("url")?.to_string(),
            stream: o.required("stream")?.to_string(),
            subject: o.get("subject").map(str::to_string),
            format,
            startup,
        }))
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let o = &spec.options;
        let format = format::checked_format(o, OPTIONS, &format::record_formats())?;
        // Its options fail at planning.
        RecordEncoder::new(&format, spec.schema.clone(), o, &spec.time_zone)?;
        check_sink_changes("nats", &spec.table, &format, spec.updating)?;
        Ok(Arc::new(NatsSinkFactory {
            spec: spec.clone(),
            url: o.required("url")?.to_string(),
            subject: o.required("subject")?.to_string(),
            format,
        }))
    }
}

struct NatsSourceFactory {
    spec: SourceSpec,
    url: String,
    stream: String,
    subject: Option<String>,
    format: String,
    startup: Startup,
}

impl SourceFactory for NatsSourceFactory {
    fn name(&self) -> String {
        format!("nats [{}]", self.stream)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn produces_updates(&self) -> bool {
        is_changelog(&self.format)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let owner = self.spec.options.owner.clone();
        let connection = if ctx.subtask_index == 0 {
            let (rt, client) = runtime(&owner, &self.url)?;
            // (The context spawns its tasks on the runtime.)
            let js = {
                let _in_runtime = rt.enter();
                jetstream::new(client)
            };
            let stream = rt.block_on(js.get_stream(&self.stream)).map_err(|e| {
                SluiceError::Config(format!("{owner}: JetStream stream '{}': {e}", self.stream))
            })?;
            Some((rt, stream))
        } else {
            // One reader: a stream is one log.
            None
        };
        Ok(Box::new(NatsReader {
            owner,
            decoder: RecordDecoder::new(
                &self.format,
                self.spec.schema.clone(),
                &self.spec.options,
            )?,
            produced: self.spec.produced_schema(),
            with_subject: !self.spec.metadata.is_empty(),
            connection,
            subject: self.subject.clone(),
            messages: None,
            startup: self.startup,
            last: None,
            skipped: ctx
                .metrics
                .counter(&format!("{}: malformed messages skipped", self.spec.table)),
        }))
    }
}

struct NatsReader {
    owner: String,
    decoder: RecordDecoder,
    produced: arrow::datatypes::SchemaRef,
    with_subject: bool,
    connection: Option<(tokio::runtime::Runtime, jetstream::stream::Stream)>,
    subject: Option<String>,
    /// The ordered consumer, made at the first poll (after a restore).
    messages: Option<Ordered>,
    startup: Startup,
    /// The stream sequence of the last message read (restored from a checkpoint).
    last: Option<u64>,
    skipped: Arc<AtomicU64>,
}

impl NatsReader {
    fn open(&mut self) -> Result<()> {
        let Some((rt, stream)) = &self.connection else {
            return Ok(());
        };
        let deliver_policy = match (self.last, self.startup) {
            (Some(seq), _) => DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
            (None, Startup::Earliest) => DeliverPolicy::All,
            (None, Startup::Latest) => DeliverPolicy::New,
            (None, Startup::Sequence(n)) => DeliverPolicy::ByStartSequence { start_sequence: n },
        };
        let config = jetstream::consumer::pull::OrderedConfig {
            filter_subject: self.subject.clone().unwrap_or_default(),
            deliver_policy,
            ..Default::default()
        };
        let owner = &self.owner;
        let messages = rt
            .block_on(async {
                let consumer = stream.create_consumer(config).await?;
                consumer.messages().await.map_err(async_nats::Error::from)
            })
            .map_err(|e| {
                SluiceError::Runtime(format!("{owner}: cannot read the JetStream stream: {e}"))
            })?;
        self.messages = Some(messages);
        Ok(())
    }
}

impl SourceReader for NatsReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        if self.connection.is_none() {
            return Ok(SourcePoll::Idle);
        }
        if self.messages.is_none() {
            self.open()?;
        }
        let (Some((rt, _)), Some(messages)) = (&self.connection, self.messages.as_mut()) else {
            return Ok(SourcePoll::Idle);
        };
        let got = rt.block_on(async {
            let mut got = Vec::new();
            match tokio::time::timeout(POLL_WAIT, messages.next()).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) | Err(_) => return got,
            }
            while got.len() < BATCH_ROWS {
                match futures_util::FutureExt::now_or_never(messages.next()) {
                    Some(Some(m)) => got.push(m),
                    _ => break,
                }
            }
            got
        });
        if got.is_empty() {
            return Ok(SourcePoll::Idle);
        }
        let mut records = Vec::with_capacity(got.len());
        for m in got {
            let m = m.map_err(|e| {
                SluiceError::Runtime(format!("{}: reading the JetStream stream: {e}", self.owner))
            })?;
            let seq = m.info().map(|i| i.stream_sequence).map_err(|e| {
                SluiceError::Runtime(format!("{}: a JetStream message: {e}", self.owner))
            })?;
            self.last = Some(seq);
            records.push((
                m.message.subject.to_string(),
                m.message.payload.clone(),
                seq,
            ));
        }
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.1.as_ref()).collect();
        let decoded = self.decoder.decode(
            &payloads,
            None,
            &|i| {
                format!(
                    "NATS message {} of subject '{}'",
                    records[i].2, records[i].0
                )
            },
            &self.skipped,
        )?;
        let rows = if self.with_subject {
            let mut columns = decoded.rows.columns().to_vec();
            let subjects: arrow::array::ArrayRef =
                Arc::new(arrow::array::StringArray::from_iter_values(
                    decoded.origins.iter().map(|&i| records[i].0.as_str()),
                ));
            let target = self.produced.field(columns.len()).data_type();
            columns.push(arrow::compute::cast(&subjects, target)?);
            arrow::record_batch::RecordBatch::try_new(self.produced.clone(), columns)?
        } else {
            decoded.rows
        };
        if rows.num_rows() == 0 {
            return Ok(SourcePoll::Idle);
        }
        Ok(SourcePoll::Batch(match decoded.kinds {
            Some(k) => ChangeBatch::new(rows, Some(k.into())),
            None => ChangeBatch::inserts(rows),
        }))
    }

    fn has_nothing_to_read(&self) -> bool {
        self.connection.is_none()
    }

    /// The stream sequence of the last message read (0: none yet).
    fn snapshot_position(&mut self, _c: CheckpointId, state: &mut StateWriter) -> Result<()> {
        state.put_u64(self.last.unwrap_or(0));
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        let seq = state.u64()?;
        self.last = (seq > 0).then_some(seq).or(self.last);
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        for (_, s) in states.iter_mut() {
            self.restore_position(s)?;
        }
        Ok(())
    }
}

struct NatsSinkFactory {
    spec: SinkSpec,
    url: String,
    subject: String,
    format: String,
}

impl OperatorFactory for NatsSinkFactory {
    fn name(&self) -> String {
        format!("Sink: nats({})", self.subject)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let owner = self.spec.options.owner.clone();
        let (rt, client) = runtime(&owner, &self.url)?;
        let encoder = RecordEncoder::new(
            &self.format,
            self.spec.schema.clone(),
            &self.spec.options,
            &self.spec.time_zone,
        )?;
        let js = {
            let _in_runtime = rt.enter();
            jetstream::new(client)
        };
        Ok(Box::new(NatsSink {
            owner,
            rt,
            js,
            subject: self.subject.clone(),
            encoder,
            acks: Vec::new(),
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
            errors: ctx.sink_errors(),
        }))
    }
}

struct NatsSink {
    owner: String,
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    subject: String,
    encoder: RecordEncoder,
    acks: Vec<jetstream::context::PublishAckFuture>,
    rows: Arc<AtomicU64>,
    errors: SinkErrors,
}

impl NatsSink {
    /// Waits for the stream's acknowledgement of everything published.
    fn flush(&mut self) -> Result<()> {
        let acks = std::mem::take(&mut self.acks);
        if acks.is_empty() {
            return Ok(());
        }
        let n = acks.len();
        let results = self
            .rt
            .block_on(async {
                tokio::time::timeout(
                    ACK_TIMEOUT,
                    futures_util::future::join_all(
                        acks.into_iter().map(std::future::IntoFuture::into_future),
                    ),
                )
                .await
            })
            .map_err(|_| {
                self.errors.add(n as u64);
                SluiceError::Runtime(format!(
                    "{}: JetStream did not acknowledge {n} messages within {} s",
                    self.owner,
                    ACK_TIMEOUT.as_secs()
                ))
            })?;
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| e.to_string()))
            .collect();
        if let Some(why) = failed.first() {
            self.errors.add(failed.len() as u64);
            return Err(SluiceError::Runtime(format!(
                "{}: JetStream did not take {} of {n} messages to subject '{}': {why}",
                self.owner,
                failed.len(),
                self.subject
            )));
        }
        Ok(())
    }
}

impl Operator for NatsSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let data = &batch.data;
        let records = self.encoder.encode(&batch, &self.owner)?;
        for i in 0..records.len() {
            let payload = bytes::Bytes::copy_from_slice(records.get(i).unwrap_or_default());
            let published = self
                .rt
                .block_on(self.js.publish(self.subject.clone(), payload));
            match published {
                Ok(ack) => self.acks.push(ack),
                Err(e) => {
                    self.errors.add(1);
                    return Err(SluiceError::Runtime(format!(
                        "{}: cannot publish to NATS subject '{}': {e}",
                        self.owner, self.subject
                    )));
                }
            }
            if self.acks.len() >= MAX_UNACKED {
                self.flush()?;
            }
        }
        self.rows
            .fetch_add(data.num_rows() as u64, Ordering::Relaxed);
        Ok(())
    }

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
