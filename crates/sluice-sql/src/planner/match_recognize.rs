//! Planning `MATCH_RECOGNIZE`: its input, a hash exchange on the partition columns (one
//! subtask without them, as in Flink), and the operator.

use super::{arrow_schema, physical, unsupported, Planner, Stream};
use crate::match_recognize::{MatchRelation, TermExprPlan};
use crate::operators::match_recognize::{MatchRecognizeFactory, TermExpr};
use sluice_common::{Result, SluiceError};
use sluice_engine::{JobGraph, Partitioning};
use std::sync::Arc;

fn term_expr(p: &TermExprPlan, input_width: usize) -> Result<TermExpr> {
    let expr = physical(&p.expr, &p.schema)?;
    let read: std::collections::HashSet<usize> =
        datafusion_physical_expr::utils::collect_columns(&expr)
            .iter()
            .map(|c| c.index())
            .collect();
    let schema = arrow_schema(&p.schema);
    let unused = (0..input_width)
        .map(|i| {
            (!read.contains(&i))
                .then(|| arrow::array::new_null_array(schema.field(i).data_type(), 1))
        })
        .collect();
    Ok(TermExpr {
        scalar: crate::operators::scalar_eval::compile(&expr),
        expr,
        unused,
        schema,
        terms: p.terms.clone(),
        agg_args: p
            .agg_args
            .iter()
            .map(|(e, schema)| physical(e, schema))
            .collect::<Result<_>>()?,
    })
}

impl Planner<'_> {
    pub(super) fn match_recognize(
        &self,
        m: &MatchRelation,
        graph: &mut JobGraph,
    ) -> Result<Stream> {
        let s = self.translate(&m.input, graph)?;
        if s.updating {
            return Err(unsupported(
                "MATCH_RECOGNIZE over an updating input (it needs an append-only one, as in Flink)",
            ));
        }
        if !m.proctime && s.rowtime != Some(m.time_index) {
            let name = m.input.schema().field(m.time_index).name().clone();
            return Err(SluiceError::Plan(format!(
                "MATCH_RECOGNIZE: ORDER BY {name}: the first ORDER BY column must be the input's time attribute (declared with WATERMARK FOR in the table){}",
                if s.rowtime.is_none() { "; this input has none" } else { "" }
            )));
        }
        let input_schema = arrow_schema(m.input.schema());
        let width = input_schema.fields().len();
        let defines = m
            .defines
            .iter()
            .map(|d| d.as_ref().map(|d| term_expr(d, width)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let measures = m
            .measures
            .iter()
            .map(|d| term_expr(d, width))
            .collect::<Result<Vec<_>>>()?;
        let (parallelism, partitioning) = if m.partition.is_empty() {
            (1, Partitioning::Single)
        } else {
            (
                self.config.parallelism,
                Partitioning::Hash(m.partition.clone()),
            )
        };
        let f = Arc::new(MatchRecognizeFactory {
            input_schema,
            output_schema: m.schema.clone(),
            partition: m.partition.clone(),
            rowtime: m.time_index,
            proctime: m.proctime,
            order: m.order.clone(),
            program: m.program.clone(),
            defines,
            measures,
        });
        let name = "MatchRecognize".to_string();
        let node = self.add(graph, name, parallelism, f, s.node, partitioning);
        Ok(Stream {
            node,
            parallelism,
            schema: s.schema,
            rowtime: if m.proctime { None } else { m.rowtime },
            updating: false,
            pending: None,
            window_end: None,
            window_start: None,
        })
    }
}
