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
    run_case_with(case, parallelism, "")
}

/// Runs a case with `set` (`SET` statements) before its script.
fn run_case_with(case: &Path, parallelism: usize, set: &str) -> Result<(), String> {
    let data = corpus().join("data");
    let sql = case_script(case).replace("${DATA}", &data.display().to_string());
    run_sql(case, &format!("{set}\n{sql}"), parallelism)
}

/// A case's script, `${DATA}` still to replace: `${NEXMARK_TABLES}` stands for
/// bench/nexmark's table over an events file and its views, over `${DATA}/nexmark.json`.
fn case_script(case: &Path) -> String {
    let sql = std::fs::read_to_string(case.join("query.sql")).expect("the case's query.sql");
    if !sql.contains("${NEXMARK_TABLES}") {
        return sql;
    }
    let bench = common::manifest_dir().join("../../bench/nexmark");
    let read = |f: &str| std::fs::read_to_string(bench.join(f)).expect("bench/nexmark");
    let tables = read("events_file.sql") + &read("views.sql");
    sql.replace(
        "${NEXMARK_TABLES}",
        &tables.replace("${EVENTS_FILE}", "${DATA}/nexmark.json"),
    )
}

/// Runs `sql` and compares what it prints with the case's expected rows.
fn run_sql(case: &Path, sql: &str, parallelism: usize) -> Result<(), String> {
    let script = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(script.path(), sql).map_err(|e| e.to_string())?;
    let data_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet", "--parallelism", &parallelism.to_string()])
        .arg("--data-dir")
        .arg(data_dir.path())
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
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    compare(case, &lines).map_err(|e| format!("{e}\n  sluice printed:\n{stdout}"))
}

/// Compares printed changelog lines (`+I[a, 1]`, with parallelism > 1 prefixed `n> `) with
/// the case's expected rows, as multisets.
fn compare(case: &Path, lines: &[&str]) -> Result<(), String> {
    let actual = multiset(lines.iter().map(|line| {
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
    if let Some(key) = upsert_key(case)? {
        return compare_upserts(&key, &actual, &expected_text);
    }
    let expected = multiset(expected_text.lines().filter(|l| !l.is_empty()).map(|line| {
        let mut parts = line.split('|');
        let kind = parts.next().unwrap_or("");
        let fields: Vec<&str> = parts.collect();
        canonical_row(kind, &fields)
    }));
    let (actual, expected) = if materialized(case) {
        (materialize(&actual)?, materialize(&expected)?)
    } else {
        (actual, expected)
    };
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
            "rows differ from Flink's\n  missing or miscounted: {missing:?}\n  unexpected: {extra:?}"
        ));
    }
    if expected.is_empty() {
        return Err("the case has no expected rows; a case must produce some".into());
    }
    Ok(())
}

/// The key columns (0-based) of a case whose Flink changelog is an upsert stream (a file
/// `upsert-key`: its first line lists them, comma-separated; the rest says why). Flink
/// sends such a result without `-U` (a keyed sink overwrites by key), so its rows are
/// kept in the order Flink sent them and the last one of each key is its result.
fn upsert_key(case: &Path) -> Result<Option<Vec<usize>>, String> {
    let Ok(text) = std::fs::read_to_string(case.join("upsert-key")) else {
        return Ok(None);
    };
    let first = text.lines().next().unwrap_or("");
    first
        .split(',')
        .map(|k| {
            k.trim()
                .parse::<usize>()
                .map_err(|e| format!("upsert-key '{first}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Compares the rows each key ends in: Flink's (its changelog in order, the last `+I`/`+U` of
/// a key wins, `-D` removes it) with Sluice's (its changelog materialized, one row per key).
fn compare_upserts(
    key: &[usize],
    actual: &BTreeMap<String, usize>,
    expected_text: &str,
) -> Result<(), String> {
    let key_of = |row: &str| -> Result<String, String> {
        let fields: Vec<&str> = row[2..].split('|').skip(1).collect();
        key.iter()
            .map(|&k| {
                fields
                    .get(k)
                    .map(|f| f.to_string())
                    .ok_or_else(|| format!("no column {k} in {row}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|k| k.join("|"))
    };
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for line in expected_text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.split('|');
        let kind = parts.next().unwrap_or("");
        let fields: Vec<&str> = parts.collect();
        let row = canonical_row("+I", &fields);
        match kind {
            "+I" | "+U" => {
                expected.insert(key_of(&row)?, row);
            }
            "-D" => {
                expected.remove(&key_of(&row)?);
            }
            _ => {}
        }
    }
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for (row, n) in materialize(actual)? {
        if n != 1 || got.insert(key_of(&row)?, row.clone()).is_some() {
            return Err(format!(
                "Sluice ends with more than one row of the key of {row}"
            ));
        }
    }
    if got != expected {
        let missing: Vec<_> = expected
            .values()
            .filter(|r| !got.values().any(|g| g == *r))
            .collect();
        let extra: Vec<_> = got
            .values()
            .filter(|r| !expected.values().any(|e| e == *r))
            .collect();
        return Err(format!(
            "rows per key differ from Flink's\n  missing: {missing:?}\n  unexpected: {extra:?}"
        ));
    }
    if expected.is_empty() {
        return Err("the case has no expected rows; a case must produce some".into());
    }
    Ok(())
}

/// True if the case's changelog depends on how its inputs interleave (a file `materialized`
/// in the case says so and why): the result the changelog ends in is compared, not the
/// changelog.
fn materialized(case: &Path) -> bool {
    case.join("materialized").exists()
}

/// The rows a changelog ends in (`+I`/`+U` add a row, `-U`/`-D` take it back), as a
/// multiset of `+I` rows; an error if it takes back a row it does not hold.
fn materialize(changelog: &BTreeMap<String, usize>) -> Result<BTreeMap<String, usize>, String> {
    let mut rows: BTreeMap<String, i64> = BTreeMap::new();
    for (row, n) in changelog {
        let (kind, fields) = row.split_at(2);
        let sign = match kind {
            "+I" | "+U" => 1,
            "-U" | "-D" => -1,
            other => return Err(format!("a row of kind {other}: {row}")),
        };
        *rows.entry(format!("+I{fields}")).or_insert(0) += sign * *n as i64;
    }
    let mut out = BTreeMap::new();
    for (row, n) in rows {
        if n < 0 {
            return Err(format!(
                "the changelog takes back {} more than it adds of {row}",
                -n
            ));
        }
        if n > 0 {
            out.insert(row, n as usize);
        }
    }
    Ok(out)
}

/// True if the case's rows depend on the order in which parallel subtasks interleave (a
/// file `parallelism-1` in the case says so and why): it runs at parallelism 1 only.
fn parallelism_one_only(case: &Path) -> bool {
    case.join("parallelism-1").exists()
}

/// The cases to run: all, or (while working on some) those whose names contain one of the
/// comma-separated words of `SLUICE_CASES`.
fn selected() -> Option<Vec<String>> {
    std::env::var("SLUICE_CASES")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect())
}

fn cases() -> Vec<PathBuf> {
    let only = selected();
    let mut v: Vec<PathBuf> = std::fs::read_dir(corpus().join("cases"))
        .expect("tests/conformance/cases")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.txt").exists())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string());
            only.as_ref().is_none_or(|words| {
                words
                    .iter()
                    .any(|w| name.as_ref().is_some_and(|n| n.contains(w.as_str())))
            })
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_case_matches_flink() {
    let all = cases();
    assert!(
        all.len() >= 15 || selected().is_some(),
        "the corpus has {} cases",
        all.len()
    );
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
        if parallelism_one_only(&case) {
            continue;
        }
        if let Err(e) = run_case(&case, 2) {
            failures.push(format!("{}: {e}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The same on the disk state backend (an embedded LSM tree), at parallelism 1 and 2.
#[test]
fn every_case_matches_flink_on_the_disk_backend() {
    let mut failures = Vec::new();
    for case in cases() {
        for p in [1, 2] {
            if p > 1 && parallelism_one_only(&case) {
                continue;
            }
            let set = "SET 'state.backend.type' = 'rocksdb';";
            if let Err(e) = run_case_with(&case, p, set) {
                failures.push(format!(
                    "{} (disk backend, parallelism {p}): {e}",
                    case.display()
                ));
            }
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
        let mut sql = case_script(&case);
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
    assert!(
        ran >= 15 || selected().is_some(),
        "only {ran} cases read JSON"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The temporal join cases again with the versioned table an `upsert-kafka` topic (the rates
/// keyed by currency, produced with kcat) and the payments a `kafka` topic: the same rows as
/// Flink's over files (the topic's upserts normalised into a changelog whose old values the
/// join does not take as versions).
#[test]
fn temporal_joins_over_upsert_kafka_match_flink() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::BrokerProcess::start(dir.path(), common::free_port(), &[]);
    let bs = broker.bootstrap();
    let data = corpus().join("data");
    let rates = std::fs::read_to_string(data.join("rates.json")).unwrap();
    let mut keyed = String::new();
    for line in rates.lines() {
        let currency = line
            .split("\"currency\": \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a rate has a currency");
        keyed.push_str(&format!("{{\"currency\":\"{currency}\"}}|{line}\n"));
    }
    for (topic, key, input) in [("rates", true, keyed), ("payments", false, String::new())] {
        let mut kcat = Command::new("kcat");
        kcat.args(["-P", "-b", &bs, "-t", topic, "-p", "0"]);
        if key {
            kcat.args(["-K", "|"]);
        } else {
            kcat.arg("-l").arg(data.join("payments.json"));
        }
        let mut child = kcat
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("kcat (test.sh installs it)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "kcat could not produce {topic}"
        );
    }
    let kafka = |topic: &str| {
        format!(
            "'topic' = '{topic}', 'properties.bootstrap.servers' = '{bs}', 'scan.bounded.mode' = 'latest-offset'"
        )
    };
    let cases = ["temporal_join_inner", "temporal_join_left_condition"];
    for name in cases {
        let case = corpus().join("cases").join(name);
        let sql = case_script(&case)
            .replace(
                "'connector' = 'filesystem', 'path' = '${DATA}/rates.json', 'format' = 'json'",
                &format!(
                    "'connector' = 'upsert-kafka', {}, 'key.format' = 'json', 'value.format' = 'json'",
                    kafka("rates")
                ),
            )
            .replace(
                "'connector' = 'filesystem', 'path' = '${DATA}/payments.json', 'format' = 'json'",
                &format!(
                    "'connector' = 'kafka', {}, 'scan.startup.mode' = 'earliest-offset', 'format' = 'json'",
                    kafka("payments")
                ),
            );
        assert!(!sql.contains("'filesystem'"), "{sql}");
        for parallelism in [1, 2] {
            if let Err(e) = run_sql(&case, &sql, parallelism) {
                panic!("{name} over upsert-kafka at parallelism {parallelism}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every operator's state across restores: each case runs in-process as a job whose sources hand
// out one row at a time and which takes a checkpoint every few milliseconds. The job is stopped
// after some checkpoints and restored from its latest one, again and again until it reaches
// the end; its sink (the print sink replaced by a two-phase-commit collector) publishes rows
// only for completed checkpoints. What it published must be the rows Flink produced.

mod restore {
    use sluice_common::{ChangeBatch, CheckpointId, Result, RowKind};
    use sluice_engine::{
        restore_point, run_job, CheckpointConfig, JobGraph, JobHandle, NodeKind, Operator,
        OperatorFactory, Output, RestoreMode, SourceFactory, SourcePoll, SourceReader, StateReader,
        StateWriter, SubtaskContext,
    };
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A source that hands out its inner source's rows one at a time, a little slowly, so
    /// that barriers fall between any two rows.
    pub struct OneRowAtATime(pub Arc<dyn SourceFactory>);
    struct OneRowReader {
        inner: Box<dyn SourceReader>,
        rest: Option<ChangeBatch>,
    }
    impl SourceFactory for OneRowAtATime {
        fn name(&self) -> String {
            self.0.name()
        }
        fn is_bounded(&self) -> bool {
            self.0.is_bounded()
        }
        fn produces_updates(&self) -> bool {
            self.0.produces_updates()
        }
        fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn SourceReader>> {
            Ok(Box::new(OneRowReader {
                inner: self.0.create(ctx)?,
                rest: None,
            }))
        }
    }
    fn kind_code(k: RowKind) -> u64 {
        match k {
            RowKind::Insert => 0,
            RowKind::UpdateBefore => 1,
            RowKind::UpdateAfter => 2,
            RowKind::Delete => 3,
        }
    }
    impl SourceReader for OneRowReader {
        fn poll(&mut self) -> Result<SourcePoll> {
            if let Some(b) = self.rest.take() {
                std::thread::sleep(Duration::from_micros(300));
                if b.num_rows() > 1 {
                    self.rest = Some(b.slice(1, b.num_rows() - 1));
                }
                return Ok(SourcePoll::Batch(b.slice(0, 1)));
            }
            match self.inner.poll()? {
                SourcePoll::Batch(b) if b.num_rows() > 0 => {
                    self.rest = Some(b);
                    self.poll()
                }
                other => Ok(other),
            }
        }
        fn has_nothing_to_read(&self) -> bool {
            // Rows held back from the inner source are still to be read.
            self.rest.is_none() && self.inner.has_nothing_to_read()
        }
        fn snapshot_position(&mut self, c: CheckpointId, state: &mut StateWriter) -> Result<()> {
            let mut inner = StateWriter::default();
            self.inner.snapshot_position(c, &mut inner)?;
            state.put_bytes(&inner.finish());
            state.put_bool(self.rest.is_some());
            if let Some(b) = &self.rest {
                state.put_batch(&b.data)?;
                let kinds: Vec<u64> = match &b.kinds {
                    Some(k) => k.iter().map(|k| kind_code(*k)).collect(),
                    None => Vec::new(),
                };
                state.put_u64(kinds.len() as u64);
                for k in kinds {
                    state.put_u64(k);
                }
                state.put_i64(b.split.map(i64::from).unwrap_or(-1));
            }
            Ok(())
        }
        fn restore_position(&mut self, state: &mut StateReader<'_>) -> Result<()> {
            let inner = state.bytes()?;
            if !inner.is_empty() {
                self.inner
                    .restore_position(&mut StateReader::new(inner, "inner source"))?;
            }
            if state.bool()? {
                let data = state.batch()?;
                let mut kinds = Vec::new();
                for _ in 0..state.count()? {
                    kinds.push(match state.u64()? {
                        1 => RowKind::UpdateBefore,
                        2 => RowKind::UpdateAfter,
                        3 => RowKind::Delete,
                        _ => RowKind::Insert,
                    });
                }
                let split = state.i64()?;
                let kinds = (!kinds.is_empty()).then(|| kinds.into());
                let mut b = ChangeBatch::new(data, kinds);
                if split >= 0 {
                    b = b.from_split(split as u32);
                }
                self.rest = Some(b);
            }
            Ok(())
        }
    }

    /// Published lines by (sink subtask, checkpoint): publishing is idempotent.
    pub type Published = Arc<Mutex<BTreeMap<(usize, CheckpointId), Vec<String>>>>;

    /// The print sink's lines, published when their checkpoint completes (what the end of
    /// the input leaves, with the final checkpoint).
    pub struct Collect(pub Published);
    struct CollectOp {
        published: Published,
        subtask: usize,
        current: Vec<String>,
        pending: BTreeMap<CheckpointId, Vec<String>>,
        ended: bool,
    }
    impl OperatorFactory for Collect {
        fn name(&self) -> String {
            "collect".into()
        }
        fn create(&self, ctx: &SubtaskContext) -> Result<Box<dyn Operator>> {
            Ok(Box::new(CollectOp {
                published: self.0.clone(),
                subtask: ctx.subtask_index,
                current: Vec::new(),
                pending: BTreeMap::new(),
                ended: false,
            }))
        }
    }
    impl CollectOp {
        fn publish(&self, id: CheckpointId, lines: Vec<String>) {
            if let Ok(mut p) = self.published.lock() {
                p.entry((self.subtask, id)).or_insert(lines);
            }
        }
    }
    impl Operator for CollectOp {
        fn process_batch(&mut self, _i: usize, b: ChangeBatch, _o: &mut Output) -> Result<()> {
            for row in 0..b.num_rows() {
                self.current
                    .push(sluice_connectors::print::format_change(&b, row));
            }
            Ok(())
        }
        fn snapshot_state(&mut self, c: CheckpointId, state: &mut StateWriter) -> Result<()> {
            if !self.ended {
                let lines = std::mem::take(&mut self.current);
                self.pending.insert(c, lines);
            }
            state.put_u64(self.pending.len() as u64);
            for (id, lines) in &self.pending {
                state.put_u64(*id);
                state.put_u64(lines.len() as u64);
                for l in lines {
                    state.put_str(l);
                }
            }
            Ok(())
        }
        fn restore_state(&mut self, state: &mut StateReader<'_>) -> Result<()> {
            for _ in 0..state.count()? {
                let id = state.u64()?;
                let mut lines = Vec::new();
                for _ in 0..state.count()? {
                    lines.push(state.str()?.to_string());
                }
                self.publish(id, lines);
            }
            Ok(())
        }
        fn notify_checkpoint_complete(&mut self, c: CheckpointId) -> Result<()> {
            let due: Vec<CheckpointId> = self.pending.range(..=c).map(|(k, _)| *k).collect();
            for id in due {
                if let Some(lines) = self.pending.remove(&id) {
                    self.publish(id, lines);
                }
            }
            Ok(())
        }
        fn end_input(&mut self, _o: &mut Output) -> Result<()> {
            let lines = std::mem::take(&mut self.current);
            self.pending.insert(CheckpointId::MAX, lines);
            self.ended = true;
            Ok(())
        }
    }

    /// Plans `sql` with its sources made slow and its print sink replaced by [`Collect`].
    pub fn job(
        sql: &str,
        parallelism: usize,
        (incremental, backend): (bool, &str),
        dir: &std::path::Path,
        out: Published,
    ) -> JobGraph {
        let registry = Arc::new(sluice_connectors::BuiltinRegistry::default());
        let mut session = sluice_sql::Session::new(registry);
        session
            .set("parallelism.default", &parallelism.to_string())
            .unwrap();
        session
            .set(
                "execution.checkpointing.incremental",
                &incremental.to_string(),
            )
            .unwrap();
        session.set("state.backend.type", backend).unwrap();
        session.set_data_dir(dir);
        let mut g = match session.execute_script(sql) {
            Ok(outcome) => outcome.job.expect("a job"),
            Err(e) => panic!("{e}\n{sql}"),
        };
        let mut config = CheckpointConfig::new(dir);
        config.interval = Some(Duration::from_millis(3));
        config.num_retained = 2;
        g.checkpoint = config;
        for node in &mut g.nodes {
            node.kind = match &node.kind {
                NodeKind::Source(f) => NodeKind::Source(Arc::new(OneRowAtATime(f.clone()))),
                NodeKind::Operator(f) if f.name() == "Sink: print" => {
                    NodeKind::Operator(Arc::new(Collect(out.clone())))
                }
                other => other.clone(),
            };
        }
        g
    }

    /// Runs `sql` to its end, stopping it after every few checkpoints and restoring it from
    /// its latest one; returns the published lines and how many runs were restored.
    pub fn run_with_restores(
        sql: &str,
        parallelism: usize,
        incremental: bool,
        backend: &str,
    ) -> (Vec<String>, usize) {
        let tmp = tempfile::tempdir().unwrap();
        let published: Published = Arc::default();
        let mut restores = 0;
        for attempt in 0.. {
            let g = job(
                sql,
                parallelism,
                (incremental, backend),
                tmp.path(),
                published.clone(),
            );
            let restored = restore_point(&g, &g.checkpoint, &RestoreMode::Latest).unwrap();
            restores += usize::from(restored.is_some());
            let handle = JobHandle::default();
            let stopper = handle.clone();
            let start = restored.as_ref().map(|r| r.metadata.id).unwrap_or(0);
            // The last attempts run to the end.
            let stop_at = (attempt < 8).then_some(start + 2 + attempt % 3);
            let watcher = std::thread::spawn(move || {
                while let Some(at) = stop_at {
                    if stopper.checkpoints.completed() >= at {
                        stopper.cancel();
                        break;
                    }
                    if stopper.is_cancelled() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let report = run_job(&g, &handle, restored).unwrap();
            handle.cancel();
            watcher.join().unwrap();
            if !report.cancelled {
                break;
            }
        }
        let lines = published
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect();
        (lines, restores)
    }
}

#[test]
fn every_case_matches_flink_across_restores() {
    across_restores(&[(1, false, "hashmap"), (2, false, "hashmap")]);
}

/// The same with incremental checkpoints: keyed state is a full snapshot and the deltas
/// after it, shared between checkpoints, and restores read the chain.
#[test]
fn every_case_matches_flink_across_restores_with_incremental_checkpoints() {
    across_restores(&[(1, true, "hashmap"), (2, true, "hashmap")]);
}

/// The same on the disk backend, with full and incremental checkpoints.
#[test]
fn every_case_matches_flink_across_restores_on_the_disk_backend() {
    across_restores(&[(1, true, "rocksdb"), (2, false, "rocksdb")]);
}

fn across_restores(runs: &[(usize, bool, &str)]) {
    let data = corpus().join("data");
    let mut failures = Vec::new();
    let mut restored_runs = 0;
    for &(parallelism, incremental, backend) in runs {
        for case in cases() {
            if parallelism > 1 && parallelism_one_only(&case) {
                continue;
            }
            let sql = case_script(&case).replace("${DATA}", &data.display().to_string());
            let (lines, restores) =
                restore::run_with_restores(&sql, parallelism, incremental, backend);
            restored_runs += restores;
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            if let Err(e) = compare(&case, &lines) {
                failures.push(format!(
                    "{} (parallelism {parallelism}, incremental {incremental}, {backend}, after restores): {e}",
                    case.display()
                ));
            }
        }
    }
    eprintln!("{restored_runs} runs restored from a checkpoint");
    assert!(
        restored_runs >= 20 || selected().is_some(),
        "too few restores ({restored_runs})"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
