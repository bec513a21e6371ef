//! The storage engine of Sluice's event log, with no network: a topic is partitions, a
//! partition is a sequence of segment files holding Kafka v2 record batches byte for byte as
//! producers sent them (base offset assigned, CRC-32C checked, compression left as is), with a
//! sparse offset index and a time index beside each segment.
//!
//! Durability is explicit: appends go to the page cache, and [`PartitionLog::sync`] makes them
//! durable; on open, the tail of a partition is checked batch by batch and a torn write is
//! truncated.

pub mod batch;
pub mod config;
pub mod index;
pub mod partition;
pub mod producers;
pub mod segment;
pub mod transactions;

pub use batch::{BatchHeader, BATCH_HEADER_BYTES};
pub use config::LogConfig;
pub use partition::{AppendInfo, PartitionLog, ReadResult};
