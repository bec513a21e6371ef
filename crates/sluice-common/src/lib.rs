//! The vocabulary every Sluice crate shares: the error type, event time, the messages that flow
//! between operators and the typed access to `WITH (...)` options.
//!
//! It exists so that the runtime, the connectors and the SQL front end can talk to each other
//! without depending on each other's internals.

pub mod error;
pub mod message;
pub mod options;
pub mod time;

pub use error::{Result, SluiceError};
pub use message::{ChangeBatch, CheckpointId, Message, RowKind, SplitId, SplitStatus};
pub use options::Options;
pub use time::{EventTime, MAX_WATERMARK, MIN_WATERMARK};
