//! Formats of whole files, written a file at a time and read by column name: Parquet
//! ([`super::parquet`]) and Avro container files ([`super::avro_file`]). The filesystem
//! connector writes a part file with a [`BulkWriter`] and reads one as batches.

use super::avro_file::AvroFileOptions;
use super::parquet::ParquetOptions;
use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice_common::{Options, Result, SluiceError};
use std::fs::File;
use std::path::Path;

/// The formats of whole files.
pub const FORMATS: &[&str] = &["avro", "parquet"];

/// Writes one file.
pub trait BulkWriter: Send {
    /// Appends rows.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// The bytes written and buffered so far (for the rolling policy).
    fn bytes(&self) -> u64;
    /// Completes the file (its footer); returns it.
    fn finish(self: Box<Self>) -> Result<File>;
}

/// The batches of one file, in the file's own schema.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// A format of whole files with the table's options.
#[derive(Clone)]
pub enum BulkFormat {
    Parquet(Box<ParquetOptions>),
    Avro(AvroFileOptions),
}

impl BulkFormat {
    /// The format `format` if it is one of whole files, its options checked.
    pub fn new(format: &str, options: &Options) -> Result<Option<BulkFormat>> {
        Ok(match format {
            "parquet" => Some(BulkFormat::Parquet(Box::new(ParquetOptions::new(options)?))),
            "avro" => Some(BulkFormat::Avro(AvroFileOptions::new(options)?)),
            _ => None,
        })
    }

    /// A writer of rows of `schema` into `file` (named `path`).
    pub fn writer(
        &self,
        file: File,
        schema: SchemaRef,
        path: &Path,
    ) -> Result<Box<dyn BulkWriter>> {
        match self {
            BulkFormat::Parquet(o) => o.writer(file, schema, path),
            BulkFormat::Avro(o) => o.writer(file, schema, path),
        }
    }

    /// The batches of `file` (named `path`).
    pub fn reader(&self, file: File, path: &Path) -> Result<Batches> {
        match self {
            BulkFormat::Parquet(_) => super::parquet::reader(file, path),
            BulkFormat::Avro(_) => super::avro_file::reader(file, path),
        }
    }
}

/// A batch of a file as rows of `schema`: its columns by name (a column the file lacks is
/// null), each cast to the table's type, so that files other tools wrote read too.
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
