//! Formats: how rows are read from and written to bytes, by the names Flink uses (`json`,
//! `csv`), and how values are printed as text the way Flink prints them.

pub mod avro;
pub mod avro_file;
pub mod bulk;
pub mod csv;
pub mod json;
pub mod parquet;
pub mod raw;
pub mod record;
pub mod registry_client;
pub mod text;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice_common::{Options, Result, SluiceError};

/// Decodes lines of text into rows.
pub trait LineDecoder: Send {
    /// Decodes `block`, whole lines of which the first is line `first_line` (1-based) of
    /// `source`, into batches of at most `BATCH_ROWS` rows. Malformed lines fail with their
    /// location, or are skipped and counted when the format ignores parse errors.
    fn decode(&mut self, source: &str, first_line: u64, block: &[u8]) -> Result<Vec<RecordBatch>>;

    /// How many malformed lines were skipped so far.
    fn skipped(&self) -> u64;

    /// The schema of the rows it decodes.
    fn schema(&self) -> SchemaRef;
}

/// Encodes rows as lines of text.
pub trait LineEncoder: Send {
    /// Appends one line (with its newline) per row of `batch` to `out`.
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()>;
}

/// Encodes `batch` and returns one slice per row (the lines, without newlines).
pub fn encode_rows(
    encoder: &mut dyn LineEncoder,
    batch: &RecordBatch,
    buf: &mut Vec<u8>,
) -> Result<Vec<(usize, usize)>> {
    buf.clear();
    encoder.encode(batch, buf)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', buf) {
        out.push((start, end));
        start = end + 1;
    }
    if out.len() != batch.num_rows() {
        return Err(SluiceError::Runtime(format!(
            "internal: {} rows encoded as {} lines",
            batch.num_rows(),
            out.len()
        )));
    }
    Ok(out)
}

/// The most rows a decoder puts in one batch.
pub const BATCH_ROWS: usize = 8192;

/// Splits a block into its lines (without the newline and a trailing carriage return).
pub fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The formats of lines of text (files, Kafka records).
pub const FORMATS: &[&str] = &["csv", "json"];

/// The names of the formats of records (Kafka values and keys, messages).
pub fn record_formats() -> Vec<&'static str> {
    record::names()
}

/// The table's `format` (one of `formats`, those the connector can use), its options
/// checked: the connector's `connector_options` and the format's own `<format>.*` ones,
/// nothing else.
pub fn checked_format(
    options: &Options,
    connector_options: &[&str],
    formats: &[&str],
) -> Result<String> {
    let format = options.required("format")?.to_string();
    if !formats.contains(&format.as_str()) {
        return Err(SluiceError::Config(format!(
            "{}: unknown format '{format}'. Available formats: {}",
            options.owner,
            formats.join(", ")
        )));
    }
    options.check_known(connector_options, &[&format!("{format}.")])?;
    let allowed = format_options(&format);
    for (k, _) in options.iter() {
        if k.starts_with(&format!("{format}.")) && !allowed.contains(&k) {
            return Err(SluiceError::Config(format!(
                "{}: unknown option '{k}'. Valid options of format '{format}' are: {}",
                options.owner,
                allowed.join(", ")
            )));
        }
    }
    Ok(format)
}

/// The options a format accepts (its prefix and names).
pub fn format_options(format: &str) -> &'static [&'static str] {
    match record::FORMATS.iter().find(|f| f.name() == format) {
        Some(f) => f.options(),
        None if format == "parquet" => parquet::OPTIONS,
        None => &[],
    }
}

fn unknown_format(owner: &str, format: &str) -> SluiceError {
    SluiceError::Config(format!(
        "{owner}: unknown format '{format}'. Available formats: {}",
        FORMATS.join(", ")
    ))
}

/// A decoder for `format` with the table's options.
pub fn decoder(format: &str, schema: SchemaRef, options: &Options) -> Result<Box<dyn LineDecoder>> {
    match format {
        "json" => Ok(Box::new(json::JsonDecoder::new(schema, options)?)),
        "csv" => Ok(Box::new(csv::CsvDecoder::new(schema, options)?)),
        other => Err(unknown_format(&options.owner, other)),
    }
}

/// An encoder for `format` with the table's options.
pub fn encoder(
    format: &str,
    schema: SchemaRef,
    options: &Options,
    time_zone: &str,
) -> Result<Box<dyn LineEncoder>> {
    match format {
        "json" => Ok(Box::new(json::JsonEncoder::new(
            schema, options, time_zone,
        )?)),
        "csv" => Ok(Box::new(csv::CsvEncoder::new(schema, options, time_zone)?)),
        other => Err(unknown_format(&options.owner, other)),
    }
}
