//! Flink's `avro` format of the filesystem connector: a part file is an Avro object container
//! file (the schema in its header, blocks of rows, Snappy by default as `avro.codec`), with
//! the schema Flink makes of the table; read by column name, so that container files other
//! tools wrote (with their own record names, or columns in another order) read too.

use super::avro::table_avro_schema;
use super::bulk::{Batches, BulkWriter};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_avro::compression::CompressionCodec;
use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::SCHEMA_METADATA_KEY;
use arrow_avro::writer::format::AvroOcfFormat;
use arrow_avro::writer::{Writer, WriterBuilder};
use sluice_common::{Options, Result, SluiceError};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How container files are written: the table's options, checked.
#[derive(Clone, Debug)]
pub struct AvroFileOptions {
    codec: Option<CompressionCodec>,
    legacy_timestamps: bool,
}

impl AvroFileOptions {
    pub fn new(options: &Options) -> Result<Self> {
        let codec = match options
            .string("avro.codec", "snappy")
            .to_ascii_lowercase()
            .as_str()
        {
            "snappy" => Some(CompressionCodec::Snappy),
            "null" | "none" => None,
            other => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'avro.codec' = '{other}': Sluice writes 'snappy' (the default) or 'null'",
                    options.owner
                )))
            }
        };
        Ok(AvroFileOptions {
            codec,
            legacy_timestamps: options.bool("avro.timestamp_mapping.legacy", true)?,
        })
    }

    /// A writer of rows of `schema` into `file` (named `path`).
    pub fn writer(
        &self,
        file: File,
        schema: SchemaRef,
        path: &Path,
    ) -> Result<Box<dyn BulkWriter>> {
        let avro = table_avro_schema(&schema, self.legacy_timestamps)
            .map_err(|e| cannot_write(path, e))?;
        let mut metadata = schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), avro.to_string());
        let with_avro = Schema::new_with_metadata(schema.fields().clone(), metadata);
        let bytes = Arc::new(AtomicU64::new(0));
        let writer = WriterBuilder::new(with_avro)
            .with_compression(self.codec)
            .build::<_, AvroOcfFormat>(Counted {
                file,
                bytes: bytes.clone(),
            })
            .map_err(|e| cannot_write(path, e))?;
        Ok(Box::new(AvroFile {
            writer,
            bytes,
            schema,
            path: path.to_path_buf(),
        }))
    }
}

fn cannot_write(path: &Path, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Runtime(format!("{}: cannot write Avro: {e}", path.display()))
}

/// A file that counts the bytes written to it (the writer owns it: the count is shared).
struct Counted {
    file: File,
    bytes: Arc<AtomicU64>,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A container file being written: a block per batch.
struct AvroFile {
    writer: Writer<Counted, AvroOcfFormat>,
    bytes: Arc<AtomicU64>,
    /// The rows' schema (the writer's, without its Avro metadata).
    schema: SchemaRef,
    path: PathBuf,
}

impl BulkWriter for AvroFile {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        // The rows as the table's columns (the query's own names and nullability aside).
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(|e| cannot_write(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| cannot_write(&self.path, e))
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn finish(self: Box<Self>) -> Result<File> {
        let AvroFile {
            mut writer, path, ..
        } = *self;
        writer.finish().map_err(|e| cannot_write(&path, e))?;
        Ok(writer.into_inner().file)
    }
}

/// The batches of the container file `file` (named `path`), in its own schema.
pub fn reader(file: File, path: &Path) -> Result<Batches> {
    let name = path.display().to_string();
    let reader = ReaderBuilder::new()
        .with_batch_size(super::BATCH_ROWS)
        .with_utf8_view(false)
        .build(std::io::BufReader::new(file))
        .map_err(|e| {
            SluiceError::Runtime(format!(
                "{name}: not an Avro container file Sluice can read: {e}"
            ))
        })?;
    Ok(Box::new(reader.map(move |b| {
        b.map_err(|e| SluiceError::Runtime(format!("{name}: cannot read Avro: {e}")))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
    use std::collections::BTreeMap;

    #[test]
    fn container_files_round_trip_and_read_by_column_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.avro");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let options = AvroFileOptions::new(&Options::new("table 't'", BTreeMap::new())).unwrap();
        let mut w = options
            .writer(File::create(&path).unwrap(), schema.clone(), &path)
            .unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(1_000), None])),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        assert!(w.bytes() > 0);
        w.finish().unwrap();
        let read: Vec<RecordBatch> = reader(File::open(&path).unwrap(), &path)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let table = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("id", DataType::Int64, true),
            Field::new("extra", DataType::Utf8, true),
        ]));
        let b = super::super::bulk::conform(&read[0], &table, "a.avro").unwrap();
        assert_eq!(b.column(1).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(
            b.column(0)
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .value(0),
            1_000
        );
        assert_eq!(b.column(2).null_count(), 2);
        let bad = AvroFileOptions::new(&Options::new(
            "table 't'",
            [("avro.codec".to_string(), "lz4".to_string())].into(),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("avro.codec") && bad.contains("snappy"),
            "{bad}"
        );
    }
}
