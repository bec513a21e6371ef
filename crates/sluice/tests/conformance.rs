//! The conformance corpus: every case in `tests/conformance/cases` is run with the `sluice`
//! binary and its changelog compared, as a multiset of rows, with the rows Flink produced
//! (`expected.txt`, written by `tests/conformance/regenerate.py`). Numbers are compared to 9
//! significant digits and timestamps by value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn corpus() -> PathBuf {
    common::manifest_dir().join("../../tests/conformance")
}

/// A value in a form both Flink's and Sluice's text can be brought to.
fn canonical(field: &str) -> String {
    let f = field.trim();
    if f == "null" {
        return "NULL".into();
    }
    let no_z = f.strip_suffix('Z').unwrap_or(f);
    for pattern in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(no_z, pattern) {
            return format!("ts:{}", t.and_utc().timestamp_millis());
        }
    }
    if let Ok(n) = f.parse::<f64>() {
        if f.chars().any(|c| c.is_ascii_digit()) {
            return format!("num:{n:.8e}");
        }
    }
    format!("str:{f}")
}

fn canonical_row(kind: &str, fields: &[&str]) -> String {
    let mut s = kind.to_string();
    for f in fields {
        s.push('|');
        s.push_str(&canonical(f));
    }
    s
}

fn multiset(rows: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

fn run_case(case: &Path, parallelism: usize) -> Result<(), String> {
    let data = corpus().join("data");
    let sql = std::fs::read_to_string(case.join("query.sql"))
        .map_err(|e| e.to_string())?
        .replace("${DATA}", &data.display().to_string());
    run_sql(case, &sql, parallelism)
}

/// Runs `sql` and compares what it prints with the case's expected rows.
fn run_sql(case: &Path, sql: &str, parallelism: usize) -> Result<(), String> {
    let script = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(script.path(), sql).map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet", "--parallelism", &parallelism.to_string()])
        .arg(script.path())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "sluice failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let actual = multiset(stdout.lines().filter(|l| !l.is_empty()).map(|line| {
        // With parallelism > 1 the print sink prefixes "n> ".
        let line = match line.find("> ") {
            Some(p) if line[..p].chars().all(|c| c.is_ascii_digit()) => &line[p + 2..],
            _ => line,
        };
        let (kind, rest) = line.split_at(2);
        let inner = rest.trim_start_matches('[').trim_end_matches(']');
        let fields: Vec<&str> = if inner.is_empty() {
            vec![]
        } else {
            inner.split(", ").collect()
        };
        canonical_row(kind, &fields)
    }));
    let expected_text =
        std::fs::read_to_string(case.join("expected.txt")).map_err(|e| e.to_string())?;
    let expected = multiset(expected_text.lines().filter(|l| !l.is_empty()).map(|line| {
        let mut parts = line.split('|');
        let kind = parts.next().unwrap_or("");
        let fields: Vec<&str> = parts.collect();
        canonical_row(kind, &fields)
    }));
    if actual != expected {
        let missing: Vec<_> = expected
            .iter()
            .filter(|(k, v)| actual.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = actual
            .iter()
            .filter(|(k, v)| expected.get(*k) != Some(v))
            .collect();
        return Err(format!(
            "rows differ from Flink's\n  missing or miscounted: {missing:?}\n  unexpected: {extra:?}\n  sluice printed:\n{stdout}"
        ));
    }
    if expected.is_empty() {
        return Err("the case has no expected rows; a case must produce some".into());
    }
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join("cases"))
        .expect("tests/conformance/cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.txt").exists())
        .collect();
    v.sort();
    v
}

#[test]
fn every_case_matches_flink() {
    let all = cases();
    assert!(all.len() >= 15, "the corpus has {} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        if let Err(e) = run_case(case, 1) {
            failures.push(format!("{}: {e}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_case_matches_flink_with_parallelism_two() {
    let mut failures = Vec::new();
    for case in cases() {
        if let Err(e) = run_case(&case, 2) {
            failures.push(format!("{}: {e}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The JSON inputs of the corpus, as topics of a `sluice broker` (one partition each, produced
/// with kcat); every case over them runs again with its tables reading Kafka
/// (`'scan.bounded.mode' = 'latest-offset'`) and must give Flink's rows for the files.
#[test]
fn cases_over_kafka_match_flink() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::BrokerProcess::start(dir.path(), common::free_port(), &[]);
    let data = corpus().join("data");
    let inputs = ["sensors", "clicks"];
    for name in inputs {
        let status = Command::new("kcat")
            .args(["-P", "-b", &broker.bootstrap(), "-t", name, "-p", "0", "-l"])
            .arg(data.join(format!("{name}.json")))
            .status()
            .expect("kcat (test.sh installs it)");
        assert!(status.success(), "kcat could not produce {name}");
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases() {
        let mut sql = std::fs::read_to_string(case.join("query.sql")).unwrap();
        for name in inputs {
            sql = sql.replace(
                &format!("'connector' = 'filesystem', 'path' = '${{DATA}}/{name}.json'"),
                &format!(
                    "'connector' = 'kafka', 'topic' = '{name}', 'properties.bootstrap.servers' = '{}', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'",
                    broker.bootstrap()
                ),
            );
        }
        if sql.contains("'filesystem'") {
            continue;
        }
        ran += 1;
        if let Err(e) = run_sql(&case, &sql, 1) {
            failures.push(format!("{} over Kafka: {e}", case.display()));
        }
    }
    assert!(ran >= 15, "only {ran} cases read JSON");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
