//! Avro with a schema registry: confluent-kafka's AvroSerializer and AvroDeserializer (and its
//! registry client) against `sluice broker --schema-registry` and Sluice's `avro-confluent`
//! format, both ways; the registry's REST API as the client uses it. The Python side is
//! `tests/clients/avro_registry.py`.

mod common;

use common::{client_script, free_port, python, run_sql, BrokerProcess};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn client(bootstrap: &str, registry: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(client_script("avro_registry.py"))
        .args([bootstrap, registry])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "avro_registry.py {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A broker with its schema registry; the registry's URL.
fn broker_with_registry(dir: &std::path::Path) -> (BrokerProcess, String) {
    let port = free_port();
    let broker = BrokerProcess::start(
        dir,
        free_port(),
        &["--schema-registry", &format!("127.0.0.1:{port}")],
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "no registry");
        std::thread::sleep(Duration::from_millis(20));
    }
    (broker, format!("http://127.0.0.1:{port}"))
}

#[test]
fn confluent_avro_clients_and_sluice_read_each_others_records() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, url) = broker_with_registry(&dir.path().join("broker"));
    let bootstrap = broker.bootstrap();
    let out = client(&bootstrap, &url, &["produce"]);
    assert!(out.contains("produced 5 orders"), "{out}");

    // Sluice reads the producer's records (its own schema, resolved against the table's)
    // and writes records of Flink's schema, registered under `big_orders-value`.
    let sql = format!(
        "CREATE TABLE orders (order_id BIGINT, customer STRING, amount DOUBLE, note STRING)
         WITH ('connector' = 'kafka', 'topic' = 'orders',
               'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'value.format' = 'avro-confluent', 'value.avro-confluent.url' = '{url}');
         CREATE TABLE big_orders (order_id BIGINT NOT NULL, customer STRING, total DECIMAL(10, 2),
               note STRING, at_ts TIMESTAMP(3))
         WITH ('connector' = 'kafka', 'topic' = 'big_orders',
               'properties.bootstrap.servers' = '{bootstrap}',
               'key.format' = 'avro-confluent', 'key.avro-confluent.url' = '{url}',
               'key.fields' = 'order_id', 'value.format' = 'avro-confluent',
               'value.avro-confluent.url' = '{url}');
         INSERT INTO big_orders
         SELECT order_id, UPPER(customer), CAST(amount * 2 AS DECIMAL(10, 2)), note,
                TIMESTAMP '2024-01-01 10:00:00.123'
         FROM orders WHERE amount > 10;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");

    // confluent-kafka's AvroDeserializer reads Sluice's records.
    let out = client(&bootstrap, &url, &["consume", "big_orders"]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(
        rows,
        vec![
            r#"{"at_ts": "2024-01-01 10:00:00.123000+00:00", "customer": "ALICE", "key": {"order_id": 1}, "note": null, "order_id": 1, "total": "25.00"}"#,
            r#"{"at_ts": "2024-01-01 10:00:00.123000+00:00", "customer": "CAROL", "key": {"order_id": 3}, "note": "gift wrap", "order_id": 3, "total": "198.50"}"#,
            r#"{"at_ts": "2024-01-01 10:00:00.123000+00:00", "customer": "DAVE", "key": {"order_id": 4}, "note": null, "order_id": 4, "total": "80.00"}"#,
            r#"{"at_ts": "2024-01-01 10:00:00.123000+00:00", "customer": "ÉMILE", "key": {"order_id": 5}, "note": "ünïcödé", "order_id": 5, "total": "20.02"}"#,
        ],
        "{out}"
    );
    // The schemas Sluice registered are Flink's, the key's under `big_orders-key`.
    let schema = out
        .lines()
        .find_map(|l| l.strip_prefix("schema big_orders-value "))
        .unwrap_or_default();
    let schema: serde_json::Value = serde_json::from_str(schema).unwrap();
    assert_eq!(schema["name"], "record", "{schema}");
    assert_eq!(schema["namespace"], "org.apache.flink.avro.generated");
    // A NOT NULL column is a plain type, as in Flink's schema; a nullable one a union.
    assert_eq!(schema["fields"][0]["type"], "long");
    assert_eq!(
        schema["fields"][1]["type"],
        serde_json::json!(["null", "string"])
    );
    assert_eq!(
        schema["fields"][2]["type"][1],
        serde_json::json!({"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2})
    );
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("schema big_orders-key "))
        .unwrap_or_default();
    let key: serde_json::Value = serde_json::from_str(key).unwrap();
    assert_eq!(key["fields"].as_array().map(Vec::len), Some(1), "{key}");
    assert_eq!(key["fields"][0]["type"], "long", "{key}");

    // And Sluice reads its own records back.
    let sql = format!(
        "CREATE TABLE big_orders (order_id BIGINT, customer STRING, total DECIMAL(10, 2),
               note STRING, at_ts TIMESTAMP(3))
         WITH ('connector' = 'kafka', 'topic' = 'big_orders',
               'properties.bootstrap.servers' = '{bootstrap}',
               'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',
               'format' = 'avro-confluent', 'avro-confluent.url' = '{url}');
         SELECT * FROM big_orders;"
    );
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let printed: Vec<&str> = stdout.lines().filter(|l| l.contains("+I[")).collect();
    assert_eq!(
        printed,
        vec![
            "+I[1, ALICE, 25.00, null, 2024-01-01T10:00:00.123]",
            "+I[3, CAROL, 198.50, gift wrap, 2024-01-01T10:00:00.123]",
            "+I[4, DAVE, 80.00, null, 2024-01-01T10:00:00.123]",
            "+I[5, ÉMILE, 20.02, ünïcödé, 2024-01-01T10:00:00.123]",
        ],
        "{stdout}"
    );
}

#[test]
fn the_registry_answers_confluents_client() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, url) = broker_with_registry(dir.path());
    let out = client(&broker.bootstrap(), &url, &["registry"]);
    assert!(out.contains("registry checks passed"), "{out}");
    drop(broker);
    // The schemas outlive the broker.
    let (broker, url) = broker_with_registry(dir.path());
    let sql = format!(
        "CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 'api-test',
            'properties.bootstrap.servers' = '{}', 'format' = 'avro-confluent',
            'avro-confluent.url' = '{url}', 'avro-confluent.subject' = 'api-test');
         INSERT INTO t VALUES (1);",
        broker.bootstrap()
    );
    // `api-test` is at level NONE with three versions: Sluice's schema is a fourth.
    let (ok, stdout, stderr) = run_sql(&sql, &[]);
    assert!(ok, "{stdout}\n{stderr}");
    let versions = http_get(&format!("{url}/subjects/api-test/versions"));
    assert_eq!(versions, "[1,2,3,4]");
    // An unknown path is answered in the registry's error shape.
    let out = Command::new("curl")
        .args(["-s", &format!("{url}/no/such/path")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains(r#""error_code":404"#), "{body}");
}

#[test]
fn a_record_not_in_confluents_wire_format_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, url) = broker_with_registry(dir.path());
    let bootstrap = broker.bootstrap();
    common::kcat(&["-P", "-b", &bootstrap, "-t", "plain"], "not avro\n");
    let sql = format!(
        "CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 'plain',
            'properties.bootstrap.servers' = '{bootstrap}', 'format' = 'avro-confluent',
            'avro-confluent.url' = '{url}', 'scan.startup.mode' = 'earliest-offset',
            'scan.bounded.mode' = 'latest-offset');
         SELECT * FROM t;"
    );
    let (ok, _, stderr) = run_sql(&sql, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("plain") && stderr.contains("offset 0") && stderr.contains("wire format"),
        "{stderr}"
    );
    // A registry that is not there is named.
    common::kcat(
        &["-P", "-b", &bootstrap, "-t", "framed"],
        "\u{0}\u{0}\u{0}\u{0}\u{1}\u{2}\n",
    );
    let sql = sql
        .replace(&url, "http://127.0.0.1:1")
        .replace("'plain'", "'framed'");
    let (ok, _, stderr) = run_sql(&sql, &[]);
    assert!(!ok);
    assert!(stderr.contains("http://127.0.0.1:1"), "{stderr}");
}

/// The body of a GET (the registry's JSON).
fn http_get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
