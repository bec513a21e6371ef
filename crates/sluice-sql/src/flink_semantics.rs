//! Rewrites of DataFusion's logical plan where Flink's SQL semantics differ from DataFusion's,
//! applied before type coercion.
//!
//! - `AVG` of an integer column is an integer in Flink (the sum divided by the count,
//!   truncated), a `DOUBLE` in DataFusion: a projection above the aggregate casts it back to
//!   the argument's type.

use crate::catalog::df_error;
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_expr::logical_plan::{Aggregate, Projection};
use datafusion_expr::{cast, Expr, ExprSchemable, LogicalPlan};
use sluice_common::Result;
use std::sync::Arc;

/// Applies every rewrite to `plan`.
pub fn apply(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(agg) => integer_avg(agg),
        other => other.recompute_schema().map(Transformed::yes),
    })
    .map(|t| t.data)
    .map_err(df_error)
}

fn integer_avg(agg: Aggregate) -> datafusion_common::Result<Transformed<LogicalPlan>> {
    let groups = agg.group_expr.len();
    let mut casts = Vec::new();
    for (i, e) in agg.aggr_expr.iter().enumerate() {
        if let Expr::AggregateFunction(f) = e.clone().unalias() {
            if f.func.name().eq_ignore_ascii_case("avg") && f.params.args.len() == 1 {
                let t = f.params.args[0].get_type(agg.input.schema())?;
                if t.is_integer() {
                    casts.push((groups + i, t));
                }
            }
        }
    }
    if casts.is_empty() {
        return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
    }
    let schema = agg.schema.clone();
    let input = Arc::new(LogicalPlan::Aggregate(agg));
    let exprs = (0..schema.fields().len())
        .map(|i| {
            let (q, f) = schema.qualified_field(i);
            let col = Expr::Column(datafusion_common::Column::new(q.cloned(), f.name()));
            match casts.iter().find(|(c, _)| *c == i) {
                Some((_, t)) => cast(col, t.clone()).alias_qualified(q.cloned(), f.name()),
                None => col,
            }
        })
        .collect();
    Ok(Transformed::yes(LogicalPlan::Projection(
        Projection::try_new(exprs, input)?,
    )))
}
