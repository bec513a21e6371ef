//! Sluice's operations side: what runs and shows jobs to the outside. The Prometheus endpoint
//! ([`metrics_endpoint`]), which `sluice run --metrics-addr` serves for one job; and for
//! `sluice server`, the job manager ([`job_manager`]), the REST API ([`rest`]) and the web
//! dashboard ([`dashboard`]).

pub mod dashboard;
pub mod job_manager;
pub mod metrics_endpoint;
pub mod rest;
pub mod schema_registry;
