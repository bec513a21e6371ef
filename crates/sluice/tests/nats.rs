//! The `nats` connector against the machine's NATS server with JetStream (started if it is
//! not running), with NATS's Python client (nats-py, installed by test.sh): readings
//! published to a stream reach a job, which publishes its alerts to another stream; the job
//! keeps the stream sequence it read up to in its checkpoints, so a job killed and restored
//! goes on from there, reading nothing twice.

mod common;

use common::RunningJob;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ensure_nats() {
    if TcpStream::connect("127.0.0.1:4222").is_ok() {
        return;
    }
    let status = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
        ])
        .args([
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
        ])
        .args(["-l", "/var/log/nats-server.log"])
        .status()
        .expect("starting nats-server");
    assert!(status.success());
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:4222").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "NATS did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn client(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(common::python())
        .arg(common::client_script("nats_client.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn readings(from: u32, to: u32) -> String {
    (from..=to)
        .map(|i| format!("{{\"sensor\": \"s{i}\", \"temperature\": {}}}\n", 20 + i))
        .collect()
}

/// Streams named after `tag` in and out, readings 1 to 10 published to the first, and the
/// job that publishes the alerts among them: (input subject, output subject, output stream,
/// script).
fn alerts_pipeline(tag: &str) -> (String, String, String, String) {
    let id = std::process::id();
    let (s_in, s_out) = (
        format!("SLUICE_{tag}IN_{id}"),
        format!("SLUICE_{tag}OUT_{id}"),
    );
    let (subj_in, subj_out) = (
        format!("sluice.{id}.{tag}readings"),
        format!("sluice.{id}.{tag}alerts"),
    );
    client(&["stream", &s_in, &subj_in], "");
    client(&["stream", &s_out, &subj_out], "");
    client(&["publish", &subj_in], &readings(1, 10));
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
SET 'pipeline.name' = 'nats-{tag}{id}';
CREATE TABLE readings (sensor STRING, temperature DOUBLE, subject STRING METADATA) WITH (
  'connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'stream' = '{s_in}', 'format' = 'json');
CREATE TABLE alerts (sensor STRING, temperature DOUBLE) WITH (
  'connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'subject' = '{subj_out}', 'format' = 'json');
INSERT INTO alerts SELECT sensor, temperature FROM readings WHERE temperature > 25;
"
    );
    (subj_in, subj_out, s_out, sql)
}

/// The messages of `stream`, one a line, once it holds at least `n` (while `job` runs).
fn wait_for_messages(stream: &str, n: usize, job: &mut RunningJob) -> String {
    let started = Instant::now();
    loop {
        let out = client(&["read", stream], "");
        if out.lines().count() >= n {
            return out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && job.is_running(),
            "{out} {}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn jetstream_streams_in_and_out_resuming_from_the_checkpoint() {
    ensure_nats();
    let (subj_in, subj_out, s_out, sql) = alerts_pipeline("");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let mut job = RunningJob::start_with(&sql, dir.path(), &args);
    wait_for_messages(&s_out, 5, &mut job);
    // A checkpoint after the last reading, then kill -9.
    std::thread::sleep(Duration::from_millis(800));
    job.kill();
    // More readings while it is down; the restored job reads only those.
    client(&["publish", &subj_in], &readings(11, 12));
    let mut job = RunningJob::start_with(&sql, dir.path(), &args);
    let out = wait_for_messages(&s_out, 7, &mut job);
    std::thread::sleep(Duration::from_millis(500));
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
    let out_now = client(&["read", &s_out], "");
    assert_eq!(out_now, out, "nothing more after the last reading");
    let lines: Vec<&str> = out.lines().collect();
    let expected: Vec<String> = (6..=12)
        .map(|i| format!(r#"{{"sensor":"s{i}","temperature":{}.0}}"#, 20 + i))
        .collect();
    assert_eq!(lines, expected, "every alert once, in order");

    // More messages than the client keeps unacknowledged at once: a bounded job finishes (it
    // hung past 5000 when the sink waited for no acknowledgement before its checkpoint).
    let sql = format!(
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '12000', 'rows-per-second' = '100000000');
CREATE TABLE n (id BIGINT) WITH ('connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'subject' = '{subj_out}', 'format' = 'json');
INSERT INTO n SELECT * FROM g;"
    );
    let mut many = RunningJob::start(&sql, dir.path());
    assert!(many.wait(Duration::from_secs(60)), "{}", many.stderr());

    // A stream that is not there, a server that is not there: named.
    let (ok, _, err) = common::run_sql(
        "CREATE TABLE r (v STRING) WITH ('connector' = 'nats', 'url' = 'nats://127.0.0.1:4222', 'stream' = 'NO_SUCH_STREAM', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;",
        &[],
    );
    assert!(
        !ok && err.contains("JetStream stream 'NO_SUCH_STREAM'"),
        "{err}"
    );
    let (ok, _, err) = common::run_sql(
        "CREATE TABLE r (v STRING) WITH ('connector' = 'nats', 'url' = 'nats://127.0.0.1:1', 'stream' = 'X', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;",
        &[],
    );
    assert!(
        !ok && err.contains("cannot connect to NATS at 'nats://127.0.0.1:1'"),
        "{err}"
    );
}

/// The NATS server restarted under a running job: the job goes on (the client reconnects,
/// or the job restarts from its checkpoint), and every alert is in the output stream.
#[test]
fn a_job_survives_a_nats_restart() {
    ensure_nats();
    let (subj_in, _, s_out, sql) = alerts_pipeline("R");
    let dir = tempfile::tempdir().unwrap();
    let mut job = RunningJob::start(&sql, dir.path());
    wait_for_messages(&s_out, 5, &mut job);
    let status = Command::new("start-stop-daemon")
        .args(["--stop", "--retry", "10", "--exec", "/usr/sbin/nats-server"])
        .status()
        .expect("stopping nats-server");
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    ensure_nats();
    client(&["publish", &subj_in], &readings(11, 14));
    let out = wait_for_messages(&s_out, 9, &mut job);
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    got.dedup();
    let mut expected: Vec<String> = (6..=14)
        .map(|i| format!(r#"{{"sensor":"s{i}","temperature":{}.0}}"#, 20 + i))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}
