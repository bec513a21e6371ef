//! Sluice's streaming operators for SQL: they evaluate DataFusion's physical expressions and
//! aggregate accumulators on Arrow batches, and own event time, state and windows.

pub(crate) mod acc_state;
pub mod append_only_top_n;
pub mod calc;
pub mod changelog_normalize;
pub(crate) mod count_accumulators;
pub mod deduplicate;
pub mod group_aggregate;
pub mod interval_join;
pub mod join_rows;
pub mod lookup_cache;
pub mod lookup_join;
pub mod match_recognize;
pub mod nfa;
pub mod not_null;
pub mod over_aggregate;
pub mod rank_rows;
pub mod regular_join;
pub mod retract_top_n;
pub mod scalar_eval;
pub mod temporal_join;
pub mod top_n;
pub mod union;
pub mod values;
pub mod watermark;
pub mod window_aggregate;
pub mod window_assign;
pub mod window_join;

use arrow::array::ArrayRef;
use arrow::record_batch::RecordBatch;
use datafusion_common::DataFusionError;
use datafusion_physical_expr::PhysicalExpr;
use sluice_common::{ChangeBatch, EventTime, Result, SluiceError};
use sluice_engine::keyed::RowCodec;
use sluice_engine::StateReader;
use std::sync::Arc;

pub(crate) fn df(e: DataFusionError) -> SluiceError {
    SluiceError::Runtime(e.to_string())
}

/// An error unless every row of `batch` is an insert (for operators that take only
/// append-only input; the planner refuses an updating one, this guards the runtime).
pub(crate) fn require_inserts(batch: &ChangeBatch, operator: &str) -> Result<()> {
    if batch.kinds.is_some() && (0..batch.num_rows()).any(|i| !batch.kind(i).is_addition()) {
        return Err(SluiceError::Runtime(format!(
            "{operator} takes only inserts, and its input sent an update or a delete"
        )));
    }
    Ok(())
}

/// The stable key of every row of `batch`: `exprs` evaluated and encoded with `codec`.
pub(crate) fn encode_keys(
    exprs: &[Arc<dyn PhysicalExpr>],
    codec: &RowCodec,
    batch: &RecordBatch,
) -> Result<Vec<Vec<u8>>> {
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = exprs
        .iter()
        .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
        .collect::<datafusion_common::Result<_>>()
        .map_err(df)?;
    codec.encode_rows(&columns, n)
}

/// A subtask context for operator unit tests.
#[cfg(test)]
pub(crate) fn test_context() -> sluice_engine::SubtaskContext {
    sluice_engine::SubtaskContext {
        job_name: "t".into(),
        operator_name: "n".into(),
        subtask_index: 0,
        parallelism: 1,
        metrics: Arc::new(sluice_engine::Metrics::default()),
        checkpointing: false,
        state: sluice_engine::StateConfig::default(),
        node: 0,
        state_resources: Arc::new(sluice_engine::keyed::StateResources::default()),
    }
}

/// Restores what every old subtask of a rescaled operator wrote with `restore`, which gives
/// the watermark each had; the operator goes on from the smallest (`current` if none).
pub(crate) fn restore_smallest_watermark(
    states: &mut [(usize, StateReader<'_>)],
    current: EventTime,
    mut restore: impl FnMut(&mut StateReader<'_>) -> Result<EventTime>,
) -> Result<EventTime> {
    let mut watermark = current;
    for (_, state) in states.iter_mut() {
        watermark = watermark.min(restore(state)?);
    }
    Ok(watermark)
}
