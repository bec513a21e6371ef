//! A client of a Confluent-compatible schema registry (Confluent's own, or Sluice's in
//! `sluice server` and `sluice broker --schema-registry`): registering a schema under a
//! subject and fetching a schema by id, over HTTP with the `avro-confluent.*` credentials.

use base64::Engine;
use serde_json::{json, Value};
use sluice_common::{Options, Result, SluiceError};
use std::collections::HashMap;

/// The client of one registry.
pub struct RegistryClient {
    url: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    /// Schemas fetched, by id.
    schemas: HashMap<u32, String>,
    owner: String,
}

/// The registry's media type.
const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    /// The client of `<prefix>url`, with the credentials of `<prefix>basic-auth.*` or
    /// `<prefix>bearer-auth.*`.
    pub fn new(options: &Options, prefix: &str) -> Result<RegistryClient> {
        let owner = options.owner.clone();
        let url = options
            .required(&format!("{prefix}url"))?
            .trim_end_matches('/')
            .to_string();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(SluiceError::Config(format!(
                "{owner}: option '{prefix}url' must be an http:// or https:// address, got '{url}'"
            )));
        }
        let basic = options.get(&format!("{prefix}basic-auth.user-info"));
        let bearer = options.get(&format!("{prefix}bearer-auth.token"));
        let authorization = match (basic, bearer) {
            (Some(_), Some(_)) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: give '{prefix}basic-auth.user-info' or '{prefix}bearer-auth.token', not both"
                )))
            }
            (Some(info), None) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(info.as_bytes())
            )),
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .http_status_as_error(false)
            .build();
        Ok(RegistryClient {
            url,
            authorization,
            agent: config.into(),
            schemas: HashMap::new(),
            owner,
        })
    }

    /// The response of a request, or an error that says which request failed and why.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        let fail = |why: String| {
            SluiceError::Runtime(format!(
                "{}: schema registry request {method} {url} failed: {why}",
                self.owner
            ))
        };
        let response = match body {
            Some(body) => {
                let mut req = self.agent.post(&url).header("Content-Type", MEDIA_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.send(body.to_string())
            }
            None => {
                let mut req = self.agent.get(&url).header("Accept", MEDIA_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut response = response.map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(e.to_string()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|_| fail(format!("HTTP {status}: {}", text.trim())))?;
        if status >= 300 {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| text.trim().to_string());
            return Err(fail(format!("HTTP {status}: {message}")));
        }
        Ok(value)
    }

    /// Registers `schema` under `subject` (or finds it there): its id.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32> {
        let path = format!("/subjects/{}/versions", encode_path(subject));
        let v = self.call("POST", &path, Some(json!({"schema": schema})))?;
        let id = v
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| {
                SluiceError::Runtime(format!(
                    "{}: the schema registry answered a registration under '{subject}' without an id: {v}",
                    self.owner
                ))
            })?;
        self.schemas.insert(id, schema.to_string());
        Ok(id)
    }

    /// The schema with id `id`.
    pub fn schema(&mut self, id: u32) -> Result<String> {
        if let Some(s) = self.schemas.get(&id) {
            return Ok(s.clone());
        }
        let v = self.call("GET", &format!("/schemas/ids/{id}"), None)?;
        let schema = v
            .get("schema")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SluiceError::Runtime(format!(
                    "{}: the schema registry answered schema {id} without a schema: {v}",
                    self.owner
                ))
            })?
            .to_string();
        self.schemas.insert(id, schema.clone());
        Ok(schema)
    }
}

/// A subject as one segment of a URL path.
fn encode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_are_escaped_in_paths() {
        assert_eq!(super::encode_path("orders-value"), "orders-value");
        assert_eq!(super::encode_path("a b/c"), "a%20b%2Fc");
    }
}
