//! The MQTT source: one subscriber (subtask 0; MQTT gives every subscriber every message, so
//! more would read everything twice) whose messages become rows, one per message.

use super::client::{await_connected, Client, Incoming};
use super::MqttOptions;
use crate::format::record::RecordDecoder;
use crate::format::{self, BATCH_ROWS};
use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use crossbeam_channel::Receiver;
use sluice_common::{ChangeBatch, CheckpointId, Result, SluiceError};
use sluice_engine::{
    SourceFactory, SourcePoll, SourceReader, SourceSpec, StateReader, StateWriter, SubtaskContext,
};
use std::sync::atomic::AtomicU64;
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
        RecordDecoder::new(&options.format, spec.schema.clone(), &options.options)?;
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

    fn produces_updates(&self) -> bool {
        format::record::is_changelog(&self.options.format)
    }

    fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
        let decoder = RecordDecoder::new(
            &self.options.format,
            self.spec.schema.clone(),
            &self.options.options,
        )?;
        let mut reader = MqttReader {
            owner: self.options.options.owner.clone(),
            produced: self.produced.clone(),
            with_topic: !self.spec.metadata.is_empty(),
            decoder,
            connection: None,
            pending: Vec::new(),
            skipped: ctx
                .metrics
                .counter(&format!("{}: malformed messages skipped", self.spec.table)),
            active: ctx.subtask_index == 0,
        };
        if reader.active {
            let endpoint = self.options.endpoint_for(ctx, "source");
            let (client, rx, thread) = Client::connect(
                &endpoint,
                self.filters.clone(),
                self.options.qos,
                BATCH_ROWS * 4,
                Arc::default(),
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
    /// Those and the metadata column, if asked for.
    produced: SchemaRef,
    with_topic: bool,
    decoder: RecordDecoder,
    connection: Option<(Client, Receiver<Incoming>, Option<JoinHandle<()>>)>,
    /// Messages received and not yet returned: (topic, payload).
    pending: Vec<(String, Bytes)>,
    skipped: Arc<AtomicU64>,
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
        }
    }

    /// The pending messages as rows (or changes, for a changelog format).
    fn decode(&mut self) -> Result<Option<ChangeBatch>> {
        let messages = std::mem::take(&mut self.pending);
        if messages.is_empty() {
            return Ok(None);
        }
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.1.as_ref()).collect();
        let decoded = self.decoder.decode(
            &payloads,
            None,
            &|i| format!("MQTT message on topic '{}'", messages[i].0),
            &self.skipped,
        )?;
        let rows = if self.with_topic {
            let mut columns: Vec<ArrayRef> = decoded.rows.columns().to_vec();
            let topics: ArrayRef = Arc::new(StringArray::from_iter_values(
                decoded.origins.iter().map(|&i| messages[i].0.as_str()),
            ));
            let target = self.produced.field(columns.len()).data_type();
            columns.push(arrow::compute::cast(&topics, target)?);
            RecordBatch::try_new(self.produced.clone(), columns)?
        } else {
            decoded.rows
        };
        Ok(Some(match decoded.kinds {
            Some(kinds) => ChangeBatch::new(rows, Some(kinds.into())),
            None => ChangeBatch::inserts(rows),
        }))
    }
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
            Some(b) if b.num_rows() > 0 => Ok(SourcePoll::Batch(b)),
            _ => Ok(SourcePoll::Idle),
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
