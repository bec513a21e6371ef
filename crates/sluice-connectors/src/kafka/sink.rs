//! The Kafka sink: each subtask writes with one librdkafka producer; a record's key and value
//! are encoded with the table's formats. `upsert-kafka` writes `+I`/`+U` as upserts and `-D`
//! as tombstones (an empty value), and leaves `-U` out, as Flink does.
//!
//! `sink.delivery-guarantee`:
//! - `at-least-once` (the default): every record is acknowledged before a checkpoint counts;
//! - `none`: records are sent and not waited for;
//! - `exactly-once`: two-phase commit with Kafka transactions, as Flink's `KafkaSink`. Each
//!   subtask writes in a transaction of its own with transactional id
//!   `<prefix>-<subtask>-<n>`, where `n` is one more than the checkpoint before it. At a
//!   barrier the transaction is flushed (pre-committed) and kept open, its id goes into the
//!   checkpoint, and a new producer starts the next one; when the checkpoint completes, the
//!   transaction commits. On restore, transactions of the checkpoint that are still open are
//!   committed through [`TxnAdmin`] with the producer id and epoch their coordinator reports
//!   (librdkafka cannot resume another producer's transaction), and every other open
//!   transaction of the subtask's ids is aborted by fencing its id.

use super::options::{
    client_config, DeliveryGuarantee, KafkaOptions, LogContext, Partitioner, Topics,
};
use super::txn_admin::TxnAdmin;
use crate::format::record::RecordEncoder;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long closing waits for outstanding records (librdkafka fails each after its
/// `message.timeout.ms`).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// The most transactions a subtask keeps pre-committed, waiting for their checkpoints: each
/// holds a producer, and they pile up only while checkpoints fail.
const MAX_PRECOMMITTED: usize = 32;

/// How long a transaction request (init, commit, abort) may take.
const TXN_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `transaction.timeout.ms` unless the table sets `properties.transaction.timeout.ms`: the
/// default `transaction.max.timeout.ms` of Kafka brokers (and of `sluice broker`), so that a
/// crashed job has 15 minutes to come back and commit what its last checkpoint holds.
const DEFAULT_TRANSACTION_TIMEOUT_MS: i32 = 15 * 60 * 1000;

pub(super) fn factory(spec: SinkSpec, options: KafkaOptions) -> Result<Arc<dyn OperatorFactory>> {
    // Its formats' options fail at planning.
    encoders(&spec, &options)?;
    drop(producer(&options, 0, None, None)?);
    Ok(Arc::new(KafkaSinkFactory { spec, options }))
}

/// The encoders of a record's value and key.
fn encoders(spec: &SinkSpec, o: &KafkaOptions) -> Result<(RecordEncoder, Option<RecordEncoder>)> {
    let value = RecordEncoder::new(
        &o.value_format,
        o.value_schema(&spec.schema),
        &o.value_format_options,
        &spec.time_zone,
    )?;
    let key = match &o.key_format {
        Some(k) => Some(RecordEncoder::new(
            k,
            o.key_schema(&spec.schema),
            &o.key_format_options,
            &spec.time_zone,
        )?),
        None => None,
    };
    Ok((value, key))
}

/// A producer for subtask `subtask` (transactional with `transactional_id`) that counts the
/// records the brokers do not take in `errors`.
fn producer(
    options: &KafkaOptions,
    subtask: usize,
    transactional_id: Option<&str>,
    errors: Option<&SinkErrors>,
) -> Result<ThreadedProducer<SinkContext>> {
    let mut c = client_config(options);
    c.set("client.id", format!("sluice-sink-{subtask}"));
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
        if !options.properties.contains_key("transaction.timeout.ms") {
            c.set(
                "transaction.timeout.ms",
                DEFAULT_TRANSACTION_TIMEOUT_MS.to_string(),
            );
        }
    }
    if !options.properties.contains_key("partitioner") {
        // The Java client's key hash, so that keys land where Flink and Kafka Streams put them.
        c.set("partitioner", "murmur2_random");
    }
    c.create_with_context(SinkContext {
        log: LogContext {
            owner: options.owner.clone(),
        },
        failure: Arc::new(Mutex::new(None)),
        errors: errors.cloned(),
    })
    .map_err(|e| SluiceError::Config(format!("{}: Kafka client: {e}", options.owner)))
}

/// Remembers the first record the brokers did not take, and counts them all.
struct SinkContext {
    log: LogContext,
    failure: Arc<Mutex<Option<String>>>,
    errors: Option<SinkErrors>,
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
            if let Some(errors) = &self.errors {
                errors.add(1);
            }
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
        let errors = ctx.sink_errors();
        let (producer, txn) = match (o.delivery, &o.transactional_id_prefix) {
            (DeliveryGuarantee::ExactlyOnce, Some(prefix)) => {
                if !ctx.checkpointing {
                    return Err(SluiceError::Config(format!(
                        "{}: 'sink.delivery-guarantee' = 'exactly-once' commits its transactions when checkpoints complete; enable checkpoints with SET 'execution.checkpointing.interval' = '10s' (or use at-least-once)",
                        o.owner
                    )));
                }
                let timeout_ms = o
                    .properties
                    .get("transaction.timeout.ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT_MS);
                let txn = Transactions {
                    id_prefix: format!("{prefix}-{}-", ctx.subtask_index),
                    adopted_prefixes: Vec::new(),
                    admin: TxnAdmin::new(&o.bootstrap_servers, &o.owner),
                    timeout_ms,
                    current: None,
                    precommitted: Vec::new(),
                    last_checkpoint: 0,
                    recovered: false,
                    ended: false,
                };
                (None, Some(txn))
            }
            _ => (
                Some(producer(o, ctx.subtask_index, None, Some(&errors))?),
                None,
            ),
        };
        let failure = match &producer {
            Some(p) => p.context().failure.clone(),
            None => Arc::new(Mutex::new(None)),
        };
        let (value_encoder, key_encoder) = encoders(&self.spec, o)?;
        Ok(Box::new(KafkaSink {
            producer,
            txn,
            failure,
            topic: self.topic(),
            value_encoder,
            key_encoder,
            options: o.clone(),
            subtask: ctx.subtask_index,
            parallelism: ctx.parallelism,
            partitions: None,
            round_robin: ctx.subtask_index,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
            errors,
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
    /// The producer records go to: for exactly-once, the one of the open transaction (created
    /// on first use, after recovery).
    producer: Option<ThreadedProducer<SinkContext>>,
    /// Exactly-once state.
    txn: Option<Transactions>,
    /// The first delivery failure of the current producer.
    failure: Arc<Mutex<Option<String>>>,
    topic: String,
    value_encoder: RecordEncoder,
    key_encoder: Option<RecordEncoder>,
    options: KafkaOptions,
    subtask: usize,
    parallelism: usize,
    /// The topic's partition count, for the `fixed` and `round-robin` partitioners.
    partitions: Option<i32>,
    round_robin: usize,
    rows: Arc<AtomicU64>,
    /// The records the brokers did not take or the producer refused.
    errors: SinkErrors,
}

/// What a subtask's snapshot holds: its last checkpoint and its pre-committed transactions
/// (checkpoint, transactional id).
fn read_pending(state: &mut sluice_engine::StateReader<'_>) -> Result<(u64, Vec<(u64, String)>)> {
    let n = state.u64()?;
    let count = state.count()?;
    let mut pending = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let c = state.u64()?;
        pending.push((c, state.str()?.to_string()));
    }
    Ok((n, pending))
}

/// Commits a producer's transaction, retrying what librdkafka calls retriable (a coordinator
/// that is moving or restarting) until [`TXN_REQUEST_TIMEOUT`].
fn commit(p: &ThreadedProducer<SinkContext>) -> std::result::Result<(), KafkaError> {
    let deadline = std::time::Instant::now() + TXN_REQUEST_TIMEOUT;
    loop {
        match p.commit_transaction(TXN_REQUEST_TIMEOUT) {
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && std::time::Instant::now() < deadline =>
            {
                tracing::info!("retrying a transaction commit: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn check_failure(failure: &Mutex<Option<String>>, owner: &str, topic: &str) -> Result<()> {
    if let Ok(slot) = failure.lock() {
        if let Some(e) = slot.as_ref() {
            return Err(SluiceError::Runtime(format!(
                "{owner}: a record could not be written to topic '{topic}': {e}"
            )));
        }
    }
    Ok(())
}

/// The exactly-once state of a subtask.
struct Transactions {
    /// `<prefix>-<subtask>-`; the transaction after checkpoint `n` is `<id_prefix><n+1>`.
    id_prefix: String,
    /// After a restore at another parallelism, the id prefixes of the old subtasks this one
    /// took over: their lingering transactions are aborted with its own.
    adopted_prefixes: Vec<String>,
    admin: TxnAdmin,
    timeout_ms: i32,
    /// The id of the open transaction the producer writes in.
    current: Option<String>,
    /// Flushed transactions waiting for their checkpoint: (checkpoint, id, producer).
    precommitted: Vec<(u64, String, ThreadedProducer<SinkContext>)>,
    /// The last checkpoint taken or restored.
    last_checkpoint: u64,
    /// True once the transactions of an earlier run were committed or aborted.
    recovered: bool,
    /// True after the end of the input committed everything.
    ended: bool,
}

impl Transactions {
    fn error(&self, owner: &str, what: &str, id: &str, e: impl std::fmt::Display) -> SluiceError {
        SluiceError::Runtime(format!("{owner}: {what} transaction '{id}': {e}"))
    }

    /// Commits what a restored checkpoint pre-committed (if still open), then aborts every
    /// other open transaction of this subtask's ids: they hold records no checkpoint covers.
    fn recover(&mut self, owner: &str, pending: &[(u64, String)]) -> Result<()> {
        for (checkpoint, id) in pending {
            match self.admin.describe(id)? {
                Some(d) if d.state == "Ongoing" || d.state == "PrepareCommit" => {
                    self.admin.commit(id, d.producer_id, d.producer_epoch)?;
                    tracing::info!("{owner}: committed transaction '{id}' of checkpoint {checkpoint} after a restore");
                }
                Some(d) if d.state == "CompleteCommit" || d.state == "Empty" => {}
                Some(d) => {
                    let message = format!(
                        "{owner}: transaction '{id}' of checkpoint {checkpoint} is {} and cannot be committed: its records are lost (did it outlive 'transaction.timeout.ms' = {} ms?)",
                        d.state, self.timeout_ms
                    );
                    tracing::error!("{message}");
                    eprintln!("warning: {message}");
                }
                None => {
                    let message = format!("{owner}: transaction '{id}' of checkpoint {checkpoint} is unknown to the cluster (expired?); its records are lost");
                    tracing::error!("{message}");
                    eprintln!("warning: {message}");
                }
            }
        }
        let prefixes = std::iter::once(&self.id_prefix).chain(&self.adopted_prefixes);
        for prefix in prefixes {
            for id in self.admin.open_transactions(prefix)? {
                let ours = id[prefix.len()..].parse::<u64>().is_ok();
                if ours {
                    self.admin.fence(&id, self.timeout_ms)?;
                    tracing::info!("{owner}: aborted lingering transaction '{id}'");
                }
            }
        }
        self.recovered = true;
        Ok(())
    }
}

impl KafkaSink {
    fn check_failure(&self) -> Result<()> {
        check_failure(&self.failure, &self.options.owner, &self.topic)
    }

    /// The producer to write with; for exactly-once, recovers the transactions of an earlier
    /// run first and opens a transaction.
    fn producer(&mut self) -> Result<&ThreadedProducer<SinkContext>> {
        if self.producer.is_none() {
            self.begin_transaction()?;
        }
        self.producer.as_ref().ok_or_else(|| {
            SluiceError::Runtime(format!(
                "{}: the Kafka sink has no producer",
                self.options.owner
            ))
        })
    }

    /// Starts the transaction that follows the last checkpoint, with a producer of its own.
    fn begin_transaction(&mut self) -> Result<()> {
        let owner = self.options.owner.clone();
        let Some(txn) = self.txn.as_mut() else {
            self.producer = Some(producer(
                &self.options,
                self.subtask,
                None,
                Some(&self.errors),
            )?);
            return Ok(());
        };
        if txn.ended {
            return Err(SluiceError::Runtime(format!(
                "{owner}: records after the end of the input"
            )));
        }
        if !txn.recovered {
            txn.recover(&owner, &[])?;
        }
        let id = format!("{}{}", txn.id_prefix, txn.last_checkpoint + 1);
        let p = producer(&self.options, self.subtask, Some(&id), Some(&self.errors))?;
        p.init_transactions(TXN_REQUEST_TIMEOUT)
            .map_err(|e| txn.error(&owner, "cannot start", &id, e))?;
        p.begin_transaction()
            .map_err(|e| txn.error(&owner, "cannot begin", &id, e))?;
        self.failure = p.context().failure.clone();
        txn.current = Some(id);
        self.producer = Some(p);
        Ok(())
    }

    /// Commits the pre-committed transactions of checkpoints up to `checkpoint`.
    fn commit_up_to(&mut self, checkpoint: u64) -> Result<()> {
        let owner = self.options.owner.clone();
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        while txn
            .precommitted
            .first()
            .is_some_and(|(c, _, _)| *c <= checkpoint)
        {
            let (_, id, p) = txn.precommitted.remove(0);
            commit(&p).map_err(|e| txn.error(&owner, "cannot commit", &id, e))?;
        }
        Ok(())
    }

    fn partition_count(&mut self) -> Result<i32> {
        if let Some(n) = self.partitions {
            return Ok(n);
        }
        let topic = self.topic.clone();
        let metadata = self
            .producer()?
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
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
        self.producer()?;
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
        let Some(producer) = self.producer.as_ref() else {
            return Err(SluiceError::Runtime(format!(
                "{}: the Kafka sink has no producer",
                self.options.owner
            )));
        };
        let failure = producer.context().failure.clone();
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: wait for the brokers to take some.
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                    check_failure(&failure, &self.options.owner, &self.topic)?;
                }
                Err((e, _)) => {
                    self.errors.add(1);
                    return Err(SluiceError::Runtime(format!(
                        "{}: cannot write to topic '{}': {e}",
                        self.options.owner, self.topic
                    )));
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
        let kind = |i| batch.kind(i);
        let values = self
            .value_encoder
            .encode_rows(&data.project(&self.options.value_columns)?, &kind)?;
        let keys = match self.key_encoder.as_mut() {
            Some(enc) => Some(enc.encode_rows(&data.project(&self.options.key_columns)?, &kind)?),
            None => None,
        };
        // A changelog format writes every row as a record of its change.
        let changelog = self.value_encoder.takes_changes();
        let mut written = 0;
        for i in 0..data.num_rows() {
            let key = keys.as_ref().and_then(|k| k.get(i));
            let kind = batch.kind(i);
            let value = match kind {
                _ if changelog => values.get(i),
                RowKind::Insert | RowKind::UpdateAfter => values.get(i),
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
    /// checkpoint counts, as Flink's Kafka sink flushes on checkpoints. Exactly-once: the
    /// open transaction is flushed and kept for the checkpoint's completion, and the next
    /// one begins.
    fn snapshot_state(
        &mut self,
        checkpoint: sluice_common::CheckpointId,
        state: &mut sluice_engine::StateWriter,
    ) -> Result<()> {
        let n = checkpoint;
        self.flush()?;
        let owner = self.options.owner.clone();
        if let Some(txn) = self.txn.as_mut().filter(|t| !t.ended) {
            if !txn.recovered {
                txn.recover(&owner, &[])?;
            }
            // A subtask that wrote nothing since the last barrier has no transaction open.
            if let Some(p) = self.producer.take() {
                if txn.precommitted.len() >= MAX_PRECOMMITTED {
                    return Err(SluiceError::Runtime(format!(
                        "{owner}: {MAX_PRECOMMITTED} checkpoints in a row did not complete, and the Kafka sink holds a transaction (and a producer) open for each; see why checkpoints fail (SLUICE_LOG=info) or raise execution.checkpointing.timeout"
                    )));
                }
                let id = txn.current.take().unwrap_or_default();
                txn.precommitted.push((n, id, p));
            }
            txn.last_checkpoint = n;
        }
        state.put_u64(n);
        let pending = self
            .txn
            .as_ref()
            .map(|t| t.precommitted.as_slice())
            .unwrap_or(&[]);
        state.put_u64(pending.len() as u64);
        for (c, id, _) in pending {
            state.put_u64(*c);
            state.put_str(id);
        }
        // The next transaction begins with the next record.
        Ok(())
    }

    fn restore_state(&mut self, state: &mut sluice_engine::StateReader<'_>) -> Result<()> {
        let (n, pending) = read_pending(state)?;
        self.recover(n, pending)
    }

    /// At another parallelism, old subtask `j` goes to new subtask `j % parallelism`: it
    /// commits `j`'s pre-committed transactions and aborts the lingering ones of `j`'s ids,
    /// so that each transactional id has one owner; the next transactions are numbered
    /// after the latest checkpoint.
    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, sluice_engine::StateReader<'_>)],
    ) -> Result<()> {
        let mut last = 0;
        let mut pending = Vec::new();
        for (j, state) in states.iter_mut() {
            let (n, p) = read_pending(state)?;
            last = last.max(n);
            if *j % self.parallelism == self.subtask {
                pending.extend(p);
            }
        }
        if let (Some(txn), Some(prefix)) = (
            self.txn.as_mut(),
            self.options.transactional_id_prefix.as_ref(),
        ) {
            txn.adopted_prefixes = (0..old)
                .filter(|j| j % self.parallelism == self.subtask && *j != self.subtask)
                .map(|j| format!("{prefix}-{j}-"))
                .collect();
        }
        self.recover(last, pending)
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint: sluice_common::CheckpointId,
    ) -> Result<()> {
        self.commit_up_to(checkpoint)
    }

    /// The end of the input pre-commits the open transaction; the final checkpoint (which
    /// holds it in this subtask's final state) commits it.
    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()?;
        if let Some(txn) = self.txn.as_mut().filter(|t| !t.ended) {
            if let Some(p) = self.producer.take() {
                let id = txn.current.take().unwrap_or_default();
                txn.precommitted.push((u64::MAX, id, p));
            }
            txn.ended = true;
        }
        Ok(())
    }

    /// On cancel, exactly-once aborts the open transaction (no checkpoint holds it) and
    /// leaves the pre-committed ones for the restore to commit.
    fn close(&mut self, _out: &mut Output) -> Result<()> {
        if self.txn.is_none() {
            return self.flush();
        }
        if let (Some(txn), Some(p)) = (self.txn.as_mut(), self.producer.take()) {
            let id = txn.current.take().unwrap_or_default();
            if let Err(e) = p.abort_transaction(TXN_REQUEST_TIMEOUT) {
                tracing::warn!("{}: aborting transaction '{id}': {e}", self.options.owner);
            }
        }
        Ok(())
    }
}

impl KafkaSink {
    /// Goes on after the restored checkpoint `n`: commits its pre-committed transactions
    /// `pending` (those still open) and aborts the lingering ones.
    fn recover(&mut self, n: u64, pending: Vec<(u64, String)>) -> Result<()> {
        let owner = self.options.owner.clone();
        match self.txn.as_mut() {
            Some(txn) => {
                txn.last_checkpoint = n;
                txn.recover(&owner, &pending)?;
            }
            None if !pending.is_empty() => {
                // The sink was exactly-once when the checkpoint was taken.
                let message = format!("{owner}: the checkpoint holds {} Kafka transactions of an exactly-once sink, but the sink is no longer exactly-once; they are left to time out", pending.len());
                tracing::warn!("{message}");
                eprintln!("warning: {message}");
            }
            None => {}
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let Some(p) = self.producer.as_ref() else {
            return Ok(());
        };
        p.flush(FLUSH_TIMEOUT).map_err(|e| {
            SluiceError::Runtime(format!(
                "{}: records to topic '{}' were not all written: {e}",
                self.options.owner, self.topic
            ))
        })?;
        self.check_failure()
    }
}
