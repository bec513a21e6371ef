//! A job as a graph: nodes (sources and operators) with a parallelism, and the edges between
//! them with the way rows are distributed over the next node's subtasks.

use crate::checkpoint::CheckpointConfig;
use crate::keyed::{StateBackendKind, DEFAULT_MAX_PARALLELISM};
use crate::operator::OperatorFactory;
use crate::source::SourceFactory;
use std::fmt::Write;
use std::sync::Arc;

/// How rows travel from the subtasks of one node to those of the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Subtask i to subtask i (same parallelism); lets the two be chained into one task.
    Forward,
    /// By the hash of these columns, so that equal keys meet in one subtask.
    Hash(Vec<usize>),
    /// Every row to every subtask.
    Broadcast,
    /// Round robin.
    Rebalance,
    /// Everything to subtask 0.
    Single,
}

impl Partitioning {
    fn label(&self) -> String {
        match self {
            Partitioning::Forward => "FORWARD".into(),
            Partitioning::Hash(cols) => format!("HASH{cols:?}"),
            Partitioning::Broadcast => "BROADCAST".into(),
            Partitioning::Rebalance => "REBALANCE".into(),
            Partitioning::Single => "GLOBAL".into(),
        }
    }
}

/// What a node does.
#[derive(Clone)]
pub enum NodeKind {
    /// Produces rows.
    Source(Arc<dyn SourceFactory>),
    /// Transforms or consumes rows.
    Operator(Arc<dyn OperatorFactory>),
}

/// An edge into a node.
#[derive(Debug, Clone)]
pub struct Input {
    /// The index of the upstream node.
    pub node: usize,
    /// How rows are distributed.
    pub partitioning: Partitioning,
}

/// A node of the graph.
#[derive(Clone)]
pub struct Node {
    /// A name for plans and metrics.
    pub name: String,
    /// The number of subtasks.
    pub parallelism: usize,
    /// What it does.
    pub kind: NodeKind,
    /// Its inputs: none for a source; logical input i is `inputs[i]`.
    pub inputs: Vec<Input>,
}

/// A whole job.
#[derive(Clone, Default)]
pub struct JobGraph {
    /// The job's name.
    pub name: String,
    /// The nodes; an input always refers to an earlier node.
    pub nodes: Vec<Node>,
    /// A source subtask without data for this long is marked idle
    /// (`table.exec.source.idle-timeout`); `None` never.
    pub source_idle_timeout: Option<std::time::Duration>,
    /// How the job takes checkpoints and where it keeps them.
    pub checkpoint: CheckpointConfig,
    /// How keyed state is kept: `pipeline.max-parallelism` (the number of key groups) and
    /// `state.backend.type`.
    pub state: StateConfig,
    /// What the job does when it fails (`restart-strategy.*`).
    pub restart: crate::restart::RestartStrategy,
}

/// How a job keeps keyed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// `pipeline.max-parallelism`: the number of key groups, the most subtasks an operator
    /// can ever have.
    pub max_parallelism: usize,
    /// `state.backend.type`.
    pub backend: StateBackendKind,
    /// `execution.checkpointing.incremental`: a checkpoint writes the keyed state that
    /// changed since the latest complete one, and shares the rest with it.
    pub incremental: bool,
    /// `state.backend.memory.size`: the memory the disk backend may use for all of the
    /// job's keyed state (block cache and write buffers).
    pub memory_bytes: u64,
    /// Where the disk backend keeps its files while the job runs (scratch space: the
    /// checkpoints are the durable copy).
    pub local_dir: std::path::PathBuf,
}

/// The default `state.backend.memory.size`.
pub const DEFAULT_STATE_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            backend: StateBackendKind::default(),
            incremental: false,
            memory_bytes: DEFAULT_STATE_MEMORY_BYTES,
            local_dir: std::path::PathBuf::from("sluice-data/jobs/sluice-job/local-state"),
        }
    }
}

impl JobGraph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        JobGraph {
            name: name.into(),
            nodes: Vec::new(),
            source_idle_timeout: None,
            checkpoint: CheckpointConfig::default(),
            state: StateConfig::default(),
            restart: Default::default(),
        }
    }

    /// Adds a node and returns its index.
    pub fn add(&mut self, node: Node) -> usize {
        for input in &node.inputs {
            assert!(input.node < self.nodes.len(), "inputs must be added first");
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The indexes of the nodes that read from `node`.
    pub fn consumers(&self, node: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&j| self.nodes[j].inputs.iter().any(|i| i.node == node))
            .collect()
    }

    /// True if `node` runs in the same task as its single input.
    pub fn is_chained_to_input(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        if n.inputs.len() != 1 || n.inputs[0].partitioning != Partitioning::Forward {
            return false;
        }
        let up = n.inputs[0].node;
        self.nodes[up].parallelism == n.parallelism && self.consumers(up).len() == 1
    }

    /// A readable description of the graph, one task per paragraph, as `EXPLAIN` prints it.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== Job: {} ==", self.name);
        for (i, n) in self.nodes.iter().enumerate() {
            let chained = self.is_chained_to_input(i);
            let prefix = if chained { "  -> " } else { "" };
            if !chained {
                for input in &n.inputs {
                    let _ = writeln!(
                        s,
                        "  [{}] from #{} ({})",
                        input.partitioning.label(),
                        input.node,
                        self.nodes[input.node].name
                    );
                }
            }
            let _ = writeln!(s, "{prefix}#{i} {} (parallelism {})", n.name, n.parallelism);
        }
        s
    }
}
