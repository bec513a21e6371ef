//! Flink's `raw` format: a record's bytes are one column's value, as they are. The table has
//! exactly one physical column, `STRING` (the bytes read as UTF-8) or `BYTES`.

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice_common::{Result, SluiceError};
use std::sync::Arc;

/// The options of the `raw` format.
pub const OPTIONS: &[&str] = &["raw.charset"];

/// Fails unless `schema` is one `STRING` or `BYTES` column.
pub fn check_schema(owner: &str, schema: &SchemaRef) -> Result<()> {
    let ok = schema.fields().len() == 1
        && matches!(
            schema.field(0).data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
        );
    if ok {
        Ok(())
    } else {
        Err(SluiceError::Config(format!(
            "{owner}: format 'raw' needs exactly one physical column of type STRING or BYTES; the table has {}",
            schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// The records `payloads` as a batch of `schema` (one `STRING` or `BYTES` column).
pub fn decode(schema: &SchemaRef, payloads: &[&[u8]]) -> Result<RecordBatch> {
    let column: ArrayRef = match schema.field(0).data_type() {
        DataType::Binary => Arc::new(BinaryArray::from_iter_values(payloads.iter())),
        _ => Arc::new(StringArray::from_iter_values(
            payloads.iter().map(|p| String::from_utf8_lossy(p)),
        )),
    };
    let column = arrow::compute::cast(&column, schema.field(0).data_type())?;
    Ok(RecordBatch::try_new(schema.clone(), vec![column])?)
}

/// Row `row` of `batch`'s only column as bytes (`None`: NULL).
pub fn encode(batch: &RecordBatch, row: usize) -> Option<Vec<u8>> {
    let c = batch.column(0);
    if c.is_null(row) {
        return None;
    }
    match c.data_type() {
        DataType::Utf8 => Some(c.as_string::<i32>().value(row).as_bytes().to_vec()),
        DataType::LargeUtf8 => Some(c.as_string::<i64>().value(row).as_bytes().to_vec()),
        DataType::Binary => Some(c.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Some(c.as_binary::<i64>().value(row).to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn a_payload_is_the_column_value_as_it_is() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        let b = decode(&schema, &[b"21.5", b"{\"a\":1}\n"]).unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(1), "{\"a\":1}\n");
        assert_eq!(encode(&b, 0), Some(b"21.5".to_vec()));
        let two = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let err = check_schema("table 't'", &two).unwrap_err().to_string();
        assert!(err.contains("exactly one physical column"), "{err}");
    }
}
