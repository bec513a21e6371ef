//! Flink's `json` format: one JSON object per line.
//!
//! Decoding uses Arrow's vectorised JSON decoder on whole batches of lines; only when a batch
//! holds a malformed line is it decoded line by line, to name the line (and skip it with
//! `json.ignore-parse-errors`).

use super::text::{format_value, Style};
use super::{lines, LineDecoder, LineEncoder, BATCH_ROWS};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_json::ReaderBuilder;
use sluice_common::error::Location;
use sluice_common::{Options, Result, SluiceError};

/// The options of the `json` format.
pub const OPTIONS: &[&str] = &[
    "json.ignore-parse-errors",
    "json.fail-on-missing-field",
    "json.timestamp-format.standard",
    "json.map-null-key.mode",
    "json.map-null-key.literal",
    "json.encode.decimal-as-plain-number",
    "json.encode.ignore-null-fields",
];

/// Reads JSON lines into batches of the table's physical schema.
pub struct JsonDecoder {
    schema: SchemaRef,
    ignore_parse_errors: bool,
    fail_on_missing_field: bool,
    skipped: u64,
}

impl JsonDecoder {
    /// A decoder with the table's `json.*` options.
    pub fn new(schema: SchemaRef, options: &Options) -> Result<Self> {
        let ignore_parse_errors = options.bool("json.ignore-parse-errors", false)?;
        let fail_on_missing_field = options.bool("json.fail-on-missing-field", false)?;
        if ignore_parse_errors && fail_on_missing_field {
            return Err(SluiceError::Config(format!(
                "{}: 'json.fail-on-missing-field' and 'json.ignore-parse-errors' cannot both be true",
                options.owner
            )));
        }
        let standard = options.string("json.timestamp-format.standard", "SQL");
        if !["SQL", "ISO-8601"].contains(&standard.as_str()) {
            return Err(SluiceError::Config(format!(
                "{}: option 'json.timestamp-format.standard' has value '{standard}', expected SQL or ISO-8601",
                options.owner
            )));
        }
        Ok(JsonDecoder {
            schema,
            ignore_parse_errors,
            fail_on_missing_field,
            skipped: 0,
        })
    }

    /// Decodes newline-separated records with Arrow's vectorised decoder.
    fn decode_block(&self, block: &[u8]) -> Result<Vec<RecordBatch>, String> {
        let mut decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let mut batches = Vec::new();
        let mut rest = block;
        while !rest.is_empty() {
            let n = decoder.decode(rest).map_err(|e| e.to_string())?;
            rest = &rest[n..];
            if !rest.is_empty() || n == 0 {
                if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
                    batches.push(b);
                }
                if n == 0 && !rest.is_empty() {
                    return Err("the JSON decoder made no progress".into());
                }
            }
        }
        if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(b);
        }
        Ok(batches)
    }

    /// Why one line cannot be read, or `None` if it can.
    fn check_line(&self, line: &[u8]) -> Option<String> {
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Some(format!("invalid JSON at column {}: {e}", e.column())),
        };
        let Some(obj) = value.as_object() else {
            return Some("expected a JSON object".into());
        };
        if self.fail_on_missing_field {
            for f in self.schema.fields() {
                if !obj.contains_key(f.name()) {
                    return Some(format!("missing field '{}'", f.name()));
                }
            }
        }
        self.decode_block(line).err()
    }
}

impl LineDecoder for JsonDecoder {
    fn decode(&mut self, source: &str, first_line: u64, block: &[u8]) -> Result<Vec<RecordBatch>> {
        if !self.fail_on_missing_field {
            if let Ok(b) = self.decode_block(block) {
                return Ok(b);
            }
        }
        // Slow path: find the malformed lines.
        let mut good: Vec<u8> = Vec::with_capacity(block.len());
        for (i, line) in lines(block).enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.check_line(line) {
                None => {
                    good.extend_from_slice(line);
                    good.push(b'\n');
                }
                Some(problem) if self.ignore_parse_errors => {
                    tracing::debug!(source, line = first_line + i as u64, %problem, "skipped");
                    self.skipped += 1;
                }
                Some(problem) => {
                    return Err(SluiceError::Format {
                        location: Location {
                            source: Some(source.to_string()),
                            line: Some(first_line + i as u64),
                            column: None,
                        },
                        message: format!(
                            "cannot read JSON record: {problem} (set 'json.ignore-parse-errors' = 'true' to skip such records)"
                        ),
                    });
                }
            }
        }
        self.decode_block(&good).map_err(|e| SluiceError::Format {
            location: Location {
                source: Some(source.to_string()),
                line: Some(first_line),
                column: None,
            },
            message: e,
        })
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Writes rows as JSON objects, one per line, as Flink's `json` format does.
pub struct JsonEncoder {
    names: Vec<String>,
    ignore_null_fields: bool,
}

impl JsonEncoder {
    /// An encoder with the table's `json.*` options.
    pub fn new(schema: SchemaRef, options: &Options, _time_zone: &str) -> Result<Self> {
        Ok(JsonEncoder {
            names: schema
                .fields()
                .iter()
                .map(|f| serde_json::to_string(f.name()).unwrap_or_default())
                .collect(),
            ignore_null_fields: options.bool("json.encode.ignore-null-fields", false)?,
        })
    }
}

impl LineEncoder for JsonEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        for row in 0..batch.num_rows() {
            out.push(b'{');
            let mut first = true;
            for (c, name) in self.names.iter().enumerate() {
                let col = batch.column(c);
                if col.is_null(row) && self.ignore_null_fields {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                write_value(col, row, self.ignore_null_fields, out);
            }
            out.extend_from_slice(b"}\n");
        }
        Ok(())
    }
}

/// Writes one value as JSON: numbers and booleans bare, rows as objects, arrays as arrays,
/// maps as objects (keys as text), everything else as a string in Flink's SQL style.
fn write_value(col: &ArrayRef, row: usize, ignore_null_fields: bool, out: &mut Vec<u8>) {
    use arrow::datatypes::DataType as D;
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    match col.data_type() {
        D::Struct(fields) => {
            let s = col.as_struct();
            out.push(b'{');
            let mut first = true;
            for (i, f) in fields.iter().enumerate() {
                if s.column(i).is_null(row) && ignore_null_fields {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(
                    serde_json::to_string(f.name())
                        .unwrap_or_default()
                        .as_bytes(),
                );
                out.push(b':');
                write_value(s.column(i), row, ignore_null_fields, out);
            }
            out.push(b'}');
        }
        D::List(_) => {
            let items = col.as_list::<i32>().value(row);
            out.push(b'[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(&items, i, ignore_null_fields, out);
            }
            out.push(b']');
        }
        D::Map(_, _) => {
            let entries = col.as_map().value(row);
            out.push(b'{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(b',');
                }
                let key = format_value(entries.column(0), i, Style::Sql).unwrap_or_default();
                out.extend_from_slice(serde_json::to_string(&key).unwrap_or_default().as_bytes());
                out.push(b':');
                write_value(entries.column(1), i, ignore_null_fields, out);
            }
            out.push(b'}');
        }
        t => {
            let v = format_value(col, row, Style::Sql).unwrap_or_default();
            let bare = t.is_numeric() || matches!(t, D::Boolean);
            if bare && v != "NaN" && !v.contains("Infinity") {
                out.extend_from_slice(v.as_bytes());
            } else {
                out.extend_from_slice(serde_json::to_string(&v).unwrap_or_default().as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema, TimeUnit};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn options(pairs: &[(&str, &str)]) -> Options {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::new("table 's'", m)
    }

    fn one(mut batches: Vec<RecordBatch>) -> RecordBatch {
        assert_eq!(batches.len(), 1);
        batches.remove(0)
    }

    #[test]
    fn decodes_lines_with_missing_fields_as_null() {
        let mut d = JsonDecoder::new(schema(), &options(&[])).unwrap();
        let block = b"{\"id\":\"a\",\"t\":1.5,\"ts\":\"2024-01-01 10:00:00\"}\n{\"id\":\"b\"}\n";
        let b = one(d.decode("f.json", 1, block).unwrap());
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(1).is_null(1));
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 1.5);
    }

    #[test]
    fn malformed_line_is_named_or_skipped() {
        let block = b"{\"id\":\"a\",\"t\":1}\n{\"id\":\"b\",\"t\":\n{\"id\":\"c\"}\n";
        let mut d = JsonDecoder::new(schema(), &options(&[])).unwrap();
        let err = d.decode("f.json", 10, block).unwrap_err().to_string();
        assert!(err.contains("f.json, line 11"), "{err}");
        let mut d =
            JsonDecoder::new(schema(), &options(&[("json.ignore-parse-errors", "true")])).unwrap();
        let b = one(d.decode("f.json", 10, block).unwrap());
        assert_eq!(b.num_rows(), 2);
        assert_eq!(d.skipped(), 1);
    }

    #[test]
    fn missing_field_fails_when_asked() {
        let mut d = JsonDecoder::new(
            schema(),
            &options(&[("json.fail-on-missing-field", "true")]),
        )
        .unwrap();
        let err = d
            .decode("f.json", 1, b"{\"id\":\"a\",\"t\":1}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field 'ts'"), "{err}");
    }

    #[test]
    fn encodes_like_flink() {
        let mut d = JsonDecoder::new(schema(), &options(&[])).unwrap();
        let block = br#"{"id":"a","t":1e10,"ts":"2024-01-01 10:00:02.5"}"#;
        let b = one(d.decode("f", 1, block).unwrap());
        let mut e = JsonEncoder::new(schema(), &options(&[]), "UTC").unwrap();
        let mut out = Vec::new();
        e.encode(&b, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":\"a\",\"t\":1.0E10,\"ts\":\"2024-01-01 10:00:02.5\"}\n"
        );
        let _ = b.column(0).as_string::<i32>();
    }

    #[test]
    fn rows_round_trip_as_nested_objects() {
        let inner = arrow::datatypes::Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("kind", DataType::Int32, true),
            Field::new("p", DataType::Struct(inner), true),
        ]));
        let block = b"{\"kind\":1,\"p\":{\"id\":7,\"ts\":\"2024-01-01 10:00:02.5\"}}\n{\"kind\":2,\"p\":null}\n";
        let mut d = JsonDecoder::new(schema.clone(), &options(&[])).unwrap();
        let b = one(d.decode("f", 1, block).unwrap());
        assert!(b.column(1).is_null(1));
        let mut e = JsonEncoder::new(schema, &options(&[]), "UTC").unwrap();
        let mut out = Vec::new();
        e.encode(&b, &mut out).unwrap();
        assert_eq!(out, block);
    }
}
