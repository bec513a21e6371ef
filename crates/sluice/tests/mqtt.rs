//! The `mqtt` connector against the Mosquitto broker on this machine (started if it is not
//! running), with Mosquitto's own clients: sensor readings published with `mosquitto_pub`
//! (MQTT 3.1.1) reach a job through a wildcard subscription, with their topic, a malformed one
//! skipped; the job's alerts, published over MQTT 5 to a topic made from a column, reach
//! `mosquitto_sub`. Bad input is named: a broker that is not there, a malformed message. A
//! restart of Mosquitto under a running job: it connects again and reads on. One test
//! function, as the restart would disturb the others.

mod common;

use common::RunningJob;
use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const URL: &str = "tcp://127.0.0.1:1883";

fn ensure_mosquitto() {
    if TcpStream::connect("127.0.0.1:1883").is_ok() {
        return;
    }
    let status = Command::new("mosquitto")
        .args(["-d", "-c", "/etc/mosquitto/mosquitto.conf"])
        .status()
        .expect("starting mosquitto");
    assert!(status.success());
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:1883").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn publish(topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (from Debian's mosquitto-clients)");
    assert!(out.status.success(), "{out:?}");
}

/// Publishes `payload` to `topic` until the job prints a line holding `marker` (its
/// subscription is then in place).
fn publish_until_seen(job: &mut RunningJob, topic: &str, payload: &str, marker: &str) {
    let started = Instant::now();
    loop {
        publish(topic, payload);
        if job.wait_for(Duration::from_millis(300), |l| l.contains(marker)) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job never printed {marker}: {}",
            job.stderr()
        );
    }
}

#[test]
fn mqtt_against_mosquitto() {
    ensure_mosquitto();
    sensors_on_mqtt_become_rows_and_alerts_go_back_over_mqtt_5();
    a_missing_broker_and_a_malformed_message_are_named();
    a_job_reads_on_after_the_broker_restarts();
    many_messages_are_published_without_stalling();
}

/// More QoS 1 messages than the client's queues hold: the broker's acknowledgements are
/// counted by the connection thread, so a sink blocked on a full request queue does not stall
/// it (it did: the acknowledgements went through a bounded channel the sink was not reading).
fn many_messages_are_published_without_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("sluice-test-{}/many", std::process::id());
    let sql = format!(
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '30000');
CREATE TABLE m (id BIGINT) WITH ('connector' = 'mqtt', 'url' = '{URL}', 'topic' = '{topic}', 'format' = 'json');
INSERT INTO m SELECT * FROM g;"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    assert!(
        job.wait(Duration::from_secs(60)),
        "the job did not finish: {}",
        job.stderr()
    );
}

fn restart_mosquitto() {
    let _ = Command::new("pkill").args(["-x", "mosquitto"]).status();
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:1883").is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure_mosquitto();
}

fn a_job_reads_on_after_the_broker_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("sluice-test-{}/restart", std::process::id());
    let sql = format!(
        "CREATE TABLE r (n INT) WITH ('connector' = 'mqtt', 'url' = '{URL}', 'topic' = '{topic}', 'format' = 'json');
CREATE TABLE p (n INT) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    publish_until_seen(&mut job, &topic, r#"{"n": 1}"#, "+I[1]");
    restart_mosquitto();
    // It subscribes again when it has reconnected (what was published meanwhile is the
    // broker's: a clean session keeps nothing).
    publish_until_seen(&mut job, &topic, r#"{"n": 2}"#, "+I[2]");
    assert!(job.is_running(), "{}", job.stderr());
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
}

fn sensors_on_mqtt_become_rows_and_alerts_go_back_over_mqtt_5() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("sluice-test-{}", std::process::id());
    // The alerts' reader, over MQTT 5: it exits after two messages.
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-v",
            "-C",
            "2",
        ])
        .args(["-W", "60", "-t", &format!("{prefix}/alerts/#")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let sql = format!(
        "CREATE TABLE readings (sensor STRING, temperature DOUBLE, topic STRING METADATA) WITH (
  'connector' = 'mqtt', 'url' = '{URL}', 'topic' = '{prefix}/sensors/+/temperature',
  'format' = 'json', 'json.ignore-parse-errors' = 'true');
CREATE TABLE alerts (sensor STRING, temperature DOUBLE) WITH (
  'connector' = 'mqtt', 'url' = '{URL}', 'topic' = '{prefix}/alerts/{{sensor}}',
  'protocol.version' = '5', 'format' = 'json');
CREATE TABLE seen (sensor STRING, temperature DOUBLE, topic STRING) WITH ('connector' = 'print');
INSERT INTO seen SELECT * FROM readings;
INSERT INTO alerts SELECT sensor, temperature FROM readings WHERE temperature > 30;
"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    let sensor = |s: &str| format!("{prefix}/sensors/{s}/temperature");
    publish_until_seen(
        &mut job,
        &sensor("s0"),
        r#"{"sensor": "s0", "temperature": 10}"#,
        "s0",
    );
    publish(&sensor("s1"), r#"{"sensor": "s1", "temperature": 25.0}"#);
    publish(&sensor("s2"), "not json at all");
    publish(&sensor("s2"), r#"{"sensor": "s2", "temperature": 35.5}"#);
    // Pretty-printed: one message is one row, whatever its line breaks.
    publish(
        &sensor("s3"),
        "{\n  \"sensor\": \"s3\",\n  \"temperature\": 40.0\n}",
    );
    // Not under the filter.
    publish(
        &format!("{prefix}/sensors/s4/humidity"),
        r#"{"sensor": "s4", "temperature": 99}"#,
    );
    assert!(
        job.wait_for(Duration::from_secs(30), |l| l.contains("s3")),
        "{:?} {}",
        job.seen,
        job.stderr()
    );
    let expected = [
        format!("+I[s1, 25.0, {}]", sensor("s1")),
        format!("+I[s2, 35.5, {}]", sensor("s2")),
        format!("+I[s3, 40.0, {}]", sensor("s3")),
    ];
    for e in &expected {
        assert!(job.seen.contains(e), "{e} not in {:?}", job.seen);
    }
    assert!(
        !job.seen
            .iter()
            .any(|l| l.contains("s4") || l.contains("not json")),
        "{:?}",
        job.seen
    );
    // The alerts, one message each, on topics made from the sensor column.
    let mut alerts = String::new();
    sub.stdout
        .take()
        .unwrap()
        .read_to_string(&mut alerts)
        .unwrap();
    assert!(sub.wait().unwrap().success(), "{alerts}");
    let mut lines: Vec<&str> = alerts.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!(r#"{prefix}/alerts/s2 {{"sensor":"s2","temperature":35.5}}"#),
            format!(r#"{prefix}/alerts/s3 {{"sensor":"s3","temperature":40.0}}"#),
        ]
    );
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
}

fn a_missing_broker_and_a_malformed_message_are_named() {
    let sql = "CREATE TABLE r (v STRING) WITH ('connector' = 'mqtt', 'url' = 'tcp://127.0.0.1:1', 'topic' = 'x', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(
        !ok && err.contains("cannot connect to the MQTT broker at '127.0.0.1:1'"),
        "{err}"
    );
    let sql = "CREATE TABLE r (v STRING, w STRING) WITH ('connector' = 'mqtt', 'url' = 'tcp://127.0.0.1:1883', 'topic' = 'x', 'format' = 'raw');
CREATE TABLE p (v STRING, w STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(
        !ok && err.contains("format 'raw' needs exactly one"),
        "{err}"
    );
    let sql = "CREATE TABLE r (v STRING) WITH ('connector' = 'mqtt', 'url' = 'tcp://127.0.0.1:1883', 'topic' = 'a/#/b', 'format' = 'raw');
CREATE TABLE p (v STRING) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(
        !ok && err.contains("'a/#/b' is not a valid MQTT topic filter"),
        "{err}"
    );

    // A malformed message fails the job (without json.ignore-parse-errors), naming its topic.
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("sluice-test-{}/bad", std::process::id());
    let sql = format!(
        "CREATE TABLE r (n INT) WITH ('connector' = 'mqtt', 'url' = '{URL}', 'topic' = '{topic}', 'format' = 'json');
CREATE TABLE p (n INT) WITH ('connector' = 'print');
INSERT INTO p SELECT * FROM r;"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    publish_until_seen(&mut job, &topic, r#"{"n": 7}"#, "+I[7]");
    publish(&topic, r#"{"n": "#);
    assert!(!job.wait(Duration::from_secs(30)), "the job fails");
    assert!(!job.is_running());
    let err = job.stderr();
    assert!(
        err.contains(&format!("MQTT message on topic '{topic}'")),
        "{err}"
    );
}
