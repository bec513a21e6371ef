//! One row at a time without Arrow: a physical expression made only of columns, literals,
//! comparisons, `AND`/`OR`/`NOT`, `IS [NOT] NULL`, `+ - * /` on integers and doubles and
//! numeric casts is evaluated directly on `ScalarValue`s, with SQL's three-valued logic.
//! `MATCH_RECOGNIZE` tries its conditions once per row and partial match, where building a
//! one-row batch costs more than the condition; anything else goes through DataFusion.

use datafusion_common::ScalarValue;
use datafusion_expr::Operator;
use datafusion_physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion_physical_expr::PhysicalExpr;
use std::cmp::Ordering;
use std::sync::Arc;

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum Scalar {
    Column(usize),
    Literal(ScalarValue),
    Compare(Operator, Box<Scalar>, Box<Scalar>),
    And(Box<Scalar>, Box<Scalar>),
    Or(Box<Scalar>, Box<Scalar>),
    Not(Box<Scalar>),
    IsNull(Box<Scalar>),
    IsNotNull(Box<Scalar>),
    Arith(Operator, Box<Scalar>, Box<Scalar>),
    /// To `Int64` or `Float64` only.
    Cast(Box<Scalar>, Numeric),
}

/// The types arithmetic and casts are done in here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numeric {
    Int64,
    Float64,
}

/// `e` as a [`Scalar`], if it is made only of what this evaluator knows.
pub fn compile(e: &Arc<dyn PhysicalExpr>) -> Option<Scalar> {
    let any = e.as_ref();
    if let Some(c) = any.downcast_ref::<Column>() {
        return Some(Scalar::Column(c.index()));
    }
    if let Some(l) = any.downcast_ref::<Literal>() {
        return Some(Scalar::Literal(l.value().clone()));
    }
    if let Some(n) = any.downcast_ref::<NotExpr>() {
        return Some(Scalar::Not(Box::new(compile(n.arg())?)));
    }
    if let Some(n) = any.downcast_ref::<IsNullExpr>() {
        return Some(Scalar::IsNull(Box::new(compile(n.arg())?)));
    }
    if let Some(n) = any.downcast_ref::<IsNotNullExpr>() {
        return Some(Scalar::IsNotNull(Box::new(compile(n.arg())?)));
    }
    if let Some(c) = any.downcast_ref::<CastExpr>() {
        let to = match c.cast_type() {
            arrow::datatypes::DataType::Int64 => Numeric::Int64,
            arrow::datatypes::DataType::Float64 => Numeric::Float64,
            _ => return None,
        };
        return Some(Scalar::Cast(Box::new(compile(c.expr())?), to));
    }
    if let Some(b) = any.downcast_ref::<BinaryExpr>() {
        let (l, r) = (Box::new(compile(b.left())?), Box::new(compile(b.right())?));
        let op = *b.op();
        return match op {
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => Some(Scalar::Compare(op, l, r)),
            Operator::And => Some(Scalar::And(l, r)),
            Operator::Or => Some(Scalar::Or(l, r)),
            Operator::Plus | Operator::Minus | Operator::Multiply | Operator::Divide => {
                Some(Scalar::Arith(op, l, r))
            }
            _ => None,
        };
    }
    None
}

/// A value in the evaluator: a borrowed column, or computed.
enum Value<'a> {
    Ref(&'a ScalarValue),
    Owned(ScalarValue),
    Bool(Option<bool>),
}

impl Value<'_> {
    fn scalar(&self) -> Option<&ScalarValue> {
        match self {
            Value::Ref(v) => Some(v),
            Value::Owned(v) => Some(v),
            Value::Bool(_) => None,
        }
    }

    fn is_null(&self) -> bool {
        match self {
            Value::Bool(b) => b.is_none(),
            other => other.scalar().is_none_or(|v| v.is_null()),
        }
    }

    fn boolean(&self) -> Option<Option<bool>> {
        match self {
            Value::Bool(b) => Some(*b),
            other => match other.scalar()? {
                ScalarValue::Boolean(b) => Some(*b),
                _ => None,
            },
        }
    }

    fn int(&self) -> Option<i64> {
        match self.scalar()? {
            ScalarValue::Int8(v) => v.map(i64::from),
            ScalarValue::Int16(v) => v.map(i64::from),
            ScalarValue::Int32(v) => v.map(i64::from),
            ScalarValue::Int64(v) => *v,
            ScalarValue::UInt8(v) => v.map(i64::from),
            ScalarValue::UInt16(v) => v.map(i64::from),
            ScalarValue::UInt32(v) => v.map(i64::from),
            _ => None,
        }
    }

    fn float(&self) -> Option<f64> {
        match self.scalar()? {
            ScalarValue::Float32(v) => v.map(f64::from),
            ScalarValue::Float64(v) => *v,
            _ => self.int().map(|i| i as f64),
        }
    }
}

/// Evaluates `s` on a row whose values `column(i)` gives; `None` when the expression meets
/// what this evaluator does not do (the caller then uses DataFusion).
pub fn eval_bool<'a>(
    s: &Scalar,
    column: &impl Fn(usize) -> &'a ScalarValue,
) -> Option<Option<bool>> {
    eval(s, column)?.boolean()
}

/// `a AND b` (`decides` false) or `a OR b` (`decides` true) in three-valued logic: `b` is
/// not evaluated once `a` decides.
fn junction<'a>(
    a: &Scalar,
    b: &Scalar,
    decides: bool,
    column: &impl Fn(usize) -> &'a ScalarValue,
) -> Option<Value<'a>> {
    let x = eval(a, column)?.boolean()?;
    if x == Some(decides) {
        return Some(Value::Bool(Some(decides)));
    }
    let y = eval(b, column)?.boolean()?;
    Some(Value::Bool(match (x, y) {
        (_, Some(v)) if v == decides => Some(decides),
        (Some(_), Some(_)) => Some(!decides),
        _ => None,
    }))
}

fn eval<'a>(s: &Scalar, column: &impl Fn(usize) -> &'a ScalarValue) -> Option<Value<'a>> {
    Some(match s {
        Scalar::Column(i) => Value::Ref(column(*i)),
        Scalar::Literal(v) => Value::Owned(v.clone()),
        Scalar::Not(a) => Value::Bool(eval(a, column)?.boolean()?.map(|b| !b)),
        Scalar::IsNull(a) => Value::Bool(Some(eval(a, column)?.is_null())),
        Scalar::IsNotNull(a) => Value::Bool(Some(!eval(a, column)?.is_null())),
        Scalar::And(a, b) => junction(a, b, false, column)?,
        Scalar::Or(a, b) => junction(a, b, true, column)?,
        Scalar::Compare(op, a, b) => {
            let (x, y) = (eval(a, column)?, eval(b, column)?);
            if x.is_null() || y.is_null() {
                return Some(Value::Bool(None));
            }
            let ord = match (x.boolean(), y.boolean()) {
                (Some(p), Some(q)) => p.cmp(&q),
                _ => {
                    let (p, q) = (x.scalar()?, y.scalar()?);
                    // Only values of one type (the planner coerced both sides).
                    if p.data_type() != q.data_type() {
                        return None;
                    }
                    p.partial_cmp(q)?
                }
            };
            Value::Bool(Some(match op {
                Operator::Eq => ord == Ordering::Equal,
                Operator::NotEq => ord != Ordering::Equal,
                Operator::Lt => ord == Ordering::Less,
                Operator::LtEq => ord != Ordering::Greater,
                Operator::Gt => ord == Ordering::Greater,
                Operator::GtEq => ord != Ordering::Less,
                _ => return None,
            }))
        }
        Scalar::Arith(op, a, b) => {
            let (x, y) = (eval(a, column)?, eval(b, column)?);
            let (p, q) = (x.scalar()?, y.scalar()?);
            match (p, q) {
                (ScalarValue::Int64(_), ScalarValue::Int64(_)) => {
                    let (Some(i), Some(j)) = (x.int(), y.int()) else {
                        return Some(Value::Owned(ScalarValue::Int64(None)));
                    };
                    // Overflow and division by zero: DataFusion's error, not a guess here.
                    let r = match op {
                        Operator::Plus => i.checked_add(j)?,
                        Operator::Minus => i.checked_sub(j)?,
                        Operator::Multiply => i.checked_mul(j)?,
                        Operator::Divide => i.checked_div(j)?,
                        _ => return None,
                    };
                    Value::Owned(ScalarValue::Int64(Some(r)))
                }
                (ScalarValue::Float64(_), ScalarValue::Float64(_)) => {
                    let (Some(i), Some(j)) = (x.float(), y.float()) else {
                        return Some(Value::Owned(ScalarValue::Float64(None)));
                    };
                    let r = match op {
                        Operator::Plus => i + j,
                        Operator::Minus => i - j,
                        Operator::Multiply => i * j,
                        Operator::Divide => i / j,
                        _ => return None,
                    };
                    Value::Owned(ScalarValue::Float64(Some(r)))
                }
                _ => return None,
            }
        }
        Scalar::Cast(a, to) => {
            let x = eval(a, column)?;
            let p = x.scalar()?;
            match to {
                Numeric::Int64 => match p {
                    ScalarValue::Int8(_)
                    | ScalarValue::Int16(_)
                    | ScalarValue::Int32(_)
                    | ScalarValue::Int64(_)
                    | ScalarValue::UInt8(_)
                    | ScalarValue::UInt16(_)
                    | ScalarValue::UInt32(_) => Value::Owned(ScalarValue::Int64(x.int())),
                    _ => return None,
                },
                Numeric::Float64 => match p {
                    ScalarValue::Float32(_)
                    | ScalarValue::Float64(_)
                    | ScalarValue::Int8(_)
                    | ScalarValue::Int16(_)
                    | ScalarValue::Int32(_)
                    | ScalarValue::Int64(_)
                    | ScalarValue::UInt8(_)
                    | ScalarValue::UInt16(_)
                    | ScalarValue::UInt32(_) => Value::Owned(ScalarValue::Float64(x.float())),
                    _ => return None,
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion_physical_expr::expressions::{binary, cast, col, is_null, lit, not};

    #[test]
    fn agrees_with_datafusion_on_one_row() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let a = col("a", &schema).unwrap();
        let b = col("b", &schema).unwrap();
        let s = col("s", &schema).unwrap();
        let exprs: Vec<Arc<dyn PhysicalExpr>> = vec![
            binary(a.clone(), Operator::Gt, lit(3i64), &schema).unwrap(),
            binary(
                binary(a.clone(), Operator::Plus, lit(1i64), &schema).unwrap(),
                Operator::LtEq,
                lit(5i64),
                &schema,
            )
            .unwrap(),
            binary(
                binary(
                    cast(a.clone(), &schema, DataType::Float64).unwrap(),
                    Operator::Multiply,
                    b.clone(),
                    &schema,
                )
                .unwrap(),
                Operator::Lt,
                lit(10.0f64),
                &schema,
            )
            .unwrap(),
            binary(
                is_null(b.clone()).unwrap(),
                Operator::Or,
                binary(s.clone(), Operator::Eq, lit("x"), &schema).unwrap(),
                &schema,
            )
            .unwrap(),
            not(binary(a.clone(), Operator::NotEq, lit(4i64), &schema).unwrap()).unwrap(),
            binary(
                binary(a.clone(), Operator::Gt, lit(0i64), &schema).unwrap(),
                Operator::And,
                binary(b.clone(), Operator::Gt, lit(0.0f64), &schema).unwrap(),
                &schema,
            )
            .unwrap(),
        ];
        let rows = [
            (Some(4i64), Some(2.0f64), Some("x")),
            (None, Some(1.0), Some("y")),
            (Some(1), None, None),
            (Some(9), Some(-1.0), Some("x")),
        ];
        for (a, b, s) in rows {
            let values = [
                ScalarValue::Int64(a),
                ScalarValue::Float64(b),
                ScalarValue::Utf8(s.map(String::from)),
            ];
            let batch = arrow::record_batch::RecordBatch::try_new(
                Arc::new(schema.clone()),
                values
                    .iter()
                    .map(|v| v.to_array_of_size(1).unwrap())
                    .collect(),
            )
            .unwrap();
            for e in &exprs {
                let fast = compile(e).expect("compiles");
                let got = eval_bool(&fast, &|i| &values[i]).expect("evaluates");
                let want = e.evaluate(&batch).unwrap().into_array(1).unwrap();
                let want = arrow::array::AsArray::as_boolean(&want);
                let want = want.is_valid(0).then(|| want.value(0));
                assert_eq!(got, want, "{e} on {values:?}");
            }
        }
    }
}
