//! The `WITH` options of the Kafka connectors, checked at planning time, and the librdkafka
//! client configuration they give.

use crate::format;
use arrow::datatypes::{Schema, SchemaRef};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use sluice_common::{Options, Result, SluiceError};
use sluice_engine::SinkSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

const COMMON_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "properties.bootstrap.servers",
    "format",
    "key.format",
    "key.fields",
    "key.fields-prefix",
    "value.format",
    "value.fields-include",
];

const KAFKA_SOURCE_OPTIONS: &[&str] = &[
    "topic-pattern",
    "properties.group.id",
    "scan.startup.mode",
    "scan.startup.specific-offsets",
    "scan.startup.timestamp-millis",
    "scan.bounded.mode",
    "scan.bounded.specific-offsets",
    "scan.bounded.timestamp-millis",
    "scan.topic-partition-discovery.interval",
    "scan.parallelism",
];

const KAFKA_SINK_OPTIONS: &[&str] = &[
    "sink.partitioner",
    "sink.parallelism",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
];

const UPSERT_OPTIONS: &[&str] = &[
    "properties.group.id",
    "scan.bounded.mode",
    "scan.bounded.specific-offsets",
    "scan.bounded.timestamp-millis",
    "scan.parallelism",
    "sink.parallelism",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
];

/// Where a source starts reading a partition (`scan.startup.mode`).
#[derive(Debug, Clone, PartialEq)]
pub enum StartupMode {
    Earliest,
    Latest,
    GroupOffsets,
    Timestamp(i64),
    Specific(BTreeMap<i32, i64>),
}

/// Where a source stops (`scan.bounded.mode`); `Unbounded` reads forever.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundedMode {
    Unbounded,
    Latest,
    GroupOffsets,
    Timestamp(i64),
    Specific(BTreeMap<i32, i64>),
}

/// Which topics a source reads.
#[derive(Debug, Clone)]
pub enum Topics {
    List(Vec<String>),
    Pattern(regex::Regex),
}

/// How a sink picks partitions (`sink.partitioner`).
#[derive(Debug, Clone, PartialEq)]
pub enum Partitioner {
    /// By key hash (as Kafka's Java client), or spread when there is no key.
    Default,
    /// Sink subtask `i` writes to partition `i % partitions`.
    Fixed,
    /// Each record to the next partition.
    RoundRobin,
}

/// The checked options of one Kafka table.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub owner: String,
    pub topics: Topics,
    pub bootstrap_servers: String,
    pub group_id: Option<String>,
    /// `properties.*` other than the servers and group, for librdkafka.
    pub properties: BTreeMap<String, String>,
    pub startup: StartupMode,
    pub bounded: BoundedMode,
    pub value_format: String,
    /// Options of the value format, without their `value.` prefix.
    pub value_format_options: Options,
    pub key_format: Option<String>,
    pub key_format_options: Options,
    /// Physical columns (indexes) that make the key.
    pub key_columns: Vec<usize>,
    /// The prefix of key column names that the key's own field names lack.
    pub key_prefix: String,
    /// Physical columns (indexes) in the value.
    pub value_columns: Vec<usize>,
    pub partitioner: Partitioner,
    /// True for `upsert-kafka`.
    pub upsert: bool,
    /// `sink.delivery-guarantee`.
    pub delivery: DeliveryGuarantee,
    /// `sink.transactional-id-prefix` (required for exactly-once).
    pub transactional_id_prefix: Option<String>,
}

/// What a Kafka sink promises about its records (`sink.delivery-guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Records are sent and not waited for.
    None,
    /// Every record is acknowledged before a checkpoint completes; a restore may write some
    /// again.
    AtLeastOnce,
    /// Records are written in Kafka transactions committed when their checkpoint completes;
    /// `read_committed` consumers see each once.
    ExactlyOnce,
}

fn config_error(owner: &str, message: String) -> SluiceError {
    SluiceError::Config(format!("{owner}: {message}"))
}

/// `partition:0,offset:42;partition:1,offset:300`.
fn parse_specific_offsets(owner: &str, key: &str, text: &str) -> Result<BTreeMap<i32, i64>> {
    let mut out = BTreeMap::new();
    for (n, part) in text.split(';').filter(|p| !p.trim().is_empty()).enumerate() {
        let mut partition = None;
        let mut offset = None;
        for kv in part.split(',') {
            match kv.trim().split_once(':') {
                Some(("partition", v)) => partition = v.trim().parse::<i32>().ok(),
                Some(("offset", v)) => offset = v.trim().parse::<i64>().ok(),
                _ => {}
            }
        }
        match (partition, offset) {
            (Some(p), Some(o)) if p >= 0 && o >= 0 => {
                out.insert(p, o);
            }
            _ => {
                return Err(config_error(
                    owner,
                    format!(
                        "option '{key}': entry {} '{part}' is not 'partition:<n>,offset:<n>' (entries are separated by ';')",
                        n + 1
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn timestamp_option(options: &Options, key: &str) -> Result<i64> {
    options.i64(key)?.ok_or_else(|| {
        config_error(
            &options.owner,
            format!("option '{key}' is required by this mode (milliseconds since the epoch)"),
        )
    })
}

/// The options of format `format` for the role `prefix` (`key.` or `value.`): both
/// `value.json.x` and, for the value, the short `json.x` are accepted.
fn format_options(options: &Options, format: &str, prefix: &str, short: bool) -> Result<Options> {
    let allowed = format::format_options(format);
    let mut values = BTreeMap::new();
    for (k, v) in options.iter() {
        let name = if let Some(rest) = k.strip_prefix(prefix) {
            rest
        } else if short {
            k
        } else {
            continue;
        };
        if name.starts_with(&format!("{format}.")) {
            if !allowed.contains(&name) {
                return Err(config_error(
                    &options.owner,
                    format!(
                        "unknown option '{k}'. Valid options of format '{format}' are: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            values.insert(name.to_string(), v.to_string());
        }
    }
    // As Flink's Kafka tables: the schema registry subject of a single topic's values (keys)
    // is `<topic>-value` (`<topic>-key`).
    let subject = format!("{format}.subject");
    if format == "avro-confluent" && !values.contains_key(&subject) {
        if let Some(topic) = options.get("topic").filter(|t| !t.contains(';')) {
            let role = prefix.trim_end_matches('.');
            values.insert(subject, format!("{}-{role}", topic.trim()));
        }
    }
    Ok(Options::new(options.owner.clone(), values))
}

fn check_format(owner: &str, format: &str) -> Result<()> {
    if format::record_formats().contains(&format) {
        Ok(())
    } else {
        Err(config_error(
            owner,
            format!(
                "unknown format '{format}'. Available formats: {}",
                format::record_formats().join(", ")
            ),
        ))
    }
}

impl KafkaOptions {
    /// The options of a source table; `primary_key` names the key columns of an
    /// `upsert-kafka` table.
    pub fn for_source(
        options: &Options,
        schema: &SchemaRef,
        primary_key: &[String],
        upsert: bool,
    ) -> Result<Self> {
        let o = Self::parse(options, schema, primary_key, upsert)?;
        if o.upsert && o.key_columns.is_empty() {
            return Err(config_error(
                &o.owner,
                "'upsert-kafka' tables need a PRIMARY KEY (...) NOT ENFORCED: it is the record key"
                    .into(),
            ));
        }
        Ok(o)
    }

    /// The options of a sink table.
    pub fn for_sink(spec: &SinkSpec, upsert: bool) -> Result<Self> {
        let pk: Vec<String> = spec
            .primary_key
            .iter()
            .map(|&i| spec.schema.field(i).name().clone())
            .collect();
        let o = Self::parse(&spec.options, &spec.schema, &pk, upsert)?;
        if upsert && o.key_columns.is_empty() {
            return Err(config_error(
                &o.owner,
                "'upsert-kafka' tables need a PRIMARY KEY (...) NOT ENFORCED: it is the record key"
                    .into(),
            ));
        }
        if let Topics::List(t) = &o.topics {
            if t.len() != 1 {
                return Err(config_error(
                    &o.owner,
                    format!(
                        "a sink writes to one topic, but 'topic' lists {}: {}",
                        t.len(),
                        t.join(";")
                    ),
                ));
            }
        } else {
            return Err(config_error(
                &o.owner,
                "a sink needs 'topic', not 'topic-pattern'".into(),
            ));
        }
        Ok(o)
    }

    fn parse(
        options: &Options,
        schema: &SchemaRef,
        primary_key: &[String],
        upsert: bool,
    ) -> Result<Self> {
        let owner = options.owner.clone();
        let mut known: Vec<&str> = COMMON_OPTIONS.to_vec();
        if upsert {
            known.extend_from_slice(UPSERT_OPTIONS);
        } else {
            known.extend_from_slice(KAFKA_SOURCE_OPTIONS);
            known.extend_from_slice(KAFKA_SINK_OPTIONS);
        }
        let mut prefixes: Vec<String> = vec!["properties.".into()];
        for f in &format::record_formats() {
            prefixes.push(format!("{f}."));
            prefixes.push(format!("key.{f}."));
            prefixes.push(format!("value.{f}."));
        }
        let prefix_refs: Vec<&str> = prefixes.iter().map(|s| s.as_str()).collect();
        options.check_known(&known, &prefix_refs)?;

        let topics = match (options.get("topic"), options.get("topic-pattern")) {
            (Some(_), Some(_)) => {
                return Err(config_error(
                    &owner,
                    "give either 'topic' or 'topic-pattern', not both".into(),
                ))
            }
            (Some(t), None) => Topics::List(
                t.split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
            (None, Some(p)) => {
                Topics::Pattern(regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    config_error(
                        &owner,
                        format!("option 'topic-pattern' is not a valid regular expression: {e}"),
                    )
                })?)
            }
            (None, None) => {
                return Err(config_error(
                    &owner,
                    "option 'topic' is required (or 'topic-pattern' for a source)".into(),
                ))
            }
        };
        let bootstrap_servers = options
            .required("properties.bootstrap.servers")?
            .to_string();
        let group_id = options.get("properties.group.id").map(str::to_string);
        let mut properties = BTreeMap::new();
        for (k, v) in options.iter() {
            if let Some(p) = k.strip_prefix("properties.") {
                if p != "bootstrap.servers" && p != "group.id" {
                    properties.insert(p.to_string(), v.to_string());
                }
            }
        }

        let startup = if upsert {
            StartupMode::Earliest
        } else {
            match options.string("scan.startup.mode", "group-offsets").as_str() {
                "earliest-offset" => StartupMode::Earliest,
                "latest-offset" => StartupMode::Latest,
                "group-offsets" => StartupMode::GroupOffsets,
                "timestamp" => {
                    StartupMode::Timestamp(timestamp_option(options, "scan.startup.timestamp-millis")?)
                }
                "specific-offsets" => StartupMode::Specific(parse_specific_offsets(
                    &owner,
                    "scan.startup.specific-offsets",
                    options.required("scan.startup.specific-offsets")?,
                )?),
                other => {
                    return Err(config_error(
                        &owner,
                        format!("option 'scan.startup.mode' has value '{other}', expected one of: earliest-offset, latest-offset, group-offsets, timestamp, specific-offsets"),
                    ))
                }
            }
        };
        let bounded = match options.string("scan.bounded.mode", "unbounded").as_str() {
            "unbounded" => BoundedMode::Unbounded,
            "latest-offset" => BoundedMode::Latest,
            "group-offsets" => BoundedMode::GroupOffsets,
            "timestamp" => {
                BoundedMode::Timestamp(timestamp_option(options, "scan.bounded.timestamp-millis")?)
            }
            "specific-offsets" => BoundedMode::Specific(parse_specific_offsets(
                &owner,
                "scan.bounded.specific-offsets",
                options.required("scan.bounded.specific-offsets")?,
            )?),
            other => {
                return Err(config_error(
                    &owner,
                    format!("option 'scan.bounded.mode' has value '{other}', expected one of: unbounded, latest-offset, group-offsets, timestamp, specific-offsets"),
                ))
            }
        };
        if (startup == StartupMode::GroupOffsets && options.get("scan.startup.mode").is_some()
            || bounded == BoundedMode::GroupOffsets)
            && group_id.is_none()
        {
            return Err(config_error(
                &owner,
                "'group-offsets' needs 'properties.group.id'".into(),
            ));
        }

        let value_format = match (options.get("format"), options.get("value.format")) {
            (Some(_), Some(_)) => {
                return Err(config_error(
                    &owner,
                    "give either 'format' or 'value.format', not both".into(),
                ))
            }
            (Some(f), None) | (None, Some(f)) => f.to_string(),
            (None, None) => {
                return Err(config_error(
                    &owner,
                    "option 'value.format' (or 'format') is required".into(),
                ))
            }
        };
        check_format(&owner, &value_format)?;
        let short = options.get("format").is_some();
        let value_format_options = format_options(options, &value_format, "value.", short)?;
        let key_format = options.get("key.format").map(str::to_string);
        if let Some(k) = &key_format {
            check_format(&owner, k)?;
            if format::record::is_changelog(k) {
                return Err(config_error(
                    &owner,
                    format!(
                        "'key.format' = '{k}' is a changelog format: only a value holds changes"
                    ),
                ));
            }
        }
        if upsert && format::record::is_changelog(&value_format) {
            return Err(config_error(
                &owner,
                format!("upsert-kafka reads a key's latest row; its value format cannot be the changelog format '{value_format}' (use the kafka connector)"),
            ));
        }
        let key_format_options = match &key_format {
            Some(k) => format_options(options, k, "key.", false)?,
            None => Options::new(owner.clone(), BTreeMap::new()),
        };
        let key_prefix = options.string("key.fields-prefix", "");

        let index_of = |name: &str| -> Result<usize> {
            schema.index_of(name).map_err(|_| {
                config_error(
                    &owner,
                    format!(
                        "key field '{name}' is not a physical column; columns are: {}",
                        column_list(schema)
                    ),
                )
            })
        };
        let key_columns: Vec<usize> = if upsert {
            if options.get("key.fields").is_some() {
                return Err(config_error(
                    &owner,
                    "'upsert-kafka' takes its key from the PRIMARY KEY; remove 'key.fields'".into(),
                ));
            }
            primary_key
                .iter()
                .map(|k| index_of(k))
                .collect::<Result<_>>()?
        } else {
            match options.get("key.fields") {
                Some(f) => f
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(index_of)
                    .collect::<Result<_>>()?,
                None => vec![],
            }
        };
        if !key_columns.is_empty() && key_format.is_none() {
            return Err(config_error(
                &owner,
                "a key ('key.fields' or the PRIMARY KEY of 'upsert-kafka') needs 'key.format'"
                    .into(),
            ));
        }
        if key_columns.is_empty() && key_format.is_some() {
            return Err(config_error(
                &owner,
                "'key.format' is set but 'key.fields' is not: name the key columns".into(),
            ));
        }
        for &k in &key_columns {
            if !schema.field(k).name().starts_with(&key_prefix) {
                return Err(config_error(
                    &owner,
                    format!(
                        "key field '{}' does not start with 'key.fields-prefix' '{key_prefix}'",
                        schema.field(k).name()
                    ),
                ));
            }
        }
        let value_columns: Vec<usize> = match options.string("value.fields-include", "ALL").as_str()
        {
            "ALL" => (0..schema.fields().len()).collect(),
            "EXCEPT_KEY" => (0..schema.fields().len())
                .filter(|i| !key_columns.contains(i))
                .collect(),
            other => {
                return Err(config_error(
                    &owner,
                    format!(
                    "option 'value.fields-include' has value '{other}', expected ALL or EXCEPT_KEY"
                ),
                ))
            }
        };
        if !key_prefix.is_empty()
            && value_columns.len() == schema.fields().len()
            && !key_columns.is_empty()
        {
            return Err(config_error(
                &owner,
                "'key.fields-prefix' needs 'value.fields-include' = 'EXCEPT_KEY'".into(),
            ));
        }
        let partitioner = match options.string("sink.partitioner", "default").as_str() {
            "default" => Partitioner::Default,
            "fixed" => Partitioner::Fixed,
            "round-robin" => Partitioner::RoundRobin,
            other => {
                return Err(config_error(
                    &owner,
                    format!("option 'sink.partitioner' has value '{other}', expected default, fixed or round-robin"),
                ))
            }
        };
        if options
            .get("scan.topic-partition-discovery.interval")
            .is_some()
        {
            return Err(config_error(
                &owner,
                "'scan.topic-partition-discovery.interval' is not supported yet: a source reads the partitions that exist when the job starts".into(),
            ));
        }
        let delivery = match options.get("sink.delivery-guarantee").unwrap_or("at-least-once") {
            "at-least-once" => DeliveryGuarantee::AtLeastOnce,
            "exactly-once" => DeliveryGuarantee::ExactlyOnce,
            "none" => DeliveryGuarantee::None,
            other => {
                return Err(config_error(
                    &owner,
                    format!("option 'sink.delivery-guarantee' has value '{other}', expected exactly-once, at-least-once or none"),
                ))
            }
        };
        let transactional_id_prefix = options
            .get("sink.transactional-id-prefix")
            .map(str::to_string);
        if delivery == DeliveryGuarantee::ExactlyOnce {
            match &transactional_id_prefix {
                None => {
                    return Err(config_error(
                        &owner,
                        "'sink.delivery-guarantee' = 'exactly-once' needs 'sink.transactional-id-prefix', a prefix of the transactional ids unique to this job among all jobs writing to the cluster".into(),
                    ))
                }
                Some(p) if p.is_empty() => {
                    return Err(config_error(
                        &owner,
                        "option 'sink.transactional-id-prefix' must not be empty".into(),
                    ))
                }
                Some(_) => {}
            }
            if upsert {
                // Flink's upsert-kafka sink has no exactly-once mode either.
                return Err(config_error(
                    &owner,
                    "the upsert-kafka sink does not take 'sink.delivery-guarantee' = 'exactly-once' (as in Flink); its upserts are idempotent by key".into(),
                ));
            }
        }
        Ok(KafkaOptions {
            owner,
            topics,
            bootstrap_servers,
            group_id,
            properties,
            startup,
            bounded,
            value_format,
            value_format_options,
            key_format,
            key_format_options,
            key_columns,
            key_prefix,
            value_columns,
            partitioner,
            upsert,
            delivery,
            transactional_id_prefix,
        })
    }

    /// The schema of the key's fields (names without the key prefix).
    pub fn key_schema(&self, schema: &Schema) -> SchemaRef {
        Arc::new(Schema::new(
            self.key_columns
                .iter()
                .map(|&i| {
                    let f = schema.field(i);
                    f.as_ref()
                        .clone()
                        .with_name(f.name().strip_prefix(&self.key_prefix).unwrap_or(f.name()))
                })
                .collect::<Vec<_>>(),
        ))
    }

    /// The schema of the value's fields.
    pub fn value_schema(&self, schema: &Schema) -> SchemaRef {
        Arc::new(Schema::new(
            self.value_columns
                .iter()
                .map(|&i| schema.field(i).as_ref().clone())
                .collect::<Vec<_>>(),
        ))
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A librdkafka configuration for the table: its servers, then every `properties.*`.
pub fn client_config(options: &KafkaOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &options.bootstrap_servers);
    for (k, v) in &options.properties {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Passes librdkafka's errors and logs to `tracing`, naming the table.
#[derive(Clone)]
pub struct LogContext {
    pub owner: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!("{}: Kafka client: {fac}: {log_message}", self.owner)
            }
            _ => tracing::debug!("{}: Kafka client: {fac}: {log_message}", self.owner),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            return; // Reaching the end of a partition is news to the reader, not an error.
        }
        tracing::warn!("{}: Kafka client: {error}: {reason}", self.owner);
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(
            "table 't'",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    #[test]
    fn parses_flink_options() {
        let o = KafkaOptions::for_source(
            &opts(&[
                ("connector", "kafka"),
                ("topic", "a;b"),
                ("properties.bootstrap.servers", "h:9092"),
                ("properties.fetch.min.bytes", "1"),
                ("scan.startup.mode", "specific-offsets"),
                (
                    "scan.startup.specific-offsets",
                    "partition:0,offset:42;partition:1,offset:300",
                ),
                ("key.format", "json"),
                ("key.fields", "id"),
                ("value.format", "json"),
                ("value.json.ignore-parse-errors", "true"),
                ("value.fields-include", "EXCEPT_KEY"),
            ]),
            &schema(),
            &[],
            false,
        )
        .unwrap();
        assert!(matches!(&o.topics, Topics::List(t) if t == &["a", "b"]));
        assert_eq!(
            o.startup,
            StartupMode::Specific(BTreeMap::from([(0, 42), (1, 300)]))
        );
        assert_eq!(o.key_columns, vec![0]);
        assert_eq!(o.value_columns, vec![1]);
        assert_eq!(
            o.value_format_options.get("json.ignore-parse-errors"),
            Some("true")
        );
        assert_eq!(
            o.properties.get("fetch.min.bytes").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn bad_options_say_what_and_where() {
        let base = [
            ("connector", "kafka"),
            ("topic", "a"),
            ("properties.bootstrap.servers", "h:9092"),
            ("format", "json"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            KafkaOptions::for_source(&opts(&v), &schema(), &[], false)
                .unwrap_err()
                .to_string()
        };
        assert!(with(&[("scan.startup.mode", "newest")])
            .contains("'scan.startup.mode' has value 'newest'"));
        assert!(with(&[
            ("scan.startup.mode", "specific-offsets"),
            ("scan.startup.specific-offsets", "partition:x")
        ])
        .contains("entry 1"));
        assert!(
            with(&[("key.fields", "nope"), ("key.format", "json")]).contains("key field 'nope'")
        );
        assert!(with(&[("json.nope", "1")]).contains("Valid options of format 'json'"));
        assert!(with(&[("scan.bounded.mode", "group-offsets")]).contains("properties.group.id"));
        assert!(KafkaOptions::for_source(&opts(&base), &schema(), &[], true)
            .unwrap_err()
            .to_string()
            .contains("PRIMARY KEY"));
    }
}
