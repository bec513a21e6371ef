//! The `postgres-cdc` source (Flink CDC's options): a PostgreSQL table read whole (the
//! initial snapshot), then its changes from a logical replication slot (`pgoutput`), as a
//! changelog with the table's primary key.
//!
//! The changes are read over an ordinary connection with
//! `pg_logical_slot_peek_binary_changes`: the slot is advanced
//! (`pg_replication_slot_advance`) only when a checkpoint that covers them completes, and
//! the commit LSN of the last transaction handed on is in the checkpoint, so a restore
//! neither loses nor repeats a change. The snapshot is read in a `REPEATABLE READ`
//! transaction begun after the slot exists; a streamed transaction that snapshot already saw
//! is skipped, so every change is in the snapshot or in the stream, once. Checkpoints are
//! declined while the snapshot is read (it cannot be resumed), as Flink CDC holds them back.
//!
//! `schema-name` and `table-name` are regular expressions over whole names, as Flink CDC's:
//! every matching table is read (one after the other in the snapshot, all in the stream) into
//! the one Sluice table, so tables of the same columns (shards) become one changelog.
//!
//! Metadata columns (`... METADATA FROM 'op_ts' VIRTUAL`), as Flink CDC's: `database_name`,
//! `schema_name`, `table_name`, `op_ts` (the commit time of the change's transaction; the
//! epoch for a row of the snapshot) and `row_kind` (`+I`, `-U`, `+U`, `-D`).

pub mod pgoutput;

use crate::format::{self, LineDecoder};
use crate::Connector;
use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use pgoutput::{Datum, Message, OldRow, Relation, Snapshot};
use postgres::{Client, Config, NoTls};
use regex::Regex;
use serde_json::{Map, Value};
use sluice_common::{ChangeBatch, CheckpointId, Options, Result, RowKind, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const OPTIONS: &[&str] = &[
    "connector",
    "hostname",
    "port",
    "username",
    "password",
    "database-name",
    "schema-name",
    "table-name",
    "slot.name",
    "decoding.plugin.name",
    "debezium.publication.name",
    "scan.startup.mode",
    "changelog-mode",
];

/// Rows read from the snapshot per poll.
const SNAPSHOT_FETCH: usize = 8192;

/// Messages asked of the slot at first per poll (doubled while they hold nothing new).
const PEEK_CHANGES: i32 = 10_000;

/// The `postgres-cdc` connector.
pub struct PostgresCdcConnector;

/// The metadata a `postgres-cdc` table can read.
const METADATA: &[&str] = &[
    "database_name",
    "schema_name",
    "table_name",
    "op_ts",
    "row_kind",
];

/// Milliseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_MS: i64 = 946_684_800_000;

impl Connector for PostgresCdcConnector {
    fn name(&self) -> &'static str {
        "postgres-cdc"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), METADATA)?;
        let o = &spec.options;
        o.check_known(OPTIONS, &[])?;
        let plugin = o.string("decoding.plugin.name", "pgoutput");
        if plugin != "pgoutput" {
            return Err(SluiceError::Config(format!(
                "{}: option 'decoding.plugin.name' = '{plugin}': Sluice reads 'pgoutput' (built into PostgreSQL 10 and later)",
                o.owner
            )));
        }
        let upsert = match o.string("changelog-mode", "all").as_str() {
            "all" => false,
            "upsert" => true,
            other => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'changelog-mode' = '{other}': expected 'all' or 'upsert'",
                    o.owner
                )))
            }
        };
        let initial = match o.string("scan.startup.mode", "initial").as_str() {
            "initial" => true,
            "latest-offset" => false,
            other => {
                return Err(SluiceError::Config(format!(
                "{}: option 'scan.startup.mode' = '{other}': expected 'initial' or 'latest-offset'",
                o.owner
            )))
            }
        };
        if spec.primary_key.is_empty() {
            return Err(SluiceError::Config(format!(
                "{}: a postgres-cdc table needs the PRIMARY KEY (...) NOT ENFORCED of the PostgreSQL table",
                o.owner
            )));
        }
        let mut config = Config::new();
        let port = o.i64("port")?.unwrap_or(5432);
        config
            .host(o.required("hostname")?)
            .port(u16::try_from(port).map_err(|_| {
                SluiceError::Config(format!(
                    "{}: option 'port' = '{port}' is not a port",
                    o.owner
                ))
            })?)
            .user(o.required("username")?)
            .password(o.string("password", ""))
            .dbname(o.required("database-name")?)
            .connect_timeout(Duration::from_secs(10));
        Ok(Arc::new(CdcFactory {
            spec: spec.clone(),
            cdc: Arc::new(Cdc {
                owner: o.owner.clone(),
                config,
                address: format!(
                    "{}:{port}/{}",
                    o.required("hostname")?,
                    o.required("database-name")?
                ),
                database: o.required("database-name")?.to_string(),
                schema: o.required("schema-name")?.to_string(),
                table: o.required("table-name")?.to_string(),
                schema_pattern: whole_name(o, "schema-name")?,
                table_pattern: whole_name(o, "table-name")?,
                slot: o.required("slot.name")?.to_string(),
                publication: o.string("debezium.publication.name", "dbz_publication"),
                initial,
                upsert,
                key: spec.primary_key.clone(),
            }),
        }))
    }
}

/// Option `name` as a regular expression over whole names.
fn whole_name(o: &Options, name: &str) -> Result<Regex> {
    let pattern = o.required(name)?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        SluiceError::Config(format!(
            "{}: option '{name}' = '{pattern}' is not a valid regular expression: {e}",
            o.owner
        ))
    })
}

/// A PostgreSQL table: its schema and name.
type TableName = Arc<(String, String)>;

/// What every reader of the table needs to know.
struct Cdc {
    owner: String,
    config: Config,
    address: String,
    database: String,
    /// The `schema-name` and `table-name` options, and the regular expressions they are.
    schema: String,
    table: String,
    schema_pattern: Regex,
    table_pattern: Regex,
    slot: String,
    publication: String,
    initial: bool,
    upsert: bool,
    /// The table's primary key columns.
    key: Vec<String>,
}

/// `name` quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` quoted for SQL.
fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

impl Cdc {
    /// The tables the options name, for messages.
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// True if the table `schema.table` is one the source reads.
    fn reads(&self, schema: &str, table: &str) -> bool {
        self.schema_pattern.is_match(schema) && self.table_pattern.is_match(table)
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> SluiceError {
        SluiceError::Runtime(format!("{}: {what}: {e}", self.owner))
    }

    fn connect(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| {
            SluiceError::Runtime(format!(
                "{}: cannot connect to PostgreSQL at '{}': {e}",
                self.owner, self.address
            ))
        })
    }

    /// Checks what logical replication needs, creates the publication and the slot if they
    /// are not there; returns whether the slot was created now, and the tables read.
    fn prepare(&self, client: &mut Client) -> Result<(bool, Vec<TableName>)> {
        let wal_level: String = client
            .query_one("SHOW wal_level", &[])
            .map_err(|e| self.error("SHOW wal_level", e))?
            .get(0);
        if wal_level != "logical" {
            return Err(SluiceError::Config(format!(
                "{}: PostgreSQL at '{}' has wal_level = '{wal_level}'; change data capture needs 'logical' (ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)",
                self.owner, self.address
            )));
        }
        // The tables the options name (in the order they are read in the snapshot).
        let candidates = client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
                &[],
            )
            .map_err(|e| self.error("reading the tables", e))?;
        let mut tables = Vec::new();
        for r in &candidates {
            let (schema, table, identity): (String, String, String) =
                (r.get(0), r.get(1), r.get(2));
            if !self.reads(&schema, &table) {
                continue;
            }
            if identity != "f" && !self.upsert {
                let q = qualified(&schema, &table);
                return Err(SluiceError::Config(format!(
                    "{}: table {q} does not log whole rows before updates and deletes; run ALTER TABLE {q} REPLICA IDENTITY FULL, or set 'changelog-mode' = 'upsert' (Sluice then keeps the last row of every key)",
                    self.owner
                )));
            }
            tables.push(Arc::new((schema, table)));
        }
        if tables.is_empty() {
            return Err(SluiceError::Config(format!(
                "{}: no PostgreSQL table in database '{}' matches 'schema-name' = '{}' and 'table-name' = '{}'",
                self.owner, self.address, self.schema, self.table
            )));
        }
        let publication = client
            .query_opt(
                "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .map_err(|e| self.error("reading publications", e))?;
        match publication {
            None => {
                let list: Vec<String> = tables.iter().map(|t| qualified(&t.0, &t.1)).collect();
                client
                    .batch_execute(&format!(
                        "CREATE PUBLICATION {} FOR TABLE {}",
                        ident(&self.publication),
                        list.join(", ")
                    ))
                    .map_err(|e| self.error("creating the publication", e))?;
            }
            Some(row) if !row.get::<_, bool>(0) => {
                for t in &tables {
                    let listed = client
                        .query_opt(
                            "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                            &[&self.publication, &t.0, &t.1],
                        )
                        .map_err(|e| self.error("reading the publication", e))?;
                    if listed.is_none() {
                        client
                            .batch_execute(&format!(
                                "ALTER PUBLICATION {} ADD TABLE {}",
                                ident(&self.publication),
                                qualified(&t.0, &t.1)
                            ))
                            .map_err(|e| self.error("adding the table to the publication", e))?;
                    }
                }
            }
            Some(_) => {}
        }
        let slot = client
            .query_opt(
                "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .map_err(|e| self.error("reading replication slots", e))?;
        match slot {
            Some(row) => {
                let plugin: Option<String> = row.get(0);
                if plugin.as_deref() != Some("pgoutput") {
                    return Err(SluiceError::Config(format!(
                        "{}: replication slot '{}' exists but decodes with '{}', not pgoutput; drop it or name another ('slot.name')",
                        self.owner,
                        self.slot,
                        plugin.unwrap_or_default()
                    )));
                }
                Ok((false, tables))
            }
            None => {
                client
                    .query_one(
                        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&self.slot],
                    )
                    .map_err(|e| self.error("creating the replication slot", e))?;
                Ok((true, tables))
            }
        }
    }
}

struct CdcFactory {
    spec: SourceSpec,
    cdc: Arc<Cdc>,
}

impl SourceFactory for CdcFactory {
    fn name(&self) -> String {
        format!("postgres-cdc [{}]", self.cdc.qualified())
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn produces_updates(&self) -> bool {
        true
    }

    fn produces_upserts(&self) -> bool {
        self.cdc.upsert
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let decoder = format::decoder(
            "json",
            self.spec.schema.clone(),
            &Options::new(self.cdc.owner.clone(), BTreeMap::new()),
        )?;
        Ok(Box::new(CdcReader {
            cdc: self.cdc.clone(),
            // One slot, one reader: the other subtasks have nothing to read.
            active: ctx.subtask_index == 0,
            schema: self.spec.schema.clone(),
            spec: self.spec.clone(),
            decoder,
            checkpointing: ctx.checkpointing,
            client: None,
            phase: Phase::Start,
            position: 0,
            end_lsn: 0,
            snapshot: None,
            relations: HashMap::new(),
            to_snapshot: VecDeque::new(),
            snapshotting: None,
            started: false,
            pending: Vec::new(),
            advanced: 0,
            peek: PEEK_CHANGES,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Nothing read yet.
    Start,
    /// Reading the table (a cursor in an open transaction).
    Snapshot,
    /// Reading the slot's changes.
    Stream,
}

struct CdcReader {
    cdc: Arc<Cdc>,
    active: bool,
    schema: SchemaRef,
    /// The table's metadata columns (after the physical ones).
    spec: SourceSpec,
    decoder: Box<dyn LineDecoder>,
    checkpointing: bool,
    client: Option<Client>,
    phase: Phase,
    /// The commit LSN of the last transaction handed on, and where it ends (what the slot
    /// may be advanced to once a checkpoint holds it).
    position: u64,
    end_lsn: u64,
    /// What the initial snapshot saw: a streamed transaction it saw is skipped.
    snapshot: Option<Snapshot>,
    relations: HashMap<u32, Relation>,
    /// The tables the snapshot has still to read, and the one it reads.
    to_snapshot: VecDeque<TableName>,
    snapshotting: Option<TableName>,
    /// Connected and prepared (the slot checked) since the reader was made.
    started: bool,
    /// Per checkpoint taken and not yet complete, where the slot may go when it completes.
    pending: Vec<(CheckpointId, u64)>,
    /// Where the slot was advanced to last.
    advanced: u64,
    /// Messages to ask the slot for.
    peek: i32,
}

/// A change: its kind, the row as a JSON object of the table's columns, the commit time of
/// its transaction (epoch milliseconds; 0 for the snapshot's rows) and its table.
type Change = (RowKind, Map<String, Value>, i64, TableName);

/// The table of a relation.
fn table_of(relation: &Relation) -> TableName {
    Arc::new((relation.namespace.clone(), relation.name.clone()))
}

/// A column's PostgreSQL text as JSON, by its type: booleans and numbers as such (the JSON
/// decoder reads the rest, dates and times included, from strings).
fn json_value(text: &str, type_oid: u32) -> Value {
    match type_oid {
        16 => Value::Bool(text == "t" || text == "true"),
        20 | 21 | 23 | 26 | 700 | 701 | 1700 => serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(text.to_string())),
        _ => Value::String(text.to_string()),
    }
}

/// A tuple as a JSON object of the relation's columns; an unchanged TOASTed value is taken
/// from `old` (the row before, with `REPLICA IDENTITY FULL`), or left out.
fn row(relation: &Relation, values: &[Datum], old: Option<&[Datum]>) -> Map<String, Value> {
    let mut object = Map::new();
    for (i, (column, value)) in relation.columns.iter().zip(values).enumerate() {
        let value = match value {
            Datum::Unchanged => old.and_then(|o| o.get(i)).unwrap_or(&Datum::Null),
            v => v,
        };
        match value {
            Datum::Text(t) => {
                object.insert(column.name.clone(), json_value(t, column.type_oid));
            }
            Datum::Null => {
                object.insert(column.name.clone(), Value::Null);
            }
            Datum::Unchanged => {}
        }
    }
    object
}

impl CdcReader {
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.client = Some(self.cdc.connect()?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| SluiceError::Runtime("internal: no PostgreSQL client".into()))
    }

    /// Rows as a batch of the table's columns, each of its kind.
    fn batch(&mut self, changes: Vec<Change>) -> Result<SourcePoll> {
        if changes.is_empty() {
            return Ok(SourcePoll::Idle);
        }
        let mut lines = Vec::new();
        let mut kinds = Vec::with_capacity(changes.len());
        let mut times = Vec::with_capacity(changes.len());
        let mut tables = Vec::with_capacity(changes.len());
        for (kind, object, at, table) in changes {
            lines.extend_from_slice(Value::Object(object).to_string().as_bytes());
            lines.push(b'\n');
            kinds.push(kind);
            times.push(at);
            tables.push(table);
        }
        let source = format!("{}: a change", self.cdc.owner);
        let batches = self.decoder.decode(&source, 1, &lines)?;
        let rows = concat_batches(&self.schema, &batches)?;
        if rows.num_rows() != kinds.len() {
            return Err(SluiceError::Runtime(format!(
                "internal: {} changes decoded as {} rows",
                kinds.len(),
                rows.num_rows()
            )));
        }
        let rows = self.with_metadata(rows, &kinds, times, &tables)?;
        Ok(SourcePoll::Batch(ChangeBatch::new(
            rows,
            Some(kinds.into()),
        )))
    }

    /// `rows` with the table's metadata columns after its physical ones.
    fn with_metadata(
        &self,
        rows: RecordBatch,
        kinds: &[RowKind],
        times: Vec<i64>,
        tables: &[TableName],
    ) -> Result<RecordBatch> {
        if self.spec.metadata.is_empty() {
            return Ok(rows);
        }
        let n = rows.num_rows();
        let mut columns = rows.columns().to_vec();
        let constant = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
        for m in &self.spec.metadata {
            let column: ArrayRef = match m.key.as_str() {
                "database_name" => constant(&self.cdc.database),
                "schema_name" => Arc::new(StringArray::from(
                    tables.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
                )),
                "table_name" => Arc::new(StringArray::from(
                    tables.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
                )),
                "op_ts" => {
                    Arc::new(TimestampMillisecondArray::from(times.clone()).with_timezone("UTC"))
                }
                "row_kind" => Arc::new(StringArray::from(
                    kinds.iter().map(|k| k.short_string()).collect::<Vec<_>>(),
                )),
                other => {
                    return Err(SluiceError::Runtime(format!(
                        "internal: unknown metadata key '{other}'"
                    )))
                }
            };
            columns.push(cast(&column, &m.data_type).map_err(|e| {
                SluiceError::Config(format!(
                    "{}: metadata column '{}' ('{}') cannot be {}: {e}",
                    self.cdc.owner, m.name, m.key, m.data_type
                ))
            })?);
        }
        Ok(RecordBatch::try_new(self.spec.produced_schema(), columns)?)
    }

    /// Connects, prepares the slot and starts the snapshot (or goes straight to the
    /// stream).
    fn start(&mut self) -> Result<()> {
        let cdc = self.cdc.clone();
        let restored = self.phase == Phase::Stream;
        let client = self.client()?;
        let (created, tables) = cdc.prepare(client)?;
        if restored {
            if created {
                return Err(SluiceError::Runtime(format!(
                    "{}: replication slot '{}' was gone (dropped?): the changes since the checkpoint are lost; start the job without its checkpoint to read the table again",
                    cdc.owner, cdc.slot
                )));
            }
            return Ok(());
        }
        if !cdc.initial {
            // From now on: what the slot held before is not read.
            let now: String = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .map_err(|e| cdc.error("reading the WAL position", e))?
                .get(0);
            self.position = pgoutput::parse_lsn(&now).unwrap_or(0);
            self.phase = Phase::Stream;
            return Ok(());
        }
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(|e| cdc.error("starting the snapshot", e))?;
        let snapshot: String = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .map_err(|e| cdc.error("starting the snapshot", e))?
            .get(0);
        self.snapshot = Snapshot::parse(&snapshot);
        self.to_snapshot = tables.into();
        self.phase = Phase::Snapshot;
        self.next_table()
    }

    /// Opens the cursor over the next table of the snapshot (in its transaction).
    fn next_table(&mut self) -> Result<()> {
        let cdc = self.cdc.clone();
        let Some(table) = self.to_snapshot.pop_front() else {
            return Ok(());
        };
        let name = qualified(&table.0, &table.1);
        let client = self.client()?;
        let columns = client
            .query(
                "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&name],
            )
            .map_err(|e| cdc.error("reading the table's columns", e))?;
        // Every column as text (and its type), as the stream gives them.
        let select: Vec<String> = columns
            .iter()
            .map(|r| {
                let name = ident(&r.get::<_, String>(0));
                format!("{name}::text, pg_typeof({name})::oid")
            })
            .collect();
        client
            .batch_execute(&format!(
                "DECLARE sluice_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {name}",
                select.join(", "),
            ))
            .map_err(|e| cdc.error(&format!("reading table {name}"), e))?;
        self.relations.insert(
            0,
            Relation {
                id: 0,
                namespace: table.0.clone(),
                name: table.1.clone(),
                columns: columns
                    .iter()
                    .map(|r| pgoutput::Column {
                        name: r.get(0),
                        type_oid: 0,
                        key: false,
                    })
                    .collect(),
            },
        );
        self.snapshotting = Some(table);
        Ok(())
    }

    /// The next rows of the snapshot; at its end, the stream begins.
    fn read_snapshot(&mut self) -> Result<SourcePoll> {
        let cdc = self.cdc.clone();
        let client = self.client()?;
        let rows = client
            .query(
                &format!("FETCH FORWARD {SNAPSHOT_FETCH} FROM sluice_snapshot"),
                &[],
            )
            .map_err(|e| cdc.error("reading the table", e))?;
        if rows.is_empty() {
            client
                .batch_execute("CLOSE sluice_snapshot")
                .map_err(|e| cdc.error("ending the snapshot", e))?;
            if !self.to_snapshot.is_empty() {
                self.next_table()?;
                return Ok(SourcePoll::Idle);
            }
            self.client()?
                .batch_execute("COMMIT")
                .map_err(|e| cdc.error("ending the snapshot", e))?;
            self.relations.remove(&0);
            self.snapshotting = None;
            self.phase = Phase::Stream;
            tracing::info!("{}: snapshot read; now streaming changes", cdc.owner);
            return Ok(SourcePoll::Idle);
        }
        let mut relation =
            self.relations.get(&0).cloned().ok_or_else(|| {
                SluiceError::Runtime("internal: the snapshot has no columns".into())
            })?;
        let kind = if cdc.upsert {
            RowKind::UpdateAfter
        } else {
            RowKind::Insert
        };
        let table = self
            .snapshotting
            .clone()
            .ok_or_else(|| SluiceError::Runtime("internal: the snapshot reads no table".into()))?;
        let mut changes = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut values = Vec::with_capacity(relation.columns.len());
            for (i, c) in relation.columns.iter_mut().enumerate() {
                let text: Option<String> = r.get(2 * i);
                c.type_oid = r.get::<_, u32>(2 * i + 1);
                values.push(text.map(Datum::Text).unwrap_or(Datum::Null));
            }
            changes.push((kind, row(&relation, &values, None), 0, table.clone()));
        }
        self.batch(changes)
    }

    /// The changes committed since the last transaction handed on.
    fn read_stream(&mut self) -> Result<SourcePoll> {
        let cdc = self.cdc.clone();
        // With checkpoints, the slot keeps everything until a checkpoint holds it; without,
        // what is read is consumed.
        let function = if self.checkpointing {
            "pg_logical_slot_peek_binary_changes"
        } else {
            "pg_logical_slot_get_binary_changes"
        };
        let peek = self.peek;
        let client = self.client()?;
        let rows = client
            .query(
                &format!("SELECT data FROM {function}($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)"),
                &[&cdc.slot, &peek, &cdc.publication],
            )
            .map_err(|e| cdc.error("reading the replication slot", e))?;
        let returned = rows.len();
        let mut changes: Vec<Change> = Vec::new();
        // The current transaction: its changes, and whether they are new to the job.
        let mut txn: Vec<Change> = Vec::new();
        let mut fresh = false;
        let mut xid = 0;
        // The current transaction's commit time, epoch milliseconds.
        let mut at = 0;
        for r in rows {
            let data: &[u8] = r.get(0);
            let message = pgoutput::parse(data).map_err(|e| cdc.error("the slot", e))?;
            match message {
                Message::Begin {
                    final_lsn,
                    commit_time,
                    xid: x,
                } => {
                    txn.clear();
                    xid = x;
                    at = POSTGRES_EPOCH_MS + commit_time.div_euclid(1000);
                    fresh = final_lsn > self.position;
                }
                Message::Commit {
                    commit_lsn,
                    end_lsn,
                } => {
                    if fresh && commit_lsn > self.position {
                        let seen = self.snapshot.as_ref().is_some_and(|s| s.saw(xid));
                        if !seen {
                            changes.append(&mut txn);
                        }
                        self.position = commit_lsn;
                        self.end_lsn = end_lsn;
                    }
                    txn.clear();
                    fresh = false;
                }
                Message::Relation(rel) => {
                    self.relations.insert(rel.id, rel);
                }
                Message::Insert { relation, new } if fresh => {
                    if let Some(rel) = self.ours(relation) {
                        let kind = if cdc.upsert {
                            RowKind::UpdateAfter
                        } else {
                            RowKind::Insert
                        };
                        txn.push((kind, row(rel, &new, None), at, table_of(rel)));
                    }
                }
                Message::Update { relation, old, new } if fresh => {
                    if let Some(rel) = self.ours(relation) {
                        let full = match &old {
                            Some(OldRow::Full(o)) => Some(o.as_slice()),
                            _ => None,
                        };
                        let after = row(rel, &new, full);
                        if cdc.upsert {
                            if let Some(OldRow::Key(o) | OldRow::Full(o)) = &old {
                                // The key changed: the old key's row is gone.
                                let before = row(rel, o, None);
                                if cdc.key.iter().any(|k| before.get(k) != after.get(k)) {
                                    txn.push((RowKind::Delete, before, at, table_of(rel)));
                                }
                            }
                            txn.push((RowKind::UpdateAfter, after, at, table_of(rel)));
                        } else {
                            let Some(before) = full else {
                                return Err(cdc.error(
                                    "an update without the row before it",
                                    "set REPLICA IDENTITY FULL on the table",
                                ));
                            };
                            let table = table_of(rel);
                            txn.push((
                                RowKind::UpdateBefore,
                                row(rel, before, None),
                                at,
                                table.clone(),
                            ));
                            txn.push((RowKind::UpdateAfter, after, at, table));
                        }
                    }
                }
                Message::Delete { relation, old } if fresh => {
                    if let Some(rel) = self.ours(relation) {
                        let before = match &old {
                            OldRow::Full(o) | OldRow::Key(o) => row(rel, o, None),
                        };
                        txn.push((RowKind::Delete, before, at, table_of(rel)));
                    }
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            if returned as i32 >= self.peek {
                // All of it was handed on before: ask for more next time.
                self.peek = self.peek.saturating_mul(2);
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.batch(changes)
    }

    /// The relation with id `id` if it is a table read.
    fn ours(&self, id: u32) -> Option<&Relation> {
        self.relations
            .get(&id)
            .filter(|r| self.cdc.reads(&r.namespace, &r.name))
    }
}

impl SourceReader for CdcReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        if !self.active {
            return Ok(SourcePoll::End);
        }
        if !self.started {
            // Also after a restore (in the stream): the slot must still be there.
            self.start()?;
            self.started = true;
        }
        let result = match self.phase {
            Phase::Snapshot => self.read_snapshot(),
            _ => self.read_stream(),
        };
        if result.is_err() {
            // A lost connection is made again by the next run (a restart from the
            // checkpoint).
            self.client = None;
        }
        result
    }

    fn has_nothing_to_read(&self) -> bool {
        !self.active
    }

    fn checkpoint_declined(&self) -> Option<String> {
        (self.active && self.phase != Phase::Stream).then(|| {
            format!(
                "{}: the initial snapshot of {} is being read",
                self.cdc.owner,
                self.cdc.qualified()
            )
        })
    }

    fn snapshot_position(
        &mut self,
        checkpoint: CheckpointId,
        state: &mut StateWriter,
    ) -> Result<()> {
        state.put_u64(self.position);
        state.put_u64(self.end_lsn);
        state.put_str(
            &self
                .snapshot
                .as_ref()
                .map(|s| {
                    let ids: Vec<String> = s.in_progress.iter().map(|x| x.to_string()).collect();
                    format!("{}:{}:{}", s.xmin, s.xmax, ids.join(","))
                })
                .unwrap_or_default(),
        );
        if self.end_lsn > 0 {
            self.pending.push((checkpoint, self.end_lsn));
        }
        Ok(())
    }

    fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
        if state.is_empty() {
            return Ok(());
        }
        self.position = state.u64()?;
        self.end_lsn = state.u64()?;
        self.snapshot = Snapshot::parse(state.str()?);
        self.phase = Phase::Stream;
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, checkpoint: CheckpointId) -> Result<()> {
        let upto = self
            .pending
            .iter()
            .filter(|(c, _)| *c <= checkpoint)
            .map(|(_, l)| *l)
            .max();
        self.pending.retain(|(c, _)| *c > checkpoint);
        let Some(lsn) = upto.filter(|l| *l > self.advanced) else {
            return Ok(());
        };
        let cdc = self.cdc.clone();
        let client = self.client()?;
        client
            .query_one(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)::text",
                &[&cdc.slot, &pgoutput::format_lsn(lsn)],
            )
            .map_err(|e| cdc.error("advancing the replication slot", e))?;
        self.advanced = lsn;
        self.peek = PEEK_CHANGES;
        Ok(())
    }
}
