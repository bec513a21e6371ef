//! Flink's `parquet` format of the filesystem connector: a part file is a Parquet file whose
//! columns are the table's (but the partition columns), written with arrow-rs's writer and
//! read back by column name, so that files written by other tools (pyarrow, Spark) read too.

use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sluice_common::{Options, Result, SluiceError};
use std::fs::File;
use std::path::Path;

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
    pub fn writer(&self, file: File, schema: SchemaRef, path: &Path) -> Result<ArrowWriter<File>> {
        ArrowWriter::try_new(file, schema, Some(self.properties.clone())).map_err(|e| {
            SluiceError::Runtime(format!("{}: cannot write Parquet: {e}", path.display()))
        })
    }
}

/// Writes `batch` with `writer` (of the file `path`).
pub fn write(writer: &mut ArrowWriter<File>, batch: &RecordBatch, path: &Path) -> Result<()> {
    writer
        .write(batch)
        .map_err(|e| SluiceError::Runtime(format!("{}: cannot write Parquet: {e}", path.display())))
}

/// Writes the footer (the file is complete); returns the file.
pub fn close(writer: ArrowWriter<File>, path: &Path) -> Result<File> {
    writer
        .into_inner()
        .map_err(|e| SluiceError::Runtime(format!("{}: cannot write Parquet: {e}", path.display())))
}

/// A reader of the Parquet file `file` (named `path`).
pub fn reader_of(file: File, path: &Path) -> Result<ParquetRecordBatchReader> {
    let name = path.display().to_string();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(super::BATCH_ROWS).build())
        .map_err(|e| {
            SluiceError::Runtime(format!("{name}: not a Parquet file Sluice can read: {e}"))
        })
}

/// A batch of a Parquet file as rows of `schema`: its columns by name (a column the file
/// lacks is null), each cast to the table's type.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef, file: &str) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            match batch.column_by_name(f.name()) {
                None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    SluiceError::Runtime(format!(
                        "{file}: column '{}' is {} in the file, which cannot be read as {}: {e}",
                        f.name(),
                        c.data_type(),
                        f.data_type()
                    ))
                }),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn reader(path: &Path) -> Result<ParquetRecordBatchReader> {
        reader_of(File::open(path).unwrap(), path)
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
        write(&mut w, &batch, &path).unwrap();
        close(w, &path).unwrap();
        // Read as another table: columns by name, a missing one null, a wider type cast.
        let table = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("id", DataType::Int64, true),
            Field::new("extra", DataType::Float64, true),
        ]));
        let read: Vec<RecordBatch> = reader(&path).unwrap().map(|b| b.unwrap()).collect();
        let b = conform(&read[0], &table, "a.parquet").unwrap();
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
        let err = reader(&dir.path().join("b.parquet"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("b.parquet") && err.contains("not a Parquet file"),
            "{err}"
        );
    }
}
