//! Flink's `csv` format: one record per line, no header.

use super::text::{format_value, Style};
use super::{lines, LineDecoder, LineEncoder, BATCH_ROWS};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_csv::ReaderBuilder;
use sluice_common::error::Location;
use sluice_common::{Options, Result, SluiceError};

/// The options of the `csv` format.
pub const OPTIONS: &[&str] = &[
    "csv.field-delimiter",
    "csv.ignore-parse-errors",
    "csv.quote-character",
    "csv.disable-quote-character",
    "csv.allow-comments",
    "csv.null-literal",
    "csv.escape-character",
    "csv.array-element-delimiter",
];

fn single_byte(options: &Options, key: &str, default: u8) -> Result<u8> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => {
            let v = if v == "\\t" { "\t" } else { v };
            match v.as_bytes() {
                [b] => Ok(*b),
                _ => Err(SluiceError::Config(format!(
                    "{}: option '{key}' must be a single character, got '{v}'",
                    options.owner
                ))),
            }
        }
    }
}

/// Reads CSV lines into batches of the table's physical schema.
pub struct CsvDecoder {
    schema: SchemaRef,
    delimiter: u8,
    quote: Option<u8>,
    ignore_parse_errors: bool,
    skipped: u64,
}

impl CsvDecoder {
    /// A decoder with the table's `csv.*` options.
    pub fn new(schema: SchemaRef, options: &Options) -> Result<Self> {
        let quote = if options.bool("csv.disable-quote-character", false)? {
            None
        } else {
            Some(single_byte(options, "csv.quote-character", b'"')?)
        };
        Ok(CsvDecoder {
            schema,
            delimiter: single_byte(options, "csv.field-delimiter", b',')?,
            quote,
            ignore_parse_errors: options.bool("csv.ignore-parse-errors", false)?,
            skipped: 0,
        })
    }

    fn decode_block(&self, block: &[u8]) -> Result<Vec<RecordBatch>, String> {
        let mut builder = ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(BATCH_ROWS);
        if let Some(q) = self.quote {
            builder = builder.with_quote(q);
        }
        let mut decoder = builder.build_decoder();
        let mut batches = Vec::new();
        let mut rest = block;
        loop {
            let n = decoder.decode(rest).map_err(|e| e.to_string())?;
            rest = &rest[n..];
            if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
                batches.push(b);
            }
            if rest.is_empty() {
                break;
            }
            if n == 0 {
                return Err("the CSV decoder made no progress".into());
            }
        }
        // The decoder keeps an unterminated last record until it is told the input ended.
        decoder.decode(&[]).map_err(|e| e.to_string())?;
        if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(b);
        }
        Ok(batches)
    }
}

impl LineDecoder for CsvDecoder {
    fn decode(&mut self, source: &str, first_line: u64, block: &[u8]) -> Result<Vec<RecordBatch>> {
        if let Ok(b) = self.decode_block(block) {
            return Ok(b);
        }
        let mut good = Vec::new();
        for (i, line) in lines(block).enumerate().filter(|(_, l)| !l.is_empty()) {
            match self.decode_block(line) {
                Ok(b) => good.extend(b),
                Err(problem) if self.ignore_parse_errors => {
                    tracing::debug!(source, line = first_line + i as u64, %problem, "skipped");
                    self.skipped += 1;
                }
                Err(problem) => {
                    return Err(SluiceError::Format {
                        location: Location {
                            source: Some(source.to_string()),
                            line: Some(first_line + i as u64),
                            column: None,
                        },
                        message: format!(
                            "cannot read CSV record: {problem} (set 'csv.ignore-parse-errors' = 'true' to skip such records)"
                        ),
                    })
                }
            }
        }
        Ok(vec![concat_batches(&self.schema, &good)?])
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Writes rows as CSV lines, as Flink's `csv` format does.
pub struct CsvEncoder {
    delimiter: u8,
    quote: u8,
}

impl CsvEncoder {
    /// An encoder with the table's `csv.*` options.
    pub fn new(_schema: SchemaRef, options: &Options, _time_zone: &str) -> Result<Self> {
        Ok(CsvEncoder {
            delimiter: single_byte(options, "csv.field-delimiter", b',')?,
            quote: single_byte(options, "csv.quote-character", b'"')?,
        })
    }
}

impl LineEncoder for CsvEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        use arrow::datatypes::DataType as D;
        for row in 0..batch.num_rows() {
            for c in 0..batch.num_columns() {
                if c > 0 {
                    out.push(self.delimiter);
                }
                let col = batch.column(c);
                let Some(v) = format_value(col, row, Style::Sql) else {
                    continue;
                };
                let textual = matches!(
                    col.data_type(),
                    D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Timestamp(_, _)
                );
                let needs_quotes = textual
                    && (v.is_empty()
                        || v.bytes().any(|b| {
                            b <= b' ' || b == self.delimiter || b == self.quote || b == b'\\'
                        }));
                if needs_quotes {
                    out.push(self.quote);
                    for b in v.bytes() {
                        if b == self.quote {
                            out.push(self.quote);
                        }
                        out.push(b);
                    }
                    out.push(self.quote);
                } else {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            out.push(b'\n');
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    #[test]
    fn round_trips_and_names_bad_lines() {
        let opts = Options::new("t", BTreeMap::new());
        let mut d = CsvDecoder::new(schema(), &opts).unwrap();
        let block = b"a,101.0,2024-01-01 10:00:01\nb,x,2024-01-01 10:00:02\n";
        let err = d.decode("in.csv", 1, block).unwrap_err().to_string();
        assert!(err.contains("in.csv, line 2"), "{err}");
        let b = d
            .decode("in.csv", 1, b"a,101.0,2024-01-01 10:00:01")
            .unwrap()
            .remove(0);
        let mut e = CsvEncoder::new(schema(), &opts, "UTC").unwrap();
        let mut out = Vec::new();
        e.encode(&b, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,101.0,\"2024-01-01 10:00:01\"\n"
        );
    }
}
