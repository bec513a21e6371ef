//! Group commit: `acks=all` produces ask for their partition to be fsynced; a flusher thread
//! takes every request waiting, syncs each partition once, and answers them all. Concurrent
//! producers thus share fsyncs.

use crate::topics::Partition;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use tokio::sync::oneshot;

type Request = (Arc<Partition>, oneshot::Sender<Result<(), String>>);

/// The handle to the flusher thread.
pub struct Flusher {
    tx: Sender<Request>,
}

impl Flusher {
    /// Starts the flusher thread.
    pub fn start() -> Flusher {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("sluice-flusher".into())
            .spawn(move || run(rx))
            .expect("starting the flusher thread");
        Flusher { tx }
    }

    /// Asks for everything appended to `partition` so far to be made durable; the answer
    /// comes on the returned channel. Ask for every partition first, then wait, so that
    /// one round of fsyncs serves them all.
    pub fn request(&self, partition: Arc<Partition>) -> oneshot::Receiver<Result<(), String>> {
        let (done, wait) = oneshot::channel();
        if let Err(std::sync::mpsc::SendError((_, done))) = self.tx.send((partition, done)) {
            let _ = done.send(Err("the flusher has stopped".into()));
        }
        wait
    }
}

fn run(rx: Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // One sync per distinct partition.
        let mut synced: Vec<(*const Partition, Result<(), String>)> = Vec::new();
        for (p, _) in &batch {
            let key = Arc::as_ptr(p);
            if synced.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let result = p.sync().map_err(|e| e.to_string());
            synced.push((key, result));
        }
        for (p, done) in batch {
            let key = Arc::as_ptr(&p);
            let result = synced
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, r)| r.clone())
                .unwrap_or(Ok(()));
            let _ = done.send(result);
        }
    }
}
