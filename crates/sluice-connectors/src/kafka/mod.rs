//! Flink's `kafka` and `upsert-kafka` connectors, over librdkafka (the `rdkafka` crate): they
//! read from and write to Sluice's own broker or any Kafka cluster.
//!
//! The source reads the partitions of its topics in parallel (partition `i` of the sorted list
//! goes to subtask `i % parallelism`), with one watermark per partition. The sink writes with
//! the key and value formats of the table. `upsert-kafka` reads a keyed changelog (the last
//! value per key; an empty value deletes) and writes upserts and tombstones.

mod options;
mod sink;
mod source;
pub mod txn_admin;

pub use options::{client_config, KafkaOptions, LogContext};

use crate::Connector;
use sluice_common::Result;
use sluice_engine::{OperatorFactory, SinkSpec, SourceFactory, SourceSpec};
use std::sync::Arc;

/// The metadata keys a Kafka source can read (`METADATA FROM 'key'`).
pub const METADATA_KEYS: &[&str] = &[
    "topic",
    "partition",
    "offset",
    "timestamp",
    "timestamp-type",
];

/// The `kafka` connector: append-only topics.
pub struct KafkaConnector;

impl Connector for KafkaConnector {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), METADATA_KEYS)?;
        let options = KafkaOptions::for_source(&spec.options, &spec.schema, &[], false)?;
        source::factory(spec.clone(), options)
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let options = KafkaOptions::for_sink(spec, false)?;
        if spec.updating && !crate::format::record::is_changelog(&options.value_format) {
            return Err(sluice_common::SluiceError::Plan(format!(
                "table '{}': the kafka sink only takes inserts, but the query produces updates (an updating aggregate); write it with 'connector' = 'upsert-kafka' and a PRIMARY KEY, or in a changelog format ('debezium-json' or 'canal-json'), or to a sink that takes updates",
                spec.table
            )));
        }
        sink::factory(spec.clone(), options)
    }
}

/// The `upsert-kafka` connector: a keyed changelog.
pub struct UpsertKafkaConnector;

impl Connector for UpsertKafkaConnector {
    fn name(&self) -> &'static str {
        "upsert-kafka"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), METADATA_KEYS)?;
        let options =
            KafkaOptions::for_source(&spec.options, &spec.schema, &spec.primary_key, true)?;
        source::factory(spec.clone(), options)
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let options = KafkaOptions::for_sink(spec, true)?;
        sink::factory(spec.clone(), options)
    }
}
