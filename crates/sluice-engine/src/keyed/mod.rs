//! Keyed state and timers: what stateful operators keep per key, split into key groups so
//! that it can be checkpointed asynchronously and restored at another parallelism.
//!
//! - [`key_group`]: keys to key groups to subtasks (the same mapping the hash exchange uses);
//! - [`row_codec`]: the stable encoding of keys and values;
//! - [`backend`]: where entries live (`state.backend.type`);
//! - [`store`]: the operator's view: value, map, list and time-ordered state, TTL, timers,
//!   snapshots;
//! - [`change_set`]: what changed since a snapshot (incremental checkpoints).

pub mod backend;
pub mod change_set;
pub mod key_group;
pub mod lsm;
pub mod row_codec;
pub mod store;

pub use backend::{StateBackend, StateBackendKind, StateResources};
pub use change_set::{ChangeSet, ChangedKeys};
pub use key_group::{key_group_of, KeyGroupRange, DEFAULT_MAX_PARALLELISM, MAX_KEY_GROUPS};
pub use row_codec::RowCodec;
pub use store::{
    Clock, KeyedSnapshot, KeyedStore, ListState, MapState, StateCodec, TimeOrderedState, TimeSlot,
    Timer, ValueState,
};
