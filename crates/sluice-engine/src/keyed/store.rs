//! [`KeyedStore`]: the keyed state and timers of one operator subtask.
//!
//! An operator asks its [`crate::SubtaskContext`] for a store, registers its states by name
//! (value, map, list and event-time-ordered state), then for every row sets the current key
//! and reads or writes through the state handles. The store keeps every entry under its
//! key's key group, in a [`StateBackend`] chosen by `state.backend.type`; timers (event time
//! and processing time) are kept per key as well. The runtime snapshots the store at every
//! checkpoint barrier (an O(1) view) and writes it on another thread, and restores it, at any
//! parallelism, from the key groups of its range.
//!
//! States with a time-to-live (`table.exec.state.ttl`) stamp every entry with the processing
//! time of its last write; an expired entry is never returned, and it is removed when it is
//! read, a few at a time by an incremental cleanup on every write, and when a snapshot is
//! written, as Flink's `StateTtlConfig` with `OnCreateAndWrite` and `NeverReturnExpired`.
//!
//! ```
//! use sluice_engine::keyed::{KeyedStore, KeyGroupRange};
//! let mut store = KeyedStore::in_memory(128, KeyGroupRange::all(128));
//! let count = store.value_state::<i64>("count", None).unwrap();
//! store.set_current_key(b"user-1").unwrap();
//! let n = count.get(&mut store).unwrap().unwrap_or(0);
//! count.set(&mut store, &(n + 1)).unwrap();
//! assert_eq!(count.get(&mut store).unwrap(), Some(1));
//! store.register_event_timer(1_000, b"window").unwrap();
//! let fired = store.pop_event_timers(1_000);
//! assert_eq!((fired[0].time_ms, fired[0].key.as_slice()), (1_000, &b"user-1"[..]));
//! ```

use super::backend::{BackendSnapshot, HashMapBackend, StateBackend};
use super::change_set::{ChangeSet, ChangedKeys};
use super::key_group::{key_group_of, KeyGroupRange};
use crate::state::{StateReader, StateWriter};
use sluice_common::{CheckpointId, Result, SluiceError};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// How a value is stored in keyed state.
pub trait StateCodec: Sized {
    /// Appends the value's bytes.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads a value back.
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl StateCodec for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
}

impl StateCodec for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("a string that is not UTF-8"))
    }
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl StateCodec for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                bytes
                    .try_into()
                    .map(<$t>::from_le_bytes)
                    .map_err(|_| corrupt(concat!("a ", stringify!($t), " of the wrong size")))
            }
        }
    )*};
}
int_codec!(i64, u64, i32, u32);

fn corrupt(what: &str) -> SluiceError {
    SluiceError::Runtime(format!("keyed state is corrupt: {what}"))
}

/// A timer that fired: its time, the key and the key group it was set for, and the
/// namespace (what the operator set it for, such as a window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// When it fires (event or processing time, in ms since the epoch).
    pub time_ms: i64,
    /// The key group of its key.
    pub key_group: u16,
    /// The key it was set for.
    pub key: Vec<u8>,
    /// What it was set for.
    pub namespace: Vec<u8>,
}

/// A timer as kept: (time, key group, key, namespace), ordered by time.
type TimerEntry = (i64, u16, Vec<u8>, Vec<u8>);
type TimerQueue = imbl::OrdSet<TimerEntry>;

/// Processing time in ms since the epoch; a test can stop the clock.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

#[derive(Debug, Clone)]
struct StateMeta {
    name: String,
    ttl_ms: Option<i64>,
}

/// Entries an incremental TTL cleanup looks at per write, as Flink's default.
const CLEANUP_PER_WRITE: usize = 5;

/// The keyed state and timers of one operator subtask.
pub struct KeyedStore {
    backend: Box<dyn StateBackend>,
    max_parallelism: usize,
    range: KeyGroupRange,
    states: Vec<StateMeta>,
    group: u16,
    key: Vec<u8>,
    event_timers: TimerQueue,
    processing_timers: TimerQueue,
    clock: Clock,
    /// The incremental TTL clean-up: the next key group it sweeps, and the entries it may
    /// look at.
    cleanup_group: u16,
    cleanup_credit: usize,
    expired: u64,
    /// What changed since the snapshots of checkpoints not yet known complete, for
    /// incremental checkpoints (`None` when they are off).
    changes: Option<ChangeLog>,
}

/// The most changed entries an incremental checkpoint tracks; past it, the next checkpoint
/// is a full one (a bound on memory, not a limit on state).
pub const MAX_TRACKED_CHANGES: usize = 4_000_000;

/// The entries changed since snapshots, so that a checkpoint can write only what changed
/// since the last complete one.
#[derive(Default)]
struct ChangeLog {
    /// Since the last snapshot taken.
    current: ChangeSet,
    /// Taken at each snapshot not yet known complete, oldest first.
    unconfirmed: Vec<(CheckpointId, Arc<ChangeSet>)>,
    /// The latest checkpoint known complete.
    confirmed: Option<CheckpointId>,
    /// A delta may only build on a checkpoint from this one on (none yet: after a start, a
    /// restore or an overflow, the next snapshot is full).
    min_parent: Option<CheckpointId>,
    /// Too many changes were tracked: they were dropped.
    overflowed: bool,
    tracked: usize,
}

/// The format of a store's full snapshot (the first field of every one).
const SNAPSHOT_MAGIC: &str = "sluice-keyed-state-1";
/// The format of a delta: what changed since the snapshot of a complete checkpoint.
const DELTA_MAGIC: &str = "sluice-keyed-delta-1";

impl KeyedStore {
    /// An empty store in memory for the key groups `range` of `max_parallelism`.
    pub fn in_memory(max_parallelism: usize, range: KeyGroupRange) -> Self {
        Self::new(
            Box::new(HashMapBackend::new(range.start, range.end)),
            max_parallelism,
            range,
        )
    }

    /// An empty store on `backend` for the key groups `range` of `max_parallelism`.
    pub fn new(
        backend: Box<dyn StateBackend>,
        max_parallelism: usize,
        range: KeyGroupRange,
    ) -> Self {
        KeyedStore {
            backend,
            max_parallelism,
            range,
            states: Vec::new(),
            group: range.start,
            key: Vec::new(),
            event_timers: TimerQueue::new(),
            processing_timers: TimerQueue::new(),
            clock: system_clock(),
            cleanup_group: range.start,
            cleanup_credit: 0,
            expired: 0,
            changes: None,
        }
    }

    /// Tracks what changes, so that snapshots can say what changed since the latest
    /// complete checkpoint (`execution.checkpointing.incremental`).
    pub fn with_incremental_checkpoints(mut self, on: bool) -> Self {
        self.changes = on.then(ChangeLog::default);
        self
    }

    fn put_entry(&mut self, group: u16, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.track(group, key);
        self.backend.put(group, key, value)
    }

    fn delete_entry(&mut self, group: u16, key: &[u8]) -> Result<()> {
        self.track(group, key);
        self.backend.delete(group, key)
    }

    fn track(&mut self, group: u16, key: &[u8]) {
        let Some(log) = self.changes.as_mut() else {
            return;
        };
        if log.overflowed {
            return;
        }
        if log.tracked >= MAX_TRACKED_CHANGES {
            log.overflowed = true;
            log.current = ChangeSet::default();
            log.unconfirmed.clear();
            log.tracked = 0;
            return;
        }
        if log.current.insert(group, key) {
            log.tracked += 1;
        }
    }

    /// Checkpoint `id` (and every one before it) is complete: changes before its snapshot
    /// are in it, and later deltas build on it.
    pub fn notify_checkpoint_complete(&mut self, id: CheckpointId) {
        if let Some(log) = self.changes.as_mut() {
            log.confirmed = Some(log.confirmed.map_or(id, |c| c.max(id)));
            let keep: Vec<_> = log.unconfirmed.drain(..).filter(|(i, _)| *i > id).collect();
            log.tracked = keep.iter().map(|(_, s)| s.len()).sum::<usize>() + log.current.len();
            log.unconfirmed = keep;
        }
    }

    /// Uses `clock` for processing time (TTL and processing-time timers).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The key groups this store holds.
    pub fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    /// The processing time now, by the store's clock.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    fn register(&mut self, name: &str, ttl: Option<Duration>) -> Result<u8> {
        if self.states.iter().any(|s| s.name == name) {
            return Err(SluiceError::Runtime(format!(
                "keyed state '{name}' is registered twice"
            )));
        }
        let id = u8::try_from(self.states.len()).map_err(|_| {
            SluiceError::Runtime("an operator has more than 256 keyed states".into())
        })?;
        self.states.push(StateMeta {
            name: name.to_string(),
            ttl_ms: ttl.map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        });
        Ok(id)
    }

    /// Registers a value state (one value per key).
    pub fn value_state<T: StateCodec>(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<ValueState<T>> {
        Ok(ValueState {
            id: self.register(name, ttl)?,
            _t: PhantomData,
        })
    }

    /// Registers a map state (a map per key).
    pub fn map_state<K: StateCodec, V: StateCodec>(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<MapState<K, V>> {
        Ok(MapState {
            id: self.register(name, ttl)?,
            _t: PhantomData,
        })
    }

    /// Registers a list state (a list per key).
    pub fn list_state<T: StateCodec>(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<ListState<T>> {
        Ok(ListState {
            id: self.register(name, ttl)?,
            _t: PhantomData,
        })
    }

    /// Registers a state of rows ordered by event time per key, for operators that buffer
    /// rows until the watermark passes them.
    pub fn time_ordered_state<T: StateCodec>(
        &mut self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<TimeOrderedState<T>> {
        Ok(TimeOrderedState {
            map: self.map_state(name, ttl)?,
        })
    }

    /// Makes `key` (its stable encoding, see [`super::RowCodec`]) the key that states and
    /// timers read and write. A key outside this subtask's key groups is a routing error.
    pub fn set_current_key(&mut self, key: &[u8]) -> Result<()> {
        let group = key_group_of(key, self.max_parallelism);
        if !self.range.contains(group) {
            return Err(SluiceError::Runtime(format!(
                "a key of key group {group} reached the subtask of key groups {}..{}",
                self.range.start, self.range.end
            )));
        }
        self.group = group;
        self.key.clear();
        self.key.extend_from_slice(key);
        Ok(())
    }

    /// True if `key` belongs to this store's key groups.
    pub fn owns_key(&self, key: &[u8]) -> bool {
        self.range.contains(key_group_of(key, self.max_parallelism))
    }

    /// Makes the key of a fired timer current.
    pub fn set_current_timer_key(&mut self, timer: &Timer) {
        self.group = timer.key_group;
        self.key.clear();
        self.key.extend_from_slice(&timer.key);
    }

    /// The current key.
    pub fn current_key(&self) -> &[u8] {
        &self.key
    }

    /// The backend key of `state` for the current key, followed by `user_key`.
    fn entry_key(&self, state: u8, user_key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(5 + self.key.len() + user_key.len());
        k.push(state);
        k.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        k.extend_from_slice(&self.key);
        k.extend_from_slice(user_key);
        k
    }

    fn ttl(&self, state: u8) -> Option<i64> {
        self.states.get(state as usize).and_then(|s| s.ttl_ms)
    }

    fn is_expired(ttl: Option<i64>, stored: &[u8], now: i64) -> bool {
        match (ttl, stored.get(..8)) {
            (Some(ttl), Some(ts)) => {
                let written = i64::from_le_bytes(ts.try_into().unwrap_or([0; 8]));
                now.saturating_sub(written) >= ttl
            }
            _ => false,
        }
    }

    /// The payload of a stored value (without its TTL stamp).
    fn payload(ttl: Option<i64>, stored: &[u8]) -> &[u8] {
        if ttl.is_some() {
            stored.get(8..).unwrap_or_default()
        } else {
            stored
        }
    }

    fn read(&mut self, state: u8, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(stored) = self.backend.get(self.group, key)? else {
            return Ok(None);
        };
        let ttl = self.ttl(state);
        if Self::is_expired(ttl, &stored, self.now_ms()) {
            self.delete_entry(self.group, key)?;
            self.expired += 1;
            return Ok(None);
        }
        Ok(Some(Self::payload(ttl, &stored).to_vec()))
    }

    fn write(&mut self, state: u8, key: &[u8], value: &[u8]) -> Result<()> {
        let ttl = self.ttl(state);
        let mut stored = Vec::with_capacity(value.len() + 8);
        if ttl.is_some() {
            stored.extend_from_slice(&self.now_ms().to_le_bytes());
        }
        stored.extend_from_slice(value);
        self.put_entry(self.group, key, stored)?;
        if ttl.is_some() {
            self.cleanup_step()?;
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.delete_entry(self.group, key)
    }

    /// The entries of `state` for the current key: (user key, payload), expired ones left
    /// out (and removed).
    fn scan_key(&mut self, state: u8) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_key_from(state, &[], &|_| true)
    }

    /// The entries of `state` for the current key from user key `from` on, while `more`
    /// says yes of their user key.
    fn scan_key_from(
        &mut self,
        state: u8,
        from: &[u8],
        more: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = self.entry_key(state, &[]);
        let start = self.entry_key(state, from);
        let ttl = self.ttl(state);
        let now = self.now_ms();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        self.backend.scan(self.group, &start, &mut |k, v| {
            if !k.starts_with(&prefix) || !more(&k[prefix.len()..]) {
                return false;
            }
            if Self::is_expired(ttl, v, now) {
                dead.push(k.to_vec());
            } else {
                live.push((k[prefix.len()..].to_vec(), Self::payload(ttl, v).to_vec()));
            }
            true
        })?;
        for k in dead {
            self.delete_entry(self.group, &k)?;
            self.expired += 1;
        }
        Ok(live)
    }

    /// The incremental TTL clean-up, as Flink's (a few entries per write): every write of a
    /// state with a TTL earns `CLEANUP_PER_WRITE` entries of credit, and key groups are swept
    /// in turn (their expired entries removed) as the credit covers their size, so that
    /// state nobody reads any more does not stay for ever.
    fn cleanup_step(&mut self) -> Result<()> {
        self.cleanup_credit += CLEANUP_PER_WRITE;
        let now = self.now_ms();
        for _ in 0..self.range.len() {
            let group = self.cleanup_group;
            let len = self.backend.group_len(group);
            if len > self.cleanup_credit {
                break;
            }
            self.cleanup_credit -= len;
            let states = &self.states;
            let mut dead = Vec::new();
            self.backend.for_each_in_group(group, &mut |k, v| {
                let ttl = k
                    .first()
                    .and_then(|s| states.get(*s as usize))
                    .and_then(|s| s.ttl_ms);
                if Self::is_expired(ttl, v, now) {
                    dead.push(k.to_vec());
                }
            })?;
            for k in dead {
                self.delete_entry(group, &k)?;
                self.expired += 1;
            }
            self.cleanup_group = if group + 1 >= self.range.end {
                self.range.start
            } else {
                group + 1
            };
        }
        Ok(())
    }

    /// Entries removed because their time-to-live had passed.
    pub fn expired_entries(&self) -> u64 {
        self.expired
    }

    /// The number of state entries.
    pub fn entries(&self) -> u64 {
        self.backend.entries()
    }

    /// The bytes of state held (keys and values).
    pub fn size_bytes(&self) -> u64 {
        self.backend.size_bytes()
    }

    /// Sets an event-time timer for the current key: it fires when the watermark reaches
    /// `time_ms`. Setting the same timer twice sets it once.
    pub fn register_event_timer(&mut self, time_ms: i64, namespace: &[u8]) -> Result<()> {
        let t = (time_ms, self.group, self.key.clone(), namespace.to_vec());
        self.event_timers.insert(t);
        Ok(())
    }

    /// Removes an event-time timer of the current key.
    pub fn delete_event_timer(&mut self, time_ms: i64, namespace: &[u8]) {
        let t = (time_ms, self.group, self.key.clone(), namespace.to_vec());
        self.event_timers.remove(&t);
    }

    /// Sets a processing-time timer for the current key.
    pub fn register_processing_timer(&mut self, time_ms: i64, namespace: &[u8]) -> Result<()> {
        let t = (time_ms, self.group, self.key.clone(), namespace.to_vec());
        self.processing_timers.insert(t);
        Ok(())
    }

    /// Removes a processing-time timer of the current key.
    pub fn delete_processing_timer(&mut self, time_ms: i64, namespace: &[u8]) {
        let t = (time_ms, self.group, self.key.clone(), namespace.to_vec());
        self.processing_timers.remove(&t);
    }

    /// Takes the event-time timers due at `watermark` (time <= watermark), earliest first.
    pub fn pop_event_timers(&mut self, watermark: i64) -> Vec<Timer> {
        pop_due(&mut self.event_timers, watermark)
    }

    /// Takes the processing-time timers due at `now_ms`, earliest first.
    pub fn pop_processing_timers(&mut self, now_ms: i64) -> Vec<Timer> {
        pop_due(&mut self.processing_timers, now_ms)
    }

    /// The earliest processing-time timer.
    pub fn next_processing_timer(&self) -> Option<i64> {
        self.processing_timers.get_min().map(|t| t.0)
    }

    /// The number of timers set (event and processing time).
    pub fn timers(&self) -> usize {
        self.event_timers.len() + self.processing_timers.len()
    }

    /// A view of the whole store as it is now, for checkpoint `id` (cheap: nothing is
    /// copied); write it with [`KeyedSnapshot::write`], on any thread. With incremental
    /// checkpoints it also says what changed since the latest complete checkpoint.
    pub fn snapshot(&mut self, id: CheckpointId) -> KeyedSnapshot {
        let mut delta = None;
        if let Some(log) = self.changes.as_mut() {
            let frozen = Arc::new(std::mem::take(&mut log.current));
            log.unconfirmed.push((id, frozen));
            match (log.min_parent, log.confirmed) {
                (Some(min), Some(parent)) if !log.overflowed && parent >= min => {
                    let sets = log
                        .unconfirmed
                        .iter()
                        .filter(|(i, _)| *i > parent)
                        .map(|(_, s)| s.clone())
                        .collect();
                    delta = Some(Delta { parent, sets });
                }
                _ => {
                    // No checkpoint to build on yet: this one is full, and later ones may
                    // build on it.
                    log.min_parent = Some(id);
                    log.overflowed = false;
                }
            }
        }
        KeyedSnapshot {
            max_parallelism: self.max_parallelism,
            states: self.states.clone(),
            backend: self.backend.snapshot(),
            event_timers: self.event_timers.clone(),
            processing_timers: self.processing_timers.clone(),
            taken_ms: self.now_ms(),
            delta,
        }
    }

    /// Takes the entries and timers of this store's key groups from a snapshot written by
    /// any subtask of the operator, at any parallelism.
    pub fn restore(&mut self, bytes: &[u8], owner: &str) -> Result<()> {
        self.restore_from(&mut &bytes[..], owner)
    }

    /// As [`KeyedStore::restore`], reading the snapshot from `src` a key group at a time, so
    /// that restoring a state larger than memory needs memory for one key group only.
    pub fn restore_from(&mut self, src: &mut dyn std::io::Read, owner: &str) -> Result<()> {
        let mut input = Pieces::new(src, owner);
        let (is_delta, states) = input.parse(|r| {
            let magic = r.str()?;
            let is_delta = match magic {
                SNAPSHOT_MAGIC => false,
                DELTA_MAGIC => true,
                _ => {
                    return Err(SluiceError::Runtime(format!(
                        "{owner}: keyed state in an unknown format ('{magic}')"
                    )))
                }
            };
            let max = r.u64()? as usize;
            if max != self.max_parallelism {
                return Err(SluiceError::Config(format!(
                    "{owner}: the checkpoint was taken with 'pipeline.max-parallelism' = '{max}', this job has '{}'; the maximum parallelism of a job cannot change",
                    self.max_parallelism
                )));
            }
            let n = r.count()?;
            let mut states = Vec::with_capacity(n);
            for _ in 0..n {
                let old = r.u64()?;
                let name = r.str()?.to_string();
                let _ttl = r.i64()?;
                states.push((old, name));
            }
            Ok((is_delta, states))
        })?;
        if let Some(log) = self.changes.as_mut() {
            // What was restored is not in any checkpoint of this run: the next is full.
            *log = ChangeLog::default();
        }
        // Old state id -> this store's id (by name).
        let mut ids = [None::<u8>; 256];
        for (old, name) in states {
            let new = self.states.iter().position(|s| s.name == name).ok_or_else(|| {
                SluiceError::Config(format!(
                    "{owner}: the checkpoint has keyed state '{name}', which this operator does not have (the query changed?)"
                ))
            })?;
            if let Some(slot) = ids.get_mut(old as usize) {
                *slot = Some(new as u8);
            }
        }
        let groups = input.parse(|r| r.count())?;
        let range = self.range;
        for _ in 0..groups {
            let g = input.parse(|r| {
                let group = r.u64()? as u16;
                let mine = range.contains(group);
                let mut g = RestoredGroup {
                    group,
                    mine,
                    entries: Vec::new(),
                    timers: [Vec::new(), Vec::new()],
                };
                let entries = r.count()?;
                for _ in 0..entries {
                    // A delta's entry is a flag (false: removed) then the key, and the
                    // value if it is there.
                    let present = !is_delta || r.bool()?;
                    let key = r.bytes()?;
                    let value = if present { Some(r.bytes()?) } else { None };
                    if !mine {
                        continue;
                    }
                    let id = key
                        .first()
                        .and_then(|i| ids[*i as usize])
                        .ok_or_else(|| corrupt("an entry of an unlisted state"))?;
                    let mut k = key.to_vec();
                    k[0] = id;
                    g.entries.push((k, value.map(<[u8]>::to_vec)));
                }
                for timers in &mut g.timers {
                    let n = r.count()?;
                    for _ in 0..n {
                        let time = r.i64()?;
                        let key = r.bytes()?;
                        let ns = r.bytes()?;
                        if mine {
                            timers.push((time, group, key.to_vec(), ns.to_vec()));
                        }
                    }
                }
                Ok(g)
            })?;
            if g.mine {
                self.apply(g)?;
            }
        }
        input.finish()
    }

    fn apply(&mut self, g: RestoredGroup) -> Result<()> {
        for (k, v) in g.entries {
            match v {
                Some(v) => self.backend.put(g.group, &k, v)?,
                None => self.backend.delete(g.group, &k)?,
            }
        }
        // Every snapshot (full or delta) holds all the timers of its key groups: the latest
        // one read wins.
        for (queue, timers) in [&mut self.event_timers, &mut self.processing_timers]
            .into_iter()
            .zip(g.timers)
        {
            let stale: Vec<TimerEntry> = queue.iter().filter(|t| t.1 == g.group).cloned().collect();
            for t in stale {
                queue.remove(&t);
            }
            for t in timers {
                queue.insert(t);
            }
        }
        Ok(())
    }
}

/// One key group read from a snapshot: its entries (`None`: removed, in a delta) and its
/// event-time and processing-time timers.
struct RestoredGroup {
    group: u16,
    mine: bool,
    entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    timers: [Vec<TimerEntry>; 2],
}

/// A snapshot read from a stream a piece at a time: [`Pieces::parse`] runs a parser over
/// the bytes read so far and, if they end before the parser is done, reads more and runs
/// it again (so a parser must not act before it returns).
struct Pieces<'a> {
    src: &'a mut dyn std::io::Read,
    owner: &'a str,
    buf: Vec<u8>,
    /// The bytes of `buf` already parsed.
    pos: usize,
    /// Where `buf` starts in the stream.
    base: u64,
    eof: bool,
}

/// The bytes [`Pieces`] reads at least at a time.
const PIECE_BYTES: usize = 1 << 20;

impl<'a> Pieces<'a> {
    fn new(src: &'a mut dyn std::io::Read, owner: &'a str) -> Self {
        Pieces {
            src,
            owner,
            buf: Vec::new(),
            pos: 0,
            base: 0,
            eof: false,
        }
    }

    fn parse<T>(&mut self, mut f: impl FnMut(&mut StateReader<'_>) -> Result<T>) -> Result<T> {
        loop {
            let mut r = StateReader::at(
                &self.buf[self.pos..],
                self.base + self.pos as u64,
                self.owner,
            );
            match f(&mut r) {
                Ok(t) => {
                    self.pos += r.position();
                    return Ok(t);
                }
                Err(_) if r.ran_out() && !self.eof => self.read_more()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops what was parsed and reads at least as much again as is buffered.
    fn read_more(&mut self) -> Result<()> {
        self.buf.drain(..self.pos);
        self.base += self.pos as u64;
        self.pos = 0;
        let want = self.buf.len().max(PIECE_BYTES);
        let mut got = 0;
        while got < want {
            let at = self.buf.len();
            self.buf.resize(at + (want - got), 0);
            let n = self.src.read(&mut self.buf[at..]).map_err(|e| {
                SluiceError::Runtime(format!("{}: reading keyed state: {e}", self.owner))
            })?;
            self.buf.truncate(at + n);
            if n == 0 {
                self.eof = true;
                break;
            }
            got += n;
        }
        Ok(())
    }

    /// Checks that nothing follows the snapshot.
    fn finish(mut self) -> Result<()> {
        if self.pos == self.buf.len() && !self.eof {
            self.read_more()?;
        }
        if self.pos < self.buf.len() {
            return Err(SluiceError::Runtime(format!(
                "the checkpointed state of {} is malformed: {} bytes after its end at byte {}",
                self.owner,
                self.buf.len() - self.pos,
                self.base + self.pos as u64
            )));
        }
        Ok(())
    }
}

fn pop_due(queue: &mut TimerQueue, up_to: i64) -> Vec<Timer> {
    let mut due = Vec::new();
    while queue.get_min().is_some_and(|t| t.0 <= up_to) {
        if let Some((time_ms, key_group, key, namespace)) = queue.remove_min() {
            due.push(Timer {
                time_ms,
                key_group,
                key,
                namespace,
            });
        }
    }
    due
}

/// What changed since the snapshot of checkpoint `parent`.
pub struct Delta {
    /// The complete checkpoint this delta builds on.
    pub parent: CheckpointId,
    sets: Vec<Arc<ChangeSet>>,
}

/// A store as it was at a checkpoint barrier, to be written on another thread.
pub struct KeyedSnapshot {
    /// With incremental checkpoints: what changed since the latest complete checkpoint
    /// (`None`: only a full snapshot will do).
    pub delta: Option<Delta>,
    max_parallelism: usize,
    states: Vec<StateMeta>,
    backend: Box<dyn BackendSnapshot>,
    event_timers: TimerQueue,
    processing_timers: TimerQueue,
    taken_ms: i64,
}

impl KeyedSnapshot {
    /// The snapshot's bytes: per key group its entries (expired ones left out) and timers.
    pub fn write(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.write_into(false, &mut |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(bytes)
    }

    /// The bytes of what changed since the delta's parent (every entry changed since, with
    /// its value now or as removed), and every timer; `None` if this snapshot has no delta.
    pub fn write_delta(&self) -> Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        let written = self.write_into(true, &mut |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(written.then_some(bytes))
    }

    /// Writes the snapshot (or, with `delta`, what changed since its parent) to `out`, a key
    /// group at a time, so that a large state is never all in memory. False if a delta is
    /// asked for and this snapshot has none (nothing is written).
    pub fn write_into(
        &self,
        delta: bool,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        if !delta {
            self.write_as(None, out)?;
            return Ok(true);
        }
        let Some(delta) = &self.delta else {
            return Ok(false);
        };
        // The changed keys of each key group, each once.
        let sets: Vec<&ChangeSet> = delta.sets.iter().map(|s| s.as_ref()).collect();
        self.write_as(Some(&mut ChangedKeys::new(&sets)), out)?;
        Ok(true)
    }

    fn write_as(
        &self,
        mut changed: Option<&mut ChangedKeys<'_>>,
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut w = StateWriter::default();
        w.put_str(if changed.is_some() {
            DELTA_MAGIC
        } else {
            SNAPSHOT_MAGIC
        });
        w.put_u64(self.max_parallelism as u64);
        w.put_u64(self.states.len() as u64);
        for (id, s) in self.states.iter().enumerate() {
            w.put_u64(id as u64);
            w.put_str(&s.name);
            w.put_i64(s.ttl_ms.unwrap_or(-1));
        }
        let groups = self.backend.groups();
        w.put_u64(groups.len() as u64);
        let mut event = self.event_timers.iter().peekable();
        let mut processing = self.processing_timers.iter().peekable();
        // Timers are ordered by time first; bucket them by key group.
        let mut by_group: Vec<[Vec<&TimerEntry>; 2]> = (0..groups.len())
            .map(|_| [Vec::new(), Vec::new()])
            .collect();
        for (q, it) in [(0, &mut event), (1, &mut processing)] {
            for t in it.by_ref() {
                if let Some(b) = by_group.get_mut((t.1 - groups.start) as usize) {
                    b[q].push(t);
                }
            }
        }
        for g in groups.clone() {
            w.put_u64(g as u64);
            let mut entries = StateWriter::default();
            let mut n = 0u64;
            let live = |k: &[u8], v: &[u8]| {
                let ttl = k
                    .first()
                    .and_then(|s| self.states.get(*s as usize))
                    .and_then(|s| s.ttl_ms);
                !KeyedStore::is_expired(ttl, v, self.taken_ms)
            };
            match changed.as_deref_mut() {
                None => self.backend.for_each(g, &mut |k, v| {
                    if live(k, v) {
                        entries.put_bytes(k);
                        entries.put_bytes(v);
                        n += 1;
                    }
                    Ok(())
                })?,
                Some(changed) => {
                    for k in changed.group(g) {
                        match self.backend.get(g, k)? {
                            Some(v) if live(k, &v) => {
                                entries.put_bool(true);
                                entries.put_bytes(k);
                                entries.put_bytes(&v);
                            }
                            _ => {
                                entries.put_bool(false);
                                entries.put_bytes(k);
                            }
                        }
                        n += 1;
                    }
                }
            }
            w.put_u64(n);
            // The group's entries go out as they are (a group of a large state is tens of
            // megabytes: not copied once more).
            out(&w.take())?;
            out(&entries.finish())?;
            for q in &by_group[(g - groups.start) as usize] {
                w.put_u64(q.len() as u64);
                for (time, _, key, ns) in q {
                    w.put_i64(*time);
                    w.put_bytes(key);
                    w.put_bytes(ns);
                }
            }
            out(&w.take())?;
        }
        out(&w.take())
    }
}

/// State handles are copied freely whatever they hold (a derive would ask `T: Copy`).
macro_rules! copy_handle {
    ($name:ident<$($t:ident),+>) => {
        impl<$($t),+> Clone for $name<$($t),+> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($t),+> Copy for $name<$($t),+> {}
    };
}

/// One value per key.
#[derive(Debug)]
pub struct ValueState<T> {
    id: u8,
    _t: PhantomData<fn() -> T>,
}

copy_handle!(ValueState<T>);

impl<T: StateCodec> ValueState<T> {
    /// The current key's value.
    pub fn get(&self, store: &mut KeyedStore) -> Result<Option<T>> {
        let k = store.entry_key(self.id, &[]);
        store.read(self.id, &k)?.map(|b| T::decode(&b)).transpose()
    }

    /// Sets the current key's value.
    pub fn set(&self, store: &mut KeyedStore, value: &T) -> Result<()> {
        let k = store.entry_key(self.id, &[]);
        let mut v = Vec::new();
        value.encode(&mut v);
        store.write(self.id, &k, &v)
    }

    /// Removes the current key's value.
    pub fn clear(&self, store: &mut KeyedStore) -> Result<()> {
        let k = store.entry_key(self.id, &[]);
        store.delete(&k)
    }
}

/// A map per key.
#[derive(Debug)]
pub struct MapState<K, V> {
    id: u8,
    _t: PhantomData<fn() -> (K, V)>,
}

copy_handle!(MapState<K, V>);

fn encoded<T: StateCodec>(v: &T) -> Vec<u8> {
    let mut b = Vec::new();
    v.encode(&mut b);
    b
}

impl<K: StateCodec, V: StateCodec> MapState<K, V> {
    /// The value of `user_key` in the current key's map.
    pub fn get(&self, store: &mut KeyedStore, user_key: &K) -> Result<Option<V>> {
        let k = store.entry_key(self.id, &encoded(user_key));
        store.read(self.id, &k)?.map(|b| V::decode(&b)).transpose()
    }

    /// Sets `user_key` in the current key's map.
    pub fn put(&self, store: &mut KeyedStore, user_key: &K, value: &V) -> Result<()> {
        let k = store.entry_key(self.id, &encoded(user_key));
        store.write(self.id, &k, &encoded(value))
    }

    /// Removes `user_key` from the current key's map.
    pub fn remove(&self, store: &mut KeyedStore, user_key: &K) -> Result<()> {
        let k = store.entry_key(self.id, &encoded(user_key));
        store.delete(&k)
    }

    /// The current key's map, in the order of the user keys' encoding.
    pub fn entries(&self, store: &mut KeyedStore) -> Result<Vec<(K, V)>> {
        store
            .scan_key(self.id)?
            .into_iter()
            .map(|(k, v)| Ok((K::decode(&k)?, V::decode(&v)?)))
            .collect()
    }

    /// The current key's first `n` entries, in the order of the user keys' encoding.
    pub fn first_entries(&self, store: &mut KeyedStore, n: usize) -> Result<Vec<(K, V)>> {
        loop {
            let expired_before = store.expired;
            let taken = std::cell::Cell::new(0usize);
            let until_n = |_: &[u8]| {
                taken.set(taken.get() + 1);
                taken.get() <= n
            };
            let live = store.scan_key_from(self.id, &[], &until_n)?;
            // Expired entries (a TTL) took places among the first n and are gone now: look
            // again, until n live ones or no more expire.
            if live.len() >= n || store.expired == expired_before {
                return live
                    .into_iter()
                    .map(|(k, v)| Ok((K::decode(&k)?, V::decode(&v)?)))
                    .collect();
            }
        }
    }

    /// The current key's entries whose user key's encoding starts with `prefix`, in order.
    pub fn entries_with_prefix(
        &self,
        store: &mut KeyedStore,
        prefix: &[u8],
    ) -> Result<Vec<(K, V)>> {
        let within = |k: &[u8]| k.starts_with(prefix);
        store
            .scan_key_from(self.id, prefix, &within)?
            .into_iter()
            .map(|(k, v)| Ok((K::decode(&k)?, V::decode(&v)?)))
            .collect()
    }

    /// Removes the current key's whole map.
    pub fn clear(&self, store: &mut KeyedStore) -> Result<()> {
        for (k, _) in store.scan_key(self.id)? {
            let full = store.entry_key(self.id, &k);
            store.delete(&full)?;
        }
        Ok(())
    }
}

/// A list per key.
#[derive(Debug)]
pub struct ListState<T> {
    id: u8,
    _t: PhantomData<fn() -> T>,
}

copy_handle!(ListState<T>);

impl<T: StateCodec> ListState<T> {
    fn raw(&self, store: &mut KeyedStore) -> Result<Vec<u8>> {
        let k = store.entry_key(self.id, &[]);
        Ok(store.read(self.id, &k)?.unwrap_or_default())
    }

    /// The current key's list.
    pub fn get(&self, store: &mut KeyedStore) -> Result<Vec<T>> {
        let raw = self.raw(store)?;
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < raw.len() {
            let len = raw
                .get(pos..pos + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| corrupt("a list ends early"))?;
            let item = raw
                .get(pos + 4..pos + 4 + len)
                .ok_or_else(|| corrupt("a list ends early"))?;
            out.push(T::decode(item)?);
            pos += 4 + len;
        }
        Ok(out)
    }

    /// Appends to the current key's list.
    pub fn add(&self, store: &mut KeyedStore, value: &T) -> Result<()> {
        let mut raw = self.raw(store)?;
        let item = encoded(value);
        raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
        raw.extend_from_slice(&item);
        let k = store.entry_key(self.id, &[]);
        store.write(self.id, &k, &raw)
    }

    /// Removes the current key's list.
    pub fn clear(&self, store: &mut KeyedStore) -> Result<()> {
        let k = store.entry_key(self.id, &[]);
        store.delete(&k)
    }
}

/// Rows by event time per key: what an interval join or a pattern buffers until the
/// watermark passes.
#[derive(Debug)]
pub struct TimeOrderedState<T> {
    map: MapState<Vec<u8>, T>,
}

copy_handle!(TimeOrderedState<T>);

/// Where a row of a [`TimeOrderedState`] is: its time and its place among rows of that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSlot {
    pub time_ms: i64,
    seq: u32,
}

/// An order-preserving encoding of a timestamp and a sequence number.
fn time_key(time_ms: i64, seq: u32) -> Vec<u8> {
    let mut k = ((time_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_of(key: &[u8]) -> Result<(i64, u32)> {
    if key.len() != 12 {
        return Err(corrupt("a time-ordered entry with a bad key"));
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(&key[..8]);
    let mut s = [0u8; 4];
    s.copy_from_slice(&key[8..]);
    Ok((
        (u64::from_be_bytes(t) ^ (1 << 63)) as i64,
        u32::from_be_bytes(s),
    ))
}

impl<T: StateCodec> TimeOrderedState<T> {
    /// Adds a row at `time_ms` for the current key (rows at the same time keep their order).
    pub fn add(&self, store: &mut KeyedStore, time_ms: i64, value: &T) -> Result<()> {
        let at = time_key(time_ms, 0);
        let same_time = |k: &[u8]| k.starts_with(&at[..8]);
        let next = store
            .scan_key_from(self.map.id, &at, &same_time)?
            .last()
            .map(|(k, _)| time_of(k).map(|(_, s)| s + 1))
            .transpose()?
            .unwrap_or(0);
        self.map.put(store, &time_key(time_ms, next), value)
    }

    /// The current key's rows, earliest first.
    pub fn rows(&self, store: &mut KeyedStore) -> Result<Vec<(i64, T)>> {
        self.map
            .entries(store)?
            .into_iter()
            .map(|(k, v)| Ok((time_of(&k)?.0, v)))
            .collect()
    }

    /// The current key's rows from `from_ms` to `to_ms` (both included), earliest first,
    /// each with its slot (to replace or remove it).
    pub fn between(
        &self,
        store: &mut KeyedStore,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(TimeSlot, T)>> {
        if from_ms > to_ms {
            return Ok(Vec::new());
        }
        let start = time_key(from_ms, 0);
        let end = time_key(to_ms, u32::MAX);
        let within = |k: &[u8]| k <= end.as_slice();
        store
            .scan_key_from(self.map.id, &start, &within)?
            .into_iter()
            .map(|(k, v)| {
                let (time_ms, seq) = time_of(&k)?;
                Ok((TimeSlot { time_ms, seq }, T::decode(&v)?))
            })
            .collect()
    }

    /// Replaces the row in `slot` of the current key.
    pub fn replace(&self, store: &mut KeyedStore, slot: TimeSlot, value: &T) -> Result<()> {
        self.map
            .put(store, &time_key(slot.time_ms, slot.seq), value)
    }

    /// Removes the row in `slot` of the current key.
    pub fn remove(&self, store: &mut KeyedStore, slot: TimeSlot) -> Result<()> {
        self.map.remove(store, &time_key(slot.time_ms, slot.seq))
    }

    /// The time of the current key's earliest row.
    pub fn earliest(&self, store: &mut KeyedStore) -> Result<Option<i64>> {
        let seen = std::cell::Cell::new(false);
        let first_only = |_: &[u8]| !seen.replace(true);
        let first = store.scan_key_from(self.map.id, &[], &first_only)?;
        first
            .first()
            .map(|(k, _)| time_of(k).map(|(t, _)| t))
            .transpose()
    }

    /// Removes the current key's rows at or before `time_ms`; returns them, earliest first.
    pub fn take_up_to(&self, store: &mut KeyedStore, time_ms: i64) -> Result<Vec<(i64, T)>> {
        let end = time_key(time_ms, u32::MAX);
        let due = |k: &[u8]| k <= end.as_slice();
        let mut out = Vec::new();
        for (k, v) in store.scan_key_from(self.map.id, &[], &due)? {
            let full = store.entry_key(self.map.id, &k);
            store.delete(&full)?;
            out.push((time_of(&k)?.0, T::decode(&v)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn store(range: KeyGroupRange) -> KeyedStore {
        KeyedStore::in_memory(128, range)
    }

    fn registered(
        s: &mut KeyedStore,
    ) -> (ValueState<i64>, MapState<String, u64>, ListState<String>) {
        (
            s.value_state("v", None).unwrap(),
            s.map_state("m", None).unwrap(),
            s.list_state("l", None).unwrap(),
        )
    }

    #[test]
    fn states_are_per_key() {
        let mut s = store(KeyGroupRange::all(128));
        let (v, m, l) = registered(&mut s);
        for (key, n) in [(&b"a"[..], 1i64), (b"b", 2)] {
            s.set_current_key(key).unwrap();
            v.set(&mut s, &n).unwrap();
            m.put(&mut s, &"x".to_string(), &(n as u64)).unwrap();
            m.put(&mut s, &"y".to_string(), &10).unwrap();
            l.add(&mut s, &format!("{n}")).unwrap();
            l.add(&mut s, &"z".to_string()).unwrap();
        }
        s.set_current_key(b"a").unwrap();
        assert_eq!(v.get(&mut s).unwrap(), Some(1));
        assert_eq!(
            m.entries(&mut s).unwrap(),
            vec![("x".to_string(), 1), ("y".to_string(), 10)]
        );
        m.remove(&mut s, &"x".to_string()).unwrap();
        assert_eq!(m.get(&mut s, &"x".to_string()).unwrap(), None);
        assert_eq!(l.get(&mut s).unwrap(), vec!["1", "z"]);
        v.clear(&mut s).unwrap();
        m.clear(&mut s).unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        assert!(m.entries(&mut s).unwrap().is_empty());
        s.set_current_key(b"b").unwrap();
        assert_eq!(v.get(&mut s).unwrap(), Some(2));
        assert_eq!(m.get(&mut s, &"x".to_string()).unwrap(), Some(2));
    }

    #[test]
    fn time_ordered_state_keeps_event_time_order() {
        let mut s = store(KeyGroupRange::all(128));
        let t = s.time_ordered_state::<String>("rows", None).unwrap();
        s.set_current_key(b"k").unwrap();
        for (ts, v) in [(5, "c"), (-3, "a"), (5, "d"), (0, "b"), (9, "e")] {
            t.add(&mut s, ts, &v.to_string()).unwrap();
        }
        let rows: Vec<(i64, String)> = t.rows(&mut s).unwrap();
        let order: Vec<&str> = rows.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(order, vec!["a", "b", "c", "d", "e"]);
        let slots = t.between(&mut s, 0, 5).unwrap();
        let found: Vec<&str> = slots.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(found, vec!["b", "c", "d"]);
        assert!(t.between(&mut s, 6, 5).unwrap().is_empty());
        t.replace(&mut s, slots[1].0, &"C".to_string()).unwrap();
        t.remove(&mut s, slots[0].0).unwrap();
        t.add(&mut s, 0, &"b".to_string()).unwrap();
        assert_eq!(t.earliest(&mut s).unwrap(), Some(-3));
        let taken = t.take_up_to(&mut s, 5).unwrap();
        assert_eq!(taken.len(), 4);
        assert_eq!(taken[2], (5, "C".to_string()));
        assert_eq!(t.earliest(&mut s).unwrap(), Some(9));
        assert_eq!(t.rows(&mut s).unwrap(), vec![(9, "e".to_string())]);
    }

    #[test]
    fn timers_fire_in_time_order_for_their_key_once() {
        let mut s = store(KeyGroupRange::all(128));
        s.set_current_key(b"a").unwrap();
        s.register_event_timer(20, b"w2").unwrap();
        s.register_event_timer(10, b"w1").unwrap();
        s.register_event_timer(10, b"w1").unwrap();
        s.set_current_key(b"b").unwrap();
        s.register_event_timer(15, b"").unwrap();
        s.register_event_timer(30, b"").unwrap();
        s.delete_event_timer(30, b"");
        s.register_processing_timer(100, b"p").unwrap();
        assert_eq!(s.timers(), 4);
        let fired = s.pop_event_timers(20);
        let seen: Vec<(i64, &[u8])> = fired
            .iter()
            .map(|t| (t.time_ms, t.key.as_slice()))
            .collect();
        assert_eq!(seen, vec![(10, &b"a"[..]), (15, b"b"), (20, b"a")]);
        assert!(s.pop_event_timers(1_000).is_empty());
        assert_eq!(s.next_processing_timer(), Some(100));
        assert!(s.pop_processing_timers(99).is_empty());
        assert_eq!(s.pop_processing_timers(100).len(), 1);
    }

    #[test]
    fn a_key_of_another_subtask_is_refused() {
        let range = KeyGroupRange::for_subtask(128, 2, 0);
        let mut s = store(range);
        let foreign = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|k| !range.contains(key_group_of(k, 128)))
            .unwrap();
        let e = s.set_current_key(&foreign).unwrap_err().to_string();
        assert!(e.contains("key groups 0..64"), "{e}");
    }

    /// Fills a store of parallelism `from`, snapshots every subtask, restores at parallelism
    /// `to` and checks every key and timer arrived at the subtask that owns it.
    fn rescale(from: usize, to: usize) {
        let keys: Vec<Vec<u8>> = (0..500u32)
            .map(|i| format!("key-{i}").into_bytes())
            .collect();
        let mut blobs = Vec::new();
        for i in 0..from {
            let mut s = store(KeyGroupRange::for_subtask(128, from, i));
            let (v, m, _) = registered(&mut s);
            for (n, k) in keys.iter().enumerate() {
                if !s.key_groups().contains(key_group_of(k, 128)) {
                    continue;
                }
                s.set_current_key(k).unwrap();
                v.set(&mut s, &(n as i64)).unwrap();
                m.put(&mut s, &"n".to_string(), &(n as u64 * 2)).unwrap();
                s.register_event_timer(n as i64, b"t").unwrap();
            }
            let snap = s.snapshot(1);
            // Writes after the barrier are not in the snapshot.
            s.set_current_key(&keys[0]).ok();
            v.set(&mut s, &-1).ok();
            blobs.push(snap.write().unwrap());
        }
        let mut total = 0;
        for i in 0..to {
            let mut s = store(KeyGroupRange::for_subtask(128, to, i));
            // Registered in another order than they were written: matched by name.
            let m: MapState<String, u64> = s.map_state("m", None).unwrap();
            let _l: ListState<String> = s.list_state("l", None).unwrap();
            let v: ValueState<i64> = s.value_state("v", None).unwrap();
            for b in &blobs {
                s.restore(b, "test").unwrap();
            }
            let timers = s.pop_event_timers(i64::MAX);
            total += timers.len();
            for t in &timers {
                assert!(s.key_groups().contains(t.key_group));
            }
            for (n, k) in keys.iter().enumerate() {
                if !s.key_groups().contains(key_group_of(k, 128)) {
                    continue;
                }
                s.set_current_key(k).unwrap();
                assert_eq!(v.get(&mut s).unwrap(), Some(n as i64));
                assert_eq!(m.get(&mut s, &"n".to_string()).unwrap(), Some(n as u64 * 2));
            }
        }
        assert_eq!(total, keys.len());
    }

    #[test]
    fn snapshots_restore_at_another_parallelism() {
        rescale(1, 3);
        rescale(3, 2);
        rescale(2, 1);
    }

    /// The entries of a store: (key, value) for every key of `keys`.
    fn contents(s: &mut KeyedStore, v: ValueState<i64>, keys: &[Vec<u8>]) -> Vec<(usize, i64)> {
        let mut out = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if !s.owns_key(k) {
                continue;
            }
            s.set_current_key(k).unwrap();
            if let Some(x) = v.get(s).unwrap() {
                out.push((i, x));
            }
        }
        out
    }

    #[test]
    fn deltas_hold_what_changed_since_the_latest_complete_checkpoint() {
        let keys: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut s = store(KeyGroupRange::all(128)).with_incremental_checkpoints(true);
        let v: ValueState<i64> = s.value_state("v", None).unwrap();
        let set = |s: &mut KeyedStore, range: std::ops::Range<usize>, x: i64| {
            for k in &keys[range] {
                s.set_current_key(k).unwrap();
                v.set(s, &x).unwrap();
            }
        };
        set(&mut s, 0..2000, 1);
        s.set_current_key(&keys[0]).unwrap();
        s.register_event_timer(5, b"").unwrap();
        // Nothing complete yet: the first snapshot is full.
        let first = s.snapshot(1);
        assert!(first.delta.is_none() && first.write_delta().unwrap().is_none());
        let base = first.write().unwrap();
        s.notify_checkpoint_complete(1);
        set(&mut s, 10..20, 2);
        for k in &keys[150..200] {
            s.set_current_key(k).unwrap();
            v.clear(&mut s).unwrap();
        }
        // Checkpoint 2 is taken but never completes: 3 builds on 1 and holds 2's changes.
        let _abandoned = s.snapshot(2);
        set(&mut s, 15..30, 3);
        s.set_current_key(&keys[0]).unwrap();
        s.delete_event_timer(5, b"");
        s.register_event_timer(9, b"").unwrap();
        let third = s.snapshot(3);
        assert_eq!(third.delta.as_ref().map(|d| d.parent), Some(1));
        let delta = third.write_delta().unwrap().unwrap();
        // 70 of 2,000 keys changed.
        assert!(
            delta.len() < base.len() / 4,
            "{} vs {}",
            delta.len(),
            base.len()
        );
        let want = contents(&mut s, v, &keys);
        // A later write does not reach the snapshot.
        set(&mut s, 0..1, 99);
        for (from, to) in [(1, 2), (2, 1)] {
            let mut blobs = Vec::new();
            for i in 0..from {
                let mut old = store(KeyGroupRange::for_subtask(128, from, i));
                old.value_state::<i64>("v", None).unwrap();
                old.restore(&base, "t").unwrap();
                old.restore(&delta, "t").unwrap();
                blobs.push(old.snapshot(4).write().unwrap());
            }
            let mut got = Vec::new();
            let mut timers = Vec::new();
            for i in 0..to {
                let mut r = store(KeyGroupRange::for_subtask(128, to, i));
                let rv: ValueState<i64> = r.value_state("v", None).unwrap();
                for b in &blobs {
                    r.restore(b, "t").unwrap();
                }
                got.extend(contents(&mut r, rv, &keys));
                timers.extend(r.pop_event_timers(i64::MAX).into_iter().map(|t| t.time_ms));
            }
            got.sort();
            assert_eq!(got, want, "{from} -> {to}");
            assert_eq!(timers, vec![9]);
        }
        // After 3 completes, the next delta builds on it and holds only what came after.
        s.notify_checkpoint_complete(3);
        let fourth = s.snapshot(4);
        assert_eq!(fourth.delta.as_ref().map(|d| d.parent), Some(3));
        let mut r = store(KeyGroupRange::all(128));
        let rv: ValueState<i64> = r.value_state("v", None).unwrap();
        for b in [&base, &delta, &fourth.write_delta().unwrap().unwrap()] {
            r.restore(b, "t").unwrap();
        }
        assert_eq!(contents(&mut r, rv, &keys), contents(&mut s, v, &keys));
    }

    /// Gives at most `step` bytes per read, as a file read a piece at a time might.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_snapshot_restores_from_a_stream_a_piece_at_a_time() {
        let keys: Vec<Vec<u8>> = (0..50_000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut s = store(KeyGroupRange::all(128));
        let v: ValueState<i64> = s.value_state("v", None).unwrap();
        let big: ValueState<String> = s.value_state("big", None).unwrap();
        for (i, k) in keys.iter().enumerate() {
            s.set_current_key(k).unwrap();
            v.set(&mut s, &(i as i64)).unwrap();
        }
        // One key group holds more than a piece (1 MiB): it is read whole before it is used.
        s.set_current_key(&keys[7]).unwrap();
        big.set(&mut s, &"x".repeat(3 << 20)).unwrap();
        s.register_event_timer(42, b"ns").unwrap();
        let blob = s.snapshot(1).write().unwrap();
        assert!(blob.len() > 4 << 20);
        for step in [1 << 16, 1 << 22] {
            let mut r = store(KeyGroupRange::for_subtask(128, 2, 1));
            let rv: ValueState<i64> = r.value_state("v", None).unwrap();
            let rbig: ValueState<String> = r.value_state("big", None).unwrap();
            let mut src = Trickle { data: &blob, step };
            r.restore_from(&mut src, "t").unwrap();
            let want: Vec<_> = contents(&mut s, v, &keys)
                .into_iter()
                .filter(|(i, _)| r.owns_key(&keys[*i]))
                .collect();
            assert_eq!(contents(&mut r, rv, &keys), want);
            if r.owns_key(&keys[7]) {
                r.set_current_key(&keys[7]).unwrap();
                assert_eq!(rbig.get(&mut r).unwrap().map(|b| b.len()), Some(3 << 20));
            }
            let timers = r.pop_event_timers(i64::MAX).len();
            assert_eq!(timers, usize::from(r.owns_key(&keys[7])));
        }
        // Cut short, or with bytes after its end: an error that says where.
        let mut r = store(KeyGroupRange::all(128));
        r.value_state::<i64>("v", None).unwrap();
        r.value_state::<String>("big", None).unwrap();
        let cut = &blob[..blob.len() - 3];
        let e = r
            .restore_from(
                &mut Trickle {
                    data: cut,
                    step: 4096,
                },
                "Op",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("Op") && e.contains("ends early"), "{e}");
        let mut longer = blob.clone();
        longer.extend_from_slice(b"junk");
        let e = r
            .restore_from(
                &mut Trickle {
                    data: &longer,
                    step: 4096,
                },
                "Op",
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("4 bytes after its end at byte {}", blob.len())),
            "{e}"
        );
    }

    #[test]
    fn a_snapshot_of_another_max_parallelism_or_state_is_refused() {
        let mut s = store(KeyGroupRange::all(128));
        s.value_state::<i64>("v", None).unwrap();
        let blob = s.snapshot(1).write().unwrap();
        let mut other = KeyedStore::in_memory(256, KeyGroupRange::all(256));
        other.value_state::<i64>("v", None).unwrap();
        let e = other.restore(&blob, "Op (1/1)").unwrap_err().to_string();
        assert!(
            e.contains("pipeline.max-parallelism") && e.contains("Op (1/1)"),
            "{e}"
        );
        let mut other = store(KeyGroupRange::all(128));
        other.value_state::<i64>("w", None).unwrap();
        let e = other.restore(&blob, "Op").unwrap_err().to_string();
        assert!(e.contains("'v'"), "{e}");
        assert!(store(KeyGroupRange::all(128))
            .restore(&blob[..10], "Op")
            .is_err());
    }

    #[test]
    fn first_entries_skips_expired_ones() {
        let now = Arc::new(AtomicI64::new(1_000));
        let clock = now.clone();
        let mut s = store(KeyGroupRange::all(128))
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let m = s
            .map_state::<u64, u64>("m", Some(Duration::from_millis(100)))
            .unwrap();
        s.set_current_key(b"k").unwrap();
        // Three entries written early, three later: the early ones expire first.
        for i in 0..3u64 {
            m.put(&mut s, &(i * 2), &i).unwrap();
        }
        now.store(1_050, Ordering::SeqCst);
        for i in 0..3u64 {
            m.put(&mut s, &(i * 2 + 1), &(10 + i)).unwrap();
        }
        assert_eq!(m.first_entries(&mut s, 2).unwrap().len(), 2);
        now.store(1_120, Ordering::SeqCst);
        let first: Vec<u64> = m
            .first_entries(&mut s, 2)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(first, vec![10, 11]);
        assert_eq!(m.first_entries(&mut s, 5).unwrap().len(), 3);
    }

    #[test]
    fn expired_state_is_never_read_and_is_cleaned_up() {
        let now = Arc::new(AtomicI64::new(1_000));
        let clock = now.clone();
        let mut s = store(KeyGroupRange::all(128))
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let v = s
            .value_state::<i64>("v", Some(Duration::from_millis(100)))
            .unwrap();
        let forever = s.value_state::<i64>("forever", None).unwrap();
        for i in 0..50i64 {
            s.set_current_key(&i.to_le_bytes()).unwrap();
            v.set(&mut s, &i).unwrap();
            forever.set(&mut s, &i).unwrap();
        }
        now.store(1_099, Ordering::SeqCst);
        s.set_current_key(&7i64.to_le_bytes()).unwrap();
        assert_eq!(v.get(&mut s).unwrap(), Some(7));
        // Written again: lives another 100 ms.
        v.set(&mut s, &70).unwrap();
        now.store(1_100, Ordering::SeqCst);
        let snap = s.snapshot(1).write().unwrap();
        s.set_current_key(&3i64.to_le_bytes()).unwrap();
        assert_eq!(v.get(&mut s).unwrap(), None);
        assert_eq!(forever.get(&mut s).unwrap(), Some(3));
        // Writes clean up what nobody reads.
        for _ in 0..40 {
            s.set_current_key(&7i64.to_le_bytes()).unwrap();
            v.set(&mut s, &70).unwrap();
        }
        assert_eq!(s.entries(), 51, "50 forever and key 7");
        assert!(s.expired_entries() >= 49);
        // The snapshot left out what had expired.
        let later = now.clone();
        let mut r = store(KeyGroupRange::all(128))
            .with_clock(Arc::new(move || later.load(Ordering::SeqCst)));
        let v2 = r
            .value_state::<i64>("v", Some(Duration::from_millis(100)))
            .unwrap();
        r.value_state::<i64>("forever", None).unwrap();
        r.restore(&snap, "test").unwrap();
        assert_eq!(r.entries(), 51);
        r.set_current_key(&7i64.to_le_bytes()).unwrap();
        assert_eq!(v2.get(&mut r).unwrap(), Some(70));
        now.store(1_199, Ordering::SeqCst);
        assert_eq!(v2.get(&mut r).unwrap(), None);
    }
}
