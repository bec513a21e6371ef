//! One error type for the whole of Sluice, so that a failure anywhere reaches the user with the
//! place it happened (file, line, column, option) and a hint of what to do.

use std::fmt;

/// Where in a user's input something went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The file, topic or other named input.
    pub source: Option<String>,
    /// 1-based line.
    pub line: Option<u64>,
    /// 1-based column.
    pub column: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(s) = &self.source {
            parts.push(s.clone());
        }
        if let Some(l) = self.line {
            parts.push(format!("line {l}"));
        }
        if let Some(c) = self.column {
            parts.push(format!("column {c}"));
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// Everything that can go wrong in Sluice.
#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    /// The SQL text could not be parsed or planned.
    #[error("SQL error at line {line}, column {column}: {message}")]
    Sql {
        line: u64,
        column: u64,
        message: String,
    },
    /// A statement is valid SQL but cannot be planned (unknown table, unsupported construct).
    #[error("{0}")]
    Plan(String),
    /// A `WITH` option or a `SET` key is missing, unknown or has a bad value.
    #[error("{0}")]
    Config(String),
    /// Input data that cannot be decoded.
    #[error("{location}: {message}")]
    Format { location: Location, message: String },
    /// An operating-system error, with the path or address it concerns.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An error from Arrow while computing on batches.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A failure while the job runs.
    #[error("{0}")]
    Runtime(String),
    /// The job was cancelled (Ctrl-C).
    #[error("job cancelled")]
    Cancelled,
}

impl SluiceError {
    /// An I/O error about `context` (a path, an address).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SluiceError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result type used throughout Sluice.
pub type Result<T, E = SluiceError> = std::result::Result<T, E>;
