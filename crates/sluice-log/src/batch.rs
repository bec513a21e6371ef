//! Kafka v2 record batches (magic 2): reading and checking their header, and assigning their
//! base offset. The records themselves are never decoded: they stay as the producer sent them.

use std::fmt;

/// The size of a v2 batch header (up to and including the record count).
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before `batchLength`'s count starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;

/// The largest batch accepted, a guard against absurd lengths.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header's length says.
    Truncated { needed: usize, have: usize },
    /// Not magic 2 (Sluice stores v2 batches only).
    UnsupportedMagic(i8),
    /// The length field is negative, too small for a header or too large.
    BadLength(i32),
    /// The CRC-32C does not match the bytes.
    CorruptCrc { stored: u32, computed: u32 },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, have } => {
                write!(
                    f,
                    "record batch truncated: needs {needed} bytes, has {have}"
                )
            }
            BatchError::UnsupportedMagic(m) => {
                write!(
                    f,
                    "record batch has magic {m}; only v2 batches (magic 2) are supported"
                )
            }
            BatchError::BadLength(l) => write!(f, "record batch has invalid length {l}"),
            BatchError::CorruptCrc { stored, computed } => write!(
                f,
                "record batch is corrupt: CRC-32C {stored:#010x} stored, {computed:#010x} computed"
            ),
        }
    }
}

impl std::error::Error for BatchError {}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The header fields of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes` (without checking the CRC).
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                have: bytes.len(),
            });
        }
        let batch_length = i32_at(bytes, 8);
        if batch_length < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32
            || batch_length as usize > MAX_BATCH_BYTES
        {
            return Err(BatchError::BadLength(batch_length));
        }
        let magic = bytes[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length,
            partition_leader_epoch: i32_at(bytes, 12),
            magic,
            crc: i32_at(bytes, 17) as u32,
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            records_count: i32_at(bytes, 57),
        })
    }

    /// The whole batch's size in bytes.
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// The offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }

    /// True for a transaction's control batch.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// True if the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
}

/// Checks a whole batch: header, length and CRC-32C. Returns its header.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if batch.len() < h.total_bytes() {
        return Err(BatchError::Truncated {
            needed: h.total_bytes(),
            have: batch.len(),
        });
    }
    // The CRC covers everything from the attributes to the end of the batch.
    let computed = crc32c::crc32c(&batch[21..h.total_bytes()]);
    if computed != h.crc {
        return Err(BatchError::CorruptCrc {
            stored: h.crc,
            computed,
        });
    }
    if h.last_offset_delta < 0 || h.records_count < 0 {
        return Err(BatchError::BadLength(h.batch_length));
    }
    Ok(h)
}

/// Sets the base offset of the batch at the start of `batch` (it is outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// The (offset, timestamp) of every record of an uncompressed batch, read from the record
/// headers (`None` for a compressed or malformed batch).
pub fn record_times(batch: &[u8]) -> Option<Vec<(i64, i64)>> {
    let h = BatchHeader::parse(batch).ok()?;
    if h.compression() != 0 {
        return None;
    }
    let end = h.total_bytes().min(batch.len());
    let mut pos = BATCH_HEADER_BYTES;
    let mut out = Vec::with_capacity(h.records_count.clamp(0, 1 << 16) as usize);
    for _ in 0..h.records_count {
        let len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
        let start = pos;
        pos += 1; // attributes
        let ts_delta = read_varint(batch, &mut pos)?;
        let offset_delta = read_varint(batch, &mut pos)?;
        out.push((h.base_offset + offset_delta, h.base_timestamp + ts_delta));
        pos = start.checked_add(len)?;
        if pos > end {
            return None;
        }
    }
    Some(out)
}

/// Splits a buffer of concatenated batches (a produce request's records) into its batches,
/// validating each.
pub fn split_batches(mut bytes: &[u8]) -> Result<Vec<(&[u8], BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = validate(bytes)?;
        let (batch, rest) = bytes.split_at(h.total_bytes());
        out.push((batch, h));
        bytes = rest;
    }
    Ok(out)
}

/// Builds a v2 batch with the given record payloads (uncompressed), for tests and tools.
pub fn build_batch(base_timestamp: i64, records: &[(Option<&[u8]>, &[u8])]) -> Vec<u8> {
    build_producer_batch(base_timestamp, records, -1, -1, -1)
}

/// Builds a v2 batch written by an idempotent producer (`producer_id`, `epoch`, and the
/// sequence number of its first record).
pub fn build_producer_batch(
    base_timestamp: i64,
    records: &[(Option<&[u8]>, &[u8])],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let producer = (producer_id, producer_epoch, base_sequence);
    build(base_timestamp, records, producer, 0)
}

/// Builds a batch of a transactional producer (attribute bit 4 set), for tests.
pub fn build_transactional_batch(
    base_timestamp: i64,
    records: &[(Option<&[u8]>, &[u8])],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let producer = (producer_id, producer_epoch, base_sequence);
    build(base_timestamp, records, producer, TRANSACTIONAL)
}

/// Attribute bit of a transactional batch.
const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit of a control batch.
const CONTROL: i16 = 0x20;

/// How a transaction ended, as its control record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Abort,
    Commit,
}

/// Builds the control batch that ends a producer's transaction in a partition: one record
/// whose key is (version 0, type 0 abort / 1 commit) and whose value is (version 0,
/// coordinator epoch), as Kafka writes it.
pub fn build_control_batch(
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let kind: i16 = match marker {
        Marker::Abort => 0,
        Marker::Commit => 1,
    };
    let mut key = 0i16.to_be_bytes().to_vec();
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = 0i16.to_be_bytes().to_vec();
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let producer = (producer_id, producer_epoch, -1);
    build(
        timestamp,
        &[(Some(&key), &value)],
        producer,
        TRANSACTIONAL | CONTROL,
    )
}

/// The marker of a control batch (`None` if `batch` is not one or is malformed). Control
/// batches are never compressed, so the key of their one record is read directly.
pub fn control_marker(batch: &[u8]) -> Option<Marker> {
    let h = BatchHeader::parse(batch).ok()?;
    if !h.is_control() || h.records_count < 1 {
        return None;
    }
    let mut pos = BATCH_HEADER_BYTES;
    read_varint(batch, &mut pos)?; // record length
    pos += 1; // attributes
    read_varint(batch, &mut pos)?; // timestamp delta
    read_varint(batch, &mut pos)?; // offset delta
    let key_len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
    let key = batch.get(pos..pos.checked_add(key_len)?)?;
    if key.len() < 4 {
        return None;
    }
    match i16_at(key, 2) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

/// Builds a batch; `producer` is (id, epoch, base sequence), -1 for none.
fn build(
    base_timestamp: i64,
    records: &[(Option<&[u8]>, &[u8])],
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
    attributes: i16,
) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = Vec::new();
        r.push(0); // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        match key {
            Some(k) => {
                varint(&mut r, k.len() as i64);
                r.extend_from_slice(k);
            }
            None => varint(&mut r, -1),
        }
        varint(&mut r, value.len() as i64);
        r.extend_from_slice(value);
        varint(&mut r, 0); // headers
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_BYTES - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&((records.len() as i32 - 1).max(0)).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_validate_and_corruption_is_caught() {
        let mut b = build_batch(1000, &[(Some(b"k"), b"v1"), (None, b"v2")]);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        set_base_offset(&mut b, 42);
        assert_eq!(
            validate(&b).unwrap().base_offset,
            42,
            "the offset is outside the CRC"
        );
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::CorruptCrc { .. })));
        assert!(matches!(
            validate(&b[..30]),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn record_times_of_an_uncompressed_batch() {
        let mut b = build_batch(1000, &[(None, b"a"), (Some(b"k"), b"bb"), (None, b"")]);
        set_base_offset(&mut b, 10);
        // build_batch gives every record the base timestamp.
        assert_eq!(
            record_times(&b),
            Some(vec![(10, 1000), (11, 1000), (12, 1000)])
        );
        assert_eq!(record_times(&b[..40]), None);
    }

    #[test]
    fn control_batches_carry_their_marker() {
        let commit = build_control_batch(5, 7, 3, Marker::Commit, 0);
        let h = validate(&commit).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 3, -1)
        );
        assert_eq!(control_marker(&commit), Some(Marker::Commit));
        let abort = build_control_batch(5, 7, 3, Marker::Abort, 0);
        assert_eq!(control_marker(&abort), Some(Marker::Abort));
        assert_eq!(control_marker(&build_batch(0, &[(None, b"x")])), None);
        let data = build_transactional_batch(0, &[(None, b"x")], 7, 3, 0);
        assert!(validate(&data).unwrap().is_transactional());
    }

    #[test]
    fn absurd_lengths_are_refused() {
        let mut b = build_batch(0, &[(None, b"x")]);
        b[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(validate(&b), Err(BatchError::BadLength(_))));
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(validate(&b), Err(BatchError::BadLength(_))));
    }
}
