//! Flink's `parquet` format of the filesystem connector: a part file is a Parquet file whose
//! columns are the table's (but the partition columns), written with arrow-rs's writer and
//! read back by column name, so that files written by other tools (pyarrow, Spark) read too.

use super::bulk::{Batches, BulkWriter};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sluice_common::{Options, Result, SluiceError};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The options of the `parquet` format.
pub const OPTIONS: &[&str] = &["parquet.compression", "parquet.block.size"];

/// How files are written: the table's options, checked.
#[derive(Clone)]
pub struct ParquetOptions {
    properties: WriterProperties,
}

impl ParquetOptions {
    pub fn new(options: &Options) -> Result<Self> {
        let compression = match options
            .string("parquet.compression", "SNAPPY")
            .to_ascii_uppercase()
            .as_str()
        {
            "SNAPPY" => Compression::SNAPPY,
            "UNCOMPRESSED" | "NONE" => Compression::UNCOMPRESSED,
            other => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'parquet.compression' = '{other}': Sluice writes SNAPPY (the default) or UNCOMPRESSED",
                    options.owner
                )))
            }
        };
        let mut builder = WriterProperties::builder().set_compression(compression);
        if let Some(bytes) = options.get("parquet.block.size") {
            // The size of a row group in bytes, as Flink's (Parquet's) option.
            let size: usize = bytes
                .trim()
                .parse()
                .ok()
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    SluiceError::Config(format!(
                        "{}: option 'parquet.block.size' = '{bytes}': expected a positive number of bytes",
                        options.owner
                    ))
                })?;
            builder = builder.set_max_row_group_bytes(Some(size));
        }
        Ok(ParquetOptions {
            properties: builder.build(),
        })
    }

    /// A writer of `schema` into `file`.
    pub fn writer(
        &self,
        file: File,
        schema: SchemaRef,
        path: &Path,
    ) -> Result<Box<dyn BulkWriter>> {
        let writer = ArrowWriter::try_new(file, schema, Some(self.properties.clone()))
            .map_err(|e| cannot_write(path, e))?;
        Ok(Box::new(ParquetFile {
            writer,
            path: path.to_path_buf(),
        }))
    }
}

fn cannot_write(path: &Path, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Runtime(format!("{}: cannot write Parquet: {e}", path.display()))
}

/// A Parquet file being written.
struct ParquetFile {
    writer: ArrowWriter<File>,
    path: PathBuf,
}

impl BulkWriter for ParquetFile {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| cannot_write(&self.path, e))
    }

    fn bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    fn finish(self: Box<Self>) -> Result<File> {
        let path = self.path;
        self.writer.into_inner().map_err(|e| cannot_write(&path, e))
    }
}

/// The batches of the Parquet file `file` (named `path`).
pub fn reader(file: File, path: &Path) -> Result<Batches> {
    let name = path.display().to_string();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(super::BATCH_ROWS).build())
        .map_err(|e| {
            SluiceError::Runtime(format!("{name}: not a Parquet file Sluice can read: {e}"))
        })?;
    Ok(Box::new(reader.map(move |b| {
        b.map_err(|e| SluiceError::Runtime(format!("{name}: cannot read Parquet: {e}")))
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn read(path: &Path) -> Result<Vec<RecordBatch>> {
        reader(File::open(path).unwrap(), path)?.collect()
    }

    #[test]
    fn written_files_read_back_by_column_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let options = ParquetOptions::new(&Options::new("table 't'", BTreeMap::new())).unwrap();
        let mut w = options
            .writer(File::create(&path).unwrap(), schema.clone(), &path)
            .unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        // Read as another table: columns by name, a missing one null, a wider type cast.
        let table = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
            Field::new("extra", DataType::Float64, true),
        ]));
        let batches = read(&path).unwrap();
        let b = super::super::bulk::conform(&batches[0], &table, "a.parquet").unwrap();
        assert_eq!(b.column(1).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(b.column(0).as_string::<i32>().value(0), "a");
        assert_eq!(b.column(2).null_count(), 2);

        let err = ParquetOptions::new(&Options::new(
            "table 't'",
            [("parquet.compression".to_string(), "BROTLI".to_string())].into(),
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("SNAPPY"), "{err}");
        std::fs::write(dir.path().join("b.parquet"), b"not parquet").unwrap();
        let err = read(&dir.path().join("b.parquet"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("b.parquet") && err.contains("not a Parquet file"),
            "{err}"
        );
    }
}
