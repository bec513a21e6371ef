//! The `nexmark` source through nexmark-flink's DDL and views (bench/nexmark), and
//! `PARTITIONED BY` filesystem tables written and read back through the `sluice` binary.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

/// nexmark-flink's `datagen` table over the `nexmark` connector, and its views.
fn nexmark_ddl(events: u64) -> String {
    let bench = common::manifest_dir().join("../../bench/nexmark");
    let ddl = std::fs::read_to_string(bench.join("events_nexmark.sql"))
        .unwrap()
        .replace("${EVENTS}", &events.to_string())
        .replace("${RATE}", "100")
        .replace("${BASE_TIME}", "2026-01-01 00:00:00");
    ddl + &std::fs::read_to_string(bench.join("views.sql")).unwrap()
}

/// Rows printed by the print sink, without the subtask prefix.
fn printed(stdout: &str) -> Vec<String> {
    let mut rows: Vec<String> = stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.find("> ") {
            Some(p) if l[..p].chars().all(|c| c.is_ascii_digit()) => l[p + 2..].to_string(),
            _ => l.to_string(),
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn nexmark_views_give_the_same_events_at_any_parallelism() {
    // 1000 events from the id 2: 1 person, 3 auctions and 46 bids in every 50 ids, people
    // and auctions numbered in order from 1001, 100 events a second from the base time.
    let (ok, people, err) = common::run_sql(
        &(nexmark_ddl(1000) + "SELECT id, `dateTime` FROM person;"),
        &[],
    );
    assert!(ok, "{err}");
    let people = printed(&people);
    assert_eq!(people.len(), 20);
    assert!(
        people.contains(&"+I[1001, 2026-01-01T00:00:00.490]".to_string()),
        "{people:?}"
    );
    assert!(
        people.contains(&"+I[1020, 2026-01-01T00:00:09.990]".to_string()),
        "{people:?}"
    );
    let (ok, auctions, err) = common::run_sql(
        &(nexmark_ddl(1000) + "SELECT id FROM auction WHERE expires > `dateTime`;"),
        &[],
    );
    assert!(ok, "{err}");
    let want: Vec<String> = (1001..=1060).map(|i| format!("+I[{i}]")).collect();
    let mut got = printed(&auctions);
    got.sort_by_key(|r| r.len());
    assert_eq!(got, want);
    // Every bid, at parallelism 1 and 3: the same multiset.
    let all = nexmark_ddl(1000) + "SELECT * FROM bid;";
    let (ok, p1, err) = common::run_sql(&all, &["--parallelism", "1"]);
    assert!(ok, "{err}");
    let (ok, p3, err) = common::run_sql(&all, &["--parallelism", "3"]);
    assert!(ok, "{err}");
    assert_eq!(printed(&p1).len(), 920);
    assert_eq!(printed(&p1), printed(&p3));
}

#[test]
fn nexmark_rejects_unknown_columns_and_options() {
    let sql = "CREATE TABLE n (event_type INT, bid ROW<auction BIGINT, cost BIGINT>) \
               WITH ('connector' = 'nexmark', 'events.num' = '10');\nSELECT * FROM n;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(!ok && err.contains("no field 'cost'"), "{err}");
    let sql = "CREATE TABLE n (event_type INT) WITH ('connector' = 'nexmark', 'events.nmu' = '10');\nSELECT * FROM n;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(!ok && err.contains("events.nmu"), "{err}");
}

/// Every file under `dir`, relative, with its lines sorted.
fn files(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .unwrap()
                    .parent()
                    .unwrap()
                    .display()
                    .to_string();
                let mut lines: Vec<String> = std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect();
                lines.sort();
                out.entry(rel).or_insert_with(Vec::new).extend(lines);
            }
        }
    }
    out
}

#[test]
fn partitioned_tables_write_a_directory_per_partition_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let table = format!(
        "CREATE TABLE t (id INT, name STRING, dt STRING, hm STRING) PARTITIONED BY (dt, hm) \
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\n",
        out.display()
    );
    let write = table.clone()
        + "CREATE TABLE src (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '6', \
           'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '6');\n\
           INSERT INTO t SELECT id, CONCAT('n', CAST(id AS STRING)), \
           CASE WHEN id < 3 THEN '2026-01-01' END, CASE WHEN id % 2 = 0 THEN '10:00' ELSE '11:00' END FROM src;";
    for p in ["1", "2"] {
        let _ = std::fs::remove_dir_all(&out);
        let (ok, _, err) = common::run_sql(&write, &["--parallelism", p]);
        assert!(ok, "{err}");
        // As Flink: the partition columns name the directories (':' escaped), not the files.
        let got = files(&out);
        let want: BTreeMap<String, Vec<String>> = [
            ("dt=2026-01-01/hm=10%3A00", vec!["2,n2"]),
            ("dt=2026-01-01/hm=11%3A00", vec!["1,n1"]),
            ("dt=__DEFAULT_PARTITION__/hm=10%3A00", vec!["4,n4", "6,n6"]),
            ("dt=__DEFAULT_PARTITION__/hm=11%3A00", vec!["3,n3", "5,n5"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
        assert_eq!(got, want, "parallelism {p}");
    }
    let (ok, stdout, err) = common::run_sql(&(table + "SELECT * FROM t WHERE hm = '10:00';"), &[]);
    assert!(ok, "{err}");
    assert_eq!(
        printed(&stdout),
        vec![
            "+I[2, n2, 2026-01-01, 10:00]",
            "+I[4, n4, null, 10:00]",
            "+I[6, n6, null, 10:00]"
        ]
    );
}

#[test]
fn partition_keys_must_be_physical_columns() {
    let sql = "CREATE TABLE t (id INT) PARTITIONED BY (day) \
               WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'csv');\nSELECT * FROM t;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(!ok && err.contains("PARTITIONED BY names 'day'"), "{err}");
}

#[test]
fn nexmark_q10_runs_unchanged_and_commits_its_partitions() {
    // nexmark-flink's q10 with its partition commit options, over 2,000 events (20 s).
    let dir = tempfile::tempdir().unwrap();
    let bench = common::manifest_dir().join("../../bench/nexmark");
    let q10 = std::fs::read_to_string(bench.join("q10.sql"))
        .unwrap()
        .replace("${OUT}", &dir.path().display().to_string());
    let (ok, _, err) = common::run_sql(&(nexmark_ddl(2000) + &q10), &[]);
    assert!(ok, "{err}");
    let out = dir.path().join("q10");
    let got = files(&out);
    // 20 s of bids from 00:00:00: the minute 00:00 of one day, with its success file.
    let dirs: Vec<&String> = got.keys().collect();
    assert_eq!(dirs, vec!["dt=2026-01-01/hm=00%3A00"], "{got:?}");
    let part = out.join("dt=2026-01-01/hm=00%3A00");
    assert!(part.join("_SUCCESS").exists());
    let rows = &got["dt=2026-01-01/hm=00%3A00"];
    // 1,840 bids, each `auction,bidder,price,dateTime,extra` (the partition columns are in
    // the path): the success file is empty.
    assert_eq!(rows.len(), 1840);
    assert!(
        rows.iter().all(|r| r.split(',').count() == 5),
        "{:?}",
        &rows[..3]
    );
}

#[test]
fn a_metastore_commit_policy_is_refused_by_name() {
    let sql = "CREATE TABLE t (id INT, dt STRING) PARTITIONED BY (dt) WITH ('connector' = 'filesystem', \
               'path' = '/tmp/x', 'format' = 'csv', 'sink.partition-commit.policy.kind' = 'metastore,success-file');\n\
               CREATE TABLE s (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');\n\
               INSERT INTO t SELECT id, 'a' FROM s;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(!ok && err.contains("'metastore'"), "{err}");
}

/// `sink.rolling-policy.file-size`: a part file that reaches the size is closed and the next
/// begun (visible at once without checkpoints, with its checkpoint with them), in CSV and
/// Parquet; every row once.
#[test]
fn the_rolling_policy_closes_part_files_by_size() {
    let dir = tempfile::tempdir().unwrap();
    for (format, checkpoints) in [("csv", ""), ("csv", "50 ms"), ("parquet", "50 ms")] {
        let out = dir
            .path()
            .join(format!("{format}-{}", checkpoints.is_empty()));
        let set = if checkpoints.is_empty() {
            String::new()
        } else {
            format!("SET 'execution.checkpointing.interval' = '{checkpoints}';\n")
        };
        let (ok, _, err) = common::run_sql(
            &format!(
                "{set}CREATE TABLE g (id BIGINT, name STRING) WITH ('connector' = 'datagen',
  'number-of-rows' = '20000', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1',
  'fields.id.end' = '20000', 'fields.name.length' = '20');
CREATE TABLE o (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '{}',
  'format' = '{format}', 'sink.rolling-policy.file-size' = '64kb');
INSERT INTO o SELECT * FROM g;",
                out.display()
            ),
            &[],
        );
        assert!(ok, "{err}");
        let files: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            files
                .iter()
                .all(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.')),
            "{files:?}"
        );
        assert!(files.len() >= 5, "{format} {checkpoints}: {files:?}");
        for f in &files {
            // The size, give or take the last batch written before the check.
            let size = std::fs::metadata(f).unwrap().len();
            assert!(size < 64 * 1024 + 300 * 1024, "{f:?} {size}");
        }
        let (ok, out, err) = common::run_sql(
            &format!(
                "CREATE TABLE r (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = '{format}');
SELECT COUNT(*), COUNT(DISTINCT id) FROM r;",
                out.display()
            ),
            &[],
        );
        assert!(ok, "{err}");
        assert_eq!(out.lines().last(), Some("+U[20000, 20000]"), "{out}");
    }
    let (ok, _, err) = common::run_sql(
        "CREATE TABLE g (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');
CREATE TABLE o (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'csv', 'sink.rolling-policy.file-size' = 'big');
INSERT INTO o SELECT * FROM g;",
        &[],
    );
    assert!(
        !ok && err.contains("'sink.rolling-policy.file-size' = 'big'"),
        "{err}"
    );
}
