//! InitProducerId: a producer id and epoch for an idempotent producer, or for a transactional
//! one (`transactional.id`). A transactional producer gets its id's producer id with the epoch
//! bumped, which fences any older instance; a transaction that instance left open is aborted
//! first.

use crate::errors;
use crate::transactions::InitOutcome;
use crate::Broker;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

/// Answers an InitProducerId request.
pub async fn handle(broker: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = r.transactional_id.as_ref().filter(|id| !id.0.is_empty()) {
        let expected = (r.producer_id.0 >= 0).then_some((r.producer_id.0, r.producer_epoch));
        // At most two rounds: the abort of a transaction left open, then the answer.
        for _ in 0..2 {
            match broker
                .transactions
                .init(&id.0, r.transaction_timeout_ms, expected, || {
                    broker.producer_ids.next()
                }) {
                Ok(InitOutcome::Ready {
                    producer_id,
                    producer_epoch,
                }) => {
                    resp.producer_id = ProducerId(producer_id);
                    resp.producer_epoch = producer_epoch;
                    return resp;
                }
                Ok(InitOutcome::AbortFirst(txn)) => {
                    if let Err(e) = super::transactions::write_markers(broker, &txn).await {
                        tracing::warn!(transactional_id = %txn.transactional_id, error = %e, "aborting an open transaction failed");
                        resp.error_code = errors::COORDINATOR_NOT_AVAILABLE;
                        return resp;
                    }
                }
                Err(code) => {
                    resp.error_code = code;
                    return resp;
                }
            }
        }
        resp.error_code = errors::CONCURRENT_TRANSACTIONS;
        return resp;
    }
    // A producer bumping its epoch keeps its id (KIP-360).
    if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
        resp.producer_id = r.producer_id;
        resp.producer_epoch = r.producer_epoch + 1;
        return resp;
    }
    match broker.producer_ids.next() {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(e) => {
            tracing::warn!(error = %e, "allocating a producer id failed");
            resp.error_code = errors::COORDINATOR_NOT_AVAILABLE;
        }
    }
    resp
}
