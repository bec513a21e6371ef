//! The MQTT source: one subscriber (subtask 0; MQTT gives every subscriber every message, so
//! more would read everything twice) whose messages become rows, one per message.

use super::client::{await_connected, Client, Incoming};
use super::MqttOptions;
use crate::format::{self, LineDecoder, BATCH_ROWS};
use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use crossbeam_channel::Receiver;
use sluice_common::{ChangeBatch, CheckpointId, Result, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long `poll` waits for a first message.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct MqttSourceFactory {
    spec: SourceSpec,
    options: MqttOptions,
    filters: Vec<String>,
    produced: SchemaRef,
}

impl MqttSourceFactory {
    pub fn new(spec: SourceSpec, options: MqttOptions, filters: Vec<String>) -> Result<Self> {
        // The decoder is made here once, so that its options fail at planning.
        if options.format != "raw" {
            format::decoder(&options.format, spec.schema.clone(), &options.options)?;
        }
        let produced = spec.produced_schema();
        Ok(MqttSourceFactory {
            spec,
            options,
            filters,
            produced,
        })
    }
}

impl SourceFactory for MqttSourceFactory {
    fn name(&self) -> String {
        format!("mqtt [{}]", self.filters.join(";"))
    }

    fn is_bounded(&self) -> bool {
        false
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let decoder = match self.options.format.as_str() {
            "raw" => None,
            f => Some(format::decoder(
                f,
                self.spec.schema.clone(),
                &self.options.options,
            )?),
        };
        let mut reader = MqttReader {
            owner: self.options.options.owner.clone(),
            schema: self.spec.schema.clone(),
            produced: self.produced.clone(),
            with_topic: !self.spec.metadata.is_empty(),
            decoder,
            connection: None,
            pending: Vec::new(),
            skipped: ctx
                .metrics
                .counter(&format!("{}: malformed messages skipped", self.spec.table)),
            reported_skips: 0,
            active: ctx.subtask_index == 0,
        };
        if reader.active {
            let endpoint = self.options.endpoint_for(ctx, "source");
            let (client, rx, thread) = Client::connect(
                &endpoint,
                self.filters.clone(),
                self.options.qos,
                BATCH_ROWS * 4,
            )?;
            for early in await_connected(&rx, &endpoint, &reader.owner, CONNECT_TIMEOUT)? {
                reader.take(early);
            }
            reader.connection = Some((client, rx, Some(thread)));
        }
        Ok(Box::new(reader))
    }
}

struct MqttReader {
    owner: String,
    /// The physical columns, which the payload fills.
    schema: SchemaRef,
    /// Those and the metadata column, if asked for.
    produced: SchemaRef,
    with_topic: bool,
    /// `None` for `raw`.
    decoder: Option<Box<dyn LineDecoder>>,
    connection: Option<(Client, Receiver<Incoming>, Option<JoinHandle<()>>)>,
    /// Messages received and not yet returned: (topic, payload).
    pending: Vec<(String, Bytes)>,
    skipped: Arc<AtomicU64>,
    reported_skips: u64,
    active: bool,
}

impl MqttReader {
    fn take(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Message { topic, payload } => self.pending.push((topic, payload)),
            Incoming::Error(e) => {
                tracing::warn!("{}: MQTT connection: {e}; reconnecting", self.owner)
            }
            Incoming::Connected => tracing::info!("{}: connected to the MQTT broker", self.owner),
            Incoming::PubAck => {}
        }
    }

    /// The pending messages as rows.
    fn decode(&mut self) -> Result<Option<RecordBatch>> {
        let messages = std::mem::take(&mut self.pending);
        if messages.is_empty() {
            return Ok(None);
        }
        let (rows, kept) = match self.decoder.as_mut() {
            None => {
                let payloads: Vec<&[u8]> = messages.iter().map(|m| m.1.as_ref()).collect();
                (
                    format::raw::decode(&self.schema, &payloads)?,
                    (0..messages.len()).collect::<Vec<_>>(),
                )
            }
            Some(decoder) => decode_lines(decoder.as_mut(), &messages)?,
        };
        let skipped = self.decoder.as_ref().map_or(0, |d| d.skipped());
        if skipped > self.reported_skips {
            self.skipped
                .fetch_add(skipped - self.reported_skips, Ordering::Relaxed);
            self.reported_skips = skipped;
        }
        if !self.with_topic {
            return Ok(Some(rows));
        }
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        let topics: ArrayRef = Arc::new(StringArray::from_iter_values(
            kept.iter().map(|&i| messages[i].0.as_str()),
        ));
        let target = self.produced.field(columns.len()).data_type();
        columns.push(arrow::compute::cast(&topics, target)?);
        Ok(Some(RecordBatch::try_new(self.produced.clone(), columns)?))
    }
}

/// Decodes every message as one line of `decoder`'s format; returns the rows and, for each,
/// the message it came from (a malformed message skipped has none).
fn decode_lines(
    decoder: &mut dyn LineDecoder,
    messages: &[(String, Bytes)],
) -> Result<(RecordBatch, Vec<usize>)> {
    // One message a line: a line break inside one (pretty-printed JSON) is whitespace.
    let mut block = Vec::with_capacity(messages.iter().map(|m| m.1.len() + 1).sum());
    for (_, payload) in messages {
        block.extend(
            payload
                .iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
        block.push(b'\n');
    }
    let before = decoder.skipped();
    let whole = decoder.decode("MQTT messages", 1, &block);
    if let Ok(batches) = &whole {
        if decoder.skipped() == before {
            let rows = arrow::compute::concat_batches(&decoder.schema(), batches)?;
            return Ok((rows, (0..messages.len()).collect()));
        }
    }
    // A malformed message: one by one, to name its topic (or to know which were skipped).
    let mut batches = Vec::new();
    let mut kept = Vec::new();
    for (i, (topic, payload)) in messages.iter().enumerate() {
        let mut line: Vec<u8> = payload
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect();
        line.push(b'\n');
        let decoded = decoder
            .decode(&format!("MQTT message on topic '{topic}'"), 1, &line)
            .map_err(|e| SluiceError::Runtime(e.to_string()))?;
        if decoded.iter().any(|b| b.num_rows() > 0) {
            kept.push(i);
        }
        batches.extend(decoded);
    }
    let rows = arrow::compute::concat_batches(&decoder.schema(), &batches)?;
    Ok((rows, kept))
}

impl SourceReader for MqttReader {
    fn poll(&mut self) -> Result<SourcePoll> {
        let Some((_, rx, _)) = self.connection.as_ref() else {
            return Ok(SourcePoll::Idle);
        };
        let rx = rx.clone();
        if self.pending.is_empty() {
            match rx.recv_timeout(POLL_WAIT) {
                Ok(first) => self.take(first),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(SourcePoll::Idle),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(SluiceError::Runtime(format!(
                        "{}: the MQTT connection thread stopped",
                        self.owner
                    )))
                }
            }
        }
        while self.pending.len() < BATCH_ROWS {
            match rx.try_recv() {
                Ok(m) => self.take(m),
                Err(_) => break,
            }
        }
        match self.decode()? {
            Some(b) => Ok(SourcePoll::Batch(ChangeBatch::inserts(b))),
            None => Ok(SourcePoll::Idle),
        }
    }

    fn has_nothing_to_read(&self) -> bool {
        !self.active
    }

    /// MQTT has no position to go back to: nothing is written.
    fn snapshot_position(&mut self, _checkpoint: CheckpointId, _s: &mut StateWriter) -> Result<()> {
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

impl Drop for MqttReader {
    fn drop(&mut self) {
        if let Some((client, rx, thread)) = self.connection.take() {
            client.disconnect();
            drop(rx);
            drop(client);
            // (The thread ends once the disconnect is sent; it is not waited for.)
            drop(thread);
        }
    }
}
