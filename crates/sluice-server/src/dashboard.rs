//! The web dashboard of `sluice server`: one page (HTML, CSS and JavaScript embedded in the
//! binary, nothing from a CDN) that lists the jobs, draws the selected job's operators with
//! their live records per second, its checkpoints and the newest rows its sinks received (with
//! a chart of a numeric column), the broker's topics and consumer lag, and has an SQL editor that submits a script and marks the line of an error. It is
//! kept live by server-sent events: `/events` sends a snapshot of everything every second.

use crate::rest::{groups_json, overview_json, topics_json, Api};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::Stream;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// How often `/events` sends a snapshot.
const EVERY: Duration = Duration::from_secs(1);

/// The page and its assets (public: they hold no data).
pub fn routes() -> Router<Api> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type)], body).into_response()
}

/// Everything the page shows, now.
pub fn snapshot(api: &Api) -> Value {
    let jobs: Vec<Value> = api
        .jobs
        .list()
        .iter()
        .map(|j| {
            let mut d = j.details();
            d["checkpoints"] = j.checkpoints();
            d["preview"] = j.preview();
            d
        })
        .collect();
    json!({
        "overview": overview_json(&api.jobs),
        "jobs": jobs,
        "topics": api.broker.as_ref().map(|b| topics_json(b)["topics"].clone()),
        "groups": api.broker.as_ref().map(|b| groups_json(b)["groups"].clone()),
    })
}

/// `GET /events`: a snapshot now and every second after, as server-sent events.
pub async fn events(State(api): State<Api>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((api, true), |(api, first)| async move {
        if !first {
            tokio::time::sleep(EVERY).await;
        }
        let event = Event::default()
            .event("snapshot")
            .data(snapshot(&api).to_string());
        Some((Ok(event), (api, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
