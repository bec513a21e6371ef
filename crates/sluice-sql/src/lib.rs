//! Sluice's Flink SQL front end: it reads scripts (Flink's DDL around `sqlparser`), resolves
//! and types queries with DataFusion, and plans them into jobs of Sluice's streaming operators
//! (watermarks, windows, aggregates) for the engine to run.
//!
//! ```no_run
//! # fn registry() -> std::sync::Arc<dyn sluice_engine::ConnectorRegistry> { unimplemented!() }
//! let mut session = sluice_sql::Session::new(registry());
//! let outcome = session.execute_script("SELECT 1").unwrap();
//! ```

pub mod catalog;
pub mod decimal_division;
pub mod fast_intervals;
pub mod flink_semantics;
pub mod functions;
pub mod match_recognize;
pub mod operators;
pub mod parser;
pub mod planner;
pub mod session;
pub mod temporal_table;
pub mod types;
pub mod window;

pub use session::{ScriptOutcome, Session};
