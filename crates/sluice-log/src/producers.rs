//! Idempotent producers: per partition, the sequence numbers each producer id has written,
//! so that a retried batch is recognised (and answered with its first offset, not stored
//! again) and a gap is refused, as Kafka does. Kafka keeps the last five batches of each
//! producer; so does this.

use crate::batch::BatchHeader;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer.
pub const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WrittenBatch {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<WrittenBatch>,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not from an idempotent producer, or the next in sequence: append it.
    Append,
    /// Already written (a retry): answer with these offsets, append nothing.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// A gap or a sequence from the past that is no longer remembered.
    OutOfOrder { expected: i32, got: i32 },
    /// An epoch older than the producer's current one (a zombie).
    FencedEpoch { current: i16, got: i16 },
}

/// The producers of one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_sequence(h: &BatchHeader) -> i32 {
    // Sequences wrap around at i32::MAX, as in Kafka.
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Checks a batch before it is appended.
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return SequenceCheck::Append;
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // A producer this partition has not seen (or forgotten): accept any start,
            // as Kafka does after its state expired.
            return SequenceCheck::Append;
        };
        if h.producer_epoch < entry.epoch {
            return SequenceCheck::FencedEpoch {
                current: entry.epoch,
                got: h.producer_epoch,
            };
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: h.base_sequence,
                }
            };
        }
        if entry.batches.is_empty() {
            // Known only from a transaction marker: its sequences here are not remembered.
            return SequenceCheck::Append;
        }
        let last = last_sequence(h);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == h.base_sequence && b.last_sequence == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            };
        }
        let expected = entry
            .batches
            .back()
            .map(|b| b.last_sequence.wrapping_add(1).max(0))
            .unwrap_or(0);
        if h.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: h.base_sequence,
            }
        }
    }

    /// Records a batch that was appended with these offsets.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        if h.is_control() && h.producer_id >= 0 {
            // A transaction marker written with a newer epoch fences the producer's older
            // epochs here too; its sequences start again from 0.
            let entry = self.producers.entry(h.producer_id).or_default();
            if h.producer_epoch > entry.epoch {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            return;
        }
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(WrittenBatch {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            base_offset,
            last_offset: base_offset + h.last_offset_delta as i64,
        });
        while entry.batches.len() > REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }
}
