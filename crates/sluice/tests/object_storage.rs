//! The filesystem connector on object storage (`s3://` paths) against moto's S3-compatible
//! server (from PyPI, installed by `test.sh`), with boto3 and pyarrow as the independent
//! readers (`tests/clients/s3_objects.py`): Parquet and CSV written, partitioned, and read
//! back (Parquet, CSV and Avro container files); and a job killed with SIGKILL again and again whose objects hold every row once.

mod common;

use common::{client_script, free_port, python, run_sql, RunningJob};
use rand::{Rng, SeedableRng};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server on a free port, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let server = python().with_file_name("moto_server");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server (./test.sh installs moto[server])");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        moto.objects(&["lake", "create"]);
        moto
    }

    /// Runs `s3_objects.py` on this server (a few times: a server that has just started, on
    /// a loaded machine, may fail a request or two).
    fn objects(&self, args: &[&str]) -> Vec<String> {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let out = Command::new(python())
                .arg(client_script("s3_objects.py"))
                .arg(&self.endpoint)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                lines.sort();
                return lines;
            }
            let why = String::from_utf8_lossy(&out.stderr).to_string();
            eprintln!("s3_objects.py {args:?} failed (tried again): {why}");
            failures.push(why);
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("s3_objects.py {args:?}: {}", failures.join("\n---\n"));
    }

    /// The table options of the bucket.
    fn options(&self) -> String {
        format!(
            "'s3.endpoint' = '{}', 's3.access-key' = 'test', 's3.secret-key' = 'test',
             's3.region' = 'us-east-1', 's3.path.style.access' = 'true'",
            self.endpoint
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn parquet_csv_and_avro_on_s3_are_written_partitioned_and_read_back() {
    let moto = Moto::start();
    let o = moto.options();
    let sql = format!(
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '300',
            'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '300');
         CREATE TABLE pq (id BIGINT, name STRING, k INT) PARTITIONED BY (k) WITH (
            'connector' = 'filesystem', 'path' = 's3://lake/pq', 'format' = 'parquet',
            'sink.partition-commit.policy.kind' = 'success-file', {o});
         CREATE TABLE lines (id BIGINT, name STRING, k INT) PARTITIONED BY (k) WITH (
            'connector' = 'filesystem', 'path' = 's3://lake/csv', 'format' = 'csv', {o});
         CREATE TABLE av (id BIGINT, name STRING, k INT) PARTITIONED BY (k) WITH (
            'connector' = 'filesystem', 'path' = 's3://lake/avro', 'format' = 'avro', {o});
         CREATE TEMPORARY VIEW rows_ AS SELECT id, CONCAT('n', CAST(id AS STRING)) AS name,
            CAST(MOD(id, 3) AS INT) AS k FROM g;
         INSERT INTO pq SELECT * FROM rows_;
         INSERT INTO lines SELECT * FROM rows_;
         INSERT INTO av SELECT * FROM rows_;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let mut expected: Vec<String> = (1..=300).map(|i| format!("k={}/{i},n{i}", i % 3)).collect();
    expected.sort();
    // pyarrow reads Sluice's Parquet objects; they hold the rows of the CSV output.
    let parquet = moto.objects(&["lake", "rows", "pq"]);
    assert_eq!(parquet, expected);
    assert_eq!(moto.objects(&["lake", "rows", "csv"]), expected);
    // fastavro reads the Avro container files.
    assert_eq!(moto.objects(&["lake", "rows", "avro"]), expected);
    let keys = moto.objects(&["lake", "list"]);
    assert!(keys.contains(&"pq/k=0/_SUCCESS".to_string()), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.contains(".inprogress")),
        "hidden objects left: {keys:?}"
    );

    // Sluice reads them back, partitions from the keys (`s3a://`, Hadoop's scheme, too).
    let sql = format!(
        "CREATE TABLE pq (id BIGINT, name STRING, k INT) PARTITIONED BY (k) WITH (
            'connector' = 'filesystem', 'path' = 's3a://lake/pq', 'format' = 'parquet', {o});
         SELECT k, COUNT(*) AS n, SUM(id) AS total FROM pq GROUP BY k;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    for (k, total) in [(0, 15150), (1, 14950), (2, 15050)] {
        assert!(
            stdout.contains(&format!("+I[{k}, 100, {total}]"))
                || stdout.contains(&format!("+U[{k}, 100, {total}]")),
            "k={k}: {stdout}"
        );
    }

    // And the Avro files too.
    let (ok, stdout, stderr) = run_sql(
        &sql.replace("s3a://lake/pq", "s3://lake/avro")
            .replace("'parquet'", "'avro'"),
        &[],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("[1, 100, 14950]"), "{stdout}");

    // A missing prefix and a bad option say what and where.
    let (ok, _, stderr) = run_sql(&sql.replace("s3a://lake/pq", "s3://lake/nothing"), &[]);
    assert!(!ok && stderr.contains("s3://lake/nothing"), "{stderr}");
    let (ok, _, stderr) = run_sql(
        "CREATE TABLE f (a INT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x',
            'format' = 'csv', 's3.endpoint' = 'http://127.0.0.1:1');
         INSERT INTO f VALUES (1);",
        &[],
    );
    assert!(
        !ok && stderr.contains("'s3.endpoint' is for paths on object storage"),
        "{stderr}"
    );
}

const ROWS: usize = 6000;

#[test]
fn object_storage_output_is_exactly_once_across_kills() {
    let moto = Moto::start();
    let o = moto.options();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("state");
    let data_arg = data_dir.display().to_string();
    let sql = format!(
        "SET 'pipeline.name' = 's3-crash';
         SET 'execution.checkpointing.interval' = '200 ms';
         CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '1500',
            'number-of-rows' = '{ROWS}', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
            'fields.id.end' = '{ROWS}');
         CREATE TABLE out (id BIGINT, k INT) PARTITIONED BY (k) WITH (
            'connector' = 'filesystem', 'path' = 's3://lake/crash', 'format' = 'parquet',
            'sink.rolling-policy.file-size' = '2 kb', {o});
         INSERT INTO out SELECT id, CAST(MOD(id, 2) AS INT) FROM g;"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x53);
    let (mut kills, mut restores) = (0, 0);
    let mut job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data_arg]);
    while kills < 6 {
        std::thread::sleep(Duration::from_millis(rng.random_range(400..1200)));
        if !job.is_running() {
            break;
        }
        job.kill();
        kills += 1;
        if job.stderr().contains("Restoring job") {
            restores += 1;
        }
        job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data_arg]);
    }
    assert!(
        job.wait(Duration::from_secs(120)),
        "the last run did not finish: {}",
        job.stderr()
    );
    eprintln!("{kills} kills, {restores} runs restored from a checkpoint");
    assert!(
        kills >= 3,
        "too few kills ({kills}): the job finished too soon"
    );
    assert!(
        restores >= 2,
        "too few runs restored from a checkpoint ({restores})"
    );
    let rows = moto.objects(&["lake", "rows", "crash"]);
    let mut ids: Vec<usize> = rows
        .iter()
        .map(|r| r.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    let expected: Vec<usize> = (1..=ROWS).collect();
    assert_eq!(
        ids.len(),
        ROWS,
        "rows lost or written twice after {kills} kills"
    );
    assert_eq!(ids, expected);
    assert!(
        rows.iter().all(|r| r.starts_with(&format!(
            "k={}/",
            r.rsplit('/').next().unwrap().parse::<usize>().unwrap() % 2
        ))),
        "rows in the wrong partition"
    );
}

/// A part file over 16 MB (170,000 rows of about 110 bytes) goes up as a multipart upload,
/// and reads back whole.
#[test]
fn a_large_part_file_is_uploaded_in_parts() {
    let moto = Moto::start();
    let o = moto.options();
    let sql = format!(
        "CREATE TABLE g (id BIGINT, s STRING) WITH ('connector' = 'datagen',
            'number-of-rows' = '170000', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
            'fields.id.end' = '170000', 'fields.s.length' = '100');
         CREATE TABLE big (id BIGINT, s STRING) WITH ('connector' = 'filesystem',
            'path' = 's3://lake/big', 'format' = 'csv', {o});
         INSERT INTO big SELECT * FROM g;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let keys: Vec<String> = moto
        .objects(&["lake", "list"])
        .into_iter()
        .filter(|k| k.starts_with("big/"))
        .collect();
    assert_eq!(keys.len(), 1, "one part file: {keys:?}");
    let rows = moto.objects(&["lake", "rows", "big"]);
    assert_eq!(rows.len(), 170_000);
    let mut ids: Vec<u64> = rows
        .iter()
        .map(|r| r.split(',').next().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=170_000).collect::<Vec<u64>>());
    // The count query over it, by Sluice.
    let sql = format!(
        "CREATE TABLE big (id BIGINT, s STRING) WITH ('connector' = 'filesystem',
            'path' = 's3://lake/big', 'format' = 'csv', {o});
         SELECT COUNT(*) AS n, SUM(id) AS total FROM big;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("14450085000]"), "{stdout}");
}
