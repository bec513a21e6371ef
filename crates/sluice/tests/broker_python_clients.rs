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
