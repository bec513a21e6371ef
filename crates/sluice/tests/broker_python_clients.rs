//! The broker against confluent-kafka and kafka-python (installed by `test.sh`): admin,
//! keyed and compressed produce, a consumer group of two, commits, offsets by timestamp.
//! The checks themselves are in `tests/clients/python_clients.py`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn python_clients_pass_their_checks() {
    let venv = std::env::var("SLUICE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sluice-venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: ./test.sh installs the Python Kafka clients",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "broker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/python_clients.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
