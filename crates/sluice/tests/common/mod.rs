//! What the end-to-end broker tests share: a `sluice broker` process on a free port, and the
//! Python Kafka clients that `test.sh` installs.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `sluice broker`, killed when dropped.
pub struct BrokerProcess {
    child: Child,
    pub port: u16,
}

impl BrokerProcess {
    /// Starts a broker on `port` with its data in `dir` (and `extra` flags), and waits until it
    /// accepts connections.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> BrokerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "broker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sluice broker");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the broker did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BrokerProcess { child, port }
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python of the virtual environment with confluent-kafka and kafka-python.
pub fn python() -> PathBuf {
    let venv = std::env::var("SLUICE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/sluice-venv")
        });
    let p = venv.join("bin/python");
    assert!(
        p.exists(),
        "{} missing: ./test.sh installs the Python Kafka clients",
        p.display()
    );
    p
}

/// This crate's directory, read when the test runs (cargo and nextest set it), so that a test
/// binary built in another checkout sharing the target directory still finds the files.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A script of `tests/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    manifest_dir().join("../../tests/clients").join(name)
}
