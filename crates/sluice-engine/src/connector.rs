//! How the SQL front end finds connectors by their `'connector'` option without knowing any.

use crate::operator::OperatorFactory;
use crate::source::SourceFactory;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use sluice_common::{Options, Result, SluiceError};
use std::sync::Arc;
use std::time::Duration;

/// A column whose value a connector supplies from a record's metadata (`METADATA FROM 'key'`).
#[derive(Debug, Clone)]
pub struct MetadataColumn {
    /// The column's name.
    pub name: String,
    /// The connector's metadata key (`partition`, `offset`, `timestamp`).
    pub key: String,
    /// The declared type.
    pub data_type: DataType,
}

/// What a source is asked to produce.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The table's name, for messages.
    pub table: String,
    /// The physical columns to produce, in order.
    pub schema: SchemaRef,
    /// Metadata columns to produce after the physical ones, in order.
    pub metadata: Vec<MetadataColumn>,
    /// The table's `WITH` options.
    pub options: Options,
    /// `table.exec.source.idle-timeout`: when a source split without data counts as idle.
    pub idle_timeout: Option<Duration>,
    /// The table's primary key columns, by name.
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY` columns, by name: a filesystem source takes their values from the
    /// directories `k=v` the files are in.
    pub partition_keys: Vec<String>,
}

impl SourceSpec {
    /// The columns the source produces: the physical ones, then the metadata ones.
    pub fn produced_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for m in &self.metadata {
            fields.push(Field::new(&m.name, m.data_type.clone(), true));
        }
        Arc::new(Schema::new(fields))
    }

    /// Fails unless every metadata column uses one of `keys` (the connector's readable keys).
    pub fn check_metadata(&self, connector: &str, keys: &[&str]) -> Result<()> {
        for m in &self.metadata {
            if !keys.contains(&m.key.as_str()) {
                let valid = if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                };
                return Err(SluiceError::Config(format!(
                    "table '{}': column '{}' reads metadata '{}', which connector '{connector}' does not have; its metadata keys are: {valid}",
                    self.table, m.name, m.key
                )));
            }
        }
        Ok(())
    }
}

/// What a sink is asked to consume.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The table's name, for messages.
    pub table: String,
    /// The columns it receives, in order.
    pub schema: SchemaRef,
    /// The table's `WITH` options.
    pub options: Options,
    /// True if the stream has updates or deletes, not only inserts.
    pub updating: bool,
    /// The table's primary key columns (indexes into `schema`), if declared.
    pub primary_key: Vec<usize>,
    /// The job's local time zone (`table.local-time-zone`), for formatting `TIMESTAMP_LTZ`.
    pub time_zone: String,
    /// `PARTITIONED BY` columns (indexes into `schema`): a filesystem sink writes each row
    /// into the directory `k1=v1/k2=v2` of its values.
    pub partition_keys: Vec<usize>,
}

/// A registry of connectors by name.
pub trait ConnectorRegistry: Send + Sync {
    /// The names of every connector, for error messages.
    fn connector_names(&self) -> Vec<String>;

    /// A source for a table with `'connector' = name`.
    fn source(&self, name: &str, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>>;

    /// A sink for a table with `'connector' = name`.
    fn sink(&self, name: &str, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>>;
}
