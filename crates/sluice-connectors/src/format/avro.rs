//! The `avro` and `avro-confluent` formats of records: a row a record, in Avro's binary
//! encoding; `avro-confluent` frames each as Confluent's wire format does (a zero byte, the
//! schema's id in a schema registry as 4 bytes big-endian, then the Avro body) and keeps
//! its schemas in the registry at `avro-confluent.url`.
//!
//! The table's schema becomes an Avro schema as Flink's `AvroSchemaConverter` makes it
//! ([`table_avro_schema`]). Records written with another schema (a producer's) are read by
//! Avro's schema resolution of the writer's schema against the table's: fields by name,
//! `int` promoted to `long`, absent nullable fields as NULL (arrow-avro does the work).

use super::record::{DecodeRecords, Decoded, EncodeRecords, Encoded, RecordFormat};
use super::registry_client::RegistryClient;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SchemaStore,
    SCHEMA_METADATA_KEY,
};
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use arrow_avro::writer::WriterBuilder;
use serde_json::{json, Value};
use sluice_common::{Options, Result, RowKind, SluiceError};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// The options of `avro` (`avro.codec` is that of container files, for the filesystem).
pub const AVRO_OPTIONS: &[&str] = &[
    "avro.encoding",
    "avro.timestamp_mapping.legacy",
    "avro.codec",
];

/// The options of `avro-confluent`.
pub const CONFLUENT_OPTIONS: &[&str] = &[
    "avro-confluent.url",
    "avro-confluent.subject",
    "avro-confluent.schema",
    "avro-confluent.basic-auth.credentials-source",
    "avro-confluent.basic-auth.user-info",
    "avro-confluent.bearer-auth.credentials-source",
    "avro-confluent.bearer-auth.token",
];

/// `avro` (`confluent: false`) or `avro-confluent`.
pub struct Avro {
    pub confluent: bool,
}

impl Avro {
    fn prefix(&self) -> &'static str {
        if self.confluent {
            "avro-confluent."
        } else {
            "avro."
        }
    }

    /// The Avro schema of the table's rows: the one given (`avro-confluent.schema`), or
    /// Flink's conversion of the table's.
    fn schema_of(&self, schema: &Schema, options: &Options) -> Result<String> {
        if self.confluent {
            if let Some(given) = options.get("avro-confluent.schema") {
                serde_json::from_str::<Value>(given).map_err(|e| {
                    SluiceError::Config(format!(
                        "{}: option 'avro-confluent.schema' is not JSON: {e}",
                        options.owner
                    ))
                })?;
                return Ok(given.to_string());
            }
        } else if let Some(e) = options.get("avro.encoding") {
            if !e.eq_ignore_ascii_case("binary") {
                return Err(SluiceError::Config(format!(
                    "{}: option 'avro.encoding' = '{e}' is not supported: Sluice reads and writes Avro's binary encoding",
                    options.owner
                )));
            }
        }
        let legacy = options.bool("avro.timestamp_mapping.legacy", true)?;
        Ok(table_avro_schema(schema, legacy)
            .map_err(|e| SluiceError::Config(format!("{}: {e}", options.owner)))?
            .to_string())
    }
}

impl RecordFormat for Avro {
    fn name(&self) -> &'static str {
        if self.confluent {
            "avro-confluent"
        } else {
            "avro"
        }
    }

    fn options(&self) -> &'static [&'static str] {
        if self.confluent {
            CONFLUENT_OPTIONS
        } else {
            AVRO_OPTIONS
        }
    }

    fn decoder(&self, schema: SchemaRef, options: &Options) -> Result<Box<dyn DecodeRecords>> {
        let reader: Value = serde_json::from_str(&self.schema_of(&schema, options)?)
            .map_err(|e| SluiceError::Config(format!("{}: {e}", options.owner)))?;
        let registry = if self.confluent {
            Some(RegistryClient::new(options, self.prefix())?)
        } else {
            None
        };
        let mut decoder = AvroDecoder {
            name: self.name(),
            table: schema,
            reader,
            registry,
            decoders: HashMap::new(),
        };
        if !self.confluent {
            // The records' schema is the table's: check that arrow-avro can read it.
            let writer = decoder.reader.to_string();
            decoder.decoders.insert(0, decoder.build(0, &writer)?);
        }
        Ok(Box::new(decoder))
    }

    fn encoder(
        &self,
        schema: SchemaRef,
        options: &Options,
        _time_zone: &str,
    ) -> Result<Box<dyn EncodeRecords>> {
        let avro = self.schema_of(&schema, options)?;
        let registry = if self.confluent {
            let subject = options.required("avro-confluent.subject")?.to_string();
            Some((RegistryClient::new(options, self.prefix())?, subject))
        } else {
            None
        };
        let encoder = AvroEncoder {
            owner: options.owner.clone(),
            schema,
            avro,
            registry,
            encoder: None,
        };
        // The schema must be one arrow-avro can write the table's rows with (for
        // avro-confluent, the id is only known once registered, at the first rows).
        encoder.build(0)?;
        Ok(Box::new(encoder))
    }
}

/// Flink's Avro schema of rows of `schema` (`AvroSchemaConverter.convertToSchema`): a record
/// `org.apache.flink.avro.generated.record`, a nullable column as `["null", type]` with a
/// NULL default, `TIMESTAMP` as `timestamp-millis` (or `local-timestamp-millis` when
/// `legacy` timestamp mapping is off), `DECIMAL` as `bytes` with the `decimal` logical type.
pub fn table_avro_schema(schema: &Schema, legacy: bool) -> std::result::Result<Value, String> {
    let mut v = record(schema.fields().iter().map(|f| f.as_ref()), "record", legacy)?;
    v["namespace"] = json!("org.apache.flink.avro.generated");
    Ok(v)
}

fn record<'a>(
    fields: impl Iterator<Item = &'a Field>,
    name: &str,
    legacy: bool,
) -> std::result::Result<Value, String> {
    let mut out = Vec::new();
    for f in fields {
        let ty = avro_type(f.data_type(), &format!("{name}_{}", f.name()), legacy)
            .map_err(|e| format!("column '{}': {e}", f.name()))?;
        out.push(if f.is_nullable() {
            json!({"name": f.name(), "type": ["null", ty], "default": null})
        } else {
            json!({"name": f.name(), "type": ty})
        });
    }
    Ok(json!({"type": "record", "name": name, "fields": out}))
}

fn nullable(t: Value, yes: bool) -> Value {
    if yes {
        json!(["null", t])
    } else {
        t
    }
}

fn avro_type(t: &DataType, name: &str, legacy: bool) -> std::result::Result<Value, String> {
    let timestamp = |unit: &TimeUnit, local: bool| {
        let precision = match unit {
            TimeUnit::Second | TimeUnit::Millisecond => Ok("millis"),
            TimeUnit::Microsecond => Ok("micros"),
            TimeUnit::Nanosecond => Err(
                "Avro has no timestamps finer than microseconds (TIMESTAMP(9)); cast to TIMESTAMP(6)".to_string(),
            ),
        }?;
        let kind = if local {
            "local-timestamp"
        } else {
            "timestamp"
        };
        Ok::<Value, String>(json!({"type": "long", "logicalType": format!("{kind}-{precision}")}))
    };
    Ok(match t {
        DataType::Null => json!("null"),
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::FixedSizeBinary(_) => json!("bytes"),
        DataType::Decimal128(p, s) => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": p, "scale": s})
        }
        DataType::Date32 => json!({"type": "int", "logicalType": "date"}),
        DataType::Time32(_) => json!({"type": "int", "logicalType": "time-millis"}),
        DataType::Time64(_) => json!({"type": "long", "logicalType": "time-micros"}),
        DataType::Timestamp(unit, None) => timestamp(unit, !legacy)?,
        DataType::Timestamp(unit, Some(_)) => timestamp(unit, false)?,
        DataType::List(f) | DataType::LargeList(f) => json!({
            "type": "array",
            "items": nullable(avro_type(f.data_type(), name, legacy)?, f.is_nullable()),
        }),
        DataType::Map(entries, _) => {
            let DataType::Struct(kv) = entries.data_type() else {
                return Err(format!("{t} is not a map of entries"));
            };
            if kv.len() != 2 || !matches!(kv[0].data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                return Err("Avro maps have STRING keys".into());
            }
            json!({
                "type": "map",
                "values": nullable(avro_type(kv[1].data_type(), name, legacy)?, kv[1].is_nullable()),
            })
        }
        DataType::Struct(fields) => record(fields.iter().map(|f| f.as_ref()), name, legacy)?,
        other => return Err(format!("type {other} has no Avro form")),
    })
}

/// Writes rows as Avro records; for `avro-confluent`, registers the schema under the subject
/// at the first rows and frames each record with its id.
struct AvroEncoder {
    owner: String,
    schema: SchemaRef,
    avro: String,
    registry: Option<(RegistryClient, String)>,
    /// Built at the first rows (once the id is known).
    encoder: Option<arrow_avro::writer::Encoder>,
}

impl AvroEncoder {
    fn build(&self, id: u32) -> Result<arrow_avro::writer::Encoder> {
        let mut metadata = self.schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), self.avro.clone());
        let schema = Schema::new_with_metadata(self.schema.fields().clone(), metadata);
        let builder = WriterBuilder::new(schema);
        let built = if self.registry.is_some() {
            builder
                .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                .build_encoder::<AvroSoeFormat>()
        } else {
            builder.build_encoder::<AvroBinaryFormat>()
        };
        built.map_err(|e| {
            SluiceError::Config(format!(
                "{}: the rows cannot be written with Avro schema {}: {e}",
                self.owner, self.avro
            ))
        })
    }
}

impl EncodeRecords for AvroEncoder {
    fn encode(&mut self, data: &RecordBatch, _kind: &dyn Fn(usize) -> RowKind) -> Result<Encoded> {
        if self.encoder.is_none() {
            let id = match &mut self.registry {
                Some((client, subject)) => client.register(subject, &self.avro)?,
                None => 0,
            };
            self.encoder = Some(self.build(id)?);
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(Encoded::default());
        };
        let fail = |e: arrow_avro::errors::AvroError| {
            SluiceError::Runtime(format!("{}: writing Avro: {e}", self.owner))
        };
        // The rows as the table's columns (the query's own names and nullability aside).
        let data = RecordBatch::try_new(self.schema.clone(), data.columns().to_vec())
            .map_err(|e| SluiceError::Runtime(format!("{}: writing Avro: {e}", self.owner)))?;
        encoder.encode(&data).map_err(fail)?;
        let rows = encoder.flush();
        let mut out = Encoded {
            buf: rows.bytes().to_vec(),
            ranges: Vec::with_capacity(rows.len()),
        };
        for w in rows.offsets().windows(2) {
            out.ranges.push(Some((w[0], w[1])));
        }
        if out.len() != data.num_rows() {
            return Err(SluiceError::Runtime(format!(
                "internal: {} rows written as {} Avro records",
                data.num_rows(),
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Reads Avro records into rows of the table: a decoder per writer's schema (for
/// `avro-confluent`, by the id in each record, fetched from the registry once).
struct AvroDecoder {
    name: &'static str,
    table: SchemaRef,
    /// The reader's schema (the table's, in Avro).
    reader: Value,
    registry: Option<RegistryClient>,
    decoders: HashMap<u32, Decoder>,
}

/// The most rows a decoder holds before they are taken out.
const BATCH: usize = super::BATCH_ROWS;

impl AvroDecoder {
    /// A decoder of records written with `writer` (Avro JSON), as rows of the table.
    fn build(&self, id: u32, writer: &str) -> Result<Decoder> {
        let writer_json: Value = serde_json::from_str(writer).map_err(|e| {
            SluiceError::Runtime(format!("the writer's schema {id} is not JSON: {e}"))
        })?;
        // Avro resolves records of the same name only: the reader's records take the
        // writer's names (Flink reads any writer's record whose fields fit).
        let mut reader = self.reader.clone();
        adopt_names(&mut reader, &writer_json);
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store
            .set(Fingerprint::Id(id), AvroSchema::new(writer.to_string()))
            .map_err(|e| SluiceError::Runtime(e.to_string()))?;
        ReaderBuilder::new()
            .with_batch_size(BATCH)
            .with_utf8_view(false)
            .with_reader_schema(AvroSchema::new(reader.to_string()))
            .with_writer_schema_store(store)
            .build_decoder()
            .map_err(|e| {
                SluiceError::Format {
                    location: Default::default(),
                    message: format!(
                        "records written with Avro schema {id} ({writer}) cannot be read as the table's rows ({}): {e}",
                        self.reader
                    ),
                }
            })
    }

    /// The decoder of schema `id`, built (and its schema fetched) the first time.
    fn decoder(&mut self, id: u32) -> Result<&mut Decoder> {
        if !self.decoders.contains_key(&id) {
            let writer = match &mut self.registry {
                Some(client) => client.schema(id)?,
                None => self.reader.to_string(),
            };
            let d = self.build(id, &writer)?;
            self.decoders.insert(id, d);
        }
        self.decoders
            .get_mut(&id)
            .ok_or_else(|| SluiceError::Runtime("internal: no Avro decoder".into()))
    }

    /// The schema id and body of a record.
    fn split<'r>(&self, record: &'r [u8]) -> std::result::Result<(u32, &'r [u8]), String> {
        if self.registry.is_none() {
            return Ok((0, record));
        }
        match record {
            [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
            _ => Err(
                "not in Confluent's wire format (a zero byte and a 4-byte schema id first)".into(),
            ),
        }
    }

    /// Feeds one record to decoder `id`: Ok if it gave exactly one row.
    fn feed(&mut self, id: u32, body: &[u8]) -> std::result::Result<(), Feed> {
        let d = match self.decoder(id) {
            Ok(d) => d,
            Err(e @ SluiceError::Format { .. }) => return Err(Feed::Bad(e.to_string())),
            Err(e) => return Err(Feed::Registry(e)),
        };
        let before = d.capacity();
        let mut prefix = [0u8; 5];
        prefix[1..].copy_from_slice(&id.to_be_bytes());
        let bad = |e: arrow_avro::errors::AvroError| Feed::Bad(e.to_string());
        let framed = d.decode(&prefix).map_err(bad)?;
        let used = d.decode(body).map_err(bad)?;
        if framed != prefix.len() || used != body.len() || d.capacity() + 1 != before {
            return Err(Feed::Bad(format!(
                "the record is not one Avro value of schema {id} ({} of its {} bytes read)",
                used,
                body.len()
            )));
        }
        Ok(())
    }

    /// The rows decoder `id` holds, as the table's columns.
    fn take(&mut self, id: u32, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(d) = self.decoders.get_mut(&id) else {
            return Ok(());
        };
        let batch = d
            .flush()
            .map_err(|e| SluiceError::Runtime(format!("reading Avro: {e}")))?;
        if let Some(b) = batch {
            // Columns by name (the reader's are the table's), cast to the table's types (Avro's
            // `int` is the table's `TINYINT`, a `timestamp-millis` its `TIMESTAMP(3)`).
            out.push(super::bulk::conform(&b, &self.table, "Avro records")?);
        }
        Ok(())
    }
}

/// Renames the records of `reader` after those at the same place in `writer`.
fn adopt_names(reader: &mut Value, writer: &Value) {
    let (Some(r), Some(w)) = (record_in(reader), record_in_ref(writer)) else {
        return;
    };
    if let Some(name) = w.get("name") {
        r.insert("name".into(), name.clone());
        match w.get("namespace") {
            Some(ns) => {
                r.insert("namespace".into(), ns.clone());
            }
            None => {
                r.remove("namespace");
            }
        }
    }
    let writer_fields = w.get("fields").and_then(Value::as_array);
    if let (Some(Value::Array(fields)), Some(wf)) = (r.get_mut("fields"), writer_fields) {
        for f in fields {
            let Some(name) = f.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if let Some(wt) = wf
                .iter()
                .find(|x| x.get("name").and_then(Value::as_str) == Some(&name))
                .and_then(|x| x.get("type"))
            {
                if let Some(rt) = f.get_mut("type") {
                    adopt_names(rt, wt);
                }
            }
        }
    }
}

/// The record a type is, or holds as a union's branch.
fn record_in(t: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    match t {
        Value::Array(branches) => branches.iter_mut().find_map(record_in),
        Value::Object(o) if o.get("type") == Some(&json!("record")) => Some(o),
        _ => None,
    }
}

fn record_in_ref(t: &Value) -> Option<&serde_json::Map<String, Value>> {
    match t {
        Value::Array(branches) => branches.iter().find_map(record_in_ref),
        Value::Object(o) if o.get("type") == Some(&json!("record")) => Some(o),
        _ => None,
    }
}

impl DecodeRecords for AvroDecoder {
    fn decode(
        &mut self,
        _schema: &SchemaRef,
        records: &[&[u8]],
        _joined: Option<&[u8]>,
        locate: &dyn Fn(usize) -> String,
        _skipped: &AtomicU64,
    ) -> Result<Decoded> {
        let decoded = self.decode_all(records, locate);
        if decoded.is_err() {
            // A decoder may hold part of the bad record: the next records start afresh.
            self.decoders.clear();
        }
        decoded
    }
}

impl AvroDecoder {
    fn decode_all(
        &mut self,
        records: &[&[u8]],
        locate: &dyn Fn(usize) -> String,
    ) -> Result<Decoded> {
        let mut batches = Vec::new();
        let mut origins = Vec::new();
        // The decoder in use: its rows are taken out before another's, to keep their order.
        let mut current: Option<u32> = None;
        for (i, record) in records.iter().enumerate() {
            if record.is_empty() {
                // A tombstone: no row.
                continue;
            }
            let (id, body) = self
                .split(record)
                .map_err(|why| self.fail(locate(i), why))?;
            if current != Some(id) {
                if let Some(c) = current {
                    self.take(c, &mut batches)?;
                }
                current = Some(id);
            }
            self.feed(id, body).map_err(|e| match e {
                Feed::Registry(e) => SluiceError::Runtime(format!("{}: {e}", locate(i))),
                Feed::Bad(why) => self.fail(locate(i), why),
            })?;
            origins.push(i);
            if self.decoders.get(&id).is_some_and(|d| d.batch_is_full()) {
                self.take(id, &mut batches)?;
            }
        }
        if let Some(c) = current {
            self.take(c, &mut batches)?;
        }
        let rows = concat_batches(&self.table, &batches)?;
        if rows.num_rows() != origins.len() {
            return Err(SluiceError::Runtime(format!(
                "internal: {} Avro records decoded as {} rows",
                origins.len(),
                rows.num_rows()
            )));
        }
        Ok(Decoded {
            rows,
            origins,
            kinds: None,
        })
    }
}

/// Why a record gave no row.
#[derive(Debug)]
enum Feed {
    /// Its schema could not be fetched (nothing wrong with the record itself).
    Registry(SluiceError),
    /// The record is not a value of its schema.
    Bad(String),
}

impl AvroDecoder {
    /// A record that cannot be read (Flink's Avro formats have no option to skip it).
    fn fail(&self, record: String, why: String) -> SluiceError {
        SluiceError::Format {
            location: Default::default(),
            message: format!("{record}: cannot read the {} record: {why}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn table(fields: Vec<Field>) -> SchemaRef {
        Arc::new(Schema::new(fields))
    }

    fn options() -> Options {
        Options::new("table 't'", BTreeMap::new())
    }

    #[test]
    fn the_table_schema_is_flinks() {
        let t = table(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("price", DataType::Decimal128(10, 2), true),
        ]);
        let s = table_avro_schema(&t, true).unwrap();
        assert_eq!(
            s,
            json!({"type": "record", "name": "record", "namespace": "org.apache.flink.avro.generated",
            "fields": [
              {"name": "id", "type": "long"},
              {"name": "name", "type": ["null", "string"], "default": null},
              {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
              {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}], "default": null},
            ]})
        );
        let local = table_avro_schema(&t, false).unwrap();
        assert_eq!(
            local["fields"][2]["type"][1]["logicalType"],
            "local-timestamp-millis"
        );
    }

    #[test]
    fn rows_round_trip_through_avro() {
        let t = table(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let batch = RecordBatch::try_new(
            t.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int32Array::from(vec![None, Some(7)])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_700_000_000_123),
                    None,
                ])),
            ],
        )
        .unwrap();
        let format = Avro { confluent: false };
        let mut enc = format.encoder(t.clone(), &options(), "UTC").unwrap();
        let encoded = enc.encode(&batch, &|_| RowKind::Insert).unwrap();
        assert_eq!(encoded.len(), 2);
        // Row 1: long 1 (zigzag 2), union branch 1 + string "a", union branch 0 (null), ...
        assert_eq!(&encoded.get(0).unwrap()[..5], &[2, 2, 2, b'a', 0]);
        let mut dec = format.decoder(t.clone(), &options()).unwrap();
        let mut records: Vec<&[u8]> = (0..2).map(|i| encoded.get(i).unwrap()).collect();
        let garbage = [9u8, 9, 9];
        records.insert(1, &garbage);
        let skipped = AtomicU64::new(0);
        let err = dec
            .decode(&t, &records, None, &|i| format!("record {i}"), &skipped)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record 1: cannot read the avro record"),
            "{err}"
        );
        records.remove(1);
        let out = dec
            .decode(&t, &records, None, &|i| format!("record {i}"), &skipped)
            .unwrap();
        assert_eq!(out.rows, batch);
        assert_eq!(out.origins, vec![0, 1]);
    }

    #[test]
    fn a_writers_schema_is_resolved_against_the_tables() {
        // Written by a producer with its own record name, an int id, a field the table
        // lacks and without the table's nullable column.
        let writer = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
            {"name":"extra","type":"string"},{"name":"id","type":"int"}]}"#;
        let t = table(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        let d = AvroDecoder {
            name: "avro",
            table: t.clone(),
            reader: table_avro_schema(&t, true).unwrap(),
            registry: None,
            decoders: HashMap::new(),
        };
        let mut d = d;
        let built = d.build(7, writer).unwrap();
        d.decoders.insert(7, built);
        // "x" then int 21 (zigzag 42).
        d.feed(7, &[2, b'x', 42]).unwrap();
        let mut out = Vec::new();
        d.take(7, &mut out).unwrap();
        let rows = &out[0];
        assert_eq!(
            rows.column(0).as_ref(),
            &Int64Array::from(vec![21]) as &dyn arrow::array::Array
        );
        assert!(rows.column(1).is_null(0));
    }
}
