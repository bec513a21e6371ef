//! Sluice's event log server: the Apache Kafka wire protocol (through the `kafka-protocol`
//! crate) on top of `sluice-log`, so that every Kafka client and tool works against it.
//!
//! One tokio task per connection reads requests and answers them in order. A malformed or
//! hostile request costs its connection at most, never the broker.

pub mod alloc;
pub mod api;
pub mod broker_metrics;
pub mod config;
pub mod connection;
pub mod errors;
pub mod flusher;
pub mod groups;
pub mod offsets;
pub mod producer_ids;
pub mod topic_config;
pub mod topics;
pub mod transactions;

use config::BrokerConfig;
use sluice_common::{Result, SluiceError};
use std::sync::Arc;
use tokio::net::TcpListener;
use topics::TopicManager;

/// The shared state of a running broker.
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: TopicManager,
    pub flusher: flusher::Flusher,
    /// Bumped on every append, so that long-polling fetches wake up.
    pub appended: tokio::sync::watch::Sender<u64>,
    /// Consumer groups.
    pub groups: groups::Coordinator,
    /// Committed offsets.
    pub offsets: offsets::OffsetStore,
    /// Ids of idempotent producers.
    pub producer_ids: producer_ids::ProducerIds,
    /// Transactional ids and their transactions.
    pub transactions: transactions::TransactionCoordinator,
}

/// A consumer group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next record it will read).
    pub committed: i64,
    pub log_end_offset: i64,
}

impl GroupLag {
    /// Records the group has still to read (Kafka's `records-lag`).
    pub fn lag(&self) -> i64 {
        (self.log_end_offset - self.committed).max(0)
    }
}

impl Broker {
    /// Every committed offset of every consumer group, with its partition's log end offset
    /// (partitions since deleted are left out).
    pub fn consumer_lags(&self) -> Vec<GroupLag> {
        let mut out = Vec::new();
        for group in self.offsets.groups() {
            for ((topic, partition), committed) in self.offsets.all(&group) {
                if let Some(part) = self.topics.partition(&topic, partition) {
                    out.push(GroupLag {
                        group: group.clone(),
                        topic,
                        partition,
                        committed: committed.offset,
                        log_end_offset: part.log_end_offset(),
                    });
                }
            }
        }
        out
    }

    /// Opens the data directory (recovering every partition).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let topics = TopicManager::open(&config)?;
        let offsets = offsets::OffsetStore::open(&config.data_dir)
            .map_err(|e| SluiceError::io(config.data_dir.display().to_string(), e))?;
        let (appended, _) = tokio::sync::watch::channel(0);
        let transactions = transactions::TransactionCoordinator::open(
            &config.data_dir,
            config.transaction_max_timeout,
            config.transactional_id_expiration,
        )
        .map_err(|e| {
            SluiceError::io(
                config
                    .data_dir
                    .join("transactions.log")
                    .display()
                    .to_string(),
                e,
            )
        })?;
        Ok(Arc::new(Broker {
            flusher: flusher::Flusher::start(),
            groups: groups::Coordinator::new(config.initial_rebalance_delay),
            producer_ids: producer_ids::ProducerIds::open(&config.data_dir)
                .map_err(|e| SluiceError::io(config.data_dir.display().to_string(), e))?,
            offsets,
            transactions,
            topics,
            config,
            appended,
        }))
    }

    /// Tells waiting fetches that data arrived.
    pub fn notify_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Accepts connections on `listener` until `shutdown` resolves.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    // Transactions decided before a crash get their markers now.
    api::transactions::finish_pending(&broker, true).await;
    // Session timeouts, rebalance deadlines and transaction timeouts.
    let ticker = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
            for n in 0u64.. {
                tick.tick().await;
                broker.groups.tick();
                if n % 10 == 0 {
                    api::transactions::finish_pending(&broker, false).await;
                }
            }
        })
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = accepted.map_err(|e| SluiceError::io("accepting a connection", e))?;
                let broker = broker.clone();
                tokio::spawn(async move {
                    tracing::debug!(%peer, "connection opened");
                    if let Err(e) = connection::handle(broker, socket, peer).await {
                        tracing::info!(%peer, error = %e, "connection closed");
                    }
                });
            }
        }
    }
    ticker.abort();
    broker.topics.sync_all();
    Ok(())
}

/// Applies retention to every partition every five minutes.
pub fn spawn_retention(broker: Arc<Broker>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tick.tick().await;
            broker.topics.apply_retention();
        }
    })
}
