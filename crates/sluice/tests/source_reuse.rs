//! A table read more than once in a job is read by one source, as Flink's planner reuses
//! identical scans (`table.optimizer.reuse-source-enabled`, true by default). That a source
//! which takes what it reads (an HTTP endpoint) serves two INSERTs is tested with it, in
//! `webhook_redis.rs`.

use std::path::Path;
use std::process::Command;

/// 200 rows of a unique id and a value.
const RANDOM: &str = "CREATE TABLE g (id BIGINT, v INT) WITH ('connector' = 'datagen', 'number-of-rows' = '200', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '200', 'fields.v.min' = '1', 'fields.v.max' = '1000000000');\n";

fn run(dir: &Path, sql: &str) -> String {
    let script = dir.join("job.sql");
    std::fs::write(&script, sql).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&script)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_self_join_reads_the_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &format!("{RANDOM}SELECT COUNT(*) AS n FROM g x JOIN g y ON x.id = y.id AND x.v = y.v;\n"),
    );
    // The one source feeds both sides of the join: every row meets itself, 200 (the last of
    // the count's updates).
    let last = out.lines().last().unwrap_or_default();
    assert!(last.contains("200"), "{out}");
}

#[test]
fn explain_shows_one_source_for_a_self_join() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &format!("{RANDOM}EXPLAIN SELECT x.id FROM g x JOIN g y ON x.id = y.id;\n"),
    );
    let sources = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with('#') && l.contains("Source: g"))
            .count()
    };
    assert_eq!(sources(&out), 1, "{out}");
    let out = run(
        dir.path(),
        &format!(
            "SET 'table.optimizer.reuse-source-enabled' = 'false';\n{RANDOM}EXPLAIN SELECT x.id FROM g x JOIN g y ON x.id = y.id;\n"
        ),
    );
    assert_eq!(sources(&out), 2, "{out}");
}
