//! The broker against a real Kafka client that no one here wrote: kcat (librdkafka), installed
//! by `test.sh`. Keyed produce to several partitions, consume, every compression codec,
//! restart with data kept, ListOffsets by timestamp, and hostile input that costs only its
//! own connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, kcat, BrokerProcess};

fn consume_all(b: &BrokerProcess, topic: &str, format: &str) -> Vec<String> {
    let mut lines: Vec<String> = kcat(
        &[
            "-C",
            "-b",
            &b.bootstrap(),
            "-t",
            topic,
            "-e",
            "-q",
            "-f",
            format,
        ],
        "",
    )
    .lines()
    .map(str::to_string)
    .collect();
    lines.sort();
    lines
}

#[test]
fn kcat_produces_and_consumes_across_partitions_codecs_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut b = BrokerProcess::start(dir.path(), port, &["--default-partitions", "3"]);

    let input: String = (0..30).map(|i| format!("k{}:value-{i}\n", i % 5)).collect();
    kcat(
        &[
            "-P",
            "-b",
            &b.bootstrap(),
            "-t",
            "orders",
            "-K:",
            "-X",
            "acks=all",
        ],
        &input,
    );
    let got = consume_all(&b, "orders", "%p|%k|%s\n");
    assert_eq!(got.len(), 30, "{got:?}");
    // Every message once; equal keys in one partition.
    let mut partition_of_key = std::collections::HashMap::new();
    for line in &got {
        let parts: Vec<&str> = line.split('|').collect();
        let prev = partition_of_key.insert(parts[1].to_string(), parts[0].to_string());
        assert!(
            prev.is_none() || prev.as_deref() == Some(parts[0]),
            "key {} in two partitions",
            parts[1]
        );
    }
    assert!(
        partition_of_key
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1
    );
    let mut values: Vec<String> = got
        .iter()
        .map(|l| l.rsplit('|').next().unwrap().to_string())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("value-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);

    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("compressed-{codec}");
        let input: String = (0..50).map(|i| format!("{codec}-{i}\n")).collect();
        kcat(
            &["-P", "-b", &b.bootstrap(), "-t", &topic, "-z", codec],
            &input,
        );
        assert_eq!(consume_all(&b, &topic, "%s\n").len(), 50, "{codec}");
    }

    // Restart: the data is still there and offsets go on.
    b.kill();
    let b = BrokerProcess::start(dir.path(), port, &["--default-partitions", "3"]);
    assert_eq!(consume_all(&b, "orders", "%s\n").len(), 30);
    kcat(
        &["-P", "-b", &b.bootstrap(), "-t", "orders", "-p", "0"],
        "after-restart\n",
    );
    let p0 = kcat(
        &[
            "-C",
            "-b",
            &b.bootstrap(),
            "-t",
            "orders",
            "-p",
            "0",
            "-o",
            "-1",
            "-e",
            "-q",
            "-f",
            "%o %s\n",
        ],
        "",
    );
    assert!(p0.trim_end().ends_with("after-restart"), "{p0}");
    let offset: i64 = p0.split_whitespace().next().unwrap().parse().unwrap();
    assert!(offset > 0);

    // ListOffsets by timestamp: timestamp 0 is the first offset.
    let q = kcat(&["-Q", "-b", &b.bootstrap(), "-t", "orders:0:0"], "");
    assert!(q.contains("offset 0"), "{q}");
}

#[test]
fn malformed_input_costs_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = BrokerProcess::start(dir.path(), free_port(), &["--default-partitions", "3"]);
    let hostile: Vec<Vec<u8>> = vec![
        // An absurd length.
        0x7fff_ffffu32.to_be_bytes().to_vec(),
        // A negative length.
        (-5i32).to_be_bytes().to_vec(),
        // An unknown API key.
        [
            &12i32.to_be_bytes()[..],
            &[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
        ]
        .concat(),
        // Produce v9 with a truncated body.
        [
            &10i32.to_be_bytes()[..],
            &[0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff],
        ]
        .concat(),
        // Garbage.
        [&20i32.to_be_bytes()[..], &[0xAB; 20]].concat(),
        // Found by the request_decode fuzz target: array lengths of billions of elements in a
        // few bytes (ListOffsets v4 and DescribeConfigs v1). Once, each aborted the whole broker.
        [
            &19i32.to_be_bytes()[..],
            &[
                0x00, 0x02, 0x00, 0x04, 0x33, 0x00, 0x04, 0x33, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x5b, 0x47, 0x47, 0x5d, 0x47,
            ],
        ]
        .concat(),
        [
            &16i32.to_be_bytes()[..],
            &[
                0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,
                0x5d, 0x29,
            ],
        ]
        .concat(),
    ];
    for bytes in hostile {
        let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&bytes);
        let mut buf = [0u8; 64];
        // The broker closes the connection (or answers); it must not hang or crash.
        let _ = s.read(&mut buf);
    }
    // A client that disconnects mid-request.
    {
        let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        let _ = s.write_all(&100i32.to_be_bytes());
        let _ = s.write_all(&[0, 3, 0, 1]);
    }
    // Everyone else is still served.
    kcat(&["-P", "-b", &b.bootstrap(), "-t", "still-alive"], "ok\n");
    assert_eq!(consume_all(&b, "still-alive", "%s\n"), vec!["ok"]);
}

/// A kcat balanced consumer (`-G`) whose output lines are collected by a thread.
struct GroupConsumer {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GroupConsumer {
    fn start(b: &BrokerProcess, group: &str, topic: &str) -> GroupConsumer {
        let mut child = Command::new("kcat")
            .args([
                "-u",
                "-b",
                &b.bootstrap(),
                "-G",
                group,
                "-f",
                "%p %s\n",
                "-X",
                "auto.offset.reset=earliest",
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=300",
                "-X",
                "auto.commit.interval.ms=200",
                topic,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        GroupConsumer { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Stops like Ctrl-C: kcat commits its offsets and leaves the group.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn values(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| {
            l.split_once(' ')
                .map(|x| x.1.to_string())
                .unwrap_or_default()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn kcat_consumer_group_shares_partitions_rebalances_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut b = BrokerProcess::start(dir.path(), port, &["--default-partitions", "3"]);
    let first: String = (0..40).map(|i| format!("k{i}:a{i:02}\n")).collect();
    kcat(&["-P", "-b", &b.bootstrap(), "-t", "events", "-K:"], &first);

    let c1 = GroupConsumer::start(&b, "readers", "events");
    let c2 = GroupConsumer::start(&b, "readers", "events");
    wait_until("both members to read everything", || {
        c1.lines().len() + c2.lines().len() >= 40
    });
    std::thread::sleep(Duration::from_millis(500));
    let (l1, l2) = (c1.lines(), c2.lines());
    assert!(
        !l1.is_empty() && !l2.is_empty(),
        "the partitions are shared: {} and {}",
        l1.len(),
        l2.len()
    );
    let all: Vec<String> = [l1.clone(), l2.clone()].concat();
    let mut expected: Vec<String> = (0..40).map(|i| format!("a{i:02}")).collect();
    expected.sort();
    assert_eq!(values(&all), expected, "each message delivered once");
    let parts = |l: &[String]| {
        l.iter()
            .map(|x| x.split(' ').next().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(
        parts(&l1).is_disjoint(&parts(&l2)),
        "a partition belongs to one member"
    );

    // A member leaves: the other takes every partition.
    c2.stop();
    let second: String = (0..20).map(|i| format!("k{i}:b{i:02}\n")).collect();
    kcat(
        &["-P", "-b", &b.bootstrap(), "-t", "events", "-K:"],
        &second,
    );
    wait_until("the remaining member to read the new messages", || {
        c1.lines().iter().filter(|l| l.contains(" b")).count() >= 20
    });
    let b_values: Vec<String> = values(&c1.lines())
        .into_iter()
        .filter(|v| v.starts_with('b'))
        .collect();
    assert_eq!(b_values.len(), 20, "{b_values:?}");
    c1.stop();

    // Restart the broker: the group resumes from its committed offsets.
    b.kill();
    let b = BrokerProcess::start(dir.path(), port, &["--default-partitions", "3"]);
    let third: String = (0..5).map(|i| format!("k{i}:c{i}\n")).collect();
    kcat(&["-P", "-b", &b.bootstrap(), "-t", "events", "-K:"], &third);
    let c3 = GroupConsumer::start(&b, "readers", "events");
    wait_until("the resumed member to read the new messages", || {
        c3.lines().len() >= 5
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(values(&c3.lines()), vec!["c0", "c1", "c2", "c3", "c4"]);
    c3.stop();
}
