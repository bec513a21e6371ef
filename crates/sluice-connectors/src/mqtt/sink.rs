//! The MQTT sink: every row is one message, to the table's `topic` (a template: `{column}`
//! is that column's value in the row, e.g. `alerts/{sensor}`), with the table's QoS and
//! `sink.retain`. With QoS 1 it waits for the broker's acknowledgement of every message at
//! each checkpoint and at the end of the input (at least once).

use super::client::{await_connected, Client, Incoming};
use super::MqttOptions;
use crate::format::record::RecordEncoder;
use crate::format::text;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use crossbeam_channel::Receiver;
use sluice_common::{ChangeBatch, CheckpointId, Result, SluiceError};
use sluice_engine::task_metrics::SinkErrors;
use sluice_engine::{Operator, OperatorFactory, Output, SinkSpec, StateWriter, SubtaskContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the broker may take to acknowledge what was published, at a checkpoint.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A part of the topic template.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// The value of this column.
    Column(usize),
}

pub(crate) struct MqttSinkFactory {
    spec: SinkSpec,
    options: MqttOptions,
    topic: Vec<Part>,
    retain: bool,
}

impl MqttSinkFactory {
    pub fn new(spec: SinkSpec, options: MqttOptions) -> Result<Self> {
        let topic = parse_template(&options.options.owner, &options.topic, &spec.schema)?;
        // Its options fail at planning.
        RecordEncoder::new(
            &options.format,
            spec.schema.clone(),
            &options.options,
            &spec.time_zone,
        )?;
        let retain = options.options.bool("sink.retain", false)?;
        Ok(MqttSinkFactory {
            spec,
            options,
            topic,
            retain,
        })
    }
}

/// `alerts/{sensor}`: text and `{column}` references (`{{` and `}}` are braces).
fn parse_template(owner: &str, template: &str, schema: &SchemaRef) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let index = schema.index_of(&name).map_err(|_| {
                    SluiceError::Config(format!(
                        "{owner}: 'topic' = '{template}' refers to column '{name}', which the table does not have; its columns are: {}",
                        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Column(index));
            }
            '+' | '#' => {
                return Err(SluiceError::Config(format!(
                    "{owner}: 'topic' = '{template}': a message's topic cannot hold the wildcards '+' or '#'"
                )))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    if parts.is_empty() {
        return Err(SluiceError::Config(format!("{owner}: 'topic' is empty")));
    }
    Ok(parts)
}

impl OperatorFactory for MqttSinkFactory {
    fn name(&self) -> String {
        format!("Sink: mqtt({})", self.options.topic)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
        let owner = self.options.options.owner.clone();
        let endpoint = self.options.endpoint_for(ctx, "sink");
        let acked = Arc::new(AtomicU64::new(0));
        let (client, rx, _thread) =
            Client::connect(&endpoint, Vec::new(), self.options.qos, 64, acked.clone())?;
        await_connected(&rx, &endpoint, &owner, CONNECT_TIMEOUT)?;
        let encoder = RecordEncoder::new(
            &self.options.format,
            self.spec.schema.clone(),
            &self.options.options,
            &self.spec.time_zone,
        )?;
        Ok(Box::new(MqttSink {
            owner,
            client,
            events: rx,
            encoder,
            topic: self.topic.clone(),
            qos: self.options.qos,
            retain: self.retain,
            published: 0,
            acked,
            rows: ctx
                .metrics
                .counter(&format!("{}: rows written", self.spec.table)),
            errors: ctx.sink_errors(),
        }))
    }
}

struct MqttSink {
    owner: String,
    client: Client,
    /// Acknowledgements and connection errors.
    events: Receiver<Incoming>,
    encoder: RecordEncoder,
    topic: Vec<Part>,
    qos: u8,
    retain: bool,
    /// QoS 1 messages published, and acknowledged so far (counted by the connection thread).
    published: u64,
    acked: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
    errors: SinkErrors,
}

impl MqttSink {
    fn topic_of(&self, batch: &RecordBatch, row: usize) -> String {
        let mut t = String::new();
        for p in &self.topic {
            match p {
                Part::Text(s) => t.push_str(s),
                Part::Column(c) => t.push_str(
                    &text::format_value(batch.column(*c), row, text::Style::Sql)
                        .unwrap_or_else(|| "null".into()),
                ),
            }
        }
        t
    }

    /// Logs the connection's errors that came, waiting at most `wait` for one.
    fn drain(&mut self, wait: Duration) {
        let first = if wait.is_zero() {
            self.events.try_recv().ok()
        } else {
            self.events.recv_timeout(wait).ok()
        };
        for e in first
            .into_iter()
            .chain(std::iter::from_fn(|| self.events.try_recv().ok()))
        {
            if let Incoming::Error(e) = e {
                tracing::warn!("{}: MQTT connection: {e}; reconnecting", self.owner)
            }
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the broker has acknowledged every QoS 1 message published.
    fn flush(&mut self) -> Result<()> {
        if self.qos == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + ACK_TIMEOUT;
        while self.acked() < self.published {
            if Instant::now() >= deadline {
                let missing = self.published - self.acked();
                self.errors.add(missing);
                return Err(SluiceError::Runtime(format!(
                    "{}: the MQTT broker did not acknowledge {missing} messages within {} s",
                    self.owner,
                    ACK_TIMEOUT.as_secs()
                )));
            }
            self.drain(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Operator for MqttSink {
    fn process_batch(
        &mut self,
        _input: usize,
        batch: ChangeBatch,
        _out: &mut Output,
    ) -> Result<()> {
        let data = &batch.data;
        let records = self.encoder.encode(&batch, &self.owner)?;
        for i in 0..records.len() {
            let payload = records.get(i).unwrap_or_default().to_vec();
            let topic = self.topic_of(data, i);
            if let Err(e) = self.client.publish(&topic, self.qos, self.retain, payload) {
                self.errors.add(1);
                return Err(e);
            }
            if self.qos > 0 {
                self.published += 1;
            }
        }
        self.rows
            .fetch_add(data.num_rows() as u64, Ordering::Relaxed);
        self.drain(Duration::ZERO);
        Ok(())
    }

    /// Everything published before the barrier is acknowledged before the checkpoint counts.
    fn snapshot_state(
        &mut self,
        _checkpoint: CheckpointId,
        _state: &mut StateWriter,
    ) -> Result<()> {
        self.flush()
    }

    fn end_input(&mut self, _out: &mut Output) -> Result<()> {
        self.flush()
    }

    fn close(&mut self, _out: &mut Output) -> Result<()> {
        let flushed = self.flush();
        self.client.disconnect();
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_topic_template_names_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8, true),
            Field::new("t", DataType::Float64, true),
        ]));
        let parts = parse_template("t", "alerts/{sensor}/{{x}}", &schema).unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Text("alerts/".into()),
                Part::Column(0),
                Part::Text("/{x}".into())
            ]
        );
        let err = parse_template("table 'a'", "alerts/{room}", &schema).unwrap_err();
        assert!(err.to_string().contains("column 'room'"), "{err}");
        assert!(parse_template("t", "alerts/#", &schema).is_err());
    }
}
