//! The examples' one-command scripts (`examples/*/run.sh`), run end to end with a bounded
//! number of simulated events: their own broker, the machine's PostgreSQL, the console output
//! and the rows in the database.

mod common;

use common::psql;
use std::process::Command;

/// Runs `examples/<name>/run.sh` with `rows` simulated events, reading them back bounded.
fn run_example(name: &str, rows: u64) -> String {
    let script = common::manifest_dir().join(format!("../../examples/{name}/run.sh"));
    let out = Command::new("bash")
        .arg(script)
        .env("WEBHOOK_PORT", common::free_port().to_string())
        .env("SLUICE", env!("CARGO_BIN_EXE_sluice"))
        .env("BROKER_PORT", common::free_port().to_string())
        .env("ROWS", rows.to_string())
        .env("RATE", "1000000")
        .env("BOUNDED", "1")
        .output()
        .expect("running the example");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The fields of printed `+I[...]` rows.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("+I["))
        .map(|l| {
            l.trim_end_matches(']')
                .split(", ")
                .map(String::from)
                .collect()
        })
        .collect()
}

#[test]
fn iot_alerts_and_clickstream_run_end_to_end() {
    // IoT alerts: every alert printed is in PostgreSQL, and each has more than 5 readings.
    let printed = rows(&run_example("iot-alerts", 4000));
    assert!(!printed.is_empty(), "no alerts");
    assert!(printed.iter().all(|r| r[1].parse::<u64>().unwrap() > 5));
    let mut console: Vec<String> = printed
        .iter()
        .map(|r| format!("{}|{}", r[0], r[1]))
        .collect();
    console.sort();
    let db = psql("SELECT sensor_id || '|' || readings FROM alerts ORDER BY 1");
    let mut db: Vec<String> = db.lines().map(String::from).collect();
    db.sort();
    assert_eq!(console, db);

    // Clickstream: per-minute views add up to every click; the totals table holds one row per
    // page, updated to the final count.
    let rows_in = 4000u64;
    let printed = rows(&run_example("clickstream", rows_in));
    let viewed: u64 = printed.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
    assert_eq!(viewed, rows_in);
    assert_eq!(
        psql("SELECT count(*) || '|' || sum(views) FROM page_totals"),
        format!("8|{rows_in}")
    );
}

#[test]
fn fraud_detection_runs_end_to_end() {
    // Every alert is a small transaction then a large one from another country within five
    // minutes, on one card; the console and PostgreSQL hold the same alerts.
    let printed = rows(&run_example("fraud-detection", 4000));
    assert!(!printed.is_empty(), "no alerts");
    // As Flink prints times: without the seconds when they are zero.
    let time = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    for r in &printed {
        let (small, big) = (r[2].parse::<f64>().unwrap(), r[5].parse::<f64>().unwrap());
        assert!(small < 100.0 && big > 1000.0, "{r:?}");
        assert_ne!(r[3], r[6], "{r:?}");
        let gap = time(&r[4]) - time(&r[1]);
        assert!(
            gap >= chrono::Duration::zero() && gap < chrono::Duration::minutes(5),
            "{r:?}"
        );
    }
    let mut console: Vec<String> = printed
        .iter()
        .map(|r| format!("{}|{}", r[0], r[5].parse::<f64>().unwrap().round() as i64))
        .collect();
    console.sort();
    let db =
        psql("SELECT card_id || '|' || round(big_amount)::bigint FROM fraud_alerts ORDER BY 1");
    let mut db: Vec<String> = db.lines().map(String::from).collect();
    db.sort();
    assert_eq!(console, db);
}

#[test]
fn iot_over_mqtt_runs_end_to_end() {
    // Sensors on MQTT -> alerts printed and the latest per sensor in Redis.
    let _ = Command::new("sh")
        .args([
            "-c",
            "redis-cli --scan --pattern 'alert:*' | xargs -r redis-cli DEL",
        ])
        .status();
    let printed = rows(&run_example("iot-mqtt", 4000));
    assert!(!printed.is_empty(), "no alerts");
    assert!(printed.iter().all(|r| r[1].parse::<u64>().unwrap() > 5));
    // Each alerting sensor's hash holds its latest alert.
    let mut latest: std::collections::BTreeMap<&str, &Vec<String>> = Default::default();
    for r in &printed {
        let e = latest.entry(r[0].as_str()).or_insert(r);
        if r[2] > e[2] {
            *e = r;
        }
    }
    for (sensor, alert) in latest {
        let out = Command::new("redis-cli")
            .args(["HGET", &format!("alert:{sensor}"), "readings"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            alert[1],
            "{sensor}: {alert:?}"
        );
    }
}

#[test]
fn fraud_alerts_reach_a_webhook() {
    // Every alert printed is posted once to the example's stand-in receiver, as Slack text.
    let out = run_example("fraud-webhook", 4000);
    let printed = rows(&out);
    assert!(!printed.is_empty(), "no alerts");
    let mut posted: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("webhook: "))
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            let text = v["text"].as_str().unwrap().to_string();
            text.split(':')
                .next()
                .unwrap()
                .trim_start_matches("Card ")
                .to_string()
        })
        .collect();
    posted.sort();
    let mut cards: Vec<String> = printed.iter().map(|r| r[0].clone()).collect();
    cards.sort();
    assert_eq!(posted, cards);
}
