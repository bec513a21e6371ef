"""Benchmark of `sluice broker` with a real client (confluent-kafka) on loopback: produce
throughput (MB/s, messages/s) and latency percentiles with acks=1 and acks=all, consume
throughput, next to the disk's sequential write bandwidth (plain and fsynced) measured in
the same run on the same file system.

    cargo build --release
    python3 -m venv ~/.cache/sluice-venv && ~/.cache/sluice-venv/bin/pip install confluent-kafka
    ~/.cache/sluice-venv/bin/python bench/broker_throughput.py [--messages 1000000] [--size 100]

Not a test: it never fails on speed.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
sluice = os.path.join(target, "release", "sluice")


def disk_bandwidth(directory, total_mb=512, chunk_mb=1):
    """(plain MB/s with one fsync at the end, MB/s with an fsync after every chunk)."""
    chunk = os.urandom(chunk_mb << 20)
    out = []
    for every_chunk in (False, True):
        path = os.path.join(directory, "disk-probe")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        start = time.perf_counter()
        for _ in range(total_mb // chunk_mb):
            os.write(fd, chunk)
            if every_chunk:
                os.fsync(fd)
        os.fsync(fd)
        elapsed = time.perf_counter() - start
        os.close(fd)
        os.remove(path)
        out.append(total_mb / elapsed)
    return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def produce(bootstrap, topic, n, size, acks):
    latencies = []
    value = b"x" * size
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 1_000_000, "enable.idempotence": False})

    def done(err, msg, sent=None):
        if err is None:
            latencies.append(time.perf_counter() - sent)

    start = time.perf_counter()
    for i in range(n):
        sent = time.perf_counter()
        while True:
            try:
                p.produce(topic, value=value, on_delivery=lambda e, m, s=sent: done(e, m, s))
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    elapsed = time.perf_counter() - start
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    return elapsed, len(latencies), (pct(0.5), pct(0.99), pct(0.999))


def consume(bootstrap, topic, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "fetch.max.bytes": 50 << 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    start = time.perf_counter()
    while got < n:
        msgs = c.consume(10000, 5)
        if not msgs:
            break
        got += sum(1 for m in msgs if not m.error())
    elapsed = time.perf_counter() - start
    c.close()
    return elapsed, got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=100)
    args = ap.parse_args()
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        plain, synced = disk_bandwidth(d)
        print(f"disk: sequential write {plain:8.1f} MB/s (one fsync), {synced:8.1f} MB/s (fsync every 1 MiB)")
        port = free_port()
        broker = subprocess.Popen([sluice, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(d, "data")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        sys.exit("the broker did not start")
                    time.sleep(0.05)
            bootstrap = f"127.0.0.1:{port}"
            mb = args.messages * args.size / 1e6
            for acks in ("1", "all"):
                topic = f"bench-acks-{acks}"
                elapsed, acked, (p50, p99, p999) = produce(bootstrap, topic, args.messages, args.size, acks)
                print(f"produce acks={acks:3}: {mb / elapsed:8.1f} MB/s {acked / elapsed:12,.0f} msg/s   "
                      f"latency p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  p99.9 {p999:6.1f} ms")
                if acks == "all":
                    print(f"             acks=all at {mb / elapsed / synced * 100:.0f}% of the fsynced disk bandwidth, "
                          f"{mb / elapsed / plain * 100:.0f}% of the plain one")
            elapsed, got = consume(bootstrap, "bench-acks-1", args.messages)
            print(f"consume:        {got * args.size / 1e6 / elapsed:8.1f} MB/s {got / elapsed:12,.0f} msg/s ({got} messages)")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()
