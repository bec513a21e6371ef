//! How the SQL front end finds connectors by their `'connector'` option without knowing any.

use crate::operator::OperatorFactory;
use crate::source::SourceFactory;
use arrow::datatypes::SchemaRef;
use sluice_common::{Options, Result};
use std::sync::Arc;

/// What a source is asked to produce.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// The table's name, for messages.
    pub table: String,
    /// The physical columns to produce, in order.
    pub schema: SchemaRef,
    /// The table's `WITH` options.
    pub options: Options,
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
