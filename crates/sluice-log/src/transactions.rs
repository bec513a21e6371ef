//! The transactions of one partition, as Kafka keeps them beside a log: which producers have a
//! transaction open here (and from which offset), and which transactions were aborted (their
//! first offset and the offset of their abort marker). From these come the last stable offset
//! (the first offset of the oldest open transaction, or the log end) up to which
//! `read_committed` consumers may read, and the aborted transactions a fetch lists so that
//! those consumers skip their records.
//!
//! Everything here is rebuilt from the batch headers when a log opens; aborted transactions
//! are forgotten once retention deletes the records they cover.

use crate::batch::{BatchHeader, Marker};
use std::collections::{BTreeMap, VecDeque};

/// A transaction that ended with an abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// The offset of the transaction's first record in this partition.
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
}

/// Open and aborted transactions of a partition.
#[derive(Debug, Clone, Default)]
pub struct TxnIndex {
    /// Producer id → first offset of its open transaction.
    ongoing: BTreeMap<i64, i64>,
    /// In marker order, so also in `last_offset` order.
    aborted: VecDeque<AbortedTxn>,
}

impl TxnIndex {
    /// Records an appended batch (`marker` is the control record of a control batch).
    pub fn record(&mut self, h: &BatchHeader, marker: Option<Marker>) {
        if !h.is_transactional() || h.producer_id < 0 {
            return;
        }
        if !h.is_control() {
            self.ongoing.entry(h.producer_id).or_insert(h.base_offset);
            return;
        }
        // A marker without an open transaction here (a retried end, or a transaction that
        // never wrote to this partition) changes nothing.
        if let Some(first_offset) = self.ongoing.remove(&h.producer_id) {
            if marker == Some(Marker::Abort) {
                self.aborted.push_back(AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset,
                    last_offset: h.base_offset,
                });
            }
        }
    }

    /// The last stable offset: nothing at or after it may be read by `read_committed`.
    pub fn last_stable_offset(&self, log_end_offset: i64) -> i64 {
        self.ongoing
            .values()
            .copied()
            .min()
            .unwrap_or(log_end_offset)
            .min(log_end_offset)
    }

    /// True if `producer_id` has a transaction open in this partition.
    pub fn is_ongoing(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// The aborted transactions with records in `[from, to)`, as a fetch of that range lists
    /// them.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions that end before `log_start_offset` (deleted by retention).
    pub fn truncate_before(&mut self, log_start_offset: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start_offset)
        {
            self.aborted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_control_batch, build_transactional_batch, BatchHeader};

    fn at(mut batch: Vec<u8>, offset: i64) -> BatchHeader {
        crate::batch::set_base_offset(&mut batch, offset);
        BatchHeader::parse(&batch).unwrap()
    }

    #[test]
    fn open_transactions_hold_back_the_stable_offset_and_aborts_are_listed() {
        let mut idx = TxnIndex::default();
        // Producer 1 writes at 0..=1, producer 2 at 2, producer 1 again at 3.
        idx.record(
            &at(
                build_transactional_batch(0, &[(None, b"a"), (None, b"b")], 1, 0, 0),
                0,
            ),
            None,
        );
        idx.record(
            &at(build_transactional_batch(0, &[(None, b"c")], 2, 0, 0), 2),
            None,
        );
        idx.record(
            &at(build_transactional_batch(0, &[(None, b"d")], 1, 0, 2), 3),
            None,
        );
        assert_eq!(idx.last_stable_offset(4), 0);
        // Producer 1 commits at 4: producer 2's transaction now holds the stable offset.
        idx.record(
            &at(build_control_batch(0, 1, 0, Marker::Commit, 0), 4),
            Some(Marker::Commit),
        );
        assert_eq!(idx.last_stable_offset(5), 2);
        // Producer 2 aborts at 5.
        idx.record(
            &at(build_control_batch(0, 2, 0, Marker::Abort, 0), 5),
            Some(Marker::Abort),
        );
        assert_eq!(idx.last_stable_offset(6), 6);
        let aborted = AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 5,
        };
        assert_eq!(idx.aborted_between(0, 6), vec![aborted]);
        assert_eq!(idx.aborted_between(5, 6), vec![aborted]);
        assert!(idx.aborted_between(6, 10).is_empty());
        assert!(idx.aborted_between(0, 2).is_empty());
        idx.truncate_before(6);
        assert!(idx.aborted_between(0, 6).is_empty());
    }
}
