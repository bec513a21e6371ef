//! InitProducerId: a producer id and epoch for an idempotent producer. Transactional ids
//! (Kafka transactions) are not supported yet and are refused clearly.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

/// Answers an InitProducerId request.
pub fn handle(broker: &Broker, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if r.transactional_id.is_some() {
        tracing::info!(
            "InitProducerId with a transactional id refused: transactions are not supported yet"
        );
        resp.error_code = errors::INVALID_REQUEST;
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
