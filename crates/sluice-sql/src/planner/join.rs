//! Plans joins. The join condition (`ON`, and for an inner join the `WHERE` above it, as
//! Flink's optimiser merges them) is split into its conjuncts: equalities between a left
//! and a right expression are the join key (both inputs are hashed on it), comparisons that
//! bound one input's time attribute by the other's make an interval join when they bound
//! it from both sides, and the rest is a residual condition evaluated on each candidate
//! pair.
//!
//! Two window table functions joined on window_start and window_end make a window join; an
//! interval join on event time when the bounds are there and the inputs append-only; a
//! regular join otherwise.

use super::{arrow_schema, physical, unsupported, Keyed, Planner, Stream};
use crate::catalog::df_error;
use crate::operators::interval_join::IntervalJoinFactory;
use crate::operators::join_rows::{JoinInput, JoinKind};
use crate::operators::regular_join::RegularJoinFactory;
use crate::operators::window_join::WindowJoinFactory;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion_common::{DFSchema, ScalarValue};
use datafusion_expr::logical_plan::Join;
use datafusion_expr::utils::split_conjunction;
use datafusion_expr::{BinaryExpr, Expr, ExprSchemable, JoinType, Operator as Op};
use sluice_common::{Result, SluiceError};
use sluice_engine::{Input, JobGraph, Node, NodeKind, OperatorFactory, Partitioning};
use std::sync::Arc;

/// Which input an expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SideOf {
    Left,
    Right,
    /// Both inputs, or none.
    Neither,
}

fn side_of(e: &Expr, left: &DFSchema, right: &DFSchema) -> SideOf {
    let refs = e.column_refs();
    if refs.is_empty() {
        return SideOf::Neither;
    }
    if refs.iter().all(|c| left.has_column(c)) {
        SideOf::Left
    } else if refs.iter().all(|c| right.has_column(c)) {
        SideOf::Right
    } else {
        SideOf::Neither
    }
}

/// Milliseconds of an interval literal (days and time; not months, which have no fixed
/// length).
pub(super) fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalDayTime(Some(d)) => {
            Some(d.days as i64 * 86_400_000 + d.milliseconds as i64)
        }
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1000),
        _ => None,
    }
}

/// `col`, `col + interval` or `col - interval` over a time attribute: (the side, the
/// offset in ms).
fn time_term(
    e: &Expr,
    left: &DFSchema,
    right: &DFSchema,
    times: (usize, usize),
) -> Option<(SideOf, i64)> {
    match e {
        Expr::Column(c) => {
            if left.index_of_column(c).ok() == Some(times.0) && left.has_column(c) {
                Some((SideOf::Left, 0))
            } else if right.index_of_column(c).ok() == Some(times.1) && right.has_column(c) {
                Some((SideOf::Right, 0))
            } else {
                None
            }
        }
        Expr::Alias(a) => time_term(&a.expr, left, right, times),
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(_, _)) => {
            time_term(&c.expr, left, right, times)
        }
        Expr::BinaryExpr(BinaryExpr {
            left: a,
            op: op @ (Op::Plus | Op::Minus),
            right: b,
        }) => {
            let (side, base) = time_term(a, left, right, times)?;
            let Expr::Literal(v, _) = b.as_ref() else {
                return None;
            };
            let ms = interval_ms(v)?;
            Some((
                side,
                if *op == Op::Plus {
                    base + ms
                } else {
                    base - ms
                },
            ))
        }
        _ => None,
    }
}

/// Bounds of `L.rt - R.rt`, from the conjuncts that compare the two time attributes.
#[derive(Debug, Default, PartialEq)]
struct TimeBounds {
    lower_ms: Option<i64>,
    upper_ms: Option<i64>,
}

impl TimeBounds {
    /// Takes `a op b` if it compares the two time attributes; says whether it did.
    fn take(
        &mut self,
        a: &Expr,
        op: Op,
        b: &Expr,
        left: &DFSchema,
        right: &DFSchema,
        times: (usize, usize),
    ) -> bool {
        let (Some((sa, oa)), Some((sb, ob))) = (
            time_term(a, left, right, times),
            time_term(b, left, right, times),
        ) else {
            return false;
        };
        // L.rt + x op R.rt + y  <=>  L.rt - R.rt op y - x.
        let (op, c) = match (sa, sb) {
            (SideOf::Left, SideOf::Right) => (op, ob - oa),
            (SideOf::Right, SideOf::Left) => match op.swap() {
                Some(op) => (op, oa - ob),
                None => return false,
            },
            _ => return false,
        };
        let tighter_lower = |b: i64, cur: Option<i64>| Some(cur.map_or(b, |c| c.max(b)));
        let tighter_upper = |b: i64, cur: Option<i64>| Some(cur.map_or(b, |c| c.min(b)));
        match op {
            Op::GtEq => self.lower_ms = tighter_lower(c, self.lower_ms),
            Op::Gt => self.lower_ms = tighter_lower(c + 1, self.lower_ms),
            Op::LtEq => self.upper_ms = tighter_upper(c, self.upper_ms),
            Op::Lt => self.upper_ms = tighter_upper(c - 1, self.upper_ms),
            _ => return false,
        }
        true
    }
}

/// The conjuncts of a join condition, sorted out.
#[derive(Default)]
pub(super) struct Condition {
    /// (left expression, right expression) pairs that must be equal.
    pub(super) keys: Vec<(Expr, Expr)>,
    bounds: TimeBounds,
    /// Conjuncts that compare the time attributes (used when the bounds make an interval
    /// join; part of the residual otherwise).
    time_conjuncts: Vec<Expr>,
    pub(super) residual: Vec<Expr>,
}

pub(super) fn split_condition(
    conjuncts: Vec<Expr>,
    left: &DFSchema,
    right: &DFSchema,
    times: Option<(usize, usize)>,
) -> Condition {
    let mut c = Condition::default();
    for e in conjuncts {
        if let Expr::BinaryExpr(BinaryExpr {
            left: a,
            op: Op::Eq,
            right: b,
        }) = &e
        {
            match (side_of(a, left, right), side_of(b, left, right)) {
                (SideOf::Left, SideOf::Right) => {
                    c.keys.push((a.as_ref().clone(), b.as_ref().clone()));
                    continue;
                }
                (SideOf::Right, SideOf::Left) => {
                    c.keys.push((b.as_ref().clone(), a.as_ref().clone()));
                    continue;
                }
                _ => {}
            }
        }
        if let Some(times) = times {
            let taken = match &e {
                Expr::BinaryExpr(BinaryExpr {
                    left: a,
                    op,
                    right: b,
                }) => c.bounds.take(a, *op, b, left, right, times),
                Expr::Between(bt) if !bt.negated => {
                    let mut probe = TimeBounds::default();
                    let ok = probe.take(&bt.expr, Op::GtEq, &bt.low, left, right, times)
                        && probe.take(&bt.expr, Op::LtEq, &bt.high, left, right, times);
                    if ok {
                        c.bounds
                            .take(&bt.expr, Op::GtEq, &bt.low, left, right, times);
                        c.bounds
                            .take(&bt.expr, Op::LtEq, &bt.high, left, right, times);
                    }
                    ok
                }
                _ => false,
            };
            if taken {
                c.time_conjuncts.push(e);
                continue;
            }
        }
        c.residual.push(e);
    }
    c
}

impl Planner<'_> {
    /// Plans `join`, with `above` the predicate of a `WHERE` right above an inner join.
    pub(super) fn join(
        &self,
        join: &Join,
        above: Option<&Expr>,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        if let Some((scan, temporal)) = self.temporal_scan(&join.right) {
            return self.temporal_join(join, above, scan, temporal, graph);
        }
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::Semi,
            JoinType::LeftAnti => JoinKind::Anti,
            other => return Err(unsupported(&format!("a {other} join"))),
        };
        let semi_anti = matches!(kind, JoinKind::Semi | JoinKind::Anti);
        let mut l = self.translate(&join.left, graph)?;
        if l.pending.is_some() {
            l = self.materialize(l, graph)?;
        }
        let mut r = self.translate(&join.right, graph)?;
        if r.pending.is_some() {
            r = self.materialize(r, graph)?;
        }
        let (ls, rs) = (join.left.schema(), join.right.schema());
        let mut conjuncts = join_conjuncts(join, above);
        if join.null_aware {
            // `a NOT IN (SELECT b ...)`: the first equality is the IN's (correlations follow
            // it). It is not true when some b equals a, when a is NULL (and there are rows)
            // or when some b is NULL: the condition of Flink's anti join, which no key can
            // hash, so one subtask runs it.
            let Some(Expr::BinaryExpr(BinaryExpr {
                left: a,
                op: Op::Eq,
                right: b,
            })) = conjuncts.first().cloned()
            else {
                return Err(unsupported("this NOT IN with a subquery; write NOT EXISTS"));
            };
            conjuncts[0] = (*a)
                .clone()
                .eq((*b).clone())
                .or(a.is_null())
                .or(b.is_null());
        }
        let times = l.rowtime.zip(r.rowtime);
        let mut cond = split_condition(conjuncts, ls, rs, times);
        // A condition on one input alone filters that input before the join where that
        // cannot change which rows are kept unmatched, as Flink's optimiser pushes it down:
        // the left's unless left rows are kept (LEFT, FULL, ANTI), the right's unless right
        // rows are (RIGHT, FULL). Fewer rows wait in state and meet the other side.
        let (push_left, push_right) = match kind {
            JoinKind::Inner | JoinKind::Semi => (true, true),
            JoinKind::Left | JoinKind::Anti => (false, true),
            JoinKind::Right => (true, false),
            JoinKind::Full => (false, false),
        };
        let mut residual = Vec::new();
        for e in std::mem::take(&mut cond.residual) {
            match side_of(&e, ls, rs) {
                SideOf::Left if push_left => l = self.filtered(l, &e, ls, graph)?,
                SideOf::Right if push_right => r = self.filtered(r, &e, rs, graph)?,
                _ => residual.push(e),
            }
        }
        cond.residual = residual;
        // Both inputs windowed, joined on window_start and window_end: a window join.
        let column = |e: &Expr, schema: &DFSchema| match e.clone().unalias() {
            Expr::Column(c) => schema.index_of_column(&c).ok(),
            _ => None,
        };
        let joined_on = |pick: &dyn Fn(usize, usize) -> bool| {
            cond.keys.iter().any(
                |(a, b)| matches!((column(a, ls), column(b, rs)), (Some(i), Some(j)) if pick(i, j)),
            )
        };
        let window = match (l.window_end, r.window_end) {
            (Some(le), Some(re))
                if joined_on(&|i, j| i == le && j == re)
                    && joined_on(&|i, j| {
                        (Some(i), Some(j)) == (l.window_start, r.window_start)
                            || (ls.field(i).name() == "window_start"
                                && rs.field(j).name() == "window_start")
                    }) =>
            {
                Some((le, re))
            }
            _ => None,
        };
        if window.is_some() && (l.updating || r.updating) {
            return Err(SluiceError::Plan(
                "a window join needs append-only inputs, and one of its inputs is updating".into(),
            ));
        }
        let interval = match (cond.bounds.lower_ms, cond.bounds.upper_ms, times) {
            _ if window.is_some() || semi_anti => None,
            (Some(lower), Some(upper), Some(times)) => Some((lower, upper, times)),
            _ => None,
        };
        if interval.is_some() && (l.updating || r.updating) {
            return Err(SluiceError::Plan(
                "an interval join needs append-only inputs, and one of its inputs is updating (an aggregate or an upsert table)".into(),
            ));
        }
        let (lk, rk, left, right) = self.keyed_inputs(&cond.keys, (ls, &l), (rs, &r), graph)?;
        let mut residual = cond.residual;
        if interval.is_none() {
            // Time comparisons that do not bound both sides are a plain condition.
            residual.extend(cond.time_conjuncts);
        }
        // The condition is over a left and a right row (a semi or anti join emits only the
        // left one).
        let pair_schema = if semi_anti {
            Arc::new(ls.join(rs).map_err(df_error)?)
        } else {
            join.schema.clone()
        };
        let residual = condition(residual, &pair_schema)?;
        let schema = arrow_schema(&pair_schema);
        let factory: Arc<dyn OperatorFactory> = match interval {
            None if window.is_some() => Arc::new(WindowJoinFactory {
                kind,
                left,
                right,
                window_ends: window.unwrap_or_default(),
                schema,
                left_schema: arrow_schema(ls),
                condition: residual,
            }),
            Some((lower_ms, upper_ms, times)) => Arc::new(IntervalJoinFactory {
                kind,
                left,
                right,
                times,
                lower_ms,
                upper_ms,
                schema,
                condition: residual,
                min_cleanup_ms: self.config.interval_join_min_cleanup_ms,
            }),
            None => Arc::new(RegularJoinFactory {
                kind,
                left,
                right,
                schema,
                left_schema: arrow_schema(ls),
                condition: residual,
                state_ttl: self.config.state_ttl,
            }),
        };
        // Without an equi-key every row meets every other in one subtask, as in Flink.
        let (parallelism, partitioning): (usize, fn(Vec<usize>) -> Partitioning) =
            if cond.keys.is_empty() {
                (1, |_| Partitioning::Single)
            } else {
                (self.config.parallelism, Partitioning::Hash)
            };
        let name = factory.name();
        let node = graph.add(Node {
            name,
            parallelism,
            kind: NodeKind::Operator(factory),
            inputs: vec![
                Input {
                    node: lk.node,
                    partitioning: partitioning(lk.hash_cols),
                },
                Input {
                    node: rk.node,
                    partitioning: partitioning(rk.hash_cols),
                },
            ],
        });
        if let Some((le, _)) = window {
            // Append-only, windowed as the left input (a window aggregate can follow).
            return Ok(Stream {
                node,
                parallelism,
                schema: join.schema.clone(),
                rowtime: l.rowtime,
                updating: false,
                pending: None,
                window_end: Some(le),
                window_start: l.window_start,
            });
        }
        Ok(match interval {
            // The output is append-only; both time attributes stay time attributes in
            // Flink, the left one is the stream's here.
            Some((_, _, (lt, _))) => Stream {
                node,
                parallelism,
                schema: join.schema.clone(),
                rowtime: Some(lt),
                updating: false,
                pending: None,
                window_end: None,
                window_start: None,
            },
            // Time attributes become plain timestamps; only an inner join of append-only
            // inputs is append-only.
            None => Stream {
                node,
                parallelism,
                schema: join.schema.clone(),
                rowtime: None,
                updating: l.updating
                    || r.updating
                    || !matches!(kind, JoinKind::Inner | JoinKind::Semi),
                pending: None,
                window_end: None,
                window_start: None,
            },
        })
    }
}

impl Planner<'_> {
    /// Hashes both inputs of a join on its equi-keys (`(left, right)` expression pairs, of
    /// one type each): the exchanges' key columns and the inputs as the operator sees them.
    pub(super) fn keyed_inputs(
        &self,
        keys: &[(Expr, Expr)],
        (ls, l): (&DFSchema, &Stream),
        (rs, r): (&DFSchema, &Stream),
        graph: &mut JobGraph,
    ) -> Result<(Keyed, Keyed, JoinInput, JoinInput)> {
        let key_types = keys
            .iter()
            .map(|(a, b)| {
                let ta = a.get_type(ls).map_err(df_error)?;
                let tb = b.get_type(rs).map_err(df_error)?;
                if ta != tb {
                    return Err(SluiceError::Plan(format!(
                        "the join keys {a} and {b} have different types ({ta} and {tb}); CAST one to the other's type"
                    )));
                }
                Ok(ta)
            })
            .collect::<Result<Vec<DataType>>>()?;
        let left_keys: Vec<Expr> = keys.iter().map(|(a, _)| a.clone()).collect();
        let right_keys: Vec<Expr> = keys.iter().map(|(_, b)| b.clone()).collect();
        let (lw, rw) = (ls.fields().len(), rs.fields().len());
        let lk = self.key_by(&left_keys, &key_types, ls, lw, l, graph)?;
        let rk = self.key_by(&right_keys, &key_types, rs, rw, r, graph)?;
        let input = |schema: &DFSchema, width: usize, keys: &[usize]| JoinInput {
            schema: keyed_schema(schema, width, keys, &key_types),
            width,
            keys: keys.to_vec(),
        };
        let (left, right) = (input(ls, lw, &lk.hash_cols), input(rs, rw, &rk.hash_cols));
        Ok((lk, rk, left, right))
    }
}

/// The conjuncts of `join`'s condition: its `ON` equalities, its filter and `above` (a
/// `WHERE` right above an inner join, as Flink's optimiser merges it into the join).
pub(super) fn join_conjuncts(join: &Join, above: Option<&Expr>) -> Vec<Expr> {
    let mut conjuncts: Vec<Expr> = join
        .on
        .iter()
        .map(|(a, b)| a.clone().eq(b.clone()))
        .collect();
    for f in join.filter.iter().chain(above) {
        conjuncts.extend(split_conjunction(f).into_iter().cloned());
    }
    conjuncts
}

/// The conjunction of `conjuncts` (a join's condition but its keys) over the joined `schema`,
/// if there are any.
pub(super) fn condition(
    conjuncts: Vec<Expr>,
    schema: &DFSchema,
) -> Result<Option<Arc<dyn datafusion_physical_expr::PhysicalExpr>>> {
    conjuncts
        .into_iter()
        .reduce(|a, b| a.and(b))
        .map(|e| physical(&e, schema))
        .transpose()
}

/// The schema of an input after [`Planner::key_by`]: its `width` columns and the key
/// columns it appended, if any.
fn keyed_schema(schema: &DFSchema, width: usize, keys: &[usize], types: &[DataType]) -> SchemaRef {
    let base = arrow_schema(schema);
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (j, &k) in keys.iter().enumerate() {
        if k >= width {
            fields.push(Field::new(format!("__key{j}"), types[j].clone(), true));
        }
    }
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_common::DFSchema;
    use datafusion_expr::{col, lit};

    fn schemas() -> (DFSchema, DFSchema) {
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
        let l = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", ts.clone(), true),
        ]);
        let r = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", ts, true),
        ]);
        (
            DFSchema::try_from_qualified_schema("a", &l).unwrap(),
            DFSchema::try_from_qualified_schema("b", &r).unwrap(),
        )
    }

    fn minutes(n: i64) -> Expr {
        lit(ScalarValue::new_interval_mdn(0, 0, n * 60_000_000_000))
    }

    #[test]
    fn keys_bounds_and_residual_are_told_apart() {
        let (l, r) = schemas();
        let conjuncts = vec![
            col("a.id").eq(col("b.id")),
            Expr::Between(datafusion_expr::Between::new(
                Box::new(col("a.ts")),
                false,
                Box::new(col("b.ts") - minutes(10)),
                Box::new(col("b.ts") + minutes(5)),
            )),
            col("b.ts").gt(col("a.ts") - minutes(7)),
            col("a.id").gt(lit(3i64)),
        ];
        let c = split_condition(conjuncts, &l, &r, Some((1, 1)));
        assert_eq!(c.keys.len(), 1);
        // a.ts - b.ts in [-10 min, 5 min], and b.ts > a.ts - 7 min: a.ts - b.ts < 7 min.
        assert_eq!(
            c.bounds,
            TimeBounds {
                lower_ms: Some(-600_000),
                upper_ms: Some(300_000),
            }
        );
        assert_eq!(c.time_conjuncts.len(), 2);
        assert_eq!(c.residual.len(), 1);
    }

    #[test]
    fn a_comparison_of_non_time_columns_is_residual() {
        let (l, r) = schemas();
        let c = split_condition(vec![col("a.id").lt_eq(col("b.id"))], &l, &r, Some((1, 1)));
        assert_eq!(c.bounds, TimeBounds::default());
        assert_eq!(c.residual.len(), 1);
        let c = split_condition(vec![col("a.ts").lt(col("b.ts"))], &l, &r, None);
        assert_eq!(c.residual.len(), 1);
    }
}
