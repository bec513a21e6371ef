//! Crash test: the broker is killed with SIGKILL while a real client (confluent-kafka,
//! librdkafka) produces with `acks=all`. After each restart, every acknowledged message is
//! present, once, in order, and producing and consuming work again.

mod common;

use common::{client_script, free_port, python, BrokerProcess};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `consume_all.py` reads of `topic`: the values, in partition order.
fn stored_values(bootstrap: &str, topic: &str) -> Vec<i64> {
    let out = Command::new(python())
        .arg(client_script("consume_all.py"))
        .args([bootstrap, topic])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .collect()
}

fn sigkill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut acked: Vec<i64> = Vec::new();
    for round in 0..3i64 {
        let mut broker = BrokerProcess::start(dir.path(), port, &[]);
        let mut producer = Command::new(python())
            .arg(client_script("produce_acks_all.py"))
            .args([
                &bootstrap,
                "crash",
                &(round * 1_000_000).to_string(),
                "200000",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<i64>::new()));
        let sink = lines.clone();
        let stdout = producer.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("ACK ").and_then(|v| v.parse().ok()) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        // Let acknowledgements flow, then kill the broker at a moment that varies by run.
        let start = Instant::now();
        while lines.lock().unwrap().len() < 500 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no acknowledgements in round {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 300;
        std::thread::sleep(Duration::from_millis(jitter as u64));
        broker.kill();
        // The client retries against a dead broker; stop it before the broker returns, so
        // that only what was acknowledged before the crash is checked.
        std::thread::sleep(Duration::from_millis(300));
        sigkill(&mut producer);
        reader.join().unwrap();
        let got = lines.lock().unwrap().clone();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "acknowledged out of order in round {round}"
        );
        acked.extend(got);
    }
    let mut broker = BrokerProcess::start(dir.path(), port, &[]);
    let stored = stored_values(&bootstrap, "crash");
    // Stored: each value once, in the order produced.
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "stored out of order or twice"
    );
    let stored_set: std::collections::HashSet<i64> = stored.iter().copied().collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|v| !stored_set.contains(v))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    eprintln!(
        "{} acknowledged, {} stored, 3 kills",
        acked.len(),
        stored.len()
    );

    // Produce and consume work again.
    let status = Command::new(python())
        .arg(client_script("produce_acks_all.py"))
        .args([&bootstrap, "after-crash", "0", "10"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(stored_values(&bootstrap, "after-crash").len(), 10);
    broker.kill();
}

#[test]
fn idempotent_producer_across_a_broker_crash_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let total = 60_000i64;
    let mut broker = BrokerProcess::start(dir.path(), port, &[]);
    let mut producer = Command::new(python())
        .arg(client_script("produce_acks_all.py"))
        .args([&bootstrap, "idem", "0", &total.to_string(), "idempotent"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(0usize));
    let sink = acked.clone();
    let stdout = producer.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ACK ") {
                *sink.lock().unwrap() += 1;
            }
        }
    });
    let start = Instant::now();
    while *acked.lock().unwrap() < 2_000 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no acknowledgements"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Kill the broker under the running producer, and bring it back: the producer retries
    // what was in flight, and the broker must recognise what it already stored.
    broker.kill();
    std::thread::sleep(Duration::from_millis(500));
    let mut broker = BrokerProcess::start(dir.path(), port, &[]);
    let status = producer.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success());
    assert_eq!(
        *acked.lock().unwrap(),
        total as usize,
        "every message acknowledged"
    );
    let stored = stored_values(&bootstrap, "idem");
    assert_eq!(stored.len() as i64, total, "stored once each");
    assert_eq!(stored, (0..total).collect::<Vec<_>>(), "in order");
    broker.kill();
}
