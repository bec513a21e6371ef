//! Flink's `blackhole` connector: swallows every row (for benchmarks and tests).

use crate::Connector;
use sluice_common::{ChangeBatch, Result};
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::sync::Arc;

/// The `blackhole` connector.
pub struct BlackHoleConnector;

impl Connector for BlackHoleConnector {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        spec.options
            .check_known(&["connector", "sink.parallelism"], &[])?;
        Ok(Arc::new(BlackHoleFactory))
    }
}

struct BlackHoleFactory;

impl OperatorFactory for BlackHoleFactory {
    fn name(&self) -> String {
        "Sink: blackhole".into()
    }

    fn create(&self, _ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        Ok(Box::new(BlackHole))
    }
}

struct BlackHole;

impl Operator for BlackHole {
    fn process_batch(
        &mut self,
        _input: usize,
        _batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        Ok(())
    }

    fn process_watermark(&mut self, _watermark: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }
}
