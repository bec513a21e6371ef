//! Formats of whole records: a Kafka record's value or key, an MQTT message. One record's
//! bytes are one row (`json`, `csv`, `raw`) or the changes of one row (`debezium-json`: an
//! update is `-U` and `+U`). [`RecordDecoder::new`] is the one place that maps a format's
//! name and options to its decoder; the connectors that read records use it.

use super::{decoder, encode_rows, encoder, raw, LineDecoder, LineEncoder};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use sluice_common::{ChangeBatch, Options, Result, RowKind, SluiceError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The formats of records.
pub const RECORD_FORMATS: &[&str] = &["csv", "debezium-json", "json", "raw"];

/// The options of `debezium-json`.
pub const DEBEZIUM_OPTIONS: &[&str] = &[
    "debezium-json.schema-include",
    "debezium-json.ignore-parse-errors",
    "debezium-json.timestamp-format.standard",
];

/// True if `format` reads changes (updates and deletes), not only inserts.
pub fn is_changelog(format: &str) -> bool {
    format == "debezium-json"
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
    Debezium {
        rows: Box<dyn LineDecoder>,
        schema_include: bool,
        ignore_parse_errors: bool,
        skipped: u64,
    },
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
            "debezium-json" => {
                // The rows inside `before` and `after` are JSON objects of the table's columns.
                let mut json = BTreeMap::new();
                if let Some(t) = options.get("debezium-json.timestamp-format.standard") {
                    json.insert("json.timestamp-format.standard".to_string(), t.to_string());
                }
                Kind::Debezium {
                    rows: decoder(
                        "json",
                        schema.clone(),
                        &Options::new(options.owner.clone(), json),
                    )?,
                    schema_include: options.bool("debezium-json.schema-include", false)?,
                    ignore_parse_errors: options
                        .bool("debezium-json.ignore-parse-errors", false)?,
                    skipped: 0,
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
            Kind::Debezium {
                rows,
                schema_include,
                ignore_parse_errors,
                skipped: own,
            } => {
                let mut lines = Vec::new();
                let mut origins = Vec::new();
                let mut kinds = Vec::new();
                for (i, r) in records.iter().enumerate() {
                    if r.iter().all(u8::is_ascii_whitespace) {
                        // A tombstone (Debezium writes one after a delete): nothing.
                        continue;
                    }
                    match debezium_changes(r, *schema_include) {
                        Ok(changes) => {
                            for (kind, row) in changes {
                                lines.extend_from_slice(row.to_string().as_bytes());
                                lines.push(b'\n');
                                origins.push(i);
                                kinds.push(kind);
                            }
                        }
                        Err(why) if *ignore_parse_errors => {
                            tracing::debug!("{}: skipped: {why}", locate(i));
                            *own += 1;
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => {
                            return Err(SluiceError::Format {
                                location: Default::default(),
                                message: format!(
                                    "{}: cannot read the debezium-json record: {why}",
                                    locate(i)
                                ),
                            })
                        }
                    }
                }
                let batches = rows.decode("debezium-json rows", 1, &lines)?;
                let rows = concat_batches(&schema, &batches)?;
                if rows.num_rows() != origins.len() {
                    return Err(SluiceError::Runtime(format!(
                        "internal: {} debezium-json changes decoded as {} rows",
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
    }
}

/// Encodes rows into records (one message each) in `json`, `csv` or `raw`: the writing twin
/// of [`RecordDecoder`], for the sinks that publish messages (MQTT, RabbitMQ, NATS).
pub struct RecordEncoder {
    /// `None` for `raw`.
    lines: Option<Box<dyn LineEncoder>>,
}

impl RecordEncoder {
    /// The encoder of `format` with the table's options; a changelog format is refused.
    pub fn new(
        format: &str,
        schema: SchemaRef,
        options: &Options,
        time_zone: &str,
    ) -> Result<Self> {
        if is_changelog(format) {
            return Err(SluiceError::Config(format!(
                "{}: this sink writes 'json', 'csv' or 'raw', not '{format}'",
                options.owner
            )));
        }
        let lines = match format {
            "raw" => {
                raw::check_schema(&options.owner, &schema)?;
                None
            }
            f => Some(encoder(f, schema, options, time_zone)?),
        };
        Ok(RecordEncoder { lines })
    }

    /// One record per row of `batch`; a row that is not an insert (or `+U`) fails, as a
    /// message cannot be taken back (`owner` names the sink).
    pub fn encode(&mut self, batch: &ChangeBatch, owner: &str) -> Result<Vec<Vec<u8>>> {
        let data = &batch.data;
        if let Some(i) = (0..data.num_rows())
            .find(|&i| !matches!(batch.kind(i), RowKind::Insert | RowKind::UpdateAfter))
        {
            return Err(SluiceError::Runtime(format!(
                "{owner}: the sink got a {} row; it only takes inserts",
                batch.kind(i).short_string()
            )));
        }
        match self.lines.as_mut() {
            Some(enc) => {
                let mut buf = Vec::new();
                let lines = encode_rows(enc.as_mut(), data, &mut buf)?;
                Ok(lines.iter().map(|&(a, b)| buf[a..b].to_vec()).collect())
            }
            None => Ok((0..data.num_rows())
                .map(|i| raw::encode(data, i).unwrap_or_default())
                .collect()),
        }
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
