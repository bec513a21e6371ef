//! `timestamp ± INTERVAL '5' SECOND` as integer arithmetic.
//!
//! Arrow adds an `INTERVAL` (months, days, nanoseconds) to a timestamp row by row through the
//! calendar and the time zone; that was a fifth of the time of a watermark expression. An
//! interval without months is a fixed number of milliseconds for Sluice's timestamps
//! (`TIMESTAMP` has no zone and `TIMESTAMP_LTZ` is kept in UTC), so it becomes a `Duration`,
//! which Arrow adds as a plain integer.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_common::{DFSchema, ScalarValue};
use datafusion_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

/// Rewrites every `timestamp ± interval` in `plan` whose interval has no months.
pub fn apply(plan: LogicalPlan) -> datafusion_common::Result<LogicalPlan> {
    plan.transform_up(|node| {
        let schema = match node.inputs().first() {
            Some(input) => input.schema().clone(),
            None => return Ok(Transformed::no(node)),
        };
        node.map_expressions(|e| rewrite_expr(e, &schema))
    })
    .map(|t| t.data)
}

/// Rewrites `e`, whose columns come from `schema`.
pub fn rewrite_expr(e: Expr, schema: &DFSchema) -> datafusion_common::Result<Transformed<Expr>> {
    e.transform_up(|e| {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
            return Ok(Transformed::no(e));
        };
        if !matches!(op, Operator::Plus | Operator::Minus) {
            return Ok(Transformed::no(e));
        }
        let Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(iv)), _) = right.as_ref() else {
            return Ok(Transformed::no(e));
        };
        let millis_exact = iv.nanoseconds % 1_000_000 == 0;
        let is_ms_timestamp = matches!(
            left.get_type(schema),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
        ) || matches!(
            left.get_type(schema),
            Ok(DataType::Timestamp(TimeUnit::Millisecond, Some(tz))) if tz.as_ref() == crate::types::LTZ_ZONE
        );
        if iv.months != 0 || !millis_exact || !is_ms_timestamp {
            return Ok(Transformed::no(e));
        }
        let ms = iv.days as i64 * 86_400_000 + iv.nanoseconds / 1_000_000;
        Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
            left.clone(),
            *op,
            Box::new(Expr::Literal(ScalarValue::DurationMillisecond(Some(ms)), None)),
        ))))
    })
}
