//! How the SQL front end finds connectors by their `'connector'` option without knowing any.

use crate::operator::OperatorFactory;
use crate::source::SourceFactory;
use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
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

impl SinkSpec {
    /// The names of the columns it receives, in order (for the preview of its rows).
    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

/// What a lookup join asks of a table: its rows by the values of some of its columns.
#[derive(Debug, Clone)]
pub struct LookupSpec {
    /// The table's name, for messages.
    pub table: String,
    /// The table's columns, in order (what a lookup returns).
    pub schema: SchemaRef,
    /// The columns looked up by (indexes into `schema`): a row matches a key when these
    /// columns equal its values.
    pub keys: Vec<usize>,
    /// The table's `WITH` options.
    pub options: Options,
}

/// How a lookup join caches what it looked up (Flink's `lookup.cache` = `PARTIAL` and
/// `lookup.partial-cache.*`): per key, the rows found, in memory, not checkpointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupCacheConfig {
    /// The most keys kept; the least recently used goes first.
    pub max_rows: u64,
    /// A key is looked up again this long after it was (`None`: never).
    pub expire_after_write: Option<Duration>,
    /// A key not read for this long is forgotten (`None`: never).
    pub expire_after_access: Option<Duration>,
    /// Whether a key with no rows is cached too.
    pub cache_missing_key: bool,
}

/// A table that rows can be looked up in, for lookup joins.
pub trait LookupFactory: Send + Sync {
    /// A name for the operator graph.
    fn name(&self) -> String;

    /// The cache the join keeps in front of the lookups, if the table's options ask for one.
    fn cache(&self) -> Option<LookupCacheConfig>;

    /// A lookup source for one subtask.
    fn create(&self, ctx: &crate::operator::SubtaskContext) -> Result<Box<dyn LookupSource>>;
}

/// Looks up rows by key (a connection to the table, for one subtask).
pub trait LookupSource: Send {
    /// The rows whose key columns equal each key: `keys` holds one array per key column, a
    /// key per row. Returns the rows found (the table's columns) and, for each, the index of
    /// the key it matched. Retries what may pass (a lost connection) as the table's options
    /// say; an error fails the job.
    fn lookup(&mut self, keys: &[ArrayRef]) -> Result<(RecordBatch, Vec<u32>)>;
}

/// A registry of connectors by name.
pub trait ConnectorRegistry: Send + Sync {
    /// The names of every connector, for error messages.
    fn connector_names(&self) -> Vec<String>;

    /// A source for a table with `'connector' = name`.
    fn source(&self, name: &str, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>>;

    /// A sink for a table with `'connector' = name`.
    fn sink(&self, name: &str, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>>;

    /// A table with `'connector' = name` to look rows up in (a lookup join).
    fn lookup(&self, name: &str, spec: &LookupSpec) -> Result<Arc<dyn LookupFactory>> {
        Err(SluiceError::Plan(format!(
            "table '{}': connector '{name}' cannot look rows up by key",
            spec.table
        )))
    }
}
