//! A stable byte encoding of rows of Arrow columns, for keys and values of keyed state.
//!
//! Arrow's own row format is fast but "not stable across versions", and keyed state outlives
//! a version of Sluice in savepoints; so keys (hashed into key groups) and state values are
//! encoded here instead. Per column and row: a byte that says null (0) or present (1), then
//! the value: fixed-width types (integers, floats, dates, times, timestamps, decimals,
//! durations, intervals) as their little-endian bytes, booleans as one byte, strings and
//! binaries as a `u32` length and the bytes, and any other type as a one-row Arrow IPC stream
//! behind a `u32` length (stable too, only larger).
//!
//! ```
//! use arrow::array::{ArrayRef, Int64Array, StringArray};
//! use arrow::datatypes::DataType;
//! use sluice_engine::keyed::RowCodec;
//! use std::sync::Arc;
//! let codec = RowCodec::new(vec![DataType::Utf8, DataType::Int64]);
//! let cols: Vec<ArrayRef> = vec![
//!     Arc::new(StringArray::from(vec![Some("a"), None])),
//!     Arc::new(Int64Array::from(vec![1, 2])),
//! ];
//! let rows = codec.encode(&cols).unwrap();
//! let back = codec.decode(&rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>()).unwrap();
//! assert_eq!(back[0].as_ref(), cols[0].as_ref());
//! assert_eq!(back[1].as_ref(), cols[1].as_ref());
//! ```

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BinaryArray, BooleanArray, LargeBinaryArray,
    LargeStringArray, StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use sluice_common::{Result, SluiceError};
use std::sync::Arc;

// Fixed-width values are written as the platform's bytes, which are little-endian on every
// platform Sluice builds for.
#[cfg(not(target_endian = "little"))]
compile_error!("keyed state encodes fixed-width values as little-endian bytes");

/// How one column is encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Fixed(usize),
    Bool,
    Utf8,
    LargeUtf8,
    Binary,
    LargeBinary,
    Ipc,
}

fn shape(t: &DataType) -> Shape {
    match t {
        DataType::Boolean => Shape::Bool,
        DataType::Utf8 => Shape::Utf8,
        DataType::LargeUtf8 => Shape::LargeUtf8,
        DataType::Binary => Shape::Binary,
        DataType::LargeBinary => Shape::LargeBinary,
        t if t.is_primitive() => match t.primitive_width() {
            Some(w) => Shape::Fixed(w),
            None => Shape::Ipc,
        },
        _ => Shape::Ipc,
    }
}

/// Encodes and decodes rows of columns of fixed types.
#[derive(Debug, Clone)]
pub struct RowCodec {
    types: Vec<DataType>,
    shapes: Vec<Shape>,
}

fn corrupt(what: &str) -> SluiceError {
    SluiceError::Runtime(format!("keyed state is corrupt: {what}"))
}

impl RowCodec {
    /// A codec for rows of columns of `types`.
    pub fn new(types: Vec<DataType>) -> Self {
        let shapes = types.iter().map(shape).collect();
        RowCodec { types, shapes }
    }

    /// The column types.
    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    /// Calls `f` with the encoding of every row of `columns`, in order, reusing one buffer.
    pub fn for_each_row(
        &self,
        columns: &[ArrayRef],
        rows: usize,
        mut f: impl FnMut(usize, &[u8]),
    ) -> Result<()> {
        self.check(columns)?;
        let data = self.fixed_data(columns);
        let mut buf = Vec::with_capacity(32);
        for i in 0..rows {
            buf.clear();
            self.encode_row_of(columns, &data, i, &mut buf)?;
            f(i, &buf);
        }
        Ok(())
    }

    /// The encoding of every row of `columns`.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Vec<Vec<u8>>> {
        self.encode_rows(columns, columns.first().map(|c| c.len()).unwrap_or(0))
    }

    /// The encoding of the first `rows` rows of `columns` (which may be no columns: then
    /// every row is empty, the key of a global aggregate).
    pub fn encode_rows(&self, columns: &[ArrayRef], rows: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(rows);
        self.for_each_row(columns, rows, |_, b| out.push(b.to_vec()))?;
        Ok(out)
    }

    fn check(&self, columns: &[ArrayRef]) -> Result<()> {
        if columns.len() != self.types.len()
            || columns
                .iter()
                .zip(&self.types)
                .any(|(c, t)| c.data_type() != t)
        {
            return Err(SluiceError::Runtime(format!(
                "keyed state: columns of types {:?} given to a codec of {:?}",
                columns.iter().map(|c| c.data_type()).collect::<Vec<_>>(),
                self.types
            )));
        }
        Ok(())
    }

    /// Appends the encoding of row `i` of `columns` to `out` (for many rows,
    /// [`RowCodec::for_each_row`] is faster).
    pub fn encode_row(&self, columns: &[ArrayRef], i: usize, out: &mut Vec<u8>) -> Result<()> {
        self.check(columns)?;
        self.encode_row_of(columns, &self.fixed_data(columns), i, out)
    }

    /// The data of the fixed-width columns (looked up once per batch, not per row).
    fn fixed_data(&self, columns: &[ArrayRef]) -> Vec<Option<ArrayData>> {
        columns
            .iter()
            .zip(&self.shapes)
            .map(|(c, s)| matches!(s, Shape::Fixed(_)).then(|| c.to_data()))
            .collect()
    }

    /// [`RowCodec::encode_row`] with the data of the fixed-width columns at hand.
    fn encode_row_of(
        &self,
        columns: &[ArrayRef],
        data: &[Option<ArrayData>],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        for ((c, s), d) in columns.iter().zip(&self.shapes).zip(data) {
            if c.is_null(i) {
                out.push(0);
                continue;
            }
            out.push(1);
            match (s, d) {
                (Shape::Fixed(w), Some(d)) => {
                    let at = (d.offset() + i) * w;
                    out.extend_from_slice(&d.buffers()[0].as_slice()[at..at + w]);
                }
                (Shape::Fixed(_), None) => {
                    return Err(SluiceError::Runtime(
                        "keyed state: a fixed-width column without its data".into(),
                    ))
                }
                (Shape::Bool, _) => out.push(c.as_boolean().value(i) as u8),
                (Shape::Utf8, _) => put_var(out, c.as_string::<i32>().value(i).as_bytes()),
                (Shape::LargeUtf8, _) => put_var(out, c.as_string::<i64>().value(i).as_bytes()),
                (Shape::Binary, _) => put_var(out, c.as_binary::<i32>().value(i)),
                (Shape::LargeBinary, _) => put_var(out, c.as_binary::<i64>().value(i)),
                (Shape::Ipc, _) => put_var(out, &ipc_of(&c.slice(i, 1))?),
            }
        }
        Ok(())
    }

    /// The encoding of a row of NULLs.
    pub fn null_row(&self) -> Vec<u8> {
        vec![0; self.types.len()]
    }

    /// Decodes rows back into columns.
    pub fn decode(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        // The value of each column in each row (None: null).
        let mut values: Vec<Vec<Option<&[u8]>>> =
            vec![Vec::with_capacity(rows.len()); self.types.len()];
        for row in rows {
            let mut pos = 0;
            for (c, s) in self.shapes.iter().enumerate() {
                let tag = *row.get(pos).ok_or_else(|| corrupt("a row ends early"))?;
                pos += 1;
                if tag == 0 {
                    values[c].push(None);
                    continue;
                }
                let len = match s {
                    Shape::Fixed(w) => *w,
                    Shape::Bool => 1,
                    _ => {
                        let b = row
                            .get(pos..pos + 4)
                            .ok_or_else(|| corrupt("a row ends early"))?;
                        pos += 4;
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
                    }
                };
                let v = row
                    .get(pos..pos.saturating_add(len))
                    .ok_or_else(|| corrupt("a row ends early"))?;
                pos += len;
                values[c].push(Some(v));
            }
            if pos != row.len() {
                return Err(corrupt("a row is longer than its columns"));
            }
        }
        values
            .iter()
            .zip(&self.shapes)
            .zip(&self.types)
            .map(|((v, s), t)| build(v, *s, t))
            .collect()
    }
}

fn put_var(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

fn ipc_of(array: &ArrayRef) -> Result<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![array.clone()])?;
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new(&mut buf, &schema)?;
    w.write(&batch)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

fn from_ipc(bytes: &[u8]) -> Result<ArrayRef> {
    let mut r = StreamReader::try_new(bytes, None).map_err(|e| corrupt(&e.to_string()))?;
    match r.next() {
        Some(Ok(b)) if b.num_columns() == 1 => Ok(b.column(0).clone()),
        _ => Err(corrupt("an unreadable value")),
    }
}

fn utf8<'a>(v: &'a [Option<&'a [u8]>]) -> Result<Vec<Option<&'a str>>> {
    v.iter()
        .map(|b| {
            b.map(|b| std::str::from_utf8(b).map_err(|_| corrupt("a string that is not UTF-8")))
                .transpose()
        })
        .collect()
}

fn build(values: &[Option<&[u8]>], s: Shape, t: &DataType) -> Result<ArrayRef> {
    Ok(match s {
        Shape::Fixed(w) => {
            let mut bytes = Vec::with_capacity(values.len() * w);
            for v in values {
                match v {
                    Some(b) => bytes.extend_from_slice(b),
                    None => bytes.resize(bytes.len() + w, 0),
                }
            }
            let nulls = NullBuffer::from(values.iter().map(|v| v.is_some()).collect::<Vec<_>>());
            let data = ArrayData::builder(t.clone())
                .len(values.len())
                .add_buffer(Buffer::from_vec(bytes))
                .nulls(Some(nulls))
                .build()?;
            make_array(data)
        }
        Shape::Bool => {
            let bits =
                BooleanBuffer::from_iter(values.iter().map(|v| v.is_some_and(|b| b[0] != 0)));
            let nulls = NullBuffer::from(values.iter().map(|v| v.is_some()).collect::<Vec<_>>());
            Arc::new(BooleanArray::new(bits, Some(nulls)))
        }
        Shape::Utf8 => Arc::new(StringArray::from(utf8(values)?)),
        Shape::LargeUtf8 => Arc::new(LargeStringArray::from(utf8(values)?)),
        Shape::Binary => Arc::new(BinaryArray::from(values.to_vec())),
        Shape::LargeBinary => Arc::new(LargeBinaryArray::from(values.to_vec())),
        Shape::Ipc => {
            let parts = values
                .iter()
                .map(|v| match v {
                    Some(b) => from_ipc(b),
                    None => Ok(arrow::array::new_null_array(t, 1)),
                })
                .collect::<Result<Vec<_>>>()?;
            if parts.is_empty() {
                return Ok(arrow::array::new_empty_array(t));
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            let array = arrow::compute::concat(&refs)?;
            if array.data_type() != t {
                return Err(corrupt("a value of another type"));
            }
            array
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Decimal128Array, Float64Array, Int32Array, ListArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::Int32Type;

    #[test]
    fn every_kind_of_column_round_trips() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(-3), None, Some(7)])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(1), None, Some(-5)]).with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(StringArray::from(vec![Some("é"), None, Some("")])),
            Arc::new(BinaryArray::from(vec![Some(&b"\x00"[..]), Some(b""), None])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
        ];
        let codec = RowCodec::new(cols.iter().map(|c| c.data_type().clone()).collect());
        let rows = codec.encode(&cols).unwrap();
        let back = codec
            .decode(&rows.iter().map(|r| r.as_slice()).collect::<Vec<_>>())
            .unwrap();
        for (a, b) in cols.iter().zip(&back) {
            assert_eq!(a.data_type(), b.data_type());
            assert_eq!(a.to_data().len(), b.len());
            for i in 0..a.len() {
                assert_eq!(a.is_null(i), b.is_null(i));
            }
        }
        // NaN != NaN, so compare the rest of the columns whole.
        for c in [0, 2, 3, 4, 5, 6, 7] {
            assert_eq!(cols[c].as_ref(), back[c].as_ref(), "column {c}");
        }
        // Slices encode their own rows.
        let sliced: Vec<ArrayRef> = cols.iter().map(|c| c.slice(1, 2)).collect();
        assert_eq!(codec.encode(&sliced).unwrap(), rows[1..].to_vec());
    }

    #[test]
    fn corrupt_rows_are_errors() {
        let codec = RowCodec::new(vec![DataType::Int64, DataType::Utf8]);
        assert!(codec.decode(&[&[1, 0, 0]]).is_err());
        assert!(codec.decode(&[&[0, 1, 9, 0, 0, 0, b'a']]).is_err());
        assert!(codec.decode(&[&[0, 0, 0]]).is_err());
        assert!(codec.decode(&[&[0, 1, 1, 0, 0, 0, 0xff]]).is_err());
    }
}
