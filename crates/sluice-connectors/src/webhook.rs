//! The `webhook` sink: one HTTP request per row (an alert to Slack, a pager, any endpoint).
//! The body is the row as a JSON object, or `body.template` with `{column}` replaced by the
//! row's values (JSON-escaped: the template is a JSON document, e.g. Slack's
//! `{"text": "..."}`). A request that fails (no connection, a timeout, `429` or `5xx`) is
//! retried with exponential backoff; past `sink.max-retries`, or on another `4xx`, the job
//! fails, or with `sink.on-failure` = `skip` the row is skipped and counted. Requests go one
//! at a time, at most `sink.rate-limit` per second.
//!
//! Delivery: a row is done once its request succeeded; a crash replays the rows after the
//! last checkpoint, so a receiver may see a row twice (at least once).

use crate::format::{self, encode_rows, text, LineEncoder};
use crate::Connector;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice_common::{ChangeBatch, Result, RowKind, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, SubtaskContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPTIONS: &[&str] = &[
    "connector",
    "url",
    "method",
    "body.template",
    "content-type",
    "sink.max-retries",
    "sink.retry-backoff",
    "sink.request-timeout",
    "sink.rate-limit",
    "sink.on-failure",
    "sink.parallelism",
];

/// The `webhook` connector.
pub struct WebhookConnector;

impl Connector for WebhookConnector {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let o = &spec.options;
        // `json.*` options shape the default body.
        o.check_known(OPTIONS, &["headers.", "json."])?;
        let owner = o.owner.clone();
        let url = o.required("url")?.to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SluiceError::Config(format!(
                "{owner}: 'url' = '{url}' is not an http:// or https:// address"
            )));
        }
        let method = o.string("method", "POST").to_ascii_uppercase();
        if method != "POST" && method != "PUT" {
            return Err(SluiceError::Config(format!(
                "{owner}: 'method' = '{method}' is not supported; use POST or PUT"
            )));
        }
        if spec.updating {
            return Err(SluiceError::Plan(format!(
                "table '{}': the webhook sink sends one request per row and cannot take updates or deletes; write an insert-only query",
                spec.table
            )));
        }
        let template = match o.get("body.template") {
            Some(t) => Some(parse_template(&owner, t, &spec.schema)?),
            None => None,
        };
        let headers: Vec<(String, String)> = o
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("headers.")
                    .map(|h| (h.to_string(), v.to_string()))
            })
            .collect();
        let on_failure = match o.string("sink.on-failure", "fail").as_str() {
            "fail" => OnFailure::Fail,
            "skip" => OnFailure::Skip,
            other => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'sink.on-failure' = '{other}' is not supported; use 'fail' or 'skip'"
                )))
            }
        };
        let rate = o.f64("sink.rate-limit")?;
        if rate.is_some_and(|r| r <= 0.0) {
            return Err(SluiceError::Config(format!(
                "{owner}: 'sink.rate-limit' must be a positive number of requests per second"
            )));
        }
        let config = Config {
            owner,
            url,
            method,
            content_type: o.string("content-type", "application/json"),
            headers,
            template,
            max_retries: o.i64("sink.max-retries")?.unwrap_or(3).max(0) as u32,
            backoff: o
                .duration("sink.retry-backoff")?
                .unwrap_or(Duration::from_millis(500)),
            timeout: o
                .duration("sink.request-timeout")?
                .unwrap_or(Duration::from_secs(10)),
            min_interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            on_failure,
        };
        // The default body's encoder fails here on bad `json.*` options.
        format::encoder("json", spec.schema.clone(), o, &spec.time_zone)?;
        Ok(Arc::new(WebhookFactory {
            spec: spec.clone(),
            config: Arc::new(config),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    Fail,
    Skip,
}

#[derive(Debug)]
struct Config {
    owner: String,
    url: String,
    method: String,
    content_type: String,
    headers: Vec<(String, String)>,
    template: Option<Vec<Part>>,
    max_retries: u32,
    backoff: Duration,
    timeout: Duration,
    min_interval: Option<Duration>,
    on_failure: OnFailure,
}

/// A part of the body template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Column(usize),
}

/// `{"text": "{sensor} is at {temperature}"}`: text and `{column}` references; a `{` not
/// followed by a column name and `}` is text (JSON's own braces).
fn parse_template(owner: &str, template: &str, schema: &SchemaRef) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            let index = schema.index_of(name).map_err(|_| {
                SluiceError::Config(format!(
                    "{owner}: 'body.template' refers to column '{name}', which the table does not have; its columns are: {}",
                    schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Column(index));
            rest = &after[name_len + 1..];
        } else {
            text.push('{');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

struct WebhookFactory {
    spec: SinkSpec,
    config: Arc<Config>,
}

impl OperatorFactory for WebhookFactory {
    fn name(&self) -> String {
        format!("Sink: webhook({})", self.config.url)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Box::new(Webhook {
            config: self.config.clone(),
            agent,
            encoder: format::encoder(
                "json",
                self.spec.schema.clone(),
                &self.spec.options,
                &self.spec.time_zone,
            )?,
            last_request: None,
            sent: ctx
                .metrics
                .counter(&format!("{}: requests sent", self.spec.table)),
            skipped: ctx.metrics.counter(&format!(
                "{}: rows skipped after failed requests",
                self.spec.table
            )),
            errors: ctx.sink_errors(),
        }))
    }
}

struct Webhook {
    config: Arc<Config>,
    agent: ureq::Agent,
    encoder: Box<dyn LineEncoder>,
    last_request: Option<Instant>,
    sent: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    errors: SinkErrors,
}

/// How one attempt went.
enum Attempt {
    Done,
    /// Worth trying again (no connection, a timeout, 429, 5xx).
    Retry(String),
    /// Not worth trying again (another 4xx).
    Refused(String),
}

impl Webhook {
    fn body(&self, batch: &RecordBatch, row: usize, json: &[u8]) -> Vec<u8> {
        let Some(parts) = &self.config.template else {
            return json.to_vec();
        };
        let mut body = String::new();
        for p in parts {
            match p {
                Part::Text(t) => body.push_str(t),
                Part::Column(c) => {
                    let v = text::format_value(batch.column(*c), row, text::Style::Sql)
                        .unwrap_or_else(|| "null".into());
                    // Inside a JSON string: escaped, without the quotes.
                    let quoted = serde_json::Value::String(v).to_string();
                    body.push_str(&quoted[1..quoted.len() - 1]);
                }
            }
        }
        body.into_bytes()
    }

    fn attempt(&mut self, body: &[u8]) -> Attempt {
        if let (Some(min), Some(last)) = (self.config.min_interval, self.last_request) {
            let since = last.elapsed();
            if since < min {
                std::thread::sleep(min - since);
            }
        }
        self.last_request = Some(Instant::now());
        let c = &self.config;
        let mut request = if c.method == "PUT" {
            self.agent.put(&c.url)
        } else {
            self.agent.post(&c.url)
        };
        request = request.header("Content-Type", &c.content_type);
        for (k, v) in &c.headers {
            request = request.header(k, v);
        }
        match request.send(body) {
            Ok(mut response) => {
                let status = response.status().as_u16();
                if (200..300).contains(&status) {
                    return Attempt::Done;
                }
                let mut text = response.body_mut().read_to_string().unwrap_or_default();
                text.truncate(200);
                let why = format!(
                    "HTTP {status}{}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                );
                if status == 429 || status >= 500 {
                    Attempt::Retry(why)
                } else {
                    Attempt::Refused(why)
                }
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    }

    /// Sends one row's request, retrying as configured.
    fn send(&mut self, body: &[u8]) -> Result<()> {
        let mut tries = 0u32;
        let why = loop {
            match self.attempt(body) {
                Attempt::Done => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Attempt::Refused(why) => {
                    self.errors.add(1);
                    break format!("{why} (not retried)");
                }
                Attempt::Retry(why) => {
                    self.errors.add(1);
                    if tries >= self.config.max_retries {
                        break format!("{why} (after {} attempts)", tries + 1);
                    }
                    let wait = self.config.backoff.saturating_mul(1 << tries.min(16));
                    tracing::warn!(
                        "{}: request to {} failed: {why}; retrying in {} ms",
                        self.config.owner,
                        self.config.url,
                        wait.as_millis()
                    );
                    std::thread::sleep(wait);
                    tries += 1;
                }
            }
        };
        match self.config.on_failure {
            OnFailure::Skip => {
                tracing::warn!(
                    "{}: skipping a row: its request to {} failed: {why}",
                    self.config.owner,
                    self.config.url
                );
                self.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            OnFailure::Fail => Err(SluiceError::Runtime(format!(
                "{}: the request to {} failed: {why}; set 'sink.on-failure' = 'skip' to skip such rows",
                self.config.owner, self.config.url
            ))),
        }
    }
}

impl Operator for Webhook {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let data = &batch.data;
        let mut buf = Vec::new();
        let lines = encode_rows(self.encoder.as_mut(), data, &mut buf)?;
        for (i, (start, end)) in lines.iter().enumerate() {
            let kind = batch.kind(i);
            if !matches!(kind, RowKind::Insert | RowKind::UpdateAfter) {
                return Err(SluiceError::Runtime(format!(
                    "{}: the webhook sink got a {} row; it only takes inserts",
                    self.config.owner,
                    kind.short_string()
                )));
            }
            let body = self.body(data, i, &buf[*start..*end]);
            self.send(&body)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_body_template_names_columns_and_keeps_json_braces() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
        ]));
        let parts = parse_template("t", r#"{"text": "{sensor} at {t}"}"#, &schema).unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Text(r#"{"text": ""#.into()),
                Part::Column(0),
                Part::Text(" at ".into()),
                Part::Column(1),
                Part::Text(r#""}"#.into()),
            ]
        );
        let err = parse_template("table 'a'", "{room}", &schema).unwrap_err();
        assert!(err.to_string().contains("column 'room'"), "{err}");
    }
}
