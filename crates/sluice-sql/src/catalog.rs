//! The tables and views a script has declared, and DataFusion's view of them (a
//! `ContextProvider`), so that DataFusion can resolve names, types and functions in queries.

use crate::functions::FunctionRegistry;
use crate::parser::{ColumnDef, CreateTable, WindowTvf};
use crate::types::flink_name;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{DataFusionError, TableReference};
use datafusion_expr::logical_plan::builder::LogicalTableSource;
use datafusion_expr::planner::{ContextProvider, ExprPlanner};
use datafusion_expr::{
    AggregateUDF, Expr, HigherOrderUDF, LogicalPlan, LogicalPlanBuilder, ScalarUDF, TableSource,
    WindowUDF,
};
use datafusion_optimizer::Analyzer;
use datafusion_sql::planner::{ParserOptions, PlannerContext, SqlToRel};
use sluice_common::{Options, Result, SluiceError};
use sluice_engine::MetadataColumn;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A declared table.
#[derive(Debug, Clone)]
pub struct Table {
    pub def: CreateTable,
    /// The physical columns, in order: what a sink writes.
    pub physical_schema: SchemaRef,
    /// The metadata columns a source adds after the physical ones.
    pub metadata: Vec<MetadataColumn>,
    /// What a source produces: the physical columns, then the metadata columns.
    pub source_schema: SchemaRef,
    /// All columns, physical and computed, in declared order: what queries see.
    pub schema: SchemaRef,
    /// The expressions of all columns over the physical schema (plain columns for physical
    /// columns), type-coerced.
    pub column_exprs: Vec<Expr>,
    /// The time attribute (the `WATERMARK FOR` column) and its watermark expression over
    /// `schema`.
    pub watermark: Option<(usize, Expr)>,
    /// Primary key columns, as indexes into `schema`.
    pub primary_key: Vec<usize>,
    pub options: Options,
}

impl Table {
    /// The physical columns as a sink takes them: one declared `NOT NULL`, or in the primary
    /// key (which Flink makes `NOT NULL`), is not nullable.
    pub fn sink_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .physical_schema
            .fields()
            .iter()
            .map(|f| {
                let declared = self.def.columns.iter().any(|c| {
                    matches!(c, ColumnDef::Physical { name, not_null: true, .. } if name == f.name())
                });
                let key = self.def.primary_key.iter().any(|k| k == f.name());
                f.as_ref().clone().with_nullable(!(declared || key))
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            self.physical_schema.metadata().clone(),
        ))
    }
}

/// A window relation (from a window table function) in a query.
#[derive(Debug, Clone)]
pub struct WindowRelation {
    pub tvf: WindowTvf,
    /// The relation it windows (a table or a view), planned.
    pub input: LogicalPlan,
    /// Index of the time attribute in `input`'s schema.
    pub time_index: usize,
    /// Indexes of the `PARTITION BY` columns.
    pub partition_indexes: Vec<usize>,
    /// Input columns plus `window_start`, `window_end`, `window_time`.
    pub schema: SchemaRef,
    /// Whether the time column is a processing-time attribute (`PROCTIME()`).
    pub proctime: bool,
}

/// Tables, views and window relations by name.
#[derive(Default)]
pub struct Catalog {
    pub tables: BTreeMap<String, Table>,
    pub views: BTreeMap<String, LogicalPlan>,
    pub windows: HashMap<String, WindowRelation>,
    /// `MATCH_RECOGNIZE` relations in queries.
    pub matches: HashMap<String, crate::match_recognize::MatchRelation>,
    /// Tables and views read `FOR SYSTEM_TIME AS OF` a time in queries.
    pub temporals: HashMap<String, crate::temporal_table::TemporalTable>,
    pub functions: FunctionRegistry,
    pub(crate) config: ConfigOptions,
}

/// Options that make DataFusion's SQL planner read Flink SQL: case-sensitive identifiers,
/// `STRING` as `Utf8`.
pub fn parser_options() -> ParserOptions {
    ParserOptions {
        enable_ident_normalization: false,
        map_string_types_to_utf8view: false,
        parse_float_as_decimal: true,
        ..ParserOptions::default()
    }
}

pub(crate) fn df_error(e: DataFusionError) -> SluiceError {
    let text = e.to_string();
    let text = text
        .strip_prefix("Error during planning: ")
        .or_else(|| text.strip_prefix("Schema error: "))
        .unwrap_or(&text)
        .to_string();
    SluiceError::Plan(text)
}

/// Runs DataFusion's analyzer (type coercion, function rewrites) over a plan, then gives
/// decimal divisions Flink's type (see `decimal_division`) and makes interval arithmetic on
/// timestamps integer arithmetic (see `fast_intervals`).
pub fn analyze(plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
    let plan = Analyzer::new()
        .execute_and_check(plan, config, |_, _| {})
        .map_err(df_error)?;
    let plan = decorrelate(plan, config)?;
    let plan = crate::decimal_division::apply(plan).map_err(df_error)?;
    crate::fast_intervals::apply(plan).map_err(df_error)
}

/// `IN` and `EXISTS` subqueries as semi and anti joins, and scalar subqueries as left joins
/// with their (single-row or per-key) result, as Flink's planner turns them into joins; only
/// DataFusion's rules for that, no other optimisation.
fn decorrelate(plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
    use datafusion_common::tree_node::TreeNode;
    use datafusion_optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
    use datafusion_optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
    use datafusion_optimizer::{Optimizer, OptimizerContext};
    let has_subquery = plan
        .exists(|p| {
            Ok(p.expressions().iter().any(|e| {
                e.exists(|e| {
                    Ok(matches!(
                        e,
                        datafusion_expr::Expr::InSubquery(_)
                            | datafusion_expr::Expr::Exists(_)
                            | datafusion_expr::Expr::ScalarSubquery(_)
                    ))
                })
                .unwrap_or(false)
            }))
        })
        .map_err(df_error)?;
    if !has_subquery {
        return Ok(plan);
    }
    let optimizer = Optimizer::with_rules(vec![
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ScalarSubqueryToJoin::new()),
    ]);
    let context = OptimizerContext::new_with_config_options(Arc::new(config.clone()));
    optimizer
        .optimize(plan, &context, |_, _| {})
        .map_err(df_error)
}

impl Catalog {
    /// A catalog with Flink's functions.
    pub fn new() -> Self {
        let mut config = ConfigOptions::default();
        config.sql_parser.enable_ident_normalization = false;
        // An uncorrelated scalar subquery is a join too (Flink's plan), not a value computed
        // before the query runs.
        config
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = false;
        Catalog {
            config,
            ..Default::default()
        }
    }

    /// Is `name` taken by a table or view?
    pub fn exists(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.views.contains_key(name)
    }

    /// Plans the columns of a `CREATE TABLE` and registers it.
    pub fn create_table(&mut self, def: CreateTable) -> Result<()> {
        if self.exists(&def.name) {
            if def.if_not_exists {
                return Ok(());
            }
            return Err(SluiceError::Plan(format!(
                "a table or view named '{}' already exists (DROP it first or use CREATE TABLE IF NOT EXISTS)",
                def.name
            )));
        }
        let mut physical = Vec::new();
        let mut metadata = Vec::new();
        for c in &def.columns {
            match c {
                ColumnDef::Physical {
                    name, data_type, ..
                } => physical.push(Field::new(name, data_type.clone(), true)),
                ColumnDef::Metadata {
                    name,
                    data_type,
                    key,
                    ..
                } => metadata.push(MetadataColumn {
                    name: name.clone(),
                    key: key.clone().unwrap_or_else(|| name.clone()),
                    data_type: data_type.clone(),
                }),
                ColumnDef::Computed { .. } => {}
            }
        }
        let physical_schema = Arc::new(Schema::new(physical));
        let mut source_fields: Vec<Field> = physical_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for m in &metadata {
            source_fields.push(Field::new(&m.name, m.data_type.clone(), true));
        }
        let source_schema = Arc::new(Schema::new(source_fields));
        let scan_name = format!("__physical_{}", def.name);
        let provider = self.provider(vec![(scan_name.clone(), source_schema.clone())]);
        let planner = SqlToRel::new_with_options(&provider, parser_options());
        let df_physical = datafusion_common::DFSchema::try_from_qualified_schema(
            scan_name.as_str(),
            &source_schema,
        )
        .map_err(df_error)?;
        let mut exprs = Vec::new();
        for c in &def.columns {
            match c {
                ColumnDef::Physical { name, .. } | ColumnDef::Metadata { name, .. } => {
                    exprs.push(datafusion_expr::col(datafusion_common::Column::new(
                        Some(scan_name.as_str()),
                        name,
                    )))
                }
                ColumnDef::Computed { name, expr } => {
                    let e = planner
                        .sql_to_expr(*expr.clone(), &df_physical, &mut PlannerContext::new())
                        .map_err(|e| {
                            SluiceError::Plan(format!(
                                "table '{}', computed column '{name}': {}",
                                def.name,
                                df_error(e)
                            ))
                        })?;
                    exprs.push(e.alias(name));
                }
            }
        }
        let source = Arc::new(LogicalTableSource::new(source_schema.clone()));
        let plan = LogicalPlanBuilder::scan(scan_name.as_str(), source, None)
            .and_then(|b| b.project(exprs))
            .and_then(|b| b.build())
            .map_err(df_error)?;
        let plan = analyze(plan, &self.config)?;
        let LogicalPlan::Projection(proj) = &plan else {
            return Err(SluiceError::Plan("internal: expected a projection".into()));
        };
        let column_exprs = proj.expr.clone();
        let schema: SchemaRef = Arc::new(Schema::new(
            plan.schema()
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut watermark = None;
        if let Some((col, expr)) = &def.watermark {
            let idx = schema.index_of(col).map_err(|_| {
                SluiceError::Plan(format!(
                    "table '{}': WATERMARK FOR '{col}' names no column; columns are: {}",
                    def.name,
                    column_names(&schema)
                ))
            })?;
            let t = schema.field(idx).data_type();
            if !matches!(t, DataType::Timestamp(TimeUnit::Millisecond, _)) {
                return Err(SluiceError::Plan(format!(
                    "table '{}': the watermark column '{col}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                    def.name,
                    flink_name(t)
                )));
            }
            let wm_name = format!("__table_{}", def.name);
            let provider = self.provider(vec![(wm_name.clone(), schema.clone())]);
            let planner = SqlToRel::new_with_options(&provider, parser_options());
            let df_full =
                datafusion_common::DFSchema::try_from_qualified_schema(wm_name.as_str(), &schema)
                    .map_err(df_error)?;
            let e = planner
                .sql_to_expr(expr.clone(), &df_full, &mut PlannerContext::new())
                .map_err(|e| {
                    SluiceError::Plan(format!(
                        "table '{}', WATERMARK expression: {}",
                        def.name,
                        df_error(e)
                    ))
                })?;
            let source = Arc::new(LogicalTableSource::new(schema.clone()));
            let plan = LogicalPlanBuilder::scan(wm_name.as_str(), source, None)
                .and_then(|b| b.project(vec![e.alias("wm")]))
                .and_then(|b| b.build())
                .map_err(df_error)?;
            let plan = analyze(plan, &self.config)?;
            let LogicalPlan::Projection(proj) = &plan else {
                return Err(SluiceError::Plan("internal: expected a projection".into()));
            };
            let wt = plan.schema().field(0).data_type().clone();
            if !matches!(wt, DataType::Timestamp(_, _)) {
                return Err(SluiceError::Plan(format!(
                    "table '{}': the WATERMARK expression must be a timestamp, not {}",
                    def.name,
                    flink_name(&wt)
                )));
            }
            watermark = Some((idx, proj.expr[0].clone()));
        }
        let mut primary_key = Vec::new();
        for k in &def.primary_key {
            primary_key.push(schema.index_of(k).map_err(|_| {
                SluiceError::Plan(format!(
                    "table '{}': primary key column '{k}' does not exist; columns are: {}",
                    def.name,
                    column_names(&schema)
                ))
            })?);
        }
        for k in &def.partition_keys {
            if physical_schema.index_of(k).is_err() {
                return Err(SluiceError::Plan(format!(
                    "table '{}': PARTITIONED BY names '{k}', which is not a physical column; physical columns are: {}",
                    def.name,
                    column_names(&physical_schema)
                )));
            }
        }
        let options = Options::new(format!("table '{}'", def.name), def.options.clone());
        self.tables.insert(
            def.name.clone(),
            Table {
                def,
                physical_schema,
                metadata,
                source_schema,
                schema,
                column_exprs,
                watermark,
                primary_key,
                options,
            },
        );
        Ok(())
    }

    /// A context provider over this catalog plus `extra` relations.
    pub fn provider(&self, extra: Vec<(String, SchemaRef)>) -> Provider<'_> {
        Provider {
            catalog: self,
            extra,
            planners: FunctionRegistry::expr_planners(),
        }
    }

    /// The schema of a table, view or window relation.
    pub fn relation_schema(&self, name: &str) -> Option<SchemaRef> {
        if let Some(t) = self.tables.get(name) {
            return Some(t.schema.clone());
        }
        if let Some(v) = self.views.get(name) {
            return Some(Arc::new(v.schema().as_arrow().clone()));
        }
        if let Some(m) = self.matches.get(name) {
            return Some(m.schema.clone());
        }
        if let Some(t) = self.temporals.get(name) {
            return self.relation_schema(&t.table);
        }
        self.windows.get(name).map(|w| w.schema.clone())
    }
}

/// Whether column `idx` of `plan` is a processing-time attribute (`PROCTIME()` in a table's
/// computed column, passed on unchanged).
pub fn is_proctime(plan: &LogicalPlan, idx: usize, catalog: &Catalog) -> bool {
    match plan {
        LogicalPlan::Projection(p) => match p.expr.get(idx).map(|e| e.clone().unalias()) {
            Some(datafusion_expr::Expr::Column(c)) => p
                .input
                .schema()
                .index_of_column(&c)
                .is_ok_and(|i| is_proctime(&p.input, i, catalog)),
            Some(e) => crate::functions::is_proctime_call(&e),
            None => false,
        },
        LogicalPlan::SubqueryAlias(a) => is_proctime(&a.input, idx, catalog),
        LogicalPlan::Filter(f) => is_proctime(&f.input, idx, catalog),
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            if let Some(t) = catalog.tables.get(name) {
                t.column_exprs
                    .get(idx)
                    .is_some_and(|e| crate::functions::is_proctime_call(&e.clone().unalias()))
            } else if let Some(v) = catalog.views.get(name) {
                is_proctime(v, idx, catalog)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Column names, for messages.
pub fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// DataFusion's window into the catalog.
pub struct Provider<'a> {
    catalog: &'a Catalog,
    extra: Vec<(String, SchemaRef)>,
    planners: Vec<Arc<dyn ExprPlanner>>,
}

impl ContextProvider for Provider<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion_common::Result<Arc<dyn TableSource>> {
        let key = name.table();
        if let Some((_, s)) = self.extra.iter().find(|(n, _)| n == key) {
            return Ok(Arc::new(LogicalTableSource::new(s.clone())));
        }
        match self.catalog.relation_schema(key) {
            Some(s) => Ok(Arc::new(LogicalTableSource::new(s))),
            None => {
                let mut names: Vec<&str> = self
                    .catalog
                    .tables
                    .keys()
                    .chain(self.catalog.views.keys())
                    .map(String::as_str)
                    .collect();
                names.sort();
                Err(DataFusionError::Plan(format!(
                    "table or view '{key}' not found; declared are: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )))
            }
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.catalog.functions.scalar(name)
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.catalog.functions.aggregate(name)
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.catalog.functions.window(name)
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.catalog.config
    }

    fn udf_names(&self) -> Vec<String> {
        self.catalog.functions.scalar_names()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.catalog.functions.aggregate_names()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.catalog.functions.window_names()
    }
}
