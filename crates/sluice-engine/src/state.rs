//! How an operator or a source writes its state into a checkpoint and reads it back.
//!
//! State is a flat sequence of fields: integers, byte strings and Arrow record batches (in
//! the Arrow IPC stream format, which is stable across Arrow versions, so that a savepoint
//! survives an upgrade of Sluice). An operator reads its fields back in the order it wrote
//! them; a short or malformed state is an error that names what was being read.
//!
//! ```
//! use sluice_engine::state::{StateReader, StateWriter};
//! let mut w = StateWriter::default();
//! w.put_i64(-5);
//! w.put_str("orders");
//! let bytes = w.finish();
//! let mut r = StateReader::new(&bytes, "example");
//! assert_eq!(r.i64().unwrap(), -5);
//! assert_eq!(r.str().unwrap(), "orders");
//! assert!(r.is_empty());
//! ```

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use sluice_common::{Result, SluiceError};
use std::sync::Arc;

/// Writes the fields of one operator's state.
#[derive(Debug, Default)]
pub struct StateWriter {
    buf: Vec<u8>,
}

impl StateWriter {
    /// Appends an unsigned integer.
    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a signed integer.
    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a flag.
    pub fn put_bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    /// Appends a byte string.
    pub fn put_bytes(&mut self, v: &[u8]) {
        self.put_u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// Appends bytes another writer wrote (fields of their own, without a length).
    pub fn put_raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Appends a string.
    pub fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }

    /// Appends a record batch (with its schema).
    pub fn put_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut ipc = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut ipc, &batch.schema())?;
            w.write(batch)?;
            w.finish()?;
        }
        self.put_bytes(&ipc);
        Ok(())
    }

    /// Appends columns of equal length (`rows` of them, which may be 0 columns) as a batch
    /// whose fields are named by position.
    pub fn put_columns(&mut self, columns: Vec<ArrayRef>, rows: usize) -> Result<()> {
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        self.put_batch(&batch)
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes what was written so far, leaving the writer empty (to stream a large state).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The state.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads back the fields a [`StateWriter`] wrote, in the same order.
/// Cloning it gives a second cursor at the same place (to look ahead).
#[derive(Debug, Clone)]
pub struct StateReader<'a> {
    data: &'a [u8],
    pos: usize,
    owner: &'a str,
    /// Where `data` starts in the whole state (when it is read a piece at a time).
    base: u64,
    /// A read failed because `data` ended (a longer piece might have held the field).
    ran_out: bool,
}

impl<'a> StateReader<'a> {
    /// A reader over `data`, the state of `owner` (an operator's name, for errors).
    pub fn new(data: &'a [u8], owner: &'a str) -> Self {
        StateReader {
            data,
            pos: 0,
            owner,
            base: 0,
            ran_out: false,
        }
    }

    /// A reader over `data`, the piece of `owner`'s state that starts at byte `base` of it.
    pub fn at(data: &'a [u8], base: u64, owner: &'a str) -> Self {
        StateReader {
            base,
            ..StateReader::new(data, owner)
        }
    }

    /// The bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True if a read failed only because the bytes ended: with more of the state, it
    /// might have succeeded.
    pub fn ran_out(&self) -> bool {
        self.ran_out
    }

    /// True when every field has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn error(&self, what: &str) -> SluiceError {
        SluiceError::Runtime(format!(
            "the checkpointed state of {} is malformed: {what} at byte {} of {}",
            self.owner,
            self.base + self.pos as u64,
            self.base + self.data.len() as u64
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let Some(end) = self.pos.checked_add(n).filter(|&e| e <= self.data.len()) else {
            self.ran_out = true;
            return Err(self.error("it ends early"));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array8(&mut self) -> Result<[u8; 8]> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads an unsigned integer.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array8()?))
    }

    /// Reads a signed integer.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array8()?))
    }

    /// Reads a count of items that follow, each at least one byte long (so a corrupt count
    /// cannot make the reader allocate more than the state holds).
    pub fn count(&mut self) -> Result<usize> {
        let n = self.u64()?;
        if n > (self.data.len() - self.pos) as u64 {
            self.ran_out = true;
            return Err(self.error("a count larger than the state"));
        }
        Ok(n as usize)
    }

    /// Reads a flag.
    pub fn bool(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("a flag that is neither 0 nor 1")),
        }
    }

    /// Reads a byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.count()?;
        self.take(n)
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.error("a string that is not UTF-8"))
    }

    /// Reads a record batch.
    pub fn batch(&mut self) -> Result<RecordBatch> {
        let ipc = self.bytes()?;
        let mut reader = StreamReader::try_new(ipc, None)
            .map_err(|e| self.error(&format!("an unreadable batch ({e})")))?;
        match reader.next() {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(self.error(&format!("an unreadable batch ({e})"))),
            None => Err(self.error("an empty batch stream")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::DataType;

    #[test]
    fn fields_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let mut w = StateWriter::default();
        w.put_u64(7);
        w.put_bool(true);
        w.put_batch(&batch).unwrap();
        w.put_bytes(b"");
        let bytes = w.finish();
        let mut r = StateReader::new(&bytes, "test");
        assert_eq!(r.u64().unwrap(), 7);
        assert!(r.bool().unwrap());
        assert_eq!(r.batch().unwrap(), batch);
        assert_eq!(r.bytes().unwrap(), b"");
        assert!(r.is_empty());
    }

    #[test]
    fn truncated_state_is_an_error_that_says_where() {
        let mut w = StateWriter::default();
        w.put_str("hello");
        let bytes = w.finish();
        let mut r = StateReader::new(&bytes[..6], "Sink: x");
        let e = r.str().unwrap_err().to_string();
        assert!(e.contains("Sink: x") && e.contains("byte 0"), "{e}");
        let mut r = StateReader::new(&bytes[..10], "Sink: x");
        assert!(r.str().is_err());
    }
}
