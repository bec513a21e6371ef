//! The broker against a real Kafka client that no one here wrote: kcat (librdkafka), installed
//! by `test.sh`. Keyed produce to several partitions, consume, every compression codec,
//! restart with data kept, ListOffsets by timestamp, and hostile input that costs only its
//! own connection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct BrokerProcess {
    child: Child,
    port: u16,
}

impl BrokerProcess {
    fn start(dir: &std::path::Path, port: u16) -> BrokerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                "broker",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--default-partitions",
                "3",
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sluice broker");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the broker did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BrokerProcess { child, port }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kcat(args: &[&str], input: &str) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed by test.sh (apt-get install kcat)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

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
    let mut b = BrokerProcess::start(dir.path(), port);

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
    let b = BrokerProcess::start(dir.path(), port);
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
    let b = BrokerProcess::start(dir.path(), free_port());
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
