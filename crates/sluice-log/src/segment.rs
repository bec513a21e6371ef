//! A segment: one file of record batches starting at a base offset, with its offset index and
//! time index. Files are named by the base offset, as Kafka names them
//! (`00000000000000000000.log`, `.index`, `.timeindex`).

use crate::batch::{control_marker, validate, BatchHeader, Marker, BATCH_HEADER_BYTES};
use crate::index::SparseIndex;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One segment of a partition.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    path: PathBuf,
    file: File,
    /// Bytes in the log file.
    size: u64,
    offset_index: SparseIndex,
    time_index: SparseIndex,
    /// The offset after the last record.
    next_offset: i64,
    /// The largest batch max timestamp.
    max_timestamp: i64,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    pub created: SystemTime,
    /// Bytes written since the last sync.
    dirty: bool,
}

/// The file name of a segment (without extension).
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

impl Segment {
    /// Opens or creates the segment at `base_offset` in `dir`. With `recover`, every batch is
    /// checked and a torn or corrupt tail is truncated; indexes are rebuilt when stale.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        recover: bool,
        index_interval_bytes: u64,
    ) -> io::Result<Segment> {
        let stem = file_stem(base_offset);
        let path = dir.join(format!("{stem}.log"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        let created = file
            .metadata()?
            .modified()
            .unwrap_or_else(|_| SystemTime::now());
        let (offset_index, offset_valid) = SparseIndex::open(&dir.join(format!("{stem}.index")))?;
        let (time_index, time_valid) = SparseIndex::open(&dir.join(format!("{stem}.timeindex")))?;
        let mut seg = Segment {
            base_offset,
            path,
            file,
            size,
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp: -1,
            bytes_since_index_entry: 0,
            index_interval_bytes,
            created,
            dirty: false,
        };
        let index_covers_file = seg
            .offset_index
            .entries()
            .last()
            .is_none_or(|&(_, pos)| (pos as u64) < size || size == 0);
        if recover || !offset_valid || !time_valid || !index_covers_file {
            seg.recover()?;
        } else {
            seg.scan_tail()?;
        }
        Ok(seg)
    }

    /// Reads the batch header at `pos`, if a whole header is there.
    fn header_at(&self, pos: u64) -> io::Result<Option<BatchHeader>> {
        if pos + BATCH_HEADER_BYTES as u64 > self.size {
            return Ok(None);
        }
        let mut h = [0u8; BATCH_HEADER_BYTES];
        self.file.read_exact_at(&mut h, pos)?;
        Ok(BatchHeader::parse(&h).ok())
    }

    /// Finds the next offset and max timestamp from the last index entry on (no CRC checks).
    fn scan_tail(&mut self) -> io::Result<()> {
        let mut pos = self
            .offset_index
            .entries()
            .last()
            .map(|&(_, p)| p as u64)
            .unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            self.next_offset = h.last_offset() + 1;
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
            pos += h.total_bytes() as u64;
        }
        if let Some(&(ts, _)) = self.time_index.entries().last() {
            self.max_timestamp = self.max_timestamp.max(ts);
        }
        Ok(())
    }

    /// Checks every batch, truncates at the first bad one and rebuilds both indexes.
    fn recover(&mut self) -> io::Result<()> {
        let mut pos = 0u64;
        let mut offsets = Vec::new();
        let mut times = Vec::new();
        let mut since = 0u64;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        while let Some(h) = self.header_at(pos)? {
            let total = h.total_bytes() as u64;
            if pos + total > self.size {
                break;
            }
            let mut batch = vec![0u8; total as usize];
            self.file.read_exact_at(&mut batch, pos)?;
            if validate(&batch).is_err() || h.base_offset < self.next_offset {
                break;
            }
            if offsets.is_empty() || since >= self.index_interval_bytes {
                offsets.push((h.base_offset - self.base_offset, pos as u32));
                since = 0;
            }
            if h.max_timestamp > self.max_timestamp {
                self.max_timestamp = h.max_timestamp;
                times.push((h.max_timestamp, (h.base_offset - self.base_offset) as u32));
            }
            since += total;
            self.next_offset = h.last_offset() + 1;
            pos += total;
        }
        if pos < self.size {
            tracing::warn!(
                segment = %self.path.display(),
                valid_bytes = pos,
                file_bytes = self.size,
                "truncating a torn or corrupt tail"
            );
            self.file.set_len(pos)?;
            self.file.sync_all()?;
            self.size = pos;
        }
        self.bytes_since_index_entry = since;
        self.offset_index.reset(offsets)?;
        self.time_index.reset(times)?;
        Ok(())
    }

    /// The header of every batch, in order, with the marker of each control batch (to rebuild
    /// the state kept beside the log: producers and transactions).
    pub fn headers(&self) -> io::Result<Vec<(BatchHeader, Option<Marker>)>> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        while let Some(h) = self.header_at(pos)? {
            let start = pos;
            pos += h.total_bytes() as u64;
            if pos > self.size {
                break;
            }
            let marker = if h.is_control() {
                let mut batch = vec![0u8; h.total_bytes()];
                self.file.read_exact_at(&mut batch, start)?;
                control_marker(&batch)
            } else {
                None
            };
            out.push((h, marker));
        }
        Ok(out)
    }

    /// Appends a batch as received, with its base offset replaced by `h.base_offset` (the
    /// offset is written separately, so the batch is never copied).
    pub fn append(&mut self, batch: &[u8], h: &BatchHeader) -> io::Result<()> {
        debug_assert_eq!(h.base_offset, self.next_offset.max(h.base_offset));
        let pos = self.size;
        self.file.write_all(&h.base_offset.to_be_bytes())?;
        self.file.write_all(&batch[8..])?;
        self.size += batch.len() as u64;
        self.dirty = true;
        let rel = h.base_offset - self.base_offset;
        if self.offset_index.entries().is_empty()
            || self.bytes_since_index_entry >= self.index_interval_bytes
        {
            self.offset_index.append(rel, pos as u32)?;
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += batch.len() as u64;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.time_index.append(h.max_timestamp, rel as u32)?;
        }
        self.next_offset = h.last_offset() + 1;
        Ok(())
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    pub fn read(&self, offset: i64, max_bytes: usize) -> io::Result<Vec<u8>> {
        let rel = offset - self.base_offset;
        let mut pos = self
            .offset_index
            .floor(rel)
            .map(|(_, p)| p as u64)
            .unwrap_or(0);
        // Skip batches that end before `offset`.
        while let Some(h) = self.header_at(pos)? {
            if h.last_offset() >= offset {
                break;
            }
            pos += h.total_bytes() as u64;
        }
        let start = pos;
        let mut end = pos;
        while let Some(h) = self.header_at(end)? {
            let next = end + h.total_bytes() as u64;
            if next > self.size || (end > start && (next - start) as usize > max_bytes) {
                break;
            }
            end = next;
        }
        let mut out = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut out, start)?;
        Ok(out)
    }

    /// The first offset whose batch has a max timestamp at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let start_rel = self
            .time_index
            .floor(ts)
            .map(|(_, rel)| rel as i64)
            .unwrap_or(0);
        let mut pos = self
            .offset_index
            .floor(start_rel)
            .map(|(_, p)| p as u64)
            .unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= ts {
                // Kafka answers with the first record at or after `ts`; an uncompressed
                // batch's records are read for it, a compressed one answers for the batch.
                let mut batch = vec![0u8; h.total_bytes()];
                self.file.read_exact_at(&mut batch, pos)?;
                if let Some(times) = crate::batch::record_times(&batch) {
                    if let Some(&(offset, t)) = times.iter().find(|(_, t)| *t >= ts) {
                        return Ok(Some((offset, t)));
                    }
                }
                return Ok(Some((h.base_offset, h.max_timestamp)));
            }
            pos += h.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Handles on the files written since the last sync (the log and its indexes), so that
    /// the caller can fsync them without holding the segment (an fsync covers what was
    /// written through any descriptor of the file before it). The segment counts as synced.
    pub fn take_unsynced(&mut self) -> io::Result<Vec<File>> {
        if !self.dirty {
            return Ok(Vec::new());
        }
        self.dirty = false;
        Ok(vec![
            self.file.try_clone()?,
            self.offset_index.file_handle()?,
            self.time_index.file_handle()?,
        ])
    }

    /// Makes the segment durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.offset_index.sync()?;
            self.time_index.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Deletes the segment's files.
    pub fn delete(self, dir: &Path) -> io::Result<()> {
        let stem = file_stem(self.base_offset);
        drop(self.file);
        for ext in ["log", "index", "timeindex"] {
            let p = dir.join(format!("{stem}.{ext}"));
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
