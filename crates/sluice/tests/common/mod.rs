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

/// The corpus's input files.
pub fn data_dir() -> PathBuf {
    manifest_dir().join("../../tests/conformance/data")
}

/// Runs `sluice run` on `sql` to the end; returns (success, stdout, stderr).
pub fn run_sql(sql: &str, args: &[&str]) -> (bool, String, String) {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), sql).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet"])
        .args(args)
        .arg(script.path())
        .output()
        .expect("running sluice");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `program` with `args` and `stdin` to the end.
fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program} (test.sh installs the clients): {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A `sluice` command (`topics`, `produce`, ...) with `stdin`; returns (success, stdout, stderr).
pub fn sluice(args: &[&str], stdin: &str) -> (bool, String, String) {
    let out = run_with_stdin(env!("CARGO_BIN_EXE_sluice"), args, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A running `sluice run` whose output lines are collected as they come; killed when dropped.
pub struct RunningJob {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    _script: tempfile::NamedTempFile,
    stderr_path: PathBuf,
}

impl RunningJob {
    pub fn start(sql: &str, dir: &Path) -> RunningJob {
        Self::start_with(sql, dir, &[])
    }

    /// Starts `sluice run --quiet ARGS SCRIPT`.
    pub fn start_with(sql: &str, dir: &Path, args: &[&str]) -> RunningJob {
        use std::io::BufRead;
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), sql).unwrap();
        let stderr_path = dir.join(format!("job-{}.stderr", free_port()));
        // The job's checkpoints go under `dir` unless the test says where.
        let data_dir = dir.join("sluice-data");
        let data_dir_args = if args.contains(&"--data-dir") {
            vec![]
        } else {
            vec!["--data-dir".as_ref(), data_dir.as_os_str()]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--quiet"])
            .args(data_dir_args)
            .args(args)
            .arg(script.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("running sluice");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningJob {
            child,
            lines: rx,
            seen: Vec::new(),
            _script: script,
            stderr_path,
        }
    }

    /// Waits up to `timeout` for a printed line that satisfies `f`.
    pub fn wait_for(&mut self, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        if self.seen.iter().any(|l| f(l)) {
            return true;
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = f(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// What the job wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill -INT");
        assert!(status.success());
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to end by itself; true if it succeeded.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs kcat with `args` and `stdin`; panics if it fails.
pub fn kcat(args: &[&str], stdin: &str) -> String {
    let out = run_with_stdin("kcat", args, stdin);
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `sql` with psql on the machine's PostgreSQL (database `test`); `None` if it fails.
pub fn psql_try(sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `sql` with psql; panics if it fails.
pub fn psql(sql: &str) -> String {
    psql_try(sql).unwrap_or_else(|| panic!("psql failed: {sql}"))
}

/// Starts the machine's PostgreSQL if it is not running, and waits until it takes queries.
pub fn ensure_postgres() {
    if TcpStream::connect("127.0.0.1:5432").is_err() {
        pg_cluster("start");
    }
    wait_for_postgres();
}

/// Runs `pg_ctlcluster ... ACTION` on the machine's cluster and waits for it to take queries.
pub fn pg_cluster(action: &str) {
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main {action}"),
        ])
        .status()
        .expect("running pg_ctlcluster");
    assert!(status.success(), "pg_ctlcluster {action} failed");
    wait_for_postgres();
}

fn wait_for_postgres() {
    let started = Instant::now();
    while psql_try("SELECT 1").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "PostgreSQL is not accepting connections"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
