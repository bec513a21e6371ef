//! A SQL session: runs a script's statements in order. DDL and `SET` take effect at once;
//! every `INSERT` and bare `SELECT` is planned into one job (as a Flink statement set) that
//! runs when the script has been read.

use crate::catalog::{analyze, df_error, parser_options, Catalog, WindowRelation};
use crate::parser::{parse_script, ParsedQuery, Statement};
use crate::planner::{JobConfig, Planner};
use crate::types::flink_name;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion_expr::logical_plan::builder::LogicalTableSource;
use datafusion_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion_sql::planner::SqlToRel;
use sluice_common::{Result, SluiceError};
use sluice_engine::{CheckpointConfig, ConnectorRegistry, JobGraph};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The keys `SET` knows, with their defaults.
const KNOWN_KEYS: &[(&str, &str)] = &[
    ("parallelism.default", "1"),
    ("pipeline.name", "sluice-job"),
    ("table.local-time-zone", "UTC"),
    ("pipeline.auto-watermark-interval", "200 ms"),
    ("execution.runtime-mode", "streaming"),
    ("sql-client.execution.result-mode", "tableau"),
    ("table.exec.source.idle-timeout", "0 ms"),
    ("execution.checkpointing.interval", ""),
    ("execution.checkpointing.timeout", "10 min"),
    ("execution.checkpointing.min-pause", "0 ms"),
    ("execution.checkpointing.mode", "EXACTLY_ONCE"),
    ("state.checkpoints.dir", ""),
    ("execution.checkpointing.dir", ""),
    ("state.checkpoints.num-retained", "1"),
    ("execution.checkpointing.num-retained", ""),
    ("execution.checkpointing.savepoint-dir", ""),
    ("state.savepoints.dir", ""),
    ("table.exec.state.ttl", "0 ms"),
    ("pipeline.max-parallelism", ""),
    ("state.backend.type", "hashmap"),
    ("execution.checkpointing.incremental", ""),
    ("state.backend.memory.size", "256 mb"),
    ("state.backend.incremental", ""),
    ("table.exec.interval-join.min-cleanup-interval", "0 ms"),
    ("table.exec.sink.not-null-enforcer", "ERROR"),
    ("table.optimizer.reuse-source-enabled", "true"),
];

/// Runs `sql` in the session `new_session(reuse_source)` gives, for a job that restores from
/// `mode`: planned with source reuse, unless the checkpoint or savepoint it restores from was
/// taken by the plan without it (Sluice before source reuse read a table once per `INSERT`),
/// which is then the plan, so that every source's state goes back where it was. The flag
/// says which. When neither plan fits, the first is returned: restoring it says why.
pub fn execute_script_to_restore(
    new_session: &dyn Fn(bool) -> Result<Session>,
    sql: &str,
    mode: &sluice_engine::RestoreMode,
) -> Result<(ScriptOutcome, bool)> {
    let outcome = new_session(true)?.execute_script(sql)?;
    let Some(job) = &outcome.job else {
        return Ok((outcome, false));
    };
    if sluice_engine::restore_point(job, &job.checkpoint, mode).is_ok() {
        return Ok((outcome, false));
    }
    let Ok(older) = new_session(false).and_then(|mut s| s.execute_script(sql)) else {
        return Ok((outcome, false));
    };
    let fits = older.job.as_ref().is_some_and(|j| {
        j.nodes.len() != job.nodes.len()
            && sluice_engine::restore_point(j, &j.checkpoint, mode).is_ok()
    });
    Ok(if fits {
        (older, true)
    } else {
        (outcome, false)
    })
}

/// What running a script produced.
pub struct ScriptOutcome {
    /// The job of all INSERTs and SELECTs, if there were any.
    pub job: Option<JobGraph>,
    /// Text to show the user (EXPLAIN output, SHOW TABLES).
    pub messages: Vec<String>,
}

/// A session over a catalog.
pub struct Session {
    pub catalog: Catalog,
    config: BTreeMap<String, String>,
    registry: Arc<dyn ConnectorRegistry>,
    /// Where jobs keep their state: `<data_dir>/jobs/<pipeline.name>/`.
    data_dir: PathBuf,
    /// The sources of the job being planned, which its statements share.
    scans: crate::planner::Scans,
}

impl Session {
    /// A new session using `registry` for connectors.
    pub fn new(registry: Arc<dyn ConnectorRegistry>) -> Self {
        Session {
            catalog: Catalog::new(),
            config: BTreeMap::new(),
            registry,
            data_dir: PathBuf::from("sluice-data"),
            scans: Default::default(),
        }
    }

    /// Sets where jobs keep their state (checkpoints under `<dir>/jobs/<pipeline.name>/`).
    pub fn set_data_dir(&mut self, dir: impl Into<PathBuf>) {
        self.data_dir = dir.into();
    }

    /// A duration key, or `None` when it is empty (unset).
    fn duration(&self, key: &str) -> Result<Option<std::time::Duration>> {
        let v = self.get(key);
        if v.trim().is_empty() {
            return Ok(None);
        }
        sluice_common::options::parse_duration(&v)
            .map(Some)
            .ok_or_else(|| {
                SluiceError::Config(format!(
                    "SET '{key}' = '{v}': expected a duration such as '10 s' or '500 ms'"
                ))
            })
    }

    /// The first of `keys` that is set (Flink 2 names and their older aliases).
    fn first_set(&self, keys: &[&str]) -> Option<(String, String)> {
        keys.iter()
            .map(|k| (k.to_string(), self.get(k)))
            .find(|(_, v)| !v.trim().is_empty())
    }

    /// Where the job keeps its state: `<data_dir>/jobs/<pipeline.name>/`.
    fn job_dir(&self) -> PathBuf {
        let name = self.get("pipeline.name");
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.data_dir.join("jobs").join(safe)
    }

    /// How the job takes checkpoints, from the `execution.checkpointing.*` and
    /// `state.checkpoints.*` keys.
    pub fn checkpoint_config(&self) -> Result<CheckpointConfig> {
        let mut c = CheckpointConfig::new(&self.job_dir());
        c.interval = self
            .duration("execution.checkpointing.interval")?
            .filter(|d| !d.is_zero());
        if let Some(t) = self.duration("execution.checkpointing.timeout")? {
            c.timeout = t;
        }
        if let Some(p) = self.duration("execution.checkpointing.min-pause")? {
            c.min_pause = p;
        }
        let mode = self.get("execution.checkpointing.mode");
        if !["EXACTLY_ONCE", "AT_LEAST_ONCE"].contains(&mode.trim().to_uppercase().as_str()) {
            return Err(SluiceError::Config(format!(
                "SET 'execution.checkpointing.mode' = '{mode}': expected EXACTLY_ONCE or AT_LEAST_ONCE"
            )));
        }
        let path = |v: &str| PathBuf::from(v.trim().strip_prefix("file://").unwrap_or(v.trim()));
        if let Some((_, v)) =
            self.first_set(&["execution.checkpointing.dir", "state.checkpoints.dir"])
        {
            c.dir = path(&v);
        }
        if let Some((_, v)) = self.first_set(&[
            "execution.checkpointing.savepoint-dir",
            "state.savepoints.dir",
        ]) {
            c.savepoint_dir = path(&v);
        }
        if let Some((k, v)) = self.first_set(&[
            "execution.checkpointing.num-retained",
            "state.checkpoints.num-retained",
        ]) {
            c.num_retained = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                SluiceError::Config(format!("SET '{k}' = '{v}': expected a positive integer"))
            })?;
        }
        Ok(c)
    }

    /// Sets a configuration key, as `SET 'key' = 'value'`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !KNOWN_KEYS
            .iter()
            .chain(sluice_engine::restart::RESTART_KEYS)
            .any(|(k, _)| *k == key)
        {
            tracing::warn!("SET '{key}': Sluice does not use this key");
        }
        self.config.insert(key.to_string(), value.to_string());
        self.job_config()?;
        self.restart_strategy()?;
        self.checkpoint_config().map(|_| ())
    }

    /// What the job does when it fails, from the `restart-strategy.*` keys.
    pub fn restart_strategy(&self) -> Result<sluice_engine::RestartStrategy> {
        let checkpointing = self.checkpoint_config()?.enabled();
        sluice_engine::RestartStrategy::from_config(&|k| self.get(k), checkpointing)
    }

    fn get(&self, key: &str) -> String {
        self.config.get(key).cloned().unwrap_or_else(|| {
            KNOWN_KEYS
                .iter()
                .chain(sluice_engine::restart::RESTART_KEYS)
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        })
    }

    /// The job settings from the `SET` keys.
    pub fn job_config(&self) -> Result<JobConfig> {
        let p = self.get("parallelism.default");
        let parallelism = p
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                SluiceError::Config(format!(
                    "SET 'parallelism.default' = '{p}': expected a positive integer"
                ))
            })?;
        let iv = self.get("pipeline.auto-watermark-interval");
        let interval = sluice_common::options::parse_duration(&iv).ok_or_else(|| {
            SluiceError::Config(format!("SET 'pipeline.auto-watermark-interval' = '{iv}': expected a duration such as '200 ms'"))
        })?;
        let mode = self.get("execution.runtime-mode");
        if !mode.eq_ignore_ascii_case("streaming") {
            return Err(SluiceError::Config(format!(
                "SET 'execution.runtime-mode' = '{mode}': only 'streaming' is supported"
            )));
        }
        let it = self.get("table.exec.source.idle-timeout");
        let idle = sluice_common::options::parse_duration(&it).ok_or_else(|| {
            SluiceError::Config(format!(
                "SET 'table.exec.source.idle-timeout' = '{it}': expected a duration such as '5 s'"
            ))
        })?;
        let tv = self.get("table.exec.state.ttl");
        let ttl = sluice_common::options::parse_duration(&tv).ok_or_else(|| {
            SluiceError::Config(format!(
                "SET 'table.exec.state.ttl' = '{tv}': expected a duration such as '1 h' (0 keeps state for ever)"
            ))
        })?;
        let ci = self.get("table.exec.interval-join.min-cleanup-interval");
        let min_cleanup = sluice_common::options::parse_duration(&ci).ok_or_else(|| {
            SluiceError::Config(format!(
                "SET 'table.exec.interval-join.min-cleanup-interval' = '{ci}': expected a duration such as '1 s'"
            ))
        })?;
        let mp = self.get("pipeline.max-parallelism");
        let max_parallelism = if mp.trim().is_empty() || mp.trim() == "-1" {
            // Flink's default: 128, or more for a large parallelism.
            (parallelism + parallelism / 2).next_power_of_two().clamp(
                sluice_engine::keyed::DEFAULT_MAX_PARALLELISM,
                sluice_engine::keyed::MAX_KEY_GROUPS,
            )
        } else {
            mp.trim()
                .parse::<usize>()
                .ok()
                .filter(|m| (1..=sluice_engine::keyed::MAX_KEY_GROUPS).contains(m))
                .ok_or_else(|| {
                    SluiceError::Config(format!(
                        "SET 'pipeline.max-parallelism' = '{mp}': expected an integer from 1 to {}",
                        sluice_engine::keyed::MAX_KEY_GROUPS
                    ))
                })?
        };
        if parallelism > max_parallelism {
            return Err(SluiceError::Config(format!(
                "'parallelism.default' = '{parallelism}' is more than 'pipeline.max-parallelism' = '{max_parallelism}'; raise the maximum parallelism"
            )));
        }
        let backend =
            sluice_engine::keyed::StateBackendKind::parse(&self.get("state.backend.type"))
                .map_err(SluiceError::Config)?;
        let incremental = match self.first_set(&[
            "execution.checkpointing.incremental",
            "state.backend.incremental",
        ]) {
            None => false,
            Some((k, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(SluiceError::Config(format!(
                        "SET '{k}' = '{v}': expected 'true' or 'false'"
                    )))
                }
            },
        };
        let ms = self.get("state.backend.memory.size");
        let memory_bytes = sluice_common::options::parse_memory_size(&ms)
            .filter(|b| *b >= sluice_engine::keyed::lsm::MIN_MEMORY_BYTES)
            .ok_or_else(|| {
                SluiceError::Config(format!(
                    "SET 'state.backend.memory.size' = '{ms}': expected a memory size of at least 16 mb, such as '256 mb' or '1 gb'"
                ))
            })?;
        let reuse_source = match self
            .get("table.optimizer.reuse-source-enabled")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" => true,
            "false" => false,
            other => {
                return Err(SluiceError::Config(format!(
                    "SET 'table.optimizer.reuse-source-enabled' = '{other}': expected 'true' or 'false'"
                )))
            }
        };
        let not_null_enforcer = crate::operators::not_null::NotNullEnforcer::parse(
            &self.get("table.exec.sink.not-null-enforcer"),
        )?;
        Ok(JobConfig {
            not_null_enforcer,
            reuse_source,
            state_ttl: (!ttl.is_zero()).then_some(ttl),
            interval_join_min_cleanup_ms: min_cleanup.as_millis().min(i64::MAX as u128) as i64,
            state: sluice_engine::StateConfig {
                max_parallelism,
                backend,
                incremental,
                memory_bytes,
                local_dir: self.job_dir().join("local-state"),
            },
            source_idle_timeout: (!idle.is_zero()).then_some(idle),
            name: self.get("pipeline.name"),
            parallelism,
            watermark_interval_ms: interval.as_millis() as i64,
            time_zone: self.get("table.local-time-zone"),
        })
    }

    /// Registers a query's window relations and plans it with DataFusion.
    fn plan_query(&mut self, q: &ParsedQuery) -> Result<LogicalPlan> {
        for (name, tvf) in &q.windows {
            let input_schema = self.catalog.relation_schema(&tvf.input).ok_or_else(|| {
                SluiceError::Plan(format!(
                    "table or view '{}' not found (in a window function)",
                    tvf.input
                ))
            })?;
            let time_index = input_schema.index_of(&tvf.time_column).map_err(|_| {
                SluiceError::Plan(format!(
                    "DESCRIPTOR({}): no such column in '{}'",
                    tvf.time_column, tvf.input
                ))
            })?;
            let time_type = input_schema.field(time_index).data_type().clone();
            if !matches!(time_type, DataType::Timestamp(TimeUnit::Millisecond, _)) {
                return Err(SluiceError::Plan(format!(
                    "DESCRIPTOR({}): the time attribute must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                    tvf.time_column,
                    flink_name(&time_type)
                )));
            }
            let mut partition_indexes = Vec::new();
            for p in &tvf.partition_by {
                partition_indexes.push(input_schema.index_of(p).map_err(|_| {
                    SluiceError::Plan(format!(
                        "PARTITION BY {p}: no such column in '{}'",
                        tvf.input
                    ))
                })?);
            }
            let mut fields: Vec<Field> = input_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
            fields.push(Field::new(&tvf.column_names[0], ts.clone(), false));
            fields.push(Field::new(&tvf.column_names[1], ts, false));
            fields.push(Field::new(&tvf.column_names[2], time_type, false));
            // The name as written: a bare reference is not lower-cased as a parsed one is.
            let input = LogicalPlanBuilder::scan(
                datafusion_common::TableReference::bare(tvf.input.clone()),
                Arc::new(LogicalTableSource::new(input_schema.clone())),
                None,
            )
            .and_then(|b| b.build())
            .map_err(df_error)?;
            let proctime = crate::catalog::is_proctime(&input, time_index, &self.catalog);
            self.catalog.windows.insert(
                name.clone(),
                WindowRelation {
                    tvf: tvf.clone(),
                    proctime,
                    input,
                    time_index,
                    partition_indexes,
                    schema: Arc::new(Schema::new(fields)),
                },
            );
        }
        for (name, temporal) in &q.temporals {
            if self.catalog.relation_schema(&temporal.table).is_none() {
                return Err(crate::parser::err_at(
                    temporal.location,
                    format!(
                        "table or view '{}' not found (read FOR SYSTEM_TIME AS OF)",
                        temporal.table
                    ),
                ));
            }
            self.catalog
                .temporals
                .insert(name.clone(), temporal.clone());
        }
        for (name, spec) in &q.matches {
            let provider = self.catalog.provider(vec![]);
            let planner = SqlToRel::new_with_options(&provider, parser_options());
            let input = planner
                .sql_statement_to_plan(sqlparser::ast::Statement::Query(spec.input.clone()))
                .map_err(df_error)?;
            let input = analyze(crate::flink_semantics::apply(input)?, &self.catalog.config)?;
            let relation = crate::match_recognize::compile(spec, input, &self.catalog)?;
            self.catalog.matches.insert(name.clone(), relation);
        }
        let provider = self.catalog.provider(vec![]);
        let planner = SqlToRel::new_with_options(&provider, parser_options());
        let plan = planner
            .sql_statement_to_plan(sqlparser::ast::Statement::Query(q.query.clone()))
            .map_err(df_error)?;
        analyze(crate::flink_semantics::apply(plan)?, &self.catalog.config)
    }

    /// Plans a query and its sink (`None`: print) into `graph`; returns the logical plan.
    fn plan_into(
        &mut self,
        query: &ParsedQuery,
        sink: Option<&str>,
        graph: &mut JobGraph,
    ) -> Result<LogicalPlan> {
        let plan = self.plan_query(query)?;
        let config = self.job_config()?;
        if graph.nodes.is_empty() {
            // A new job: its statements share its own sources.
            self.scans = Default::default();
        }
        let planner = Planner {
            catalog: &self.catalog,
            registry: self.registry.as_ref(),
            config: &config,
            scans: &self.scans,
        };
        planner.plan_insert(&plan, sink, graph)?;
        Ok(plan)
    }

    /// Runs the statements of `sql`; returns the job to run, if any.
    pub fn execute_script(&mut self, sql: &str) -> Result<ScriptOutcome> {
        let statements = parse_script(sql)?;
        let mut graph: Option<JobGraph> = None;
        let mut messages = Vec::new();
        for located in statements {
            let at = |e: SluiceError| match e {
                SluiceError::Plan(m) => SluiceError::Sql {
                    line: located.location.line,
                    column: located.location.column,
                    message: m,
                },
                other => other,
            };
            self.execute(located.statement.clone(), &mut graph, &mut messages)
                .map_err(at)?;
        }
        if let Some(g) = graph.as_mut() {
            let config = self.job_config()?;
            g.name = config.name;
            g.source_idle_timeout = config.source_idle_timeout;
            g.state = config.state;
            g.checkpoint = self.checkpoint_config()?;
            g.restart = self.restart_strategy()?;
        }
        Ok(ScriptOutcome {
            job: graph,
            messages,
        })
    }

    fn execute(
        &mut self,
        statement: Statement,
        graph: &mut Option<JobGraph>,
        messages: &mut Vec<String>,
    ) -> Result<()> {
        match statement {
            Statement::Set { key, value } => self.set(&key, &value),
            Statement::Reset { key } => {
                match key {
                    Some(k) => {
                        self.config.remove(&k);
                    }
                    None => self.config.clear(),
                }
                Ok(())
            }
            Statement::CreateTable(t) => self.catalog.create_table(*t),
            Statement::CreateView {
                name,
                query,
                if_not_exists,
            } => {
                if self.catalog.exists(&name) {
                    if if_not_exists {
                        return Ok(());
                    }
                    return Err(SluiceError::Plan(format!(
                        "a table or view named '{name}' already exists"
                    )));
                }
                let plan = self.plan_query(&query)?;
                self.catalog.views.insert(name, plan);
                Ok(())
            }
            Statement::DropTable { name, if_exists } => {
                if self.catalog.tables.remove(&name).is_none() && !if_exists {
                    return Err(SluiceError::Plan(format!(
                        "DROP TABLE '{name}': no such table"
                    )));
                }
                Ok(())
            }
            Statement::DropView { name, if_exists } => {
                if self.catalog.views.remove(&name).is_none() && !if_exists {
                    return Err(SluiceError::Plan(format!(
                        "DROP VIEW '{name}': no such view"
                    )));
                }
                Ok(())
            }
            Statement::ShowTables => {
                let names: Vec<String> = self
                    .catalog
                    .tables
                    .keys()
                    .chain(self.catalog.views.keys())
                    .cloned()
                    .collect();
                messages.push(names.join("\n"));
                Ok(())
            }
            Statement::Insert { table, query } => {
                let g = graph.get_or_insert_with(|| JobGraph::new(""));
                self.plan_into(&query, Some(&table), g).map(|_| ())
            }
            Statement::Query(query) => {
                let g = graph.get_or_insert_with(|| JobGraph::new(""));
                self.plan_into(&query, None, g).map(|_| ())
            }
            Statement::Explain(inner) => {
                let mut g = JobGraph::new(self.job_config()?.name);
                // The job being planned keeps its sources; the explained one has its own.
                let job_scans = std::mem::take(&mut self.scans);
                let plan = match *inner {
                    Statement::Insert { table, query } => {
                        self.plan_into(&query, Some(&table), &mut g)?
                    }
                    Statement::Query(query) => self.plan_into(&query, None, &mut g)?,
                    _ => {
                        return Err(SluiceError::Plan(
                            "EXPLAIN takes a SELECT or an INSERT".into(),
                        ))
                    }
                };
                self.scans = job_scans;
                messages.push(format!(
                    "== Logical plan ==\n{}\n{}",
                    plan.display_indent(),
                    g.explain()
                ));
                Ok(())
            }
        }
    }
}
