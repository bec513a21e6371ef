//! The REST API of `sluice server`, in JSON, with Flink's resource names where a Flink tool
//! expects them (`/overview`, `/jobs`, `/jobs/:id`, `/jobs/:id/checkpoints`,
//! `/jobs/:id/exceptions`, `PATCH /jobs/:id?mode=cancel`, `POST /jobs/:id/stop`,
//! `POST /jobs/:id/savepoints`, `GET /jobs/:id/savepoints/:request-id`), plus
//! `POST /jobs` (a Flink SQL script as the body), `/healthz`, `/readyz`, `/metrics` and the
//! OpenAPI description at `/openapi.json`. With a bearer token configured, every request but
//! the health checks must carry it.

use crate::job_manager::{JobManager, JobState, SubmitError};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use sluice_engine::checkpoint::SavepointStatus;
use std::sync::Arc;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    pub jobs: Arc<JobManager>,
    pub metrics: PrometheusHandle,
    /// Required as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// The broker of the same process, if it runs one.
    pub broker: Option<Arc<sluice_broker::Broker>>,
    /// The schema registry served beside the API (Confluent's paths: `/subjects`, ...).
    pub registry: Option<Arc<crate::schema_registry::SchemaRegistry>>,
}

/// The routes.
pub fn router(api: Api) -> Router {
    let auth = {
        let token = api.token.clone();
        axum::middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { authorize(token.as_deref(), req, next).await }
        })
    };
    let registry = match &api.registry {
        Some(r) => crate::schema_registry::routes(r.clone()).route_layer(auth.clone()),
        None => Router::new(),
    };
    Router::new()
        .route("/overview", get(overview))
        .route("/jobs", get(jobs).post(submit))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job).patch(cancel))
        .route("/jobs/{id}/stop", post(stop))
        .route("/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/jobs/{id}/savepoints/{request}", get(savepoint_status))
        .route("/jobs/{id}/checkpoints", get(checkpoints))
        .route("/jobs/{id}/exceptions", get(exceptions))
        .route("/jobs/{id}/preview", get(preview))
        .route("/topics", get(topics))
        .route("/consumer-groups", get(consumer_groups))
        .route("/metrics", get(metrics))
        .route("/events", get(crate::dashboard::events))
        .route("/openapi.json", get(openapi))
        .route_layer(auth.clone())
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::dashboard::routes())
        .route(
            "/readyz",
            get(|| async { json_response(StatusCode::OK, json!({"status": "ready"})) }),
        )
        .with_state(api)
        .merge(registry)
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(api))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn authorize(token: Option<&str>, req: Request, next: Next) -> Response {
    if let Some(token) = token {
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // A browser's EventSource cannot set headers: `?token=` there.
        let query = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="));
        if header != Some(token) && query != Some(token) {
            return error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer <token>)",
            );
        }
    }
    next.run(req).await
}

pub(crate) fn json_response(status: StatusCode, v: Value) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// Flink's error shape: `{"errors": [...]}`.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"errors": [message]}))
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("job {id} not found"))
}

async fn overview(State(api): State<Api>) -> Response {
    json_response(StatusCode::OK, overview_json(&api.jobs))
}

pub(crate) fn overview_json(jobs: &JobManager) -> Value {
    let mut counts = [0usize; 4];
    for j in jobs.list() {
        counts[match j.state() {
            JobState::Running => 0,
            JobState::Finished => 1,
            JobState::Canceled => 2,
            JobState::Failed => 3,
        }] += 1;
    }
    json!({
        "jobs-running": counts[0],
        "jobs-finished": counts[1],
        "jobs-cancelled": counts[2],
        "jobs-failed": counts[3],
        "flink-version": format!("sluice {}", env!("CARGO_PKG_VERSION")),
    })
}

async fn jobs(State(api): State<Api>) -> Response {
    let jobs: Vec<Value> = api
        .jobs
        .list()
        .iter()
        .map(|j| json!({"id": j.id, "status": j.state().name()}))
        .collect();
    json_response(StatusCode::OK, json!({ "jobs": jobs }))
}

async fn jobs_overview(State(api): State<Api>) -> Response {
    let jobs: Vec<Value> = api
        .jobs
        .list()
        .iter()
        .map(|j| {
            let d = j.details();
            json!({
                "jid": d["jid"], "name": d["name"], "state": d["state"],
                "start-time": d["start-time"], "end-time": d["end-time"], "duration": d["duration"],
            })
        })
        .collect();
    json_response(StatusCode::OK, json!({ "jobs": jobs }))
}

/// `POST /jobs`: the body is a Flink SQL script; 202 with the new job's id, 400 with the
/// planner's message (and the line and column it names), 409 if a running job has its name.
async fn submit(State(api): State<Api>, RawQuery(q): RawQuery, body: String) -> Response {
    let jobs = api.jobs.clone();
    // `?savepointPath=DIR` (Flink's name): start from that savepoint.
    let from = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("savepointPath="))
        .map(|p| std::path::PathBuf::from(percent_decode(p)));
    // Planning reads catalogs and may probe connectors: off the async threads.
    let result = tokio::task::spawn_blocking(move || jobs.submit(&body, from)).await;
    match result {
        Ok(Ok(id)) => json_response(StatusCode::ACCEPTED, json!({ "jobid": id })),
        Ok(Err(SubmitError::Conflict(m))) => error(StatusCode::CONFLICT, &m),
        Ok(Err(SubmitError::Invalid(m))) => {
            let (line, column) = position(&m);
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"errors": [m], "line": line, "column": column}),
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `%XX` escapes (and `+`) of a query value decoded; a broken escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The line and column a planner message names ("... at line 3, column 7: ..."), if any.
fn position(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |key: &str| {
        let at = message.find(key)? + key.len();
        message[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .ok()
    };
    (number_after("line "), number_after("column "))
}

async fn job(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.jobs.get(&id) {
        Some(j) => json_response(StatusCode::OK, j.details()),
        None => not_found(&id),
    }
}

/// `PATCH /jobs/:id?mode=cancel` (Flink's cancel).
async fn cancel(State(api): State<Api>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let mode = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("mode="))
        .unwrap_or("cancel");
    if mode != "cancel" {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("mode '{mode}' is not supported (only 'cancel')"),
        );
    }
    match api.jobs.get(&id) {
        Some(j) => {
            j.handle.cancel();
            json_response(StatusCode::ACCEPTED, json!({}))
        }
        None => not_found(&id),
    }
}

/// `POST /jobs/:id/stop` (body, optional: `{"targetDirectory": DIR}`): a savepoint, then the
/// job stops (Flink's stop with savepoint); `GET /jobs/:id/savepoints/:request-id` says where
/// the savepoint is, and `GET /jobs/:id` gives its `savepoint-path` once stopped.
async fn stop(State(api): State<Api>, Path(id): Path<String>, body: Bytes) -> Response {
    savepoint(&api, &id, &body, "targetDirectory", Some(true))
}

/// `POST /jobs/:id/savepoints` (body, optional: `{"target-directory": DIR, "cancel-job":
/// false}`): a savepoint while the job goes on (Flink's trigger savepoint), or before it stops
/// with `cancel-job`.
async fn trigger_savepoint(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    savepoint(&api, &id, &body, "target-directory", None)
}

/// Asks job `id` for a savepoint as `body` says (its directory under `dir_field`; whether the
/// job stops after it under `cancel-job`, unless `stop` says).
fn savepoint(api: &Api, id: &str, body: &[u8], dir_field: &str, stop: Option<bool>) -> Response {
    let body: Value = if body.trim_ascii().is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not JSON: {e}"),
                )
            }
        }
    };
    let dir = match &body[dir_field] {
        Value::Null => None,
        Value::String(d) if !d.is_empty() => Some(std::path::PathBuf::from(d)),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("'{dir_field}' must be a directory path, not {other}"),
            )
        }
    };
    let stop = match (stop, &body["cancel-job"]) {
        (Some(stop), _) => stop,
        (None, Value::Null) => false,
        (None, Value::Bool(b)) => *b,
        (None, other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("'cancel-job' must be true or false, not {other}"),
            )
        }
    };
    match api.jobs.get(id) {
        Some(j) if j.state() == JobState::Running => {
            let request = j.handle.savepoint(dir, stop);
            json_response(
                StatusCode::ACCEPTED,
                json!({ "request-id": request.to_string() }),
            )
        }
        Some(j) => error(
            StatusCode::CONFLICT,
            &format!("job {id} is {}, not running", j.state().name()),
        ),
        None => not_found(id),
    }
}

/// `GET /jobs/:id/savepoints/:request-id`: Flink's asynchronous operation result,
/// `{"status": {"id": "IN_PROGRESS" | "COMPLETED"}, "operation": {"location": DIR} |
/// {"failure-cause": {...}}}`.
async fn savepoint_status(
    State(api): State<Api>,
    Path((id, request)): Path<(String, String)>,
) -> Response {
    let Some(j) = api.jobs.get(&id) else {
        return not_found(&id);
    };
    let status = request
        .parse::<u64>()
        .ok()
        .and_then(|r| j.handle.savepoint_status(r));
    let body = match status {
        None => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("job {id} has no savepoint request '{request}'"),
            )
        }
        Some(SavepointStatus::Waiting | SavepointStatus::InProgress(_)) => {
            json!({"status": {"id": "IN_PROGRESS"}})
        }
        Some(SavepointStatus::Completed(path)) => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"location": path.display().to_string()},
        }),
        Some(SavepointStatus::Failed(reason)) => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failure-cause": {"class": "SavepointFailed", "stack-trace": reason}},
        }),
    };
    json_response(StatusCode::OK, body)
}

async fn checkpoints(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.jobs.get(&id) {
        Some(j) => json_response(StatusCode::OK, j.checkpoints()),
        None => not_found(&id),
    }
}

async fn exceptions(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.jobs.get(&id) {
        Some(j) => json_response(StatusCode::OK, j.exceptions()),
        None => not_found(&id),
    }
}

fn no_broker() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "this server runs no broker (--no-broker)",
    )
}

/// `GET /topics`: every topic with its partitions' offsets.
async fn topics(State(api): State<Api>) -> Response {
    match &api.broker {
        Some(broker) => json_response(StatusCode::OK, topics_json(broker)),
        None => no_broker(),
    }
}

/// `GET /consumer-groups`: every group with its state, committed offsets and lag.
async fn consumer_groups(State(api): State<Api>) -> Response {
    match &api.broker {
        Some(broker) => json_response(StatusCode::OK, groups_json(broker)),
        None => no_broker(),
    }
}

pub(crate) fn topics_json(broker: &sluice_broker::Broker) -> Value {
    let topics: Vec<Value> = broker
        .topics
        .list()
        .into_iter()
        .map(|(name, n)| {
            let partitions: Vec<Value> = (0..n as i32)
                .filter_map(|p| {
                    let part = broker.topics.partition(&name, p)?;
                    Some(json!({
                        "partition": p,
                        "log-start-offset": part.log_start_offset(),
                        "log-end-offset": part.log_end_offset(),
                    }))
                })
                .collect();
            json!({"name": name, "partitions": partitions})
        })
        .collect();
    json!({ "topics": topics })
}

pub(crate) fn groups_json(broker: &sluice_broker::Broker) -> Value {
    use std::collections::BTreeMap;
    let states: BTreeMap<String, &'static str> = broker
        .groups
        .list()
        .into_iter()
        .map(|(g, state, _)| (g, state.name()))
        .collect();
    let mut groups: BTreeMap<String, Vec<Value>> =
        states.keys().map(|g| (g.clone(), Vec::new())).collect();
    let mut lags: BTreeMap<String, i64> = BTreeMap::new();
    for l in broker.consumer_lags() {
        *lags.entry(l.group.clone()).or_default() += l.lag();
        groups.entry(l.group.clone()).or_default().push(json!({
            "topic": l.topic,
            "partition": l.partition,
            "committed-offset": l.committed,
            "log-end-offset": l.log_end_offset,
            "lag": l.lag(),
        }));
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, offsets)| {
            json!({
                "group": g,
                "state": states.get(&g).copied().unwrap_or("Empty"),
                "lag": lags.get(&g).copied().unwrap_or(0),
                "offsets": offsets,
            })
        })
        .collect();
    json!({ "groups": groups })
}

async fn preview(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.jobs.get(&id) {
        Some(j) => json_response(StatusCode::OK, j.preview()),
        None => not_found(&id),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    (
        [(CONTENT_TYPE, crate::metrics_endpoint::TEXT_FORMAT)],
        api.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("%2Ftmp%2Fsp-1"), "/tmp/sp-1");
        assert_eq!(percent_decode("a+b%zz%2"), "a b%zz%2");
    }

    #[test]
    fn the_position_of_a_planner_error() {
        assert_eq!(
            position("SQL error at line 3, column 14: expected an expression"),
            (Some(3), Some(14))
        );
        assert_eq!(position("table 'x' not found"), (None, None));
    }

    #[test]
    fn the_openapi_description_is_json_and_lists_the_routes() {
        let v: Value = serde_json::from_str(OPENAPI).unwrap();
        for path in [
            "/overview",
            "/jobs",
            "/jobs/overview",
            "/jobs/{id}",
            "/jobs/{id}/stop",
            "/jobs/{id}/checkpoints",
            "/jobs/{id}/exceptions",
            "/jobs/{id}/preview",
            "/healthz",
            "/readyz",
            "/metrics",
            "/topics",
            "/consumer-groups",
        ] {
            assert!(v["paths"][path].is_object(), "{path} missing");
        }
    }
}
