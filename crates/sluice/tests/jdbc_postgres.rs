//! End-to-end tests of the `jdbc` sink against the PostgreSQL server on this machine (started
//! if it is not running): rows arrive, upserts update, deletes delete, a table that does not
//! fit is refused before the job starts, and a restart of PostgreSQL under a running job loses
//! and duplicates nothing. One test function, as the restart would disturb the others.

mod common;

use common::{ensure_postgres, kcat, psql, psql_try, run_sql, sluice, BrokerProcess, RunningJob};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const URL: &str = "jdbc:postgresql://127.0.0.1:5432/test";

fn restart_postgres() {
    common::pg_cluster("restart");
}

fn sink(table: &str, columns: &str, key: &str) -> String {
    format!(
        "CREATE TABLE {table} ({columns}{key}) WITH ('connector' = 'jdbc', 'url' = '{URL}', 'table-name' = '{table}', 'username' = 'postgres');\n"
    )
}

#[test]
fn jdbc_sink_against_postgresql() {
    ensure_postgres();
    let id = std::process::id();
    appends_upserts_and_deletes(id);
    mismatched_tables_are_refused_before_the_job_starts(id);
    a_postgresql_restart_loses_and_duplicates_nothing(id);
}

fn appends_upserts_and_deletes(id: u32) {
    let raw = format!("clicks_raw_{id}");
    let totals = format!("page_totals_{id}");
    psql(&format!(
        "DROP TABLE IF EXISTS {raw}; DROP TABLE IF EXISTS {totals};
         CREATE TABLE {raw} (user_id text, url text, ts timestamp(3));
         CREATE TABLE {totals} (url varchar(100) PRIMARY KEY, hits bigint, last_seen timestamp(3));"
    ));
    let data = common::data_dir().join("clicks.json");
    let sql = format!(
        "CREATE TABLE clicks (user_id STRING, url STRING, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
{}{}INSERT INTO {raw} SELECT * FROM clicks;
INSERT INTO {totals} SELECT url, COUNT(*), MAX(ts) FROM clicks GROUP BY url;",
        data.display(),
        sink(&raw, "user_id STRING, url STRING, ts TIMESTAMP(3)", ""),
        sink(&totals, "url STRING, hits BIGINT, last_seen TIMESTAMP(3)", ", PRIMARY KEY (url) NOT ENFORCED"),
    );
    let (ok, _, err) = run_sql(&sql, &["--parallelism", "2"]);
    assert!(ok, "{err}");
    let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut lines = 0;
    for l in std::fs::read_to_string(&data).unwrap().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        lines += 1;
        let e = expected
            .entry(v["url"].as_str().unwrap().to_string())
            .or_insert((0, String::new()));
        e.0 += 1;
        let ts = v["ts"].as_str().unwrap().to_string();
        if ts > e.1 {
            e.1 = ts;
        }
    }
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {raw}")),
        lines.to_string()
    );
    let got = psql(&format!(
        "SELECT url || '|' || hits || '|' || to_char(last_seen, 'YYYY-MM-DD HH24:MI:SS.MS') FROM {totals} ORDER BY url"
    ));
    let want: Vec<String> = expected
        .iter()
        .map(|(u, (n, ts))| format!("{u}|{n}|{ts}"))
        .collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want);

    // A changelog with deletes (an upsert-kafka topic with a tombstone) into a keyed table.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), common::free_port(), &[]);
    let bs = broker.bootstrap();
    sluice(&["topics", "create", "prices", "-b", &bs], "");
    kcat(
        &["-P", "-b", &bs, "-t", "prices", "-K", "|", "-Z"],
        "{\"sku\":\"a\"}|{\"sku\":\"a\",\"price\":1.5}\n{\"sku\":\"b\"}|{\"sku\":\"b\",\"price\":2}\n{\"sku\":\"a\"}|{\"sku\":\"a\",\"price\":3.25}\n{\"sku\":\"c\"}|{\"sku\":\"c\",\"price\":4}\n{\"sku\":\"b\"}|\n",
    );
    let prices = format!("prices_{id}");
    psql(&format!(
        "DROP TABLE IF EXISTS {prices}; CREATE TABLE {prices} (sku text PRIMARY KEY, price numeric(10, 2));
         INSERT INTO {prices} VALUES ('b', 9), ('z', 1);"
    ));
    let sql =
        format!(
        "CREATE TABLE src (sku STRING, price DECIMAL(10, 2), PRIMARY KEY (sku) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = 'prices', 'properties.bootstrap.servers' = '{bs}',
  'scan.bounded.mode' = 'latest-offset', 'key.format' = 'json', 'value.format' = 'json');
{}INSERT INTO {prices} SELECT * FROM src;",
        sink(&prices, "sku STRING, price DECIMAL(10, 2)", ", PRIMARY KEY (sku) NOT ENFORCED")
    );
    let (ok, _, err) = run_sql(&sql, &[]);
    assert!(ok, "{err}");
    assert_eq!(
        psql(&format!(
            "SELECT sku || '=' || price FROM {prices} ORDER BY sku"
        )),
        "a=3.25\nc=4.00\nz=1.00"
    );
    psql(&format!(
        "DROP TABLE {raw}; DROP TABLE {totals}; DROP TABLE {prices};"
    ));
}

fn mismatched_tables_are_refused_before_the_job_starts(id: u32) {
    let t = format!("narrow_{id}");
    psql(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id integer, name text);"
    ));
    let job = |columns: &str, key: &str, query: &str| {
        let sql = format!(
            "CREATE TABLE g (id INT, name STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '5', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '5');
{}INSERT INTO {t} {query};",
            sink(&t, columns, key)
        );
        run_sql(&sql, &[])
    };
    let (ok, _, err) = job("id INT, nick STRING", "", "SELECT * FROM g");
    assert!(
        !ok && err.contains("column 'nick' does not exist in database table"),
        "{err}"
    );
    let (ok, _, err) = job("id INT, name INT", "", "SELECT id, id * 2 FROM g");
    assert!(
        !ok && err.contains("column 'name' is INT in Sluice but text"),
        "{err}"
    );
    let (ok, _, err) = job(
        "name STRING, n BIGINT",
        "",
        "SELECT name, COUNT(*) FROM g GROUP BY name",
    );
    assert!(
        !ok && err.contains("the jdbc sink needs a PRIMARY KEY"),
        "{err}"
    );
    let (ok, _, err) = job(
        "id INT, name STRING",
        ", PRIMARY KEY (id) NOT ENFORCED",
        "SELECT * FROM g",
    );
    assert!(
        !ok && err.contains("not a primary key or unique constraint"),
        "{err}"
    );
    let (ok, _, err) = job("id INT, name STRING", "", "SELECT * FROM g");
    assert!(ok, "{err}");
    assert_eq!(psql(&format!("SELECT count(*) FROM {t}")), "5");
    // An unreachable database is named.
    let sql = "CREATE TABLE g (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');
CREATE TABLE s (id INT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:1/test', 'table-name' = 's');
INSERT INTO s SELECT * FROM g;";
    let (ok, _, err) = run_sql(sql, &[]);
    assert!(
        !ok && err.contains("cannot connect to PostgreSQL at 'jdbc:postgresql://127.0.0.1:1/test'"),
        "{err}"
    );
    // ... after retrying with a growing wait.
    assert!(
        err.contains("retrying in 1 s") && err.contains("retrying in 4 s"),
        "{err}"
    );
    psql(&format!("DROP TABLE {t};"));
}

fn a_postgresql_restart_loses_and_duplicates_nothing(id: u32) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), common::free_port(), &[]);
    let bs = broker.bootstrap();
    sluice(
        &["topics", "create", "events", "--partitions", "2", "-b", &bs],
        "",
    );
    let (events, counts) = (format!("events_{id}"), format!("counts_{id}"));
    psql(&format!(
        "DROP TABLE IF EXISTS {events}; DROP TABLE IF EXISTS {counts};
         CREATE TABLE {events} (id bigint, k text);
         CREATE TABLE {counts} (k text PRIMARY KEY, n bigint);"
    ));
    let sql = format!(
        "CREATE TABLE src (id BIGINT, k STRING) WITH ('connector' = 'kafka', 'topic' = 'events',
  'properties.bootstrap.servers' = '{bs}', 'scan.startup.mode' = 'earliest-offset', 'format' = 'json');
{}{}INSERT INTO {events} SELECT * FROM src;
INSERT INTO {counts} SELECT k, COUNT(*) FROM src GROUP BY k;",
        sink(&events, "id BIGINT, k STRING", ""),
        sink(&counts, "k STRING, n BIGINT", ", PRIMARY KEY (k) NOT ENFORCED"),
    );
    let mut job = RunningJob::start(&sql, dir.path());
    let total: u64 = 4000;
    let batches = 40;
    for b in 0..batches {
        let lines: String = (0..total / batches)
            .map(|i| {
                let n = b * (total / batches) + i;
                format!("{{\"id\": {n}, \"k\": \"k{}\"}}\n", n % 7)
            })
            .collect();
        kcat(&["-P", "-b", &bs, "-t", "events"], &lines);
        if b == batches / 3 {
            restart_postgres();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    loop {
        let n = psql_try(&format!("SELECT count(*) FROM {events}")).unwrap_or_default();
        let sum =
            psql_try(&format!("SELECT coalesce(sum(n), 0) FROM {counts}")).unwrap_or_default();
        if n == total.to_string() && sum == total.to_string() {
            break;
        }
        assert!(job.is_running(), "the job stopped: {}", job.stderr());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rows: {n}, counted: {sum} of {total}\n{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        psql(&format!("SELECT count(DISTINCT id) FROM {events}")),
        total.to_string()
    );
    assert!(
        job.stderr().contains("reconnecting and retrying"),
        "the restart was not noticed: {}",
        job.stderr()
    );
    drop(job);
    psql(&format!("DROP TABLE {events}; DROP TABLE {counts};"));
}
