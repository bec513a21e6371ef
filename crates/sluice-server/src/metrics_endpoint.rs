//! The Prometheus endpoint: installs the process's `metrics` recorder, which keeps every metric
//! the runtime updates (see `sluice_engine::task_metrics`), and serves them at `/metrics` in
//! Prometheus' text exposition format.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sluice_common::{Result, SluiceError};
use std::net::SocketAddr;

/// How often histograms are drained into their summaries.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Prometheus' text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the Prometheus recorder as the process's `metrics` recorder (once per process).
pub fn install_recorder() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| SluiceError::Config(format!("cannot install the metrics recorder: {e}")))
}

/// The routes: `GET /metrics`.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move { ([(CONTENT_TYPE, TEXT_FORMAT)], handle.render()) }
        }),
    )
}

/// Installs the recorder and serves `/metrics` on `addr` (`--metrics-addr`, `host:port`; port
/// 0 picks a free one) from a thread of its own until the process ends. Returns the address
/// it listens on.
pub fn serve_in_background(addr: &str) -> Result<SocketAddr> {
    let option = |e: String| SluiceError::Config(format!("--metrics-addr '{addr}': {e}"));
    let listener = std::net::TcpListener::bind(addr).map_err(|e| option(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| option(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| option(e.to_string()))?;
    let handle = install_recorder()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SluiceError::io("starting the metrics endpoint", e))?;
    std::thread::Builder::new()
        .name("metrics endpoint".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("the metrics endpoint cannot listen: {e}");
                        return;
                    }
                };
                // Histograms (the broker's request latencies) are summarised between scrapes:
                // drain them now and then, or they grow without a scrape.
                let upkeep = handle.clone();
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(UPKEEP_EVERY);
                    loop {
                        every.tick().await;
                        upkeep.run_upkeep();
                    }
                });
                if let Err(e) = axum::serve(listener, router(handle)).await {
                    tracing::error!("the metrics endpoint stopped: {e}");
                }
            })
        })
        .map_err(|e| SluiceError::io("starting the metrics endpoint", e))?;
    Ok(local)
}
