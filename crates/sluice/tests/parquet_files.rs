//! The filesystem connector's `parquet` format: files written by Sluice (partitioned, with
//! checkpoints, across a kill -9) are read back by pyarrow (installed by test.sh) with the
//! same rows as the query's CSV output, every row once, and by Sluice's own source.

mod common;

use common::RunningJob;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `(id, name, v, p)` rows, sorted.
type Rows = Vec<(i64, String, f64, i32)>;

fn parse(line: &str, sep: char) -> (i64, String, f64, i32) {
    let f: Vec<&str> = line.split(sep).collect();
    assert_eq!(f.len(), 4, "{line}");
    (
        f[0].parse().unwrap(),
        f[1].to_string(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    )
}

/// The CSV files' rows (`id,name,v,p`).
fn csv_rows(dir: &Path) -> Rows {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            rows.push(parse(line, ','));
        }
    }
    rows.sort_by_key(|a| a.0);
    rows
}

/// The Parquet files' rows as pyarrow reads them (it prints the columns by name: id, name,
/// p, v).
fn pyarrow_rows(dir: &Path) -> Rows {
    let out = Command::new(common::python())
        .arg(common::client_script("parquet_rows.py"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut rows: Rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f.len(), 4, "{l}");
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[3].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    rows.sort_by_key(|a| a.0);
    rows
}

#[test]
fn parquet_files_read_back_by_pyarrow_and_sluice_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, pq) = (dir.path().join("csv"), dir.path().join("pq"));
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '100 ms';
SET 'pipeline.name' = 'parquet-test';
CREATE TABLE g (id BIGINT, name STRING, v DOUBLE) WITH ('connector' = 'datagen',
  'number-of-rows' = '3000', 'rows-per-second' = '2000', 'fields.id.kind' = 'sequence',
  'fields.id.start' = '1', 'fields.id.end' = '3000', 'fields.name.length' = '6');
CREATE TABLE c (id BIGINT, name STRING, v DOUBLE, p INT) WITH (
  'connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
CREATE TABLE q (id BIGINT, name STRING, v DOUBLE, p INT) PARTITIONED BY (p) WITH (
  'connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
INSERT INTO c SELECT id, name, v, CAST(id % 3 AS INT) FROM g;
INSERT INTO q SELECT id, name, v, CAST(id % 3 AS INT) FROM g;
",
        csv.display(),
        pq.display()
    );
    // Killed half-way, then run again from its checkpoint to the end.
    let mut first = RunningJob::start(&sql, dir.path());
    std::thread::sleep(Duration::from_millis(800));
    first.kill();
    let mut second = RunningJob::start(&sql, dir.path());
    assert!(second.wait(Duration::from_secs(60)), "{}", second.stderr());
    assert!(
        second.stderr().contains("Restoring job 'parquet-test'"),
        "{}",
        second.stderr()
    );

    let from_csv = csv_rows(&csv);
    assert_eq!(from_csv.len(), 3000);
    let ids: Vec<i64> = from_csv.iter().map(|r| r.0).collect();
    assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "every row once");
    let from_parquet = pyarrow_rows(&pq);
    assert_eq!(from_parquet.len(), 3000);
    for (c, p) in from_csv.iter().zip(&from_parquet) {
        assert_eq!((c.0, &c.1, c.3), (p.0, &p.1, p.3), "{c:?} {p:?}");
        assert_eq!(c.2.to_bits(), p.2.to_bits(), "{c:?} {p:?}");
    }

    // Sluice's source reads them back, partitions included.
    let (ok, out, err) = common::run_sql(
        &format!(
            "CREATE TABLE r (id BIGINT, name STRING, v DOUBLE, p INT) PARTITIONED BY (p) WITH (
  'connector' = 'filesystem', 'path' = '{}', 'format' = 'parquet');
SELECT COUNT(*) AS n, SUM(id) AS s, SUM(p) AS ps FROM r;",
            pq.display()
        ),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().last(), Some("+U[3000, 4501500, 3000]"), "{out}");
}
