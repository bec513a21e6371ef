//! `DECIMAL / DECIMAL` with Flink's result type and rounding.
//!
//! Arrow divides decimals at the dividend's scale plus 4, truncating; Flink's result has the
//! scale `max(6, s1 + p2 + 1)` and precision `p1 - s1 + s2 + scale` (at most 38, the scale
//! giving way down to 6 first), rounded half up. So `price / 3.0` with a `BIGINT` price is a
//! `DECIMAL(26, 6)`, `333.333333`, here as in Flink. After type coercion, each such division
//! becomes: the dividend cast to a scale that makes Arrow's quotient one digit finer than
//! Flink's, the division, and a cast to Flink's type (which rounds half up). Columns keep
//! their names.

use arrow::datatypes::DataType;
use datafusion_common::tree_node::{Transformed, TreeNode};
use datafusion_common::DFSchema;
use datafusion_expr::expr_rewriter::NamePreserver;
use datafusion_expr::{BinaryExpr, Cast, Expr, ExprSchemable, LogicalPlan, Operator};

const MAX_PRECISION: u8 = 38;
/// The scale Flink keeps at least when the precision runs out.
const MIN_ADJUSTED_SCALE: i8 = 6;

/// Flink's type of `DECIMAL(p1, s1) / DECIMAL(p2, s2)`.
pub fn division_type(p1: u8, s1: i8, p2: u8, s2: i8) -> (u8, i8) {
    let scale = MIN_ADJUSTED_SCALE.max(s1 + p2 as i8 + 1);
    let precision = p1 as i16 - s1 as i16 + s2 as i16 + scale as i16;
    if precision <= MAX_PRECISION as i16 {
        return (precision as u8, scale);
    }
    let digits = precision - scale as i16;
    let scale = (MAX_PRECISION as i16 - digits).max(scale.min(MIN_ADJUSTED_SCALE) as i16);
    (MAX_PRECISION, scale as i8)
}

/// Rewrites every decimal division in `plan` (already type-coerced).
pub fn apply(plan: LogicalPlan) -> datafusion_common::Result<LogicalPlan> {
    plan.transform_up(|node| {
        let schema = match node.inputs().first() {
            Some(input) => input.schema().clone(),
            None => return Ok(Transformed::no(node)),
        };
        let names = NamePreserver::new(&node);
        let node = node.map_expressions(|e| {
            let saved = names.save(&e);
            let t = rewrite_expr(e, &schema)?;
            Ok(if t.transformed {
                Transformed::yes(saved.restore(t.data))
            } else {
                t
            })
        })?;
        if !node.transformed {
            return Ok(node);
        }
        node.data.recompute_schema().map(Transformed::yes)
    })
    .map(|t| t.data)
}

/// The decimal type Flink gives an integer operand that type coercion cast to a decimal:
/// `TINYINT` is `DECIMAL(3, 0)`, `SMALLINT` `(5, 0)`, `INT` `(10, 0)`, `BIGINT` `(19, 0)`
/// (Arrow's casts take one digit more), and an integer literal is an `INT` if it fits.
fn flink_decimal(e: &Expr, schema: &DFSchema) -> Option<(u8, i8)> {
    let Expr::Cast(c) = e else {
        return None;
    };
    if let Expr::Literal(v, _) = c.expr.as_ref() {
        let n = match v {
            datafusion_common::ScalarValue::Int64(Some(n)) => *n,
            datafusion_common::ScalarValue::Int32(Some(n)) => *n as i64,
            _ => return None,
        };
        return Some(if i32::try_from(n).is_ok() {
            (10, 0)
        } else {
            (19, 0)
        });
    }
    let precision = match c.expr.get_type(schema).ok()? {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 | DataType::UInt64 => 19,
        _ => return None,
    };
    Some((precision, 0))
}

fn rewrite_expr(e: Expr, schema: &DFSchema) -> datafusion_common::Result<Transformed<Expr>> {
    e.transform_up(|e| {
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Divide,
            right,
        }) = &e
        else {
            return Ok(Transformed::no(e));
        };
        let (Ok(DataType::Decimal128(p1, s1)), Ok(DataType::Decimal128(p2, s2))) =
            (left.get_type(schema), right.get_type(schema))
        else {
            return Ok(Transformed::no(e));
        };
        let flink = |e: &Expr, p: u8, s: i8| flink_decimal(e, schema).unwrap_or((p, s));
        let ((fp1, fs1), (fp2, fs2)) = (flink(left, p1, s1), flink(right, p2, s2));
        let (p, s) = division_type(fp1, fs1, fp2, fs2);
        // Arrow's quotient has the dividend's scale plus 4: one digit more than Flink's,
        // which the final cast rounds half up.
        let dividend_scale = s1.max(s + 1 - 4);
        let dividend = if dividend_scale > s1 {
            let precision = (p1 as i16 + (dividend_scale - s1) as i16).min(MAX_PRECISION as i16);
            Expr::Cast(Cast::new(
                left.clone(),
                DataType::Decimal128(precision as u8, dividend_scale),
            ))
        } else {
            left.as_ref().clone()
        };
        let quotient = Expr::BinaryExpr(BinaryExpr::new(
            Box::new(dividend),
            Operator::Divide,
            right.clone(),
        ));
        Ok(Transformed::yes(Expr::Cast(Cast::new(
            Box::new(quotient),
            DataType::Decimal128(p, s),
        ))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_division_types() {
        // BIGINT / 3.0, as Flink reports it.
        assert_eq!(division_type(19, 0, 2, 1), (26, 6));
        // DECIMAL(10, 2) / DECIMAL(5, 2): scale 2 + 5 + 1 = 8.
        assert_eq!(division_type(10, 2, 5, 2), (18, 8));
        // Too precise: the scale gives way, down to 6.
        assert_eq!(division_type(38, 10, 38, 10), (38, 6));
        assert_eq!(division_type(30, 2, 5, 0), (36, 8));
    }
}
