//! End-to-end tests of the `kafka` and `upsert-kafka` connectors and of `sluice topics`,
//! `sluice produce` and `sluice consume`, against a `sluice broker` process, with kcat as the
//! independent client.

mod common;

use common::{kcat, run_sql, sluice, BrokerProcess, RunningJob};
use std::collections::BTreeMap;
use std::time::Duration;

fn broker() -> (tempfile::TempDir, BrokerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(dir.path(), common::free_port(), &[]);
    (dir, b)
}

fn create_topic(b: &BrokerProcess, topic: &str, partitions: u32) {
    let (ok, _, err) = sluice(
        &[
            "topics",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
            "-b",
            &b.bootstrap(),
        ],
        "",
    );
    assert!(ok, "{err}");
}

/// The rows a bounded job printed, without the `n> ` prefix.
fn printed(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.find("> ") {
            Some(p) if l[..p].chars().all(|c| c.is_ascii_digit()) => l[p + 2..].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

#[test]
fn topics_produce_and_consume_commands() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "events", 3);
    let (ok, out, _) = sluice(&["topics", "list", "-b", &bs], "");
    assert!(ok && out.contains("events\t3 partitions"), "{out}");
    let (ok, _, err) = sluice(
        &["produce", "events", "-K", ":", "-b", &bs],
        "a:one\nb:two\na:three\n",
    );
    assert!(ok && err.contains("produced 3 records"), "{err}");
    let (ok, out, _) = sluice(&["topics", "describe", "events", "-b", &bs], "");
    assert!(ok && out.contains("3 partitions"), "{out}");
    let total: i64 = out
        .lines()
        .skip(2)
        .map(|l| l.split('\t').nth(3).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 3, "{out}");
    // Keys hash to partitions as the Java client's, so "a" stays in one partition, in order.
    let (ok, out, _) = sluice(
        &[
            "consume",
            "events",
            "--from-beginning",
            "--exit",
            "--print-key",
            "--key-separator",
            "=",
            "-b",
            &bs,
        ],
        "",
    );
    assert!(ok);
    let mut lines: Vec<&str> = out.lines().collect();
    let a: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a="))
        .collect();
    assert_eq!(a, vec!["a=one", "a=three"]);
    lines.sort();
    assert_eq!(lines, vec!["a=one", "a=three", "b=two"]);
    // A group reads once, then resumes after its committed offsets.
    let (ok, out, _) = sluice(
        &[
            "consume",
            "events",
            "--group",
            "g1",
            "--from-beginning",
            "-n",
            "3",
            "-b",
            &bs,
        ],
        "",
    );
    assert!(ok && out.lines().count() == 3, "{out}");
    // Keyed like "a", so that it lands in a partition the group has committed an offset for
    // (a new group member starts at the end of the others).
    sluice(&["produce", "events", "-K", ":", "-b", &bs], "a:four\n");
    let (ok, out, _) = sluice(
        &["consume", "events", "--group", "g1", "-n", "1", "-b", &bs],
        "",
    );
    assert!(ok && out.trim() == "four", "{out}");
    // From an offset, one partition.
    let (ok, out, _) = sluice(
        &[
            "consume",
            "events",
            "--partition",
            "0",
            "--offset",
            "0",
            "--exit",
            "-b",
            &bs,
        ],
        "",
    );
    assert!(ok, "{out}");
    let (ok, _, _) = sluice(&["topics", "delete", "events", "-b", &bs], "");
    assert!(ok);
    let (ok, _, err) = sluice(&["topics", "describe", "nope", "-b", "127.0.0.1:1"], "");
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn kafka_sink_then_source_with_keys_partitions_and_metadata() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "clicks_by_user", 3);
    create_topic(&b, "clicks_spread", 3);
    let data = common::data_dir().join("clicks.json");
    let write = format!(
        "CREATE TABLE clicks (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
CREATE TABLE out (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH (
  'connector' = 'kafka', 'topic' = 'clicks_by_user', 'properties.bootstrap.servers' = '{bs}',
  'key.format' = 'json', 'key.fields' = 'user_id', 'value.format' = 'json', 'value.fields-include' = 'EXCEPT_KEY');
CREATE TABLE spread (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH (
  'connector' = 'kafka', 'topic' = 'clicks_spread', 'properties.bootstrap.servers' = '{bs}',
  'format' = 'json', 'sink.partitioner' = 'round-robin');
INSERT INTO out SELECT * FROM clicks;
INSERT INTO spread SELECT * FROM clicks;",
        data.display()
    );
    let (ok, _, err) = run_sql(&write, &["--parallelism", "2"]);
    assert!(ok, "{err}");
    let lines = std::fs::read_to_string(&data).unwrap();
    let n = lines.lines().filter(|l| !l.trim().is_empty()).count();
    // Round-robin spreads the rows evenly over the partitions.
    let (ok, out, _) = sluice(&["topics", "describe", "clicks_spread", "-b", &bs], "");
    assert!(ok, "{out}");
    let counts: Vec<i64> = out
        .lines()
        .skip(2)
        .map(|l| l.split('\t').nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), n as i64, "{out}");
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 2,
        "{out}"
    );
    // kcat sees keys {"user_id":...} and values without the key field; one user per partition.
    let got = kcat(
        &[
            "-C",
            "-b",
            &bs,
            "-t",
            "clicks_by_user",
            "-e",
            "-q",
            "-f",
            "%p|%k|%s\n",
        ],
        "",
    );
    assert_eq!(got.lines().count(), n, "{got}");
    let mut partition_of: BTreeMap<String, String> = BTreeMap::new();
    for l in got.lines() {
        let mut it = l.splitn(3, '|');
        let (p, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        assert!(k.starts_with("{\"user_id\":\"u"), "{l}");
        assert!(!v.contains("user_id") && v.contains("\"url\""), "{l}");
        if let Some(prev) = partition_of.insert(k.to_string(), p.to_string()) {
            assert_eq!(prev, p, "key {k} in two partitions");
        }
    }
    // Read back: key and value joined again, plus partition and offset metadata.
    let read = format!(
        "CREATE TABLE src (
  `partition` INT METADATA VIRTUAL,
  user_id STRING, url STRING, ts TIMESTAMP(3),
  off BIGINT METADATA FROM 'offset' VIRTUAL,
  kafka_time TIMESTAMP_LTZ(3) METADATA FROM 'timestamp'
) WITH (
  'connector' = 'kafka', 'topic' = 'clicks_by_user', 'properties.bootstrap.servers' = '{bs}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
  'key.format' = 'json', 'key.fields' = 'user_id', 'value.format' = 'json', 'value.fields-include' = 'EXCEPT_KEY');
SELECT `partition`, COUNT(*), COUNT(DISTINCT user_id), MIN(off), MAX(off) + 1, COUNT(url), COUNT(kafka_time) FROM src GROUP BY `partition`;"
    );
    let (ok, out, err) = run_sql(&read, &["--parallelism", "2"]);
    assert!(ok, "{err}");
    // The final (last printed) row of each partition.
    let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in printed(&out) {
        let fields: Vec<String> = row[3..row.len() - 1]
            .split(", ")
            .map(String::from)
            .collect();
        if row.starts_with("+I") || row.starts_with("+U") {
            last.insert(fields[0].clone(), fields);
        }
    }
    let total: usize = last.values().map(|f| f[1].parse::<usize>().unwrap()).sum();
    assert_eq!(total, n, "{out}");
    for f in last.values() {
        // Offsets run 0..count in each partition; every row has its key, value and timestamp.
        assert_eq!(f[3], "0");
        assert_eq!(f[4], f[1]);
        assert_eq!(f[5], f[1]);
        assert_eq!(f[6], f[1]);
    }
    let users: usize = last.values().map(|f| f[2].parse::<usize>().unwrap()).sum();
    assert_eq!(users, partition_of.len());
}

#[test]
fn watermarks_per_partition_and_an_empty_partition_does_not_stall() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "readings", 3);
    // Partition 0 runs far ahead of partition 1; partition 2 stays empty. With one watermark
    // for the source, partition 1's rows would be late; per partition, none is. Partition 1
    // then falls idle (the idle timeout), and the empty one never holds time back.
    let row = |s: u32| {
        format!(
            "{{\"v\": 1, \"ts\": \"2024-01-01 00:{:02}:{:02}.000\"}}\n",
            s / 60,
            s % 60
        )
    };
    let ahead: String = (0..60).step_by(2).map(row).collect();
    let behind: String = (0..20).map(row).collect();
    kcat(&["-P", "-b", &bs, "-t", "readings", "-p", "0"], &ahead);
    kcat(&["-P", "-b", &bs, "-t", "readings", "-p", "1"], &behind);
    let sql = format!(
        "SET 'table.exec.source.idle-timeout' = '1 s';
CREATE TABLE readings (v INT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts) WITH (
  'connector' = 'kafka', 'topic' = 'readings', 'properties.bootstrap.servers' = '{bs}',
  'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;"
    );
    let mut job = RunningJob::start(&sql, _d.path());
    // Partition 1 holds time back at 00:00:19 until it falls idle; so does partition 0 (as in
    // Flink, all partitions idle does not advance time). New data in partition 0 then drives
    // time alone: partition 1 stays idle, partition 2 never had data.
    assert!(
        job.wait_for(Duration::from_secs(20), |l| l.contains("T00:00, ")),
        "{:?}\n{}",
        job.seen,
        job.stderr()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let later: String = (60..100).step_by(2).map(row).collect();
    kcat(&["-P", "-b", &bs, "-t", "readings", "-p", "0"], &later);
    let fired = job.wait_for(Duration::from_secs(30), |l| l.contains("T00:01:20, "));
    assert!(
        fired,
        "windows did not fire: {:?}\n{}",
        job.seen,
        job.stderr()
    );
    let mut rows = job.seen.clone();
    rows.sort();
    let mut expected = vec![
        "+I[2024-01-01T00:00, 15]".to_string(),
        "+I[2024-01-01T00:00:10, 15]".to_string(),
    ];
    for s in [20, 30, 40, 50] {
        expected.push(format!("+I[2024-01-01T00:00:{s}, 5]"));
    }
    for s in ["", ":10", ":20"] {
        expected.push(format!("+I[2024-01-01T00:01{s}, 5]"));
    }
    expected.sort();
    assert_eq!(rows, expected);
}

#[test]
fn upsert_kafka_writes_upserts_and_reads_a_changelog() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "page_totals", 2);
    let data = common::data_dir().join("clicks.json");
    let write = format!(
        "CREATE TABLE clicks (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
CREATE TABLE totals (url STRING, hits BIGINT, PRIMARY KEY (url) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = 'page_totals', 'properties.bootstrap.servers' = '{bs}',
  'key.format' = 'json', 'value.format' = 'json');
INSERT INTO totals SELECT url, COUNT(*) FROM clicks GROUP BY url;",
        data.display()
    );
    let (ok, _, err) = run_sql(&write, &[]);
    assert!(ok, "{err}");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for l in std::fs::read_to_string(&data).unwrap().lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            *expected
                .entry(v["url"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    // The last record per key is the total.
    let got = kcat(
        &[
            "-C",
            "-b",
            &bs,
            "-t",
            "page_totals",
            "-e",
            "-q",
            "-f",
            "%k|%s\n",
        ],
        "",
    );
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for l in got.lines() {
        let (k, v) = l.split_once('|').unwrap();
        last.insert(k.to_string(), v.to_string());
    }
    assert_eq!(last.len(), expected.len(), "{got}");
    for (url, n) in &expected {
        let v = &last[&format!("{{\"url\":\"{url}\"}}")];
        assert_eq!(v, &format!("{{\"url\":\"{url}\",\"hits\":{n}}}"));
    }
    // A tombstone deletes; reading the topic gives the changelog.
    let first = expected.keys().next().unwrap().clone();
    kcat(
        &[
            "-P",
            "-b",
            &bs,
            "-t",
            "page_totals",
            "-K",
            "|",
            "-Z",
            // The sink's (and Java's) key hash, so that the tombstone meets its key.
            "-X",
            "partitioner=murmur2_random",
        ],
        &format!("{{\"url\":\"{first}\"}}|\n"),
    );
    let read = format!(
        "CREATE TABLE totals (url STRING, hits BIGINT, PRIMARY KEY (url) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = 'page_totals', 'properties.bootstrap.servers' = '{bs}',
  'scan.bounded.mode' = 'latest-offset', 'key.format' = 'json', 'value.format' = 'json');
SELECT COUNT(*), SUM(hits) FROM totals;"
    );
    let (ok, out, err) = run_sql(&read, &[]);
    assert!(ok, "{err}");
    let rows = printed(&out);
    let final_row = rows
        .iter()
        .rev()
        .find(|r| r.starts_with("+U") || r.starts_with("+I"))
        .unwrap();
    let sum: u64 = expected
        .iter()
        .filter(|(k, _)| **k != first)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        final_row,
        &format!("+U[{}, {sum}]", expected.len() - 1),
        "{out}"
    );
}

/// Upserts and tombstones of an upsert-kafka table with a watermark on a value column, read
/// at parallelism 2: a ChangelogNormalize keyed by the primary key turns them into Flink's
/// changelog (a tombstone has no time, and does not stop the watermark).
#[test]
fn upsert_kafka_changelog_is_normalized_by_key_at_parallelism_two() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "prices", 2);
    let records = [
        ("a", Some((1, "00:00:01"))),
        ("b", Some((5, "00:00:02"))),
        ("a", Some((2, "00:00:03"))),
        ("a", Some((2, "00:00:03"))),
        ("c", None),
        ("b", None),
        ("b", Some((6, "00:00:04"))),
        ("d", Some((7, "00:00:05"))),
    ];
    let mut input = String::new();
    for (k, v) in records {
        input.push_str(&format!("{{\"k\":\"{k}\"}}|"));
        if let Some((v, t)) = v {
            input.push_str(&format!(
                "{{\"k\":\"{k}\",\"v\":{v},\"ts\":\"2024-01-01 {t}\"}}"
            ));
        }
        input.push('\n');
    }
    kcat(
        &[
            "-P",
            "-b",
            &bs,
            "-t",
            "prices",
            "-K",
            "|",
            "-Z",
            "-X",
            "partitioner=murmur2_random",
        ],
        &input,
    );
    let read = format!(
        "SET 'parallelism.default' = '2';
CREATE TABLE prices (k STRING, v BIGINT, ts TIMESTAMP(3), PRIMARY KEY (k) NOT ENFORCED,
  WATERMARK FOR ts AS ts) WITH (
  'connector' = 'upsert-kafka', 'topic' = 'prices', 'properties.bootstrap.servers' = '{bs}',
  'scan.bounded.mode' = 'latest-offset', 'key.format' = 'json', 'value.format' = 'json');
SELECT k, v FROM prices;"
    );
    let (ok, plan, err) = run_sql(&format!("{read}\nEXPLAIN SELECT k, v FROM prices;"), &[]);
    assert!(ok, "{err}");
    assert!(plan.contains("ChangelogNormalize(prices)"), "{plan}");
    let (ok, out, err) = run_sql(&read, &[]);
    assert!(ok, "{err}");
    let mut got = printed(&out);
    got.sort();
    let mut expected = vec![
        "+I[a, 1]", "+I[b, 5]", "-U[a, 1]", "+U[a, 2]", "-D[b, 5]", "+I[b, 6]", "+I[d, 7]",
    ];
    expected.sort();
    assert_eq!(got, expected, "{out}");
}

#[test]
fn malformed_records_name_topic_partition_and_offset_or_are_skipped() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "raw", 1);
    kcat(
        &["-P", "-b", &bs, "-t", "raw"],
        "{\"id\": 1}\n{\"id\": 2}\nnot json\n{\"id\": 4}\n",
    );
    let sql = |extra: &str| {
        format!(
            "CREATE TABLE raw (id INT) WITH ('connector' = 'kafka', 'topic' = 'raw', 'properties.bootstrap.servers' = '{bs}',
  'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset', 'format' = 'json'{extra});
SELECT id FROM raw;"
        )
    };
    let (ok, _, err) = run_sql(&sql(""), &[]);
    assert!(!ok);
    assert!(
        err.contains("topic 'raw', partition 0, offset 2")
            && err.contains("json.ignore-parse-errors"),
        "{err}"
    );
    let (ok, out, err) = run_sql(&sql(", 'json.ignore-parse-errors' = 'true'"), &[]);
    assert!(ok, "{err}");
    assert_eq!(printed(&out), vec!["+I[1]", "+I[2]", "+I[4]"]);
    // Without --quiet, the job's summary counts what it skipped.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), sql(", 'json.ignore-parse-errors' = 'true'")).unwrap();
    let (ok, _, err) = sluice(&["run", script.path().to_str().unwrap()], "");
    assert!(
        ok && err.contains("raw: records skipped as malformed: 1"),
        "{err}"
    );
}

#[test]
fn unreachable_broker_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE TABLE t (id INT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:1', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
SELECT id FROM t;";
    let job = RunningJob::start(sql, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let err = job.stderr();
        if err
            .matches("cannot reach the Kafka brokers at '127.0.0.1:1'")
            .count()
            >= 2
        {
            assert!(
                err.contains("retrying in 1 s") && err.contains("retrying in 2 s"),
                "{err}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry reported: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bad_kafka_options_fail_before_the_job_starts() {
    let sql = "CREATE TABLE t (id INT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'h:1', 'format' = 'json', 'scan.startup.mode' = 'newest');
SELECT id FROM t;";
    let (ok, _, err) = run_sql(sql, &[]);
    assert!(
        !ok && err.contains("'scan.startup.mode' has value 'newest'"),
        "{err}"
    );
    let sql = "CREATE TABLE c (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '3');
CREATE TABLE t (id INT, n BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'properties.bootstrap.servers' = 'h:1', 'format' = 'json');
INSERT INTO t SELECT id, COUNT(*) FROM c GROUP BY id;";
    let (ok, _, err) = run_sql(sql, &[]);
    assert!(!ok && err.contains("upsert-kafka"), "{err}");
}

/// Debezium's change events on a topic (`debezium-json`, as Debezium writes them to Kafka):
/// the table is a changelog (inserts, updates as -U/+U, deletes), which an aggregate over it
/// follows; `raw` reads each record's bytes as one column.
#[test]
fn debezium_json_reads_a_changelog_and_raw_reads_bytes() {
    let (_d, b) = broker();
    let bs = b.bootstrap();
    create_topic(&b, "cdc", 1);
    kcat(
        &["-P", "-b", &bs, "-t", "cdc"],
        concat!(
            r#"{"before": null, "after": {"id": 1, "name": "a"}, "op": "r", "ts_ms": 1}"#,
            "\n",
            r#"{"before": null, "after": {"id": 2, "name": "b"}, "op": "c", "ts_ms": 2}"#,
            "\n",
            r#"{"before": {"id": 1, "name": "a"}, "after": {"id": 1, "name": "a2"}, "op": "u", "ts_ms": 3}"#,
            "\n",
            r#"{"before": {"id": 2, "name": "b"}, "after": null, "op": "d", "ts_ms": 4}"#,
            "\n",
        ),
    );
    let table = format!(
        "CREATE TABLE cdc (id INT, name STRING) WITH ('connector' = 'kafka', 'topic' = 'cdc',
  'properties.bootstrap.servers' = '{bs}', 'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset', 'format' = 'debezium-json');\n"
    );
    let (ok, out, err) = run_sql(&format!("{table}SELECT id, name FROM cdc;"), &[]);
    assert!(ok, "{err}");
    assert_eq!(
        printed(&out),
        ["+I[1, a]", "+I[2, b]", "-U[1, a]", "+U[1, a2]", "-D[2, b]"]
    );
    let (ok, out, err) = run_sql(&format!("{table}SELECT COUNT(*) AS n FROM cdc;"), &[]);
    assert!(ok, "{err}");
    assert_eq!(
        printed(&out).last().map(String::as_str),
        Some("+U[1]"),
        "{out}"
    );
    // The kafka sink writes a changelog in debezium-json and canal-json as Flink does: an
    // update as a delete of the old row and an insert of the new one.
    for (topic, format) in [("o-debezium", "debezium-json"), ("o-canal", "canal-json")] {
        create_topic(&b, topic, 1);
        let (ok, _, err) = run_sql(
            &format!(
                "{table}CREATE TABLE out2 (id INT, name STRING) WITH ('connector' = 'kafka', 'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bs}', 'format' = '{format}');
INSERT INTO out2 SELECT * FROM cdc;"
            ),
            &[],
        );
        assert!(ok, "{err}");
    }
    let written = kcat(
        &["-C", "-b", &bs, "-t", "o-debezium", "-e", "-f", "%s\\n"],
        "",
    );
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        [
            r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c"}"#,
            r#"{"before":null,"after":{"id":2,"name":"b"},"op":"c"}"#,
            r#"{"before":{"id":1,"name":"a"},"after":null,"op":"d"}"#,
            r#"{"before":null,"after":{"id":1,"name":"a2"},"op":"c"}"#,
            r#"{"before":{"id":2,"name":"b"},"after":null,"op":"d"}"#,
        ]
    );
    let written = kcat(&["-C", "-b", &bs, "-t", "o-canal", "-e", "-f", "%s\\n"], "");
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        [
            r#"{"old":null,"data":[{"id":1,"name":"a"}],"type":"INSERT"}"#,
            r#"{"old":null,"data":[{"id":2,"name":"b"}],"type":"INSERT"}"#,
            r#"{"old":null,"data":[{"id":1,"name":"a"}],"type":"DELETE"}"#,
            r#"{"old":null,"data":[{"id":1,"name":"a2"}],"type":"INSERT"}"#,
            r#"{"old":null,"data":[{"id":2,"name":"b"}],"type":"DELETE"}"#,
        ]
    );
    // Read back, the canal-json changelog gives the same count.
    let (ok, out, err) = run_sql(
        &format!(
            "CREATE TABLE back (id INT, name STRING) WITH ('connector' = 'kafka', 'topic' = 'o-canal',
  'properties.bootstrap.servers' = '{bs}', 'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset', 'format' = 'canal-json');
SELECT COUNT(*) AS n FROM back;"
        ),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        printed(&out).last().map(String::as_str),
        Some("+U[1]"),
        "{out}"
    );
    // Only a value holds changes, and a format that is not a changelog takes no updates.
    let (ok, _, err) = run_sql(
        &format!(
            "{table}CREATE TABLE out3 (id INT, name STRING) WITH ('connector' = 'kafka', 'topic' = 'o',
  'properties.bootstrap.servers' = '{bs}', 'format' = 'json');
INSERT INTO out3 SELECT * FROM cdc;"
        ),
        &[],
    );
    assert!(
        !ok && err.contains("'debezium-json' or 'canal-json'"),
        "{err}"
    );

    create_topic(&b, "lines", 1);
    kcat(
        &["-P", "-b", &bs, "-t", "lines"],
        "21.5\nnot json, kept as it is\n",
    );
    let (ok, out, err) = run_sql(
        &format!(
            "CREATE TABLE lines (v STRING) WITH ('connector' = 'kafka', 'topic' = 'lines',
  'properties.bootstrap.servers' = '{bs}', 'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset', 'format' = 'raw');
SELECT v FROM lines;"
        ),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(printed(&out), ["+I[21.5]", "+I[not json, kept as it is]"]);
    // The kafka sink writes raw values as they are.
    create_topic(&b, "lines-copy", 1);
    let (ok, _, err) = run_sql(
        &format!(
            "CREATE TABLE lines (v STRING) WITH ('connector' = 'kafka', 'topic' = 'lines',
  'properties.bootstrap.servers' = '{bs}', 'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset', 'format' = 'raw');
CREATE TABLE copy (v STRING) WITH ('connector' = 'kafka', 'topic' = 'lines-copy',
  'properties.bootstrap.servers' = '{bs}', 'format' = 'raw');
INSERT INTO copy SELECT UPPER(v) FROM lines;"
        ),
        &[],
    );
    assert!(ok, "{err}");
    let written = kcat(
        &["-C", "-b", &bs, "-t", "lines-copy", "-e", "-f", "%s|"],
        "",
    );
    assert_eq!(written, "21.5|NOT JSON, KEPT AS IT IS|");
}
