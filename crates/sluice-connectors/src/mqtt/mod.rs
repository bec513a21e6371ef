//! The `mqtt` connector (MQTT 3.1.1 and 5, e.g. sensors through Mosquitto): a source that
//! subscribes to topic filters (wildcards `+` and `#`) and a sink that publishes, one row per
//! message, in the `json`, `csv` or `raw` format.
//!
//! ```sql
//! CREATE TABLE readings (sensor STRING, temperature DOUBLE, topic STRING METADATA)
//! WITH ('connector' = 'mqtt', 'url' = 'tcp://127.0.0.1:1883',
//!       'topic' = 'sensors/+/temperature', 'format' = 'json');
//! ```
//!
//! Delivery: the source acknowledges a QoS 1 message when it has it, so a crash loses what
//! had arrived since the last checkpoint (at most once; MQTT has no offsets to go back to).
//! The sink publishes with QoS 1 by default and waits for every acknowledgement at each
//! checkpoint and at the end: at least once.

mod client;
mod sink;
mod source;

use crate::format;
use crate::Connector;
use client::{Endpoint, Version};
use sluice_common::{Options, Result, SluiceError};
use sluice_engine::{OperatorFactory, SinkSpec, SourceFactory, SourceSpec, SubtaskContext};
use std::sync::Arc;

/// The connector's options (the format's come with its prefix).
const OPTIONS: &[&str] = &[
    "connector",
    "url",
    "topic",
    "qos",
    "client-id",
    "username",
    "password",
    "protocol.version",
    "format",
    "sink.retain",
    "sink.parallelism",
    "scan.clean-session",
];

/// The metadata a source can read (`topic STRING METADATA`).
const METADATA_KEYS: &[&str] = &["topic"];

/// The `mqtt` connector.
pub struct MqttConnector;

impl Connector for MqttConnector {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn source(&self, spec: &SourceSpec) -> Result<Arc<dyn SourceFactory>> {
        spec.check_metadata(self.name(), METADATA_KEYS)?;
        let common = MqttOptions::parse(&spec.options, &spec.schema)?;
        let filters: Vec<String> = common
            .topic
            .split(';')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        for f in &filters {
            check_filter(&spec.options.owner, f)?;
        }
        if filters.is_empty() {
            return Err(SluiceError::Config(format!(
                "{}: 'topic' names no topic filter",
                spec.options.owner
            )));
        }
        Ok(Arc::new(source::MqttSourceFactory::new(
            spec.clone(),
            common,
            filters,
        )?))
    }

    fn sink(&self, spec: &SinkSpec) -> Result<Arc<dyn OperatorFactory>> {
        let common = MqttOptions::parse(&spec.options, &spec.schema)?;
        crate::format::record::check_sink_changes(
            "mqtt",
            &spec.table,
            &common.format,
            spec.updating,
        )?;
        Ok(Arc::new(sink::MqttSinkFactory::new(spec.clone(), common)?))
    }
}

/// The options both sides share.
#[derive(Debug, Clone)]
pub(crate) struct MqttOptions {
    pub endpoint: Endpoint,
    pub topic: String,
    pub qos: u8,
    pub format: String,
    /// The table's options (the format's among them).
    pub options: Options,
}

impl MqttOptions {
    fn parse(options: &Options, schema: &arrow::datatypes::SchemaRef) -> Result<Self> {
        let format = format::checked_format(options, OPTIONS, &format::record_formats())?;
        format::record::RecordDecoder::new(&format, schema.clone(), options)?;
        let owner = &options.owner;
        let url = options.required("url")?;
        let (host, port) = parse_url(url).ok_or_else(|| {
            SluiceError::Config(format!(
                "{owner}: 'url' = '{url}' is not an MQTT broker address; write 'tcp://HOST:PORT' (or 'mqtt://HOST:PORT')"
            ))
        })?;
        let qos = match options.get("qos").unwrap_or("1") {
            "0" => 0,
            "1" => 1,
            other => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'qos' = '{other}' is not supported; use 0 (at most once) or 1 (at least once)"
                )))
            }
        };
        let version = match options.get("protocol.version").unwrap_or("3.1.1") {
            "3.1.1" | "4" => Version::V311,
            "5" | "5.0" => Version::V5,
            other => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'protocol.version' = '{other}' is not supported; use '3.1.1' or '5'"
                )))
            }
        };
        Ok(MqttOptions {
            endpoint: Endpoint {
                host,
                port,
                client_id: options.get("client-id").unwrap_or("").to_string(),
                username: options.get("username").map(str::to_string),
                password: options.get("password").map(str::to_string),
                version,
                clean_session: options.bool("scan.clean-session", true)?,
            },
            topic: options.required("topic")?.to_string(),
            qos,
            format,
            options: options.clone(),
        })
    }

    /// The endpoint of `ctx`'s subtask: the configured client id, or one of its own, unique
    /// to the node and subtask (a broker drops a client whose id another connection takes,
    /// and a table two queries read is two sources).
    pub fn endpoint_for(&self, ctx: &SubtaskContext, role: &str) -> Endpoint {
        let mut e = self.endpoint.clone();
        e.client_id = if e.client_id.is_empty() {
            format!(
                "sluice-{}-{role}{}-{}-{}",
                ctx.job_name,
                ctx.node,
                ctx.subtask_index,
                std::process::id()
            )
        } else if ctx.subtask_index > 0 {
            format!("{}-{}", e.client_id, ctx.subtask_index)
        } else {
            e.client_id
        };
        e
    }
}

/// `tcp://host:port`, `mqtt://host:port` or `host:port` (the port defaults to 1883).
fn parse_url(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("mqtt://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains("://") {
        return None;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((rest.to_string(), 1883)),
    }
}

/// Fails unless `filter` is a valid MQTT topic filter: `#` only last and alone in its level,
/// `+` alone in its level.
fn check_filter(owner: &str, filter: &str) -> Result<()> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad = (level.contains('#') && (*level != "#" || i + 1 != levels.len()))
            || (level.contains('+') && *level != "+");
        if bad {
            return Err(SluiceError::Config(format!(
                "{owner}: '{filter}' is not a valid MQTT topic filter: '+' must be a whole level and '#' the whole last level"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_filters_are_checked() {
        assert_eq!(
            parse_url("tcp://127.0.0.1:1883"),
            Some(("127.0.0.1".into(), 1883))
        );
        assert_eq!(
            parse_url("mqtt://broker:1884/"),
            Some(("broker".into(), 1884))
        );
        assert_eq!(parse_url("broker"), Some(("broker".into(), 1883)));
        assert_eq!(parse_url("http://x/y"), None);
        assert_eq!(parse_url("tcp://host:port"), None);
        assert!(check_filter("t", "sensors/+/temperature").is_ok());
        assert!(check_filter("t", "sensors/#").is_ok());
        assert!(check_filter("t", "sensors/#/x").is_err());
        assert!(check_filter("t", "sensors/a+").is_err());
    }
}
