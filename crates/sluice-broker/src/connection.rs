//! One client connection: read a size-prefixed request, decode its header and body, answer,
//! in order. A frame that is too large, cannot be decoded, or names an unknown API closes
//! the connection (as Kafka does); nothing else is affected.

use crate::api;
use crate::Broker;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use sluice_common::{Result, SluiceError};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn protocol_error(message: impl Into<String>) -> SluiceError {
    SluiceError::Runtime(message.into())
}

/// Serves one connection until the client closes it or sends something invalid.
pub async fn handle(
    broker: Arc<Broker>,
    socket: TcpStream,
    peer: std::net::SocketAddr,
) -> Result<()> {
    socket
        .set_nodelay(true)
        .map_err(|e| SluiceError::io("setting TCP_NODELAY", e))?;
    let (mut rd, mut wr) = socket.into_split();
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
        if let Some(response) = process(&broker, Bytes::from(frame), peer).await? {
            let mut out = Vec::with_capacity(4 + response.len());
            out.extend_from_slice(&(response.len() as i32).to_be_bytes());
            out.extend_from_slice(&response);
            wr.write_all(&out)
                .await
                .map_err(|e| SluiceError::io("writing a response", e))?;
        }
    }
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

/// Decodes one request and returns its encoded response (none for `acks=0` produces).
pub async fn process(
    broker: &Broker,
    frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<Option<BytesMut>> {
    let (key, version, header, request) = match decode_request(frame)? {
        Decoded::UnsupportedApiVersions { correlation_id } => {
            return Ok(Some(encode(
                correlation_id,
                ApiKey::ApiVersions,
                0,
                &api::versions::unsupported(),
            )?));
        }
        Decoded::Request {
            key,
            version,
            header,
            request,
        } => (key, version, header, request),
    };
    let ctx = api::RequestContext {
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        version,
    };
    let Some(response) = api::dispatch(broker, *request, &ctx).await else {
        return Ok(None);
    };
    Ok(Some(encode(
        header.correlation_id,
        key,
        version,
        &response,
    )?))
}

fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    response: &kafka_protocol::messages::ResponseKind,
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
