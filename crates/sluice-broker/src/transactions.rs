//! The transaction coordinator's state: for every `transactional.id`, its producer id and
//! epoch, the state of its current transaction (Kafka's `Empty`, `Ongoing`, `PrepareCommit`,
//! `PrepareAbort`, `CompleteCommit`, `CompleteAbort`), the partitions and consumer group
//! offsets the transaction holds, and when it started (for `transaction.timeout.ms`).
//!
//! Kafka keeps this in the `__transaction_state` topic; Sluice keeps it in
//! `<data_dir>/transactions.log`, one line per change (fsynced before the change is
//! answered), replayed on start and rewritten when dead lines outnumber live ones. A
//! transaction found in a `Prepare*` state on start has its markers written again, so a crash
//! between the decision and the markers neither loses nor reverses a commit.
//!
//! This module decides; `api::transactions` writes the markers and answers the wire.

use crate::errors;
use crate::offsets::{hex, unhex};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where a transactional id's current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name of the state (ListTransactions, DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn parse(name: &str) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// Offsets a transaction commits for a group: (topic, partition) → (offset, metadata).
pub type TxnOffsets = BTreeMap<(String, i32), (i64, Option<String>)>;

/// One transactional id.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions the current transaction wrote to (AddPartitionsToTxn).
    pub partitions: BTreeSet<(String, i32)>,
    /// The groups whose offsets it commits (AddOffsetsToTxn), with the offsets staged so far
    /// (TxnOffsetCommit).
    pub offsets: BTreeMap<String, TxnOffsets>,
    /// When the current transaction started, in ms since the epoch (-1 if none).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

impl TxnMetadata {
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if producer_epoch != self.producer_epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        Ok(())
    }

    /// Moves to `Ongoing` (starting the timeout clock if a new transaction begins).
    fn begin(&mut self, now_ms: i64) -> Result<(), i16> {
        match self.state {
            TxnState::Ongoing => {}
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                self.state = TxnState::Ongoing;
                self.start_ms = now_ms;
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(errors::CONCURRENT_TRANSACTIONS)
            }
        }
        self.last_update_ms = now_ms;
        Ok(())
    }

    fn encode(&self) -> String {
        let partitions: Vec<String> = self
            .partitions
            .iter()
            .map(|(t, p)| format!("{}:{p}", hex(t.as_bytes())))
            .collect();
        let mut offsets = Vec::new();
        for (group, entries) in &self.offsets {
            offsets.push(hex(group.as_bytes()));
            for ((t, p), (o, m)) in entries {
                let meta = m.as_ref().map(|m| hex(m.as_bytes()));
                offsets.push(format!(
                    "{}/{}/{p}/{o}/{}",
                    hex(group.as_bytes()),
                    hex(t.as_bytes()),
                    meta.as_deref().unwrap_or("-")
                ));
            }
        }
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            hex(self.transactional_id.as_bytes()),
            self.producer_id,
            self.producer_epoch,
            self.timeout_ms,
            self.state.name(),
            self.start_ms,
            self.last_update_ms,
            list(partitions),
            list(offsets)
        )
    }

    fn decode(line: &str) -> Option<TxnMetadata> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 9 {
            return None;
        }
        let text = |h: &str| unhex(h).and_then(|b| String::from_utf8(b).ok());
        let mut m = TxnMetadata {
            transactional_id: text(f[0])?,
            producer_id: f[1].parse().ok()?,
            producer_epoch: f[2].parse().ok()?,
            timeout_ms: f[3].parse().ok()?,
            state: TxnState::parse(f[4])?,
            partitions: BTreeSet::new(),
            offsets: BTreeMap::new(),
            start_ms: f[5].parse().ok()?,
            last_update_ms: f[6].parse().ok()?,
        };
        for item in f[7].split(',').filter(|s| *s != "-") {
            let (t, p) = item.split_once(':')?;
            m.partitions.insert((text(t)?, p.parse().ok()?));
        }
        for item in f[8].split(',').filter(|s| *s != "-") {
            let parts: Vec<&str> = item.split('/').collect();
            match parts.as_slice() {
                [g] => {
                    m.offsets.entry(text(g)?).or_default();
                }
                [g, t, p, o, meta] => {
                    let meta = if *meta == "-" {
                        None
                    } else {
                        Some(text(meta)?)
                    };
                    m.offsets
                        .entry(text(g)?)
                        .or_default()
                        .insert((text(t)?, p.parse().ok()?), (o.parse().ok()?, meta));
                }
                _ => return None,
            }
        }
        Some(m)
    }
}

/// What InitProducerId must do next.
#[derive(Debug)]
pub enum InitOutcome {
    /// The producer may start: here are its id and epoch.
    Ready {
        producer_id: i64,
        producer_epoch: i16,
    },
    /// An earlier producer's transaction is still open: abort it (its epoch is already bumped,
    /// which fences that producer), then ask again.
    AbortFirst(TxnMetadata),
}

/// What EndTxn must do next.
#[derive(Debug)]
pub enum EndOutcome {
    /// A retry of an end already done: nothing to write.
    AlreadyDone,
    /// Write these markers, then call [`TransactionCoordinator::complete`].
    WriteMarkers(TxnMetadata),
}

struct Inner {
    txns: HashMap<String, TxnMetadata>,
    by_producer: HashMap<i64, String>,
    file: std::fs::File,
    lines: usize,
}

impl Inner {
    /// The transaction of `transactional_id`, if (`producer_id`, `producer_epoch`) is its
    /// current producer.
    fn txn_of(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&mut TxnMetadata, i16> {
        let m = self
            .txns
            .get_mut(transactional_id)
            .ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
        m.check_producer(producer_id, producer_epoch)?;
        Ok(m)
    }
}

/// Every transactional id this broker coordinates.
pub struct TransactionCoordinator {
    path: PathBuf,
    inner: Mutex<Inner>,
    max_timeout_ms: i64,
    id_expiration_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl TransactionCoordinator {
    /// Replays `<data_dir>/transactions.log`.
    pub fn open(
        data_dir: &Path,
        max_timeout: std::time::Duration,
        id_expiration: std::time::Duration,
    ) -> std::io::Result<TransactionCoordinator> {
        let path = data_dir.join("transactions.log");
        let mut txns = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    if let Some(id) = line.strip_suffix("\tdeleted") {
                        if let Some(id) = unhex(id).and_then(|b| String::from_utf8(b).ok()) {
                            txns.remove(&id);
                        }
                        continue;
                    }
                    match TxnMetadata::decode(line) {
                        Some(m) => {
                            txns.insert(m.transactional_id.clone(), m);
                        }
                        // A torn last line from a crash: the change it held was never answered.
                        None => tracing::warn!(
                            "{}, line {}: unreadable transaction state ignored",
                            path.display(),
                            n + 1
                        ),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let by_producer = txns
            .values()
            .map(|m: &TxnMetadata| (m.producer_id, m.transactional_id.clone()))
            .collect();
        let file = Self::rewrite(&path, &txns)?;
        Ok(TransactionCoordinator {
            path,
            inner: Mutex::new(Inner {
                lines: txns.len(),
                txns,
                by_producer,
                file,
            }),
            max_timeout_ms: max_timeout.as_millis() as i64,
            id_expiration_ms: id_expiration.as_millis() as i64,
        })
    }

    /// Writes the live entries to a new file and puts it in place; returns it for appends.
    fn rewrite(path: &Path, txns: &HashMap<String, TxnMetadata>) -> std::io::Result<std::fs::File> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let mut text = String::new();
        for m in txns.values() {
            text.push_str(&m.encode());
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        std::fs::OpenOptions::new().append(true).open(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Makes the change to `id` durable (a line appended and fsynced; the file is compacted
    /// when most of its lines are dead).
    fn persist(&self, inner: &mut Inner, id: &str) -> Result<(), i16> {
        let line = match inner.txns.get(id) {
            Some(m) => m.encode(),
            None => format!("{}\tdeleted\n", hex(id.as_bytes())),
        };
        let result = (|| -> std::io::Result<()> {
            if inner.lines > 1000 && inner.lines > 2 * inner.txns.len() {
                inner.file = Self::rewrite(&self.path, &inner.txns)?;
                inner.lines = inner.txns.len();
                return Ok(());
            }
            inner.file.write_all(line.as_bytes())?;
            inner.file.sync_data()?;
            inner.lines += 1;
            Ok(())
        })();
        result.map_err(|e| {
            tracing::error!(path = %self.path.display(), error = %e, "writing transaction state failed");
            errors::COORDINATOR_NOT_AVAILABLE
        })
    }

    /// InitProducerId with a transactional id. `new_producer_id` hands out a fresh id.
    pub fn init(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        new_producer_id: impl FnOnce() -> std::io::Result<i64>,
    ) -> Result<InitOutcome, i16> {
        if timeout_ms <= 0 || i64::from(timeout_ms) > self.max_timeout_ms {
            return Err(errors::INVALID_TRANSACTION_TIMEOUT);
        }
        let now = now_ms();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let outcome = match inner.txns.get_mut(transactional_id) {
            None => {
                if expected.is_some() {
                    return Err(errors::INVALID_PRODUCER_ID_MAPPING);
                }
                let producer_id = new_producer_id().map_err(|e| {
                    tracing::warn!(error = %e, "allocating a producer id failed");
                    errors::COORDINATOR_NOT_AVAILABLE
                })?;
                let m = TxnMetadata {
                    transactional_id: transactional_id.to_string(),
                    producer_id,
                    producer_epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    offsets: BTreeMap::new(),
                    start_ms: -1,
                    last_update_ms: now,
                };
                inner
                    .by_producer
                    .insert(producer_id, transactional_id.to_string());
                inner.txns.insert(transactional_id.to_string(), m);
                InitOutcome::Ready {
                    producer_id,
                    producer_epoch: 0,
                }
            }
            Some(m) => {
                if let Some((pid, epoch)) = expected {
                    // KIP-360: a producer bumping its own epoch must name its current one.
                    if pid != m.producer_id || epoch != m.producer_epoch {
                        return Err(errors::PRODUCER_FENCED);
                    }
                }
                if m.state.is_prepare() {
                    return Err(errors::CONCURRENT_TRANSACTIONS);
                }
                if m.state != TxnState::Ongoing && m.producer_epoch >= i16::MAX - 1 {
                    // The epoch is exhausted: a new producer id, from epoch 0.
                    let fresh = new_producer_id().map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
                    inner.by_producer.remove(&m.producer_id);
                    inner
                        .by_producer
                        .insert(fresh, transactional_id.to_string());
                    m.producer_id = fresh;
                    m.producer_epoch = -1;
                }
                m.producer_epoch += 1;
                m.timeout_ms = timeout_ms;
                m.last_update_ms = now;
                if m.state == TxnState::Ongoing {
                    m.state = TxnState::PrepareAbort;
                    InitOutcome::AbortFirst(m.clone())
                } else {
                    m.state = TxnState::Empty;
                    m.start_ms = -1;
                    InitOutcome::Ready {
                        producer_id: m.producer_id,
                        producer_epoch: m.producer_epoch,
                    }
                }
            }
        };
        self.persist(inner, transactional_id)?;
        Ok(outcome)
    }

    /// AddPartitionsToTxn: the partitions join the current transaction (starting one).
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        let m = inner.txn_of(transactional_id, producer_id, producer_epoch)?;
        m.begin(now_ms())?;
        let before = m.partitions.len();
        m.partitions.extend(partitions.iter().cloned());
        if m.partitions.len() != before || m.start_ms == m.last_update_ms {
            self.persist(&mut inner, transactional_id)?;
        }
        Ok(())
    }

    /// AddOffsetsToTxn: the group's offsets will be committed with the transaction.
    pub fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        let m = inner.txn_of(transactional_id, producer_id, producer_epoch)?;
        m.begin(now_ms())?;
        m.offsets.entry(group.to_string()).or_default();
        self.persist(&mut inner, transactional_id)
    }

    /// TxnOffsetCommit: stages offsets, committed to the group only if the transaction
    /// commits.
    pub fn stage_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group: &str,
        offsets: TxnOffsets,
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        let m = inner.txn_of(transactional_id, producer_id, producer_epoch)?;
        if m.state != TxnState::Ongoing {
            return Err(errors::INVALID_TXN_STATE);
        }
        let Some(staged) = m.offsets.get_mut(group) else {
            // The group was never added with AddOffsetsToTxn.
            return Err(errors::INVALID_TXN_STATE);
        };
        staged.extend(offsets);
        m.last_update_ms = now_ms();
        self.persist(&mut inner, transactional_id)
    }

    /// EndTxn: decides the outcome (made durable before any marker is written).
    pub fn prepare_end(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<EndOutcome, i16> {
        let mut inner = self.lock();
        let m = inner.txn_of(transactional_id, producer_id, producer_epoch)?;
        let outcome = match (m.state, commit) {
            (TxnState::Ongoing, _) => {
                m.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                m.last_update_ms = now_ms();
                EndOutcome::WriteMarkers(m.clone())
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok(EndOutcome::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(errors::CONCURRENT_TRANSACTIONS)
            }
            _ => return Err(errors::INVALID_TXN_STATE),
        };
        self.persist(&mut inner, transactional_id)?;
        Ok(outcome)
    }

    /// Records that the markers of a prepared transaction are written.
    pub fn complete(&self, transactional_id: &str, producer_epoch: i16) -> Result<(), i16> {
        let mut inner = self.lock();
        let Some(m) = inner.txns.get_mut(transactional_id) else {
            return Ok(());
        };
        if m.producer_epoch != producer_epoch || !m.state.is_prepare() {
            return Ok(());
        }
        m.state = if m.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.offsets.clear();
        m.start_ms = -1;
        m.last_update_ms = now_ms();
        self.persist(&mut inner, transactional_id)
    }

    /// Checks a transactional batch of a produce: its producer must be current and the
    /// partition part of its open transaction (so that no write escapes the markers).
    pub fn check_produce(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), i16> {
        let inner = self.lock();
        let m = inner
            .by_producer
            .get(&producer_id)
            .and_then(|id| inner.txns.get(id))
            .ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
        if producer_epoch < m.producer_epoch {
            return Err(errors::INVALID_PRODUCER_EPOCH);
        }
        if producer_epoch != m.producer_epoch
            || m.state != TxnState::Ongoing
            || !m.partitions.contains(&(topic.to_string(), partition))
        {
            return Err(errors::INVALID_TXN_STATE);
        }
        Ok(())
    }

    /// Transactions open longer than their timeout: each gets a bumped epoch (fencing its
    /// producer) and moves to `PrepareAbort`; the caller writes the abort markers. Idle ids
    /// past `transactional.id.expiration.ms` are forgotten.
    pub fn take_timed_out(&self) -> Vec<TxnMetadata> {
        let now = now_ms();
        let mut inner = self.lock();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for m in inner.txns.values_mut() {
            if m.state == TxnState::Ongoing && now - m.start_ms > i64::from(m.timeout_ms) {
                tracing::info!(
                    transactional_id = %m.transactional_id,
                    timeout_ms = m.timeout_ms,
                    "transaction timed out; aborting it"
                );
                m.producer_epoch = m.producer_epoch.saturating_add(1);
                m.state = TxnState::PrepareAbort;
                m.last_update_ms = now;
                out.push(m.clone());
            } else if matches!(
                m.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now - m.last_update_ms > self.id_expiration_ms
            {
                expired.push((m.transactional_id.clone(), m.producer_id));
            }
        }
        for (id, pid) in expired {
            inner.txns.remove(&id);
            inner.by_producer.remove(&pid);
            let _ = self.persist(&mut inner, &id);
        }
        for m in &out {
            let _ = self.persist(&mut inner, &m.transactional_id);
        }
        out
    }

    /// Transactions whose outcome was decided but whose markers may not all be written
    /// (found on start).
    pub fn prepared(&self) -> Vec<TxnMetadata> {
        self.lock()
            .txns
            .values()
            .filter(|m| m.state.is_prepare())
            .cloned()
            .collect()
    }

    /// Every transactional id, optionally only in some states or of some producers.
    pub fn list(&self, states: &[TxnState], producer_ids: &[i64]) -> Vec<TxnMetadata> {
        let mut out: Vec<TxnMetadata> = self
            .lock()
            .txns
            .values()
            .filter(|m| states.is_empty() || states.contains(&m.state))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.lock().txns.get(transactional_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn open(dir: &Path) -> TransactionCoordinator {
        TransactionCoordinator::open(dir, Duration::from_secs(900), Duration::from_secs(3600))
            .unwrap()
    }

    fn ready(o: InitOutcome) -> (i64, i16) {
        match o {
            InitOutcome::Ready {
                producer_id,
                producer_epoch,
            } => (producer_id, producer_epoch),
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_runs_through_its_states_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let (pid, epoch) = ready(c.init("t", 60_000, None, || Ok(7)).unwrap());
        assert_eq!((pid, epoch), (7, 0));
        assert_eq!(c.add_partitions("t", 7, 0, &[("a".into(), 0)]), Ok(()));
        assert_eq!(c.check_produce(7, 0, "a", 0), Ok(()));
        assert_eq!(
            c.check_produce(7, 0, "a", 1),
            Err(errors::INVALID_TXN_STATE)
        );
        c.add_offsets("t", 7, 0, "g").unwrap();
        let mut staged = TxnOffsets::new();
        staged.insert(("in".into(), 0), (42, Some("m".into())));
        c.stage_offsets("t", 7, 0, "g", staged.clone()).unwrap();
        assert_eq!(
            c.add_partitions("t", 7, 1, &[]),
            Err(errors::PRODUCER_FENCED)
        );
        let EndOutcome::WriteMarkers(m) = c.prepare_end("t", 7, 0, true).unwrap() else {
            panic!("markers expected")
        };
        assert_eq!(m.offsets["g"], staged);
        assert_eq!(m.state, TxnState::PrepareCommit);
        // A crash here: the decision is found again on start.
        drop(c);
        let c = open(dir.path());
        let prepared = c.prepared();
        assert_eq!(prepared, vec![m]);
        c.complete("t", 0).unwrap();
        assert!(matches!(
            c.prepare_end("t", 7, 0, true),
            Ok(EndOutcome::AlreadyDone)
        ));
        assert_eq!(
            c.prepare_end("t", 7, 0, false).err(),
            Some(errors::INVALID_TXN_STATE)
        );
        drop(c);
        let c = open(dir.path());
        assert_eq!(c.describe("t").unwrap().state, TxnState::CompleteCommit);
    }

    #[test]
    fn a_new_producer_aborts_the_open_transaction_and_fences_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        ready(c.init("t", 60_000, None, || Ok(1)).unwrap());
        c.add_partitions("t", 1, 0, &[("a".into(), 0)]).unwrap();
        let InitOutcome::AbortFirst(m) = c.init("t", 60_000, None, || Ok(2)).unwrap() else {
            panic!("the open transaction must be aborted first")
        };
        assert_eq!((m.producer_id, m.producer_epoch), (1, 1));
        assert_eq!(
            c.init("t", 60_000, None, || Ok(2)).err(),
            Some(errors::CONCURRENT_TRANSACTIONS)
        );
        c.complete("t", 1).unwrap();
        assert_eq!(ready(c.init("t", 60_000, None, || Ok(2)).unwrap()), (1, 2));
        // The zombie (epoch 0) is fenced everywhere.
        assert_eq!(
            c.add_partitions("t", 1, 0, &[]),
            Err(errors::PRODUCER_FENCED)
        );
        assert_eq!(
            c.prepare_end("t", 1, 0, true).err(),
            Some(errors::PRODUCER_FENCED)
        );
        assert_eq!(
            c.check_produce(1, 0, "a", 0),
            Err(errors::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            c.init("t", 16 * 60_000, None, || Ok(3)).err(),
            Some(errors::INVALID_TRANSACTION_TIMEOUT)
        );
    }

    #[test]
    fn idle_ids_expire_and_stay_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let c = TransactionCoordinator::open(
            dir.path(),
            Duration::from_secs(900),
            Duration::from_millis(1),
        )
        .unwrap();
        ready(c.init("idle", 60_000, None, || Ok(1)).unwrap());
        std::thread::sleep(Duration::from_millis(10));
        assert!(c.take_timed_out().is_empty());
        assert!(c.describe("idle").is_none());
        drop(c);
        assert!(open(dir.path()).describe("idle").is_none());
    }

    #[test]
    fn an_open_transaction_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        ready(c.init("t", 1, None, || Ok(1)).unwrap());
        c.add_partitions("t", 1, 0, &[("a".into(), 0)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let timed_out = c.take_timed_out();
        assert_eq!(timed_out.len(), 1);
        assert_eq!(timed_out[0].producer_epoch, 1);
        assert_eq!(timed_out[0].state, TxnState::PrepareAbort);
        assert!(c.take_timed_out().is_empty());
        assert_eq!(
            c.prepare_end("t", 1, 0, true).err(),
            Some(errors::PRODUCER_FENCED)
        );
    }
}
