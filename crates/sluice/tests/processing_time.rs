//! Processing time through the `sluice` binary: `PROCTIME()` columns, window aggregates over
//! them (Nexmark q12's shape), which fire on the wall clock, not on watermarks.

mod common;

#[test]
fn processing_time_windows_fire_on_the_clock_and_drop_the_open_one_at_the_end() {
    // 3,000 rows at 1,000 a second: about three seconds of one-second windows.
    let sql = "CREATE TABLE gen (id BIGINT, k INT) WITH (
  'connector' = 'datagen', 'number-of-rows' = '3000', 'rows-per-second' = '1000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '3000',
  'fields.k.min' = '0', 'fields.k.max' = '2');
CREATE VIEW B AS SELECT *, PROCTIME() AS p_time FROM gen;
SELECT k, COUNT(*) AS n, window_start, window_end
FROM TABLE(TUMBLE(TABLE B, DESCRIPTOR(p_time), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;";
    let started = chrono::Utc::now().naive_utc();
    let (ok, out, err) = common::run_sql(sql, &["--parallelism", "2"]);
    let ended = chrono::Utc::now().naive_utc();
    assert!(ok, "{err}");
    // As Flink prints them: `10:00` when the seconds are zero, `10:00:01`, `10:00:01.500`.
    let time = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    assert_eq!(time("2026-12-04T23:37"), time("2026-12-04T23:37:00"));
    let mut total = 0;
    let mut windows = std::collections::BTreeSet::new();
    for line in out.lines() {
        let row = line
            .split_once("+I[")
            .map(|(_, r)| r.trim_end_matches(']'))
            .unwrap_or_else(|| panic!("not an insert: {line}"));
        let f: Vec<&str> = row.split(", ").collect();
        let (start, end) = (time(f[2]), time(f[3]));
        assert_eq!(end - start, chrono::Duration::seconds(1), "{line}");
        assert_eq!(start.and_utc().timestamp_subsec_millis(), 0, "{line}");
        // Windows of the wall clock while the job ran, each closed before it ended.
        assert!(
            start >= started - chrono::Duration::seconds(1) && end <= ended,
            "{line}"
        );
        assert!(
            windows.insert((f[0].to_string(), start)),
            "a window twice: {line}"
        );
        total += f[1].parse::<u64>().unwrap();
    }
    assert!(!windows.is_empty(), "no window fired: {err}");
    // Every key shows up; the window still open at the end is dropped (its rows not counted).
    assert!(
        ["0", "1", "2"]
            .iter()
            .all(|k| windows.iter().any(|(w, _)| w == k)),
        "{out}"
    );
    assert!(total > 0 && total <= 3000, "{total} rows in closed windows");
}
