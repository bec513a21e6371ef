//! A small Kafka client for the transaction requests librdkafka does not offer: finding the
//! open transactions of a sink's transactional ids (ListTransactions, DescribeTransactions),
//! committing a transaction a crashed process prepared (EndTxn with the producer id and epoch
//! the coordinator reports, as Flink resumes such a transaction), and aborting one by fencing
//! its id (InitProducerId). Requests go to the transaction coordinator found with
//! FindCoordinator, so this works against any Kafka cluster, not only `sluice broker`.
//!
//! It is synchronous: a sink calls it from its own thread, on restore only.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_common::{Result, SluiceError};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Retriable Kafka errors while a coordinator moves or finishes a transaction.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// The largest response accepted.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A Kafka error code as a result: `Err(code)` unless it is 0.
fn succeeded(code: i16) -> std::result::Result<(), i16> {
    if code == 0 {
        Ok(())
    } else {
        Err(code)
    }
}

/// What the coordinator says about a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Kafka's state name: `Empty`, `Ongoing`, `PrepareCommit`, `CompleteCommit`, ...
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

struct Connection {
    stream: TcpStream,
    correlation_id: i32,
}

impl Connection {
    fn open(address: &str, timeout: Duration) -> std::io::Result<Connection> {
        use std::net::ToSocketAddrs;
        let mut last = None;
        for addr in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    return Ok(Connection {
                        stream,
                        correlation_id: 0,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other(format!("{address}: no address"))))
    }

    fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, request: &Req) -> Result<Resp>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let io = |e: std::io::Error| SluiceError::Runtime(format!("Kafka {key:?} request: {e}"));
        let codec = |e: String| {
            SluiceError::Runtime(format!(
                "Kafka {key:?} request: cannot encode or decode: {e}"
            ))
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("sluice-txn-admin")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        request
            .encode(&mut body, version)
            .map_err(|e| codec(e.to_string()))?;
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).map_err(io)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_RESPONSE_BYTES {
            return Err(SluiceError::Runtime(format!(
                "Kafka {key:?} request: the broker answered with a frame of {len} bytes"
            )));
        }
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).map_err(io)?;
        let mut buf = Bytes::from(data);
        let header = ResponseHeader::decode(&mut buf, Resp::header_version(version))
            .map_err(|e| codec(e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(SluiceError::Runtime(format!(
                "Kafka {key:?} request: answer {} for request {}",
                header.correlation_id, self.correlation_id
            )));
        }
        let resp = Resp::decode(&mut buf, version).map_err(|e| codec(e.to_string()))?;
        if buf.has_remaining() {
            tracing::debug!(
                "Kafka {key:?}: {} bytes left in the answer",
                buf.remaining()
            );
        }
        Ok(resp)
    }
}

/// The transaction admin client of one sink.
pub struct TxnAdmin {
    bootstrap: Vec<String>,
    owner: String,
    timeout: Duration,
}

impl TxnAdmin {
    pub fn new(bootstrap_servers: &str, owner: &str) -> TxnAdmin {
        TxnAdmin {
            bootstrap: bootstrap_servers
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            owner: owner.to_string(),
            timeout: Duration::from_secs(30),
        }
    }

    fn error(&self, what: &str, detail: impl std::fmt::Display) -> SluiceError {
        SluiceError::Runtime(format!("{}: {what}: {detail}", self.owner))
    }

    /// A connection to any bootstrap server, retried until the timeout.
    fn any_broker(&self) -> Result<Connection> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut last = String::new();
            for address in &self.bootstrap {
                match Connection::open(address, Duration::from_secs(5)) {
                    Ok(c) => return Ok(c),
                    Err(e) => last = format!("{address}: {e}"),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.error("cannot reach a Kafka broker", last));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every broker of the cluster (host:port).
    fn brokers(&self) -> Result<Vec<String>> {
        let mut c = self.any_broker()?;
        let resp: MetadataResponse = c.call(
            ApiKey::Metadata,
            1,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )?;
        Ok(resp
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect())
    }

    /// Runs `f` against the coordinator of `transactional_id`, retrying while the coordinator
    /// is loading, moving or busy finishing an earlier request.
    fn with_coordinator<T>(
        &self,
        transactional_id: &str,
        mut f: impl FnMut(&mut Connection) -> Result<std::result::Result<T, i16>>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut c = self.any_broker()?;
            let found: FindCoordinatorResponse = c.call(
                ApiKey::FindCoordinator,
                1,
                &FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_string(transactional_id.to_string()))
                    .with_key_type(1),
            )?;
            let code = if found.error_code != 0 {
                found.error_code
            } else {
                let address = format!("{}:{}", found.host, found.port);
                let mut coordinator = Connection::open(&address, Duration::from_secs(5))
                    .map_err(|e| self.error("cannot reach the transaction coordinator", e))?;
                match f(&mut coordinator)? {
                    Ok(v) => return Ok(v),
                    Err(code) => code,
                }
            };
            let retriable = matches!(
                code,
                COORDINATOR_LOAD_IN_PROGRESS
                    | COORDINATOR_NOT_AVAILABLE
                    | NOT_COORDINATOR
                    | CONCURRENT_TRANSACTIONS
            );
            if !retriable || Instant::now() >= deadline {
                return Err(self.error(
                    &format!("transaction request for '{transactional_id}' failed"),
                    format!("Kafka error code {code}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The transactional ids starting with `prefix` that have a transaction open, on every
    /// broker of the cluster.
    pub fn open_transactions(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for address in self.brokers()? {
            let mut c = Connection::open(&address, Duration::from_secs(5))
                .map_err(|e| self.error(&format!("cannot reach broker {address}"), e))?;
            let resp: ListTransactionsResponse = c.call(
                ApiKey::ListTransactions,
                0,
                &ListTransactionsRequest::default()
                    .with_state_filters(vec![StrBytes::from_static_str("Ongoing")]),
            )?;
            if resp.error_code != 0 {
                return Err(self.error(
                    "listing open transactions failed",
                    format!("Kafka error code {}", resp.error_code),
                ));
            }
            out.extend(
                resp.transaction_states
                    .iter()
                    .map(|t| t.transactional_id.0.to_string())
                    .filter(|id| id.starts_with(prefix)),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The state of `transactional_id` (`None` if the coordinator does not know it).
    pub fn describe(&self, transactional_id: &str) -> Result<Option<Described>> {
        self.with_coordinator(transactional_id, |c| {
            let resp: DescribeTransactionsResponse = c.call(
                ApiKey::DescribeTransactions,
                0,
                &DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(StrBytes::from_string(transactional_id.to_string())),
                ]),
            )?;
            let Some(t) = resp.transaction_states.first() else {
                return Ok(Err(COORDINATOR_NOT_AVAILABLE));
            };
            Ok(match t.error_code {
                0 => Ok(Some(Described {
                    state: t.transaction_state.to_string(),
                    producer_id: t.producer_id.0,
                    producer_epoch: t.producer_epoch,
                })),
                TRANSACTIONAL_ID_NOT_FOUND => Ok(None),
                code => Err(code),
            })
        })
    }

    /// Commits the open transaction of `transactional_id` made by (`producer_id`, `epoch`).
    pub fn commit(&self, transactional_id: &str, producer_id: i64, epoch: i16) -> Result<()> {
        self.with_coordinator(transactional_id, |c| {
            let resp: EndTxnResponse = c.call(
                ApiKey::EndTxn,
                1,
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(
                        transactional_id.to_string(),
                    )))
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch)
                    .with_committed(true),
            )?;
            Ok(succeeded(resp.error_code))
        })
    }

    /// Fences `transactional_id`: the coordinator bumps its epoch and aborts its open
    /// transaction.
    pub fn fence(&self, transactional_id: &str, timeout_ms: i32) -> Result<()> {
        self.with_coordinator(transactional_id, |c| {
            let resp: InitProducerIdResponse = c.call(
                ApiKey::InitProducerId,
                1,
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                        transactional_id.to_string(),
                    ))))
                    .with_transaction_timeout_ms(timeout_ms),
            )?;
            Ok(succeeded(resp.error_code))
        })
    }
}
