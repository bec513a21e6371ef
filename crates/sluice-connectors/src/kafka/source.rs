//! The Kafka source: each subtask reads its share of the partitions with one librdkafka
//! consumer (assigned, not subscribed, as Flink's source), decodes records in batches per
//! partition and tags them with their partition so that watermarks are kept per partition.

use super::options::{client_config, BoundedMode, KafkaOptions, LogContext, StartupMode, Topics};
use crate::format::{self, record::RecordDecoder};
use arrow::array::{
    Array, ArrayRef, Int32Array, Int64Array, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use sluice_common::{
    ChangeBatch, CheckpointId, Result, RowKind, SluiceError, SplitId, SplitStatus,
};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a metadata or offsets request to the brokers may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most records a subtask takes in one poll.
const MAX_POLL_RECORDS: usize = 8192;
/// How long one poll waits for the first record.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between attempts to reach the brokers.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

pub(super) fn factory(spec: SourceSpec, options: KafkaOptions) -> Result<Arc<dyn SourceFactory>> {
    let value_schema = options.value_schema(&spec.schema);
    let key_schema = options.key_schema(&spec.schema);
    // Fail at planning time on bad format options.
    RecordDecoder::new(
        &options.value_format,
        value_schema.clone(),
        &options.value_format_options,
    )?;
    if let Some(k) = &options.key_format {
        RecordDecoder::new(k, key_schema.clone(), &options.key_format_options)?;
    }
    // And on options librdkafka does not know.
    consumer_config(&options, 0)
        .create_with_context::<_, BaseConsumer<LogContext>>(LogContext {
            owner: options.owner.clone(),
        })
        .map_err(|e| SluiceError::Config(format!("{}: Kafka client: {e}", options.owner)))?;
    Ok(Arc::new(KafkaSourceFactory {
        spec,
        options,
        value_schema,
        key_schema,
    }))
}

fn consumer_config(options: &KafkaOptions, subtask: usize) -> rdkafka::ClientConfig {
    let mut c = client_config(options);
    // librdkafka assigns partitions only with a group; without one, a name of its own that
    // never commits (as Flink generates one).
    match &options.group_id {
        Some(g) => c.set("group.id", g),
        None => c.set("group.id", format!("sluice-source-{}", std::process::id())),
    };
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("enable.partition.eof", "true");
    c.set("client.id", format!("sluice-source-{subtask}"));
    // librdkafka pauses fetching for `fetch.queue.backoff.ms` (1 s) whenever its queue holds
    // `queued.min.messages`: with small records that stalls a fast reader most of the time.
    if !options.properties.contains_key("fetch.queue.backoff.ms") {
        c.set("fetch.queue.backoff.ms", "10");
    }
    // A reset policy of Java's name 'none' is librdkafka's 'error'.
    if options
        .properties
        .get("auto.offset.reset")
        .map(String::as_str)
        == Some("none")
    {
        c.set("auto.offset.reset", "error");
    }
    c
}

struct KafkaSourceFactory {
    spec: SourceSpec,
    options: KafkaOptions,
    value_schema: SchemaRef,
    key_schema: SchemaRef,
}

impl SourceFactory for KafkaSourceFactory {
    fn name(&self) -> String {
        let topics = match &self.options.topics {
            Topics::List(t) => t.join(";"),
            Topics::Pattern(p) => p.as_str().to_string(),
        };
        format!(
            "{}({topics})",
            if self.options.upsert {
                "upsert-kafka"
            } else {
                "kafka"
            }
        )
    }

    fn is_bounded(&self) -> bool {
        self.options.bounded != BoundedMode::Unbounded
    }

    fn produces_updates(&self) -> bool {
        self.options.upsert || format::record::is_changelog(&self.options.value_format)
    }

    /// upsert-kafka: a record is the latest row of its key (`+U`), a tombstone deletes the
    /// key (`-D` with the key columns); the planner adds a ChangelogNormalize.
    fn produces_upserts(&self) -> bool {
        self.options.upsert
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let consumer: BaseConsumer<LogContext> = consumer_config(&self.options, ctx.subtask_index)
            .create_with_context(LogContext {
                owner: self.options.owner.clone(),
            })
            .map_err(|e| {
                SluiceError::Config(format!("{}: Kafka client: {e}", self.options.owner))
            })?;
        let produced = self.spec.produced_schema();
        Ok(Box::new(KafkaReader {
            consumer,
            options: self.options.clone(),
            spec: self.spec.clone(),
            produced,
            value_decoder: RecordDecoder::new(
                &self.options.value_format,
                self.value_schema.clone(),
                &self.options.value_format_options,
            )?,
            key_decoder: match &self.options.key_format {
                Some(k) => Some(RecordDecoder::new(
                    k,
                    self.key_schema.clone(),
                    &self.options.key_format_options,
                )?),
                None => None,
            },
            subtask: ctx.subtask_index,
            parallelism: ctx.parallelism,
            labels: vec![
                ("job", ctx.job_name.clone()),
                ("operator", ctx.operator_name.clone()),
                ("operator_id", ctx.node.to_string()),
                ("subtask", ctx.subtask_index.to_string()),
            ],
            last_lag: Instant::now(),
            partitions: Vec::new(),
            resolved: false,
            next_attempt: Instant::now(),
            backoff: Duration::from_secs(1),
            ready: VecDeque::new(),
            restored: None,
            pending_commits: BTreeMap::new(),
            checkpointing: ctx.checkpointing,
            skipped: ctx.metrics.counter(&format!(
                "{}: records skipped as malformed",
                self.spec.table
            )),
            records_in: ctx
                .metrics
                .counter(&format!("{}: records read", self.spec.table)),
            last_commit: Instant::now(),
            commit_interval: Duration::from_millis(
                self.options
                    .properties
                    .get("auto.commit.interval.ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5000),
            ),
        }))
    }
}

/// One assigned partition.
struct PartitionState {
    topic: String,
    partition: i32,
    split: SplitId,
    /// The next offset to read.
    next: i64,
    /// The offset after the last record whose rows `poll` has returned.
    emitted: i64,
    /// Where a bounded read stops (exclusive).
    stop: Option<i64>,
    /// The log end when the read started.
    high_at_start: i64,
    finished: bool,
    had_data: bool,
    idle: bool,
    last_data: Instant,
    buffer: RecordBuffer,
}

/// Records of one partition taken in a poll, not yet decoded.
#[derive(Default)]
struct RecordBuffer {
    values: Vec<u8>,
    value_ranges: Vec<Option<(usize, usize)>>,
    keys: Vec<u8>,
    key_ranges: Vec<Option<(usize, usize)>>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    timestamp_types: Vec<&'static str>,
}

impl RecordBuffer {
    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        self.value_ranges[i].map(|(a, b)| &self.values[a..b])
    }

    fn key(&self, i: usize) -> Option<&[u8]> {
        self.key_ranges[i].map(|(a, b)| &self.keys[a..b])
    }

    fn push(&mut self, m: &rdkafka::message::BorrowedMessage<'_>, keep_key: bool) {
        self.value_ranges.push(m.payload().map(|p| {
            let start = self.values.len();
            self.values.extend_from_slice(p);
            self.values.push(b'\n');
            (start, start + p.len())
        }));
        self.key_ranges.push(match m.key() {
            Some(k) if keep_key => {
                let start = self.keys.len();
                self.keys.extend_from_slice(k);
                self.keys.push(b'\n');
                Some((start, start + k.len()))
            }
            _ => None,
        });
        self.offsets.push(m.offset());
        let (ts, kind) = match m.timestamp() {
            Timestamp::NotAvailable => (None, "NoTimestampType"),
            Timestamp::CreateTime(t) => (Some(t), "CreateTime"),
            Timestamp::LogAppendTime(t) => (Some(t), "LogAppendTime"),
        };
        self.timestamps.push(ts);
        self.timestamp_types.push(kind);
    }
}

/// A partition's offset to read from, and where a bounded read stops, from a checkpoint.
type RestoredPartition = (i64, Option<i64>);

struct KafkaReader {
    consumer: BaseConsumer<LogContext>,
    options: KafkaOptions,
    spec: SourceSpec,
    produced: SchemaRef,
    value_decoder: RecordDecoder,
    key_decoder: Option<RecordDecoder>,
    subtask: usize,
    parallelism: usize,
    partitions: Vec<PartitionState>,
    resolved: bool,
    next_attempt: Instant,
    backoff: Duration,
    /// What `poll` returns next, each with the partition and next offset it brings the
    /// emitted position to (a `SourcePoll::Idle` entry only moves the position).
    ready: VecDeque<(SourcePoll, Option<(usize, i64)>)>,
    /// Offsets (and stop offsets) from a restored checkpoint, by topic and partition.
    restored: Option<HashMap<(String, i32), RestoredPartition>>,
    /// Offsets to commit to the group when a checkpoint completes.
    pending_commits: BTreeMap<CheckpointId, Vec<(String, i32, i64)>>,
    checkpointing: bool,
    skipped: Arc<AtomicU64>,
    records_in: Arc<AtomicU64>,
    last_commit: Instant,
    commit_interval: Duration,
    /// The labels of this subtask's metrics (job, operator, operator_id, subtask).
    labels: Vec<(&'static str, String)>,
    /// When the lag gauges were last set.
    last_lag: Instant,
}

/// How often each partition's lag is read, and how long a read of its log end offset may take
/// (the client asks the broker: a slow one only delays the metric).
const LAG_EVERY: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_secs(1);

/// The records a partition has behind what this source has read: its log end offset minus the
/// next offset to read.
pub const LAG_METRIC: &str = "sluice_kafka_source_records_lag";

fn kafka_error(owner: &str, what: &str, e: KafkaError) -> SluiceError {
    SluiceError::Runtime(format!("{owner}: {what}: {e}"))
}

impl KafkaReader {
    fn owner(&self) -> &str {
        &self.options.owner
    }

    /// Finds the topics' partitions, keeps this subtask's share and resolves where each
    /// starts and stops.
    fn resolve(&mut self) -> Result<()> {
        let owner = self.owner().to_string();
        let metadata = match &self.options.topics {
            Topics::List(t) if t.len() == 1 => {
                self.consumer.fetch_metadata(Some(&t[0]), REQUEST_TIMEOUT)
            }
            _ => self.consumer.fetch_metadata(None, REQUEST_TIMEOUT),
        }
        .map_err(|e| {
            kafka_error(
                &owner,
                &format!(
                    "cannot reach the Kafka brokers at '{}'",
                    self.options.bootstrap_servers
                ),
                e,
            )
        })?;
        let mut all: Vec<(String, i32)> = Vec::new();
        let wanted = |name: &str| match &self.options.topics {
            Topics::List(t) => t.iter().any(|x| x == name),
            Topics::Pattern(p) => p.is_match(name),
        };
        for t in metadata.topics() {
            if !wanted(t.name()) {
                continue;
            }
            if let Some(e) = t.error() {
                return Err(SluiceError::Runtime(format!(
                    "{owner}: topic '{}': {:?} (create it first, e.g. `sluice topics create {}`)",
                    t.name(),
                    rdkafka::types::RDKafkaErrorCode::from(e),
                    t.name()
                )));
            }
            for p in t.partitions() {
                all.push((t.name().to_string(), p.id()));
            }
        }
        if let Topics::List(list) = &self.options.topics {
            for t in list {
                if !all.iter().any(|(n, _)| n == t) {
                    return Err(SluiceError::Runtime(format!(
                        "{owner}: topic '{t}' does not exist (create it first, e.g. `sluice topics create {t}`)"
                    )));
                }
            }
        }
        all.sort();
        let mine: Vec<(SplitId, String, i32)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.parallelism == self.subtask)
            .map(|(i, (t, p))| (i as SplitId, t, p))
            .collect();

        let mut committed: HashMap<(String, i32), i64> = HashMap::new();
        let needs_committed = self.options.startup == StartupMode::GroupOffsets
            || self.options.bounded == BoundedMode::GroupOffsets;
        if needs_committed && self.options.group_id.is_some() && !mine.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (_, t, p) in &mine {
                tpl.add_partition(t, *p);
            }
            let got = self
                .consumer
                .committed_offsets(tpl, REQUEST_TIMEOUT)
                .map_err(|e| {
                    kafka_error(&owner, "cannot fetch the group's committed offsets", e)
                })?;
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        let times = |t: i64| -> Result<HashMap<(String, i32), Option<i64>>> {
            let mut tpl = TopicPartitionList::new();
            for (_, topic, p) in &mine {
                tpl.add_partition_offset(topic, *p, Offset::Offset(t))
                    .map_err(|e| kafka_error(&owner, "bad timestamp", e))?;
            }
            let got = self
                .consumer
                .offsets_for_times(tpl, REQUEST_TIMEOUT)
                .map_err(|e| kafka_error(&owner, "cannot look up offsets by timestamp", e))?;
            Ok(got
                .elements()
                .iter()
                .map(|e| {
                    let o = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    ((e.topic().to_string(), e.partition()), o)
                })
                .collect())
        };
        let start_times = match &self.options.startup {
            StartupMode::Timestamp(t) => times(*t)?,
            _ => HashMap::new(),
        };
        let stop_times = match &self.options.bounded {
            BoundedMode::Timestamp(t) => times(*t)?,
            _ => HashMap::new(),
        };
        let reset = self
            .options
            .properties
            .get("auto.offset.reset")
            .map(String::as_str);
        let mut assignment = TopicPartitionList::new();
        for (split, topic, p) in mine {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&topic, p, REQUEST_TIMEOUT)
                .map_err(|e| {
                    kafka_error(
                        &owner,
                        &format!("cannot read the offsets of '{topic}' partition {p}"),
                        e,
                    )
                })?;
            let key = (topic.clone(), p);
            let restored = self.restored.as_ref().and_then(|r| r.get(&key).copied());
            let start = match &self.options.startup {
                _ if restored.is_some() => restored.map(|r| r.0).unwrap_or(low),
                StartupMode::Earliest => low,
                StartupMode::Latest => high,
                StartupMode::Timestamp(_) => start_times.get(&key).copied().flatten().unwrap_or(high),
                StartupMode::Specific(m) => m.get(&p).copied().unwrap_or(low),
                StartupMode::GroupOffsets => match committed.get(&key) {
                    Some(&o) => o,
                    None if self.options.group_id.is_none() => low,
                    None => match reset {
                        Some("earliest" | "smallest" | "beginning") => low,
                        Some("latest" | "largest" | "end") => high,
                        _ => {
                            return Err(SluiceError::Config(format!(
                                "{owner}: group '{}' has no committed offset for topic '{topic}' partition {p}; set 'properties.auto.offset.reset' to 'earliest' or 'latest', or choose another 'scan.startup.mode'",
                                self.options.group_id.as_deref().unwrap_or_default()
                            )))
                        }
                    },
                },
            }
            .clamp(low, high.max(low));
            let stop = match &self.options.bounded {
                _ if restored.is_some() => restored.and_then(|r| r.1),
                BoundedMode::Unbounded => None,
                BoundedMode::Latest => Some(high),
                BoundedMode::Timestamp(_) => {
                    Some(stop_times.get(&key).copied().flatten().unwrap_or(high))
                }
                BoundedMode::Specific(m) => Some(m.get(&p).copied().unwrap_or(high)),
                BoundedMode::GroupOffsets => Some(committed.get(&key).copied().unwrap_or(high)),
            };
            let finished = stop.is_some_and(|s| start >= s);
            self.ready.push_back((
                SourcePoll::Split(
                    split,
                    if finished {
                        SplitStatus::Finished
                    } else {
                        SplitStatus::Active
                    },
                ),
                None,
            ));
            if !finished {
                assignment
                    .add_partition_offset(&topic, p, Offset::Offset(start))
                    .map_err(|e| kafka_error(&owner, "cannot assign", e))?;
            }
            self.partitions.push(PartitionState {
                topic,
                partition: p,
                split,
                next: start,
                emitted: start,
                stop,
                high_at_start: high,
                finished,
                had_data: false,
                idle: false,
                last_data: Instant::now(),
                buffer: RecordBuffer::default(),
            });
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| kafka_error(&owner, "cannot assign partitions", e))?;
        tracing::debug!(
            "{owner}: subtask {} reads {} partitions",
            self.subtask,
            self.partitions.len()
        );
        Ok(())
    }

    fn all_finished(&self) -> bool {
        self.partitions.iter().all(|p| p.finished)
    }

    fn position(&self, topic: &str, partition: i32) -> Option<usize> {
        self.partitions
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
    }

    /// Takes up to `MAX_POLL_RECORDS` records into the partitions' buffers.
    fn fetch(&mut self) -> Result<usize> {
        let keep_key = self.options.key_format.is_some();
        let mut taken = 0;
        let deadline = Instant::now() + POLL_WAIT;
        while taken < MAX_POLL_RECORDS {
            let wait = if taken == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(polled) = self.consumer.poll(wait) else {
                break;
            };
            match polled {
                Ok(m) => {
                    let Some(i) = self.position(m.topic(), m.partition()) else {
                        continue;
                    };
                    let part = &mut self.partitions[i];
                    if part.finished || part.stop.is_some_and(|s| m.offset() >= s) {
                        part.finished = true;
                        continue;
                    }
                    part.next = m.offset() + 1;
                    part.buffer.push(&m, keep_key);
                    taken += 1;
                    if part.stop.is_some_and(|s| part.next >= s) {
                        part.finished = true;
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // The topic is known from the partition's place in the assignment.
                    for part in self.partitions.iter_mut().filter(|x| x.partition == p) {
                        if part.stop.is_some_and(|s| s <= part.high_at_start) {
                            part.finished = true;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("{}: Kafka consumer: {e}", self.owner());
                    break;
                }
            }
        }
        self.records_in.fetch_add(taken as u64, Ordering::Relaxed);
        tracing::trace!(taken, "fetched");
        Ok(taken)
    }

    /// Decodes the buffered records of every partition into batches.
    fn decode_buffers(&mut self) -> Result<()> {
        for i in 0..self.partitions.len() {
            if self.partitions[i].buffer.len() > 0 {
                let buffer = std::mem::take(&mut self.partitions[i].buffer);
                self.partitions[i].had_data = true;
                self.partitions[i].idle = false;
                self.partitions[i].last_data = Instant::now();
                let split = self.partitions[i].split;
                let batch = self.decode(i, &buffer)?;
                let reached = buffer.offsets.last().map(|o| (i, o + 1));
                match batch {
                    Some(b) => self
                        .ready
                        .push_back((SourcePoll::Batch(b.from_split(split)), reached)),
                    None => self.ready.push_back((SourcePoll::Idle, reached)),
                }
            }
        }
        Ok(())
    }

    /// The rows (and, for `upsert-kafka`, the changes) of one partition's records.
    fn decode(&mut self, part: usize, buf: &RecordBuffer) -> Result<Option<ChangeBatch>> {
        let (topic, partition) = (
            self.partitions[part].topic.clone(),
            self.partitions[part].partition,
        );
        let upsert = self.options.upsert;
        // Records with a value; for upsert-kafka, the others delete their key.
        let with_value: Vec<usize> = (0..buf.len()).filter(|&i| buf.value(i).is_some()).collect();
        let locate = |i: usize| {
            format!(
                "topic '{topic}', partition {partition}, offset {}",
                buf.offsets[i]
            )
        };
        let values: Vec<&[u8]> = with_value
            .iter()
            .map(|&i| buf.value(i).unwrap_or_default())
            .collect();
        // The buffer already holds the values one per line when every record has one.
        let joined = (with_value.len() == buf.len()).then_some(buf.values.as_slice());
        let decoded = self.value_decoder.decode(
            &values,
            joined,
            &|j| locate(with_value[j]),
            &self.skipped,
        )?;
        let value_batch = decoded.rows;
        let kinds = decoded.kinds;
        let kept: Vec<usize> = decoded.origins.into_iter().map(|j| with_value[j]).collect();
        let key_batch = match self.key_decoder.as_mut() {
            Some(d) if !self.options.key_columns.is_empty() => {
                let keys: Vec<&[u8]> = kept
                    .iter()
                    .map(|&i| buf.key(i).unwrap_or_default())
                    .collect();
                let joined = (kept.len() == buf.len()
                    && buf.key_ranges.iter().all(Option::is_some))
                .then_some(buf.keys.as_slice());
                let keys = d.decode(&keys, joined, &|j| locate(kept[j]), &self.skipped)?;
                let b = keys.rows;
                if keys.origins.len() != kept.len() {
                    return Err(SluiceError::Format {
                        location: Default::default(),
                        message: format!(
                            "{}: a record of topic '{topic}' partition {partition} has no readable key",
                            self.owner()
                        ),
                    });
                }
                Some(b)
            }
            _ => None,
        };
        let rows = self.assemble(
            Some(&value_batch),
            key_batch.as_ref(),
            buf,
            &kept,
            &topic,
            partition,
        )?;
        if !upsert {
            return Ok(Some(match kinds {
                Some(kinds) => ChangeBatch::new(rows, Some(kinds.into())),
                None => ChangeBatch::inserts(rows),
            }));
        }
        // Tombstones delete their key: a row of the key columns (from the record key) and
        // metadata, the other columns NULL.
        let tombstones: Vec<usize> = (0..buf.len()).filter(|&i| buf.value(i).is_none()).collect();
        if tombstones.is_empty() {
            let n = rows.num_rows();
            return Ok(Some(ChangeBatch::new(
                rows,
                Some(vec![RowKind::UpdateAfter; n].into()),
            )));
        }
        let decoder = self.key_decoder.as_mut().ok_or_else(|| {
            SluiceError::Runtime("internal: upsert-kafka without a key format".into())
        })?;
        let keys: Vec<&[u8]> = tombstones
            .iter()
            .map(|&i| buf.key(i).unwrap_or_default())
            .collect();
        let keys = decoder.decode(&keys, None, &|j| locate(tombstones[j]), &self.skipped)?;
        let key_batch = keys.rows;
        let tombstones: Vec<usize> = keys.origins.into_iter().map(|j| tombstones[j]).collect();
        let deletes = self.assemble(None, Some(&key_batch), buf, &tombstones, &topic, partition)?;
        // Both in the order of the records.
        let all = concat_batches(&self.produced, &[rows, deletes])?;
        let mut order: Vec<(usize, u32, RowKind)> = kept
            .iter()
            .map(|&i| (i, RowKind::UpdateAfter))
            .chain(tombstones.iter().map(|&i| (i, RowKind::Delete)))
            .enumerate()
            .map(|(row, (record, kind))| (record, row as u32, kind))
            .collect();
        order.sort_unstable_by_key(|o| o.0);
        let idx = UInt32Array::from_iter_values(order.iter().map(|o| o.1));
        let kinds: Arc<[RowKind]> = order.iter().map(|o| o.2).collect();
        Ok(Some(ChangeBatch::new(
            arrow::compute::take_record_batch(&all, &idx)?,
            Some(kinds),
        )))
    }

    /// The produced columns: physical ones from the value (and key; NULL without a value),
    /// then metadata.
    fn assemble(
        &self,
        value: Option<&RecordBatch>,
        key: Option<&RecordBatch>,
        buf: &RecordBuffer,
        kept: &[usize],
        topic: &str,
        partition: i32,
    ) -> Result<RecordBatch> {
        let n = kept.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.produced.fields().len());
        for (i, f) in self.spec.schema.fields().iter().enumerate() {
            let from_value = self.options.value_columns.iter().position(|&c| c == i);
            let from_key = self.options.key_columns.iter().position(|&c| c == i);
            let col = match (from_value.zip(value), from_key, key) {
                (Some((v, vb)), _, _) => vb.column(v).clone(),
                (None, Some(k), Some(kb)) => kb.column(k).clone(),
                _ => arrow::array::new_null_array(f.data_type(), n),
            };
            columns.push(col);
        }
        for m in &self.spec.metadata {
            let natural: ArrayRef = match m.key.as_str() {
                "topic" => Arc::new(StringArray::from(vec![topic; n])),
                "partition" => Arc::new(Int32Array::from(vec![partition; n])),
                "offset" => Arc::new(Int64Array::from_iter_values(
                    kept.iter().map(|&i| buf.offsets[i]),
                )),
                "timestamp" => Arc::new(
                    TimestampMillisecondArray::from(
                        kept.iter().map(|&i| buf.timestamps[i]).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                "timestamp-type" => Arc::new(StringArray::from_iter_values(
                    kept.iter().map(|&i| buf.timestamp_types[i]),
                )),
                other => {
                    return Err(SluiceError::Runtime(format!(
                        "internal: unknown metadata key '{other}'"
                    )))
                }
            };
            let col = if natural.data_type() == &m.data_type {
                natural
            } else if let (
                DataType::Timestamp(TimeUnit::Millisecond, _),
                DataType::Timestamp(u, tz),
            ) = (natural.data_type(), &m.data_type)
            {
                // TIMESTAMP(3) and TIMESTAMP_LTZ(3) both hold the instant's UTC fields.
                cast(&natural, &DataType::Timestamp(*u, tz.clone()))?
            } else {
                cast(&natural, &m.data_type)?
            };
            columns.push(col);
        }
        Ok(RecordBatch::try_new_with_options(
            self.produced.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Commits this subtask's emitted offsets to the group (for monitoring).
    fn commit(&self, mode: CommitMode) {
        if !self.resolved {
            return;
        }
        let offsets = self
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.emitted));
        self.commit_offsets(offsets, mode);
    }

    fn commit_offsets(&self, offsets: impl Iterator<Item = (String, i32, i64)>, mode: CommitMode) {
        if self.options.group_id.is_none() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, mode) {
                tracing::warn!("{}: cannot commit offsets to the group: {e}", self.owner());
            }
        }
    }

    /// Splits that have been without data long enough to be idle (Flink's idleness: no
    /// record for `table.exec.source.idle-timeout`). A partition that was empty when the read
    /// started is idle until it has data, so that it never holds time back.
    fn mark_idle(&mut self) {
        for p in &mut self.partitions {
            if p.finished || p.idle {
                continue;
            }
            let timed_out = self
                .spec
                .idle_timeout
                .is_some_and(|t| p.last_data.elapsed() >= t);
            let empty = !p.had_data && p.next >= p.high_at_start;
            if empty || timed_out {
                tracing::debug!("partition {} of '{}' is idle", p.partition, p.topic);
                p.idle = true;
                self.ready
                    .push_back((SourcePoll::Split(p.split, SplitStatus::Idle), None));
            }
        }
    }
}

impl KafkaReader {
    /// The next entry of `ready` that is more than a move of the position.
    fn next_ready(&mut self) -> Option<SourcePoll> {
        while let Some((poll, reached)) = self.ready.pop_front() {
            if let Some((i, offset)) = reached {
                if let Some(p) = self.partitions.get_mut(i) {
                    p.emitted = p.emitted.max(offset);
                }
            }
            if !matches!(poll, SourcePoll::Idle) {
                return Some(poll);
            }
        }
        None
    }

    /// Every partition's emitted position (and stop offset), or the restored ones if the
    /// partitions are not resolved yet.
    fn positions(&self) -> Vec<(String, i32, i64, Option<i64>)> {
        if !self.resolved {
            return self
                .restored
                .iter()
                .flatten()
                .map(|((t, p), (o, s))| (t.clone(), *p, *o, *s))
                .collect();
        }
        self.partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.emitted, p.stop))
            .collect()
    }
}

impl SourceReader for KafkaReader {
    fn snapshot_position(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut StateWriter,
    ) -> Result<()> {
        let positions = self.positions();
        state.put_u64(positions.len() as u64);
        for (topic, partition, offset, stop) in &positions {
            state.put_str(topic);
            state.put_i64(*partition as i64);
            state.put_i64(*offset);
            state.put_i64(stop.unwrap_or(-1));
        }
        self.pending_commits.insert(
            checkpoint,
            positions
                .into_iter()
                .map(|(t, p, o, _)| (t, p, o))
                .collect(),
        );
        // Bounded: a checkpoint that never completes must not pile up commits.
        while self.pending_commits.len() > 16 {
            self.pending_commits.pop_first();
        }
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        self.restore_rescaled(1, &mut [(0, state.clone())])
    }

    /// Partitions are the splits: every new subtask reads the positions of all old ones and
    /// takes those of the partitions it is assigned when it resolves them. A partition
    /// listed twice (a subtask that had not resolved its partitions yet lists every restored
    /// one) goes on from the furthest position, since offsets only move forward. The
    /// upsert-kafka's last rows per key are keyed state of its ChangelogNormalize.
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let mut restored: HashMap<(String, i32), RestoredPartition> = HashMap::new();
        for (_, state) in states.iter_mut() {
            for _ in 0..state.count()? {
                let topic = state.str()?.to_string();
                let partition = state.i64()? as i32;
                let offset = state.i64()?;
                let stop = state.i64()?;
                let entry = restored
                    .entry((topic, partition))
                    .or_insert((offset, (stop >= 0).then_some(stop)));
                entry.0 = entry.0.max(offset);
            }
            // Sluice 0.1 normalised upserts in the source and kept the last row of every
            // key here; that state is now the ChangelogNormalize operator's keyed state.
            if self.options.upsert && !state.is_empty() && state.count()? > 0 {
                return Err(SluiceError::Config(format!(
                    "{}: the checkpoint was written by Sluice 0.1, which kept the last row of every upsert-kafka key in the source; that state cannot move into this version's keyed state: start this job without it (a new 'pipeline.name' or an empty checkpoint directory) and read the topic from the start",
                    self.owner()
                )));
            }
        }
        self.restored = Some(restored);
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let mut latest = None;
        while let Some(entry) = self.pending_commits.first_entry() {
            if *entry.key() > checkpoint {
                break;
            }
            latest = Some(entry.remove());
        }
        if let Some(offsets) = latest {
            self.commit_offsets(offsets.into_iter(), CommitMode::Async);
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        if let Some(r) = self.next_ready() {
            return Ok(r);
        }
        if !self.resolved {
            if Instant::now() < self.next_attempt {
                return Ok(SourcePoll::Idle);
            }
            match self.resolve() {
                Ok(()) => {
                    self.resolved = true;
                    return Ok(self.next_ready().unwrap_or(SourcePoll::Idle));
                }
                Err(e @ SluiceError::Runtime(_)) => {
                    tracing::error!("{e}; retrying in {} s", self.backoff.as_secs());
                    self.partitions.clear();
                    self.ready.clear();
                    self.next_attempt = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_RETRY_BACKOFF);
                    return Ok(SourcePoll::Idle);
                }
                Err(e) => return Err(e),
            }
        }
        if self.all_finished() {
            self.commit(CommitMode::Sync);
            return Ok(SourcePoll::End);
        }
        let was_finished: Vec<bool> = self.partitions.iter().map(|p| p.finished).collect();
        self.fetch()?;
        self.decode_buffers()?;
        for (i, p) in self.partitions.iter().enumerate() {
            if p.finished && !was_finished[i] {
                self.ready
                    .push_back((SourcePoll::Split(p.split, SplitStatus::Finished), None));
            }
        }
        self.mark_idle();
        if self.last_lag.elapsed() >= LAG_EVERY {
            self.report_lag();
            self.last_lag = Instant::now();
        }
        if !self.checkpointing && self.last_commit.elapsed() >= self.commit_interval {
            self.commit(CommitMode::Async);
            self.last_commit = Instant::now();
        }
        Ok(self.next_ready().unwrap_or(SourcePoll::Idle))
    }
}

impl KafkaReader {
    /// Sets each partition's lag gauge (Kafka's `records-lag`); a broker that does not
    /// answer in time ends this round.
    fn report_lag(&self) {
        for p in &self.partitions {
            let Ok((_, high)) = self
                .consumer
                .fetch_watermarks(&p.topic, p.partition, LAG_TIMEOUT)
            else {
                return;
            };
            if high < 0 {
                continue;
            }
            let mut labels = self.labels.clone();
            labels.push(("topic", p.topic.clone()));
            labels.push(("partition", p.partition.to_string()));
            metrics::gauge!(LAG_METRIC, &labels).set((high - p.next).max(0) as f64);
        }
    }
}

impl Drop for KafkaReader {
    fn drop(&mut self) {
        // With checkpoints, only a completed checkpoint commits offsets.
        if self.checkpointing {
            return;
        }
        self.commit(CommitMode::Sync);
    }
}
