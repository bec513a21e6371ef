//! The transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! ListTransactions and DescribeTransactions (InitProducerId is in `init_producer_id`), and
//! the writing of transaction markers. The decisions are in `crate::transactions`.
//!
//! Ending a transaction: the outcome is made durable first (`Prepare*`), then a control
//! batch is appended to every partition the transaction wrote to and fsynced, the staged
//! group offsets are committed (on commit), and only then is the transaction `Complete*` and
//! the client answered.

use crate::errors;
use crate::offsets::Committed;
use crate::transactions::{EndOutcome, TxnMetadata, TxnOffsets, TxnState};
use crate::Broker;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_log::batch::Marker;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes the markers of a decided transaction, makes them durable, commits its staged
/// offsets (if it commits) and completes it. A partition deleted meanwhile is skipped.
pub async fn write_markers(broker: &Broker, txn: &TxnMetadata) -> Result<(), String> {
    let marker = match txn.state {
        TxnState::PrepareCommit => Marker::Commit,
        TxnState::PrepareAbort => Marker::Abort,
        other => {
            return Err(format!(
                "transaction in state {} has no markers",
                other.name()
            ))
        }
    };
    let mut waits = Vec::new();
    for (topic, index) in &txn.partitions {
        let Some(part) = broker.topics.partition(topic, *index) else {
            continue;
        };
        part.append_marker(txn.producer_id, txn.producer_epoch, marker, now_ms())
            .map_err(|e| format!("writing a transaction marker to {topic}-{index}: {e}"))?;
        waits.push(broker.flusher.request(part));
    }
    for wait in waits {
        wait.await
            .unwrap_or_else(|_| Err("the flusher has stopped".into()))?;
    }
    if marker == Marker::Commit {
        for (group, offsets) in &txn.offsets {
            let entries = offsets
                .iter()
                .map(|((t, p), (offset, metadata))| {
                    let c = Committed {
                        offset: *offset,
                        metadata: metadata.clone(),
                    };
                    ((t.clone(), *p), c)
                })
                .collect::<Vec<_>>();
            if !entries.is_empty() {
                broker
                    .offsets
                    .commit(group, entries)
                    .map_err(|e| format!("committing offsets of group {group}: {e}"))?;
            }
        }
    }
    broker.notify_appended();
    broker
        .transactions
        .complete(&txn.transactional_id, txn.producer_epoch)
        .map_err(|code| format!("completing the transaction failed (error {code})"))
}

/// Aborts transactions past their timeout (called periodically) and finishes those found
/// decided on start.
pub async fn finish_pending(broker: &Broker, at_start: bool) {
    let txns = if at_start {
        broker.transactions.prepared()
    } else {
        broker.transactions.take_timed_out()
    };
    for txn in txns {
        if let Err(e) = write_markers(broker, &txn).await {
            tracing::warn!(transactional_id = %txn.transactional_id, error = %e, "ending a transaction failed");
        }
    }
}

/// AddPartitionsToTxn (versions 0 to 3, the client's form).
pub fn add_partitions(broker: &Broker, r: AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let id = r.v3_and_below_transactional_id.0.to_string();
    let mut wanted = Vec::new();
    let mut unknown = false;
    for t in &r.v3_and_below_topics {
        for p in &t.partitions {
            if broker.topics.partition(&t.name.0, *p).is_none() {
                unknown = true;
            }
            wanted.push((t.name.0.to_string(), *p));
        }
    }
    let result = if unknown {
        Err(errors::UNKNOWN_TOPIC_OR_PARTITION)
    } else {
        broker.transactions.add_partitions(
            &id,
            r.v3_and_below_producer_id.0,
            r.v3_and_below_producer_epoch,
            &wanted,
        )
    };
    let mut resp = AddPartitionsToTxnResponse::default();
    for t in r.v3_and_below_topics {
        let mut tr = AddPartitionsToTxnTopicResult::default().with_name(t.name.clone());
        for p in t.partitions {
            let code = match result {
                Ok(()) => errors::NONE,
                Err(errors::UNKNOWN_TOPIC_OR_PARTITION) => {
                    if broker.topics.partition(&t.name.0, p).is_none() {
                        errors::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        errors::OPERATION_NOT_ATTEMPTED
                    }
                }
                Err(code) => code,
            };
            tr.results_by_partition.push(
                AddPartitionsToTxnPartitionResult::default()
                    .with_partition_index(p)
                    .with_partition_error_code(code),
            );
        }
        resp.results_by_topic_v3_and_below.push(tr);
    }
    resp
}

/// AddOffsetsToTxn.
pub fn add_offsets(broker: &Broker, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let code = broker
        .transactions
        .add_offsets(
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            &r.group_id.0,
        )
        .err()
        .unwrap_or(errors::NONE);
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

/// TxnOffsetCommit: offsets staged in the transaction.
pub fn txn_offset_commit(broker: &Broker, r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let mut staged = TxnOffsets::new();
    for t in &r.topics {
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string());
            staged.insert(
                (t.name.0.to_string(), p.partition_index),
                (p.committed_offset, metadata),
            );
        }
    }
    let code = broker
        .transactions
        .stage_offsets(
            &r.transactional_id.0,
            r.producer_id.0,
            r.producer_epoch,
            &r.group_id.0,
            staged,
        )
        .err()
        .unwrap_or(errors::NONE);
    let mut resp = TxnOffsetCommitResponse::default();
    for t in r.topics {
        let mut tr = TxnOffsetCommitResponseTopic::default().with_name(t.name);
        for p in t.partitions {
            tr.partitions.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        resp.topics.push(tr);
    }
    resp
}

/// EndTxn: commit or abort, answered once the markers are durable.
pub async fn end_txn(broker: &Broker, r: EndTxnRequest) -> EndTxnResponse {
    let resp = EndTxnResponse::default()
        .with_producer_id(r.producer_id)
        .with_producer_epoch(r.producer_epoch);
    match broker.transactions.prepare_end(
        &r.transactional_id.0,
        r.producer_id.0,
        r.producer_epoch,
        r.committed,
    ) {
        Ok(EndOutcome::AlreadyDone) => resp,
        Ok(EndOutcome::WriteMarkers(txn)) => match write_markers(broker, &txn).await {
            Ok(()) => resp,
            Err(e) => {
                // The decision is durable: the markers are written again on the next start.
                tracing::error!(transactional_id = %txn.transactional_id, error = %e, "ending a transaction failed");
                resp.with_error_code(errors::KAFKA_STORAGE_ERROR)
            }
        },
        Err(code) => resp.with_error_code(code),
    }
}

/// ListTransactions.
pub fn list(broker: &Broker, r: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut resp = ListTransactionsResponse::default();
    let mut states = Vec::new();
    for name in &r.state_filters {
        match TxnState::parse(name) {
            Some(s) => states.push(s),
            None => resp.unknown_state_filters.push(name.clone()),
        }
    }
    if !resp.unknown_state_filters.is_empty() && states.is_empty() {
        return resp;
    }
    let pids: Vec<i64> = r.producer_id_filters.iter().map(|p| p.0).collect();
    let now = now_ms();
    for m in broker.transactions.list(&states, &pids) {
        // Version 1: only transactions running longer than the duration filter.
        if r.duration_filter >= 0 && (m.start_ms < 0 || now - m.start_ms < r.duration_filter) {
            continue;
        }
        resp.transaction_states.push(
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name())),
        );
    }
    resp
}

/// DescribeTransactions.
pub fn describe(broker: &Broker, r: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut resp = DescribeTransactionsResponse::default();
    for id in r.transactional_ids {
        let mut st = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        match broker.transactions.describe(&id.0) {
            None => st.error_code = errors::TRANSACTIONAL_ID_NOT_FOUND,
            Some(m) => {
                st.transaction_state = StrBytes::from_static_str(m.state.name());
                st.transaction_timeout_ms = m.timeout_ms;
                st.transaction_start_time_ms = m.start_ms;
                st.producer_id = ProducerId(m.producer_id);
                st.producer_epoch = m.producer_epoch;
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in m.partitions {
                    match topics.last_mut() {
                        Some(t) if *t.topic.0 == *topic => t.partitions.push(p),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(vec![p]),
                        ),
                    }
                }
                st.topics = topics;
            }
        }
        resp.transaction_states.push(st);
    }
    resp
}
