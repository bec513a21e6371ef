//! ListOffsets: the earliest (-2) or latest (-1) offset of a partition, or the first offset
//! at or after a timestamp.

use crate::errors;
use crate::Broker;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// Answers a ListOffsets request.
pub fn handle(broker: &Broker, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    // read_committed consumers see the latest offset as the last stable offset.
    let read_committed = r.isolation_level == 1;
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = ListOffsetsTopicResponse::default().with_name(topic.name.clone());
        for p in topic.partitions {
            let mut pr = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            match broker.topics.partition(&name, p.partition_index) {
                None => pr.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
                Some(part) => match p.timestamp {
                    LATEST if read_committed => pr.offset = part.last_stable_offset(),
                    LATEST => pr.offset = part.log_end_offset(),
                    EARLIEST => pr.offset = part.log_start_offset(),
                    ts if ts >= 0 => match part.offset_for_timestamp(ts) {
                        Ok(Some((offset, found_ts))) => {
                            pr.offset = offset;
                            pr.timestamp = found_ts;
                        }
                        Ok(None) => {}
                        Err(e) => pr.error_code = errors::of_log_error(&e),
                    },
                    _ => pr.error_code = errors::INVALID_REQUEST,
                },
            }
            t.partitions.push(pr);
        }
        resp.topics.push(t);
    }
    resp
}
