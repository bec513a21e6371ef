//! End-to-end tests of keyed state through the `sluice` binary: MIN and MAX that retract
//! (their values kept in map state), `table.exec.state.ttl`, and the state options.

mod common;

use common::run_sql;

/// The changelog lines a job printed, without spaces or the "n> " subtask prefix.
fn printed(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| match l.find("> ") {
            Some(p) if l[..p].chars().all(|c| c.is_ascii_digit()) => &l[p + 2..],
            _ => l,
        })
        .map(|l| l.replace(' ', ""))
        .collect()
}

/// Writes one `{"k": ...}` record per key and returns the query of MAX, MIN and SUM over the
/// per-key counts (an aggregate over the changelog of another).
fn nested_query(dir: &std::path::Path, keys: &[&str]) -> String {
    let path = dir.join("keys.json");
    let lines: Vec<String> = keys.iter().map(|k| format!("{{\"k\": \"{k}\"}}")).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    format!(
        "CREATE TABLE t (k STRING) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
SELECT MAX(c) AS most, MIN(c) AS least, SUM(c) AS total FROM (SELECT k, COUNT(*) AS c FROM t GROUP BY k);",
        path.display()
    )
}

/// Flink 2.x's rows for the same keys as `VALUES` rows (MaxWithRetract / MinWithRetract):
/// when the count that is the current MAX (or MIN) is retracted, the next one takes over.
#[test]
fn min_and_max_over_an_updating_input_retract_as_flink() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 2] = [
        (
            &["a", "a", "b", "b", "b", "c", "a", "a", "c", "b"],
            "+I[1,1,1] -D[1,1,1] +I[2,2,2] -U[2,2,2] +U[2,1,3] -U[2,1,3] +U[2,2,2] -U[2,2,2] \
             +U[2,2,4] -U[2,2,4] +U[2,2,2] -U[2,2,2] +U[3,2,5] -U[3,2,5] +U[3,1,6] -U[3,1,6] \
             +U[3,1,4] -U[3,1,4] +U[3,1,7] -U[3,1,7] +U[3,1,4] -U[3,1,4] +U[4,1,8] -U[4,1,8] \
             +U[4,3,7] -U[4,3,7] +U[4,2,9] -U[4,2,9] +U[4,2,6] -U[4,2,6] +U[4,2,10]",
        ),
        (
            // The single largest count (a's 5) is retracted: MAX falls back to 4.
            &["a", "a", "a", "a", "a", "b", "b", "b", "b", "c", "c", "a"],
            "+I[1,1,1] -D[1,1,1] +I[2,2,2] -D[2,2,2] +I[3,3,3] -D[3,3,3] +I[4,4,4] -D[4,4,4] \
             +I[5,5,5] -U[5,5,5] +U[5,1,6] -U[5,1,6] +U[5,5,5] -U[5,5,5] +U[5,2,7] -U[5,2,7] \
             +U[5,5,5] -U[5,5,5] +U[5,3,8] -U[5,3,8] +U[5,5,5] -U[5,5,5] +U[5,4,9] -U[5,4,9] \
             +U[5,1,10] -U[5,1,10] +U[5,4,9] -U[5,4,9] +U[5,2,11] -U[5,2,11] +U[4,2,6] \
             -U[4,2,6] +U[6,2,12]",
        ),
    ];
    for (keys, flink) in cases {
        let sql = nested_query(dir.path(), keys);
        let (ok, out, err) = run_sql(&sql, &[]);
        assert!(ok, "{err}");
        let expected: Vec<String> = flink.split_whitespace().map(String::from).collect();
        assert_eq!(printed(&out), expected, "keys {keys:?}");
        // At parallelism 2 the per-key changes interleave in any order, but the last row
        // is the result over every key.
        let (ok, out, err) = run_sql(&sql, &["--parallelism", "2"]);
        assert!(ok, "{err}");
        assert_eq!(printed(&out).last(), expected.last(), "{out}");
    }
}

/// `table.exec.state.ttl`: a group not updated within the TTL is forgotten, and the next row
/// for it starts a new one (`+I` again), as in Flink. Rows come 200 ms apart, the TTL is 50 ms.
#[test]
fn state_ttl_forgets_groups_not_updated_in_time() {
    let query = |ttl: &str| {
        format!(
            "SET 'table.exec.state.ttl' = '{ttl}';
CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '5',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '4');
SELECT id % 1 AS k, COUNT(*) AS n FROM src GROUP BY id % 1;"
        )
    };
    let (ok, out, err) = run_sql(&query("0 ms"), &[]);
    assert!(ok, "{err}");
    let rows = printed(&out);
    assert_eq!(rows.last().map(String::as_str), Some("+U[0,4]"), "{out}");
    assert_eq!(rows.iter().filter(|r| r.starts_with("+I")).count(), 1);
    let (ok, out, err) = run_sql(&query("50 ms"), &[]);
    assert!(ok, "{err}");
    let rows = printed(&out);
    // Each row finds its group expired: a new group each time (two rows could only share
    // one if the machine stalled for 200 ms).
    let inserts = rows.iter().filter(|r| *r == "+I[0,1]").count();
    assert!(inserts >= 2, "the group never expired: {out}");
    assert!(
        rows.iter()
            .all(|r| r.starts_with("+I") || r.ends_with(",1]") || r.ends_with(",2]")),
        "{out}"
    );
}

#[test]
fn state_options_are_checked_before_the_job_starts() {
    let job = |set: &str| {
        format!(
            "{set}
CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '3');
SELECT id, COUNT(*) FROM src GROUP BY id;"
        )
    };
    for (set, says) in [
        (
            "SET 'state.backend.type' = 'memory';",
            "expected 'hashmap' (in memory) or 'rocksdb'",
        ),
        (
            "SET 'state.backend.memory.size' = '1 kb';",
            "at least 16 mb",
        ),
        (
            "SET 'execution.checkpointing.incremental' = 'yes';",
            "'true' or 'false'",
        ),
        (
            "SET 'pipeline.max-parallelism' = '2'; SET 'parallelism.default' = '4';",
            "pipeline.max-parallelism",
        ),
        ("SET 'pipeline.max-parallelism' = '0';", "from 1 to 32768"),
        (
            "SET 'table.exec.state.ttl' = 'soon';",
            "table.exec.state.ttl",
        ),
    ] {
        let (ok, _, err) = run_sql(&job(set), &[]);
        assert!(!ok, "{set} was accepted");
        assert!(err.contains(says), "{set}: {err}");
    }
    let data = tempfile::tempdir().unwrap();
    for backend in ["hashmap", "rocksdb"] {
        let (ok, out, err) = run_sql(
            &job(&format!(
                "SET 'pipeline.max-parallelism' = '4'; SET 'state.backend.type' = '{backend}'; SET 'state.backend.memory.size' = '64 mb';"
            )),
            &["--parallelism", "4", "--data-dir", data.path().to_str().unwrap()],
        );
        assert!(ok, "{err}");
        assert_eq!(printed(&out).len(), 3, "{out}");
    }
    // The disk backend's scratch files are gone with the job.
    let local = data.path().join("jobs/sluice-job/local-state");
    let left: Vec<_> = std::fs::read_dir(&local)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Incremental checkpoints (`execution.checkpointing.incremental`): after the first full
/// snapshot a checkpoint writes only the keyed state that changed (a delta in `shared/`), and a
/// job killed with SIGKILL restores the chain and ends with every count right.
#[test]
fn incremental_checkpoints_write_deltas_and_restore_after_a_kill() {
    for backend in ["hashmap", "rocksdb"] {
        incremental_after_a_kill(backend);
    }
}

fn incremental_after_a_kill(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sql = format!(
        "SET 'state.backend.type' = '{backend}';
SET 'pipeline.name' = 'incremental';
SET 'execution.checkpointing.interval' = '150 ms';
SET 'execution.checkpointing.incremental' = 'true';
SET 'state.checkpoints.num-retained' = '3';
CREATE TABLE src (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '4000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '16000');
SELECT id % 4000 AS k, COUNT(*) AS n FROM src GROUP BY id % 4000;"
    );
    let sql = sql.as_str();
    let args = ["--data-dir", data.to_str().unwrap()];
    let checkpoints = data.join("jobs/incremental/checkpoints");
    let mut job = common::RunningJob::start_with(sql, dir.path(), &args);
    // Run until several checkpoints are complete and keys have been updated after the
    // first one (ids past 4,000 update existing keys).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let history = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(checkpoints.join("history.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["status"] == "Completed")
            .collect()
    };
    while history().len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(job.is_running(), "{}", job.stderr());
    job.kill();
    let done = history();
    assert!(done.len() >= 6, "{done:?}");
    // Later checkpoints wrote less than the state they hold.
    let incremental = done.iter().filter(|c| {
        let (size, written) = (c["state_size"].as_u64(), c["checkpointed_size"].as_u64());
        matches!((size, written), (Some(s), Some(w)) if w < s)
    });
    assert!(incremental.count() >= 1, "{done:#?}");
    let shared: Vec<String> = std::fs::read_dir(checkpoints.join("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(shared.iter().any(|f| f.ends_with(".delta")), "{shared:?}");
    assert!(shared.iter().any(|f| f.ends_with(".full")), "{shared:?}");

    let (ok, out, err) = run_sql(sql, &args);
    assert!(ok, "{err}");
    // The last change of every key gives its final count: 4 ids per key.
    let mut last = std::collections::BTreeMap::new();
    for row in printed(&out) {
        let inner = row[3..row.len() - 1].to_string();
        if let Some((k, n)) = inner.split_once(',') {
            if row.starts_with("+I") || row.starts_with("+U") {
                last.insert(k.to_string(), n.to_string());
            }
        }
    }
    assert!(!last.is_empty(), "the restored job printed nothing: {err}");
    assert!(last.values().all(|n| n == "4"), "{last:?}");
    // The run finished: its checkpoints and shared files are gone.
    assert!(!checkpoints.join("shared").exists());
}
