//! The `webhook` sink against a local HTTP receiver that fails some requests (retried: every
//! row arrives once), one that refuses everything (the job fails, or skips and counts with
//! `sink.on-failure` = `skip`); the `http` source taking events by POST, answered once they
//! are in the job; and the `redis` sink against the machine's Redis (started if it is not
//! running), read back with `redis-cli`: upserts into hashes and strings by primary key,
//! deletes on retractions.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the receiver was sent: (path, headers lowercased, body) of every request it accepted.
type Received = Arc<Mutex<Vec<(String, Vec<String>, String)>>>;

/// An HTTP receiver on a free port: it answers `status(n)` to the n-th request (0-based) and
/// keeps the requests it answers 2xx.
fn receiver(status: impl Fn(usize) -> u16 + Send + 'static) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let (path, headers, body) = read_request(&stream);
            let code = status(n);
            if (200..300).contains(&code) {
                keep.lock().unwrap().push((path, headers, body));
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
            );
        }
    });
    (url, received)
}

fn read_request(stream: &TcpStream) -> (String, Vec<String>, String) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        headers.push(h);
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (path, headers, String::from_utf8(body).unwrap())
}

fn alerts_job(url: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE readings (sensor STRING, temperature DOUBLE) WITH (
  'connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
CREATE TABLE alerts (sensor STRING, temperature DOUBLE) WITH (
  'connector' = 'webhook', 'url' = '{url}', 'sink.retry-backoff' = '10 ms',
  'headers.X-Api-Key' = 'k1'{extra});
INSERT INTO alerts SELECT sensor, temperature FROM readings WHERE temperature > 30;",
        readings().display()
    )
}

/// Ten readings, five of them above 30.
fn readings() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-webhook-{}.json", std::process::id()));
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&format!(
            "{{\"sensor\": \"s{i}\", \"temperature\": {}}}\n",
            25 + 2 * i
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn webhooks_are_retried_until_accepted_and_refusals_fail_or_skip() {
    // Every third request fails with 503 (then 429): each row is retried until accepted.
    let (url, got) = receiver(|n| match n % 3 {
        1 => 503,
        2 => 429,
        _ => 200,
    });
    let (ok, _, err) = common::run_sql(&alerts_job(&url, ""), &[]);
    assert!(ok, "{err}");
    let got = got.lock().unwrap().clone();
    let mut bodies: Vec<&str> = got.iter().map(|(_, _, b)| b.as_str()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            r#"{"sensor":"s3","temperature":31.0}"#,
            r#"{"sensor":"s4","temperature":33.0}"#,
            r#"{"sensor":"s5","temperature":35.0}"#,
            r#"{"sensor":"s6","temperature":37.0}"#,
            r#"{"sensor":"s7","temperature":39.0}"#,
            r#"{"sensor":"s8","temperature":41.0}"#,
            r#"{"sensor":"s9","temperature":43.0}"#,
        ],
        "every row once"
    );
    let (path, headers, _) = &got[0];
    assert_eq!(path, "/hook");
    assert!(
        headers.contains(&"x-api-key: k1".to_string()),
        "{headers:?}"
    );
    assert!(
        headers.contains(&"content-type: application/json".to_string()),
        "{headers:?}"
    );

    // A Slack-style body from a template.
    let (url, got) = receiver(|_| 200);
    let extra = r#", 'body.template' = '{"text": "{sensor} is at {temperature} \"C"}'"#;
    let (ok, _, err) = common::run_sql(&alerts_job(&url, extra), &[]);
    assert!(ok, "{err}");
    let got = got.lock().unwrap();
    let first: serde_json::Value = serde_json::from_str(&got[0].2).unwrap();
    assert!(first["text"].as_str().unwrap().ends_with(" \"C"), "{first}");
    assert!(got
        .iter()
        .any(|(_, _, b)| b == r#"{"text": "s9 is at 43.0 \"C"}"#));

    // A target that refuses (400): not retried; the job fails and says why.
    let (url, _) = receiver(|_| 400);
    let (ok, _, err) = common::run_sql(&alerts_job(&url, ""), &[]);
    assert!(!ok);
    assert!(
        err.contains("HTTP 400") && err.contains("not retried"),
        "{err}"
    );
    assert!(err.contains("sink errors: 1"), "{err}");
    // ... or the rows are skipped and counted.
    let (ok, _, err) = common::run_sql(&alerts_job(&url, ", 'sink.on-failure' = 'skip'"), &[]);
    assert!(ok, "{err}");
    // A target that is not there: retried, then the job fails naming it.
    let port = common::free_port();
    let (ok, _, err) = common::run_sql(
        &alerts_job(
            &format!("http://127.0.0.1:{port}/x"),
            ", 'sink.max-retries' = '2'",
        ),
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains(&format!("http://127.0.0.1:{port}/x")) && err.contains("after 3 attempts"),
        "{err}"
    );
}

/// One HTTP/1.1 POST; the status and the body of the answer.
fn post(addr: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[test]
fn events_posted_to_the_http_source_reach_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let sql = format!(
        "CREATE TABLE events (id INT, kind STRING) WITH (
  'connector' = 'http', 'listen' = '{addr}', 'path' = '/events', 'format' = 'json',
  'auth.token' = 't0k');
CREATE TABLE seen (id INT, kind STRING) WITH ('connector' = 'print');
INSERT INTO seen SELECT * FROM events;"
    );
    let mut job = common::RunningJob::start(&sql, dir.path());
    // Until it listens.
    let started = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = post(&addr, "/events", r#"{"id": 1, "kind": "a"}"#, Some("t0k"));
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":1}"#));
    let (status, body) = post(
        &addr,
        "/events",
        r#"[{"id": 2, "kind": "b"}, {"id": 3, "kind": "c"}]"#,
        Some("t0k"),
    );
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":2}"#));
    // A malformed event: 400 with where and why, and nothing of that request taken.
    let (status, body) = post(
        &addr,
        "/events",
        "{\"id\": 4, \"kind\": \"d\"}\n{\"id\": ",
        Some("t0k"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 2"), "{body}");
    let (status, _) = post(&addr, "/events", r#"{"id": 5}"#, None);
    assert_eq!(status, 401);
    assert!(
        job.wait_for(Duration::from_secs(30), |l| l == "+I[3, c]"),
        "{:?} {}",
        job.seen,
        job.stderr()
    );
    assert_eq!(job.seen, ["+I[1, a]", "+I[2, b]", "+I[3, c]"]);
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
}

#[test]
fn two_inserts_reading_one_http_source_both_get_every_event() {
    // One source serves both (Flink's source reuse): two would both try to listen.
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let sql = format!(
        "CREATE TABLE events (id INT, kind STRING) WITH (
  'connector' = 'http', 'listen' = '{addr}', 'path' = '/events', 'format' = 'json');
CREATE TABLE every (id INT, kind STRING) WITH ('connector' = 'print', 'print-identifier' = 'every');
CREATE TABLE odd (id INT) WITH ('connector' = 'print', 'print-identifier' = 'odd');
INSERT INTO every SELECT * FROM events;
INSERT INTO odd SELECT id FROM events WHERE id % 2 = 1;"
    );
    let mut job = common::RunningJob::start(&sql, dir.path());
    let started = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30) && job.is_running(),
            "{}",
            job.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = post(
        &addr,
        "/events",
        r#"[{"id": 1, "kind": "a"}, {"id": 2, "kind": "b"}, {"id": 3, "kind": "c"}]"#,
        None,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":3}"#));
    for last in ["every> +I[3, c]", "odd> +I[3]"] {
        assert!(
            job.wait_for(Duration::from_secs(30), |l| l == last),
            "{:?} {}",
            job.seen,
            job.stderr()
        );
    }
    let mut seen = job.seen.clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "every> +I[1, a]",
            "every> +I[2, b]",
            "every> +I[3, c]",
            "odd> +I[1]",
            "odd> +I[3]"
        ]
    );
    job.interrupt();
    assert!(job.wait(Duration::from_secs(30)), "{}", job.stderr());
}

fn ensure_redis() {
    if TcpStream::connect("127.0.0.1:6379").is_ok() {
        return;
    }
    let status = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .status()
        .expect("starting redis-server");
    assert!(status.success());
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:6379").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_redis_sink_keeps_the_latest_row_of_every_key() {
    ensure_redis();
    let prefix = format!("sluice-test-{}:", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("clicks.json");
    std::fs::write(
        &clicks,
        "{\"page\": \"/a\", \"user\": \"u1\"}\n{\"page\": \"/b\", \"user\": \"u1\"}\n{\"page\": \"/a\", \"user\": \"u2\"}\n{\"page\": \"/a\", \"user\": \"u3\"}\n{\"page\": \"/c\", \"user\": \"u1\"}\n",
    )
    .unwrap();
    // An updating count per page into hashes, and per user into JSON strings; a page whose
    // count comes back down is deleted (HAVING: a retraction).
    let sql = format!(
        "CREATE TABLE clicks (page STRING, `user` STRING) WITH (
  'connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
CREATE TABLE pages (page STRING, hits BIGINT, last_user STRING, PRIMARY KEY (page) NOT ENFORCED) WITH (
  'connector' = 'redis', 'url' = 'redis://127.0.0.1:6379', 'key-prefix' = '{prefix}page:');
CREATE TABLE users (`user` STRING, pages BIGINT, PRIMARY KEY (`user`) NOT ENFORCED) WITH (
  'connector' = 'redis', 'url' = 'redis://127.0.0.1:6379', 'key-prefix' = '{prefix}user:',
  'data-type' = 'string');
CREATE TABLE busy (`user` STRING, pages BIGINT, PRIMARY KEY (`user`) NOT ENFORCED) WITH (
  'connector' = 'redis', 'url' = 'redis://127.0.0.1:6379', 'key-prefix' = '{prefix}busy:',
  'data-type' = 'string');
INSERT INTO pages SELECT page, COUNT(*), MAX(`user`) FROM clicks GROUP BY page;
INSERT INTO users SELECT `user`, COUNT(*) FROM clicks GROUP BY `user`;
INSERT INTO busy SELECT `user`, COUNT(*) FROM clicks GROUP BY `user` HAVING COUNT(*) = 2;",
        clicks.display()
    );
    let (ok, _, err) = common::run_sql(&sql, &[]);
    assert!(ok, "{err}");
    let hash = |k: &str| redis_cli(&["HGETALL", &format!("{prefix}page:{k}")]);
    assert_eq!(hash("/a"), "page\n/a\nhits\n3\nlast_user\nu3");
    assert_eq!(hash("/b"), "page\n/b\nhits\n1\nlast_user\nu1");
    assert_eq!(
        redis_cli(&["GET", &format!("{prefix}user:u1")]),
        r#"{"user":"u1","pages":3}"#
    );
    // u1 had 2 pages, then 3: its key came and went.
    assert_eq!(redis_cli(&["EXISTS", &format!("{prefix}busy:u1")]), "0");
    assert_eq!(
        redis_cli(&["KEYS", &format!("{prefix}busy:*")]),
        "",
        "no user has exactly two pages"
    );

    // A key of the wrong type: Redis refuses, the job fails with its message.
    redis_cli(&["SET", &format!("{prefix}page:/a"), "not a hash"]);
    let (ok, _, err) = common::run_sql(&sql, &[]);
    assert!(!ok);
    assert!(
        err.contains("WRONGTYPE") || err.contains("wrong kind"),
        "{err}"
    );
    // No primary key: refused before the job starts.
    let sql = "CREATE TABLE g (a INT) WITH ('connector' = 'datagen', 'number-of-rows' = '1');
CREATE TABLE r (a INT) WITH ('connector' = 'redis', 'url' = 'redis://127.0.0.1:6379');
INSERT INTO r SELECT * FROM g;";
    let (ok, _, err) = common::run_sql(sql, &[]);
    assert!(!ok && err.contains("needs a PRIMARY KEY"), "{err}");
    for pattern in ["page:*", "user:*", "busy:*"] {
        for key in redis_cli(&["KEYS", &format!("{prefix}{pattern}")]).lines() {
            redis_cli(&["DEL", key]);
        }
    }
}
