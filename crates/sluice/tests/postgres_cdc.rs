//! The `postgres-cdc` source against the machine's PostgreSQL (its `wal_level` set to
//! `logical`, and PostgreSQL restarted, when it is not): rows inserted, updated and deleted
//! reach an upsert table (jdbc) exactly, across a SIGKILL of the job and a restart of
//! PostgreSQL under it.

mod common;

use common::{ensure_postgres, pg_cluster, psql, psql_try, RunningJob};
use std::time::{Duration, Instant};

fn ensure_logical_wal() {
    ensure_postgres();
    if psql("SHOW wal_level") != "logical" {
        psql("ALTER SYSTEM SET wal_level = logical");
        pg_cluster("restart");
    }
}

/// The rows of `table`, one `id:name:amount:ok` a line, by id.
fn rows(table: &str) -> String {
    psql_try(&format!(
        "SELECT coalesce(string_agg(id || ':' || coalesce(name, '-') || ':' || amount || ':' || ok, ' ' ORDER BY id), '') FROM {table}"
    ))
    .unwrap_or_else(|| "(not readable)".into())
}

fn wait_equal(src: &str, dst: &str, job: &mut RunningJob, what: &str) {
    let started = Instant::now();
    loop {
        let (a, b) = (rows(src), rows(dst));
        if a == b {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && job.is_running(),
            "{what}: source {a} but sink {b}\n{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn changes_reach_an_upsert_table_exactly_across_a_kill_and_a_postgres_restart() {
    ensure_logical_wal();
    let id = std::process::id();
    let (src, dst, slot, publication) = (
        format!("cdc_src_{id}"),
        format!("cdc_dst_{id}"),
        format!("sluice_test_{id}"),
        format!("sluice_pub_{id}"),
    );
    // What an earlier run that failed half-way left (a slot keeps WAL until it is dropped).
    psql("SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name LIKE 'sluice\\_test\\_%' AND NOT active");
    psql(&format!(
        "DROP TABLE IF EXISTS {src}, {dst};
         CREATE TABLE {src} (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10, 2), ok BOOLEAN);
         ALTER TABLE {src} REPLICA IDENTITY FULL;
         CREATE TABLE {dst} (id INT PRIMARY KEY, name TEXT, amount NUMERIC(10, 2), ok BOOLEAN);
         INSERT INTO {src} SELECT i, 'n' || i, i * 1.5, i % 2 = 0 FROM generate_series(1, 20000) i;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "SET 'execution.checkpointing.interval' = '200 ms';
SET 'pipeline.name' = 'cdc-{id}';
CREATE TABLE src (id INT, name STRING, amount DECIMAL(10, 2), ok BOOLEAN, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'postgres-cdc', 'hostname' = '127.0.0.1', 'port' = '5432', 'username' = 'postgres',
  'database-name' = 'test', 'schema-name' = 'public', 'table-name' = '{src}',
  'slot.name' = '{slot}', 'debezium.publication.name' = '{publication}');
CREATE TABLE dst (id INT, name STRING, amount DECIMAL(10, 2), ok BOOLEAN, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/test', 'table-name' = '{dst}',
  'username' = 'postgres');
INSERT INTO dst SELECT * FROM src;
"
    );
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let mut job = RunningJob::start_with(&sql, dir.path(), &args);
    // The snapshot, and changes made while it is read.
    psql(&format!(
        "UPDATE {src} SET name = 'early' WHERE id <= 3; DELETE FROM {src} WHERE id = 4;"
    ));
    wait_equal(&src, &dst, &mut job, "the snapshot");
    psql(&format!(
        "INSERT INTO {src} VALUES (20001, 'new', 1.25, true);
         UPDATE {src} SET amount = amount + 100 WHERE id % 1000 = 0;
         DELETE FROM {src} WHERE id BETWEEN 10 AND 19;
         UPDATE {src} SET id = 30000 WHERE id = 5;"
    ));
    wait_equal(&src, &dst, &mut job, "the first changes");

    // kill -9, changes while it is down, and a restart from its checkpoint.
    std::thread::sleep(Duration::from_millis(600));
    job.kill();
    psql(&format!(
        "INSERT INTO {src} VALUES (20002, 'while down', 2.5, false);
         UPDATE {src} SET ok = NOT ok WHERE id < 100;
         DELETE FROM {src} WHERE id = 20001;"
    ));
    let mut job = RunningJob::start_with(&sql, dir.path(), &args);
    wait_equal(&src, &dst, &mut job, "after the kill");
    assert!(job.stderr().contains("Restoring job"), "{}", job.stderr());

    // PostgreSQL restarted under the job: it fails, restarts from its checkpoint, goes on.
    pg_cluster("restart");
    psql(&format!(
        "INSERT INTO {src} VALUES (20003, 'after restart', 3.75, true);
         UPDATE {src} SET name = 'late' WHERE id BETWEEN 100 AND 110;"
    ));
    wait_equal(&src, &dst, &mut job, "after the PostgreSQL restart");
    assert!(job.stderr().contains("restarting in"), "{}", job.stderr());
    // The slot is advanced as checkpoints complete (it keeps only what no checkpoint holds).
    let confirmed = psql(&format!(
        "SELECT confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    assert_eq!(confirmed, "t");
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());

    // Upserts from whole rows too: a changed key deletes the old one.
    let upsert = sql
        .replace(
            "'debezium.publication.name'",
            "'changelog-mode' = 'upsert', 'debezium.publication.name'",
        )
        .replace(&format!("'cdc-{id}'"), &format!("'cdc-upsert-full-{id}'"));
    psql(&format!("TRUNCATE {dst}"));
    let mut job = RunningJob::start_with(&upsert, dir.path(), &args);
    wait_equal(&src, &dst, &mut job, "the upsert snapshot");
    psql(&format!("UPDATE {src} SET id = 50000 WHERE id = 42"));
    wait_equal(&src, &dst, &mut job, "an upsert of a new key");
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());

    // A table without whole rows before updates needs 'changelog-mode' = 'upsert'.
    psql(&format!("ALTER TABLE {src} REPLICA IDENTITY DEFAULT"));
    let (ok, _, err) = common::run_sql(
        &format!(
            "CREATE TABLE src (id INT, name STRING, amount DECIMAL(10, 2), ok BOOLEAN, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'postgres-cdc', 'hostname' = '127.0.0.1', 'username' = 'postgres',
  'database-name' = 'test', 'schema-name' = 'public', 'table-name' = '{src}', 'slot.name' = '{slot}',
  'debezium.publication.name' = '{publication}');
SELECT * FROM src;"
        ),
        &[],
    );
    assert!(!ok && err.contains("REPLICA IDENTITY FULL"), "{err}");

    // ... with which deletes carry only the key, and Sluice keeps the last row of each key.
    let upsert = sql
        .replace(
            "'debezium.publication.name'",
            "'changelog-mode' = 'upsert', 'debezium.publication.name'",
        )
        .replace(&format!("'cdc-{id}'"), &format!("'cdc-upsert-{id}'"));
    psql(&format!("TRUNCATE {dst}"));
    let mut job = RunningJob::start_with(&upsert, dir.path(), &args);
    wait_equal(&src, &dst, &mut job, "the upsert snapshot");
    psql(&format!(
        "UPDATE {src} SET name = 'upserted' WHERE id BETWEEN 20 AND 30;
         DELETE FROM {src} WHERE id BETWEEN 31 AND 40;
         UPDATE {src} SET id = 40000 WHERE id = 41;"
    ));
    wait_equal(&src, &dst, &mut job, "the upsert changes");
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());

    // Clean up: a slot nobody reads keeps WAL on the server for ever.
    psql(&format!(
        "SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {publication}; DROP TABLE {src}, {dst};"
    ));
}

/// Flink CDC's metadata columns: the database, schema and table names, the commit time of a
/// change (the epoch for the snapshot's rows) and its kind.
#[test]
fn metadata_columns_name_the_table_and_time_each_change() {
    ensure_logical_wal();
    let id = std::process::id();
    let (src, slot, publication) = (
        format!("cdc_meta_{id}"),
        format!("sluice_test_meta_{id}"),
        format!("sluice_pub_meta_{id}"),
    );
    psql(&format!(
        "DROP TABLE IF EXISTS {src};
         CREATE TABLE {src} (id INT PRIMARY KEY, name TEXT);
         ALTER TABLE {src} REPLICA IDENTITY FULL;
         INSERT INTO {src} VALUES (1, 'a');"
    ));
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE TABLE src (id INT, name STRING,
  db STRING METADATA FROM 'database_name' VIRTUAL, sch STRING METADATA FROM 'schema_name' VIRTUAL,
  tbl STRING METADATA FROM 'table_name' VIRTUAL, op_ts TIMESTAMP_LTZ(3) METADATA FROM 'op_ts' VIRTUAL,
  kind STRING METADATA FROM 'row_kind' VIRTUAL, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'postgres-cdc', 'hostname' = '127.0.0.1', 'username' = 'postgres',
  'database-name' = 'test', 'schema-name' = 'public', 'table-name' = '{src}',
  'slot.name' = '{slot}', 'debezium.publication.name' = '{publication}');
SELECT id, name, db, sch, tbl, kind, YEAR(op_ts) > 2000 AS recent, op_ts FROM src;"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    let snapshot = format!("+I[1, a, test, public, {src}, +I, false, 1970-01-01T00:00:00Z]");
    assert!(
        job.wait_for(Duration::from_secs(30), |l| l.contains(&snapshot)),
        "{:?}\n{}",
        job.seen,
        job.stderr()
    );
    psql(&format!("UPDATE {src} SET name = 'b' WHERE id = 1"));
    for kind in ["-U[1, a", "+U[1, b"] {
        let expected = format!("{kind}, test, public, {src}, {}, true,", &kind[..2]);
        assert!(
            job.wait_for(Duration::from_secs(30), |l| l.contains(&expected)),
            "{expected} in {:?}\n{}",
            job.seen,
            job.stderr()
        );
    }
    job.kill();
    let (ok, _, err) = common::run_sql(&sql.replace("'row_kind'", "'op_type'"), &[]);
    assert!(
        !ok && err.contains("op_type") && err.contains("row_kind"),
        "{err}"
    );
    psql(&format!(
        "SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {publication}; DROP TABLE {src};"
    ));
}

/// `schema-name` and `table-name` are regular expressions, as Flink CDC's: every matching table
/// (shards of one table) is read, snapshot and changes, into the one Sluice table.
#[test]
fn a_pattern_reads_every_matching_table() {
    ensure_logical_wal();
    let id = std::process::id();
    let (a, b, other) = (
        format!("cdc_shard_{id}_1"),
        format!("cdc_shard_{id}_2"),
        format!("cdc_shardx_{id}"),
    );
    let (slot, publication) = (
        format!("sluice_test_shard_{id}"),
        format!("sluice_pub_shard_{id}"),
    );
    psql(&format!(
        "DROP TABLE IF EXISTS {a}, {b}, {other};
         CREATE TABLE {a} (id INT PRIMARY KEY, name TEXT);
         CREATE TABLE {b} (id INT PRIMARY KEY, name TEXT);
         CREATE TABLE {other} (id INT PRIMARY KEY, name TEXT);
         ALTER TABLE {a} REPLICA IDENTITY FULL; ALTER TABLE {b} REPLICA IDENTITY FULL;
         INSERT INTO {a} VALUES (1, 'a1'); INSERT INTO {b} VALUES (2, 'b2');
         INSERT INTO {other} VALUES (3, 'not read');"
    ));
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE TABLE src (id INT, name STRING, tbl STRING METADATA FROM 'table_name' VIRTUAL,
  PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'postgres-cdc', 'hostname' = '127.0.0.1', 'username' = 'postgres',
  'database-name' = 'test', 'schema-name' = 'pub.*', 'table-name' = 'cdc_shard_{id}_[0-9]+',
  'slot.name' = '{slot}', 'debezium.publication.name' = '{publication}');
SELECT id, name, tbl FROM src;"
    );
    let mut job = RunningJob::start(&sql, dir.path());
    for line in [format!("+I[1, a1, {a}]"), format!("+I[2, b2, {b}]")] {
        assert!(
            job.wait_for(Duration::from_secs(30), |l| l.contains(&line)),
            "{line} in {:?}\n{}",
            job.seen,
            job.stderr()
        );
    }
    psql(&format!(
        "INSERT INTO {b} VALUES (4, 'b4'); UPDATE {a} SET name = 'a1!' WHERE id = 1;
         INSERT INTO {other} VALUES (5, 'not read either');"
    ));
    for line in [
        format!("+I[4, b4, {b}]"),
        format!("-U[1, a1, {a}]"),
        format!("+U[1, a1!, {a}]"),
    ] {
        assert!(
            job.wait_for(Duration::from_secs(30), |l| l.contains(&line)),
            "{line} in {:?}\n{}",
            job.seen,
            job.stderr()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    job.kill();
    assert!(
        !job.seen.iter().any(|l| l.contains("not read")),
        "{:?}",
        job.seen
    );
    // A pattern no table matches says so.
    let (ok, _, err) = common::run_sql(&sql.replace("cdc_shard_", "no_such_shard_"), &[]);
    assert!(!ok && err.contains("no PostgreSQL table"), "{err}");
    psql(&format!(
        "SELECT pg_drop_replication_slot('{slot}'); DROP PUBLICATION {publication}; DROP TABLE {a}, {b}, {other};"
    ));
}
