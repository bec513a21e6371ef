//! Formats of whole records: a Kafka record's value or key, an MQTT message. One record's
//! bytes are one row (`json`, `csv`, `raw`) or the changes of rows (`debezium-json`,
//! `canal-json`: an update is `-U` and `+U`).
//!
//! Each format is a [`RecordFormat`] (its name, its options, whether it holds changes, and
//! how it decodes and encodes records) in one registry, [`FORMATS`]; a connector finds a
//! table's format there by name ([`find`]) and reads and writes with [`RecordDecoder`] and
//! [`RecordEncoder`].

use super::{decoder, encode_rows, encoder, raw, LineDecoder, LineEncoder};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use regex::Regex;
use serde_json::Value;
use sluice_common::{ChangeBatch, Options, Result, RowKind, SluiceError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A format of records.
pub trait RecordFormat: Sync {
    /// Its `'format'` name.
    fn name(&self) -> &'static str;

    /// Its options (`<name>.<option>`), as Flink names them.
    fn options(&self) -> &'static [&'static str];

    /// True if its records hold changes (updates and deletes), not only inserts: a source
    /// in it reads a changelog, a sink in it takes one.
    fn is_changelog(&self) -> bool {
        false
    }

    /// A decoder of records into rows of `schema`, with the table's options (checked here).
    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>>;

    /// An encoder of rows of `schema` into records, with the table's options (checked here).
    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>>;
}

/// Decodes records of one format (see [`RecordDecoder::decode`]).
pub trait DecodeRecords: Send {
    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        joined: Option<&[u8]>,
        locate: &dyn Fn(usize) -> String,
        skipped: &AtomicU64,
    ) -> Result<Decoded>;
}

/// Encodes rows into records of one format, one a row (`kind(i)` is row `i`'s kind).
pub trait EncodeRecords: Send {
    fn encode(&mut self, data: &RecordBatch, kind: &dyn Fn(usize) -> RowKind) -> Result<Encoded>;
}

/// Every format of records.
pub static FORMATS: &[&dyn RecordFormat] = &[
    &super::avro::Avro { confluent: false },
    &super::avro::Avro { confluent: true },
    &Canal,
    &CSV,
    &Debezium,
    &JSON,
    &Raw,
];

/// The names of the formats of records.
pub fn names() -> Vec<&'static str> {
    FORMATS.iter().map(|f| f.name()).collect()
}

/// The format `name`, or an error of `owner` that lists them.
pub fn find(name: &str, owner: &str) -> Result<&'static dyn RecordFormat> {
    FORMATS
        .iter()
        .copied()
        .find(|f| f.name() == name)
        .ok_or_else(|| {
            SluiceError::Config(format!(
                "{owner}: unknown format '{name}'. Available formats: {}",
                names().join(", ")
            ))
        })
}

/// True if `format` is a format of records that holds changes.
pub fn is_changelog(format: &str) -> bool {
    FORMATS
        .iter()
        .any(|f| f.name() == format && f.is_changelog())
}

/// Fails (at planning) if a sink that writes records in `format` gets an updating stream it
/// cannot write: only the changelog formats hold updates and deletes.
pub fn check_sink_changes(
    connector: &str,
    table: &str,
    format: &str,
    updating: bool,
) -> Result<()> {
    if updating && !is_changelog(format) {
        return Err(SluiceError::Plan(format!(
            "table '{table}': the query produces updates or deletes, which the {connector} sink cannot write in format '{format}'; write an insert-only query, or use a changelog format ('debezium-json' or 'canal-json')"
        )));
    }
    Ok(())
}

/// `json` (a JSON object a record; a line break inside one is only whitespace) and `csv`
/// (a row a record): the line formats of files, a record a line.
struct LineFormat {
    name: &'static str,
    options: &'static [&'static str],
}
/// `raw`: the record's bytes are the value of the table's one column.
struct Raw;
/// `debezium-json`: Debezium's change events.
struct Debezium;
/// `canal-json`: Alibaba Canal's change records.
struct Canal;

const JSON: LineFormat = LineFormat {
    name: "json",
    options: super::json::OPTIONS,
};
const CSV: LineFormat = LineFormat {
    name: "csv",
    options: super::csv::OPTIONS,
};

impl RecordFormat for LineFormat {
    fn name(&self) -> &'static str {
        self.name
    }
    fn options(&self) -> &'static [&'static str] {
        self.options
    }
    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>> {
        Ok(Box::new(LinesDecoder {
            lines: decoder(self.name, schema, options)?,
            json: self.name == "json",
        }))
    }
    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        Ok(Box::new(LinesEncoder(encoder(
            self.name, schema, options, time_zone,
        )?)))
    }
}

impl RecordFormat for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn options(&self) -> &'static [&'static str] {
        raw::OPTIONS
    }
    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>> {
        raw::check_schema(&options.owner, &schema)?;
        Ok(Box::new(RawCodec))
    }
    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        _time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        raw::check_schema(&options.owner, &schema)?;
        Ok(Box::new(RawCodec))
    }
}

/// The options of `debezium-json`.
pub const DEBEZIUM_OPTIONS: &[&str] = &[
    "debezium-json.schema-include",
    "debezium-json.ignore-parse-errors",
    "debezium-json.timestamp-format.standard",
    "debezium-json.encode.ignore-null-fields",
];

/// The options of `canal-json`.
pub const CANAL_OPTIONS: &[&str] = &[
    "canal-json.ignore-parse-errors",
    "canal-json.timestamp-format.standard",
    "canal-json.database.include",
    "canal-json.table.include",
    "canal-json.encode.ignore-null-fields",
];

impl RecordFormat for Debezium {
    fn name(&self) -> &'static str {
        "debezium-json"
    }
    fn options(&self) -> &'static [&'static str] {
        DEBEZIUM_OPTIONS
    }
    fn is_changelog(&self) -> bool {
        true
    }
    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>> {
        let envelope = Envelope::Debezium {
            schema_include: options.bool("debezium-json.schema-include", false)?,
        };
        ChangelogDecoder::boxed(self.name(), envelope, schema, options)
    }
    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        ChangelogEncoder::boxed(self.name(), false, schema, options, time_zone)
    }
}

impl RecordFormat for Canal {
    fn name(&self) -> &'static str {
        "canal-json"
    }
    fn options(&self) -> &'static [&'static str] {
        CANAL_OPTIONS
    }
    fn is_changelog(&self) -> bool {
        true
    }
    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>> {
        let envelope = Envelope::Canal {
            database: whole_pattern(options, "canal-json.database.include")?,
            table: whole_pattern(options, "canal-json.table.include")?,
        };
        ChangelogDecoder::boxed(self.name(), envelope, schema, options)
    }
    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        ChangelogEncoder::boxed(self.name(), true, schema, options, time_zone)
    }
}

/// The rows inside a changelog record are JSON objects of the table's columns: the `json`
/// options of `<format>.<name>` for the shared names.
fn row_json_options(format: &str, options: &Options) -> Options {
    let mut json = BTreeMap::new();
    for name in ["timestamp-format.standard", "encode.ignore-null-fields"] {
        if let Some(v) = options.get(&format!("{format}.{name}")) {
            json.insert(format!("json.{name}"), v.to_string());
        }
    }
    Options::new(options.owner.clone(), json)
}

/// What a batch of records decoded to.
#[derive(Debug)]
pub struct Decoded {
    /// The rows, in the order of the records.
    pub rows: RecordBatch,
    /// For each row, the record it came from (a record may give two rows, or none).
    pub origins: Vec<usize>,
    /// For a changelog format, each row's kind; otherwise all are inserts.
    pub kinds: Option<Vec<RowKind>>,
}

/// Decodes records in one format into rows of the table's schema.
pub struct RecordDecoder {
    inner: Box<dyn DecodeRecords>,
    schema: SchemaRef,
}

/// How a changelog format wraps rows.
enum Envelope {
    /// `{"before": ..., "after": ..., "op": "c"}`, inside `{"schema", "payload"}` when the
    /// schema is included.
    Debezium { schema_include: bool },
    /// `{"data": [...], "old": [...], "type": "UPDATE", "database", "table"}`, read only when
    /// the database and table match the patterns.
    Canal {
        database: Option<Regex>,
        table: Option<Regex>,
    },
}

impl Envelope {
    /// The changes one record holds, each a row as a JSON object.
    fn changes(&self, record: &[u8]) -> std::result::Result<Vec<(RowKind, Value)>, String> {
        match self {
            Envelope::Debezium { schema_include } => debezium_changes(record, *schema_include),
            Envelope::Canal { database, table } => {
                canal_changes(record, database.as_ref(), table.as_ref())
            }
        }
    }
}

/// The pattern of option `name`, matched against a whole name as Java's `matches` does.
fn whole_pattern(options: &Options, name: &str) -> Result<Option<Regex>> {
    match options.get(name) {
        None => Ok(None),
        Some(p) => Regex::new(&format!("^(?:{p})$")).map(Some).map_err(|e| {
            SluiceError::Config(format!(
                "{}: option '{name}' is not a valid regular expression: {e}",
                options.owner
            ))
        }),
    }
}

impl RecordDecoder {
    /// The decoder of `format` with the table's options (the format's, by their own names:
    /// `json.ignore-parse-errors`).
    pub fn new(format: &str, schema: SchemaRef, options: &Options) -> Result<Self> {
        Ok(RecordDecoder {
            inner: find(format, &options.owner)?.decoder(schema.clone(), options)?,
            schema,
        })
    }

    /// The schema of the rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Decodes `records` (`joined`, if given, is the same records one a line, which saves a
    /// copy). A malformed record fails with `locate(record)`, or is skipped and counted in
    /// `skipped` when the format ignores parse errors; an empty record gives no row (as
    /// Flink's formats return null for it).
    pub fn decode(
        &mut self,
        records: &[&[u8]],
        joined: Option<&[u8]>,
        locate: &dyn Fn(usize) -> String,
        skipped: &AtomicU64,
    ) -> Result<Decoded> {
        if records.is_empty() {
            return Ok(Decoded {
                rows: RecordBatch::new_empty(self.schema.clone()),
                origins: vec![],
                kinds: None,
            });
        }
        self.inner
            .decode(&self.schema, records, joined, locate, skipped)
    }
}

/// `json` and `csv` records: a row a record.
struct LinesDecoder {
    lines: Box<dyn LineDecoder>,
    json: bool,
}

impl DecodeRecords for LinesDecoder {
    fn decode(
        &mut self,
        _schema: &SchemaRef,
        records: &[&[u8]],
        joined: Option<&[u8]>,
        locate: &dyn Fn(usize) -> String,
        skipped: &AtomicU64,
    ) -> Result<Decoded> {
        let (rows, origins) = decode_lines(
            self.lines.as_mut(),
            self.json,
            records,
            joined,
            locate,
            skipped,
        )?;
        Ok(Decoded {
            rows,
            origins,
            kinds: None,
        })
    }
}

/// `raw` records, both ways.
struct RawCodec;

impl DecodeRecords for RawCodec {
    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        _joined: Option<&[u8]>,
        _locate: &dyn Fn(usize) -> String,
        _skipped: &AtomicU64,
    ) -> Result<Decoded> {
        Ok(Decoded {
            rows: raw::decode(schema, records)?,
            origins: (0..records.len()).collect(),
            kinds: None,
        })
    }
}

impl EncodeRecords for RawCodec {
    fn encode(&mut self, data: &RecordBatch, _kind: &dyn Fn(usize) -> RowKind) -> Result<Encoded> {
        let mut out = Encoded::default();
        for i in 0..data.num_rows() {
            let range = raw::encode(data, i).map(|v| {
                let a = out.buf.len();
                out.buf.extend_from_slice(&v);
                (a, out.buf.len())
            });
            out.ranges.push(range);
        }
        Ok(out)
    }
}

/// The records of a changelog format: each holds the changes of rows.
struct ChangelogDecoder {
    name: &'static str,
    rows: Box<dyn LineDecoder>,
    envelope: Envelope,
    ignore_parse_errors: bool,
}

impl ChangelogDecoder {
    fn boxed(
        name: &'static str,
        envelope: Envelope,
        schema: SchemaRef,
        options: &Options,
    ) -> Result<Box<dyn DecodeRecords>> {
        Ok(Box::new(ChangelogDecoder {
            name,
            rows: decoder("json", schema, &row_json_options(name, options))?,
            envelope,
            ignore_parse_errors: options.bool(&format!("{name}.ignore-parse-errors"), false)?,
        }))
    }
}

impl DecodeRecords for ChangelogDecoder {
    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        _joined: Option<&[u8]>,
        locate: &dyn Fn(usize) -> String,
        skipped: &AtomicU64,
    ) -> Result<Decoded> {
        let name = self.name;
        // Each record's changes, the rows as JSON lines.
        let mut changes: Vec<(usize, Vec<RowKind>, Vec<u8>)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if r.iter().all(u8::is_ascii_whitespace) {
                // A tombstone (Debezium writes one after a delete): nothing.
                continue;
            }
            match self.envelope.changes(r) {
                Ok(c) => {
                    let mut lines = Vec::new();
                    let mut kinds = Vec::new();
                    for (kind, row) in c {
                        lines.extend_from_slice(row.to_string().as_bytes());
                        lines.push(b'\n');
                        kinds.push(kind);
                    }
                    changes.push((i, kinds, lines));
                }
                Err(why) => skip_or_fail(self.ignore_parse_errors, name, locate(i), why, skipped)?,
            }
        }
        let all: Vec<u8> = changes.iter().flat_map(|c| c.2.iter().copied()).collect();
        let batches = match self.rows.decode(name, 1, &all) {
            Ok(b) => b,
            Err(_) => {
                // A row is not one of the table's: find its record, to name it (or skip it).
                let mut good = Vec::new();
                for c in changes {
                    match self.rows.decode(name, 1, &c.2) {
                        Ok(_) => good.push(c),
                        Err(e) => skip_or_fail(
                            self.ignore_parse_errors,
                            name,
                            locate(c.0),
                            e.to_string(),
                            skipped,
                        )?,
                    }
                }
                changes = good;
                let all: Vec<u8> = changes.iter().flat_map(|c| c.2.iter().copied()).collect();
                self.rows.decode(name, 1, &all)?
            }
        };
        let mut origins = Vec::new();
        let mut kinds = Vec::new();
        for (i, k, _) in changes {
            origins.extend(std::iter::repeat_n(i, k.len()));
            kinds.extend(k);
        }
        let rows = concat_batches(schema, &batches)?;
        if rows.num_rows() != origins.len() {
            return Err(SluiceError::Runtime(format!(
                "internal: {} {name} changes decoded as {} rows",
                origins.len(),
                rows.num_rows()
            )));
        }
        Ok(Decoded {
            rows,
            origins,
            kinds: Some(kinds),
        })
    }
}

/// A record that cannot be read: skipped and counted when the format ignores parse errors,
/// otherwise an error that names it.
fn skip_or_fail(
    ignore: bool,
    format: &str,
    record: String,
    why: String,
    skipped: &AtomicU64,
) -> Result<()> {
    if ignore {
        tracing::debug!("{record}: skipped: {why}");
        skipped.fetch_add(1, Ordering::Relaxed);
        Ok(())
    } else {
        Err(SluiceError::Format {
            location: Default::default(),
            message: format!("{record}: cannot read the {format} record: {why}"),
        })
    }
}

/// Records encoded from rows: record `i` is `buf[a..b]` for `ranges[i] = Some((a, b))`, or
/// none (a NULL `raw` value: a Kafka tombstone, an empty message elsewhere).
#[derive(Debug, Default)]
pub struct Encoded {
    pub buf: Vec<u8>,
    pub ranges: Vec<Option<(usize, usize)>>,
}

impl Encoded {
    /// Record `i`, `None` for a NULL record.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.ranges[i].map(|(a, b)| &self.buf[a..b])
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// `json` and `csv` rows, a record each.
struct LinesEncoder(Box<dyn LineEncoder>);

impl EncodeRecords for LinesEncoder {
    fn encode(&mut self, data: &RecordBatch, _kind: &dyn Fn(usize) -> RowKind) -> Result<Encoded> {
        let mut out = Encoded::default();
        out.ranges = encode_rows(self.0.as_mut(), data, &mut out.buf)?
            .into_iter()
            .map(Some)
            .collect();
        Ok(out)
    }
}

/// Flink's writers of changelog formats, which cannot join an update's halves: `+I`/`+U`
/// as `{"before":null,"after":row,"op":"c"}` (canal: `{"old":null,"data":[row],"type":"INSERT"}`),
/// `-U`/`-D` as `{"before":row,"after":null,"op":"d"}` (canal: `"type":"DELETE"`).
struct ChangelogEncoder {
    rows: Box<dyn LineEncoder>,
    canal: bool,
    /// Scratch space of the rows.
    rows_buf: Vec<u8>,
}

impl ChangelogEncoder {
    fn boxed(
        name: &str,
        canal: bool,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        Ok(Box::new(ChangelogEncoder {
            rows: encoder("json", schema, &row_json_options(name, options), time_zone)?,
            canal,
            rows_buf: Vec::new(),
        }))
    }
}

impl EncodeRecords for ChangelogEncoder {
    fn encode(&mut self, data: &RecordBatch, kind: &dyn Fn(usize) -> RowKind) -> Result<Encoded> {
        let mut out = Encoded::default();
        let lines = encode_rows(self.rows.as_mut(), data, &mut self.rows_buf)?;
        for (i, &(a, b)) in lines.iter().enumerate() {
            let row = &self.rows_buf[a..b];
            let added = !matches!(kind(i), RowKind::UpdateBefore | RowKind::Delete);
            let start = out.buf.len();
            let parts: [&[u8]; 3] = match (self.canal, added) {
                (false, true) => [b"{\"before\":null,\"after\":", row, b",\"op\":\"c\"}"],
                (false, false) => [b"{\"before\":", row, b",\"after\":null,\"op\":\"d\"}"],
                (true, true) => [b"{\"old\":null,\"data\":[", row, b"],\"type\":\"INSERT\"}"],
                (true, false) => [b"{\"old\":null,\"data\":[", row, b"],\"type\":\"DELETE\"}"],
            };
            for p in parts {
                out.buf.extend_from_slice(p);
            }
            out.ranges.push(Some((start, out.buf.len())));
        }
        Ok(out)
    }
}

/// Encodes rows into records (one message each) in any record format: the writing twin of
/// [`RecordDecoder`], for the sinks that write records (Kafka, MQTT, RabbitMQ, NATS).
pub struct RecordEncoder {
    inner: Box<dyn EncodeRecords>,
    changelog: bool,
}

impl RecordEncoder {
    /// The encoder of `format` with the table's options.
    pub fn new(
        format: &str,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Self> {
        let f = find(format, &options.owner)?;
        Ok(RecordEncoder {
            inner: f.encoder(schema, options, time_zone)?,
            changelog: f.is_changelog(),
        })
    }

    /// True if it writes every kind of row (a changelog format); otherwise a record is a row
    /// and cannot take a row back.
    pub fn takes_changes(&self) -> bool {
        self.changelog
    }

    /// One record per row of `batch`; in a format that is not a changelog, a row that is not
    /// an insert (or `+U`) fails, as a message cannot be taken back (`owner` names the sink).
    pub fn encode(&mut self, batch: &ChangeBatch, owner: &str) -> Result<Encoded> {
        if !self.changelog {
            if let Some(i) = (0..batch.data.num_rows())
                .find(|&i| !matches!(batch.kind(i), RowKind::Insert | RowKind::UpdateAfter))
            {
                return Err(SluiceError::Runtime(format!(
                    "{owner}: the sink got a {} row; it only takes inserts",
                    batch.kind(i).short_string()
                )));
            }
        }
        self.inner.encode(&batch.data, &|i| batch.kind(i))
    }

    /// One record per row of `data` whatever its kind (`kind(i)` is row `i`'s), for a sink
    /// that decides itself what a row's kind means (upsert-kafka).
    pub fn encode_rows(
        &mut self,
        data: &RecordBatch,
        kind: &dyn Fn(usize) -> RowKind,
    ) -> Result<Encoded> {
        self.inner.encode(data, kind)
    }
}

/// The changes of one Debezium record: `c`/`r` insert `after`, `u` updates `before` to
/// `after`, `d` deletes `before`.
fn debezium_changes(
    record: &[u8],
    schema_include: bool,
) -> std::result::Result<Vec<(RowKind, Value)>, String> {
    let v: Value = serde_json::from_slice(record).map_err(|e| format!("invalid JSON: {e}"))?;
    let v = if schema_include {
        match v.get("payload") {
            Some(p) => p.clone(),
            None => {
                return Err(
                    "no 'payload' field ('debezium-json.schema-include' is true: the record must be {\"schema\": ..., \"payload\": ...})"
                        .into(),
                )
            }
        }
    } else {
        v
    };
    if !schema_include && v.get("schema").is_some() && v.get("payload").is_some() {
        return Err(
            "the record has 'schema' and 'payload' fields: set 'debezium-json.schema-include' = 'true'"
                .into(),
        );
    }
    let row = |field: &str| match v.get(field) {
        Some(r @ Value::Object(_)) => Ok(r.clone()),
        _ => Err(format!("the '{field}' field is not a row")),
    };
    match v.get("op").and_then(Value::as_str) {
        Some("c") | Some("r") => Ok(vec![(RowKind::Insert, row("after")?)]),
        Some("u") => {
            let before = row("before").map_err(|_| {
                "the 'before' field of an update is null; with the Debezium PostgreSQL connector, set the table's REPLICA IDENTITY to FULL".to_string()
            })?;
            Ok(vec![
                (RowKind::UpdateBefore, before),
                (RowKind::UpdateAfter, row("after")?),
            ])
        }
        Some("d") => Ok(vec![(RowKind::Delete, row("before")?)]),
        Some(other) => Err(format!("unknown operation '{other}' (not c, r, u or d)")),
        None => Err("no 'op' field".into()),
    }
}

/// The changes of one Canal record: `INSERT` inserts each of `data`, `DELETE` deletes them,
/// `UPDATE` updates each row of `data` from the same row with the values of `old` (which
/// holds only the changed columns); a DDL record (`CREATE`, or `isDdl`) and a record of
/// another database or table than the patterns' are nothing.
fn canal_changes(
    record: &[u8],
    database: Option<&Regex>,
    table: Option<&Regex>,
) -> std::result::Result<Vec<(RowKind, Value)>, String> {
    let v: Value = serde_json::from_slice(record).map_err(|e| format!("invalid JSON: {e}"))?;
    for (field, pattern) in [("database", database), ("table", table)] {
        if let Some(p) = pattern {
            let name = v.get(field).and_then(Value::as_str).unwrap_or_default();
            if !p.is_match(name) {
                return Ok(vec![]);
            }
        }
    }
    let rows = |field: &str| match v.get(field) {
        Some(Value::Array(rows)) if rows.iter().all(Value::is_object) => Ok(rows),
        _ => Err(format!("the '{field}' field is not an array of rows")),
    };
    if v.get("isDdl") == Some(&Value::Bool(true)) {
        return Ok(vec![]);
    }
    match v.get("type").and_then(Value::as_str) {
        Some("INSERT") => Ok(rows("data")?
            .iter()
            .map(|r| (RowKind::Insert, r.clone()))
            .collect()),
        Some("DELETE") => Ok(rows("data")?
            .iter()
            .map(|r| (RowKind::Delete, r.clone()))
            .collect()),
        Some("UPDATE") => {
            let data = rows("data")?;
            let old = rows("old")?;
            if old.len() != data.len() {
                return Err(format!(
                    "an update has {} rows in 'data' but {} in 'old'",
                    data.len(),
                    old.len()
                ));
            }
            let mut changes = Vec::with_capacity(2 * data.len());
            for (after, changed) in data.iter().zip(old) {
                let mut before = after.clone();
                if let (Some(b), Some(c)) = (before.as_object_mut(), changed.as_object()) {
                    for (k, value) in c {
                        b.insert(k.clone(), value.clone());
                    }
                }
                changes.push((RowKind::UpdateBefore, before));
                changes.push((RowKind::UpdateAfter, after.clone()));
            }
            Ok(changes)
        }
        Some("CREATE") => Ok(vec![]),
        Some(other) => Err(format!(
            "unknown \"type\" value \"{other}\" (not INSERT, UPDATE or DELETE)"
        )),
        None => Err("no 'type' field".into()),
    }
}

/// Decodes records with a line format, one row a record: the whole block at once, or, when a
/// record is malformed (or holds a line break), record by record to name it.
fn decode_lines(
    decoder: &mut dyn LineDecoder,
    json: bool,
    records: &[&[u8]],
    joined: Option<&[u8]>,
    locate: &dyn Fn(usize) -> String,
    skipped: &AtomicU64,
) -> Result<(RecordBatch, Vec<usize>)> {
    let schema = decoder.schema();
    let owned;
    let block = match joined {
        Some(b) => b,
        None => {
            let mut b = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
            for r in records {
                b.extend_from_slice(r);
                b.push(b'\n');
            }
            owned = b;
            &owned
        }
    };
    let before = decoder.skipped();
    if let Ok(batches) = decoder.decode("", 1, block) {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows == records.len() && decoder.skipped() == before {
            return Ok((
                concat_batches(&schema, &batches)?,
                (0..records.len()).collect(),
            ));
        }
    }
    let mut parts = Vec::new();
    let mut kept = Vec::new();
    for (i, r) in records.iter().enumerate() {
        // A JSON record's line breaks are whitespace.
        let flat;
        let r: &[u8] = if json && r.iter().any(|&b| b == b'\n' || b == b'\r') {
            flat = r
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                .collect::<Vec<u8>>();
            &flat
        } else {
            r
        };
        let before = decoder.skipped();
        match decoder.decode(&locate(i), 1, r) {
            Ok(batches) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                if decoder.skipped() > before {
                    skipped.fetch_add(decoder.skipped() - before, Ordering::Relaxed);
                }
                if rows == 1 {
                    parts.extend(batches);
                    kept.push(i);
                }
            }
            Err(SluiceError::Format {
                mut location,
                message,
            }) => {
                location.line = None;
                return Err(SluiceError::Format { location, message });
            }
            Err(e) => return Err(e),
        }
    }
    Ok((concat_batches(&schema, &parts)?, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn decode(format: &str, options: &[(&str, &str)], records: &[&str]) -> Result<Decoded> {
        let options = Options::new(
            "table 't'",
            options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let mut d = RecordDecoder::new(format, schema(), &options)?;
        let records: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
        d.decode(
            &records,
            None,
            &|i| format!("record {i}"),
            &AtomicU64::new(0),
        )
    }

    #[test]
    fn debezium_json_records_become_changes() {
        let d = decode(
            "debezium-json",
            &[],
            &[
                r#"{"before": null, "after": {"id": 1, "name": "a"}, "op": "c"}"#,
                r#"{"before": {"id": 1, "name": "a"}, "after": {"id": 1, "name": "b"}, "op": "u"}"#,
                "",
                r#"{"before": {"id": 1, "name": "b"}, "after": null, "op": "d"}"#,
                r#"{"before": null, "after": {"id": 2, "name": "x"}, "op": "r", "source": {}}"#,
            ],
        )
        .unwrap();
        use RowKind::*;
        assert_eq!(
            d.kinds.unwrap(),
            [Insert, UpdateBefore, UpdateAfter, Delete, Insert]
        );
        assert_eq!(d.origins, [0, 1, 1, 3, 4]);
        let names = d.rows.column(1).as_string::<i32>();
        assert_eq!(
            names.iter().flatten().collect::<Vec<_>>(),
            ["a", "a", "b", "b", "x"]
        );
        let ids = d.rows.column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.value(4), 2);
    }

    #[test]
    fn debezium_json_problems_are_named_or_skipped() {
        let wrapped = r#"{"schema": {}, "payload": {"before": null, "after": {"id": 3, "name": "s"}, "op": "c"}}"#;
        let err = decode("debezium-json", &[], &[wrapped])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 0") && err.contains("schema-include"),
            "{err}"
        );
        let d = decode(
            "debezium-json",
            &[("debezium-json.schema-include", "true")],
            &[wrapped],
        )
        .unwrap();
        assert_eq!(d.rows.num_rows(), 1);
        let update = r#"{"before": null, "after": {"id": 1, "name": "b"}, "op": "u"}"#;
        let err = decode("debezium-json", &[], &[update])
            .unwrap_err()
            .to_string();
        assert!(err.contains("REPLICA IDENTITY"), "{err}");
        let d = decode(
            "debezium-json",
            &[("debezium-json.ignore-parse-errors", "true")],
            &["not json", update, r#"{"after": {"id": 5}, "op": "c"}"#],
        )
        .unwrap();
        assert_eq!(d.origins, [2]);
    }

    #[test]
    fn canal_json_records_become_changes() {
        let d = decode(
            "canal-json",
            &[],
            &[
                r#"{"data": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}], "old": null, "type": "INSERT", "database": "shop", "table": "t"}"#,
                r#"{"data": [{"id": "1", "name": "a2"}], "old": [{"name": "a"}], "type": "UPDATE", "database": "shop", "table": "t"}"#,
                r#"{"data": null, "type": "CREATE", "isDdl": true, "sql": "CREATE TABLE t (...)"}"#,
                r#"{"data": [{"id": "2", "name": "b"}], "type": "DELETE", "database": "shop", "table": "t"}"#,
            ],
        )
        .unwrap();
        use RowKind::*;
        assert_eq!(
            d.kinds.unwrap(),
            [Insert, Insert, UpdateBefore, UpdateAfter, Delete]
        );
        assert_eq!(d.origins, [0, 0, 1, 1, 3]);
        let names = d.rows.column(1).as_string::<i32>();
        // The row before the update is the row after it with the old values of `old`.
        assert_eq!(
            names.iter().flatten().collect::<Vec<_>>(),
            ["a", "b", "a", "a2", "b"]
        );
        let ids = d.rows.column(0).as_primitive::<Int32Type>();
        assert_eq!(ids.values().to_vec(), [1, 2, 1, 1, 2]);

        // Only the records of the tables the patterns match.
        let d = decode(
            "canal-json",
            &[
                ("canal-json.database.include", "sh.*"),
                ("canal-json.table.include", "t"),
            ],
            &[
                r#"{"data": [{"id": 1}], "type": "INSERT", "database": "shop", "table": "t"}"#,
                r#"{"data": [{"id": 2}], "type": "INSERT", "database": "shop", "table": "t2"}"#,
                r#"{"data": [{"id": 3}], "type": "INSERT", "database": "other", "table": "t"}"#,
            ],
        )
        .unwrap();
        assert_eq!(d.origins, [0]);

        let err = decode(
            "canal-json",
            &[],
            &[r#"{"data": [{"id": 1}], "type": "TRUNCATE"}"#],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("record 0") && err.contains("TRUNCATE"),
            "{err}"
        );
        let err = decode(
            "canal-json",
            &[],
            &[
                r#"{"data": [{"id": 1}], "type": "INSERT"}"#,
                r#"{"data": [{"id": "x"}], "type": "INSERT"}"#,
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("record 1"), "{err}");
        let d = decode(
            "canal-json",
            &[("canal-json.ignore-parse-errors", "true")],
            &[
                r#"{"data": [{"id": "x"}], "type": "INSERT"}"#,
                r#"{"data": [{"id": 4}], "type": "UPDATE"}"#,
                r#"{"data": [{"id": 5}], "type": "INSERT"}"#,
            ],
        )
        .unwrap();
        assert_eq!(d.origins, [2]);
    }

    fn encode(format: &str, kinds: Vec<RowKind>) -> Vec<String> {
        let options = Options::new("table 't'", BTreeMap::new());
        let mut e = RecordEncoder::new(format, schema(), &options, "UTC").unwrap();
        let n = kinds.len();
        let batch = ChangeBatch {
            data: RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(arrow::array::Int32Array::from_iter_values(0..n as i32)),
                    Arc::new(arrow::array::StringArray::from(vec![Some("x"); n])),
                ],
            )
            .unwrap(),
            kinds: Some(kinds.into()),
            split: None,
        };
        let records = e.encode(&batch, "sink").unwrap();
        (0..records.len())
            .map(|i| String::from_utf8(records.get(i).unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn changelog_formats_write_changes_as_flink_does() {
        use RowKind::*;
        let kinds = vec![Insert, UpdateBefore, UpdateAfter, Delete];
        assert_eq!(
            encode("debezium-json", kinds.clone()),
            [
                r#"{"before":null,"after":{"id":0,"name":"x"},"op":"c"}"#,
                r#"{"before":{"id":1,"name":"x"},"after":null,"op":"d"}"#,
                r#"{"before":null,"after":{"id":2,"name":"x"},"op":"c"}"#,
                r#"{"before":{"id":3,"name":"x"},"after":null,"op":"d"}"#,
            ]
        );
        assert_eq!(
            encode("canal-json", kinds),
            [
                r#"{"old":null,"data":[{"id":0,"name":"x"}],"type":"INSERT"}"#,
                r#"{"old":null,"data":[{"id":1,"name":"x"}],"type":"DELETE"}"#,
                r#"{"old":null,"data":[{"id":2,"name":"x"}],"type":"INSERT"}"#,
                r#"{"old":null,"data":[{"id":3,"name":"x"}],"type":"DELETE"}"#,
            ]
        );
        // What debezium-json writes, it reads back.
        let written = encode("debezium-json", vec![Insert, Delete]);
        let records: Vec<&str> = written.iter().map(String::as_str).collect();
        let d = decode("debezium-json", &[], &records).unwrap();
        assert_eq!(d.kinds.unwrap(), [Insert, Delete]);
        assert_eq!(encode("json", vec![Insert]), [r#"{"id":0,"name":"x"}"#]);
    }

    #[test]
    #[should_panic(expected = "only takes inserts")]
    fn a_format_that_is_not_a_changelog_takes_no_deletes() {
        encode("json", vec![RowKind::Delete]);
    }

    #[test]
    fn json_records_may_hold_line_breaks() {
        let d = decode(
            "json",
            &[],
            &[
                "{\"id\": 1,\n \"name\": \"a\"}",
                r#"{"id": 2, "name": "b"}"#,
            ],
        )
        .unwrap();
        assert_eq!(d.origins, [0, 1]);
        assert!(d.kinds.is_none());
        let err = decode("json", &[], &[r#"{"id": 1}"#, "{\"id\": "])
            .unwrap_err()
            .to_string();
        assert!(err.contains("record 1"), "{err}");
    }
}
