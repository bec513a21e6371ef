//! Formats of whole records: a Kafka record's value or key, an MQTT message. One record's
//! bytes are one row (`json`, `csv`, `raw`) or the changes of rows (`debezium-json`,
//! `canal-json`: an update is `-U` and `+U`). [`RecordDecoder::new`] and
//! [`RecordEncoder::new`] are the one place that maps a format's name and options to its
//! decoder and encoder; the connectors that read and write records use them.

use super::{decoder, encode_rows, encoder, raw, LineDecoder, LineEncoder};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use regex::Regex;
use serde_json::Value;
use sluice_common::{ChangeBatch, Options, Result, RowKind, SluiceError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The formats of records.
pub const RECORD_FORMATS: &[&str] = &["canal-json", "csv", "debezium-json", "json", "raw"];

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

/// True if `format` holds changes (updates and deletes), not only inserts: a source in it
/// reads a changelog, a sink in it takes one.
pub fn is_changelog(format: &str) -> bool {
    matches!(format, "debezium-json" | "canal-json")
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
    format: Kind,
    schema: SchemaRef,
}

enum Kind {
    /// A line format, one record a line (`json`: a line break inside a record is only
    /// whitespace).
    Lines {
        lines: Box<dyn LineDecoder>,
        json: bool,
    },
    Raw,
    Changelog {
        rows: Box<dyn LineDecoder>,
        envelope: Envelope,
        ignore_parse_errors: bool,
    },
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
    fn name(&self) -> &'static str {
        match self {
            Envelope::Debezium { .. } => "debezium-json",
            Envelope::Canal { .. } => "canal-json",
        }
    }

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
        let kind = match format {
            "raw" => {
                raw::check_schema(&options.owner, &schema)?;
                Kind::Raw
            }
            "debezium-json" | "canal-json" => {
                let envelope = if format == "canal-json" {
                    Envelope::Canal {
                        database: whole_pattern(options, "canal-json.database.include")?,
                        table: whole_pattern(options, "canal-json.table.include")?,
                    }
                } else {
                    Envelope::Debezium {
                        schema_include: options.bool("debezium-json.schema-include", false)?,
                    }
                };
                Kind::Changelog {
                    rows: decoder("json", schema.clone(), &row_json_options(format, options))?,
                    envelope,
                    ignore_parse_errors: options
                        .bool(&format!("{format}.ignore-parse-errors"), false)?,
                }
            }
            other => Kind::Lines {
                lines: decoder(other, schema.clone(), options)?,
                json: other == "json",
            },
        };
        Ok(RecordDecoder {
            format: kind,
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
        let schema = self.schema.clone();
        if records.is_empty() {
            return Ok(Decoded {
                rows: RecordBatch::new_empty(schema),
                origins: vec![],
                kinds: None,
            });
        }
        match &mut self.format {
            Kind::Raw => Ok(Decoded {
                rows: raw::decode(&schema, records)?,
                origins: (0..records.len()).collect(),
                kinds: None,
            }),
            Kind::Lines { lines, json } => {
                let (rows, origins) =
                    decode_lines(lines.as_mut(), *json, records, joined, locate, skipped)?;
                Ok(Decoded {
                    rows,
                    origins,
                    kinds: None,
                })
            }
            Kind::Changelog {
                rows,
                envelope,
                ignore_parse_errors,
            } => {
                // Each record's changes, the rows as JSON lines.
                let mut changes: Vec<(usize, Vec<RowKind>, Vec<u8>)> = Vec::new();
                for (i, r) in records.iter().enumerate() {
                    if r.iter().all(u8::is_ascii_whitespace) {
                        // A tombstone (Debezium writes one after a delete): nothing.
                        continue;
                    }
                    match envelope.changes(r) {
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
                        Err(why) => skip_or_fail(
                            *ignore_parse_errors,
                            envelope.name(),
                            locate(i),
                            why,
                            skipped,
                        )?,
                    }
                }
                let all: Vec<u8> = changes.iter().flat_map(|c| c.2.iter().copied()).collect();
                let batches = match rows.decode(envelope.name(), 1, &all) {
                    Ok(b) => b,
                    Err(_) => {
                        // A row is not one of the table's: find its record, to name it (or
                        // skip it).
                        let mut good = Vec::new();
                        for c in changes {
                            match rows.decode(envelope.name(), 1, &c.2) {
                                Ok(_) => good.push(c),
                                Err(e) => skip_or_fail(
                                    *ignore_parse_errors,
                                    envelope.name(),
                                    locate(c.0),
                                    e.to_string(),
                                    skipped,
                                )?,
                            }
                        }
                        changes = good;
                        let all: Vec<u8> =
                            changes.iter().flat_map(|c| c.2.iter().copied()).collect();
                        rows.decode(envelope.name(), 1, &all)?
                    }
                };
                let mut origins = Vec::new();
                let mut kinds = Vec::new();
                for (i, k, _) in changes {
                    origins.extend(std::iter::repeat_n(i, k.len()));
                    kinds.extend(k);
                }
                let rows = concat_batches(&schema, &batches)?;
                if rows.num_rows() != origins.len() {
                    return Err(SluiceError::Runtime(format!(
                        "internal: {} {} changes decoded as {} rows",
                        origins.len(),
                        envelope.name(),
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

/// Encodes rows into records (one message each) in any record format: the writing twin of
/// [`RecordDecoder`], for the sinks that write records (Kafka, MQTT, RabbitMQ, NATS).
pub struct RecordEncoder {
    writer: Writer,
    /// Scratch space of the changelog formats' rows.
    rows_buf: Vec<u8>,
}

enum Writer {
    Lines(Box<dyn LineEncoder>),
    Raw,
    /// Flink's debezium-json writer: `+I`/`+U` as `{"before":null,"after":row,"op":"c"}`,
    /// `-U`/`-D` as `{"before":row,"after":null,"op":"d"}`.
    Debezium(Box<dyn LineEncoder>),
    /// Flink's canal-json writer: `+I`/`+U` as `{"old":null,"data":[row],"type":"INSERT"}`,
    /// `-U`/`-D` as `"type":"DELETE"`.
    Canal(Box<dyn LineEncoder>),
}

impl RecordEncoder {
    /// The encoder of `format` with the table's options.
    pub fn new(
        format: &str,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Self> {
        let writer = match format {
            "raw" => {
                raw::check_schema(&options.owner, &schema)?;
                Writer::Raw
            }
            "debezium-json" | "canal-json" => {
                let rows = encoder(
                    "json",
                    schema,
                    &row_json_options(format, options),
                    time_zone,
                )?;
                if format == "canal-json" {
                    Writer::Canal(rows)
                } else {
                    Writer::Debezium(rows)
                }
            }
            f => Writer::Lines(encoder(f, schema, options, time_zone)?),
        };
        Ok(RecordEncoder {
            writer,
            rows_buf: Vec::new(),
        })
    }

    /// True if it writes every kind of row (a changelog format); otherwise a record is a row
    /// and cannot take a row back.
    pub fn takes_changes(&self) -> bool {
        matches!(self.writer, Writer::Debezium(_) | Writer::Canal(_))
    }

    /// One record per row of `batch`; in a format that is not a changelog, a row that is not
    /// an insert (or `+U`) fails, as a message cannot be taken back (`owner` names the sink).
    pub fn encode(&mut self, batch: &ChangeBatch, owner: &str) -> Result<Encoded> {
        if !self.takes_changes() {
            if let Some(i) = (0..batch.data.num_rows())
                .find(|&i| !matches!(batch.kind(i), RowKind::Insert | RowKind::UpdateAfter))
            {
                return Err(SluiceError::Runtime(format!(
                    "{owner}: the sink got a {} row; it only takes inserts",
                    batch.kind(i).short_string()
                )));
            }
        }
        self.encode_rows(&batch.data, &|i| batch.kind(i))
    }

    /// One record per row of `data` whatever its kind (`kind(i)` is row `i`'s), for a sink
    /// that decides itself what a row's kind means (upsert-kafka).
    pub fn encode_rows(
        &mut self,
        data: &RecordBatch,
        kind: &dyn Fn(usize) -> RowKind,
    ) -> Result<Encoded> {
        let mut out = Encoded::default();
        let canal = matches!(self.writer, Writer::Canal(_));
        match &mut self.writer {
            Writer::Lines(enc) => {
                out.ranges = encode_rows(enc.as_mut(), data, &mut out.buf)?
                    .into_iter()
                    .map(Some)
                    .collect();
            }
            Writer::Raw => {
                for i in 0..data.num_rows() {
                    let range = raw::encode(data, i).map(|v| {
                        let a = out.buf.len();
                        out.buf.extend_from_slice(&v);
                        (a, out.buf.len())
                    });
                    out.ranges.push(range);
                }
            }
            Writer::Debezium(rows) | Writer::Canal(rows) => {
                let lines = encode_rows(rows.as_mut(), data, &mut self.rows_buf)?;
                for (i, &(a, b)) in lines.iter().enumerate() {
                    let row = &self.rows_buf[a..b];
                    let added = !matches!(kind(i), RowKind::UpdateBefore | RowKind::Delete);
                    let start = out.buf.len();
                    let parts: [&[u8]; 3] = match (canal, added) {
                        (false, true) => [b"{\"before\":null,\"after\":", row, b",\"op\":\"c\"}"],
                        (false, false) => [b"{\"before\":", row, b",\"after\":null,\"op\":\"d\"}"],
                        (true, true) => {
                            [b"{\"old\":null,\"data\":[", row, b"],\"type\":\"INSERT\"}"]
                        }
                        (true, false) => {
                            [b"{\"old\":null,\"data\":[", row, b"],\"type\":\"DELETE\"}"]
                        }
                    };
                    for p in parts {
                        out.buf.extend_from_slice(p);
                    }
                    out.ranges.push(Some((start, out.buf.len())));
                }
            }
        }
        Ok(out)
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
