//! A schema registry that speaks the REST API of Confluent's Schema Registry, the subset
//! Kafka clients and Flink's `avro-confluent` format use: schemas by id (`/schemas/ids/{id}`),
//! subjects and their versions (`/subjects/...`, registering with `POST`, looking up,
//! soft and permanent deletes), compatibility levels (`/config`) and checks
//! (`/compatibility/...`). Avro schemas only. `sluice server` serves it beside its REST API;
//! `sluice broker --schema-registry ADDR` on its own port.

pub mod compatibility;
pub mod store;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use store::{Level, Store, StoreError};

/// The registry: its store behind a lock (requests are short).
pub struct SchemaRegistry {
    store: Mutex<Store>,
}

impl SchemaRegistry {
    /// The registry kept in `dir/schemas.json` (created when the first schema is).
    pub fn open(dir: &FsPath) -> Result<Arc<SchemaRegistry>, String> {
        Ok(Arc::new(SchemaRegistry {
            store: Mutex::new(Store::open(Some(dir.join("schemas.json")))?),
        }))
    }

    /// A registry kept in memory only.
    pub fn in_memory() -> Arc<SchemaRegistry> {
        Arc::new(SchemaRegistry {
            store: Mutex::new(Store::default()),
        })
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-changed (changes are
        // applied whole or undone), so a poisoned lock is still good.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Reg = Arc<SchemaRegistry>;
/// The registry's routes.
pub fn routes(registry: Reg) -> Router {
    Router::new()
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(|| async { ok(json!({"mode": "READWRITE"})) }))
        .with_state(registry)
}

/// The registry's media type.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn ok(v: Value) -> Response {
    (StatusCode::OK, [(CONTENT_TYPE, MEDIA_TYPE)], v.to_string()).into_response()
}

/// Confluent's error shape: `{"error_code": 40401, "message": "..."}`.
fn fail(status: u16, code: u32, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(CONTENT_TYPE, MEDIA_TYPE)],
        json!({"error_code": code, "message": message}).to_string(),
    )
        .into_response()
}

/// A schema's own text (the `/schema` paths), or the error.
fn raw_schema(r: Result<&str, StoreError>) -> Response {
    match r {
        Ok(s) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            s.to_string(),
        )
            .into_response(),
        Err(e) => reply(Err(e)),
    }
}

fn reply(r: Result<Value, StoreError>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => {
            let (status, code) = e.codes();
            fail(status, code, e.message())
        }
    }
}

/// True if the query (`?permanent=true&...`) sets flag `name`.
fn flag(q: &Option<String>, name: &str) -> bool {
    q.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<u32, StoreError> {
    id.parse()
        .map_err(|_| StoreError::SchemaNotFound(format!("Schema {id} not found")))
}

/// The schema of a request body (`{"schema": "...", "schemaType": "AVRO"}`).
fn body_schema(body: &[u8]) -> Result<String, StoreError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| StoreError::InvalidSchema(format!("the request body is not JSON: {e}")))?;
    if let Some(t) = v.get("schemaType").and_then(Value::as_str) {
        if !t.eq_ignore_ascii_case("AVRO") {
            return Err(StoreError::InvalidSchema(format!(
                "schema type {t} is not supported: this registry holds Avro schemas"
            )));
        }
    }
    if v.get("references")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        return Err(StoreError::InvalidSchema(
            "schema references are not supported".into(),
        ));
    }
    v.get("schema")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            StoreError::InvalidSchema("the request body has no \"schema\" string".into())
        })
}

async fn schema_by_id(State(r): State<Reg>, Path(id): Path<String>) -> Response {
    reply((|| {
        let store = r.store();
        Ok(json!({"schema": store.schema(parse_id(&id)?)?}))
    })())
}

async fn raw_schema_by_id(State(r): State<Reg>, Path(id): Path<String>) -> Response {
    let store = r.store();
    raw_schema(parse_id(&id).and_then(|id| store.schema(id)))
}

async fn subjects_of_id(State(r): State<Reg>, Path(id): Path<String>) -> Response {
    reply((|| {
        let store = r.store();
        let uses = store.uses(parse_id(&id)?)?;
        let mut names: Vec<&str> = uses.iter().map(|u| u.0).collect();
        names.dedup();
        Ok(json!(names))
    })())
}

async fn versions_of_id(State(r): State<Reg>, Path(id): Path<String>) -> Response {
    reply((|| {
        let store = r.store();
        let uses = store.uses(parse_id(&id)?)?;
        Ok(Value::Array(
            uses.iter()
                .map(|(s, v)| json!({"subject": s, "version": v}))
                .collect(),
        ))
    })())
}

async fn subjects(State(r): State<Reg>, RawQuery(q): RawQuery) -> Response {
    ok(json!(r.store().subjects(flag(&q, "deleted"))))
}

async fn versions(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    reply(
        r.store()
            .versions(&subject, flag(&q, "deleted"))
            .map(|v| json!(v)),
    )
}

fn version_json(store: &Store, subject: &str, v: &store::Version) -> Result<Value, StoreError> {
    Ok(json!({
        "subject": subject,
        "version": v.version,
        "id": v.id,
        "schema": store.schema(v.id)?,
    }))
}

async fn version(
    State(r): State<Reg>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let store = r.store();
    reply(
        store
            .version(&subject, &version, flag(&q, "deleted"))
            .and_then(|v| version_json(&store, &subject, &v)),
    )
}

async fn raw_version(
    State(r): State<Reg>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let store = r.store();
    raw_schema(
        store
            .version(&subject, &version, false)
            .and_then(|v| store.schema(v.id)),
    )
}

async fn register(State(r): State<Reg>, Path(subject): Path<String>, body: Bytes) -> Response {
    reply((|| {
        let schema = body_schema(&body)?;
        let mut store = r.store();
        let v = store.register(&subject, &schema)?;
        Ok(json!({"id": v.id}))
    })())
}

async fn lookup(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    reply((|| {
        let schema = body_schema(&body)?;
        let store = r.store();
        let v = store.lookup(&subject, &schema, flag(&q, "deleted"))?;
        version_json(&store, &subject, &v)
    })())
}

async fn delete_subject(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    reply(
        r.store()
            .delete_subject(&subject, flag(&q, "permanent"))
            .map(|v| json!(v)),
    )
}

async fn delete_version(
    State(r): State<Reg>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    reply(
        r.store()
            .delete_version(&subject, &version, flag(&q, "permanent"))
            .map(|v| json!(v)),
    )
}

fn compatibility(
    r: &Reg,
    subject: &str,
    version: Option<&str>,
    q: &Option<String>,
    body: &[u8],
) -> Response {
    reply((|| {
        let schema = body_schema(body)?;
        let store = r.store();
        let why = match store.incompatibilities(subject, &schema, version) {
            // Nothing to be compatible with.
            Err(StoreError::SubjectNotFound(_)) if version.is_none() => Vec::new(),
            other => other?,
        };
        let mut out = json!({"is_compatible": why.is_empty()});
        if flag(q, "verbose") {
            out["messages"] = json!(why);
        }
        Ok(out)
    })())
}

async fn check_version(
    State(r): State<Reg>,
    Path((subject, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    compatibility(&r, &subject, Some(&version), &q, &body)
}

async fn check_all(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    compatibility(&r, &subject, None, &q, &body)
}

/// The level of a `PUT /config` body (`{"compatibility": "FULL"}`), or why it has none.
fn body_level(body: &[u8]) -> Result<Level, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the request body is not JSON: {e}"))?;
    let name = v
        .get("compatibility")
        .or_else(|| v.get("compatibilityLevel"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Level::parse(name).ok_or_else(|| {
        format!(
            "Invalid compatibility level '{name}'. Valid values are: {}",
            Level::ALL.map(Level::name).join(", ")
        )
    })
}

/// Sets the level of `subject` (`None`: the global one) from a `PUT /config` body.
fn put_level(r: &Reg, subject: Option<&str>, body: &[u8]) -> Response {
    match body_level(body) {
        Ok(level) => reply(
            r.store()
                .set_level(subject, level)
                .map(|_| json!({"compatibility": level.name()})),
        ),
        Err(why) => fail(422, 42203, &why),
    }
}

async fn global_config(State(r): State<Reg>) -> Response {
    let level = r.store().level(None).unwrap_or(Level::Backward);
    ok(json!({"compatibilityLevel": level.name()}))
}

async fn set_global_config(State(r): State<Reg>, body: Bytes) -> Response {
    put_level(&r, None, &body)
}

async fn subject_config(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let store = r.store();
    match store.level(Some(&subject)) {
        Some(l) => ok(json!({"compatibilityLevel": l.name()})),
        None if flag(&q, "defaultToGlobal") => {
            let l = store.level(None).unwrap_or(Level::Backward);
            ok(json!({"compatibilityLevel": l.name()}))
        }
        None => fail(
            404,
            40408,
            &format!("Subject '{subject}' does not have subject-level compatibility configured"),
        ),
    }
}

async fn set_subject_config(
    State(r): State<Reg>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    put_level(&r, Some(&subject), &body)
}

async fn delete_subject_config(State(r): State<Reg>, Path(subject): Path<String>) -> Response {
    reply(
        r.store()
            .delete_level(&subject)
            .map(|l| json!({"compatibilityLevel": l.name()})),
    )
}

/// Serves the registry alone on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Reg,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Alone, it answers an unknown path in its own error shape, as Confluent's does.
    let app = routes(registry).fallback(|| async { fail(404, 404, "HTTP 404 Not Found") });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
