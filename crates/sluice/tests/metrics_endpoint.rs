//! `sluice run --metrics-addr` and `sluice broker --metrics-addr`: a running job's and a
//! broker's metrics at /metrics, in Prometheus' text format as the reference client's parser
//! reads it, with their names and labels, changing as rows and records flow.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GETs `path` from `addr` over HTTP/1.1; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A sample: name and labels.
type Key = (String, BTreeMap<String, String>);

/// The samples of a scrape, parsed by prometheus_client (which fails on malformed text).
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut child = Command::new(common::python())
        .arg(common::client_script("parse_prometheus.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client cannot parse the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let labels = v["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let name = v["name"].as_str().unwrap().to_string();
        samples.insert((name, labels), v["value"].as_f64().unwrap());
    }
    samples
}

/// The sum of the samples called `name` whose labels include `with`.
fn total(samples: &BTreeMap<Key, f64>, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// Starts `sluice run --metrics-addr 127.0.0.1:0` on `script`; the process and the address of
/// its metrics, read from its first line on standard error.
fn run_with_metrics(
    script: &std::path::Path,
    data: &std::path::Path,
) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("Metrics for Prometheus at http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in: {line}"))
        .to_string();
    // Keep reading standard error so that the job never blocks on it.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
    });
    (child, addr)
}

#[test]
fn a_running_job_shows_its_metrics_for_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("counts.sql");
    std::fs::write(
        &script,
        "SET 'execution.checkpointing.interval' = '200 ms';
CREATE TABLE src (id BIGINT) WITH (
  'connector' = 'datagen', 'rows-per-second' = '2000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000');
CREATE TABLE out (k BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id % 5, COUNT(*) FROM src GROUP BY id % 5;
CREATE TABLE ev (id BIGINT, ts AS TO_TIMESTAMP_LTZ(id * 100, 3), WATERMARK FOR ts AS ts) WITH (
  'connector' = 'datagen', 'rows-per-second' = '2000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000');
CREATE TABLE per_second (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO per_second SELECT COUNT(*)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' SECOND)) GROUP BY window_start, window_end;
",
    )
    .unwrap();
    let (mut child, addr) = run_with_metrics(&script, &dir.path().join("data"));

    // Wait for the job to have moved rows and taken a checkpoint.
    let started = Instant::now();
    let first = loop {
        let (status, body) = get(&addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        let samples = parse(&body);
        let aggregated = total(
            &samples,
            "sluice_operator_records_in_total",
            &[("operator", "GroupAggregate")],
        );
        if aggregated > 0.0 && total(&samples, "sluice_checkpoints_completed_total", &[]) > 0.0 {
            break samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no rows or no checkpoint in the metrics:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let second = parse(&get(&addr, "/metrics").1);
    let _ = child.kill();
    let _ = child.wait();

    // Every operator of the job, with its labels.
    for operator in ["Source: src [datagen]", "GroupAggregate", "Sink: blackhole"] {
        let with = [("job", "counts"), ("operator", operator), ("subtask", "0")];
        assert!(
            first
                .keys()
                .any(|(n, l)| n == "sluice_operator_records_in_total"
                    && with
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))),
            "no records-in of {operator}: {first:?}"
        );
    }
    for name in [
        "sluice_task_busy_ms_total",
        "sluice_task_idle_ms_total",
        "sluice_task_backpressured_ms_total",
        "sluice_task_bytes_in_total",
        "sluice_task_bytes_out_total",
        "sluice_task_input_queue_fill",
        "sluice_task_output_queue_fill",
        "sluice_operator_current_input_watermark_ms",
        "sluice_operator_current_output_watermark_ms",
        "sluice_last_checkpoint_duration_ms",
        "sluice_last_checkpoint_size_bytes",
    ] {
        assert!(first.keys().any(|(n, _)| n == name), "no {name}");
    }
    // The window operator: its late rows (none here) and the watermark it has seen.
    let window = |name: &str| {
        second
            .iter()
            .find(|((n, l), _)| {
                n == name
                    && l.get("operator")
                        .is_some_and(|o| o.starts_with("WindowAggregate"))
            })
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name} of the window operator: {second:?}"))
    };
    assert_eq!(window("sluice_operator_late_records_dropped_total"), 0.0);
    // The ids' times start at 1970-01-01 00:00:00.1.
    assert!(window("sluice_operator_current_input_watermark_ms") > 0.0);

    // Rows keep flowing: the source's output and the aggregate's input grow, and the
    // aggregate emits -U and +U for every row after the first of each key.
    let grew = |name: &str, operator: &str| {
        let with = [("operator", operator)];
        (total(&first, name, &with), total(&second, name, &with))
    };
    let (a, b) = grew("sluice_operator_records_out_total", "Source: src [datagen]");
    assert!(b > a, "the source's records out did not grow: {a} then {b}");
    let (a, b) = grew("sluice_operator_records_in_total", "GroupAggregate");
    assert!(
        b > a,
        "the aggregate's records in did not grow: {a} then {b}"
    );
    let rows_in = total(
        &second,
        "sluice_operator_records_in_total",
        &[("operator", "GroupAggregate")],
    );
    let rows_out = total(
        &second,
        "sluice_operator_records_out_total",
        &[("operator", "GroupAggregate")],
    );
    // (Read while rows move, the two counts are not of the same instant: no equality.)
    assert!(
        rows_out > rows_in,
        "an update per row: {rows_in} in, {rows_out} out"
    );
    assert!(
        total(&second, "sluice_checkpoints_completed_total", &[])
            > total(&first, "sluice_checkpoints_completed_total", &[])
    );
    // The aggregate's task reads over the exchange what the source's task writes to it, in
    // bytes; both grow.
    let task = |samples: &BTreeMap<Key, f64>, name: &str, task: &str| {
        total(samples, name, &[("task", task)])
    };
    let source = "Source: src [datagen]";
    let (a, b) = (
        task(&first, "sluice_task_bytes_out_total", source),
        task(&second, "sluice_task_bytes_out_total", source),
    );
    assert!(a > 0.0 && b > a, "the source's bytes out: {a} then {b}");
    let (a, b) = (
        task(&first, "sluice_task_bytes_in_total", "GroupAggregate"),
        task(&second, "sluice_task_bytes_in_total", "GroupAggregate"),
    );
    assert!(a > 0.0 && b > a, "the aggregate's bytes in: {a} then {b}");
    for fill in [
        "sluice_task_input_queue_fill",
        "sluice_task_output_queue_fill",
    ] {
        for ((n, _), v) in second.iter().filter(|((n, _), _)| n == fill) {
            assert!((0.0..=1.0).contains(v), "{n} = {v}");
        }
    }
}

#[test]
fn a_bad_metrics_address_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sql");
    std::fs::write(
        &script,
        "CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '3');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT id FROM src;
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--metrics-addr", "not-an-address", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg(&script)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--metrics-addr 'not-an-address'"),
        "{stderr}"
    );
}

/// `sluice broker --metrics-addr`: requests per API, records and bytes per topic, and a
/// consumer group's lag, as kcat produces and consumes.
#[test]
fn the_broker_shows_requests_bytes_and_consumer_lag() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let broker = common::BrokerProcess::start(
        dir.path(),
        common::free_port(),
        &["--metrics-addr", &metrics_addr],
    );
    let lines: String = (1..=100).map(|i| format!("reading {i}\n")).collect();
    let mut produce = Command::new("kcat")
        .args(["-P", "-b", &broker.bootstrap(), "-t", "readings"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat (./test.sh installs it)");
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let consumed = Command::new("kcat")
        .args(["-b", &broker.bootstrap(), "-G", "dashboards", "readings"])
        .args(["-o", "beginning", "-e", "-q"])
        .output()
        .unwrap();
    assert!(consumed.status.success(), "{consumed:?}");
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout).lines().count(),
        100
    );

    // The partitions, offsets and lags are sampled every few seconds.
    let started = Instant::now();
    let samples = loop {
        let samples = parse(&get(&metrics_addr, "/metrics").1);
        let lag = samples.iter().find(|((n, l), _)| {
            n == "sluice_broker_consumer_group_lag"
                && l.get("group").map(String::as_str) == Some("dashboards")
        });
        if lag.is_some_and(|(_, v)| *v == 0.0) {
            break samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag of 0 for the group: {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let topic = [("topic", "readings")];
    assert_eq!(
        total(&samples, "sluice_broker_produced_records_total", &topic),
        100.0
    );
    let bytes = total(&samples, "sluice_broker_produced_bytes_total", &topic);
    assert!(bytes > lines.len() as f64, "{bytes} bytes produced");
    // (A consumer may fetch a batch again after a rebalance: at least once.)
    assert!(total(&samples, "sluice_broker_fetched_bytes_total", &topic) >= bytes);
    assert_eq!(
        total(&samples, "sluice_broker_log_end_offset", &topic),
        100.0
    );
    // The log holds the batches as they were produced.
    assert_eq!(
        total(&samples, "sluice_broker_log_size_bytes", &topic),
        bytes
    );
    assert!(total(&samples, "sluice_broker_partitions", &[]) >= 1.0);
    for api in ["Produce", "Fetch", "JoinGroup", "OffsetCommit"] {
        assert!(
            total(&samples, "sluice_broker_requests_total", &[("api", api)]) >= 1.0,
            "no {api} request counted"
        );
        assert!(
            total(
                &samples,
                "sluice_broker_request_duration_seconds_count",
                &[("api", api)]
            ) >= 1.0,
            "no {api} latency"
        );
    }
}

/// Every metric the example Grafana dashboard charts is one that Sluice serves.
#[test]
fn grafana_dashboard_names_served_metrics() {
    use sluice_broker::broker_metrics::names as broker;
    use sluice_engine::task_metrics::names as runtime;
    let served = [
        runtime::RECORDS_IN,
        runtime::RECORDS_OUT,
        runtime::INPUT_WATERMARK,
        runtime::OUTPUT_WATERMARK,
        runtime::LATE_RECORDS_DROPPED,
        runtime::BUSY,
        runtime::IDLE,
        runtime::BACKPRESSURED,
        runtime::BYTES_IN,
        runtime::BYTES_OUT,
        runtime::INPUT_QUEUE_FILL,
        runtime::OUTPUT_QUEUE_FILL,
        runtime::SINK_ERRORS,
        runtime::CHECKPOINTS_COMPLETED,
        runtime::CHECKPOINTS_FAILED,
        runtime::CHECKPOINT_DURATION,
        runtime::CHECKPOINT_SIZE,
        broker::REQUESTS,
        broker::REQUEST_SECONDS,
        broker::PRODUCED_RECORDS,
        broker::PRODUCED_BYTES,
        broker::FETCHED_BYTES,
        broker::PARTITIONS,
        broker::LOG_END_OFFSET,
        broker::LOG_SIZE,
        broker::GROUP_LAG,
    ];
    let path = common::manifest_dir().join("../../examples/grafana/sluice-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    exprs.push(
        dashboard["templating"]["list"][1]["definition"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let mut named = 0;
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("sluice_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                served.contains(&name.as_str()),
                "{}: '{name}' (in {expr}) is not a metric Sluice serves",
                path.display()
            );
            named += 1;
            rest = &rest[at + name.len()..];
        }
    }
    assert!(named >= exprs.len(), "every query names a metric");
}

/// A Kafka source's lag per partition: the records behind the partition's end.
#[test]
fn a_kafka_source_shows_its_lag_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::BrokerProcess::start(&dir.path().join("broker"), common::free_port(), &[]);
    let lines: String = (0..50).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    let mut produce = Command::new("kcat")
        .args(["-P", "-b", &broker.bootstrap(), "-t", "clicks"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat (./test.sh installs it)");
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let script = dir.path().join("clicks.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE TABLE clicks (n BIGINT) WITH ('connector' = 'kafka', 'topic' = 'clicks',
  'properties.bootstrap.servers' = '{}', 'properties.group.id' = 'lagging',
  'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
CREATE TABLE out (n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out SELECT n FROM clicks;
",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let (mut child, addr) = run_with_metrics(&script, &dir.path().join("data"));
    let started = Instant::now();
    let samples = loop {
        let samples = parse(&get(&addr, "/metrics").1);
        let read = total(
            &samples,
            "sluice_operator_records_out_total",
            &[("operator", "Source: clicks [kafka(clicks)]")],
        );
        let lag = samples.keys().any(|(n, l)| {
            n == "sluice_kafka_source_records_lag"
                && l.get("topic").map(String::as_str) == Some("clicks")
        });
        if read == 50.0 && lag {
            break samples;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag or not all records read: {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = child.kill();
    let _ = child.wait();
    let with = [("topic", "clicks"), ("partition", "0"), ("subtask", "0")];
    assert_eq!(
        total(&samples, "sluice_kafka_source_records_lag", &with),
        0.0,
        "all 50 records read: no lag"
    );
}
