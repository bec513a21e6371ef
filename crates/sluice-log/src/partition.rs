//! One partition's log: its segments in offset order, appends that assign offsets, reads by
//! offset and by time, roll, retention and sync.

use crate::batch::{build_control_batch, control_marker, split_batches, BatchError, Marker};
use crate::config::LogConfig;
use crate::producers::{ProducerStates, SequenceCheck};
use crate::segment::Segment;
use crate::transactions::{AbortedTxn, TxnIndex};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What went wrong in a log operation.
#[derive(Debug)]
pub enum LogError {
    /// A batch was refused (the Kafka error CORRUPT_MESSAGE or INVALID_RECORD).
    Batch(BatchError),
    /// An offset outside `[log start, log end]`.
    OffsetOutOfRange {
        requested: i64,
        start: i64,
        end: i64,
    },
    /// The disk failed.
    Io { context: String, source: io::Error },
    /// An idempotent producer skipped sequence numbers (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// An idempotent producer with an old epoch (Kafka's INVALID_PRODUCER_EPOCH).
    ProducerFenced {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    /// A control batch sent by a client: only the transaction coordinator writes those
    /// (Kafka's INVALID_RECORD).
    ControlBatchFromClient { producer_id: i64 },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Batch(e) => write!(f, "{e}"),
            LogError::OffsetOutOfRange {
                requested,
                start,
                end,
            } => {
                write!(f, "offset {requested} is out of range [{start}, {end}]")
            }
            LogError::Io { context, source } => write!(f, "{context}: {source}"),
            LogError::OutOfOrderSequence {
                producer_id,
                expected,
                got,
            } => write!(
                f,
                "producer {producer_id}: sequence {got} out of order, expected {expected}"
            ),
            LogError::ProducerFenced {
                producer_id,
                current,
                got,
            } => write!(
                f,
                "producer {producer_id}: epoch {got} is older than the current epoch {current}"
            ),
            LogError::ControlBatchFromClient { producer_id } => write!(
                f,
                "producer {producer_id} sent a control batch; only the transaction coordinator writes transaction markers"
            ),
        }
    }
}

impl std::error::Error for LogError {}

fn io_err(context: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        context: context.display().to_string(),
        source,
    }
}

/// The offsets an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// True if the batches were a retry of batches already written (nothing was appended).
    pub duplicate: bool,
}

/// Batches read from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, concatenated.
    pub bytes: Vec<u8>,
    /// The log end offset when read.
    pub log_end_offset: i64,
    pub log_start_offset: i64,
    /// The last stable offset when read (the first offset of the oldest open transaction).
    pub last_stable_offset: i64,
    /// For a `read_committed` read: the aborted transactions with records in what was read.
    pub aborted: Vec<AbortedTxn>,
}

/// A partition's log in a directory of its own.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    producers: ProducerStates,
    txns: TxnIndex,
}

impl PartitionLog {
    /// Opens the log in `dir` (creating it), recovering the last segment.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = BTreeMap::new();
        let last = bases.len() - 1;
        for (i, base) in bases.iter().enumerate() {
            let seg = Segment::open(dir, *base, i == last, config.index_interval_bytes)
                .map_err(io_err(dir))?;
            segments.insert(*base, seg);
        }
        let log_start_offset = *segments.keys().next().unwrap_or(&0);
        // Idempotent producers' sequences and transactions, from the batch headers.
        let mut producers = ProducerStates::default();
        let mut txns = TxnIndex::default();
        for seg in segments.values() {
            for (h, marker) in seg.headers().map_err(io_err(dir))? {
                producers.record(&h, h.base_offset);
                txns.record(&h, marker);
            }
        }
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            producers,
            txns,
        })
    }

    fn active(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// The offset the next record gets (Kafka's log end offset).
    pub fn log_end_offset(&self) -> i64 {
        self.segments
            .values()
            .next_back()
            .map(|s| s.next_offset())
            .unwrap_or(0)
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Appends the batches of a produce request (concatenated v2 batches), assigning offsets.
    /// Every batch is checked (CRC, and the sequence of an idempotent producer) before any is
    /// written: a bad one refuses the whole request. A retried batch already written is not
    /// written again; its original offsets are returned.
    pub fn append(&mut self, records: &[u8]) -> Result<AppendInfo, LogError> {
        let batches = split_batches(records).map_err(LogError::Batch)?;
        if batches.is_empty() {
            return Err(LogError::Batch(BatchError::Truncated {
                needed: crate::BATCH_HEADER_BYTES,
                have: 0,
            }));
        }
        // Check every batch's sequence first (on a copy when there are several).
        let mut plan = Vec::with_capacity(batches.len());
        {
            let mut scratch = if batches.len() > 1 {
                Some(self.producers.clone())
            } else {
                None
            };
            let mut next = self.log_end_offset();
            for (_, h) in &batches {
                if h.is_control() {
                    return Err(LogError::ControlBatchFromClient {
                        producer_id: h.producer_id,
                    });
                }
                let states = scratch.as_ref().unwrap_or(&self.producers);
                let check = states.check(h);
                match check {
                    SequenceCheck::OutOfOrder { expected, got } => {
                        return Err(LogError::OutOfOrderSequence {
                            producer_id: h.producer_id,
                            expected,
                            got,
                        })
                    }
                    SequenceCheck::FencedEpoch { current, got } => {
                        return Err(LogError::ProducerFenced {
                            producer_id: h.producer_id,
                            current,
                            got,
                        })
                    }
                    SequenceCheck::Append => {
                        if let Some(s) = scratch.as_mut() {
                            s.record(h, next);
                        }
                        next += h.last_offset_delta as i64 + 1;
                    }
                    SequenceCheck::Duplicate { .. } => {}
                }
                plan.push(check);
            }
        }
        let mut first: Option<i64> = None;
        let mut last = -1;
        let mut all_duplicates = true;
        for ((bytes, mut h), check) in batches.into_iter().zip(plan) {
            match check {
                SequenceCheck::Duplicate {
                    base_offset,
                    last_offset,
                } => {
                    first.get_or_insert(base_offset);
                    last = last_offset;
                }
                _ => {
                    all_duplicates = false;
                    self.maybe_roll(bytes.len() as u64)?;
                    let next = self.log_end_offset();
                    h.base_offset = next;
                    let dir = self.dir.clone();
                    self.active().append(bytes, &h).map_err(io_err(&dir))?;
                    self.producers.record(&h, next);
                    self.txns.record(&h, None);
                    first.get_or_insert(next);
                    last = h.last_offset();
                }
            }
        }
        Ok(AppendInfo {
            base_offset: first.unwrap_or(-1),
            last_offset: last,
            duplicate: all_duplicates,
        })
    }

    /// Ends `producer_id`'s transaction in this partition with a control batch (written by the
    /// transaction coordinator). Returns the marker's offset.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        timestamp_ms: i64,
    ) -> Result<i64, LogError> {
        let mut batch = build_control_batch(timestamp_ms, producer_id, producer_epoch, marker, 0);
        self.maybe_roll(batch.len() as u64)?;
        let offset = self.log_end_offset();
        crate::batch::set_base_offset(&mut batch, offset);
        let h = crate::batch::validate(&batch).map_err(LogError::Batch)?;
        debug_assert_eq!(control_marker(&batch), Some(marker));
        let dir = self.dir.clone();
        self.active().append(&batch, &h).map_err(io_err(&dir))?;
        self.producers.record(&h, offset);
        self.txns.record(&h, Some(marker));
        Ok(offset)
    }

    /// The last stable offset: `read_committed` consumers read up to it.
    pub fn last_stable_offset(&self) -> i64 {
        self.txns.last_stable_offset(self.log_end_offset())
    }

    /// True if `producer_id` has a transaction open in this partition.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.txns.is_ongoing(producer_id)
    }

    /// A `read_committed` read: whole batches below the last stable offset, with the aborted
    /// transactions among them (their records are to be skipped by the consumer).
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        let mut r = self.read(offset, max_bytes)?;
        let lso = r.last_stable_offset;
        let mut keep = 0;
        let mut next = offset;
        let mut rest = r.bytes.as_slice();
        while let Ok(h) = crate::BatchHeader::parse(rest) {
            if h.base_offset >= lso || h.total_bytes() > rest.len() {
                break;
            }
            keep += h.total_bytes();
            next = h.last_offset() + 1;
            rest = &rest[h.total_bytes()..];
        }
        r.bytes.truncate(keep);
        r.aborted = self.txns.aborted_between(offset, next.max(offset));
        Ok(r)
    }

    fn maybe_roll(&mut self, incoming: u64) -> Result<(), LogError> {
        let seg_ms = self.config.segment_ms;
        let seg_bytes = self.config.segment_bytes;
        let interval = self.config.index_interval_bytes;
        let dir = self.dir.clone();
        let active = self.active();
        let too_big = active.size() > 0 && active.size() + incoming > seg_bytes;
        let too_old = active.size() > 0
            && seg_ms.is_some_and(|ms| active.created.elapsed().map(|e| e > ms).unwrap_or(false));
        if too_big || too_old {
            let base = active.next_offset();
            active.sync().map_err(io_err(&dir))?;
            let seg = Segment::open(&dir, base, false, interval).map_err(io_err(&dir))?;
            self.segments.insert(base, seg);
        }
        Ok(())
    }

    /// Whole batches from the one holding `offset`, at most about `max_bytes` (at least one
    /// batch if there is any, as Kafka does so that a large batch is never stuck).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start: self.log_start_offset,
                end,
            });
        }
        let mut bytes = Vec::new();
        for (_, seg) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if bytes.len() >= max_bytes && !bytes.is_empty() {
                break;
            }
            let from = offset.max(seg.base_offset);
            if from >= seg.next_offset() {
                continue;
            }
            let room = max_bytes.saturating_sub(bytes.len());
            let part = seg.read(from, room).map_err(io_err(&self.dir))?;
            if part.len() > room && !bytes.is_empty() {
                break;
            }
            bytes.extend_from_slice(&part);
        }
        Ok(ReadResult {
            bytes,
            log_end_offset: end,
            log_start_offset: self.log_start_offset,
            last_stable_offset: self.txns.last_stable_offset(end),
            aborted: Vec::new(),
        })
    }

    /// The first offset whose timestamp is at or after `ts`, with that timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for seg in self.segments.values() {
            if let Some(found) = seg.offset_for_timestamp(ts).map_err(io_err(&self.dir))? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Handles on every file written since the last sync, to fsync without holding the log
    /// (see `Segment::take_unsynced`). Fsyncing them all makes every append so far durable.
    pub fn take_unsynced(&mut self) -> Result<Vec<std::fs::File>, LogError> {
        let dir = self.dir.clone();
        let mut out = Vec::new();
        for seg in self.segments.values_mut() {
            out.extend(seg.take_unsynced().map_err(io_err(&dir))?);
        }
        Ok(out)
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        for seg in self.segments.values_mut() {
            seg.sync().map_err(io_err(&dir))?;
        }
        Ok(())
    }

    /// Deletes whole segments past the retention time or size (never the active one).
    /// Returns how many were deleted.
    pub fn apply_retention(&mut self, now: SystemTime) -> Result<usize, LogError> {
        let mut deleted = 0;
        loop {
            if self.segments.len() <= 1 {
                break;
            }
            let total = self.size_bytes();
            let Some((&base, oldest)) = self.segments.iter().next() else {
                break;
            };
            let by_size = self
                .config
                .retention_bytes
                .is_some_and(|max| total - oldest.size() >= max);
            let newest_ms = oldest.max_timestamp();
            let by_time = self.config.retention_ms.is_some_and(|keep| {
                let now_ms = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                newest_ms >= 0 && now_ms - newest_ms > keep.as_millis() as i64
            });
            if !(by_size || by_time) {
                break;
            }
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete(&self.dir).map_err(io_err(&self.dir))?;
                deleted += 1;
            }
            self.log_start_offset = *self.segments.keys().next().unwrap_or(&0);
            self.txns.truncate_before(self.log_start_offset);
        }
        Ok(deleted)
    }

    /// Removes the log and its directory.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self.segments);
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    /// The bytes of all its segments' record batches (Kafka's `kafka.log:type=Log,name=Size`).
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_batch, validate};
    use std::io::Write;

    fn cfg() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    fn offsets_of(bytes: &[u8]) -> Vec<i64> {
        crate::batch::split_batches(bytes)
            .unwrap()
            .iter()
            .map(|(_, h)| h.base_offset)
            .collect()
    }

    #[test]
    fn appends_assign_offsets_and_reads_return_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), cfg()).unwrap();
        let mut written = 0;
        for i in 0..20 {
            let b = build_batch(1000 + i, &[(None, b"aaaa"), (None, b"bbbb")]);
            let info = log.append(&b).unwrap();
            written += b.len() as u64;
            assert_eq!(info.base_offset, i * 2);
            assert_eq!(info.last_offset, i * 2 + 1);
        }
        assert!(log.segment_count() > 1, "segments roll by size");
        assert_eq!(log.size_bytes(), written, "the size counts every segment");
        assert_eq!(log.log_end_offset(), 40);
        // A read inside a batch returns that whole batch.
        let r = log.read(7, 1 << 20).unwrap();
        assert_eq!(offsets_of(&r.bytes)[0], 6);
        assert_eq!(*offsets_of(&r.bytes).last().unwrap(), 38);
        // max_bytes smaller than a batch still returns one batch.
        let r = log.read(0, 1).unwrap();
        assert_eq!(offsets_of(&r.bytes), vec![0]);
        assert!(log.read(41, 100).is_err());
        assert_eq!(log.read(40, 100).unwrap().bytes.len(), 0);
        assert_eq!(log.offset_for_timestamp(1005).unwrap(), Some((10, 1005)));
        assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    }

    #[test]
    fn a_corrupt_request_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), cfg()).unwrap();
        let good = build_batch(0, &[(None, b"x")]);
        let mut bad = build_batch(0, &[(None, b"y")]);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let mut both = good.clone();
        both.extend_from_slice(&bad);
        assert!(matches!(log.append(&both), Err(LogError::Batch(_))));
        assert_eq!(log.log_end_offset(), 0);
    }

    #[test]
    fn reopening_recovers_and_truncates_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
            for i in 0..5 {
                log.append(&build_batch(i, &[(None, b"hello")])).unwrap();
            }
            log.sync().unwrap();
        }
        // A torn write: half a batch at the end of the segment.
        let seg = dir.path().join("00000000000000000000.log");
        let half = build_batch(9, &[(None, b"torn")]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&half[..half.len() / 2])
            .unwrap();
        // And a stale index.
        std::fs::write(dir.path().join("00000000000000000000.index"), b"junk").unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 5);
        let r = log.read(0, 1 << 20).unwrap();
        assert_eq!(offsets_of(&r.bytes), vec![0, 1, 2, 3, 4]);
        for (b, _) in crate::batch::split_batches(&r.bytes).unwrap() {
            validate(b).unwrap();
        }
        assert_eq!(
            log.append(&build_batch(10, &[(None, b"after")]))
                .unwrap()
                .base_offset,
            5
        );
    }

    #[test]
    fn retention_deletes_old_segments_but_not_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 200,
            retention_ms: Some(std::time::Duration::from_secs(60)),
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        for i in 0..10 {
            log.append(&build_batch(i * 1000, &[(None, b"0123456789")]))
                .unwrap();
        }
        let before = log.segment_count();
        assert!(before > 2);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        let deleted = log.apply_retention(now).unwrap();
        assert_eq!(deleted, before - 1);
        assert_eq!(log.segment_count(), 1);
        assert!(log.log_start_offset() > 0);
        assert!(log.read(0, 100).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        // Against a model (a Vec of every record in order): any sequence of appends,
        // rolls and reopens reads back every record once, in order, from any offset.
        #[test]
        fn reads_match_a_model(
            sizes in proptest::collection::vec((1usize..5, 1usize..60), 1..40),
            reopen_every in 1usize..10,
            from in 0i64..50,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes: 300, index_interval_bytes: 64, ..LogConfig::default() };
            let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            let mut model: Vec<Vec<u8>> = Vec::new();
            for (i, (count, len)) in sizes.iter().enumerate() {
                let values: Vec<Vec<u8>> = (0..*count).map(|k| vec![(i * 7 + k) as u8; *len]).collect();
                let recs: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, v.as_slice())).collect();
                let info = log.append(&build_batch(i as i64, &recs)).unwrap();
                proptest::prop_assert_eq!(info.base_offset, model.len() as i64);
                model.extend(values);
                if i % reopen_every == 0 {
                    drop(log);
                    log = PartitionLog::open(dir.path(), config.clone()).unwrap();
                }
            }
            proptest::prop_assert_eq!(log.log_end_offset(), model.len() as i64);
            let from = from.min(model.len() as i64);
            let bytes = log.read(from, usize::MAX).unwrap().bytes;
            let mut next = None;
            for (b, h) in crate::batch::split_batches(&bytes).unwrap() {
                validate(b).unwrap();
                if let Some(n) = next {
                    proptest::prop_assert_eq!(h.base_offset, n);
                }
                next = Some(h.last_offset() + 1);
                proptest::prop_assert!(h.last_offset() >= from);
            }
            if from < model.len() as i64 {
                proptest::prop_assert_eq!(next, Some(model.len() as i64));
            }
        }
    }

    #[test]
    fn transactions_survive_a_reopen_and_bound_read_committed() {
        use crate::batch::{build_transactional_batch, Marker};
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&build_batch(0, &[(None, b"plain")])).unwrap(); // 0
        log.append(&build_transactional_batch(0, &[(None, b"t1")], 5, 0, 0))
            .unwrap(); // 1
        log.append(&build_transactional_batch(0, &[(None, b"t2")], 6, 0, 0))
            .unwrap(); // 2
        assert_eq!(log.last_stable_offset(), 1);
        let r = log.read_committed(0, 1 << 20).unwrap();
        assert_eq!(offsets_of(&r.bytes), vec![0]);
        log.append_marker(5, 0, Marker::Abort, 0).unwrap(); // 3
        assert_eq!(log.last_stable_offset(), 2);
        // A client may not write markers.
        let forged = crate::batch::build_control_batch(0, 6, 0, Marker::Commit, 0);
        assert!(matches!(
            log.append(&forged),
            Err(LogError::ControlBatchFromClient { .. })
        ));
        drop(log);
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(
            log.last_stable_offset(),
            2,
            "the open transaction is found again"
        );
        assert!(log.has_open_transaction(6));
        log.append_marker(6, 0, Marker::Commit, 0).unwrap(); // 4
        let r = log.read_committed(0, 1 << 20).unwrap();
        assert_eq!(r.last_stable_offset, 5);
        assert_eq!(offsets_of(&r.bytes), vec![0, 1, 2, 3, 4]);
        assert_eq!(r.aborted.len(), 1);
        assert_eq!(
            (r.aborted[0].producer_id, r.aborted[0].first_offset),
            (5, 1)
        );
        // A zombie of producer 5 with the old epoch is fenced by a marker of a newer epoch.
        log.append_marker(5, 1, Marker::Abort, 0).unwrap();
        assert!(matches!(
            log.append(&build_transactional_batch(0, &[(None, b"z")], 5, 0, 1)),
            Err(LogError::ProducerFenced { .. })
        ));
    }

    #[test]
    fn idempotent_producer_retries_are_not_stored_twice_and_gaps_are_refused() {
        use crate::batch::build_producer_batch;
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let b0 = build_producer_batch(0, &[(None, b"a"), (None, b"b")], 7, 0, 0);
        let b1 = build_producer_batch(0, &[(None, b"c")], 7, 0, 2);
        assert_eq!(log.append(&b0).unwrap().base_offset, 0);
        assert_eq!(log.append(&b1).unwrap().base_offset, 2);
        // A retry of b0: same offsets, nothing written.
        let again = log.append(&b0).unwrap();
        assert_eq!(
            (again.base_offset, again.last_offset, again.duplicate),
            (0, 1, true)
        );
        assert_eq!(log.log_end_offset(), 3);
        // A gap.
        let gap = build_producer_batch(0, &[(None, b"x")], 7, 0, 9);
        assert!(matches!(
            log.append(&gap),
            Err(LogError::OutOfOrderSequence {
                expected: 3,
                got: 9,
                ..
            })
        ));
        // A zombie with an older epoch after a newer one wrote.
        log.append(&build_producer_batch(0, &[(None, b"n")], 7, 1, 0))
            .unwrap();
        let zombie = build_producer_batch(0, &[(None, b"z")], 7, 0, 3);
        assert!(matches!(
            log.append(&zombie),
            Err(LogError::ProducerFenced { .. })
        ));
        // The state survives a restart.
        drop(log);
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let dup = log
            .append(&build_producer_batch(0, &[(None, b"n")], 7, 1, 0))
            .unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.base_offset, 3);
        assert_eq!(log.log_end_offset(), 4);
    }
}
