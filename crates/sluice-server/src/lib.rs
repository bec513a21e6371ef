//! Sluice's operations side: what a running job shows to the outside. Today the Prometheus
//! endpoint ([`metrics_endpoint`]), which `sluice run --metrics-addr` serves for one job; the
//! job manager, the REST API and the dashboard of `sluice server` are to come here too.

pub mod metrics_endpoint;
