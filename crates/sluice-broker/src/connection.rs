//! One client connection: read a size-prefixed request, decode its header and body, answer,
//! in order. A frame that is too large, cannot be decoded, or names an unknown API closes
//! the connection (as Kafka does); nothing else is affected.

use crate::api;
use crate::broker_metrics;
use crate::Broker;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_common::{Result, SluiceError};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn protocol_error(message: impl Into<String>) -> SluiceError {
    SluiceError::Runtime(message.into())
}

/// Requests of one connection whose responses may be pending at once (the pipeline depth).
pub const MAX_IN_FLIGHT: usize = 32;

/// A response, ready or still waiting for fsyncs.
type PendingResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<BytesMut>>> + Send>>;

/// Serves one connection until the client closes it or sends something invalid.
///
/// Requests are handled in the order they arrive and answered in that order. A produce
/// appends at once and its answer waits for the fsync while later requests are read (up to
/// [`MAX_IN_FLIGHT`]), so that pipelined produces share fsyncs.
pub async fn handle(
    broker: Arc<Broker>,
    socket: TcpStream,
    peer: std::net::SocketAddr,
) -> Result<()> {
    socket
        .set_nodelay(true)
        .map_err(|e| SluiceError::io("setting TCP_NODELAY", e))?;
    let (mut rd, mut wr) = socket.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PendingResponse>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            if let Some(response) = pending.await? {
                let mut out = Vec::with_capacity(4 + response.len());
                out.extend_from_slice(&(response.len() as i32).to_be_bytes());
                out.extend_from_slice(&response);
                wr.write_all(&out)
                    .await
                    .map_err(|e| SluiceError::io("writing a response", e))?;
            }
        }
        Ok::<(), SluiceError>(())
    });
    let result = async {
        loop {
            let mut len = [0u8; 4];
            match rd.read_exact(&mut len).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(SluiceError::io("reading a request", e)),
            }
            let size = i32::from_be_bytes(len);
            if size < 8 || size as usize > broker.config.max_request_bytes {
                return Err(protocol_error(format!(
                    "request of {size} bytes refused (at most {} bytes)",
                    broker.config.max_request_bytes
                )));
            }
            let mut frame = vec![0u8; size as usize];
            rd.read_exact(&mut frame)
                .await
                .map_err(|e| SluiceError::io("reading a request", e))?;
            let pending = process(&broker, Bytes::from(frame), peer).await?;
            if tx.send(pending).await.is_err() {
                // The writer stopped (the client went away).
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer.await.unwrap_or(Ok(()));
    result.and(written)
}

/// A request decoded from a frame, or what to answer without decoding it.
pub enum Decoded {
    /// A request of a supported API and version.
    Request {
        key: ApiKey,
        version: i16,
        header: RequestHeader,
        request: Box<RequestKind>,
    },
    /// ApiVersions in a version the broker does not speak: answer in v0 (Kafka's fallback).
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Decodes a request frame (without its size prefix). Pure and total: any input gives a
/// request or an error, never a panic; this is what the fuzz target exercises.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded> {
    if frame.len() < 8 {
        return Err(protocol_error(format!(
            "request of {} bytes is too short",
            frame.len()
        )));
    }
    let key_code = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(key_code)
        .map_err(|_| protocol_error(format!("unknown API key {key_code}")))?;
    let Some((min, max)) = api::supported_versions(key) else {
        return Err(protocol_error(format!("{key:?} is not supported")));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id });
        }
        return Err(protocol_error(format!(
            "{key:?} version {version} is not supported (versions {min} to {max})"
        )));
    }
    let header_version = key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| protocol_error(format!("bad {key:?} request header: {e}")))?;
    let request = RequestKind::decode(key, &mut frame, version)
        .map_err(|e| protocol_error(format!("bad {key:?} v{version} request: {e}")))?;
    Ok(Decoded::Request {
        key,
        version,
        header,
        request: Box::new(request),
    })
}

/// Handles one request: everything but a produce's fsync wait happens now, in order; the
/// returned future gives the encoded response (none for `acks=0`).
pub async fn process(
    broker: &Broker,
    frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<PendingResponse> {
    let (key, version, header, request) = match decode_request(frame)? {
        Decoded::UnsupportedApiVersions { correlation_id } => {
            let r = encode(
                correlation_id,
                ApiKey::ApiVersions,
                0,
                &api::versions::unsupported(),
            );
            return Ok(Box::pin(async move { r.map(Some) }));
        }
        Decoded::Request {
            key,
            version,
            header,
            request,
        } => (key, version, header, request),
    };
    let correlation_id = header.correlation_id;
    let started = std::time::Instant::now();
    if let RequestKind::Produce(r) = *request {
        let pending = api::produce::append(broker, r);
        return Ok(Box::pin(async move {
            let done = pending.finish().await;
            broker_metrics::request(key, started.elapsed());
            match done {
                Some(resp) => {
                    encode(correlation_id, key, version, &ResponseKind::Produce(resp)).map(Some)
                }
                None => Ok(None),
            }
        }));
    }
    let ctx = api::RequestContext {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        version,
    };
    let response = match api::dispatch(broker, *request, &ctx).await {
        Some(r) => Some(encode(correlation_id, key, version, &r)?),
        None => None,
    };
    broker_metrics::request(key, started.elapsed());
    Ok(Box::pin(async move { Ok(response) }))
}

fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: &ResponseKind,
) -> Result<BytesMut> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, key.response_header_version(version))
        .map_err(|e| protocol_error(format!("encoding a response header: {e}")))?;
    response
        .encode(&mut buf, version)
        .map_err(|e| protocol_error(format!("encoding a {key:?} response: {e}")))?;
    Ok(buf)
}
