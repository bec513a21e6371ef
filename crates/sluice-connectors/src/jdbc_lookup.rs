//! The `jdbc` table as the right side of a lookup join (`JOIN t FOR SYSTEM_TIME AS OF
//! o.proc_time`), as Flink's `JdbcRowDataLookupFunction`: each key a join looks up becomes a
//! `SELECT ... WHERE k1 = $1 AND ...` on PostgreSQL, a failed query is retried
//! `lookup.max-retries` times over a new connection (waiting 1 s, 2 s, ... between), and
//! Flink's cache options say what the join keeps in front of it:
//!
//! - `lookup.cache` = `NONE` (the default) or `PARTIAL`, with `lookup.partial-cache.max-rows`,
//!   `lookup.partial-cache.expire-after-write`, `lookup.partial-cache.expire-after-access`
//!   (at least one of the three) and `lookup.partial-cache.cache-missing-key` (true);
//! - the legacy `lookup.cache.max-rows` with `lookup.cache.ttl` (both) and
//!   `lookup.cache.caching-missing-key`.
//!
//! Values travel as text both ways (`$1::text::<column type>` for keys, `col::text` for rows),
//! cast by Arrow to the declared types, so every type the sink writes can be looked up.

use crate::jdbc::{database_types, describe_table, JdbcOptions};
use arrow::array::{ArrayRef, StringArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use postgres::types::ToSql;
use postgres::{Client, Statement};
use sluice_common::{Options, Result, SluiceError};
use sluice_engine::{LookupCacheConfig, LookupFactory, LookupSource, LookupSpec, SubtaskContext};
use std::sync::Arc;
use std::time::Duration;

/// The lookup options of a `jdbc` table.
pub(crate) const LOOKUP_OPTIONS: &[&str] = &[
    "lookup.cache",
    "lookup.partial-cache.max-rows",
    "lookup.partial-cache.expire-after-write",
    "lookup.partial-cache.expire-after-access",
    "lookup.partial-cache.cache-missing-key",
    "lookup.max-retries",
    "lookup.cache.max-rows",
    "lookup.cache.ttl",
    "lookup.cache.caching-missing-key",
];

/// The cache a table's options ask for, checked as Flink checks them.
pub(crate) fn cache_config(options: &Options) -> Result<Option<LookupCacheConfig>> {
    let owner = &options.owner;
    let rows = |key: &str| -> Result<Option<u64>> {
        match options.i64(key)? {
            Some(n) if n <= 0 => Err(SluiceError::Config(format!(
                "{owner}: option '{key}' = '{n}' must be positive"
            ))),
            n => Ok(n.map(|n| n as u64)),
        }
    };
    let legacy_rows = rows("lookup.cache.max-rows")?;
    let legacy_ttl = options.duration("lookup.cache.ttl")?;
    let mode = options.string("lookup.cache", "NONE").to_ascii_uppercase();
    match mode.as_str() {
        "NONE" => match (legacy_rows, legacy_ttl) {
            (None, None) => Ok(None),
            (Some(max_rows), Some(ttl)) => Ok(Some(LookupCacheConfig {
                max_rows,
                expire_after_write: Some(ttl),
                expire_after_access: None,
                cache_missing_key: options.bool("lookup.cache.caching-missing-key", true)?,
            })),
            _ => Err(SluiceError::Config(format!(
                "{owner}: options 'lookup.cache.max-rows' and 'lookup.cache.ttl' go together; or write 'lookup.cache' = 'PARTIAL' with 'lookup.partial-cache.*'"
            ))),
        },
        "PARTIAL" => {
            let max_rows = rows("lookup.partial-cache.max-rows")?;
            let write = options.duration("lookup.partial-cache.expire-after-write")?;
            let access = options.duration("lookup.partial-cache.expire-after-access")?;
            if max_rows.is_none() && write.is_none() && access.is_none() {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'lookup.cache' = 'PARTIAL' needs at least one of 'lookup.partial-cache.max-rows', 'lookup.partial-cache.expire-after-write' and 'lookup.partial-cache.expire-after-access'"
                )));
            }
            Ok(Some(LookupCacheConfig {
                max_rows: max_rows.unwrap_or(u64::MAX),
                expire_after_write: write,
                expire_after_access: access,
                cache_missing_key: options.bool("lookup.partial-cache.cache-missing-key", true)?,
            }))
        }
        other => Err(SluiceError::Config(format!(
            "{owner}: option 'lookup.cache' = '{other}' is not one of NONE, PARTIAL"
        ))),
    }
}

/// Creates lookup sources over one `jdbc` table.
pub(crate) struct JdbcLookupFactory {
    options: JdbcOptions,
    schema: SchemaRef,
    /// The query: the table's columns as text, where the key columns equal `$1`, `$2`, ...
    query: String,
    cache: Option<LookupCacheConfig>,
    max_retries: u32,
}

impl JdbcLookupFactory {
    /// Checks the table against the database (its columns exist and fit) and builds the
    /// query.
    pub(crate) fn new(spec: &LookupSpec) -> Result<Self> {
        let options = JdbcOptions::parse(&spec.options)?;
        let cache = cache_config(&spec.options)?;
        let max_retries = match spec.options.i64("lookup.max-retries")? {
            Some(n) if n < 0 => {
                return Err(SluiceError::Config(format!(
                    "{}: option 'lookup.max-retries' = '{n}' must not be negative",
                    options.owner
                )))
            }
            Some(n) => n as u32,
            None => 3,
        };
        let mut client = options
            .connect()
            .map_err(|e| SluiceError::Plan(e.to_string()))?;
        let (db_columns, _) = describe_table(&mut client, &options)?;
        let types = database_types(&spec.schema, &db_columns, &options)?;
        let quoted = |i: usize| {
            let name = spec.schema.field(i).name();
            let db = db_columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
                .map_or(name.as_str(), |c| c.name.as_str());
            format!("\"{}\"", db.replace('"', "\"\""))
        };
        let columns: Vec<String> = (0..spec.schema.fields().len())
            .map(|i| format!("{}::text", quoted(i)))
            .collect();
        let conditions: Vec<String> = spec
            .keys
            .iter()
            .enumerate()
            .map(|(p, &k)| format!("{} = ${}::text::{}", quoted(k), p + 1, types[k]))
            .collect();
        let query = format!(
            "SELECT {} FROM {} WHERE {}",
            columns.join(", "),
            options.table,
            conditions.join(" AND ")
        );
        Ok(JdbcLookupFactory {
            options,
            schema: spec.schema.clone(),
            query,
            cache,
            max_retries,
        })
    }
}

impl LookupFactory for JdbcLookupFactory {
    fn name(&self) -> String {
        format!("jdbc({})", self.options.table)
    }

    fn cache(&self) -> Option<LookupCacheConfig> {
        self.cache.clone()
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn LookupSource>> {
        Ok(Box::new(JdbcLookup {
            options: self.options.clone(),
            schema: self.schema.clone(),
            query: self.query.clone(),
            max_retries: self.max_retries,
            connection: None,
        }))
    }
}

struct JdbcLookup {
    options: JdbcOptions,
    schema: SchemaRef,
    query: String,
    max_retries: u32,
    /// The connection and the prepared query, made on first use and after a failure.
    connection: Option<(Client, Statement)>,
}

impl JdbcLookup {
    /// The rows of one key (its values as text), one vector of texts per row.
    fn query(&mut self, key: &[String]) -> std::result::Result<Vec<Vec<Option<String>>>, String> {
        if self.connection.is_none() {
            let mut client = self.options.connect().map_err(|e| e.to_string())?;
            let statement = client.prepare(&self.query).map_err(|e| e.to_string())?;
            self.connection = Some((client, statement));
        }
        let Some((client, statement)) = self.connection.as_mut() else {
            return Err("no connection".into());
        };
        let params: Vec<&(dyn ToSql + Sync)> =
            key.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
        let rows = client.query(&*statement, &params).map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string())
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect())
    }

    /// [`Self::query`], retried over a new connection as `lookup.max-retries` says.
    fn query_with_retries(&mut self, key: &[String]) -> Result<Vec<Vec<Option<String>>>> {
        let mut attempt = 0;
        loop {
            match self.query(key) {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    self.connection = None;
                    if attempt >= self.max_retries {
                        return Err(SluiceError::Runtime(format!(
                            "{}: looking up ({}) in table '{}' failed after {} retries ('lookup.max-retries'): {e}",
                            self.options.owner,
                            key.join(", "),
                            self.options.table,
                            self.max_retries
                        )));
                    }
                    attempt += 1;
                    tracing::warn!(
                        "{}: a lookup failed ({e}); retry {attempt} of {}",
                        self.options.owner,
                        self.max_retries
                    );
                    std::thread::sleep(Duration::from_secs(attempt as u64));
                }
            }
        }
    }
}

impl LookupSource for JdbcLookup {
    fn lookup(&mut self, keys: &[ArrayRef]) -> Result<(RecordBatch, Vec<u32>)> {
        let n = keys.first().map_or(0, |k| k.len());
        let format = FormatOptions::default().with_null("");
        let formatters = keys
            .iter()
            .map(|k| ArrayFormatter::try_new(k.as_ref(), &format))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut texts: Vec<Vec<Option<String>>> = vec![Vec::new(); self.schema.fields().len()];
        let mut matched = Vec::new();
        for i in 0..n {
            // A NULL key equals nothing.
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let key: Vec<String> = formatters.iter().map(|f| f.value(i).to_string()).collect();
            for row in self.query_with_retries(&key)? {
                for (column, value) in texts.iter_mut().zip(row) {
                    column.push(value);
                }
                matched.push(i as u32);
            }
        }
        let cast = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let columns = texts
            .into_iter()
            .zip(self.schema.fields())
            .map(|(values, field)| {
                let text: ArrayRef = Arc::new(StringArray::from(values));
                if field.data_type() == &DataType::Utf8 {
                    return Ok(text);
                }
                cast_with_options(&text, field.data_type(), &cast).map_err(|e| {
                    SluiceError::Runtime(format!(
                        "{}: column '{}' of table '{}' does not read as {}: {e}",
                        self.options.owner,
                        field.name(),
                        self.options.table,
                        field.data_type()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(matched.len())),
        )?;
        Ok((batch, matched))
    }
}
