//! Turns DataFusion's logical plan of a query into Sluice's job graph: scans become sources
//! with computed columns and watermark assigners, filters and projections become calcs,
//! aggregations over window relations become window aggregates behind a hash exchange on
//! the key, and an `INSERT` ends in its table's sink.

use crate::catalog::{column_names, df_error, Catalog, WindowRelation};
use crate::operators::append_only_top_n::AppendOnlyTopNFactory;
use crate::operators::calc::{CalcFactory, CalcStep};
use crate::operators::changelog_normalize::ChangelogNormalizeFactory;
use crate::operators::deduplicate::DeduplicateFactory;
use crate::operators::group_aggregate::GroupAggregateFactory;
use crate::operators::over_aggregate::{OverAggregateFactory, OverFrame};
use crate::operators::rank_rows::TopNSpec;
use crate::operators::retract_top_n::RetractTopNFactory;
use crate::operators::top_n::{SortKey, WindowTopNFactory};
use crate::operators::watermark::WatermarkAssignerFactory;
use crate::operators::window_aggregate::{AggSpec, OutCol, WindowAggregateFactory};
use crate::operators::window_assign::WindowAssignFactory;
use crate::types::flink_name;
use arrow::compute::can_cast_types;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion_common::{DFSchema, DFSchemaRef};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion_physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion_physical_expr::{create_physical_expr, PhysicalExpr};
use sluice_common::{Options, Result, SluiceError};
use sluice_engine::{
    ConnectorRegistry, Input, JobGraph, Node, NodeKind, OperatorFactory, Partitioning, SinkSpec,
    SourceSpec,
};
use std::collections::BTreeMap;
use std::sync::Arc;

mod join;
mod match_recognize;
mod temporal_join;

/// The settings of a job (from `SET`).
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub parallelism: usize,
    pub watermark_interval_ms: i64,
    pub time_zone: String,
    /// `table.exec.source.idle-timeout`; `None` (0) never marks a source idle.
    pub source_idle_timeout: Option<std::time::Duration>,
    /// `table.exec.state.ttl`: how long non-windowed state (a GROUP BY's groups) is kept
    /// after its last update; `None` (0) for ever.
    pub state_ttl: Option<std::time::Duration>,
    /// `table.exec.interval-join.min-cleanup-interval`: how much longer than needed an
    /// interval join keeps rows (0, the default, cleans up as soon as it may).
    pub interval_join_min_cleanup_ms: i64,
    /// `pipeline.max-parallelism` and `state.backend.type`.
    pub state: sluice_engine::StateConfig,
    /// `table.exec.sink.not-null-enforcer`: what a NULL in a sink's NOT NULL column does.
    pub not_null_enforcer: crate::operators::not_null::NotNullEnforcer,
    /// `table.optimizer.reuse-source-enabled`: a table read more than once in a job (by two
    /// INSERTs, or twice in a query) is read by one source whose rows go to every reader.
    pub reuse_source: bool,
}

/// The sources planned so far in a job, by table name, with the options they were planned
/// with (a table dropped and created again between statements is a new source).
#[derive(Default)]
pub struct Scans(std::cell::RefCell<BTreeMap<String, (Options, Stream)>>);

/// A stream being built: the node that produces it and what is known about it.
#[derive(Clone)]
struct Stream {
    node: usize,
    parallelism: usize,
    schema: DFSchemaRef,
    /// The time attribute column.
    rowtime: Option<usize>,
    updating: bool,
    /// A window relation whose window columns are not computed yet (a window aggregate
    /// assigns the windows itself).
    pending: Option<WindowRelation>,
    /// The column holding the end of the window a row belongs to (after a window aggregate
    /// or a window table function).
    window_end: Option<usize>,
    /// The column holding the start of that window, if it is still there.
    window_start: Option<usize>,
}

/// Where column `idx` of a projection's input ends up in its output, if it is passed on.
fn passed_through(p: &datafusion_expr::logical_plan::Projection, idx: usize) -> Option<usize> {
    let (q, f) = p.input.schema().qualified_field(idx);
    p.expr.iter().position(|e| {
        matches!(e.clone().unalias(), Expr::Column(c) if c.name == f.name().as_str() && c.relation.as_ref() == q)
    })
}

/// Where an aggregation's keys are: the node that has them, the columns to hash, and the
/// key expressions over that node's output.
struct Keyed {
    node: usize,
    hash_cols: Vec<usize>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
}

/// DataFusion's physical aggregates (with their `FILTER`) for an aggregation's calls.
fn lower_aggregates(exprs: &[Expr], input_schema: &DFSchema) -> Result<Vec<AggSpec>> {
    let props = ExecutionProps::new();
    let planning = PhysicalPlanningContext::default();
    exprs
        .iter()
        .map(|e| {
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                input_schema.as_arrow(),
                &props,
                &planning,
            )
            .build()
            .map_err(df_error)?;
            Ok(AggSpec {
                expr: lowered.aggregate,
                filter: lowered.filter,
            })
        })
        .collect()
}

/// The largest row number a predicate on column `rn` lets through (`rn <= 3`, `rn < 4`,
/// `rn = 1`, `rn BETWEEN 1 AND 3`), if it bounds it.
fn row_number_bound(pred: &Expr, rn: &datafusion_common::Column) -> Option<u64> {
    use datafusion_expr::{BinaryExpr, Operator as Op};
    let lit_u64 = |e: &Expr| -> Option<i64> {
        match e.clone().unalias() {
            Expr::Literal(v, _) => v.to_string().parse::<i64>().ok(),
            Expr::Cast(c) => match *c.expr {
                Expr::Literal(v, _) => v.to_string().parse::<i64>().ok(),
                _ => None,
            },
            _ => None,
        }
    };
    let is_rn = |e: &Expr| -> bool {
        match e.clone().unalias() {
            Expr::Column(c) => c.name == rn.name,
            Expr::Cast(c) => matches!(*c.expr, Expr::Column(ref c) if c.name == rn.name),
            _ => false,
        }
    };
    let mut best: Option<u64> = None;
    for conj in datafusion_expr::utils::split_conjunction(pred) {
        let bound = match conj {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = if is_rn(left) {
                    (*op, lit_u64(right))
                } else if is_rn(right) {
                    let flipped = match op {
                        Op::Gt => Op::Lt,
                        Op::GtEq => Op::LtEq,
                        Op::Lt => Op::Gt,
                        Op::LtEq => Op::GtEq,
                        other => *other,
                    };
                    (flipped, lit_u64(left))
                } else {
                    continue;
                };
                match (op, value) {
                    (Op::LtEq | Op::Eq, Some(v)) => Some(v.max(0) as u64),
                    (Op::Lt, Some(v)) => Some((v - 1).max(0) as u64),
                    _ => None,
                }
            }
            Expr::Between(b) if !b.negated && is_rn(&b.expr) => {
                lit_u64(&b.high).map(|v| v.max(0) as u64)
            }
            _ => None,
        };
        if let Some(b) = bound {
            best = Some(best.map_or(b, |x| x.min(b)));
        }
    }
    best
}

/// Builds job graphs against a catalog and a connector registry.
pub struct Planner<'a> {
    pub catalog: &'a Catalog,
    pub registry: &'a dyn ConnectorRegistry,
    pub config: &'a JobConfig,
    pub scans: &'a Scans,
}

/// Functions that DataFusion evaluates only once its simplifier has rewritten them (into
/// `CASE`); Sluice does not run the simplifier (it would also fold functions such as
/// `NOW()` into constants), so it rewrites just these.
const REWRITTEN_FUNCTIONS: &[&str] = &["coalesce", "nvl", "nvl2"];

fn rewrite_functions(e: &Expr, schema: &DFSchema) -> Result<Expr> {
    use datafusion_common::tree_node::{Transformed, TreeNode};
    use datafusion_expr::simplify::{ExprSimplifyResult, SimplifyContext};
    let ctx = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    e.clone()
        .transform_up(|e| match e {
            Expr::ScalarFunction(f) if REWRITTEN_FUNCTIONS.contains(&f.func.name()) => {
                match f.func.simplify(f.args, &ctx)? {
                    ExprSimplifyResult::Simplified(e) => Ok(Transformed::yes(e)),
                    ExprSimplifyResult::Original(args) => {
                        Ok(Transformed::no(Expr::ScalarFunction(
                            datafusion_expr::expr::ScalarFunction::new_udf(f.func, args),
                        )))
                    }
                }
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .map_err(df_error)
}

fn physical(e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    create_physical_expr(
        &rewrite_functions(e, schema)?,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .map_err(df_error)
}

fn arrow_schema(s: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(
        s.fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn unsupported(what: &str) -> SluiceError {
    SluiceError::Plan(format!("{what} is not supported in streaming queries yet"))
}

impl Planner<'_> {
    fn add(
        &self,
        graph: &mut JobGraph,
        name: String,
        parallelism: usize,
        factory: Arc<dyn OperatorFactory>,
        input: usize,
        partitioning: Partitioning,
    ) -> usize {
        graph.add(Node {
            name,
            parallelism,
            kind: NodeKind::Operator(factory),
            inputs: vec![Input {
                node: input,
                partitioning,
            }],
        })
    }

    fn calc(&self, graph: &mut JobGraph, s: &Stream, name: String, step: CalcStep) -> usize {
        let f = Arc::new(CalcFactory {
            name: name.clone(),
            step,
        });
        self.add(graph, name, s.parallelism, f, s.node, Partitioning::Forward)
    }

    /// The nodes of a scan of `name` (a table, a view, a window or a match relation).
    fn scan(
        &self,
        scan: &datafusion_expr::logical_plan::TableScan,
        name: &str,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        if scan.projection.is_some() || !scan.filters.is_empty() {
            return Err(SluiceError::Plan(
                "internal: unexpected pushed-down scan".into(),
            ));
        }
        if let Some(view) = self.catalog.views.get(name) {
            let mut s = self.translate(view, graph)?;
            s.schema = scan.projected_schema.clone();
            return Ok(s);
        }
        if let Some(m) = self.catalog.matches.get(name) {
            let mut s = self.match_recognize(m, graph)?;
            s.schema = scan.projected_schema.clone();
            return Ok(s);
        }
        if let Some(w) = self.catalog.windows.get(name) {
            let mut s = self.translate(&w.input, graph)?;
            if w.proctime && matches!(w.tvf.kind, crate::window::WindowKind::Session { .. }) {
                return Err(unsupported("SESSION windows on processing time"));
            }
            if s.rowtime != Some(w.time_index) && !w.proctime {
                return Err(SluiceError::Plan(format!(
                        "the window column '{}' is not a time attribute; declare it with WATERMARK FOR {} AS ... in the table",
                        w.tvf.time_column, w.tvf.time_column
                    )));
            }
            s.schema = scan.projected_schema.clone();
            s.pending = Some(w.clone());
            return Ok(s);
        }
        self.source(name, scan.projected_schema.clone(), graph)
    }

    /// A `VALUES` clause: a bounded source of its rows, each expression evaluated once.
    fn values(
        &self,
        v: &datafusion_expr::logical_plan::Values,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let empty = DFSchema::empty();
        let one_row = arrow::record_batch::RecordBatch::try_new_with_options(
            Arc::new(Schema::empty()),
            vec![],
            &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        let schema = arrow_schema(&v.schema);
        let mut columns: Vec<Vec<arrow::array::ArrayRef>> = vec![Vec::new(); schema.fields().len()];
        for row in &v.values {
            for (i, e) in row.iter().enumerate() {
                let value = physical(e, &empty)?
                    .evaluate(&one_row)
                    .and_then(|c| c.into_array(1))
                    .map_err(df_error)?;
                columns[i].push(arrow::compute::cast(&value, schema.field(i).data_type())?);
            }
        }
        let columns = columns
            .iter()
            .map(|parts| {
                let parts: Vec<&dyn arrow::array::Array> =
                    parts.iter().map(|a| a.as_ref()).collect();
                arrow::compute::concat(&parts)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rows = arrow::record_batch::RecordBatch::try_new(schema, columns)?;
        let node = graph.add(Node {
            name: "Source: Values".into(),
            parallelism: 1,
            kind: NodeKind::Source(Arc::new(crate::operators::values::ValuesFactory { rows })),
            inputs: vec![],
        });
        Ok(Stream {
            node,
            parallelism: 1,
            schema: v.schema.clone(),
            rowtime: None,
            updating: false,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }

    /// `s` with only the rows for which `predicate` (over `schema`) is true.
    fn filtered(
        &self,
        s: Stream,
        predicate: &Expr,
        schema: &DFSchema,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let step = CalcStep::Filter(physical(predicate, schema)?);
        let node = self.calc(graph, &s, "Filter".into(), step);
        Ok(Stream { node, ..s })
    }

    /// Adds the nodes of `plan` to `graph`.
    fn translate(&self, plan: &LogicalPlan, graph: &mut JobGraph) -> Result<Stream> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                if let Some(t) = self.catalog.temporals.get(name) {
                    return Err(crate::parser::err_at(
                        t.location,
                        "FOR SYSTEM_TIME AS OF reads a table as of the time of the other input of a join: it must be on the right of a JOIN",
                    ));
                }
                self.scan(scan, name, graph)
            }
            LogicalPlan::SubqueryAlias(a) => {
                let mut s = self.translate(&a.input, graph)?;
                s.schema = a.schema.clone();
                Ok(s)
            }
            LogicalPlan::Filter(f) => {
                if let LogicalPlan::Join(j) = f.input.as_ref() {
                    if j.join_type == datafusion_expr::JoinType::Inner {
                        return self.join(j, Some(&f.predicate), graph);
                    }
                }
                if let Some(s) = self.top_n(f, None, graph)? {
                    return Ok(s);
                }
                let mut s = self.translate(&f.input, graph)?;
                if s.pending.is_some() {
                    let width = f.input.schema().fields().len();
                    let uses_window = f.predicate.column_refs().iter().any(|c| {
                        f.input
                            .schema()
                            .index_of_column(c)
                            .map(|i| i + 3 >= width)
                            .unwrap_or(false)
                    });
                    if uses_window {
                        s = self.materialize(s, graph)?;
                    }
                }
                self.filtered(s, &f.predicate, f.input.schema(), graph)
            }
            LogicalPlan::Projection(p) => {
                // A Top-N right below: whether the row number is selected decides its changelog.
                let top_n = match p.input.as_ref() {
                    LogicalPlan::Filter(f) => self.top_n(f, Some(p), graph)?,
                    _ => None,
                };
                let mut s = match top_n {
                    Some(s) => s,
                    None => self.translate(&p.input, graph)?,
                };
                if s.pending.is_some() {
                    s = self.materialize(s, graph)?;
                }
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let rowtime = s.rowtime.and_then(|rt| passed_through(p, rt));
                let window_end = s.window_end.and_then(|we| passed_through(p, we));
                let window_start = s.window_start.and_then(|ws| passed_through(p, ws));
                let schema = arrow_schema(&p.schema);
                let node = self.calc(graph, &s, "Calc".into(), CalcStep::Project(exprs, schema));
                Ok(Stream {
                    node,
                    schema: p.schema.clone(),
                    rowtime,
                    window_end,
                    window_start,
                    ..s
                })
            }
            LogicalPlan::Aggregate(agg) => self.aggregate(agg, graph),
            LogicalPlan::Join(j) => self.join(j, None, graph),
            LogicalPlan::Union(u) => self.union(u, graph),
            LogicalPlan::Sort(_) => Err(unsupported("ORDER BY (other than in a window Top-N)")),
            LogicalPlan::Limit(_) => Err(unsupported("LIMIT")),
            LogicalPlan::Window(w) => self.over(w, graph),
            LogicalPlan::Distinct(_) => Err(unsupported("SELECT DISTINCT")),
            LogicalPlan::Values(v) => self.values(v, graph),
            other => Err(unsupported(&format!("the plan node {}", other.display()))),
        }
    }

    /// OVER aggregates: `agg(...) OVER (PARTITION BY ... ORDER BY rowtime [frame])`, all
    /// over the same window, as Flink requires.
    fn over(
        &self,
        w: &datafusion_expr::logical_plan::Window,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        use datafusion_expr::{WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition};
        let mut s = self.translate(&w.input, graph)?;
        if s.pending.is_some() {
            s = self.materialize(s, graph)?;
        }
        if s.updating {
            return Err(unsupported("an OVER aggregate over an updating stream"));
        }
        let input_schema = w.input.schema();
        let mut aggregates = Vec::new();
        let mut window: Option<&datafusion_expr::expr::WindowFunctionParams> = None;
        for e in &w.window_expr {
            let Expr::WindowFunction(wf) = e.clone().unalias() else {
                return Err(unsupported(&format!("the OVER expression {e}")));
            };
            let WindowFunctionDefinition::AggregateUDF(udaf) = &wf.fun else {
                return Err(unsupported(&format!(
                    "{} OVER (...) other than in a Top-N or a deduplication (ROW_NUMBER() ... WHERE rownum <= N)",
                    wf.fun
                )));
            };
            let params = &wf.params;
            if let Some(first) = window {
                if first.partition_by != params.partition_by
                    || first.order_by != params.order_by
                    || first.window_frame != params.window_frame
                {
                    return Err(SluiceError::Plan(
                        "OVER aggregates in one SELECT must use the same window (PARTITION BY, ORDER BY and frame), as in Flink".into(),
                    ));
                }
            }
            aggregates.push(Expr::AggregateFunction(
                datafusion_expr::expr::AggregateFunction::new_udf(
                    udaf.clone(),
                    params.args.clone(),
                    params.distinct,
                    params.filter.clone(),
                    vec![],
                    params.null_treatment,
                ),
            ));
            if window.is_none() {
                window = w.window_expr.iter().find_map(|x| match x {
                    Expr::WindowFunction(f) => Some(&f.params),
                    Expr::Alias(a) => match a.expr.as_ref() {
                        Expr::WindowFunction(f) => Some(&f.params),
                        _ => None,
                    },
                    _ => None,
                });
            }
        }
        let Some(params) = window else {
            return Err(SluiceError::Plan(
                "internal: an OVER without a window".into(),
            ));
        };
        let order_error = || {
            SluiceError::Plan(
                "an OVER window must be ordered by one time attribute, ascending (ORDER BY rowtime)"
                    .into(),
            )
        };
        let rowtime = match params.order_by.as_slice() {
            [o] if o.asc => match o.expr.clone().unalias() {
                Expr::Column(c) => input_schema.index_of_column(&c).ok(),
                _ => None,
            },
            _ => None,
        }
        .filter(|i| Some(*i) == s.rowtime)
        .ok_or_else(order_error)?;
        let frame = &params.window_frame;
        if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
            return Err(unsupported(
                "an OVER window that ends after the current row",
            ));
        }
        let frame = match (&frame.units, &frame.start_bound) {
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => {
                OverFrame::Range(None)
            }
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => {
                OverFrame::Rows(None)
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => {
                OverFrame::Range(Some(join::interval_ms(v).ok_or_else(|| {
                    SluiceError::Plan(format!(
                        "RANGE BETWEEN {v} PRECEDING: expected an interval such as INTERVAL '1' HOUR"
                    ))
                })?))
            }
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
                OverFrame::Rows(Some(v.to_string().parse::<u64>().map_err(|_| {
                    SluiceError::Plan(format!("ROWS BETWEEN {v} PRECEDING: expected a row count"))
                })?))
            }
            (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => OverFrame::Range(Some(0)),
            (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => OverFrame::Rows(Some(0)),
            _ => return Err(unsupported(&format!("the OVER frame {}", params.window_frame))),
        };
        let aggs = lower_aggregates(&aggregates, input_schema)?;
        let partition_cols: Vec<Option<usize>> = params
            .partition_by
            .iter()
            .map(|e| match e.clone().unalias() {
                Expr::Column(c) => input_schema.index_of_column(&c).ok(),
                _ => None,
            })
            .collect();
        let partition_by = params
            .partition_by
            .iter()
            .map(|e| physical(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let (parallelism, partitioning) = if partition_cols.iter().all(Option::is_some) {
            (
                self.config.parallelism,
                Partitioning::Hash(partition_cols.iter().flatten().copied().collect()),
            )
        } else {
            (1, Partitioning::Single)
        };
        let factory = Arc::new(OverAggregateFactory {
            input_schema: arrow_schema(input_schema),
            output_schema: arrow_schema(&w.schema),
            partition_by,
            rowtime,
            frame,
            aggs,
        });
        let node = self.add(
            graph,
            factory.name(),
            parallelism,
            factory,
            s.node,
            partitioning,
        );
        Ok(Stream {
            node,
            parallelism,
            schema: w.schema.clone(),
            rowtime: Some(rowtime),
            updating: false,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }

    /// `UNION ALL` of streams: one union node, forward from inputs of its parallelism.
    fn union(
        &self,
        u: &datafusion_expr::logical_plan::Union,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let mut inputs = Vec::new();
        for plan in &u.inputs {
            let mut s = self.translate(plan, graph)?;
            if s.pending.is_some() {
                s = self.materialize(s, graph)?;
            }
            for (i, (have, want)) in plan
                .schema()
                .fields()
                .iter()
                .zip(u.schema.fields())
                .enumerate()
            {
                if have.data_type() != want.data_type() {
                    return Err(SluiceError::Plan(format!(
                        "UNION ALL: column {} is {} in one input and {} in the union; CAST it",
                        i + 1,
                        flink_name(have.data_type()),
                        flink_name(want.data_type())
                    )));
                }
            }
            inputs.push(s);
        }
        let parallelism = self.config.parallelism;
        let node = graph.add(Node {
            name: "Union".into(),
            parallelism,
            kind: NodeKind::Operator(Arc::new(crate::operators::union::UnionFactory {
                schema: arrow_schema(&u.schema),
            })),
            inputs: inputs
                .iter()
                .map(|s| Input {
                    node: s.node,
                    partitioning: if s.parallelism == parallelism {
                        Partitioning::Forward
                    } else {
                        Partitioning::Rebalance
                    },
                })
                .collect(),
        });
        // A column is the time attribute (or window end) only if it is in every input.
        let common = |f: fn(&Stream) -> Option<usize>| {
            let first = f(&inputs[0]);
            inputs
                .iter()
                .all(|s| f(s) == first)
                .then_some(first)
                .flatten()
        };
        Ok(Stream {
            node,
            parallelism,
            schema: u.schema.clone(),
            rowtime: common(|s| s.rowtime),
            updating: inputs.iter().any(|s| s.updating),
            pending: None,
            window_end: common(|s| s.window_end),
            window_start: common(|s| s.window_start),
        })
    }

    /// Computes the window columns of a pending window relation (one row per window).
    fn materialize(&self, s: Stream, graph: &mut JobGraph) -> Result<Stream> {
        let Some(w) = s.pending.clone() else {
            return Ok(s);
        };
        if w.proctime {
            return Err(unsupported(
                "processing-time windows other than aggregated (GROUP BY window_start, window_end, ...)",
            ));
        }
        if matches!(w.tvf.kind, crate::window::WindowKind::Session { .. }) {
            return Err(SluiceError::Plan(
                "a SESSION window table function can only be aggregated (GROUP BY window_start, window_end, ...)".into(),
            ));
        }
        let output_schema = arrow_schema(&s.schema);
        let width = output_schema.fields().len();
        let f = Arc::new(WindowAssignFactory {
            kind: w.tvf.kind.clone(),
            time_index: w.time_index,
            output_schema,
        });
        let node = self.add(
            graph,
            f.name(),
            s.parallelism,
            f,
            s.node,
            Partitioning::Forward,
        );
        Ok(Stream {
            node,
            pending: None,
            window_end: Some(width - 2),
            window_start: Some(width - 3),
            rowtime: Some(width - 1),
            ..s
        })
    }

    /// A window Top-N: `Filter(rownum <= N)` over `ROW_NUMBER() OVER (PARTITION BY
    /// window_start, window_end ...)`, possibly with projections and aliases between.
    fn top_n(
        &self,
        f: &datafusion_expr::logical_plan::Filter,
        above: Option<&datafusion_expr::logical_plan::Projection>,
        graph: &mut JobGraph,
    ) -> Result<Option<Stream>> {
        // The nodes between the filter and the window, top down.
        let mut wrappers: Vec<&LogicalPlan> = Vec::new();
        let mut node: &LogicalPlan = &f.input;
        let window = loop {
            match node {
                LogicalPlan::SubqueryAlias(a) => {
                    wrappers.push(node);
                    node = &a.input;
                }
                LogicalPlan::Projection(p) => {
                    wrappers.push(node);
                    node = &p.input;
                }
                LogicalPlan::Window(w) => break w,
                _ => return Ok(None),
            }
        };
        let [Expr::WindowFunction(wf)] = window.window_expr.as_slice() else {
            return Ok(None);
        };
        let is_row_number = match &wf.fun {
            datafusion_expr::WindowFunctionDefinition::WindowUDF(u) => u.name() == "row_number",
            _ => false,
        };
        if !is_row_number {
            return Ok(None);
        }
        // Follow the row number column up to the filter.
        let mut rn_index = Some(window.input.schema().fields().len());
        for w in wrappers.iter().rev() {
            rn_index = match (w, rn_index) {
                (LogicalPlan::Projection(p), Some(i)) => passed_through(p, i),
                (_, i) => i,
            };
        }
        let Some(rn_index) = rn_index else {
            return Ok(None);
        };
        let (q, field) = f.input.schema().qualified_field(rn_index);
        let rn_col = datafusion_common::Column::new(q.cloned(), field.name());
        let Some(limit) = row_number_bound(&f.predicate, &rn_col) else {
            return Ok(None);
        };

        let mut s = self.translate(&window.input, graph)?;
        if s.pending.is_some() {
            s = self.materialize(s, graph)?;
        }
        let input_schema = window.input.schema();
        let params = &wf.params;
        let partition_cols: Vec<Option<usize>> = params
            .partition_by
            .iter()
            .map(|e| match e.clone().unalias() {
                Expr::Column(c) => input_schema.index_of_column(&c).ok(),
                _ => None,
            })
            .collect();
        let window_end = s
            .window_end
            .filter(|we| partition_cols.contains(&Some(*we)));
        let partition_by = params
            .partition_by
            .iter()
            .map(|e| physical(e, input_schema))
            .collect::<Result<Vec<_>>>()?;
        let (parallelism, partitioning) = if partition_cols.iter().all(Option::is_some) {
            (
                self.config.parallelism,
                Partitioning::Hash(partition_cols.iter().flatten().copied().collect()),
            )
        } else {
            (1, Partitioning::Single)
        };
        let order_by_rowtime = match params.order_by.as_slice() {
            [o] => match o.expr.clone().unalias() {
                Expr::Column(c) => {
                    (input_schema.index_of_column(&c).ok() == s.rowtime).then_some(!o.asc)
                }
                _ => None,
            },
            _ => None,
        };
        let mut keeps_rowtime = false;
        let (name, factory, updating): (String, Arc<dyn OperatorFactory>, bool) =
            match (window_end, order_by_rowtime.filter(|_| !s.updating)) {
                (Some(_), _) if s.updating => {
                    return Err(unsupported("a window Top-N over an updating stream"));
                }
                (Some(window_end), _) => {
                    let order_by = params
                        .order_by
                        .iter()
                        .map(|o| {
                            Ok(SortKey {
                                expr: physical(&o.expr, input_schema)?,
                                descending: !o.asc,
                                nulls_first: o.nulls_first,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let name = format!("WindowTopN(rownum <= {limit})");
                    let factory = Arc::new(WindowTopNFactory {
                        name: name.clone(),
                        window_end_index: window_end,
                        partition_by,
                        order_by,
                        limit,
                        output_schema: arrow_schema(&window.schema),
                    });
                    (name, factory, false)
                }
                (None, Some(keep_last)) if limit == 1 => {
                    let (Some(rowtime), false) = (s.rowtime, s.updating) else {
                        return Err(unsupported("deduplication over an updating stream"));
                    };
                    let factory = Arc::new(DeduplicateFactory {
                        input_schema: arrow_schema(input_schema),
                        output_schema: arrow_schema(&window.schema),
                        partition_by,
                        rowtime,
                        keep_last,
                        state_ttl: self.config.state_ttl,
                    });
                    // Keeping the last row updates; keeping the first is append-only. Either
                    // way the time attribute stays one (the latest row per key on event time
                    // is a versioned view, for temporal joins).
                    keeps_rowtime = true;
                    (factory.name(), factory, keep_last)
                }
                (None, _) => {
                    let rn = rn_col.clone();
                    let output_rank = above.is_none_or(|p| {
                        p.expr
                            .iter()
                            .any(|e| e.column_refs().iter().any(|c| c.name == rn.name))
                    });
                    let order_by = params
                        .order_by
                        .iter()
                        .map(|o| {
                            Ok(SortKey {
                                expr: physical(&o.expr, input_schema)?,
                                descending: !o.asc,
                                nulls_first: o.nulls_first,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let spec = TopNSpec {
                        input_schema: arrow_schema(input_schema),
                        output_schema: arrow_schema(&window.schema),
                        partition_by,
                        order_by,
                        limit,
                        output_rank,
                        state_ttl: self.config.state_ttl,
                    };
                    // Over updating input, rows may be taken back: all of them are kept
                    // (Flink's RetractableTopNFunction).
                    let factory: Arc<dyn OperatorFactory> = if s.updating {
                        Arc::new(RetractTopNFactory(spec))
                    } else {
                        Arc::new(AppendOnlyTopNFactory(spec))
                    };
                    (factory.name(), factory, true)
                }
            };
        let node = self.add(graph, name, parallelism, factory, s.node, partitioning);
        let mut out = Stream {
            node,
            parallelism,
            schema: window.schema.clone(),
            // An updating result has no time attribute, but for deduplication's.
            rowtime: if updating && !keeps_rowtime {
                None
            } else {
                s.rowtime
            },
            updating,
            pending: None,
            window_start: window_end.and(s.window_start),
            window_end,
        };
        for w in wrappers.iter().rev() {
            out = match w {
                LogicalPlan::Projection(p) => {
                    let exprs = p
                        .expr
                        .iter()
                        .map(|e| physical(e, p.input.schema()))
                        .collect::<Result<Vec<_>>>()?;
                    let rowtime = out.rowtime.and_then(|rt| passed_through(p, rt));
                    let window_end = out.window_end.and_then(|we| passed_through(p, we));
                    let window_start = out.window_start.and_then(|ws| passed_through(p, ws));
                    let node = self.calc(
                        graph,
                        &out,
                        "Calc".into(),
                        CalcStep::Project(exprs, arrow_schema(&p.schema)),
                    );
                    Stream {
                        node,
                        schema: p.schema.clone(),
                        rowtime,
                        window_end,
                        window_start,
                        ..out
                    }
                }
                LogicalPlan::SubqueryAlias(a) => Stream {
                    schema: a.schema.clone(),
                    ..out
                },
                _ => out,
            };
        }
        self.filtered(out, &f.predicate, f.input.schema(), graph)
            .map(Some)
    }

    /// Key columns for a hash exchange on `keys`: plain columns as they are; otherwise a calc
    /// appends the key expressions to the first `width` columns of the input.
    fn key_by(
        &self,
        keys: &[Expr],
        key_types: &[arrow::datatypes::DataType],
        input_schema: &DFSchema,
        width: usize,
        s: &Stream,
        graph: &mut JobGraph,
    ) -> Result<Keyed> {
        let mut keyed = Keyed {
            node: s.node,
            hash_cols: Vec::new(),
            keys: Vec::new(),
        };
        if keys
            .iter()
            .all(|k| matches!(k.clone().unalias(), Expr::Column(_)))
        {
            for k in keys {
                let Expr::Column(c) = k.clone().unalias() else {
                    unreachable!()
                };
                keyed
                    .hash_cols
                    .push(input_schema.index_of_column(&c).map_err(df_error)?);
                keyed.keys.push(physical(k, input_schema)?);
            }
            return Ok(keyed);
        }
        let mut exprs = Vec::new();
        let mut fields = Vec::new();
        for i in 0..width {
            let (q, f) = input_schema.qualified_field(i);
            exprs.push(physical(
                &Expr::Column(datafusion_common::Column::new(q.cloned(), f.name())),
                input_schema,
            )?);
            fields.push(Field::new(f.name(), f.data_type().clone(), true));
        }
        for (j, k) in keys.iter().enumerate() {
            let name = format!("__key{j}");
            exprs.push(physical(k, input_schema)?);
            fields.push(Field::new(&name, key_types[j].clone(), true));
            keyed.hash_cols.push(width + j);
            keyed.keys.push(Arc::new(
                datafusion_physical_expr::expressions::Column::new(&name, width + j),
            ));
        }
        let f = Arc::new(CalcFactory {
            name: "KeyBy".into(),
            step: CalcStep::Project(exprs, Arc::new(Schema::new(fields))),
        });
        keyed.node = self.add(
            graph,
            "KeyBy".into(),
            s.parallelism,
            f,
            s.node,
            Partitioning::Forward,
        );
        Ok(keyed)
    }

    /// The stream of table `name` (its columns `schema`): a new source, or the one planned
    /// before in this job (Flink's source reuse).
    fn source(&self, name: &str, schema: DFSchemaRef, graph: &mut JobGraph) -> Result<Stream> {
        let table = self
            .catalog
            .tables
            .get(name)
            .ok_or_else(|| SluiceError::Plan(format!("table '{name}' not found")))?;
        if self.config.reuse_source {
            if let Some((options, s)) = self.scans.0.borrow().get(name) {
                if options.iter().eq(table.options.iter()) {
                    return Ok(Stream {
                        schema,
                        ..s.clone()
                    });
                }
            }
        }
        let s = self.new_source(name, schema, graph)?;
        self.scans
            .0
            .borrow_mut()
            .insert(name.to_string(), (table.options.clone(), s.clone()));
        Ok(s)
    }

    fn new_source(&self, name: &str, schema: DFSchemaRef, graph: &mut JobGraph) -> Result<Stream> {
        let table = self
            .catalog
            .tables
            .get(name)
            .ok_or_else(|| SluiceError::Plan(format!("table '{name}' not found")))?;
        let connector = table.options.required("connector")?.to_string();
        let spec = SourceSpec {
            table: name.to_string(),
            schema: table.physical_schema.clone(),
            metadata: table.metadata.clone(),
            options: table.options.clone(),
            idle_timeout: self.config.source_idle_timeout,
            primary_key: table.def.primary_key.clone(),
            partition_keys: table.def.partition_keys.clone(),
        };
        let factory = self.registry.source(&connector, &spec)?;
        let updating = factory.produces_updates();
        let upserts = factory.produces_upserts();
        let parallelism = match table.options.i64("scan.parallelism")? {
            Some(p) if p > 0 => p as usize,
            _ => self.config.parallelism,
        };
        let mut node = graph.add(Node {
            name: format!("Source: {} [{}]", name, factory.name()),
            parallelism,
            kind: NodeKind::Source(factory),
            inputs: vec![],
        });
        // The declared columns are the produced ones in order, or a projection is needed
        // (computed columns, metadata columns declared before physical ones).
        let produced = table.source_schema.fields();
        let as_produced = table.column_exprs.len() == produced.len()
            && table
                .column_exprs
                .iter()
                .zip(produced.iter())
                .all(|(e, f)| matches!(e, Expr::Column(c) if c.name == *f.name()));
        if !as_produced {
            let scan_name = format!("__physical_{name}");
            let df = DFSchema::try_from_qualified_schema(scan_name.as_str(), &table.source_schema)
                .map_err(df_error)?;
            let exprs = table
                .column_exprs
                .iter()
                .map(|e| physical(e, &df))
                .collect::<Result<Vec<_>>>()?;
            let f = Arc::new(CalcFactory {
                name: "ComputedColumns".into(),
                step: CalcStep::Project(exprs, table.schema.clone()),
            });
            node = self.add(
                graph,
                "ComputedColumns".into(),
                parallelism,
                f,
                node,
                Partitioning::Forward,
            );
        }
        let mut rowtime = None;
        if let Some((idx, expr)) = &table.watermark {
            let wm_name = format!("__table_{name}");
            let df = DFSchema::try_from_qualified_schema(wm_name.as_str(), &table.schema)
                .map_err(df_error)?;
            let f = Arc::new(WatermarkAssignerFactory {
                table: name.to_string(),
                rowtime_index: *idx,
                expr: physical(expr, &df)?,
                interval_ms: self.config.watermark_interval_ms,
            });
            node = self.add(
                graph,
                format!("WatermarkAssigner({name})"),
                parallelism,
                f,
                node,
                Partitioning::Forward,
            );
            rowtime = Some(*idx);
        }
        if upserts {
            // Upserts become a changelog behind a hash exchange on the primary key, after
            // the watermark assigner (which keeps the source's per-split watermarks), as in
            // Flink's plan for upsert-kafka.
            let key_columns = table.primary_key.clone();
            let f = Arc::new(ChangelogNormalizeFactory {
                table: name.to_string(),
                key_columns: key_columns.clone(),
                schema: table.schema.clone(),
                state_ttl: self.config.state_ttl,
            });
            node = self.add(
                graph,
                format!("ChangelogNormalize({name})"),
                parallelism,
                f,
                node,
                Partitioning::Hash(key_columns),
            );
        }
        Ok(Stream {
            node,
            parallelism,
            schema,
            rowtime,
            updating,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }

    fn aggregate(
        &self,
        agg: &datafusion_expr::logical_plan::Aggregate,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let s = self.translate(&agg.input, graph)?;
        let input_schema = agg.input.schema();
        let width = input_schema.fields().len();
        let grouped = |col: usize| {
            agg.group_expr.iter().any(|g| {
                matches!(g.clone().unalias(), Expr::Column(c) if input_schema.index_of_column(&c).ok() == Some(col))
            })
        };
        // (kind, window_start, window_end, window_time columns, time column, columns that
        // exist: a window table function's window columns are not computed yet).
        let (kind, (ws, we, wt), time_index, existing) =
            match (&s.pending, s.window_start, s.window_end) {
                (Some(_), _, _) if s.updating => {
                    return Err(SluiceError::Plan(
                        "a window aggregate needs an append-only input, and its input has updates and deletes (an aggregate, an outer or regular join, an upsert table, a Top-N); as in Flink, aggregate it without a window or window the rows before they are updated".into(),
                    ))
                }
                (Some(window), _, _) => (
                    window.tvf.kind.clone(),
                    (width - 3, width - 2, width - 1),
                    window.time_index,
                    width - 3,
                ),
                // Grouped by a window aggregate's window_start and window_end: the same windows,
                // aggregated again when they close (Flink's cascaded window aggregation).
                (None, Some(ws), Some(we)) if !s.updating && grouped(ws) && grouped(we) => (
                    crate::window::WindowKind::Attached { start_index: ws },
                    (ws, we, s.rowtime.unwrap_or(usize::MAX)),
                    we,
                    width,
                ),
                _ => return self.group_aggregate(agg, s, graph),
            };
        let mut layout = Vec::new();
        let mut keys = Vec::new();
        let mut key_types = Vec::new();
        for g in &agg.group_expr {
            let col_idx = match g.clone().unalias() {
                Expr::Column(c) => input_schema.index_of_column(&c).ok(),
                _ => None,
            };
            match col_idx {
                Some(i) if i == ws => layout.push(OutCol::Start),
                Some(i) if i == we => layout.push(OutCol::End),
                Some(i) if i == wt => layout.push(OutCol::Time),
                _ => {
                    let uses_window = g.column_refs().iter().any(|c| {
                        input_schema
                            .index_of_column(c)
                            .map(|i| [ws, we, wt].contains(&i))
                            .unwrap_or(false)
                    });
                    if uses_window {
                        return Err(unsupported(
                            "grouping by an expression of the window columns",
                        ));
                    }
                    layout.push(OutCol::Key(keys.len()));
                    key_types.push(g.get_type(input_schema).map_err(df_error)?);
                    keys.push(g.clone());
                }
            }
        }
        if !(layout.contains(&OutCol::Start) && layout.contains(&OutCol::End)) {
            return Err(SluiceError::Plan(
                "a window aggregation must GROUP BY both window_start and window_end".into(),
            ));
        }
        let keyed = self.key_by(&keys, &key_types, input_schema, existing, &s, graph)?;
        let aggs = lower_aggregates(&agg.aggr_expr, input_schema)?;
        let (parallelism, partitioning) = if keys.is_empty() {
            (1, Partitioning::Single)
        } else {
            (self.config.parallelism, Partitioning::Hash(keyed.hash_cols))
        };
        let output_schema = arrow_schema(&agg.schema);
        let proctime = s.pending.as_ref().is_some_and(|w| w.proctime);
        let name = format!(
            "WindowAggregate({}{})",
            kind.describe(),
            if proctime { ", processing time" } else { "" }
        );
        let f = Arc::new(WindowAggregateFactory {
            name: name.clone(),
            proctime,
            kind,
            time_index,
            keys: keyed.keys,
            key_types,
            layout: layout.clone(),
            aggs,
            output_schema,
        });
        let node = self.add(graph, name, parallelism, f, keyed.node, partitioning);
        // Processing-time windows give no event time to follow.
        let position = |c: OutCol| layout.iter().position(|x| *x == c).filter(|_| !proctime);
        let rowtime = position(OutCol::Time);
        let window_end = position(OutCol::End);
        let window_start = position(OutCol::Start);
        Ok(Stream {
            node,
            parallelism,
            schema: agg.schema.clone(),
            rowtime,
            updating: false,
            pending: None,
            window_end,
            window_start,
        })
    }

    /// A non-windowed `GROUP BY`: an updating stream keyed by the group.
    fn group_aggregate(
        &self,
        agg: &datafusion_expr::logical_plan::Aggregate,
        s: Stream,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let input_schema = agg.input.schema();
        let width = input_schema.fields().len();
        let key_types = agg
            .group_expr
            .iter()
            .map(|g| g.get_type(input_schema).map_err(df_error))
            .collect::<Result<Vec<_>>>()?;
        let keyed = self.key_by(&agg.group_expr, &key_types, input_schema, width, &s, graph)?;
        let aggs = lower_aggregates(&agg.aggr_expr, input_schema)?;
        if s.updating {
            // Retractions need accumulators that can take a row back out.
            for a in &aggs {
                let retracts = a
                    .expr
                    .create_sliding_accumulator()
                    .map(|acc| acc.supports_retract_batch())
                    .unwrap_or(false);
                if !retracts {
                    return Err(unsupported(&format!(
                        "{} over an updating stream (its input has updates or deletes, and the aggregate cannot take rows back out)",
                        a.expr.name()
                    )));
                }
            }
        }
        let keys = keyed.keys;
        let (parallelism, partitioning) = if keys.is_empty() {
            (1, Partitioning::Single)
        } else {
            (self.config.parallelism, Partitioning::Hash(keyed.hash_cols))
        };
        let name = "GroupAggregate".to_string();
        let f = Arc::new(GroupAggregateFactory {
            name: name.clone(),
            keys,
            key_types,
            aggs,
            output_schema: arrow_schema(&agg.schema),
            retracting: s.updating,
            state_ttl: self.config.state_ttl,
        });
        let node = self.add(graph, name, parallelism, f, keyed.node, partitioning);
        Ok(Stream {
            node,
            parallelism,
            schema: agg.schema.clone(),
            rowtime: None,
            updating: true,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }

    /// Adds a query and its sink (`INSERT INTO table`, or printing for a bare `SELECT`).
    pub fn plan_insert(
        &self,
        plan: &LogicalPlan,
        sink: Option<&str>,
        graph: &mut JobGraph,
    ) -> Result<()> {
        let mut s = self.translate(plan, graph)?;
        if s.pending.is_some() {
            s = self.materialize(s, graph)?;
        }
        let (sink_name, connector, options, target, sink_schema, primary_key, partition_keys) =
            match sink {
                Some(t) => {
                    let table = self.catalog.tables.get(t).ok_or_else(|| {
                        SluiceError::Plan(format!(
                            "INSERT INTO '{t}': no such table; declared tables are: {}",
                            self.catalog
                                .tables
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    let persisted = table.def.columns.iter().find_map(|c| match c {
                        crate::parser::ColumnDef::Metadata {
                            name,
                            is_virtual: false,
                            ..
                        } => Some(name.clone()),
                        _ => None,
                    });
                    if let Some(name) = persisted {
                        return Err(SluiceError::Plan(format!(
                        "INSERT INTO '{t}': writing metadata column '{name}' is not supported yet; declare it VIRTUAL to leave it out of the sink"
                    )));
                    }
                    (
                        t.to_string(),
                        table.options.required("connector")?.to_string(),
                        table.options.clone(),
                        table.physical_schema.clone(),
                        table.sink_schema(),
                        table.primary_key.clone(),
                        table
                            .def
                            .partition_keys
                            .iter()
                            .filter_map(|k| table.physical_schema.index_of(k).ok())
                            .collect::<Vec<_>>(),
                    )
                }
                None => (
                    "print".to_string(),
                    "print".to_string(),
                    Options::new("print", BTreeMap::new()),
                    arrow_schema(&s.schema),
                    arrow_schema(&s.schema),
                    vec![],
                    vec![],
                ),
            };
        let query_fields = s.schema.fields();
        if query_fields.len() != target.fields().len() {
            return Err(SluiceError::Plan(format!(
                "INSERT INTO '{sink_name}': the query gives {} columns ({}) but the table has {} ({})",
                query_fields.len(),
                query_fields.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                target.fields().len(),
                column_names(&target)
            )));
        }
        let mut node = s.node;
        let needs_cast = query_fields
            .iter()
            .zip(target.fields())
            .any(|(q, t)| q.data_type() != t.data_type());
        if needs_cast {
            let mut exprs = Vec::new();
            for (i, (q, t)) in query_fields.iter().zip(target.fields()).enumerate() {
                if !can_cast_types(q.data_type(), t.data_type()) {
                    return Err(SluiceError::Plan(format!(
                        "INSERT INTO '{sink_name}': column {} '{}' is {} in the query but {} '{}' in the table",
                        i + 1, q.name(), flink_name(q.data_type()), flink_name(t.data_type()), t.name()
                    )));
                }
                let (qual, field) = s.schema.qualified_field(i);
                let col = Expr::Column(datafusion_common::Column::new(qual.cloned(), field.name()));
                exprs.push(physical(
                    &Expr::Cast(datafusion_expr::Cast::new(
                        Box::new(col),
                        t.data_type().clone(),
                    )),
                    &s.schema,
                )?);
            }
            let f = Arc::new(CalcFactory {
                name: "CastToSink".into(),
                step: CalcStep::Project(exprs, target.clone()),
            });
            node = self.add(
                graph,
                "CastToSink".into(),
                s.parallelism,
                f,
                node,
                Partitioning::Forward,
            );
        }
        // The sink takes the table's nullability: NOT NULL and key columns are checked first.
        let spec = SinkSpec {
            table: sink_name.clone(),
            schema: sink_schema.clone(),
            options: options.clone(),
            updating: s.updating,
            primary_key,
            time_zone: self.config.time_zone.clone(),
            partition_keys,
        };
        // A table's NOT NULL columns are enforced (a bare SELECT's printed rows are not: the
        // query's own nullability is only inferred).
        let mut factory = self.registry.sink(&connector, &spec)?;
        if sink.is_some() {
            factory = crate::operators::not_null::enforcing(
                factory,
                sink_schema,
                self.config.not_null_enforcer,
            );
        }
        // The sink's rows are previewed under its table's column names.
        let factory = sluice_engine::preview::with_column_names(factory, spec.column_names());
        let parallelism = match options.i64("sink.parallelism")? {
            Some(p) if p > 0 => p as usize,
            _ => s.parallelism,
        };
        let partitioning = if parallelism == s.parallelism {
            Partitioning::Forward
        } else {
            Partitioning::Rebalance
        };
        self.add(
            graph,
            factory.name(),
            parallelism,
            factory,
            node,
            partitioning,
        );
        Ok(())
    }
}
