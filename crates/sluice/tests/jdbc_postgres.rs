//! End-to-end tests of the `jdbc` connector against the PostgreSQL server on this machine
//! (started if it is not running): rows arrive, upserts update, deletes delete, a table that
//! does not fit is refused before the job starts, lookup joins read it (through their cache
//! when asked), and a restart of PostgreSQL under a running job loses and duplicates nothing.
//! One test function, as the restart would disturb the others.

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
    rows_the_database_refuses_are_counted_as_sink_errors(id);
    a_row_having_no_longer_passes_is_deleted(id);
    lookup_joins_read_the_table(id);
    a_lookup_cache_keeps_what_it_read(id);
    a_lookup_join_outlives_a_postgresql_restart(id);
    a_postgresql_restart_loses_and_duplicates_nothing(id);
}

/// A write PostgreSQL refuses for its data (a check constraint) is not retried: the job fails
/// with the database's message, and the rows of the refused write are counted as sink errors
/// (`sluice_sink_errors_total` for Prometheus).
fn rows_the_database_refuses_are_counted_as_sink_errors(id: u32) {
    let t = format!("small_ids_{id}");
    psql(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int CHECK (id < 3));"
    ));
    let sql = format!(
        "CREATE TABLE g (id INT) WITH ('connector' = 'datagen', 'number-of-rows' = '5',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '5');
{}INSERT INTO {t} SELECT * FROM g;",
        sink(&t, "id INT", "")
    );
    let (ok, _, err) = run_sql(&sql, &[]);
    assert!(!ok, "{err}");
    assert!(err.contains("violates check constraint"), "{err}");
    assert!(err.contains("  sink errors: 5"), "{err}");
    assert_eq!(psql(&format!("SELECT count(*) FROM {t}")), "0");
}

/// A filter after an aggregate (HAVING) retracts a key's row with a -U and no +U: the row is
/// deleted, as Flink's JDBC sink deletes on UPDATE_BEFORE.
fn a_row_having_no_longer_passes_is_deleted(id: u32) {
    let t = format!("pairs_{id}");
    psql(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (u text PRIMARY KEY, n bigint);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.json");
    std::fs::write(
        &clicks,
        "{\"u\": \"u1\"}\n{\"u\": \"u2\"}\n{\"u\": \"u1\"}\n{\"u\": \"u2\"}\n{\"u\": \"u1\"}\n",
    )
    .unwrap();
    let sql = format!(
        "CREATE TABLE clicks (u STRING) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
{}INSERT INTO {t} SELECT u, COUNT(*) FROM clicks GROUP BY u HAVING COUNT(*) = 2;",
        clicks.display(),
        sink(&t, "u STRING, n BIGINT", ", PRIMARY KEY (u) NOT ENFORCED"),
    );
    let (ok, _, err) = run_sql(&sql, &[]);
    assert!(ok, "{err}");
    // u1 reached 2, then 3: gone; u2 stays at 2.
    assert_eq!(
        psql(&format!("SELECT u || '=' || n FROM {t} ORDER BY u")),
        "u2=2"
    );
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

fn customers(id: u32, extra_options: &str) -> String {
    format!(
        "CREATE TABLE customers (id INT, name STRING, tier STRING, credit DECIMAL(10, 2), since TIMESTAMP(3),
  PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'jdbc', 'url' = '{URL}',
  'table-name' = 'customers_{id}', 'username' = 'postgres'{extra_options});\n"
    )
}

/// Orders joined with the customers in PostgreSQL as of their processing time: inner and
/// left, a condition on the customer, a key that is not there and a NULL key.
fn lookup_joins_read_the_table(id: u32) {
    psql(&format!(
        "DROP TABLE IF EXISTS customers_{id};
         CREATE TABLE customers_{id} (id integer PRIMARY KEY, name text, tier varchar(10), credit numeric(10, 2), since timestamp(3));
         INSERT INTO customers_{id} VALUES (1, 'ann', 'gold', 100.50, '2023-05-01 10:00:00'), (2, 'bob', 'banned', 0, NULL),
           (3, 'cy', 'silver', 12.25, '2024-01-01 00:00:00.123');"
    ));
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.json");
    std::fs::write(
        &orders,
        "{\"order_id\": 10, \"customer_id\": 1, \"amount\": 5.5}
{\"order_id\": 11, \"customer_id\": 2, \"amount\": 7}
{\"order_id\": 12, \"customer_id\": 3, \"amount\": 1.25}
{\"order_id\": 13, \"customer_id\": 4, \"amount\": 2}
{\"order_id\": 14, \"customer_id\": null, \"amount\": 3}
{\"order_id\": 15, \"customer_id\": 1, \"amount\": 8}
",
    )
    .unwrap();
    let tables = format!(
        "CREATE TABLE orders (order_id INT, customer_id INT, amount DOUBLE, proc_time AS PROCTIME())
  WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
{}",
        orders.display(),
        customers(id, ", 'lookup.cache' = 'PARTIAL', 'lookup.partial-cache.max-rows' = '2'")
    );
    let run = |join: &str| {
        let (ok, out, err) = run_sql(
            &format!(
                "{tables}SELECT o.order_id, o.amount, c.name, c.credit, c.since
FROM orders AS o {join} customers FOR SYSTEM_TIME AS OF o.proc_time AS c
  ON o.customer_id = c.id AND c.tier <> 'banned';"
            ),
            &[],
        );
        assert!(ok, "{err}");
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        run("JOIN"),
        vec![
            "+I[10, 5.5, ann, 100.50, 2023-05-01T10:00]",
            "+I[12, 1.25, cy, 12.25, 2024-01-01T00:00:00.123]",
            "+I[15, 8.0, ann, 100.50, 2023-05-01T10:00]",
        ]
    );
    assert_eq!(
        run("LEFT JOIN"),
        vec![
            "+I[10, 5.5, ann, 100.50, 2023-05-01T10:00]",
            "+I[11, 7.0, null, null, null]",
            "+I[12, 1.25, cy, 12.25, 2024-01-01T00:00:00.123]",
            "+I[13, 2.0, null, null, null]",
            "+I[14, 3.0, null, null, null]",
            "+I[15, 8.0, ann, 100.50, 2023-05-01T10:00]",
        ]
    );
    // A key column that is not in the database table is refused before the job starts.
    let (ok, _, err) = run_sql(
        &format!(
            "{}CREATE TABLE o (k INT, pt AS PROCTIME()) WITH ('connector' = 'datagen', 'number-of-rows' = '1');
SELECT * FROM o JOIN customers FOR SYSTEM_TIME AS OF o.pt AS c ON o.k = c.id;",
            customers(id, ", 'lookup.cache' = 'FULL'")
        ),
        &[],
    );
    assert!(
        !ok && err.contains("'lookup.cache' = 'FULL' is not one of NONE, PARTIAL"),
        "{err}"
    );
}

/// A row changed in PostgreSQL while a job runs: a join without a cache sees the change, one
/// whose cache keeps rows longer than the job does not.
fn a_lookup_cache_keeps_what_it_read(id: u32) {
    let seen = |options: &str| {
        psql(&format!(
            "UPDATE customers_{id} SET name = 'ann' WHERE id = 1;"
        ));
        let dir = tempfile::tempdir().unwrap();
        let sql = format!(
            "CREATE TABLE ticks (n BIGINT, pt AS PROCTIME()) WITH ('connector' = 'datagen',
  'number-of-rows' = '30', 'rows-per-second' = '10', 'fields.n.kind' = 'sequence',
  'fields.n.start' = '1', 'fields.n.end' = '30');
{}SELECT t.n, c.name FROM ticks AS t JOIN customers FOR SYSTEM_TIME AS OF t.pt AS c
  ON CAST(t.n - t.n + 1 AS INT) = c.id;",
            customers(id, options)
        );
        let mut job = RunningJob::start(&sql, dir.path());
        assert!(
            job.wait_for(Duration::from_secs(20), |l| l.contains("ann")),
            "{}",
            job.stderr()
        );
        psql(&format!(
            "UPDATE customers_{id} SET name = 'anna' WHERE id = 1;"
        ));
        assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
        // What it printed after the first row.
        job.wait_for(Duration::from_millis(500), |_| false);
        let names: Vec<String> = job
            .seen
            .iter()
            .filter_map(|l| {
                l.split(", ")
                    .nth(1)
                    .map(|n| n.trim_end_matches(']').to_string())
            })
            .collect();
        assert_eq!(names.len(), 30, "{:?}", job.seen);
        names
    };
    let uncached = seen("");
    assert!(
        uncached.first().map(String::as_str) == Some("ann")
            && uncached.last().map(String::as_str) == Some("anna"),
        "{uncached:?}"
    );
    let cached =
        seen(", 'lookup.cache' = 'PARTIAL', 'lookup.partial-cache.expire-after-write' = '1 h'");
    assert!(cached.iter().all(|n| n == "ann"), "{cached:?}");
}

/// PostgreSQL restarted under a lookup join: the lookups that fail meanwhile are retried
/// over a new connection ('lookup.max-retries'), and every row still joins.
fn a_lookup_join_outlives_a_postgresql_restart(id: u32) {
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE TABLE ticks (n BIGINT, pt AS PROCTIME()) WITH ('connector' = 'datagen',
  'number-of-rows' = '60', 'rows-per-second' = '10', 'fields.n.kind' = 'sequence',
  'fields.n.start' = '1', 'fields.n.end' = '60');
{}SELECT t.n, c.name FROM ticks AS t JOIN customers FOR SYSTEM_TIME AS OF t.pt AS c
  ON CAST(t.n - t.n + 1 AS INT) = c.id;",
        customers(id, ", 'lookup.max-retries' = '5'")
    );
    let mut job = RunningJob::start(&sql, dir.path());
    assert!(
        job.wait_for(Duration::from_secs(20), |l| l.starts_with("+I[1,")),
        "{}",
        job.stderr()
    );
    restart_postgres();
    assert!(job.wait(Duration::from_secs(60)), "{}", job.stderr());
    job.wait_for(Duration::from_millis(500), |_| false);
    let joined = job.seen.iter().filter(|l| l.starts_with("+I[")).count();
    assert_eq!(joined, 60, "{:?}\n{}", job.seen, job.stderr());
    psql(&format!("DROP TABLE customers_{id};"));
}
