//! The `rabbitmq` connector against the machine's RabbitMQ (started if it is not running),
//! with RabbitMQ's Python client (pika, installed by test.sh): messages published to a queue
//! reach a job, which publishes its results to another queue; what the job read is
//! acknowledged only when a checkpoint completes, so a job killed before one reads it all
//! again (at least once).

mod common;

use common::RunningJob;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn ensure_rabbitmq() {
    if TcpStream::connect("127.0.0.1:5672").is_ok() {
        return;
    }
    let status = Command::new("rabbitmq-server")
        .arg("-detached")
        .status()
        .expect("starting rabbitmq-server");
    assert!(status.success());
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:5672").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "RabbitMQ did not start"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs the pika client with `args`, `stdin`; its output.
fn client(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(common::python())
        .arg(common::client_script("rabbitmq_client.py"))
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

/// Messages in `queue`, ready or delivered and not acknowledged (rabbitmqctl).
fn messages_in(queue: &str) -> u64 {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name", "messages"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(queue)).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

fn wait_until(what: &str, f: impl Fn() -> bool, job: &RunningJob) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn job(queue_in: &str, queue_out: &str, interval: &str) -> String {
    format!(
        "SET 'execution.checkpointing.interval' = '{interval}';
CREATE TABLE orders (id INT, amount DOUBLE) WITH (
  'connector' = 'rabbitmq', 'url' = '{URL}', 'queue' = '{queue_in}', 'format' = 'json');
CREATE TABLE big (id INT, amount DOUBLE) WITH (
  'connector' = 'rabbitmq', 'url' = '{URL}', 'queue' = '{queue_out}', 'queue.declare' = 'true',
  'format' = 'json');
INSERT INTO big SELECT * FROM orders WHERE amount > 50;
"
    )
}

#[test]
fn messages_flow_through_rabbitmq_and_are_acknowledged_with_checkpoints() {
    ensure_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let q_in = format!("sluice-test-in-{}", std::process::id());
    let q_out = format!("sluice-test-out-{}", std::process::id());
    client(&["purge", &q_in], "");
    client(&["purge", &q_out], "");
    let orders: String = (1..=10)
        .map(|i| format!("{{\"id\": {i}, \"amount\": {}}}\n", i * 10))
        .collect();
    client(&["publish", &q_in], &orders);

    // Checkpoints that never complete (an hour): nothing is acknowledged, and a kill -9
    // leaves every message in the queue.
    let mut first = RunningJob::start(&job(&q_in, &q_out, "1 h"), dir.path());
    wait_until(
        "the first run's results",
        || messages_in(&q_out) == 5,
        &first,
    );
    first.kill();
    wait_until(
        "the messages back in the queue",
        || messages_in(&q_in) == 10,
        &first,
    );

    // Again, with checkpoints: it reads them all again, and once a checkpoint completes the
    // queue is empty.
    let mut second = RunningJob::start(&job(&q_in, &q_out, "200 ms"), dir.path());
    wait_until(
        "the second run's results",
        || messages_in(&q_out) == 10,
        &second,
    );
    wait_until("the acknowledgements", || messages_in(&q_in) == 0, &second);
    second.interrupt();
    assert!(second.wait(Duration::from_secs(30)), "{}", second.stderr());
    // Each result twice: once from each run (at least once).
    let out = client(&["drain", &q_out, "100", "3"], "");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let expected: Vec<String> = (6..=10)
        .map(|i| format!(r#"{{"id":{i},"amount":{}.0}}"#, i * 10))
        .collect();
    let mut twice: Vec<&str> = expected
        .iter()
        .flat_map(|e| [e.as_str(), e.as_str()])
        .collect();
    twice.sort();
    assert_eq!(got, twice);

    // A queue that is not there is named.
    let (ok, _, err) = common::run_sql(
        &format!(
            "CREATE TABLE q (v STRING) WITH ('connector' = 'rabbitmq', 'url' = '{URL}', 'queue' = 'no-such-queue-{}', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM q;",
            std::process::id()
        ),
        &[],
    );
    assert!(!ok && err.contains("queue.declare"), "{err}");
    let (ok, _, err) = common::run_sql(
        "CREATE TABLE q (v STRING) WITH ('connector' = 'rabbitmq', 'url' = 'amqp://guest:pw@127.0.0.1:1/%2f', 'queue' = 'x', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM q;",
        &[],
    );
    assert!(
        !ok && err.contains("cannot connect to RabbitMQ at 'amqp://guest:***@127.0.0.1:1/%2f'"),
        "{err}"
    );
}

/// RabbitMQ restarted under a running job: the job fails with the lost connection and, with
/// checkpoints, restarts from its latest one (Flink's default `exponential-delay` restart
/// strategy) once RabbitMQ is back; every message is read and its result published (at least
/// once).
#[test]
fn a_job_survives_a_rabbitmq_restart() {
    ensure_rabbitmq();
    let dir = tempfile::tempdir().unwrap();
    let q_in = format!("sluice-test-restart-in-{}", std::process::id());
    let q_out = format!("sluice-test-restart-out-{}", std::process::id());
    client(&["purge", &q_in], "");
    client(&["purge", &q_out], "");
    let orders = |ids: std::ops::RangeInclusive<i32>| -> String {
        ids.map(|i| format!("{{\"id\": {i}, \"amount\": {}}}\n", i * 10))
            .collect()
    };
    client(&["publish", &q_in], &orders(1..=10));
    let mut job = RunningJob::start(&job(&q_in, &q_out, "200 ms"), dir.path());
    wait_until("the results", || messages_in(&q_out) == 5, &job);
    wait_until("the acknowledgements", || messages_in(&q_in) == 0, &job);

    let rabbitmqctl = |action: &str| {
        let status = Command::new("rabbitmqctl")
            .args(["-q", action])
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl {action}");
    };
    rabbitmqctl("stop_app");
    rabbitmqctl("start_app");
    ensure_rabbitmq();
    client(&["publish", &q_in], &orders(11..=20));
    wait_until(
        "the results after the restart",
        || messages_in(&q_out) >= 15,
        &job,
    );
    assert!(job.is_running(), "{}", job.stderr());
    assert!(job.stderr().contains("restarting in"), "{}", job.stderr());
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
    let out = client(&["drain", &q_out, "100", "3"], "");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    got.dedup();
    let mut expected: Vec<String> = (6..=20)
        .map(|i| format!(r#"{{"id":{i},"amount":{}.0}}"#, i * 10))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}
