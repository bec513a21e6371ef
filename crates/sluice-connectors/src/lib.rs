//! The connectors Sluice ships, registered by the names Flink gives them: `filesystem`,
//! `datagen`, `nexmark`, `print`, `blackhole`, `kafka`, `upsert-kafka`, `jdbc`, `mqtt`, `webhook`, `redis`, `http`, `rabbitmq`, `nats` and `postgres-cdc`, and the
//! formats they read and write (`json`, `csv`, `raw`).
//!
//! Each connector is a type implementing [`Connector`]; [`BuiltinRegistry`] lists them in one
//! place and is what the SQL front end asks for a table's source or sink.

pub mod blackhole;
pub mod datagen;
pub mod filesystem;
pub mod format;
pub mod http_source;
pub mod jdbc;
pub mod jdbc_lookup;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod nexmark;
pub mod object_storage;
pub mod partition_commit;
pub mod postgres_cdc;
pub mod print;
pub mod rabbitmq;
pub mod redis_sink;
pub mod stripes;
pub mod webhook;

use sluice_common::{Result, SluiceError};
use sluice_engine::{
    ConnectorRegistry, LookupFactory, LookupSpec, OperatorFactory, SinkSpec, SourceFactory,
    SourceSpec,
};
use std::sync::Arc;

/// A connector: a source, a sink or both, known by its `'connector'` name.
pub trait Connector: Send + Sync {
    /// The value of `'connector'` that selects it.
    fn name(&self) -> &'static str;

    /// A source for a table, or an error if the connector cannot read.
    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        Err(SluiceError::Plan(format!(
            "table '{}': connector '{}' can only be used as a sink",
            spec.table,
            self.name()
        )))
    }

    /// A sink for a table, or an error if the connector cannot write.
    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        Err(SluiceError::Plan(format!(
            "table '{}': connector '{}' can only be used as a source",
            spec.table,
            self.name()
        )))
    }

    /// A table to look rows up in (a lookup join), or an error if the connector cannot.
    fn lookup(&self, spec: &LookupSpec) -> Result<Arc<dyn LookupFactory>> {
        Err(SluiceError::Plan(format!(
            "table '{}': connector '{}' cannot look rows up by key, so it cannot be joined FOR SYSTEM_TIME AS OF a processing time (a lookup join); the jdbc connector can",
            spec.table,
            self.name()
        )))
    }
}

/// Every connector built into Sluice.
pub struct BuiltinRegistry {
    connectors: Vec<Box<dyn Connector>>,
}

impl Default for BuiltinRegistry {
    fn default() -> Self {
        BuiltinRegistry {
            connectors: vec![
                Box::new(filesystem::FileSystemConnector),
                Box::new(datagen::DataGenConnector),
                Box::new(nexmark::NexmarkConnector),
                Box::new(print::PrintConnector),
                Box::new(blackhole::BlackHoleConnector),
                Box::new(kafka::KafkaConnector),
                Box::new(kafka::UpsertKafkaConnector),
                Box::new(jdbc::JdbcConnector),
                Box::new(mqtt::MqttConnector),
                Box::new(webhook::WebhookConnector),
                Box::new(redis_sink::RedisConnector),
                Box::new(http_source::HttpConnector),
                Box::new(rabbitmq::RabbitMqConnector),
                Box::new(nats::NatsConnector),
                Box::new(postgres_cdc::PostgresCdcConnector),
            ],
        }
    }
}

impl BuiltinRegistry {
    fn find(&self, name: &str) -> Result<&dyn Connector> {
        self.connectors
            .iter()
            .find(|c| c.name() == name)
            .map(|c| c.as_ref())
            .ok_or_else(|| {
                SluiceError::Config(format!(
                    "unknown connector '{name}'. Available connectors: {}",
                    self.connector_names().join(", ")
                ))
            })
    }
}

impl ConnectorRegistry for BuiltinRegistry {
    fn connector_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.connectors.iter().map(|c| c.name().into()).collect();
        names.sort();
        names
    }

    fn source(&self, name: &str, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        self.find(name)?.source(spec)
    }

    fn sink(&self, name: &str, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        self.find(name)?.sink(spec)
    }

    fn lookup(&self, name: &str, spec: &LookupSpec) -> Result<Arc<dyn LookupFactory>> {
        self.find(name)?.lookup(spec)
    }
}
