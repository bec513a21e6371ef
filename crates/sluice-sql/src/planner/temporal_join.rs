//! Plans temporal table joins: a join whose right input is a table or view read
//! `FOR SYSTEM_TIME AS OF` the left input's time attribute (see [`crate::temporal_table`]).
//!
//! Flink's rules: the join is INNER or LEFT; the time is the left input's event-time
//! attribute (a processing-time one makes a lookup join); the versioned table has a time
//! attribute and a primary key, and the join's equalities cover the key. The condition's
//! equalities are the join key, the rest is evaluated on each row and its version.

use super::join::{condition, join_conjuncts, split_condition, Condition};
use super::{arrow_schema, physical, unsupported, Planner, Stream};
use crate::operators::join_rows::JoinKind;
use crate::operators::lookup_join::LookupJoinFactory;
use crate::operators::temporal_join::TemporalJoinFactory;
use crate::parser::err_at;
use crate::temporal_table::TemporalTable;
use datafusion_common::Column;
use datafusion_expr::logical_plan::{Join, TableScan};
use datafusion_expr::{Expr, ExprSchemable, JoinType, LogicalPlan};
use sluice_common::Result;
use sluice_engine::{Input, JobGraph, LookupSpec, Node, NodeKind, OperatorFactory, Partitioning};
use std::sync::Arc;

impl<'a> Planner<'a> {
    /// The scan of a table read `FOR SYSTEM_TIME AS OF`, if `plan` is one (under aliases).
    pub(super) fn temporal_scan<'p>(
        &self,
        plan: &'p LogicalPlan,
    ) -> Option<(&'p TableScan, &'a TemporalTable)> {
        match plan {
            LogicalPlan::SubqueryAlias(a) => self.temporal_scan(&a.input),
            LogicalPlan::TableScan(scan) => self
                .catalog
                .temporals
                .get(scan.table_name.table())
                .map(|t| (scan, t)),
            _ => None,
        }
    }

    /// Plans `join`, whose right input is `scan` of the temporal table `temporal`; `above`
    /// is the predicate of a `WHERE` right above an inner join.
    pub(super) fn temporal_join(
        &self,
        join: &Join,
        above: Option<&Expr>,
        scan: &TableScan,
        temporal: &TemporalTable,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let at = temporal.location;
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            other => {
                return Err(err_at(
                    at,
                    format!("a temporal join is an INNER or a LEFT join, not a {other} join"),
                ))
            }
        };
        let (ls, rs) = (join.left.schema(), join.right.schema());
        let period = temporal.period.join(".");
        let column = match temporal.period.as_slice() {
            [name] => Column::from_name(name.clone()),
            [relation, name] => Column::new(Some(relation.clone()), name.clone()),
            _ => {
                return Err(err_at(
                    at,
                    format!(
                        "FOR SYSTEM_TIME AS OF {period}: expected a column such as o.order_time"
                    ),
                ))
            }
        };
        let time = ls.index_of_column(&column).map_err(|_| {
            err_at(
                at,
                format!(
                    "FOR SYSTEM_TIME AS OF {period}: no such column in the left input of the join"
                ),
            )
        })?;
        let mut l = self.translate(&join.left, graph)?;
        if l.pending.is_some() {
            l = self.materialize(l, graph)?;
        }
        let conjuncts = join_conjuncts(join, above);
        let cond = split_condition(conjuncts, ls, rs, None);
        if l.rowtime != Some(time) {
            if crate::catalog::is_proctime(&join.left, time, self.catalog) {
                return self.lookup_join(join, kind, l, cond, temporal, graph);
            }
            return Err(err_at(
                at,
                format!(
                    "FOR SYSTEM_TIME AS OF {period}: not a time attribute of the left input; an event-time temporal join reads the versioned table as of the left input's WATERMARK FOR column"
                ),
            ));
        }
        let mut r = self.scan(scan, &temporal.table, graph)?;
        r.schema = rs.clone();
        let Some(right_time) = r.rowtime else {
            return Err(err_at(
                at,
                format!(
                    "'{}' is not a versioned table: an event-time temporal join needs its time attribute (WATERMARK FOR) and its primary key",
                    temporal.table
                ),
            ));
        };
        // The versioned table's primary key must be among the equalities (a view's key is
        // not known here: its equalities are taken as its key).
        let joined_on = |idx: usize| {
            cond.keys.iter().any(|(_, b)| {
                matches!(b.clone().unalias(), Expr::Column(c) if rs.index_of_column(&c).ok() == Some(idx))
            })
        };
        if let Some(table) = self.catalog.tables.get(&temporal.table) {
            if table.primary_key.is_empty() {
                return Err(err_at(
                    at,
                    format!(
                        "'{}' is not a versioned table: an event-time temporal join needs its primary key (PRIMARY KEY (...) NOT ENFORCED) and its time attribute",
                        temporal.table
                    ),
                ));
            }
            if let Some(&missing) = table.primary_key.iter().find(|&&k| !joined_on(k)) {
                return Err(err_at(
                    at,
                    format!(
                        "the primary key of '{}' must be in the join's equalities, and {} is not",
                        temporal.table,
                        table.schema.field(missing).name()
                    ),
                ));
            }
        } else if cond.keys.is_empty() {
            return Err(err_at(
                at,
                format!(
                    "a temporal join needs an equality between the left input and the key of '{}'",
                    temporal.table
                ),
            ));
        }
        let (lk, rk, left, right) = self.keyed_inputs(&cond.keys, (ls, &l), (rs, &r), graph)?;
        let condition = condition(cond.residual, &join.schema)?;
        let factory: Arc<dyn OperatorFactory> = Arc::new(TemporalJoinFactory {
            kind,
            left,
            right,
            times: (time, right_time),
            schema: arrow_schema(&join.schema),
            condition,
            state_ttl: self.config.state_ttl,
        });
        let parallelism = self.config.parallelism;
        let node = graph.add(Node {
            name: factory.name(),
            parallelism,
            kind: NodeKind::Operator(factory),
            inputs: vec![
                Input {
                    node: lk.node,
                    partitioning: Partitioning::Hash(lk.hash_cols),
                },
                Input {
                    node: rk.node,
                    partitioning: Partitioning::Hash(rk.hash_cols),
                },
            ],
        });
        // The left row's time stays the time attribute: a row is emitted once the watermark
        // has reached it.
        Ok(Stream {
            node,
            parallelism,
            schema: join.schema.clone(),
            rowtime: Some(time),
            updating: l.updating,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }

    /// Plans a lookup join: `join`'s right input is the table `temporal` read as of the left
    /// input's processing time; `cond` is the join condition sorted out.
    fn lookup_join(
        &self,
        join: &Join,
        kind: JoinKind,
        l: Stream,
        cond: Condition,
        temporal: &TemporalTable,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let at = temporal.location;
        let (ls, rs) = (join.left.schema(), join.right.schema());
        let Some(table) = self.catalog.tables.get(&temporal.table) else {
            return Err(err_at(
                at,
                format!(
                    "a lookup join reads a table by key, and '{}' is a view",
                    temporal.table
                ),
            ));
        };
        if table.schema.fields().len() != table.physical_schema.fields().len()
            || !table.metadata.is_empty()
        {
            return Err(unsupported(
                "a lookup join on a table with computed or metadata columns",
            ));
        }
        // Each equality gives a key column of the table and the left expression it equals.
        let mut right_keys = Vec::new();
        let mut left_keys = Vec::new();
        for (a, b) in &cond.keys {
            let column = match b.clone().unalias() {
                Expr::Column(c) => rs.index_of_column(&c).ok(),
                _ => None,
            };
            let Some(k) = column else {
                return Err(err_at(
                    at,
                    format!(
                        "a lookup join looks '{}' up by its columns: in {a} = {b}, the right side must be a column of it",
                        temporal.table
                    ),
                ));
            };
            let want = table.schema.field(k).data_type().clone();
            let expr = if a.get_type(ls).map_err(crate::catalog::df_error)? == want {
                a.clone()
            } else {
                Expr::Cast(datafusion_expr::Cast::new(Box::new(a.clone()), want))
            };
            right_keys.push(k);
            left_keys.push(physical(&expr, ls)?);
        }
        if right_keys.is_empty() {
            return Err(err_at(
                at,
                format!(
                    "a lookup join needs an equality between the left input and a column of '{}'",
                    temporal.table
                ),
            ));
        }
        let connector = table.options.required("connector")?.to_string();
        let spec = LookupSpec {
            table: temporal.table.clone(),
            schema: table.schema.clone(),
            keys: right_keys,
            options: table.options.clone(),
        };
        let lookup = self.registry.lookup(&connector, &spec)?;
        let condition = condition(cond.residual, &join.schema)?;
        let factory: Arc<dyn OperatorFactory> = Arc::new(LookupJoinFactory {
            kind,
            lookup,
            left_schema: arrow_schema(ls),
            left_keys,
            right_schema: table.schema.clone(),
            schema: arrow_schema(&join.schema),
            condition,
        });
        let node = self.add(
            graph,
            factory.name(),
            l.parallelism,
            factory,
            l.node,
            Partitioning::Forward,
        );
        // The left input's time attributes stay what they were.
        Ok(Stream {
            node,
            schema: join.schema.clone(),
            pending: None,
            window_end: None,
            window_start: None,
            ..l
        })
    }
}
