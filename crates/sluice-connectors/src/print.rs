//! Flink's `print` connector: every change as a line on standard output (or error), `+I[...]`.

use crate::format::text::{format_value, Style};
use crate::Connector;
use sluice_common::{ChangeBatch, Result};
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::io::Write;
use std::sync::Arc;

/// The `print` connector.
pub struct PrintConnector;

impl Connector for PrintConnector {
    fn name(&self) -> &'static str {
        "print"
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        spec.options.check_known(
            &[
                "connector",
                "print-identifier",
                "standard-error",
                "sink.parallelism",
            ],
            &[],
        )?;
        Ok(Arc::new(PrintSinkFactory {
            identifier: spec.options.get("print-identifier").map(str::to_string),
            stderr: spec.options.bool("standard-error", false)?,
        }))
    }
}

/// Creates print sinks; also used for a bare `SELECT`.
pub struct PrintSinkFactory {
    /// The prefix of every line.
    pub identifier: Option<String>,
    /// Print to standard error instead of standard output.
    pub stderr: bool,
}

impl OperatorFactory for PrintSinkFactory {
    fn name(&self) -> String {
        "Sink: print".into()
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        // As Flink: "id:2> " with parallelism, "id> " without, "2> " or nothing unnamed.
        let prefix = match (&self.identifier, ctx.parallelism > 1) {
            (Some(id), true) => format!("{id}:{}> ", ctx.subtask_index + 1),
            (Some(id), false) => format!("{id}> "),
            (None, true) => format!("{}> ", ctx.subtask_index + 1),
            (None, false) => String::new(),
        };
        Ok(Box::new(PrintSink {
            prefix,
            stderr: self.stderr,
        }))
    }
}

struct PrintSink {
    prefix: String,
    stderr: bool,
}

/// Formats one change as Flink's print connector does: `+I[a, 1, 2024-01-01T10:00]`.
pub fn format_change(batch: &ChangeBatch, row: usize) -> String {
    let mut line = String::new();
    line.push_str(batch.kind(row).short_string());
    line.push('[');
    for c in 0..batch.data.num_columns() {
        if c > 0 {
            line.push_str(", ");
        }
        let v = format_value(batch.data.column(c), row, Style::Print);
        line.push_str(v.as_deref().unwrap_or("null"));
    }
    line.push(']');
    line
}

impl Operator for PrintSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            text.push_str(&self.prefix);
            text.push_str(&format_change(&batch, row));
            text.push('\n');
        }
        // A closed pipe (`sluice run q.sql | head`) is not an error of the job.
        let _ = if self.stderr {
            std::io::stderr().lock().write_all(text.as_bytes())
        } else {
            std::io::stdout().lock().write_all(text.as_bytes())
        };
        Ok(())
    }

    fn process_watermark(&mut self, _watermark: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        let _ = std::io::stdout().flush();
        Ok(())
    }
}
