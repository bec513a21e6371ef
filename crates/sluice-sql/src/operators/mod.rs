//! Sluice's streaming operators for SQL: they evaluate DataFusion's physical expressions and
//! aggregate accumulators on Arrow batches, and own event time, state and windows.

pub(crate) mod acc_state;
pub mod calc;
pub mod changelog_normalize;
pub mod group_aggregate;
pub mod top_n;
pub mod watermark;
pub mod window_aggregate;
pub mod window_assign;

use datafusion_common::DataFusionError;
use sluice_common::SluiceError;

pub(crate) fn df(e: DataFusionError) -> SluiceError {
    SluiceError::Runtime(e.to_string())
}
