//! Flink's `filesystem` connector: a bounded source over a file or a directory of files, and a
//! sink that writes part files into a directory; either on the local file system or on object
//! storage (`s3://bucket/prefix`, see [`crate::object_storage`]).

use crate::format::bulk::{self, Batches, BulkFormat, BulkWriter};
use crate::format::{self, LineDecoder, LineEncoder};
use crate::object_storage::{is_object_path, ObjectStorage};
use crate::partition_commit::CommitPolicy;
use crate::Connector;
use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, CheckpointId, Options, Result, SluiceError};
use sluice_engine::{
    Operator, OperatorFactory, Output, SinkSpec, SourceFactory, SourcePoll, SourceReader,
    SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes read from a file at a time.
const READ_BLOCK_BYTES: usize = 1 << 20;

/// Bytes a sink buffers before writing to its part file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

const OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "sink.parallelism",
    "sink.rolling-policy.file-size",
    "sink.rolling-policy.rollover-interval",
    "source.monitor-interval",
    "partition.default-name",
    "sink.rolling-policy.check-interval",
    "sink.rolling-policy.inactivity-interval",
];

/// The `filesystem` connector.
pub struct FileSystemConnector;

/// The formats of files: lines of text, or whole files (Parquet, Avro container files).
const FILE_FORMATS: &[&str] = &["avro", "csv", "json", "parquet"];

fn check_options(options: &Options) -> Result<String> {
    let known: Vec<&str> = OPTIONS
        .iter()
        .chain(crate::partition_commit::OPTIONS)
        .chain(crate::object_storage::OPTIONS)
        .copied()
        .collect();
    format::checked_format(options, &known, FILE_FORMATS)
}

/// When a sink closes a part file and starts the next (Flink's `sink.rolling-policy.*`); a
/// checkpoint's barrier closes every file too.
#[derive(Debug, Clone)]
struct RollingPolicy {
    /// `file-size`: a file this big (128 MB).
    file_size: u64,
    /// `rollover-interval`: a file open this long (30 min).
    rollover: Duration,
    /// `inactivity-interval`: a file not written to for this long (30 min).
    inactivity: Duration,
}

impl RollingPolicy {
    fn from_options(o: &Options) -> Result<Self> {
        let file_size = match o.get("sink.rolling-policy.file-size") {
            None => 128 << 20,
            Some(v) => sluice_common::options::parse_memory_size(v)
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    SluiceError::Config(format!(
                        "{}: option 'sink.rolling-policy.file-size' = '{v}': expected a size such as '128 mb'",
                        o.owner
                    ))
                })?,
        };
        let interval = |key: &str| -> Result<Duration> {
            Ok(o.duration(key)?.unwrap_or(Duration::from_secs(30 * 60)))
        };
        // Checked on every write and watermark: the check interval is accepted, not needed.
        o.duration("sink.rolling-policy.check-interval")?;
        Ok(RollingPolicy {
            file_size,
            rollover: interval("sink.rolling-policy.rollover-interval")?,
            inactivity: interval("sink.rolling-policy.inactivity-interval")?,
        })
    }
}

/// How a sink writes rows into files.
enum FileFormat {
    Lines(Box<dyn LineEncoder>),
    Bulk(BulkFormat, arrow::datatypes::SchemaRef),
}

/// A sink's file format for rows of `schema`.
fn file_format(
    format: &str,
    schema: arrow::datatypes::SchemaRef,
    spec: &SinkSpec,
) -> Result<FileFormat> {
    Ok(match format {
        f if bulk::FORMATS.contains(&f) => match BulkFormat::new(f, &spec.options)? {
            Some(b) => FileFormat::Bulk(b, schema),
            None => {
                return Err(SluiceError::Runtime(format!(
                    "internal: no bulk format {f}"
                )))
            }
        },
        f => FileFormat::Lines(format::encoder(f, schema, &spec.options, &spec.time_zone)?),
    })
}

impl Connector for FileSystemConnector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        let format = check_options(&spec.options)?;
        spec.check_metadata(self.name(), &[])?;
        if spec.options.get("source.monitor-interval").is_some() {
            return Err(SluiceError::Config(format!(
                "{}: 'source.monitor-interval' (watching a directory) is not supported yet",
                spec.options.owner
            )));
        }
        let path_text = crate::object_storage::normalize(spec.options.required("path")?);
        let storage = storage_of(&path_text, &spec.options)?;
        let path = PathBuf::from(path_text);
        let partitions = Partitions::new(spec, &path)?;
        // Fail at planning time on a bad format option or a missing path.
        if BulkFormat::new(&format, &spec.options)?.is_none() {
            format::decoder(&format, partitions.data_schema.clone(), &spec.options)?;
        }
        list_files(&path, storage.as_deref())?;
        Ok(Arc::new(FileSourceFactory {
            spec: spec.clone(),
            format,
            path,
            partitions: Arc::new(partitions),
            storage,
        }))
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let format = check_options(&spec.options)?;
        if spec.updating {
            return Err(SluiceError::Plan(format!(
                "table '{}': the filesystem sink only takes inserts, but the query produces updates (an updating aggregate or join); write it to a sink that takes updates",
                spec.table
            )));
        }
        file_format(&format, spec.schema.clone(), spec)?;
        let path = crate::object_storage::normalize(spec.options.required("path")?);
        Ok(Arc::new(FileSinkFactory {
            spec: spec.clone(),
            format,
            storage: storage_of(&path, &spec.options)?,
            dir: PathBuf::from(path),
            policy: CommitPolicy::from_options(&spec.options)?,
            rolling: RollingPolicy::from_options(&spec.options)?,
        }))
    }
}

/// The object storage of `path`, if it is on object storage (the table's `s3.*` options
/// are accepted only then).
fn storage_of(path: &str, options: &Options) -> Result<Option<Arc<ObjectStorage>>> {
    if is_object_path(path) {
        return ObjectStorage::open(path, options).map(Some);
    }
    if let Some(k) = crate::object_storage::OPTIONS
        .iter()
        .find(|k| options.get(k).is_some())
    {
        return Err(SluiceError::Config(format!(
            "{}: option '{k}' is for paths on object storage (s3://...), but 'path' is '{path}'",
            options.owner
        )));
    }
    Ok(None)
}

/// The files a path stands for: itself, or the visible files of a directory tree, sorted.
/// Hidden files (`.x`, `_x`) are skipped, as Flink does.
fn list_files(path: &Path, storage: Option<&ObjectStorage>) -> Result<Vec<PathBuf>> {
    if let Some(s) = storage {
        let files = s.list(path)?;
        if files.is_empty() && !s.exists(path)? {
            return Err(SluiceError::Config(format!(
                "{}: no such file or directory on object storage",
                path.display()
            )));
        }
        return Ok(if files.is_empty() {
            vec![path.to_path_buf()]
        } else {
            files
        });
    }
    let meta =
        std::fs::metadata(path).map_err(|e| SluiceError::io(path.display().to_string(), e))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| SluiceError::io(dir.display().to_string(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SluiceError::io(dir.display().to_string(), e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

struct FileSourceFactory {
    spec: SourceSpec,
    format: String,
    path: PathBuf,
    partitions: Arc<Partitions>,
    storage: Option<Arc<ObjectStorage>>,
}

/// The partition columns of a `PARTITIONED BY` table, which its files do not hold: their
/// values come from the directories `k=v` under the table's path that a file is in.
struct Partitions {
    root: PathBuf,
    /// All the table's physical columns.
    schema: arrow::datatypes::SchemaRef,
    /// The columns the files hold.
    data_schema: arrow::datatypes::SchemaRef,
    /// Which columns of `schema` are partition columns.
    is_key: Vec<bool>,
    default_name: String,
}

impl Partitions {
    fn new(spec: &SourceSpec, root: &Path) -> Result<Self> {
        let is_key: Vec<bool> = spec
            .schema
            .fields()
            .iter()
            .map(|f| spec.partition_keys.contains(f.name()))
            .collect();
        let data: Vec<usize> = (0..is_key.len()).filter(|i| !is_key[*i]).collect();
        Ok(Partitions {
            root: root.to_path_buf(),
            schema: spec.schema.clone(),
            data_schema: Arc::new(spec.schema.project(&data)?),
            is_key,
            default_name: spec
                .options
                .string("partition.default-name", DEFAULT_PARTITION),
        })
    }

    /// The rows of a file's batch with the partition columns put in, from the file's path.
    fn complete(&self, file: &str, batch: RecordBatch) -> Result<RecordBatch> {
        if !self.is_key.contains(&true) {
            return Ok(batch);
        }
        let rel = Path::new(file)
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(file));
        let values: HashMap<String, String> = rel
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .filter_map(|c| c.split_once('='))
            .map(|(k, v)| (unescape_partition_value(k), unescape_partition_value(v)))
            .collect();
        let mut data = batch.columns().iter();
        let mut columns = Vec::with_capacity(self.is_key.len());
        for (i, f) in self.schema.fields().iter().enumerate() {
            if !self.is_key[i] {
                columns.push(data.next().cloned().ok_or_else(|| {
                    SluiceError::Runtime("filesystem: a decoded batch lacks a column".into())
                })?);
                continue;
            }
            let Some(value) = values.get(f.name()) else {
                return Err(SluiceError::Format {
                    location: sluice_common::error::Location {
                        source: Some(file.to_string()),
                        line: None,
                        column: None,
                    },
                    message: format!(
                        "the file is in no directory '{}=...' of partition column '{}'",
                        f.name(),
                        f.name()
                    ),
                });
            };
            let text: ArrayRef = if *value == self.default_name {
                arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, batch.num_rows())
            } else {
                Arc::new(arrow::array::StringArray::from(vec![
                    value.as_str();
                    batch.num_rows()
                ]))
            };
            columns.push(arrow::compute::cast(&text, f.data_type()).map_err(|e| {
                SluiceError::Format {
                    location: sluice_common::error::Location {
                        source: Some(file.to_string()),
                        line: None,
                        column: None,
                    },
                    message: format!(
                        "partition value '{value}' of column '{}' is not a {}: {e}",
                        f.name(),
                        f.data_type()
                    ),
                }
            })?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// A directory name's partition value: `%XX` escapes undone.
fn unescape_partition_value(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SourceFactory for FileSourceFactory {
    fn name(&self) -> String {
        format!("filesystem({})", self.path.display())
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let all_files = list_files(&self.path, self.storage.as_deref())?;
        let files = assigned(&all_files, ctx.parallelism, ctx.subtask_index)
            .map(|p| (p.clone(), None))
            .collect();
        let bulk_format = BulkFormat::new(&self.format, &self.spec.options)?;
        Ok(Box::new(FileReader {
            files,
            all_files,
            subtask: ctx.subtask_index,
            parallelism: ctx.parallelism,
            finished: Vec::new(),
            current: None,
            decoder: match bulk_format {
                Some(_) => None,
                None => Some(format::decoder(
                    &self.format,
                    self.partitions.data_schema.clone(),
                    &self.spec.options,
                )?),
            },
            bulk_format,
            bulk: None,
            partitions: self.partitions.clone(),
            ready: VecDeque::new(),
            skipped_counter: ctx.metrics.counter(&format!(
                "{}: records skipped as malformed",
                self.spec.table
            )),
            reported_skips: 0,
            position: None,
            skip_rows: 0,
            storage: self.storage.clone(),
        }))
    }
}

/// The files (splits) of subtask `subtask` of `parallelism`: every `parallelism`-th one.
fn assigned(
    files: &[PathBuf],
    parallelism: usize,
    subtask: usize,
) -> impl Iterator<Item = &PathBuf> {
    files
        .iter()
        .enumerate()
        .filter(move |(i, _)| i % parallelism == subtask)
        .map(|(_, p)| p)
}

struct OpenFile {
    name: String,
    file: File,
    /// The start of a line not yet complete.
    carry: Vec<u8>,
    /// The 1-based number of the first line in `carry`.
    line: u64,
    /// The offset of `carry` in the file: the bytes before it were decoded.
    consumed: u64,
}

/// Where a file reader is: the block of lines its pending batches come from (file, byte
/// offset of the block's first line, that line's number) and how many of the block's rows
/// it has emitted. A restore decodes the block again and skips those rows.
#[derive(Debug, Clone, PartialEq)]
struct FilePosition {
    file: String,
    offset: u64,
    line: u64,
    rows_emitted: u64,
}

impl FilePosition {
    fn write(&self, state: &mut StateWriter, extra_rows: u64) {
        state.put_str(&self.file);
        state.put_u64(self.offset);
        state.put_u64(self.line);
        state.put_u64(self.rows_emitted + extra_rows);
    }

    fn read(state: &mut StateReader<'_>) -> Result<Self> {
        Ok(FilePosition {
            file: state.str()?.to_string(),
            offset: state.u64()?,
            line: state.u64()?,
            rows_emitted: state.u64()?,
        })
    }
}

/// How far a checkpoint got in one file.
#[derive(Debug, Clone, PartialEq)]
enum FileStatus {
    /// Read whole.
    Done,
    /// Read up to a position.
    At(FilePosition),
}

/// The first field of a file source position that lists its files (Sluice 0.1 wrote only
/// the position in the file it was reading).
const SPLITS_MAGIC: &str = "filesystem-splits-1";

struct FileReader {
    /// The files still to read, each from its start or from a restored position.
    files: VecDeque<(PathBuf, Option<FilePosition>)>,
    /// Every file of the source, sorted (the splits, divided among subtasks by index).
    all_files: Vec<PathBuf>,
    subtask: usize,
    parallelism: usize,
    /// The files this subtask has read whole (but the one `position` is in).
    finished: Vec<String>,
    current: Option<OpenFile>,
    /// The decoder of lines; `None` for whole files.
    decoder: Option<Box<dyn LineDecoder>>,
    /// The format of whole files (Parquet, Avro), if the files are.
    bulk_format: Option<BulkFormat>,
    /// The whole file being read.
    bulk: Option<(String, Batches)>,
    partitions: Arc<Partitions>,
    ready: VecDeque<RecordBatch>,
    skipped_counter: Arc<AtomicU64>,
    reported_skips: u64,
    position: Option<FilePosition>,
    /// Rows still to skip after a restore.
    skip_rows: u64,
    /// Where the files are, if on object storage.
    storage: Option<Arc<ObjectStorage>>,
}

impl FileReader {
    fn decode(&mut self, name: &str, first_line: u64, offset: u64, block: &[u8]) -> Result<()> {
        if let Some(p) = self.position.take().filter(|p| p.file != name) {
            // The reader moved on to the next file: the one before is read whole.
            self.finished.push(p.file);
        }
        self.position = Some(FilePosition {
            file: name.to_string(),
            offset,
            line: first_line,
            rows_emitted: 0,
        });
        let Some(decoder) = self.decoder.as_mut() else {
            return Err(SluiceError::Runtime(
                "internal: lines in a source of whole files".into(),
            ));
        };
        for b in decoder.decode(name, first_line, block)? {
            if b.num_rows() > 0 {
                self.ready.push_back(self.partitions.complete(name, b)?);
            }
        }
        let skipped = decoder.skipped();
        if skipped > self.reported_skips {
            self.skipped_counter
                .fetch_add(skipped - self.reported_skips, Ordering::Relaxed);
            self.reported_skips = skipped;
        }
        Ok(())
    }

    /// Opens `path` at its start, or at a restored position (whose emitted rows are then
    /// skipped).
    fn open(&mut self, path: &Path, at: Option<FilePosition>) -> Result<()> {
        let name = path.display().to_string();
        let mut file = self.open_file(path)?;
        let (line, consumed) = match &at {
            Some(p) => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(p.offset))
                    .map_err(|e| SluiceError::io(name.clone(), e))?;
                (p.line, p.offset)
            }
            None => (1, 0),
        };
        if let Some(p) = at {
            if let Some(before) = self.position.take().filter(|b| b.file != p.file) {
                self.finished.push(before.file);
            }
            self.skip_rows = p.rows_emitted;
            self.position = Some(FilePosition {
                rows_emitted: 0,
                ..p
            });
        }
        self.current = Some(OpenFile {
            name,
            file,
            carry: Vec::new(),
            line,
            consumed,
        });
        Ok(())
    }

    /// Opens the whole file `path` at its start, or at a restored position (whose emitted
    /// rows are then skipped): the whole file is one block of rows.
    fn open_bulk(&mut self, path: &Path, at: Option<FilePosition>) -> Result<()> {
        let name = path.display().to_string();
        let Some(format) = &self.bulk_format else {
            return Err(SluiceError::Runtime(
                "internal: no format of whole files".into(),
            ));
        };
        let reader = format.reader(self.open_file(path)?, path)?;
        if let Some(before) = self.position.take().filter(|b| b.file != name) {
            self.finished.push(before.file);
        }
        self.skip_rows = at.map(|p| p.rows_emitted).unwrap_or(0);
        self.position = Some(FilePosition {
            file: name.clone(),
            offset: 0,
            line: 0,
            rows_emitted: 0,
        });
        self.bulk = Some((name, reader));
        Ok(())
    }

    /// Opens file `path`; an object is fetched whole into an unnamed local file first.
    fn open_file(&self, path: &Path) -> Result<File> {
        let name = path.display().to_string();
        let Some(storage) = &self.storage else {
            return File::open(path).map_err(|e| SluiceError::io(name, e));
        };
        let file = tempfile::tempfile().map_err(|e| SluiceError::io(name.clone(), e))?;
        let mut file = storage.download(path, file)?;
        use std::io::Seek;
        file.rewind().map_err(|e| SluiceError::io(name, e))?;
        Ok(file)
    }

    /// How far the checkpointed subtasks `states` (by index, of `parallelism`) got in each
    /// file they read.
    fn statuses(
        &self,
        parallelism: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<HashMap<String, FileStatus>> {
        let mut out = HashMap::new();
        for (subtask, state) in states.iter_mut() {
            if state.clone().str().ok() != Some(SPLITS_MAGIC) {
                // Sluice 0.1: the position in the one file the subtask was reading; the
                // files before it among its own were read whole.
                let at = FilePosition::read(state)?;
                let mut found = false;
                for f in assigned(&self.all_files, parallelism, *subtask) {
                    let name = f.display().to_string();
                    if name == at.file {
                        found = true;
                        break;
                    }
                    out.insert(name, FileStatus::Done);
                }
                if !found {
                    return Err(missing_file(&at.file));
                }
                out.insert(at.file.clone(), FileStatus::At(at));
                continue;
            }
            state.str()?;
            for _ in 0..state.count()? {
                out.insert(state.str()?.to_string(), FileStatus::Done);
            }
            for _ in 0..state.count()? {
                let at = FilePosition::read(state)?;
                out.insert(at.file.clone(), FileStatus::At(at));
            }
        }
        for (name, status) in &out {
            if matches!(status, FileStatus::At(_))
                && !self
                    .all_files
                    .iter()
                    .any(|f| f.display().to_string() == *name)
            {
                return Err(missing_file(name));
            }
        }
        Ok(out)
    }

    /// Goes on from `statuses` with this subtask's files.
    fn resume(&mut self, mut statuses: HashMap<String, FileStatus>) {
        self.files.clear();
        for f in assigned(&self.all_files, self.parallelism, self.subtask) {
            let name = f.display().to_string();
            match statuses.remove(&name) {
                Some(FileStatus::Done) => self.finished.push(name),
                Some(FileStatus::At(p)) => self.files.push_back((f.clone(), Some(p))),
                None => self.files.push_back((f.clone(), None)),
            }
        }
    }
}

fn missing_file(file: &str) -> SluiceError {
    SluiceError::Config(format!(
        "the checkpoint was reading '{file}', which is no longer there; restore needs the input files the job was reading"
    ))
}

impl SourceReader for FileReader {
    fn has_nothing_to_read(&self) -> bool {
        self.files.is_empty() && self.current.is_none() && self.bulk.is_none()
    }

    /// The files read whole, then the position in the file being read and in files a
    /// restore left half read (those not listed are still to read).
    fn snapshot_position(&mut self, _checkpoint: u64, state: &mut StateWriter) -> Result<()> {
        state.put_str(SPLITS_MAGIC);
        state.put_u64(self.finished.len() as u64);
        for f in &self.finished {
            state.put_str(f);
        }
        let queued: Vec<&FilePosition> =
            self.files.iter().filter_map(|(_, p)| p.as_ref()).collect();
        state.put_u64((self.position.is_some() as usize + queued.len()) as u64);
        if let Some(p) = &self.position {
            // Rows still to skip after a restore were emitted before it: a checkpoint taken
            // before the reader got to them must count them too.
            p.write(state, self.skip_rows);
        }
        for p in queued {
            p.write(state, 0);
        }
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let statuses = self.statuses(self.parallelism, &mut [(self.subtask, state.clone())])?;
        self.resume(statuses);
        Ok(())
    }

    /// Files are the splits: each new subtask takes its share of them and goes on in each
    /// from where the old subtask that read it stopped.
    fn restore_rescaled(
        &mut self,
        old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let statuses = self.statuses(old, states)?;
        self.resume(statuses);
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        loop {
            if let Some(mut b) = self.ready.pop_front() {
                if self.skip_rows > 0 {
                    let skip = self.skip_rows.min(b.num_rows() as u64);
                    self.skip_rows -= skip;
                    if let Some(p) = self.position.as_mut() {
                        p.rows_emitted += skip;
                    }
                    b = b.slice(skip as usize, b.num_rows() - skip as usize);
                    if b.num_rows() == 0 {
                        continue;
                    }
                }
                if let Some(p) = self.position.as_mut() {
                    p.rows_emitted += b.num_rows() as u64;
                }
                return Ok(SourcePoll::Batch(ChangeBatch::inserts(b)));
            }
            if let Some((name, reader)) = self.bulk.as_mut() {
                match reader.next() {
                    Some(b) => {
                        let b = b?;
                        let name = name.clone();
                        let b = bulk::conform(&b, &self.partitions.data_schema, &name)?;
                        self.ready.push_back(self.partitions.complete(&name, b)?);
                    }
                    None => self.bulk = None,
                }
                continue;
            }
            let Some(mut open) = self.current.take() else {
                let Some((path, at)) = self.files.pop_front() else {
                    return Ok(SourcePoll::End);
                };
                if self.decoder.is_none() {
                    self.open_bulk(&path, at)?;
                } else {
                    self.open(&path, at)?;
                }
                continue;
            };
            let mut buf = std::mem::take(&mut open.carry);
            buf.reserve(READ_BLOCK_BYTES);
            let n = (&mut open.file)
                .take(READ_BLOCK_BYTES as u64)
                .read_to_end(&mut buf)
                .map_err(|e| SluiceError::io(open.name.clone(), e))?;
            if n == 0 {
                // End of file: the rest is a last line without a newline.
                if !buf.is_empty() {
                    let (name, line, offset) = (open.name.clone(), open.line, open.consumed);
                    self.decode(&name, line, offset, &buf)?;
                }
                continue;
            }
            match memchr::memrchr(b'\n', &buf) {
                None => open.carry = buf,
                Some(last) => {
                    open.carry = buf[last + 1..].to_vec();
                    let block = &buf[..=last];
                    let (first, offset) = (open.line, open.consumed);
                    open.line += memchr::memchr_iter(b'\n', block).count() as u64;
                    open.consumed += block.len() as u64;
                    let name = open.name.clone();
                    self.current = Some(open);
                    self.decode(&name, first, offset, block)?;
                    continue;
                }
            }
            self.current = Some(open);
        }
    }
}

struct FileSinkFactory {
    spec: SinkSpec,
    format: String,
    /// The table's directory (on object storage: the prefix of its objects' names).
    dir: PathBuf,
    storage: Option<Arc<ObjectStorage>>,
    policy: CommitPolicy,
    rolling: RollingPolicy,
}

impl OperatorFactory for FileSinkFactory {
    fn name(&self) -> String {
        format!("Sink: filesystem({})", self.dir.display())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        // On object storage, files are written locally, in a scratch directory, until they
        // are closed; then they are uploaded (hidden) and renamed into place at the commit.
        let scratch = match &self.storage {
            None => {
                std::fs::create_dir_all(&self.dir)
                    .map_err(|e| SluiceError::io(self.dir.display().to_string(), e))?;
                None
            }
            Some(_) => Some(
                tempfile::Builder::new()
                    .prefix("sluice-object-sink-")
                    .tempdir()
                    .map_err(|e| SluiceError::io("a scratch directory for object storage", e))?,
            ),
        };
        let unique = format!(
            "{:x}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let keys = &self.spec.partition_keys;
        let data_columns: Vec<usize> = (0..self.spec.schema.fields().len())
            .filter(|i| !keys.contains(i))
            .collect();
        let data_schema = Arc::new(self.spec.schema.project(&data_columns)?);
        Ok(Box::new(FileSink {
            dir: self.dir.clone(),
            storage: self.storage.clone(),
            scratch,
            prefix: format!("{unique}-{}", ctx.subtask_index),
            two_phase: ctx.checkpointing,
            pending: Vec::new(),
            format: file_format(&self.format, data_schema, &self.spec)?,
            buckets: BTreeMap::new(),
            partition_keys: keys
                .iter()
                .map(|&i| (i, self.spec.schema.field(i).name().clone()))
                .collect(),
            data_columns,
            default_partition: self
                .spec
                .options
                .string("partition.default-name", DEFAULT_PARTITION),
            policy: self.policy.clone(),
            rolling: self.rolling.clone(),
            rolled: Vec::new(),
            partitions: BTreeMap::new(),
            watermark: i64::MIN,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
        }))
    }
}

/// The directory name of a partition with no value (null or empty), as Flink's.
const DEFAULT_PARTITION: &str = "__DEFAULT_PARTITION__";

/// A partition value as a directory name: the characters Flink (as Hive) escapes become `%XX`.
fn escape_partition_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c < ' '
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '\u{7f}'
                    | '{'
                    | '['
                    | ']'
                    | '^'
            )
        {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The part files of one directory (the table's, or one partition's) a sink subtask writes.
struct Bucket {
    /// The directory the files are named in.
    dir: PathBuf,
    /// Where the file being written is written (`dir`, or on object storage a local one).
    local_dir: PathBuf,
    /// The number of the file being written.
    part: u64,
    buffer: Vec<u8>,
    file: Option<File>,
    /// The whole file being written (Parquet, Avro: completed when it is finished).
    bulk: Option<Box<dyn BulkWriter>>,
    /// Bytes of the line file being written (flushed or buffered).
    line_bytes: u64,
    /// When the file being written was opened, and last written to.
    opened: Option<Instant>,
    written: Option<Instant>,
    in_progress: PathBuf,
    final_path: PathBuf,
}

impl Bucket {
    fn new(dir: PathBuf, local_dir: PathBuf, prefix: &str) -> Self {
        let (in_progress, final_path) = part_paths(&dir, prefix, 0);
        Bucket {
            dir,
            local_dir,
            part: 0,
            buffer: Vec::new(),
            file: None,
            bulk: None,
            line_bytes: 0,
            opened: None,
            written: None,
            in_progress,
            final_path,
        }
    }

    /// The local file the file being written is written to.
    fn local(&self) -> PathBuf {
        match self.in_progress.file_name() {
            Some(n) if self.local_dir != self.dir => self.local_dir.join(n),
            _ => self.in_progress.clone(),
        }
    }

    /// Closes the file being written, if any, and starts the next one; on object storage it
    /// is uploaded (still hidden).
    fn finish_file(
        &mut self,
        prefix: &str,
        storage: Option<&ObjectStorage>,
    ) -> Result<Option<(PathBuf, PathBuf)>> {
        self.flush()?;
        self.line_bytes = 0;
        self.opened = None;
        self.written = None;
        if let Some(w) = self.bulk.take() {
            self.file = Some(w.finish()?);
        }
        let Some(f) = self.file.take() else {
            return Ok(None);
        };
        f.sync_all()
            .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))?;
        drop(f);
        if let Some(s) = storage {
            let local = self.local();
            s.upload(&local, &self.in_progress)?;
            let _ = std::fs::remove_file(&local);
        }
        let done = (self.in_progress.clone(), self.final_path.clone());
        self.part += 1;
        (self.in_progress, self.final_path) = part_paths(&self.dir, prefix, self.part);
        Ok(Some(done))
    }

    /// True if the rolling policy closes the file being written now.
    fn due(&self, policy: &RollingPolicy, now: Instant) -> bool {
        let Some(opened) = self.opened else {
            return false;
        };
        let bytes = match &self.bulk {
            Some(w) => w.bytes(),
            None => self.line_bytes,
        };
        bytes >= policy.file_size
            || now.duration_since(opened) >= policy.rollover
            || self
                .written
                .is_some_and(|w| now.duration_since(w) >= policy.inactivity)
    }

    /// Notes a write at `now`.
    fn wrote(&mut self, now: Instant) {
        self.opened.get_or_insert(now);
        self.written = Some(now);
    }

    /// Creates the file being written.
    fn create(&self) -> Result<File> {
        std::fs::create_dir_all(&self.local_dir)
            .map_err(|e| SluiceError::io(self.local_dir.display().to_string(), e))?;
        File::create(self.local())
            .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))
    }

    /// Appends `batch` to the whole file being written.
    fn write_bulk(
        &mut self,
        format: &BulkFormat,
        schema: &arrow::datatypes::SchemaRef,
        batch: &RecordBatch,
    ) -> Result<()> {
        if self.bulk.is_none() {
            let file = self.create()?;
            self.bulk = Some(format.writer(file, schema.clone(), &self.in_progress)?);
        }
        match self.bulk.as_mut() {
            Some(w) => w.write(batch),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(self.create()?);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&self.buffer)
                .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))?;
        }
        self.buffer.clear();
        Ok(())
    }
}

/// The hidden and the final path of part file `part` of a sink subtask.
fn part_paths(dir: &Path, prefix: &str, part: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!(".part-{prefix}-{part}.inprogress")),
        dir.join(format!("part-{prefix}-{part}")),
    )
}

/// Writes part files; a file is hidden (`.part-...inprogress`) until it is complete, then
/// renamed into place, so a reader never sees a half-written file. A partitioned table
/// (`PARTITIONED BY (k1, k2)`) gets a directory `k1=v1/k2=v2` per partition, and its files
/// hold the other columns, as Flink's.
///
/// Without checkpoints a subtask writes one file per directory, complete when the sink
/// closes. With checkpoints (two-phase commit, as Flink's file sink) the barrier closes the
/// files being written (pre-commit) and they become visible only when that checkpoint
/// completes; a restore completes the files the restored checkpoint had pre-committed, and
/// what was written after it stays hidden and is written again by the replay.
struct FileSink {
    dir: PathBuf,
    /// The object storage `dir` is on, if it is.
    storage: Option<Arc<ObjectStorage>>,
    /// Where files on object storage are written until they are closed.
    scratch: Option<tempfile::TempDir>,
    /// Names this subtask's files (`<run>-<subtask>`).
    prefix: String,
    two_phase: bool,
    /// Closed files waiting for their checkpoint: (checkpoint, hidden path, final path).
    pending: Vec<(CheckpointId, PathBuf, PathBuf)>,
    format: FileFormat,
    /// By partition path (`""` for an unpartitioned table).
    buckets: BTreeMap<String, Bucket>,
    /// The partition columns (index, name), in `PARTITIONED BY` order.
    partition_keys: Vec<(usize, String)>,
    /// The columns the files hold: all but the partition columns.
    data_columns: Vec<usize>,
    default_partition: String,
    policy: CommitPolicy,
    rolling: RollingPolicy,
    /// Files the rolling policy closed since the last barrier: (hidden, final path).
    rolled: Vec<(PathBuf, PathBuf)>,
    /// Every partition written to, by path.
    partitions: BTreeMap<String, Partition>,
    watermark: i64,
    rows: Arc<AtomicU64>,
}

/// A partition the sink wrote to, for its commit.
struct Partition {
    /// The partition columns' names and values.
    values: Vec<(String, Option<String>)>,
    /// Processing time when it was first written to.
    created_ms: i64,
    /// Written to since its last commit.
    dirty: bool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl FileSink {
    /// Appends rows to the files of a partition path (`""`: the table's directory).
    fn write(&mut self, path: &str, data: &RecordBatch) -> Result<()> {
        let (dir, prefix) = (&self.dir, &self.prefix);
        let local = self.scratch.as_ref().map(|t| t.path()).unwrap_or(dir);
        let bucket = self
            .buckets
            .entry(path.to_string())
            .or_insert_with(|| Bucket::new(dir.join(path), local.join(path), prefix));
        match &mut self.format {
            FileFormat::Lines(encoder) => {
                let before = bucket.buffer.len();
                encoder.encode(data, &mut bucket.buffer)?;
                bucket.line_bytes += (bucket.buffer.len() - before) as u64;
                if bucket.buffer.len() >= WRITE_BUFFER_BYTES {
                    bucket.flush()?;
                }
            }
            FileFormat::Bulk(format, schema) => bucket.write_bulk(format, schema, data)?,
        }
        bucket.wrote(Instant::now());
        Ok(())
    }

    /// Closes the files the rolling policy says are done: with checkpoints they become
    /// visible when the next checkpoint completes, without at once.
    fn roll(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut done = Vec::new();
        for b in self.buckets.values_mut() {
            if b.due(&self.rolling, now) {
                done.extend(b.finish_file(&self.prefix, self.storage.as_deref())?);
            }
        }
        for (hidden, visible) in done {
            if self.two_phase {
                self.rolled.push((hidden, visible));
            } else {
                publish(&hidden, &visible, self.storage.as_deref())?;
            }
        }
        Ok(())
    }

    /// Closes every file being written; returns the closed files.
    fn finish_files(&mut self) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut done = Vec::new();
        for b in self.buckets.values_mut() {
            done.extend(b.finish_file(&self.prefix, self.storage.as_deref())?);
        }
        Ok(done)
    }

    /// Makes the pending files of checkpoints up to `checkpoint` visible.
    fn commit(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for (_, hidden, visible) in self.pending.iter().filter(|p| p.0 <= checkpoint) {
            publish(hidden, visible, self.storage.as_deref())?;
            dirs.extend(visible.parent().map(Path::to_path_buf));
        }
        self.pending.retain(|p| p.0 > checkpoint);
        if self.storage.is_none() {
            for dir in dirs {
                sluice_engine::checkpoint::storage::sync_dir(&dir)?;
            }
        }
        self.commit_partitions(checkpoint == CheckpointId::MAX)
    }

    /// Commits the partitions written to since their last commit that are ready (all of them
    /// at the end of the input).
    fn commit_partitions(&mut self, all: bool) -> Result<()> {
        let now = now_ms();
        for (path, p) in self.partitions.iter_mut() {
            if p.dirty
                && (all
                    || self
                        .policy
                        .ready(&p.values, p.created_ms, now, self.watermark))
            {
                self.policy
                    .commit(&self.dir.join(path), self.storage.as_deref())?;
                p.dirty = false;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        for b in self.buckets.values_mut() {
            b.flush()?;
        }
        Ok(())
    }

    /// The partition columns' names and values of row `row`.
    fn partition_values(&self, batch: &RecordBatch, row: usize) -> Vec<(String, Option<String>)> {
        self.partition_keys
            .iter()
            .map(|(i, name)| {
                let v = format::text::format_value(batch.column(*i), row, format::text::Style::Sql);
                (name.clone(), v.filter(|v| !v.is_empty()))
            })
            .collect()
    }

    /// The partition path of every row of `batch`.
    fn partition_paths(&self, batch: &RecordBatch) -> Vec<String> {
        (0..batch.num_rows())
            .map(|row| {
                let parts: Vec<String> = self
                    .partition_keys
                    .iter()
                    .map(|(i, name)| {
                        let value = format::text::format_value(
                            batch.column(*i),
                            row,
                            format::text::Style::Sql,
                        )
                        .filter(|v| !v.is_empty())
                        .map(|v| escape_partition_value(&v))
                        .unwrap_or_else(|| self.default_partition.clone());
                        format!("{}={value}", escape_partition_value(name))
                    })
                    .collect();
                parts.join("/")
            })
            .collect()
    }
}

impl Operator for FileSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if self.partition_keys.is_empty() {
            self.write("", &batch.data)?;
            return self.roll();
        }
        let data = batch.data.project(&self.data_columns)?;
        let mut rows_of: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (row, path) in self.partition_paths(&batch.data).into_iter().enumerate() {
            rows_of.entry(path).or_default().push(row as u32);
        }
        for (path, rows) in &rows_of {
            let values = self.partition_values(&batch.data, rows[0] as usize);
            self.partitions
                .entry(path.clone())
                .or_insert_with(|| Partition {
                    values,
                    created_ms: now_ms(),
                    dirty: false,
                })
                .dirty = true;
        }
        for (path, rows) in rows_of {
            let rows = arrow::array::UInt32Array::from(rows);
            self.write(&path, &arrow::compute::take_record_batch(&data, &rows)?)?;
        }
        self.roll()
    }

    fn process_watermark(&mut self, watermark: i64, _out: &mut Output) -> Result<()> {
        self.watermark = self.watermark.max(watermark);
        self.roll()
    }

    fn snapshot_state(&mut self, checkpoint: CheckpointId, state: &mut StateWriter) -> Result<()> {
        if !self.two_phase {
            self.flush()?;
            return Ok(());
        }
        let rolled = std::mem::take(&mut self.rolled);
        for (hidden, visible) in rolled.into_iter().chain(self.finish_files()?) {
            self.pending.push((checkpoint, hidden, visible));
        }
        state.put_u64(self.pending.len() as u64);
        for (id, hidden, visible) in &self.pending {
            state.put_u64(*id);
            state.put_str(&hidden.display().to_string());
            state.put_str(&visible.display().to_string());
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        // The restored checkpoint is complete: its files become visible.
        for _ in 0..state.count()? {
            let _id = state.u64()?;
            let hidden = PathBuf::from(state.str()?);
            let visible = PathBuf::from(state.str()?);
            publish(&hidden, &visible, self.storage.as_deref())?;
        }
        Ok(())
    }

    /// Every old subtask's pre-committed files become visible (publishing is idempotent, so
    /// that each new subtask can try them all).
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        for (_, state) in states.iter_mut() {
            self.restore_state(state)?;
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        self.commit(checkpoint)
    }

    /// The end of the input closes the last files. With checkpoints they become visible with
    /// the final checkpoint, which holds this subtask's final state (as Flink's file sink).
    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        let rolled = std::mem::take(&mut self.rolled);
        for (hidden, visible) in rolled.into_iter().chain(self.finish_files()?) {
            self.pending.push((CheckpointId::MAX, hidden, visible));
        }
        if self.two_phase {
            return Ok(());
        }
        self.commit(CheckpointId::MAX)
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        if self.two_phase {
            // Cancelled: what no checkpoint covers stays hidden; a restore writes it again.
            self.flush()?;
            return Ok(());
        }
        for (hidden, visible) in self.finish_files()? {
            publish(&hidden, &visible, self.storage.as_deref())?;
        }
        Ok(())
    }
}

/// Renames a finished hidden part file into place; done already if only the visible one is
/// there (a commit repeated after a restore).
fn publish(hidden: &Path, visible: &Path, storage: Option<&ObjectStorage>) -> Result<()> {
    if let Some(s) = storage {
        return s.rename(hidden, visible);
    }
    match std::fs::rename(hidden, visible) {
        Ok(()) => Ok(()),
        Err(_) if visible.exists() => Ok(()),
        Err(e) => Err(SluiceError::io(
            format!(
                "committing part file {} (the checkpoint's file is gone)",
                hidden.display()
            ),
            e,
        )),
    }
}
