//! The `http` source: an endpoint that takes events by `POST` into a table. A request's body
//! is JSON (one object, an array of objects, or objects one after another, e.g. JSON lines)
//! or CSV lines, in the table's `format`. The request is answered once its rows are in the
//! job (the source has handed them on): `200 {"accepted": N}`. A body that does not decode is
//! answered `400` with where and why, and none of its rows is taken (with
//! `*.ignore-parse-errors`, the malformed ones are skipped and counted, and the others taken).
//! When the job is behind, requests wait: the backpressure reaches the clients.
//!
//! Delivery: an answered event is in the job; a crash loses what came after the last
//! checkpoint (at most once), as there is no position to go back to; a client that retries
//! unanswered requests gets at least once.

use crate::format::{self, LineDecoder};
use crate::Connector;
use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crossbeam_channel::{bounded, Receiver, Sender};
use sluice_common::{ChangeBatch, CheckpointId, Options, Result, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OPTIONS: &[&str] = &["connector", "listen", "path", "format", "auth.token"];

/// Requests whose rows wait for the source at once.
const QUEUE: usize = 64;

/// How long `poll` waits for a request.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// The `http` connector (a source).
pub struct HttpConnector;

impl Connector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        let o = &spec.options;
        let format = format::checked_format(o, OPTIONS, format::FORMATS)?;
        format::decoder(&format, spec.schema.clone(), o)?;
        let listen = o.required("listen")?.to_string();
        listen.parse::<std::net::SocketAddr>().map_err(|_| {
            SluiceError::Config(format!(
                "{}: 'listen' = '{listen}' is not an address to listen on, such as '127.0.0.1:8088'",
                o.owner
            ))
        })?;
        let path = o.string("path", "/");
        if !path.starts_with('/') {
            return Err(SluiceError::Config(format!(
                "{}: 'path' = '{path}' must start with '/'",
                o.owner
            )));
        }
        Ok(Arc::new(HttpSourceFactory {
            spec: spec.clone(),
            format,
            listen,
            path,
            token: o.get("auth.token").map(str::to_string),
        }))
    }
}

struct HttpSourceFactory {
    spec: SourceSpec,
    format: String,
    listen: String,
    path: String,
    token: Option<String>,
}

/// Rows of one request, and where to say they were taken.
type Delivery = (Vec<RecordBatch>, tokio::sync::oneshot::Sender<()>);

/// What the request handlers share.
#[derive(Clone)]
struct Endpoint {
    owner: String,
    spec: SourceSpec,
    format: String,
    token: Option<String>,
    rows: Sender<Delivery>,
    skipped: Arc<AtomicU64>,
}

impl SourceFactory for HttpSourceFactory {
    fn name(&self) -> String {
        format!("http [{}{}]", self.listen, self.path)
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        if ctx.subtask_index > 0 {
            // One listener: the other subtasks have nothing to read.
            return Ok(Box::new(HttpReader { rows: None }));
        }
        let owner = self.spec.options.owner.clone();
        let listener = std::net::TcpListener::bind(&self.listen).map_err(|e| {
            SluiceError::Config(format!("{owner}: cannot listen on '{}': {e}", self.listen))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SluiceError::io("the http source's listener", e))?;
        let (tx, rx) = bounded(QUEUE);
        let endpoint = Endpoint {
            owner: owner.clone(),
            spec: self.spec.clone(),
            format: self.format.clone(),
            token: self.token.clone(),
            rows: tx,
            skipped: ctx
                .metrics
                .counter(&format!("{}: malformed events skipped", self.spec.table)),
        };
        let router = axum::Router::new()
            .route(&self.path, axum::routing::post(accept))
            .with_state(endpoint);
        std::thread::Builder::new()
            .name(format!("http source {}", self.listen))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!("{owner}: cannot start the HTTP server: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            if let Err(e) = axum::serve(l, router).await {
                                tracing::error!("{owner}: the HTTP server stopped: {e}");
                            }
                        }
                        Err(e) => tracing::error!("{owner}: cannot serve: {e}"),
                    }
                });
            })
            .map_err(|e| SluiceError::io("starting the http source", e))?;
        tracing::info!(
            "{}: taking events at http://{}{}",
            self.spec.table,
            self.listen,
            self.path
        );
        Ok(Box::new(HttpReader { rows: Some(rx) }))
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `POST`: the body's rows, answered once the source has taken them.
async fn accept(State(e): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &e.token {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return answer(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a bearer token is required (Authorization: Bearer <token>)"}),
            );
        }
    }
    let decoded = decode(&e, &body);
    let batches = match decoded {
        Ok(b) => b,
        Err(why) => return answer(StatusCode::BAD_REQUEST, serde_json::json!({"error": why})),
    };
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let (taken_tx, taken_rx) = tokio::sync::oneshot::channel();
    let rows = e.rows.clone();
    // The queue may be full (the job is behind): wait off the async threads.
    let queued = tokio::task::spawn_blocking(move || rows.send((batches, taken_tx))).await;
    if !matches!(queued, Ok(Ok(()))) || taken_rx.await.is_err() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": format!("{}: the job is not running", e.owner)}),
        );
    }
    answer(StatusCode::OK, serde_json::json!({"accepted": n}))
}

/// A body's rows; an error says where in the body and why.
fn decode(e: &Endpoint, body: &[u8]) -> std::result::Result<Vec<RecordBatch>, String> {
    let options: &Options = &e.spec.options;
    let mut decoder: Box<dyn LineDecoder> =
        format::decoder(&e.format, e.spec.schema.clone(), options).map_err(|x| x.to_string())?;
    let lines = if e.format == "json" {
        json_lines(body)?
    } else {
        body.to_vec()
    };
    let before = decoder.skipped();
    let batches = decoder
        .decode("the request body", 1, &lines)
        .map_err(|x| x.to_string())?;
    let skipped = decoder.skipped() - before;
    if skipped > 0 {
        e.skipped.fetch_add(skipped, Ordering::Relaxed);
    }
    Ok(batches)
}

/// A JSON body (an object, an array of objects, or objects one after another) as one object
/// a line.
fn json_lines(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let trimmed = body.trim_ascii_start();
    let mut out = Vec::with_capacity(body.len());
    if trimmed.starts_with(b"[") {
        let values: Vec<serde_json::Value> = serde_json::from_slice(trimmed)
            .map_err(|x| format!("the request body is not a JSON array of objects: {x}"))?;
        for v in values {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
        return Ok(out);
    }
    // One line a value; a value that is not JSON keeps its line, for the decoder to name (or
    // skip).
    let mut rest = trimmed;
    while !rest.trim_ascii().is_empty() {
        let mut values =
            serde_json::Deserializer::from_slice(rest).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(v)) => {
                out.extend_from_slice(v.to_string().as_bytes());
                out.push(b'\n');
                rest = &rest[values.byte_offset()..];
            }
            _ => {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
                out.extend_from_slice(&rest[..end]);
                if !rest[..end].ends_with(b"\n") {
                    out.push(b'\n');
                }
                rest = &rest[end..];
            }
        }
        rest = rest.trim_ascii_start();
    }
    Ok(out)
}

struct HttpReader {
    /// `None` on the subtasks without the listener.
    rows: Option<Receiver<Delivery>>,
}

impl SourceReader for HttpReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        let Some(rx) = &self.rows else {
            return Ok(SourcePoll::Idle);
        };
        let (batches, taken) = match rx.recv_timeout(POLL_WAIT) {
            Ok(d) => d,
            Err(_) => return Ok(SourcePoll::Idle),
        };
        let _ = taken.send(());
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Ok(SourcePoll::Idle),
        };
        let all = arrow::compute::concat_batches(&schema, &batches)?;
        Ok(SourcePoll::Batch(ChangeBatch::inserts(all)))
    }

    fn has_nothing_to_read(&self) -> bool {
        self.rows.is_none()
    }

    fn snapshot_position(&mut self, _c: CheckpointId, _state: &mut StateWriter) -> Result<()> {
        Ok(())
    }

    fn restore_position(&mut self, _state: &mut StateReader<'_>) -> Result<()> {
        Ok(())
    }

    fn restore_rescaled(
        &mut self,
        _old: usize,
        _states: &mut [(usize, StateReader<'_>)],
    ) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_become_one_object_a_line() {
        let one = json_lines(b"{\"a\": 1}").unwrap();
        assert_eq!(one, b"{\"a\":1}\n");
        let array = json_lines(b" [{\"a\": 1}, {\"a\": 2}]").unwrap();
        assert_eq!(array, b"{\"a\":1}\n{\"a\":2}\n");
        let pretty = json_lines(b"{\n \"a\": 1\n}\n{\"a\": 2}\n").unwrap();
        assert_eq!(pretty, b"{\"a\":1}\n{\"a\":2}\n");
        let broken = json_lines(b"{\"a\": 1}\nnot json\n{\"a\": 3}").unwrap();
        assert_eq!(broken, b"{\"a\":1}\nnot json\n{\"a\":3}\n");
        assert!(json_lines(b"[1, ").is_err());
    }
}
