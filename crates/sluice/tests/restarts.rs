//! Restart strategies (`restart-strategy.*`, as Flink's): a job with checkpoints that fails
//! starts again from its latest checkpoint while its strategy allows. A job that survives a
//! broker's restart this way is tested with the broker (`rabbitmq.rs`, `nats.rs`).

use std::process::Command;

const RANDOM: &str =
    "CREATE TABLE g (id BIGINT, v INT) WITH ('connector' = 'datagen', 'number-of-rows' = '200');\n";

/// A job with checkpoints that fails restarts from its latest checkpoint as its restart
/// strategy allows, then fails for good (here a webhook nobody listens to).
#[test]
fn a_failing_job_restarts_as_its_strategy_allows_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '100 ms';
SET 'restart-strategy.type' = 'fixed-delay';
SET 'restart-strategy.fixed-delay.attempts' = '2';
SET 'restart-strategy.fixed-delay.delay' = '50 ms';
{RANDOM}CREATE TABLE hook (id BIGINT, v INT) WITH ('connector' = 'webhook', 'url' = 'http://127.0.0.1:{port}/', 'sink.max-retries' = '0');
INSERT INTO hook SELECT * FROM g;
"
    );
    let script = dir.path().join("job.sql");
    std::fs::write(&script, sql).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&script)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("restarting in 0.1 s"), "{err}");
    assert!(
        err.contains("(restart 2, restart-strategy 'fixed-delay')"),
        "{err}"
    );
    assert!(!err.contains("restart 3"), "{err}");
    assert!(err.contains("error: job 'job' failed"), "{err}");
}
