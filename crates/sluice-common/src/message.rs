//! What flows on a channel between two tasks: data, watermarks, checkpoint barriers and the end
//! of a stream.

use crate::time::EventTime;
use arrow::array::{Array, BooleanArray};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// The kind of change a row stands for, as Flink's `RowKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKind {
    /// `+I`: a new row.
    Insert,
    /// `-U`: the old value of an updated row.
    UpdateBefore,
    /// `+U`: the new value of an updated row.
    UpdateAfter,
    /// `-D`: a deleted row.
    Delete,
}

impl RowKind {
    /// The short form Flink prints: `+I`, `-U`, `+U`, `-D`.
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateBefore => "-U",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    /// True for `+I` and `+U`, the kinds that add a row.
    pub fn is_addition(self) -> bool {
        matches!(self, RowKind::Insert | RowKind::UpdateAfter)
    }
}

/// A batch of rows and, for an updating stream, the kind of each row.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    /// The rows.
    pub data: RecordBatch,
    /// `None` for an insert-only batch; otherwise one kind per row.
    pub kinds: Option<Arc<[RowKind]>>,
    /// The source split (a Kafka partition) all rows come from, if the source has splits.
    /// Operators chained to the source keep it, so that the watermark assigner can keep one
    /// watermark per split; an exchange drops it.
    pub split: Option<SplitId>,
}

/// A source split's number (a Kafka partition's index among the source's partitions).
pub type SplitId = u32;

/// What a source says about one of its splits, for per-split watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitStatus {
    /// The split is assigned and will have data: its watermark holds time back.
    Active,
    /// The split has had no data for a while: leave it out of the minimum until it has.
    Idle,
    /// The split has reached its end: it holds nothing back any more.
    Finished,
}

impl ChangeBatch {
    /// A batch of inserts.
    pub fn inserts(data: RecordBatch) -> Self {
        ChangeBatch {
            data,
            kinds: None,
            split: None,
        }
    }

    /// A batch with the given row kinds (`None`: all inserts).
    pub fn new(data: RecordBatch, kinds: Option<Arc<[RowKind]>>) -> Self {
        ChangeBatch {
            data,
            kinds,
            split: None,
        }
    }

    /// The same rows marked as coming from `split`.
    pub fn from_split(self, split: SplitId) -> Self {
        ChangeBatch {
            split: Some(split),
            ..self
        }
    }

    /// Rows `offset..offset + len`, with their kinds and split.
    pub fn slice(&self, offset: usize, len: usize) -> Self {
        ChangeBatch {
            data: self.data.slice(offset, len),
            kinds: self
                .kinds
                .as_ref()
                .map(|k| Arc::from(&k[offset..offset + len])),
            split: self.split,
        }
    }

    /// The rows `mask` is true for (a NULL is false), with their kinds and split.
    pub fn filter(&self, mask: &BooleanArray) -> Result<Self, ArrowError> {
        Ok(ChangeBatch {
            data: arrow::compute::filter_record_batch(&self.data, mask)?,
            kinds: self.kinds.as_ref().map(|k| {
                k.iter()
                    .enumerate()
                    .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
                    .map(|(_, k)| *k)
                    .collect()
            }),
            split: self.split,
        })
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// The kind of row `i`.
    pub fn kind(&self, i: usize) -> RowKind {
        match &self.kinds {
            None => RowKind::Insert,
            Some(k) => k[i],
        }
    }
}

/// A checkpoint's identifier, increasing from 1.
pub type CheckpointId = u64;

/// One element of a stream between operators.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows.
    Data(ChangeBatch),
    /// No row with an event time at or below this will follow on this channel.
    Watermark(EventTime),
    /// A checkpoint barrier.
    Barrier(CheckpointId),
    /// The sender has had no data for the idle timeout: leave it out of the minimum watermark
    /// until it sends data or a watermark again (Flink's `WatermarkStatus.IDLE`).
    Idle,
    /// A source split changed status. It travels only along the source's chain, to the
    /// watermark assigner; exchanges drop it.
    Split(SplitId, SplitStatus),
    /// The channel will carry nothing more.
    EndOfStream,
}
