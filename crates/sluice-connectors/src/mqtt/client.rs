//! One MQTT connection, 3.1.1 or 5 (rumqttc's two clients behind one face): a thread drives
//! the connection (reconnecting after a failure, subscribing again on every connect) and hands
//! what arrives to the connector through a channel.

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Sender};
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use sluice_common::{Result, SluiceError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The protocol version (`protocol.version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub version: Version,
    /// MQTT's clean session (3.1.1) / clean start (5).
    pub clean_session: bool,
}

impl Endpoint {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What the connection thread hands over.
#[derive(Debug)]
pub enum Incoming {
    /// The broker accepted the connection (again).
    Connected,
    /// A message.
    Message { topic: String, payload: Bytes },
    /// The connection failed; it is tried again after a moment.
    Error(String),
}

/// The side of a connection that sends.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::Client),
    V5(rumqttc::v5::Client),
}

/// How long the thread waits before it tries a failed connection again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Requests (publishes) the client may queue before `publish` blocks.
const REQUEST_QUEUE: usize = 1024;

impl Client {
    /// Connects to `endpoint` (subscribing to `filters` with `qos` on every connect) and
    /// starts the thread that drives the connection; what arrives comes out of the receiver,
    /// which holds at most `capacity` (the thread then waits: backpressure on the broker).
    /// The broker's acknowledgements of QoS 1 messages this client published are counted in
    /// `acks` (not sent through the channel: a publisher blocked on a full request queue
    /// would never take them, and the connection would wait for it forever).
    pub fn connect(
        endpoint: &Endpoint,
        filters: Vec<String>,
        qos: u8,
        capacity: usize,
        acks: Arc<AtomicU64>,
    ) -> Result<(Client, Receiver<Incoming>, JoinHandle<()>)> {
        let (tx, rx) = bounded(capacity);
        let name = format!("mqtt {}", endpoint.client_id);
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(f)
                .map_err(|e| SluiceError::io("starting the MQTT connection thread", e))
        };
        match endpoint.version {
            Version::V311 => {
                let mut o = rumqttc::MqttOptions::new(
                    endpoint.client_id.clone(),
                    endpoint.host.clone(),
                    endpoint.port,
                );
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(endpoint.clean_session)
                    .set_max_packet_size(16 << 20, 16 << 20)
                    .set_request_channel_capacity(REQUEST_QUEUE);
                if let Some(u) = &endpoint.username {
                    o.set_credentials(u.clone(), endpoint.password.clone().unwrap_or_default());
                }
                let (client, mut connection) = rumqttc::Client::new(o, REQUEST_QUEUE);
                let subscriber = client.clone();
                let qos = qos3(qos);
                let acks = acks.clone();
                let thread = spawn(Box::new(move || {
                    for event in connection.iter() {
                        let incoming = match event {
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                                for f in &filters {
                                    let _ = subscriber.try_subscribe(f.clone(), qos);
                                }
                                Incoming::Connected
                            }
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                                Incoming::Message {
                                    topic: p.topic,
                                    payload: p.payload,
                                }
                            }
                            Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                                acks.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(_) => continue,
                            Err(e) => Incoming::Error(e.to_string()),
                        };
                        if !forward(&tx, incoming) {
                            return;
                        }
                    }
                }))?;
                Ok((Client::V311(client), rx, thread))
            }
            Version::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(
                    endpoint.client_id.clone(),
                    endpoint.host.clone(),
                    endpoint.port,
                );
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_start(endpoint.clean_session)
                    .set_max_packet_size(Some(16 << 20));
                if let Some(u) = &endpoint.username {
                    o.set_credentials(u.clone(), endpoint.password.clone().unwrap_or_default());
                }
                let (client, mut connection) = rumqttc::v5::Client::new(o, REQUEST_QUEUE);
                let subscriber = client.clone();
                let qos = qos5(qos);
                let acks = acks.clone();
                let thread = spawn(Box::new(move || {
                    for event in connection.iter() {
                        let incoming = match event {
                            Ok(rumqttc::v5::Event::Incoming(Packet5::ConnAck(_))) => {
                                for f in &filters {
                                    let _ = subscriber.try_subscribe(f.clone(), qos);
                                }
                                Incoming::Connected
                            }
                            Ok(rumqttc::v5::Event::Incoming(Packet5::Publish(p))) => {
                                Incoming::Message {
                                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                    payload: p.payload,
                                }
                            }
                            Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(_))) => {
                                acks.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            Ok(_) => continue,
                            Err(e) => Incoming::Error(e.to_string()),
                        };
                        if !forward(&tx, incoming) {
                            return;
                        }
                    }
                }))?;
                Ok((Client::V5(client), rx, thread))
            }
        }
    }

    /// Publishes `payload` to `topic` (waits while the client's queue is full).
    pub fn publish(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> Result<()> {
        let sent = match self {
            Client::V311(c) => c
                .publish(topic, qos3(qos), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish(topic, qos5(qos), retain, payload)
                .map_err(|e| e.to_string()),
        };
        sent.map_err(|e| {
            SluiceError::Runtime(format!("cannot publish to MQTT topic '{topic}': {e}"))
        })
    }

    /// Disconnects; the connection thread then ends.
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

/// Hands `incoming` over, after a pause if it is an error (the next poll reconnects). False
/// once nobody listens.
fn forward(tx: &Sender<Incoming>, incoming: Incoming) -> bool {
    let failed = matches!(incoming, Incoming::Error(_));
    if tx.send(incoming).is_err() {
        return false;
    }
    if failed {
        std::thread::sleep(RECONNECT_AFTER);
    }
    true
}

fn qos3(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        _ => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Waits (at most `timeout`) for the first connect; the broker's refusal or the connection's
/// failure is an error naming `endpoint`. Messages that come before it are kept in `early`.
pub fn await_connected(
    rx: &Receiver<Incoming>,
    endpoint: &Endpoint,
    owner: &str,
    timeout: Duration,
) -> Result<Vec<Incoming>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut early = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Incoming::Connected) => return Ok(early),
            Ok(Incoming::Error(e)) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: cannot connect to the MQTT broker at '{}': {e}",
                    endpoint.address()
                )))
            }
            Ok(other) => early.push(other),
            Err(_) => {
                return Err(SluiceError::Config(format!(
                    "{owner}: the MQTT broker at '{}' did not accept the connection within {} s",
                    endpoint.address(),
                    timeout.as_secs()
                )))
            }
        }
    }
}
