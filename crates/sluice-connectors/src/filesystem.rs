//! Flink's `filesystem` connector: a bounded source over a file or a directory of files, and a
//! sink that writes part files into a directory.

use crate::format::{self, LineDecoder, LineEncoder};
use crate::Connector;
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, Options, Result, SluiceError};
use sluice_engine::{
    Operator, OperatorFactory, Output, SinkSpec, SourceFactory, SourcePoll, SourceReader,
    SourceSpec, SubtaskContext,
};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
];

/// The `filesystem` connector.
pub struct FileSystemConnector;

fn check_options(options: &Options) -> Result<String> {
    let format = options.required("format")?.to_string();
    if !format::FORMATS.contains(&format.as_str()) {
        return Err(SluiceError::Config(format!(
            "{}: unknown format '{format}'. Available formats: {}",
            options.owner,
            format::FORMATS.join(", ")
        )));
    }
    options.check_known(OPTIONS, &[&format!("{format}.")])?;
    let allowed = format::format_options(&format);
    for (k, _) in options.iter() {
        if k.starts_with(&format!("{format}.")) && !allowed.contains(&k) {
            return Err(SluiceError::Config(format!(
                "{}: unknown option '{k}'. Valid options of format '{format}' are: {}",
                options.owner,
                allowed.join(", ")
            )));
        }
    }
    Ok(format)
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
        let path = PathBuf::from(spec.options.required("path")?);
        // Fail at planning time on a bad format option or a missing path.
        format::decoder(&format, spec.schema.clone(), &spec.options)?;
        list_files(&path)?;
        Ok(Arc::new(FileSourceFactory {
            spec: spec.clone(),
            format,
            path,
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
        format::encoder(&format, spec.schema.clone(), &spec.options, &spec.time_zone)?;
        Ok(Arc::new(FileSinkFactory {
            spec: spec.clone(),
            format,
            dir: PathBuf::from(spec.options.required("path")?),
        }))
    }
}

/// The files a path stands for: itself, or the visible files of a directory tree, sorted.
/// Hidden files (`.x`, `_x`) are skipped, as Flink does.
fn list_files(path: &Path) -> Result<Vec<PathBuf>> {
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
}

impl SourceFactory for FileSourceFactory {
    fn name(&self) -> String {
        format!("filesystem({})", self.path.display())
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let files: VecDeque<PathBuf> = list_files(&self.path)?
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % ctx.parallelism == ctx.subtask_index)
            .map(|(_, p)| p)
            .collect();
        Ok(Box::new(FileReader {
            files,
            current: None,
            decoder: format::decoder(&self.format, self.spec.schema.clone(), &self.spec.options)?,
            ready: VecDeque::new(),
            skipped_counter: ctx.metrics.counter(&format!(
                "{}: records skipped as malformed",
                self.spec.table
            )),
            reported_skips: 0,
        }))
    }
}

struct OpenFile {
    name: String,
    file: File,
    /// The start of a line not yet complete.
    carry: Vec<u8>,
    /// The 1-based number of the first line in `carry`.
    line: u64,
}

struct FileReader {
    files: VecDeque<PathBuf>,
    current: Option<OpenFile>,
    decoder: Box<dyn LineDecoder>,
    ready: VecDeque<RecordBatch>,
    skipped_counter: Arc<AtomicU64>,
    reported_skips: u64,
}

impl FileReader {
    fn decode(&mut self, name: &str, first_line: u64, block: &[u8]) -> Result<()> {
        let batches = self.decoder.decode(name, first_line, block)?;
        self.ready
            .extend(batches.into_iter().filter(|b| b.num_rows() > 0));
        let skipped = self.decoder.skipped();
        if skipped > self.reported_skips {
            self.skipped_counter
                .fetch_add(skipped - self.reported_skips, Ordering::Relaxed);
            self.reported_skips = skipped;
        }
        Ok(())
    }
}

impl SourceReader for FileReader {
    fn has_nothing_to_read(&self) -> bool {
        self.files.is_empty() && self.current.is_none()
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(SourcePoll::Batch(ChangeBatch::inserts(b)));
            }
            let Some(mut open) = self.current.take() else {
                let Some(path) = self.files.pop_front() else {
                    return Ok(SourcePoll::End);
                };
                let name = path.display().to_string();
                let file = File::open(&path).map_err(|e| SluiceError::io(name.clone(), e))?;
                self.current = Some(OpenFile {
                    name,
                    file,
                    carry: Vec::new(),
                    line: 1,
                });
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
                    let (name, line) = (open.name.clone(), open.line);
                    self.decode(&name, line, &buf)?;
                }
                continue;
            }
            match memchr::memrchr(b'\n', &buf) {
                None => open.carry = buf,
                Some(last) => {
                    open.carry = buf[last + 1..].to_vec();
                    let block = &buf[..=last];
                    let first = open.line;
                    open.line += memchr::memchr_iter(b'\n', block).count() as u64;
                    let name = open.name.clone();
                    self.current = Some(open);
                    self.decode(&name, first, block)?;
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
    dir: PathBuf,
}

impl OperatorFactory for FileSinkFactory {
    fn name(&self) -> String {
        format!("Sink: filesystem({})", self.dir.display())
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| SluiceError::io(self.dir.display().to_string(), e))?;
        let unique = format!(
            "{:x}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let final_path = self
            .dir
            .join(format!("part-{unique}-{}-0", ctx.subtask_index));
        let in_progress = self
            .dir
            .join(format!(".part-{unique}-{}-0.inprogress", ctx.subtask_index));
        Ok(Box::new(FileSink {
            encoder: format::encoder(
                &self.format,
                self.spec.schema.clone(),
                &self.spec.options,
                &self.spec.time_zone,
            )?,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            file: None,
            in_progress,
            final_path,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
        }))
    }
}

/// Writes one part file per subtask; the file is hidden (`.part-...inprogress`) until the sink
/// closes, then renamed into place, so a reader never sees a half-written file.
struct FileSink {
    encoder: Box<dyn LineEncoder>,
    buffer: Vec<u8>,
    file: Option<File>,
    in_progress: PathBuf,
    final_path: PathBuf,
    rows: Arc<AtomicU64>,
}

impl FileSink {
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let f = File::create(&self.in_progress)
                .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))?;
            self.file = Some(f);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(&self.buffer)
                .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))?;
        }
        self.buffer.clear();
        Ok(())
    }
}

impl Operator for FileSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        self.encoder.encode(&batch.data, &mut self.buffer)?;
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn process_watermark(&mut self, _watermark: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()?;
        if let Some(f) = self.file.take() {
            f.sync_all()
                .map_err(|e| SluiceError::io(self.in_progress.display().to_string(), e))?;
            std::fs::rename(&self.in_progress, &self.final_path)
                .map_err(|e| SluiceError::io(self.final_path.display().to_string(), e))?;
        }
        Ok(())
    }
}
