//! The input gate of an operator task: one bounded channel per upstream subtask, read
//! together, with the watermark taken as the minimum over the active channels and checkpoint
//! barriers aligned.
//!
//! Alignment follows Flink's aligned checkpoints: once the barrier of checkpoint `n` has come
//! on a channel, the gate stops reading that channel until the barrier has come on every
//! channel. Nothing is buffered meanwhile: the blocked channel fills up and its sender waits,
//! so alignment costs neither unbounded memory nor backpressure. A newer barrier on any
//! channel gives up the alignment in progress (that checkpoint was abandoned).
//!
//! Idle channels (a source marked idle by `table.exec.source.idle-timeout`) and ended ones
//! do not hold the watermark back; when every channel is idle, the gate advances to the
//! largest watermark any channel reached and reports the task idle, as Flink does.

use crossbeam_channel::{Receiver, Select, TryRecvError};
use sluice_common::{ChangeBatch, CheckpointId, EventTime, Message, MAX_WATERMARK, MIN_WATERMARK};
use std::collections::VecDeque;
use std::time::Duration;

/// What the gate hands to the task.
#[derive(Debug)]
pub(crate) enum GateEvent {
    /// A batch on logical input `input`.
    Data { input: usize, batch: ChangeBatch },
    /// The task's watermark advanced.
    Watermark(EventTime),
    /// Every input is idle.
    Idle,
    /// The barrier of this checkpoint has come on every open channel.
    Barrier(CheckpointId),
    /// Every channel has ended its stream.
    Ended,
    /// An upstream subtask went away without ending its stream (cancelled or failed).
    Disconnected,
    /// Nothing arrived within the timeout.
    Timeout,
}

/// One channel's state.
struct Channel {
    rx: Receiver<Message>,
    /// The logical input (the index of the edge) it belongs to.
    input: usize,
    watermark: EventTime,
    ended: bool,
    idle: bool,
    /// Its barrier of the checkpoint being aligned has come: not read until alignment ends.
    blocked: bool,
}

/// Reads an operator task's input channels.
pub(crate) struct InputGate {
    channels: Vec<Channel>,
    current: EventTime,
    open: usize,
    aligning: Option<CheckpointId>,
    /// The latest checkpoint aligned (or older): its barriers are late and ignored.
    last_barrier: CheckpointId,
    /// Events already decided, handed out before reading more.
    ready: VecDeque<GateEvent>,
    /// Where the next read starts, so that no channel starves the others.
    next: usize,
}

impl InputGate {
    /// A gate over `channels`: each with the logical input it belongs to. Barriers of
    /// checkpoints up to `last_barrier` are ignored.
    pub fn new(channels: Vec<(Receiver<Message>, usize)>, last_barrier: CheckpointId) -> Self {
        let open = channels.len();
        InputGate {
            channels: channels
                .into_iter()
                .map(|(rx, input)| Channel {
                    rx,
                    input,
                    watermark: MIN_WATERMARK,
                    ended: false,
                    idle: false,
                    blocked: false,
                })
                .collect(),
            current: MIN_WATERMARK,
            open,
            aligning: None,
            last_barrier,
            ready: VecDeque::new(),
            next: 0,
        }
    }

    /// How full its channels are: the messages they buffer over what they can (0 to 1;
    /// Flink's `inPoolUsage`).
    pub fn fill(&self) -> f64 {
        let capacity: usize = self.channels.iter().filter_map(|c| c.rx.capacity()).sum();
        let queued: usize = self.channels.iter().map(|c| c.rx.len()).sum();
        if capacity == 0 {
            0.0
        } else {
            queued as f64 / capacity as f64
        }
    }

    /// The next event, waiting at most `timeout` for a message.
    pub fn next(&mut self, timeout: Duration) -> GateEvent {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return e;
            }
            if self.open == 0 {
                return GateEvent::Ended;
            }
            match self.receive(timeout) {
                Ok(Some((c, msg))) => self.handle(c, msg),
                Ok(None) => return GateEvent::Timeout,
                Err(()) => return GateEvent::Disconnected,
            }
        }
    }

    /// A message from a readable channel: first without waiting, round robin, then waiting
    /// on all of them. `Err` if a channel's sender is gone without ending its stream.
    fn receive(&mut self, timeout: Duration) -> Result<Option<(usize, Message)>, ()> {
        let n = self.channels.len();
        for step in 0..n {
            let c = (self.next + step) % n;
            let ch = &self.channels[c];
            if ch.ended || ch.blocked {
                continue;
            }
            match ch.rx.try_recv() {
                Ok(m) => {
                    self.next = (c + 1) % n;
                    return Ok(Some((c, m)));
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(()),
            }
        }
        let mut select = Select::new();
        let mut index = Vec::new();
        for (c, ch) in self.channels.iter().enumerate() {
            if !ch.ended && !ch.blocked {
                select.recv(&ch.rx);
                index.push(c);
            }
        }
        if index.is_empty() {
            // Every open channel is blocked: impossible, alignment completes when the last
            // open channel's barrier comes.
            debug_assert!(false, "every open channel is blocked");
            return Ok(None);
        }
        match select.select_timeout(timeout) {
            Ok(op) => {
                let c = index[op.index()];
                match op.recv(&self.channels[c].rx) {
                    Ok(m) => Ok(Some((c, m))),
                    Err(_) => Err(()),
                }
            }
            Err(_) => Ok(None),
        }
    }

    /// The minimum watermark over active channels, if any is active.
    fn min_active(&self) -> Option<EventTime> {
        self.channels
            .iter()
            .filter(|c| !c.ended && !c.idle)
            .map(|c| c.watermark)
            .min()
    }

    fn advance(&mut self, to: Option<EventTime>) {
        if let Some(w) = to.filter(|w| *w > self.current) {
            self.current = w;
            self.ready.push_back(GateEvent::Watermark(w));
        }
    }

    fn handle(&mut self, c: usize, msg: Message) {
        match msg {
            Message::Data(batch) => {
                self.channels[c].idle = false;
                let input = self.channels[c].input;
                self.ready.push_back(GateEvent::Data { input, batch });
            }
            Message::Watermark(w) => {
                let ch = &mut self.channels[c];
                ch.idle = false;
                ch.watermark = ch.watermark.max(w);
                self.advance(self.min_active());
            }
            Message::Idle => {
                self.channels[c].idle = true;
                if self.channels.iter().all(|c| c.ended || c.idle) {
                    let max = self
                        .channels
                        .iter()
                        .filter(|c| !c.ended)
                        .map(|c| c.watermark)
                        .max();
                    self.advance(max);
                    self.ready.push_back(GateEvent::Idle);
                } else {
                    self.advance(self.min_active());
                }
            }
            Message::Barrier(id) => {
                if id <= self.last_barrier || self.aligning.is_some_and(|a| id < a) {
                    return;
                }
                if self.aligning.is_some_and(|a| id > a) {
                    // A newer checkpoint overtook the one being aligned: give that one up.
                    self.unblock();
                }
                self.aligning = Some(id);
                self.channels[c].blocked = true;
                self.check_aligned();
            }
            Message::Split(..) => {}
            Message::EndOfStream => {
                if !self.channels[c].ended {
                    self.channels[c].ended = true;
                    self.channels[c].blocked = false;
                    self.open -= 1;
                    // Every channel ended: event time is complete, as if each had sent the
                    // maximum watermark (an upstream restored from a checkpoint taken after it
                    // had sent that does not send it again).
                    let to = if self.open == 0 {
                        Some(MAX_WATERMARK)
                    } else {
                        self.min_active()
                    };
                    self.advance(to);
                    self.check_aligned();
                }
            }
        }
    }

    fn check_aligned(&mut self) {
        let Some(id) = self.aligning else { return };
        if self.channels.iter().all(|c| c.blocked || c.ended) {
            self.aligning = None;
            self.last_barrier = id;
            self.unblock();
            self.ready.push_back(GateEvent::Barrier(id));
        }
    }

    fn unblock(&mut self) {
        for c in &mut self.channels {
            c.blocked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use crossbeam_channel::{bounded, Sender};
    use std::sync::Arc;

    fn batch(v: i64) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
        Message::Data(ChangeBatch::inserts(b))
    }

    fn value(e: &GateEvent) -> Option<i64> {
        match e {
            GateEvent::Data { batch, .. } => Some(
                batch
                    .data
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .value(0),
            ),
            _ => None,
        }
    }

    fn gate(n: usize, capacity: usize) -> (InputGate, Vec<Sender<Message>>) {
        let mut senders = Vec::new();
        let mut channels = Vec::new();
        for i in 0..n {
            let (tx, rx) = bounded(capacity);
            senders.push(tx);
            channels.push((rx, i));
        }
        (InputGate::new(channels, 0), senders)
    }

    const T: Duration = Duration::from_millis(10);

    #[test]
    fn the_fill_is_what_the_channels_buffer_over_their_capacity() {
        let (mut g, tx) = gate(2, 4);
        assert_eq!(g.fill(), 0.0);
        for _ in 0..4 {
            tx[0].send(Message::Watermark(1)).unwrap();
        }
        tx[1].send(Message::Watermark(1)).unwrap();
        tx[1].send(Message::Watermark(2)).unwrap();
        assert_eq!(g.fill(), 6.0 / 8.0);
        // Reading takes messages out (as many as make the next event).
        g.next(T);
        assert!(g.fill() < 6.0 / 8.0);
    }

    #[test]
    fn the_watermark_is_the_minimum_over_active_channels() {
        let (mut g, tx) = gate(2, 8);
        tx[0].send(Message::Watermark(10)).unwrap();
        assert!(matches!(g.next(T), GateEvent::Timeout));
        tx[1].send(Message::Watermark(5)).unwrap();
        assert!(matches!(g.next(T), GateEvent::Watermark(5)));
        tx[1].send(Message::Idle).unwrap();
        assert!(matches!(g.next(T), GateEvent::Watermark(10)));
        tx[0].send(Message::Idle).unwrap();
        assert!(matches!(g.next(T), GateEvent::Idle));
        tx[1].send(Message::Watermark(20)).unwrap();
        tx[1].send(Message::EndOfStream).unwrap();
        assert!(matches!(g.next(T), GateEvent::Watermark(20)));
        tx[0].send(Message::EndOfStream).unwrap();
        assert!(matches!(g.next(T), GateEvent::Watermark(MAX_WATERMARK)));
        assert!(matches!(g.next(T), GateEvent::Ended));
    }

    /// After a restore, an upstream that had sent the maximum watermark before the checkpoint
    /// does not send it again: its channel holds the watermark back until it ends, and when
    /// the last channel ends, event time is complete all the same.
    #[test]
    fn the_end_of_every_channel_completes_event_time() {
        let (mut g, tx) = gate(2, 8);
        tx[1].send(Message::Watermark(MAX_WATERMARK)).unwrap();
        assert!(matches!(g.next(T), GateEvent::Timeout));
        tx[1].send(Message::EndOfStream).unwrap();
        assert!(matches!(g.next(T), GateEvent::Timeout));
        tx[0].send(Message::EndOfStream).unwrap();
        assert!(matches!(g.next(T), GateEvent::Watermark(MAX_WATERMARK)));
        assert!(matches!(g.next(T), GateEvent::Ended));
    }

    #[test]
    fn alignment_holds_a_channel_back_without_buffering_it() {
        let (mut g, tx) = gate(2, 2);
        tx[0].send(batch(1)).unwrap();
        tx[0].send(Message::Barrier(1)).unwrap();
        assert_eq!(value(&g.next(T)), Some(1));
        // After its barrier, channel 0 is not read: its sender fills the channel and then
        // cannot send more (backpressure), while channel 1 still flows.
        assert!(matches!(g.next(T), GateEvent::Timeout));
        tx[0].send(batch(2)).unwrap();
        tx[0].send(batch(3)).unwrap();
        assert!(
            tx[0].try_send(batch(4)).is_err(),
            "the blocked channel is full"
        );
        tx[1].send(batch(10)).unwrap();
        assert_eq!(value(&g.next(T)), Some(10));
        tx[1].send(Message::Barrier(1)).unwrap();
        assert!(matches!(g.next(T), GateEvent::Barrier(1)));
        assert_eq!(value(&g.next(T)), Some(2));
        assert_eq!(value(&g.next(T)), Some(3));
        // A late barrier of a checkpoint already taken is ignored.
        tx[0].send(Message::Barrier(1)).unwrap();
        tx[0].send(batch(5)).unwrap();
        assert_eq!(value(&g.next(T)), Some(5));
    }

    #[test]
    fn a_newer_barrier_gives_up_the_alignment_and_an_ended_channel_does_not_block_it() {
        let (mut g, tx) = gate(3, 4);
        tx[0].send(Message::Barrier(1)).unwrap();
        tx[1].send(Message::Barrier(2)).unwrap();
        assert!(matches!(g.next(T), GateEvent::Timeout));
        tx[0].send(Message::Barrier(2)).unwrap();
        tx[2].send(Message::EndOfStream).unwrap();
        assert!(matches!(g.next(T), GateEvent::Barrier(2)));
    }

    #[test]
    fn a_sender_gone_without_ending_is_reported() {
        let (mut g, mut tx) = gate(2, 4);
        tx.pop();
        assert!(matches!(g.next(T), GateEvent::Disconnected));
    }
}
