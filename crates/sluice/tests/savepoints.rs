//! Checkpoints through the `sluice` binary: stop with a savepoint (Ctrl-C with
//! `--savepoint-on-stop`) and resume from it with `--from-savepoint`, with exactly-once file
//! output across the stop; a corrupt latest checkpoint is reported and the one before it used.

mod common;

use common::RunningJob;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROWS: u64 = 6000;

/// Ids 1..=ROWS at 2,000 rows/s to part files, with a checkpoint every 200 ms.
fn script(out: &Path) -> String {
    format!(
        "SET 'pipeline.name' = 'ids';
SET 'execution.checkpointing.interval' = '200 ms';
SET 'state.checkpoints.num-retained' = '3';
CREATE TABLE gen (id BIGINT) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '2000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}'
);
CREATE TABLE out (id BIGINT) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');
INSERT INTO out SELECT id FROM gen;
",
        out.display()
    )
}

/// How many times each id is in the visible output files.
fn ids(dir: &Path) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            *m.entry(line.trim().parse::<u64>().unwrap()).or_default() += 1;
        }
    }
    m
}

/// The savepoint a stopped job reported (`Savepoint written to PATH; ...`).
fn savepoint_path(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint written to "))
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("no savepoint reported: {stderr}"))
        .to_string()
}

/// The complete checkpoints under `dir`, oldest first.
fn complete_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let id = e
                .file_name()
                .to_string_lossy()
                .strip_prefix("chk-")?
                .parse()
                .ok()?;
            e.path().join("_metadata").exists().then(|| (id, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stop_with_savepoint_and_resume_write_every_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let data = tmp.path().join("state").display().to_string();
    let sql = script(&out);
    let mut job = RunningJob::start_with(
        &sql,
        tmp.path(),
        &["--data-dir", &data, "--savepoint-on-stop"],
    );
    wait_until("a few rows", Duration::from_secs(30), || {
        ids(&out).len() >= 500
    });
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
    let path = savepoint_path(&job.stderr());
    let before = ids(&out);
    assert!(before.len() < ROWS as usize, "it stopped before the end");
    assert!(before.values().all(|&n| n == 1));

    let mut job = RunningJob::start_with(
        &sql,
        tmp.path(),
        &["--data-dir", &data, "--from-savepoint", &path],
    );
    assert!(job.wait(Duration::from_secs(60)), "{}", job.stderr());
    assert!(job.stderr().contains("from savepoint"), "{}", job.stderr());
    let all = ids(&out);
    assert_eq!(all.len(), ROWS as usize, "every id is there");
    assert!(all.values().all(|&n| n == 1), "no id twice");
    assert_eq!(all.keys().next(), Some(&1));
    assert_eq!(all.keys().last(), Some(&ROWS));
}

#[test]
fn a_corrupt_checkpoint_is_reported_and_the_previous_one_used() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let state = tmp.path().join("state");
    let data = state.display().to_string();
    let sql = script(&out);
    let chk = state.join("jobs/ids/checkpoints");
    let mut job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data]);
    wait_until("three checkpoints", Duration::from_secs(30), || {
        complete_checkpoints(&chk).len() >= 3
    });
    job.kill();
    let done = complete_checkpoints(&chk);
    let (latest, latest_dir) = done.last().cloned().unwrap();
    let previous = done[done.len() - 2].0;
    // Truncate the latest checkpoint's largest part file.
    let part = std::fs::read_dir(&latest_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .unwrap()
        .path();
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();

    let mut job = RunningJob::start_with(&sql, tmp.path(), &["--data-dir", &data]);
    assert!(job.wait(Duration::from_secs(60)), "{}", job.stderr());
    let err = job.stderr();
    assert!(
        err.contains(&format!("checkpoint {latest} of job 'ids' cannot be used"))
            && err.contains("truncated"),
        "{err}"
    );
    assert!(
        err.contains(&format!("Restoring job 'ids' from checkpoint {previous} ")),
        "{err}"
    );
    // Every id is there (those after the previous checkpoint may be there twice).
    assert_eq!(ids(&out).len(), ROWS as usize);
}

/// A savepoint written by Sluice 0.1.0 (commit 5baa6f0: a window aggregate, an updating
/// GROUP BY and two datagen sources) must keep restoring: `tests/fixtures/savepoint-upgrade`
/// holds it, the script, and the rows the restored job must print. If this fails after a
/// change, the change broke savepoints of earlier versions; make the restore read the old
/// form rather than write the fixture again.
#[test]
fn a_savepoint_of_an_earlier_version_restores() {
    let fixture = common::manifest_dir().join("../../tests/fixtures/savepoint-upgrade");
    let tmp = tempfile::tempdir().unwrap();
    let savepoint = tmp.path().join("savepoint");
    std::fs::create_dir(&savepoint).unwrap();
    for e in std::fs::read_dir(fixture.join("savepoint")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), savepoint.join(e.file_name())).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--from-savepoint")
        .arg(&savepoint)
        .arg(fixture.join("upgrade.sql"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Restoring job 'upgrade' from savepoint 5"),
        "{stderr}"
    );
    let sorted = |text: &str| {
        let mut v: Vec<String> = text.lines().map(String::from).collect();
        v.sort();
        v
    };
    let got = sorted(&String::from_utf8_lossy(&out.stdout));
    let expected =
        sorted(&std::fs::read_to_string(fixture.join("expected-after-restore.txt")).unwrap());
    assert_eq!(got.len(), expected.len(), "rows printed after the restore");
    assert_eq!(got, expected);
    // What the restored job prints is the rest of what an uninterrupted run prints.
    let mut whole =
        sorted(&std::fs::read_to_string(fixture.join("expected-uninterrupted.txt")).unwrap());
    for line in &got {
        let at = whole.iter().position(|w| w == line);
        assert!(
            at.is_some(),
            "{line} is not in an uninterrupted run's output"
        );
        if let Some(i) = at {
            whole.remove(i);
        }
    }
}

/// A window aggregate over 1-second windows of ids 1..=ROWS (ten per second of event time),
/// at parallelism `p`, to part files.
fn windows_script(out: &Path, p: usize) -> String {
    rescale_script(
        out,
        p,
        "CREATE TABLE out (k BIGINT, window_start TIMESTAMP(3), n BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{OUT}', 'format' = 'csv');
INSERT INTO out
SELECT id % 7, window_start, COUNT(*), SUM(id)
FROM TABLE(TUMBLE(TABLE gen, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY id % 7, window_start, window_end;",
    )
}

/// Patterns per key over the same sequence: every id divisible by 3, the two rows of its key
/// after it, within 5 s.
fn match_script(out: &Path, p: usize) -> String {
    rescale_script(
        out,
        p,
        "CREATE TEMPORARY VIEW keyed AS SELECT id % 7 AS k, id, ts FROM gen;
CREATE TABLE out (k BIGINT, a BIGINT, c BIGINT, n BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{OUT}', 'format' = 'csv');
INSERT INTO out
SELECT * FROM keyed MATCH_RECOGNIZE (
  PARTITION BY k ORDER BY ts
  MEASURES A.id AS a, C.id AS c, COUNT(*) AS n
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A B C) WITHIN INTERVAL '5' SECOND
  DEFINE A AS A.id % 3 = 0
);",
    )
}

/// Each id joined with the ids of its key up to a second later: itself and the next one.
/// The rows waiting for the other side are the interval join's keyed state, and it has no
/// other.
fn interval_join_script(out: &Path, p: usize) -> String {
    rescale_script(
        out,
        p,
        "CREATE TEMPORARY VIEW keyed AS SELECT id % 7 AS k, id, ts FROM gen;
CREATE TABLE out (id BIGINT, later BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '{OUT}', 'format' = 'csv');
INSERT INTO out
SELECT x.id, y.id FROM keyed AS x JOIN keyed AS y
  ON x.k = y.k AND y.ts BETWEEN x.ts AND x.ts + INTERVAL '1' SECOND;",
    )
}

/// The datagen sequence of [`ROWS`] ids, one every 100 ms of event time, then `job` (`{OUT}`:
/// the output directory).
fn rescale_script(out: &Path, p: usize, job: &str) -> String {
    format!(
        "SET 'pipeline.name' = 'rescale';
SET 'parallelism.default' = '{p}';
SET 'execution.checkpointing.interval' = '200 ms';
CREATE TABLE gen (
  id BIGINT,
  ts AS TO_TIMESTAMP_LTZ(id * 100, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '2000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{ROWS}'
);
{}
",
        job.replace("{OUT}", &out.display().to_string())
    )
}

/// Every line of the visible part files in `dir`, sorted.
fn lines(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with('.') {
            let text = std::fs::read_to_string(e.path()).unwrap();
            v.extend(text.lines().map(String::from));
        }
    }
    v.sort();
    v
}

/// A savepoint taken at parallelism 2 restores at 1 and at 4: the keyed windows are
/// redistributed by key group, the datagen's sequences are dealt to the new subtasks, and the
/// rows are those of an uninterrupted run, each once.
#[test]
fn a_savepoint_restores_at_another_parallelism_with_the_same_rows() {
    // 600 windows of ten ids (seven keys each), and id 6000 alone in the last one.
    restores_at_other_parallelisms(windows_script, 7 * 600 + 1);
}

/// The same for MATCH_RECOGNIZE: its partial matches and buffered rows are keyed state.
#[test]
fn a_match_recognize_savepoint_restores_at_another_parallelism_with_the_same_rows() {
    restores_at_other_parallelisms(match_script, 0);
}

/// The same for an interval join, whose operator keeps only keyed state (the runtime asks it
/// nothing else on a rescale).
#[test]
fn an_interval_join_savepoint_restores_at_another_parallelism_with_the_same_rows() {
    // Every id with itself, and with the next of its key but for the last seven.
    restores_at_other_parallelisms(interval_join_script, 2 * ROWS as usize - 7);
}

/// Runs `script` whole at parallelism 2, then stopped with a savepoint at parallelism 2 and
/// restored at 1 and at 4: the same rows, each once (`rows` of them, if not 0).
fn restores_at_other_parallelisms(script: fn(&Path, usize) -> String, rows: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let (ok, _, err) = common::run_sql(
        &script(&whole, 2),
        &[
            "--data-dir",
            &tmp.path().join("whole-state").display().to_string(),
        ],
    );
    assert!(ok, "{err}");
    let expected = lines(&whole);
    if rows > 0 {
        assert_eq!(expected.len(), rows);
    }
    assert!(expected.len() > 100, "{} rows", expected.len());

    for to in [1, 4] {
        let dir = tmp.path().join(format!("to-{to}"));
        let out = dir.join("out");
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("state").display().to_string();
        let mut job = RunningJob::start_with(
            &script(&out, 2),
            &dir,
            &["--data-dir", &data, "--savepoint-on-stop"],
        );
        wait_until("a few rows", Duration::from_secs(30), || {
            lines(&out).len() >= 50
        });
        job.interrupt();
        assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
        let path = savepoint_path(&job.stderr());
        assert!(
            lines(&out).len() < expected.len(),
            "it stopped before the end"
        );

        let mut job = RunningJob::start_with(
            &script(&out, to),
            &dir,
            &["--data-dir", &data, "--from-savepoint", &path],
        );
        assert!(job.wait(Duration::from_secs(60)), "{}", job.stderr());
        assert!(job.stderr().contains("from savepoint"), "{}", job.stderr());
        assert_eq!(lines(&out), expected, "restored at parallelism {to}");
    }
}
