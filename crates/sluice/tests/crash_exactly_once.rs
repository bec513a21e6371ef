//! Exactly-once under crashes: a job reads Kafka (two partitions, filled while it runs) and
//! writes a windowed aggregate to a filesystem sink, to PostgreSQL (`jdbc`, append-only, so
//! a duplicate would show) and to a Kafka topic in transactions (read back with
//! `isolation.level=read_committed`). It is killed with SIGKILL at random moments and started
//! again each time; it resumes from its latest checkpoint. Its final output must equal that of
//! one uninterrupted run, row for row: none lost, none twice. A second test restarts the
//! broker under a running job.

mod common;

use common::{ensure_postgres, kcat, psql, run_sql, BrokerProcess, RunningJob};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

const URL: &str = "jdbc:postgresql://127.0.0.1:5432/test";
/// Rounds of input; each round is one reading per sensor on each partition.
const ROUNDS: usize = 300;
const SENSORS: usize = 4;
const KILLS: usize = 20;

/// The job: tumbling 1-second windows per sensor, to files, to PostgreSQL and to the topic
/// `<name>-out` (exactly-once, transactional ids prefixed with the name).
fn script(bootstrap: &str, out_dir: &Path, table: &str, name: &str) -> String {
    script_at(bootstrap, out_dir, table, name, 1)
}

/// [`script`] at parallelism `p`.
fn script_at(bootstrap: &str, out_dir: &Path, table: &str, name: &str, p: usize) -> String {
    let per_partition = ROUNDS * SENSORS;
    format!(
        "SET 'pipeline.name' = '{name}';
SET 'parallelism.default' = '{p}';
SET 'execution.checkpointing.interval' = '300 ms';
SET 'state.checkpoints.num-retained' = '3';
CREATE TABLE readings (sensor STRING, temperature INT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'readings',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = '{name}',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'specific-offsets',
  'scan.bounded.specific-offsets' = 'partition:0,offset:{per_partition};partition:1,offset:{per_partition}',
  'format' = 'json'
);
CREATE TABLE files (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT) WITH (
  'connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv'
);
CREATE TABLE db (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT) WITH (
  'connector' = 'jdbc', 'url' = '{URL}', 'table-name' = '{table}', 'username' = 'postgres'
);
CREATE TABLE topic (sensor STRING, window_start TIMESTAMP(3), readings BIGINT, total INT) WITH (
  'connector' = 'kafka', 'topic' = '{name}-out',
  'properties.bootstrap.servers' = '{bootstrap}',
  'format' = 'json',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{name}'
);
CREATE TEMPORARY VIEW per_second AS
SELECT sensor, window_start, COUNT(*) AS readings, SUM(temperature) AS total
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY sensor, window_start, window_end;
INSERT INTO files SELECT * FROM per_second;
INSERT INTO db SELECT * FROM per_second;
INSERT INTO topic SELECT * FROM per_second;
",
        out = out_dir.display()
    )
}

/// One round of readings for partition `p`: event time advances 100 ms a round.
fn round(r: usize, p: usize) -> String {
    let mut s = String::new();
    for k in 0..SENSORS {
        let ts_ms = 1_700_000_000_000i64 + r as i64 * 100;
        let secs = ts_ms / 1000;
        let ms = ts_ms % 1000;
        let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        s.push_str(&format!(
            "{{\"sensor\":\"s{k}\",\"temperature\":{},\"ts\":\"{}.{ms:03}\"}}\n",
            (r * 7 + k * 3 + p) % 50,
            t.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    s
}

fn produce_rounds(bootstrap: &str, rounds: std::ops::Range<usize>) {
    for p in 0..2 {
        let lines: String = rounds.clone().map(|r| round(r, p)).collect();
        kcat(
            &[
                "-P",
                "-b",
                bootstrap,
                "-t",
                "readings",
                "-p",
                &p.to_string(),
            ],
            &lines,
        );
    }
}

/// The visible output files' lines, sorted.
fn file_rows(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        rows.extend(text.lines().map(String::from));
    }
    rows.sort();
    rows
}

/// The records of `topic` a `read_committed` consumer (kcat) sees, sorted.
fn topic_rows(bootstrap: &str, topic: &str) -> Vec<String> {
    let out = kcat(
        &[
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-e",
            "-q",
            "-X",
            "isolation.level=read_committed",
        ],
        "",
    );
    let mut rows: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    rows.sort();
    rows
}

fn table_rows(table: &str) -> Vec<String> {
    let out = psql(&format!(
        "SELECT sensor, window_start, readings, total FROM {table} ORDER BY 1, 2"
    ));
    out.lines().map(String::from).collect()
}

/// The input topic (2 partitions) and empty output tables.
fn prepare(bootstrap: &str, tables: [&str; 2]) {
    let (ok, _, err) = common::sluice(
        &[
            "topics",
            "create",
            "readings",
            "--partitions",
            "2",
            "-b",
            bootstrap,
        ],
        "",
    );
    assert!(ok, "{err}");
    for t in tables {
        psql(&format!(
            "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (sensor text, window_start timestamp(3), readings bigint, total int)"
        ));
    }
}

#[test]
fn killed_jobs_resume_with_exactly_once_output() {
    ensure_postgres();
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(tmp.path(), common::free_port(), &[]);
    let bootstrap = broker.bootstrap();
    kcat(&["-b", &bootstrap, "-L"], "");
    prepare(&bootstrap, ["crash_out", "crash_expected"]);
    let data_dir = tmp.path().join("state");
    let data_arg = data_dir.display().to_string();
    let out_dir = tmp.path().join("out");
    let sql = script(&bootstrap, &out_dir, "crash_out", "crash-test");

    // The input arrives while the job runs and is killed.
    produce_rounds(&bootstrap, 0..20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut produced = 20;
    let mut kills = 0;
    let mut restores = 0;
    let started = Instant::now();
    let mut job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data_arg]);
    while kills < KILLS {
        let live = Duration::from_millis(rng.random_range(250..1200));
        let until = Instant::now() + live;
        while Instant::now() < until {
            if produced < ROUNDS {
                let next = (produced + 2).min(ROUNDS);
                produce_rounds(&bootstrap, produced..next);
                produced = next;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !job.is_running() {
            // It ended before this kill: it must have read all its input.
            assert!(job.wait(Duration::ZERO), "the job failed: {}", job.stderr());
            break;
        }
        job.kill();
        kills += 1;
        if job.stderr().contains("Restoring job") {
            restores += 1;
        }
        job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data_arg]);
    }
    if produced < ROUNDS {
        produce_rounds(&bootstrap, produced..ROUNDS);
    }
    assert!(
        job.wait(Duration::from_secs(120)),
        "the last run did not finish: {}",
        job.stderr()
    );
    eprintln!(
        "{kills} kills, {restores} runs restored from a checkpoint, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        kills >= 10,
        "too few kills ({kills}): the job finished too soon"
    );
    assert!(
        restores >= 3,
        "too few runs restored from a checkpoint ({restores})"
    );

    // One uninterrupted run over the same input.
    let expected_dir = tmp.path().join("expected");
    let reference = script(
        &bootstrap,
        &expected_dir,
        "crash_expected",
        "crash-reference",
    );
    let (ok, _, err) = run_sql(&reference, &["--data-dir", &data_arg]);
    assert!(ok, "{err}");

    let expected = file_rows(&expected_dir);
    assert_eq!(
        expected.len(),
        30 * SENSORS,
        "30 one-second windows per sensor"
    );
    let got = file_rows(&out_dir);
    assert_eq!(got.len(), expected.len(), "files: rows lost or duplicated");
    assert_eq!(got, expected);
    let expected = table_rows("crash_expected");
    assert_eq!(expected.len(), 30 * SENSORS);
    assert_eq!(
        table_rows("crash_out"),
        expected,
        "PostgreSQL: rows lost or duplicated"
    );
    let expected = topic_rows(&bootstrap, "crash-reference-out");
    assert_eq!(expected.len(), 30 * SENSORS);
    let got = topic_rows(&bootstrap, "crash-test-out");
    assert_eq!(got.len(), expected.len(), "Kafka: rows lost or duplicated");
    assert_eq!(got, expected, "Kafka: rows differ");
}

/// Killed with SIGKILL and started again at another parallelism each time (2, 1, 2, ...):
/// every restore from the latest checkpoint moves the windows by key group, the Kafka
/// partitions and the three exactly-once sinks' pre-committed output to the new subtasks,
/// and the output still equals one uninterrupted run's.
#[test]
fn killed_jobs_resume_at_another_parallelism_with_exactly_once_output() {
    ensure_postgres();
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(tmp.path(), common::free_port(), &[]);
    let bootstrap = broker.bootstrap();
    prepare(&bootstrap, ["rescale_out", "rescale_expected"]);
    let data_arg = tmp.path().join("state").display().to_string();
    let out_dir = tmp.path().join("out");
    let sql = |p| script_at(&bootstrap, &out_dir, "rescale_out", "rescale-test", p);
    produce_rounds(&bootstrap, 0..20);
    let mut produced = 20;
    let mut restores = 0;
    let mut job = RunningJob::start_with(&sql(2), tmp.path(), &["--data-dir", &data_arg]);
    for kill in 0..6 {
        let until = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < until {
            if produced < ROUNDS {
                let next = (produced + 4).min(ROUNDS);
                produce_rounds(&bootstrap, produced..next);
                produced = next;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !job.is_running() {
            assert!(job.wait(Duration::ZERO), "the job failed: {}", job.stderr());
            break;
        }
        job.kill();
        if job.stderr().contains("Restoring job") {
            restores += 1;
        }
        let p = if kill % 2 == 0 { 1 } else { 2 };
        job = RunningJob::start_with(&sql(p), tmp.path(), &["--data-dir", &data_arg]);
    }
    produce_rounds(&bootstrap, produced..ROUNDS);
    assert!(
        job.wait(Duration::from_secs(120)),
        "the last run did not finish: {}",
        job.stderr()
    );
    assert!(restores >= 3, "too few runs restored ({restores})");

    let expected_dir = tmp.path().join("expected");
    let reference = script(
        &bootstrap,
        &expected_dir,
        "rescale_expected",
        "rescale-reference",
    );
    let (ok, _, err) = run_sql(&reference, &["--data-dir", &data_arg]);
    assert!(ok, "{err}");
    let expected = file_rows(&expected_dir);
    assert_eq!(expected.len(), 30 * SENSORS);
    assert_eq!(file_rows(&out_dir), expected, "files differ");
    assert_eq!(
        table_rows("rescale_out"),
        table_rows("rescale_expected"),
        "PostgreSQL rows differ"
    );
    assert_eq!(
        topic_rows(&bootstrap, "rescale-test-out"),
        topic_rows(&bootstrap, "rescale-reference-out"),
        "Kafka rows differ"
    );
}

/// The broker is killed and restarted (same port, same data) twice while a checkpointed job
/// reads from it and writes to it in transactions: the job rides it out, and its output
/// equals an uninterrupted run's.
#[test]
fn a_job_survives_broker_restarts() {
    ensure_postgres();
    let tmp = tempfile::tempdir().unwrap();
    let broker_dir = tmp.path().join("broker");
    let port = common::free_port();
    let mut broker = BrokerProcess::start(&broker_dir, port, &[]);
    let bootstrap = broker.bootstrap();
    prepare(&bootstrap, ["restart_out", "restart_expected"]);
    let data_arg = tmp.path().join("state").display().to_string();
    let out_dir = tmp.path().join("out");
    let sql = script(&bootstrap, &out_dir, "restart_out", "restart-test");
    produce_rounds(&bootstrap, 0..20);
    let mut produced = 20;
    let mut job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data_arg]);
    for restart in 0..2 {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until && produced < ROUNDS {
            produce_rounds(&bootstrap, produced..produced + 2);
            produced += 2;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(job.is_running(), "the job ended early: {}", job.stderr());
        broker.kill();
        std::thread::sleep(Duration::from_millis(300 + restart * 700));
        broker = BrokerProcess::start(&broker_dir, port, &[]);
    }
    produce_rounds(&bootstrap, produced..ROUNDS);
    assert!(
        job.wait(Duration::from_secs(180)),
        "the job did not finish after the broker restarts: {}",
        job.stderr()
    );
    let expected_dir = tmp.path().join("expected");
    let reference = script(
        &bootstrap,
        &expected_dir,
        "restart_expected",
        "restart-reference",
    );
    let (ok, _, err) = run_sql(&reference, &["--data-dir", &data_arg]);
    assert!(ok, "{err}");
    assert_eq!(
        file_rows(&out_dir),
        file_rows(&expected_dir),
        "files differ"
    );
    assert_eq!(
        table_rows("restart_out"),
        table_rows("restart_expected"),
        "PostgreSQL rows differ"
    );
    let expected = topic_rows(&bootstrap, "restart-reference-out");
    assert_eq!(expected.len(), 30 * SENSORS);
    assert_eq!(
        topic_rows(&bootstrap, "restart-test-out"),
        expected,
        "Kafka rows differ"
    );
}
