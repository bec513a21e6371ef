//! Sluice's streaming operators for SQL: they evaluate DataFusion's physical expressions and
//! aggregate accumulators on Arrow batches, and own event time, state and windows.

pub(crate) mod acc_state;
pub mod append_only_top_n;
pub mod calc;
pub mod changelog_normalize;
pub mod deduplicate;
pub mod group_aggregate;
pub mod interval_join;
pub mod join_rows;
pub mod over_aggregate;
pub mod regular_join;
pub mod top_n;
pub mod union;
pub mod watermark;
pub mod window_aggregate;
pub mod window_assign;
pub mod window_join;

use datafusion_common::DataFusionError;
use sluice_common::{EventTime, Result, SluiceError};
use sluice_engine::StateReader;

pub(crate) fn df(e: DataFusionError) -> SluiceError {
    SluiceError::Runtime(e.to_string())
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
