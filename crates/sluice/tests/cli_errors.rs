//! End-to-end tests of `sluice run` on bad input: every error names what and where, and no
//! run panics.

use std::process::{Command, Output};

fn run(sql: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("job.sql");
    std::fs::write(&script, sql).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&script)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn table(path: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE s (id STRING, v DOUBLE, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json'{extra});\n"
    )
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.json");
    std::fs::write(
        &data,
        "{\"id\":\"a\",\"v\":1,\"ts\":\"2024-01-01 10:00:00\"}\n{\"id\":\"b\",\"v\":\n{\"id\":\"c\",\"v\":3,\"ts\":\"2024-01-01 10:00:02\"}\n",
    )
    .unwrap();
    let path = data.display().to_string();
    let o = run(&format!("{}SELECT id, v FROM s;", table(&path, "")));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&format!("{path}, line 2")), "{e}");
    assert!(e.contains("json.ignore-parse-errors"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    let o = run(&format!(
        "{}SELECT id, v FROM s;",
        table(&path, ", 'json.ignore-parse-errors' = 'true'")
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        stderr(&o).contains("records skipped as malformed: 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sql_error_names_line_and_column() {
    let o = run("SET 'parallelism.default' = '1';\nSELECT id FROM s WHERE;");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn unknown_connector_lists_the_valid_ones() {
    let o = run("CREATE TABLE s (id STRING) WITH ('connector' = 'kafkaa');\nSELECT id FROM s;");
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("unknown connector 'kafkaa'"), "{e}");
    assert!(
        e.contains(
            "blackhole, datagen, filesystem, http, jdbc, kafka, mqtt, nats, nexmark, postgres-cdc, print, rabbitmq, redis, upsert-kafka, webhook"
        ),
        "{e}"
    );
}

#[test]
fn unknown_option_and_format_list_the_valid_ones() {
    let o = run(&format!(
        "{}SELECT id FROM s;",
        table("/tmp", ", 'pathh' = 'x'")
    ));
    assert!(
        stderr(&o).contains("unknown option 'pathh'"),
        "{}",
        stderr(&o)
    );
    let o = run("CREATE TABLE s (id STRING) WITH ('connector' = 'filesystem', 'path' = '/tmp', 'format' = 'xml');\nSELECT id FROM s;");
    assert!(
        stderr(&o).contains("unknown format 'xml'. Available formats: avro, csv, json, parquet"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn filesystem_sink_writes_csv_like_flink() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in.json");
    std::fs::write(
        &data,
        "{\"id\":\"a\",\"v\":1.5,\"ts\":\"2024-01-01 10:00:00\"}\n{\"id\":\"b\",\"v\":1e10,\"ts\":\"2024-01-01 10:00:02.5\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let sql = format!(
        "{}CREATE TABLE o (id STRING, v DOUBLE, ts TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\nINSERT INTO o SELECT id, v, ts FROM s;",
        table(&data.display().to_string(), ""),
        out.display()
    );
    let o = run(&sql);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut text = String::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let f = f.unwrap();
        assert!(f.file_name().to_string_lossy().starts_with("part-"));
        text.push_str(&std::fs::read_to_string(f.path()).unwrap());
    }
    assert_eq!(
        text,
        "a,1.5,\"2024-01-01 10:00:00\"\nb,1.0E10,\"2024-01-01 10:00:02.5\"\n"
    );
}

#[test]
fn explain_prints_the_operator_graph() {
    let o = run(&format!(
        "{}EXPLAIN SELECT id, COUNT(*) FROM s GROUP BY id, TUMBLE(ts, INTERVAL '1' MINUTE);",
        table("/tmp", "")
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("WindowAggregate(TUMBLE(size=60000ms))"),
        "{out}"
    );
    assert!(out.contains("HASH[0]"), "{out}");
}

#[test]
fn datagen_bounded_job_finishes() {
    let o = run("CREATE TABLE g (id BIGINT, v INT) WITH ('connector' = 'datagen', 'number-of-rows' = '25', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '25', 'fields.v.min' = '1', 'fields.v.max' = '3');\nCREATE TABLE b (id BIGINT, v INT) WITH ('connector' = 'blackhole');\nINSERT INTO b SELECT id, v FROM g;\nSELECT id FROM g WHERE id > 20;");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 5, "{out}");
}

#[test]
fn a_sink_that_takes_only_inserts_refuses_an_updating_query_before_the_job_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sql = format!(
        "{}CREATE TABLE o (id STRING, n BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\nINSERT INTO o SELECT id, COUNT(*) FROM s GROUP BY id;",
        table("/tmp", ""),
        out.display()
    );
    let o = run(&sql);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("only takes inserts, but the query produces updates"),
        "{e}"
    );
    assert!(e.contains("line 4, column 1"), "{e}");
    assert!(!out.exists(), "nothing was started");
}

#[test]
fn match_recognize_refuses_what_flink_refuses_and_says_where() {
    let script = |pattern: &str, define: &str| {
        format!(
            "{}SELECT * FROM s\n  MATCH_RECOGNIZE (\n    PARTITION BY id\n    ORDER BY ts\n    MEASURES A.v AS av\n    PATTERN ({pattern})\n    DEFINE {define}\n  );",
            table("/nonexistent.json", "")
        )
    };
    let cases = [
        (
            "A B+",
            "A AS A.v > 0",
            "greedy quantifier on the last variable",
        ),
        ("(A | B) C", "A AS A.v > 0", "alternatives"),
        ("A B A", "A AS A.v > 0", "appears twice"),
        ("A? B*?", "A AS A.v > 0", "can match no rows"),
        ("A B", "A AS PREV(A.v) > 0", "physical offsets"),
        (
            "A B",
            "A AS C.v > 0",
            "line 9, column 17: MATCH_RECOGNIZE: C is not a pattern variable",
        ),
        (
            "A B",
            "A AS A.w > 0",
            "line 9, column 19: MATCH_RECOGNIZE: column w not found",
        ),
        (
            "A B",
            "X AS true",
            "MATCH_RECOGNIZE: DEFINE X: not a variable",
        ),
        ("A B) WITHIN (", "A AS true", "SQL error at line"),
    ];
    for (pattern, define, want) in cases {
        let o = run(&script(pattern, define));
        assert!(!o.status.success(), "{pattern} / {define}");
        let e = stderr(&o);
        assert!(e.contains(want), "{pattern} / {define}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    // The time attribute must come first in ORDER BY.
    let o = run(&script("A B", "A AS true").replace("ORDER BY ts", "ORDER BY v"));
    assert!(
        stderr(&o).contains("must start with the time attribute"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn temporal_joins_flink_refuses_are_refused_at_their_clause() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["o.json", "v.json"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let tables = "CREATE TABLE o (k STRING, n INT, ts TIMESTAMP(3), pt AS PROCTIME(), WATERMARK FOR ts AS ts)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/o.json', 'format' = 'json');
CREATE TABLE v (k STRING, x INT, ut TIMESTAMP(3), WATERMARK FOR ut AS ut, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/v.json', 'format' = 'json');
CREATE TABLE nokey (k STRING, x INT, ut TIMESTAMP(3), WATERMARK FOR ut AS ut)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/v.json', 'format' = 'json');
CREATE TABLE notime (k STRING, x INT, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'filesystem', 'path' = 'DIR/v.json', 'format' = 'json');
";
    let refused = |query: &str, want: &[&str]| {
        let o = run(&format!("{tables}{query}").replace("DIR", &dir.path().display().to_string()));
        let e = stderr(&o);
        assert!(!o.status.success(), "{query}");
        for w in want {
            assert!(e.contains(w), "{query}: {e}");
        }
        assert!(!e.contains("panicked"), "{e}");
    };
    // The clause starts at line 9, column 28 where the table name is padded to six columns.
    let at = "line 9, column 28";
    refused(
        "SELECT * FROM o JOIN nokey FOR SYSTEM_TIME AS OF o.ts AS r ON o.k = r.k;",
        &[at, "'nokey' is not a versioned table", "primary key"],
    );
    refused(
        "SELECT * FROM o JOIN notime FOR SYSTEM_TIME AS OF o.ts AS r ON o.k = r.k;",
        &["line 9, column 29", "WATERMARK FOR"],
    );
    refused(
        "SELECT * FROM o JOIN v     FOR SYSTEM_TIME AS OF o.ts AS r ON o.n = r.x;",
        &[
            at,
            "the primary key of 'v' must be in the join's equalities, and k is not",
        ],
    );
    refused(
        "SELECT * FROM o JOIN v     FOR SYSTEM_TIME AS OF o.n AS r ON o.k = r.k;",
        &[at, "o.n: not a time attribute of the left input"],
    );
    refused(
        "SELECT * FROM o RIGHT JOIN v FOR SYSTEM_TIME AS OF o.ts AS r ON o.k = r.k;",
        &["line 9, column 30", "INNER or a LEFT join"],
    );
    refused(
        "SELECT * FROM o JOIN v     FOR SYSTEM_TIME AS OF o.pt AS r ON o.k = r.k;",
        &[
            "connector 'filesystem' cannot look rows up by key",
            "the jdbc connector can",
        ],
    );
    refused(
        "SELECT * FROM v FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01 00:00:00';",
        &[
            "line 9, column 39",
            "FOR SYSTEM_TIME AS OF takes a time attribute column",
        ],
    );
    refused(
        "SELECT * FROM o JOIN missing FOR SYSTEM_TIME AS OF o.ts AS r ON o.k = r.k;",
        &["line 9, column 30", "'missing' not found"],
    );
}

#[test]
fn a_window_aggregate_over_updates_is_refused_before_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.json"), "").unwrap();
    let o = run(&format!(
        "CREATE TABLE r (k STRING, v DOUBLE, ts TIMESTAMP(3), WATERMARK FOR ts AS ts)
  WITH ('connector' = 'filesystem', 'path' = '{}/r.json', 'format' = 'json');
CREATE VIEW latest AS SELECT k, v, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM r) WHERE rn = 1;
SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE latest, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end;",
        dir.path().display()
    ));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("line 5, column 1")
            && e.contains("a window aggregate needs an append-only input"),
        "{e}"
    );
}

#[test]
fn values_are_a_bounded_source() {
    let o = run(
        "CREATE TABLE o (id BIGINT, name STRING, v DECIMAL(5, 2)) WITH ('connector' = 'print');
INSERT INTO o VALUES (1, 'a', 1.5), (2, 'b', CAST(NULL AS DECIMAL(5, 2))), (3 + 4, UPPER('c'), 2);
SELECT * FROM (VALUES (1, 'x'), (2, 'y')) AS t(a, b) WHERE a > 1;",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "+I[1, a, 1.50]",
            "+I[2, b, null]",
            "+I[2, y]",
            "+I[7, C, 2.00]"
        ]
    );
}

/// Flink's sink NOT NULL enforcer: a NULL written into a column declared NOT NULL (or in the
/// primary key) fails the job with Flink's message, or, with 'DROP', drops the row.
#[test]
fn a_null_into_a_not_null_column_fails_or_is_dropped() {
    let script = "CREATE TABLE o (id BIGINT NOT NULL, name STRING, code STRING, PRIMARY KEY (code) NOT ENFORCED)
  WITH ('connector' = 'print');
INSERT INTO o VALUES (1, CAST(NULL AS STRING), 'a'), (CAST(NULL AS BIGINT), 'b', 'b'), (3, 'c', CAST(NULL AS STRING)), (4, 'd', 'd');";
    let o = run(script);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Column 'id' is NOT NULL, however, a null value is being written into it. You can set job configuration 'table.exec.sink.not-null-enforcer'='DROP'"),
        "{}",
        stderr(&o)
    );
    let o = run(&format!(
        "SET 'table.exec.sink.not-null-enforcer' = 'DROP';\n{script}"
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["+I[1, null, a]", "+I[4, d, d]"]);
    let o = run(&format!(
        "SET 'table.exec.sink.not-null-enforcer' = 'TRIM';\n{script}"
    ));
    assert!(
        stderr(&o).contains("'table.exec.sink.not-null-enforcer' = 'TRIM'"),
        "{}",
        stderr(&o)
    );
}
