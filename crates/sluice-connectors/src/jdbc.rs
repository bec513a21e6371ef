//! Flink's `jdbc` sink, for PostgreSQL: rows are buffered and written in batches, one database
//! transaction per flush. A table with a `PRIMARY KEY` gets upserts
//! (`INSERT ... ON CONFLICT (key) DO UPDATE`) and deletes, the buffer keeping only the last
//! change per key, as Flink's reduced buffer; a table without one gets inserts (and refuses an
//! updating query at planning time). A failed flush reconnects and retries the whole
//! transaction, so a restart of the database loses and duplicates nothing.
//!
//! Values travel as text and are cast to each column's own type by the database, so every
//! PostgreSQL type that reads the text form of Sluice's values works.
//!
//! With checkpointing on, the sink is exactly-once (two-phase commit): the changes between
//! two barriers are held, put into the checkpoint at the barrier, and written in one
//! transaction when the checkpoint completes. The same transaction records the checkpoint id
//! in the table `sluice_checkpoints` (per job, sink table and subtask), so a commit replayed
//! after a crash and a restore finds its id there and writes nothing twice.

use crate::Connector;
use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls};
use sluice_common::{ChangeBatch, CheckpointId, Options, Result, RowKind, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{
    LookupFactory, LookupSpec, Operator, OperatorFactory, Output, SinkSpec, StateReader,
    StateWriter, SubtaskContext,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const OPTIONS: &[&str] = &[
    "connector",
    "url",
    "table-name",
    "driver",
    "username",
    "password",
    "connection.max-retry-timeout",
    "sink.buffer-flush.max-rows",
    "sink.buffer-flush.interval",
    "sink.max-retries",
    "sink.parallelism",
];

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a failed connection when the job starts.
const CONNECT_RETRIES: u32 = 3;
/// Batches the sink hands its writer thread before it waits (the backpressure).
const WRITER_QUEUE_BATCHES: usize = 4;

/// The `jdbc` connector (PostgreSQL).
pub struct JdbcConnector;

/// The checked options of a `jdbc` table.
#[derive(Debug, Clone)]
pub(crate) struct JdbcOptions {
    pub(crate) owner: String,
    config: Config,
    pub(crate) url: String,
    pub(crate) table: String,
    max_rows: usize,
    interval: Option<Duration>,
    max_retries: u32,
}

/// `jdbc:postgresql://host[:port][/database][?user=..&password=..]`.
fn parse_url(owner: &str, url: &str, config: &mut Config) -> Result<()> {
    let bad = |why: &str| {
        SluiceError::Config(format!(
            "{owner}: option 'url' = '{url}' {why}; expected jdbc:postgresql://host:port/database"
        ))
    };
    let rest = url
        .strip_prefix("jdbc:postgresql://")
        .ok_or_else(|| bad("is not a PostgreSQL JDBC URL (only PostgreSQL is supported)"))?;
    let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (hostport, db) = addr.split_once('/').unwrap_or((addr, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("has a bad port"))?),
        None => (hostport, 5432),
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    config.host(host).port(port);
    if !db.is_empty() {
        config.dbname(db);
    }
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("user", v)) => {
                config.user(v);
            }
            Some(("password", v)) => {
                config.password(v);
            }
            _ => {}
        }
    }
    Ok(())
}

impl JdbcOptions {
    pub(crate) fn parse(options: &Options) -> Result<Self> {
        let known: Vec<&str> = OPTIONS
            .iter()
            .chain(crate::jdbc_lookup::LOOKUP_OPTIONS)
            .copied()
            .collect();
        options.check_known(&known, &[])?;
        let owner = options.owner.clone();
        let url = options.required("url")?.to_string();
        let mut config = Config::new();
        config.connect_timeout(CONNECT_TIMEOUT);
        config.user(&std::env::var("USER").unwrap_or_else(|_| "postgres".into()));
        parse_url(&owner, &url, &mut config)?;
        if let Some(u) = options.get("username") {
            config.user(u);
        }
        if let Some(p) = options.get("password") {
            config.password(p);
        }
        let max_rows = match options.i64("sink.buffer-flush.max-rows")? {
            Some(n) if n > 0 => n as usize,
            Some(_) => 1,
            None => 100,
        };
        let interval = match options.duration("sink.buffer-flush.interval")? {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => Some(Duration::from_secs(1)),
        };
        let max_retries = options.i64("sink.max-retries")?.unwrap_or(3).max(0) as u32;
        Ok(JdbcOptions {
            owner,
            config,
            url,
            table: options.required("table-name")?.to_string(),
            max_rows,
            interval,
            max_retries,
        })
    }

    /// Connects, retrying `CONNECT_RETRIES` times with a growing wait (1 s, 2 s, 4 s).
    pub(crate) fn connect(&self) -> Result<Client> {
        let mut wait = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            match self.config.connect(NoTls) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let message = format!(
                        "{}: cannot connect to PostgreSQL at '{}': {e}",
                        self.owner, self.url
                    );
                    if attempt >= CONNECT_RETRIES {
                        return Err(SluiceError::Runtime(message));
                    }
                    tracing::warn!("{message}; retrying in {} s", wait.as_secs());
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

/// A column of the database table.
pub(crate) struct DbColumn {
    pub(crate) name: String,
    /// `format_type` of the column, e.g. `integer`, `character varying(20)`.
    pub(crate) type_name: String,
}

/// Reads the database table's columns and the unique keys it has.
pub(crate) fn describe_table(
    client: &mut Client,
    o: &JdbcOptions,
) -> Result<(Vec<DbColumn>, Vec<Vec<String>>)> {
    let missing = |e: postgres::Error| {
        SluiceError::Plan(format!(
            "{}: cannot read table '{}' in the database at '{}': {}",
            o.owner,
            o.table,
            o.url,
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        ))
    };
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&o.table],
        )
        .map_err(missing)?;
    let columns = rows
        .iter()
        .map(|r| DbColumn {
            name: r.get(0),
            type_name: r.get(1),
        })
        .collect();
    let keys = client
        .query(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisunique GROUP BY i.indexrelid",
            &[&o.table],
        )
        .map_err(missing)?
        .iter()
        .map(|r| r.get::<_, Vec<String>>(0))
        .collect();
    Ok((columns, keys))
}

/// The database type of each of `schema`'s columns; an error names a column the database
/// table does not have or whose type cannot hold Sluice's.
pub(crate) fn database_types(
    schema: &SchemaRef,
    db_columns: &[DbColumn],
    o: &JdbcOptions,
) -> Result<Vec<String>> {
    let mut types = Vec::new();
    for f in schema.fields() {
        let Some(c) = db_columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(f.name()))
        else {
            return Err(SluiceError::Plan(format!(
                "{}: column '{}' does not exist in database table '{}'; its columns are: {}",
                o.owner,
                f.name(),
                o.table,
                db_columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if !compatible(f.data_type(), &c.type_name) {
            return Err(SluiceError::Plan(format!(
                "{}: column '{}' is {} in Sluice but {} in database table '{}'",
                o.owner,
                f.name(),
                sluice_type_name(f.data_type()),
                c.type_name,
                o.table
            )));
        }
        types.push(c.type_name.clone());
    }
    Ok(types)
}

/// Whether PostgreSQL type `db` can hold values of `t`.
fn compatible(t: &DataType, db: &str) -> bool {
    let db = db.to_ascii_lowercase();
    let numeric = [
        "smallint",
        "integer",
        "bigint",
        "numeric",
        "real",
        "double precision",
    ];
    let is = |names: &[&str]| names.iter().any(|n| db.starts_with(n));
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => is(&numeric),
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            is(&["numeric", "real", "double precision"])
        }
        DataType::Boolean => is(&["boolean"]),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => is(&[
            "text",
            "character",
            "json",
            "jsonb",
            "uuid",
            "name",
            "citext",
        ]),
        DataType::Date32 => is(&["date", "timestamp"]),
        DataType::Timestamp(..) => is(&["timestamp"]),
        DataType::Time32(_) | DataType::Time64(_) => is(&["time"]),
        DataType::Binary | DataType::LargeBinary => is(&["bytea"]),
        _ => false,
    }
}

impl Connector for JdbcConnector {
    fn name(&self) -> &'static str {
        "jdbc"
    }

    fn lookup(&self, spec: &LookupSpec) -> Result<Arc<dyn LookupFactory>> {
        Ok(Arc::new(crate::jdbc_lookup::JdbcLookupFactory::new(spec)?))
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let o = JdbcOptions::parse(&spec.options)?;
        let key: Vec<usize> = spec.primary_key.clone();
        if spec.updating && key.is_empty() {
            return Err(SluiceError::Plan(format!(
                "table '{}': the query produces updates, so the jdbc sink needs a PRIMARY KEY (...) NOT ENFORCED to apply them as upserts and deletes",
                spec.table
            )));
        }
        // Refuse a table that does not fit before the job starts.
        let mut client = o.connect().map_err(|e| SluiceError::Plan(e.to_string()))?;
        let (db_columns, unique_keys) = describe_table(&mut client, &o)?;
        if db_columns.is_empty() {
            return Err(SluiceError::Plan(format!(
                "{}: table '{}' has no columns in the database",
                o.owner, o.table
            )));
        }
        let types = database_types(&spec.schema, &db_columns, &o)?;
        if !key.is_empty() {
            let mut names: Vec<String> = key
                .iter()
                .map(|&i| spec.schema.field(i).name().to_ascii_lowercase())
                .collect();
            names.sort();
            let has_unique = unique_keys.iter().any(|k| {
                let mut k: Vec<String> = k.iter().map(|s| s.to_ascii_lowercase()).collect();
                k.sort();
                k == names
            });
            if !has_unique {
                return Err(SluiceError::Plan(format!(
                    "{}: the PRIMARY KEY ({}) is not a primary key or unique constraint of database table '{}', so rows cannot be upserted; add one (ALTER TABLE {} ADD PRIMARY KEY ({}))",
                    o.owner,
                    names.join(", "),
                    o.table,
                    o.table,
                    names.join(", ")
                )));
            }
        }
        let statements = Statements::new(&o.table, &spec.schema, &types, &key);
        Ok(Arc::new(JdbcSinkFactory {
            options: o,
            schema: spec.schema.clone(),
            key,
            statements,
            table: spec.table.clone(),
        }))
    }
}

fn sluice_type_name(t: &DataType) -> String {
    match t {
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP_LTZ".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        other => other.to_string(),
    }
}

/// The SQL the sink runs: values arrive as text arrays (one per column) and are cast by the
/// database to each column's type.
#[derive(Debug, Clone)]
struct Statements {
    /// Insert, or upsert when there is a key.
    write: String,
    /// Delete by key (empty without a key).
    delete: String,
}

impl Statements {
    fn new(table: &str, schema: &SchemaRef, types: &[String], key: &[usize]) -> Self {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let unnest = |cols: &[usize]| {
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}::text[]")).collect();
            let aliases: Vec<String> = (0..cols.len()).map(|i| format!("c{i}")).collect();
            let casts: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, &c)| format!("CAST(u.c{i} AS {})", types[c]))
                .collect();
            format!(
                "SELECT {} FROM unnest({}) AS u({})",
                casts.join(", "),
                params.join(", "),
                aliases.join(", ")
            )
        };
        let all: Vec<usize> = (0..names.len()).collect();
        let mut write = format!(
            "INSERT INTO {table} ({}) {}",
            names.join(", "),
            unnest(&all)
        );
        let mut delete = String::new();
        if !key.is_empty() {
            let key_names: Vec<&str> = key.iter().map(|&i| names[i]).collect();
            let rest: Vec<String> = (0..names.len())
                .filter(|i| !key.contains(i))
                .map(|i| format!("{0} = EXCLUDED.{0}", names[i]))
                .collect();
            write.push_str(&format!(" ON CONFLICT ({}) ", key_names.join(", ")));
            if rest.is_empty() {
                write.push_str("DO NOTHING");
            } else {
                write.push_str(&format!("DO UPDATE SET {}", rest.join(", ")));
            }
            delete = format!(
                "DELETE FROM {table} WHERE ({}) IN ({})",
                key_names.join(", "),
                unnest(key)
            );
        }
        Statements { write, delete }
    }
}

struct JdbcSinkFactory {
    options: JdbcOptions,
    schema: SchemaRef,
    key: Vec<usize>,
    statements: Statements,
    table: String,
}

impl OperatorFactory for JdbcSinkFactory {
    fn name(&self) -> String {
        format!("Sink: jdbc({})", self.options.table)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let (tx, rx) = sync_channel(WRITER_QUEUE_BATCHES);
        let committed = Arc::new(AtomicU64::new(0));
        let marker = CommitMarker {
            job: ctx.job_name.clone(),
            sink: self.options.table.clone(),
            subtask: ctx.subtask_index as i32,
            run: format!(
                "{:x}-{:x}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ),
        };
        let writer = Writer {
            committed: committed.clone(),
            marker: marker.clone(),
            options: self.options.clone(),
            statements: self.statements.clone(),
            columns: self.schema.fields().len(),
            key: self.key.clone(),
            client: None,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.table)),
            errors: ctx.sink_errors(),
            pending: Pending::default(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("jdbc-sink-{}", ctx.subtask_index))
            .spawn(move || writer.run(rx))
            .map_err(|e| SluiceError::io("cannot start the jdbc writer thread", e))?;
        Ok(Box::new(JdbcSink {
            tx: Some(tx),
            handle: Some(handle),
            key: self.key.clone(),
            owner: self.options.owner.clone(),
            exactly_once: ctx.checkpointing,
            current: Vec::new(),
            uncommitted: BTreeMap::new(),
            committed,
            marker,
            parallelism: ctx.parallelism,
            last_checkpoint: 0,
            ended: false,
        }))
    }
}

/// Changes pre-committed and not yet committed, by checkpoint.
type Uncommitted = BTreeMap<CheckpointId, Vec<Change>>;

/// What an exactly-once subtask's snapshot holds: its run and its pre-committed changes
/// (`None`: it was not exactly-once).
fn read_uncommitted(state: &mut StateReader<'_>) -> Result<Option<(String, Uncommitted)>> {
    if state.is_empty() {
        return Ok(None);
    }
    let run = state.str()?.to_string();
    let mut uncommitted = BTreeMap::new();
    for _ in 0..state.count()? {
        let id = state.u64()?;
        let mut changes = Vec::new();
        for _ in 0..state.count()? {
            let kind = state.u64()?;
            let mut row = Vec::new();
            for _ in 0..state.count()? {
                let present = state.bool()?;
                let v = state.str()?;
                row.push(present.then(|| v.to_string()));
            }
            changes.push(if kind == 1 {
                Change::Delete(row)
            } else {
                Change::Upsert(row)
            });
        }
        uncommitted.insert(id, changes);
    }
    Ok(Some((run, uncommitted)))
}

/// One row as text (`None` for NULL).
type TextRow = Vec<Option<String>>;

/// A change waiting to be written.
#[derive(Debug, Clone)]
enum Change {
    Upsert(TextRow),
    Delete(TextRow),
}

/// What the sink hands its writer thread.
enum WriterMsg {
    /// Write these (at-least-once: flushed by size and interval).
    Changes(Vec<Change>),
    /// Write each checkpoint's changes in one transaction, with its id, as the subtask and
    /// run named first (exactly-once).
    Commit(CommitAs, Vec<(CheckpointId, Vec<Change>)>),
}

/// The subtask and run a checkpoint's changes are recorded under in `sluice_checkpoints`
/// (after a restore at another parallelism, a subtask also commits for old subtasks).
type CommitAs = (i32, String);

/// Who commits: the row of `sluice_checkpoints` that records the last committed checkpoint.
/// `run` tells one run of the job (and its restores) from a run started from scratch, whose
/// checkpoint ids begin again at 1.
#[derive(Debug, Clone)]
struct CommitMarker {
    job: String,
    sink: String,
    subtask: i32,
    run: String,
}

struct JdbcSink {
    tx: Option<SyncSender<WriterMsg>>,
    handle: Option<JoinHandle<Result<()>>>,
    key: Vec<usize>,
    owner: String,
    /// Checkpointing is on: changes are written only when their checkpoint completes.
    exactly_once: bool,
    /// Changes since the last barrier.
    current: Vec<Change>,
    /// Changes of checkpoints taken but not yet committed.
    uncommitted: Uncommitted,
    /// The last checkpoint the writer has committed.
    committed: Arc<AtomicU64>,
    marker: CommitMarker,
    parallelism: usize,
    last_checkpoint: CheckpointId,
    /// The input has ended; its last changes wait for the final checkpoint.
    ended: bool,
}

fn text_columns(batch: &ChangeBatch) -> Result<Vec<Vec<Option<String>>>> {
    let opts = FormatOptions::default();
    let mut out = Vec::with_capacity(batch.data.num_columns());
    for col in batch.data.columns() {
        out.push(text_values(col, &opts)?);
    }
    Ok(out)
}

/// Each value of `col` in PostgreSQL's text input form.
fn text_values(col: &ArrayRef, opts: &FormatOptions<'_>) -> Result<Vec<Option<String>>> {
    if matches!(col.data_type(), DataType::Binary | DataType::LargeBinary) {
        let f = ArrayFormatter::try_new(col.as_ref(), opts)?;
        return Ok((0..col.len())
            .map(|i| col.is_valid(i).then(|| format!("\\x{}", f.value(i))))
            .collect());
    }
    let f = ArrayFormatter::try_new(col.as_ref(), opts)?;
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| f.value(i).to_string()))
        .collect())
}

impl JdbcSink {
    fn send(&mut self, msg: WriterMsg) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(msg).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.writer_failed());
        }
        Ok(())
    }

    /// Hands the writer every uncommitted checkpoint up to `checkpoint`.
    fn commit_up_to(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let sent = self.committed.load(Ordering::SeqCst);
        let batch: Vec<(CheckpointId, Vec<Change>)> = self
            .uncommitted
            .range(sent + 1..=checkpoint)
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let by = (self.marker.subtask, self.marker.run.clone());
        self.send(WriterMsg::Commit(by, batch))
    }

    fn writer_failed(&mut self) -> SluiceError {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            _ => SluiceError::Runtime(format!("{}: the jdbc writer stopped", self.owner)),
        }
    }
}

impl Operator for JdbcSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let columns = text_columns(&batch)?;
        let mut changes = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let row: TextRow = columns.iter().map(|c| c[i].clone()).collect();
            match batch.kind(i) {
                RowKind::Insert | RowKind::UpdateAfter => changes.push(Change::Upsert(row)),
                // As Flink's JDBC sink: a retraction deletes the key's row. An update's +U
                // follows its -U and writes the row again (the last change of a key wins);
                // a row that a filter after an aggregate (HAVING) no longer passes has only
                // its -U. Without a key an update cannot happen (refused at planning).
                RowKind::Delete | RowKind::UpdateBefore if !self.key.is_empty() => {
                    changes.push(Change::Delete(row))
                }
                RowKind::UpdateBefore | RowKind::Delete => {}
            }
        }
        if self.exactly_once {
            self.current.extend(changes);
            return Ok(());
        }
        self.send(WriterMsg::Changes(changes))
    }

    fn snapshot_state(&mut self, checkpoint: CheckpointId, state: &mut StateWriter) -> Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        if !self.ended {
            self.last_checkpoint = checkpoint;
            let changes = std::mem::take(&mut self.current);
            self.uncommitted.insert(checkpoint, changes);
        }
        // Forget what the writer has committed.
        let committed = self.committed.load(Ordering::SeqCst);
        self.uncommitted.retain(|id, _| *id > committed);
        state.put_str(&self.marker.run);
        state.put_u64(self.uncommitted.len() as u64);
        for (id, changes) in &self.uncommitted {
            state.put_u64(*id);
            state.put_u64(changes.len() as u64);
            for c in changes {
                let (kind, row) = match c {
                    Change::Upsert(r) => (0, r),
                    Change::Delete(r) => (1, r),
                };
                state.put_u64(kind);
                state.put_u64(row.len() as u64);
                for v in row {
                    state.put_bool(v.is_some());
                    state.put_str(v.as_deref().unwrap_or_default());
                }
            }
        }
        Ok(())
    }

    fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        let Some((run, uncommitted)) = read_uncommitted(state)? else {
            return Ok(());
        };
        // The restored run goes on: its commits are checked against the same marker.
        self.marker.run = run;
        for (id, changes) in uncommitted {
            self.last_checkpoint = self.last_checkpoint.max(id);
            self.uncommitted.insert(id, changes);
        }
        // The checkpoint restored from is complete: commit what it had pre-committed (the
        // database skips what it already has).
        self.commit_up_to(self.last_checkpoint)
    }

    /// At another parallelism, old subtask `j` goes to new subtask `j % parallelism`: this
    /// one commits what `j` had pre-committed, recorded as `j`'s (so that a commit the
    /// database already has is skipped), and goes on with its own marker.
    fn restore_rescaled(
        &mut self,
        _old: usize,
        states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        let me = self.marker.subtask as usize;
        for (j, state) in states.iter_mut() {
            if *j == me {
                self.restore_state(state)?;
                continue;
            }
            let Some((run, uncommitted)) = read_uncommitted(state)? else {
                continue;
            };
            self.last_checkpoint = self
                .last_checkpoint
                .max(uncommitted.keys().next_back().copied().unwrap_or(0));
            if *j % self.parallelism == me && !uncommitted.is_empty() {
                let batch = uncommitted.into_iter().collect();
                self.send(WriterMsg::Commit((*j as i32, run), batch))?;
            }
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        if self.exactly_once {
            self.commit_up_to(checkpoint)?;
        }
        Ok(())
    }

    /// The end of the input pre-commits the last changes under the id after the last
    /// checkpoint; the final checkpoint (which holds them in this subtask's final state)
    /// commits them.
    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        if self.exactly_once {
            let id = self.last_checkpoint + 1;
            self.last_checkpoint = id;
            let changes = std::mem::take(&mut self.current);
            self.uncommitted.insert(id, changes);
            self.ended = true;
        }
        Ok(())
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(SluiceError::Runtime(format!(
                "{}: the jdbc writer panicked",
                self.owner
            ))),
            None => Ok(()),
        }
    }
}

/// The rows waiting for the next flush: for a keyed table, the last change per key.
#[derive(Default)]
struct Pending {
    appends: Vec<TextRow>,
    by_key: HashMap<Vec<Option<String>>, Change>,
    /// Changes taken since the last flush (the flush threshold counts them, as Flink's).
    count: usize,
}

/// The thread that owns the database connection.
struct Writer {
    options: JdbcOptions,
    statements: Statements,
    columns: usize,
    key: Vec<usize>,
    client: Option<Client>,
    rows: Arc<AtomicU64>,
    /// The rows of every failed write attempt.
    errors: SinkErrors,
    pending: Pending,
    /// The last checkpoint committed (exactly-once).
    committed: Arc<AtomicU64>,
    marker: CommitMarker,
}

/// The table that records each exactly-once sink's last committed checkpoint.
const CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS sluice_checkpoints (job TEXT NOT NULL, sink TEXT NOT NULL, subtask INT NOT NULL, run_id TEXT NOT NULL, checkpoint_id BIGINT NOT NULL, PRIMARY KEY (job, sink, subtask))";

/// True if retrying cannot help: the data itself is rejected.
fn is_data_error(e: &postgres::Error) -> bool {
    e.code()
        .map(|c| {
            let code = c.code();
            code.starts_with("22") || code.starts_with("23") || code.starts_with("42")
        })
        .unwrap_or(false)
}

impl Writer {
    fn run(mut self, rx: Receiver<WriterMsg>) -> Result<()> {
        let mut last_flush = Instant::now();
        loop {
            let wait = match self.options.interval {
                Some(i) => i.saturating_sub(last_flush.elapsed()),
                None => Duration::from_secs(3600),
            };
            match rx.recv_timeout(wait) {
                Ok(WriterMsg::Commit(by, checkpoints)) => {
                    for (id, changes) in checkpoints {
                        for c in changes {
                            self.add(c);
                        }
                        self.flush_checkpoint(&by, id)?;
                        self.committed.fetch_max(id, Ordering::SeqCst);
                    }
                }
                Ok(WriterMsg::Changes(changes)) => {
                    for c in changes {
                        self.add(c);
                    }
                    if self.pending.count >= self.options.max_rows {
                        self.flush()?;
                        last_flush = Instant::now();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush()?;
                    last_flush = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => return self.flush(),
            }
        }
    }

    fn add(&mut self, change: Change) {
        self.pending.count += 1;
        if self.key.is_empty() {
            if let Change::Upsert(row) = change {
                self.pending.appends.push(row);
            }
            return;
        }
        let row = match &change {
            Change::Upsert(r) | Change::Delete(r) => r,
        };
        let key: Vec<Option<String>> = self.key.iter().map(|&i| row[i].clone()).collect();
        self.pending.by_key.insert(key, change);
    }

    /// Writes what is pending in one transaction, retrying after a reconnect.
    fn flush(&mut self) -> Result<()> {
        if self.pending.count == 0 {
            return Ok(());
        }
        self.write_pending(None)
    }

    /// Writes what is pending as checkpoint `id` of `by` (subtask and run): in one
    /// transaction that also records the id, and not at all if the database already has it.
    fn flush_checkpoint(&mut self, by: &CommitAs, id: CheckpointId) -> Result<()> {
        self.write_pending(Some((by.clone(), id)))
    }

    fn write_pending(&mut self, checkpoint: Option<(CommitAs, CheckpointId)>) -> Result<()> {
        if self.pending.count == 0 {
            // Nothing to write, so nothing that could be written twice.
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut upserts: Vec<&TextRow> = pending.appends.iter().collect();
        let mut deletes: Vec<&TextRow> = Vec::new();
        for c in pending.by_key.values() {
            match c {
                Change::Upsert(r) => upserts.push(r),
                Change::Delete(r) => deletes.push(r),
            }
        }
        let write_params = columns_of(&upserts, &(0..self.columns).collect::<Vec<_>>());
        let delete_params = columns_of(&deletes, &self.key);
        let written = (upserts.len() + deletes.len()) as u64;
        let mut attempt = 0;
        loop {
            match self.try_flush(&write_params, &delete_params, checkpoint.as_ref()) {
                Ok(true) => break,
                Ok(false) => {
                    tracing::info!(
                        "{}: checkpoint {} was already committed to table '{}'; skipping its {written} rows",
                        self.options.owner,
                        checkpoint.as_ref().map(|c| c.1).unwrap_or(0),
                        self.options.table
                    );
                    return Ok(());
                }
                Err(e) if attempt >= self.options.max_retries || is_data_error(&e) => {
                    self.errors.add(written);
                    return Err(SluiceError::Runtime(format!(
                        "{}: cannot write {written} rows to table '{}' after {} attempts: {}",
                        self.options.owner,
                        self.options.table,
                        attempt + 1,
                        e.as_db_error()
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| e.to_string())
                    )));
                }
                Err(e) => {
                    self.errors.add(written);
                    attempt += 1;
                    let backoff = Duration::from_secs(attempt as u64);
                    tracing::warn!(
                        "{}: writing to table '{}' failed ({e}); reconnecting and retrying in {} s (attempt {attempt} of {})",
                        self.options.owner,
                        self.options.table,
                        backoff.as_secs(),
                        self.options.max_retries
                    );
                    self.client = None;
                    std::thread::sleep(backoff);
                }
            }
        }
        self.rows.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    /// One attempt; `Ok(false)`: the checkpoint was committed before, nothing was written.
    fn try_flush(
        &mut self,
        write_params: &[Vec<Option<&str>>],
        delete_params: &[Vec<Option<&str>>],
        checkpoint: Option<&(CommitAs, CheckpointId)>,
    ) -> std::result::Result<bool, postgres::Error> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let mut client = self.options.config.connect(NoTls)?;
            if checkpoint.is_some() {
                if let Err(e) = client.batch_execute(CHECKPOINT_TABLE) {
                    // Two subtasks creating it at once: one wins, which is all we need.
                    if !e
                        .code()
                        .is_some_and(|c| c.code() == "23505" || c.code() == "42P07")
                    {
                        return Err(e);
                    }
                }
            }
            self.client = Some(client);
        }
        let Some(client) = self.client.as_mut() else {
            unreachable!("connected above");
        };
        let mut tx = client.transaction()?;
        if let Some(((subtask, run), id)) = checkpoint {
            let m = &self.marker;
            let row = tx.query_opt(
                "SELECT run_id, checkpoint_id FROM sluice_checkpoints WHERE job = $1 AND sink = $2 AND subtask = $3 FOR UPDATE",
                &[&m.job, &m.sink, subtask],
            )?;
            if let Some(row) = row {
                let (done_run, done_id): (String, i64) = (row.get(0), row.get(1));
                if done_run == *run && done_id >= *id as i64 {
                    tx.rollback()?;
                    return Ok(false);
                }
            }
            tx.execute(
                "INSERT INTO sluice_checkpoints (job, sink, subtask, run_id, checkpoint_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job, sink, subtask) DO UPDATE SET run_id = EXCLUDED.run_id, checkpoint_id = EXCLUDED.checkpoint_id",
                &[&m.job, &m.sink, subtask, run, &(*id as i64)],
            )?;
        }
        if !write_params[0].is_empty() {
            let params: Vec<&(dyn ToSql + Sync)> = write_params
                .iter()
                .map(|c| c as &(dyn ToSql + Sync))
                .collect();
            tx.execute(self.statements.write.as_str(), &params)?;
        }
        if !delete_params.is_empty() && !delete_params[0].is_empty() {
            let params: Vec<&(dyn ToSql + Sync)> = delete_params
                .iter()
                .map(|c| c as &(dyn ToSql + Sync))
                .collect();
            tx.execute(self.statements.delete.as_str(), &params)?;
        }
        tx.commit()?;
        Ok(true)
    }
}

/// The values of `cols` of `rows`, column by column (the statements' array parameters).
fn columns_of<'a>(rows: &[&'a TextRow], cols: &[usize]) -> Vec<Vec<Option<&'a str>>> {
    cols.iter()
        .map(|&c| rows.iter().map(|r| r[c].as_deref()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn parses_jdbc_urls() {
        let mut c = Config::new();
        parse_url(
            "t",
            "jdbc:postgresql://db.local:5433/shop?user=u&password=p",
            &mut c,
        )
        .unwrap();
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_dbname(), Some("shop"));
        assert_eq!(c.get_user(), Some("u"));
        let e = parse_url("t", "jdbc:mysql://h/db", &mut Config::new()).unwrap_err();
        assert!(e.to_string().contains("only PostgreSQL"), "{e}");
    }

    #[test]
    fn upsert_and_delete_statements() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("page", DataType::Utf8, true),
            Field::new("views", DataType::Int64, true),
        ]));
        let types = vec!["text".to_string(), "bigint".to_string()];
        let s = Statements::new("totals", &schema, &types, &[0]);
        assert_eq!(
            s.write,
            "INSERT INTO totals (page, views) SELECT CAST(u.c0 AS text), CAST(u.c1 AS bigint) FROM unnest($1::text[], $2::text[]) AS u(c0, c1) ON CONFLICT (page) DO UPDATE SET views = EXCLUDED.views"
        );
        assert_eq!(
            s.delete,
            "DELETE FROM totals WHERE (page) IN (SELECT CAST(u.c0 AS text) FROM unnest($1::text[]) AS u(c0))"
        );
        let append = Statements::new("totals", &schema, &types, &[]);
        assert!(!append.write.contains("ON CONFLICT"));
    }

    #[test]
    fn checks_types() {
        assert!(compatible(&DataType::Int64, "bigint"));
        assert!(compatible(&DataType::Utf8, "character varying(20)"));
        assert!(!compatible(&DataType::Utf8, "integer"));
        assert!(compatible(
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
            "timestamp(3) without time zone"
        ));
    }
}
