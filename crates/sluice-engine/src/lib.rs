//! The dataflow runtime of Sluice: a job is a graph of sources and operators; the runtime chains
//! operators into tasks, runs every subtask on its own thread, connects tasks with bounded
//! channels (the backpressure) and carries watermarks, taking the minimum over each task's
//! inputs.
//!
//! The runtime knows nothing of SQL or of any concrete connector: those come in through the
//! [`Operator`], [`SourceReader`] and [`ConnectorRegistry`] traits.

pub mod checkpoint;
pub mod connector;
pub mod exchange;
pub mod executor;
pub mod graph;
mod input_gate;
pub mod job;
pub mod keyed;
pub mod metrics;
pub mod operator;
pub mod preview;
pub mod restart;
pub mod source;
pub mod state;
pub mod task_metrics;

pub use checkpoint::{CheckpointConfig, CheckpointStats, RestoreMode};
pub use connector::{
    ConnectorRegistry, LookupCacheConfig, LookupFactory, LookupSource, LookupSpec, MetadataColumn,
    SinkSpec, SourceSpec,
};
pub use executor::{restore_point, run_job};
pub use graph::{Input, JobGraph, Node, NodeKind, Partitioning, StateConfig};
pub use job::{JobHandle, JobReport};
pub use keyed::KeyedStore;
pub use metrics::Metrics;
pub use operator::{Operator, OperatorFactory, Output, SubtaskContext};
pub use restart::{run_job_restarting, RestartStrategy};
pub use source::{SourceFactory, SourcePoll, SourceReader};
pub use state::{StateReader, StateWriter};
