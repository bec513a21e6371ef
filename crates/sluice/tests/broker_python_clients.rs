//! The broker against confluent-kafka and kafka-python (installed by `test.sh`): admin,
//! keyed and compressed produce, a consumer group of two, commits, offsets by timestamp.
//! The checks themselves are in `tests/clients/python_clients.py`.

mod common;

use common::{client_script, free_port, python, BrokerProcess};
use std::process::Command;

#[test]
fn python_clients_pass_their_checks() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), free_port(), &[]);
    let out = Command::new(python())
        .arg(client_script("python_clients.py"))
        .arg(broker.bootstrap())
        .output()
        .unwrap();
    drop(broker);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_phase(bootstrap: &str, phase: &str) -> String {
    let out = Command::new(python())
        .arg(client_script("python_transactions.py"))
        .arg(bootstrap)
        .arg(phase)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "phase {phase}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Transactions with confluent-kafka and kcat: commit, abort, read_committed, the last stable
/// offset, fencing, offsets in a transaction, timeouts; then a transaction left open across a
/// broker restart.
#[test]
fn transactions_with_confluent_kafka_and_kcat() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = BrokerProcess::start(dir.path(), port, &[]);
    let stdout = run_phase(&broker.bootstrap(), "main");
    assert!(stdout.contains("all checks passed"), "{stdout}");
    let stdout = run_phase(&broker.bootstrap(), "open");
    assert!(stdout.contains("transaction left open"), "{stdout}");
    broker.kill();
    let broker = BrokerProcess::start(dir.path(), port, &[]);
    let stdout = run_phase(&broker.bootstrap(), "after-restart");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
