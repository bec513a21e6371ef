"""Benchmark of `sluice broker` with real clients on loopback, next to the disk's sequential
write bandwidth measured in the same run on the same file system:

- throughput with kcat (librdkafka): produce with acks=1 and acks=all, then consume, in MB/s
  and messages/s, with the CPU time the broker and the client used;
- produce latency percentiles with confluent-kafka at a steady rate, acks=all.

    cargo build --release
    apt-get install kcat; python3 -m venv ~/.cache/sluice-venv && ~/.cache/sluice-venv/bin/pip install confluent-kafka
    ~/.cache/sluice-venv/bin/python bench/broker_throughput.py [--messages 300000] [--size 1000]

Set BENCH_DIR to put the data on another file system. Not a test: it never fails on speed.
"""
import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
sluice = os.path.join(target, "release", "sluice")
TICKS = os.sysconf("SC_CLK_TCK")


def disk_bandwidth(directory, total_mb=1024, chunk_mb=1):
    """Best of two runs: (MB/s with one fsync at the end, MB/s with an fsync after each MiB)."""
    chunk = os.urandom(chunk_mb << 20)
    best = [0.0, 0.0]
    for _ in range(2):
        for k, every_chunk in enumerate((False, True)):
            os.sync()
            path = os.path.join(directory, "disk-probe")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            start = time.perf_counter()
            for _ in range(total_mb // chunk_mb):
                os.write(fd, chunk)
                if every_chunk:
                    os.fsync(fd)
            os.fsync(fd)
            best[k] = max(best[k], total_mb / (time.perf_counter() - start))
            os.close(fd)
            os.remove(path)
    return best


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, broker_pid, **kw):
    # Start from a clean page cache: a previous phase's dirty pages would otherwise be
    # written back during this one and throttle it.
    os.sync()
    b0, c0 = cpu_seconds(broker_pid), children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    elapsed = time.perf_counter() - start
    return elapsed, cpu_seconds(broker_pid) - b0, children_cpu() - c0


def latency(bootstrap, topic, rate, seconds, size):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1, "enable.idempotence": False})
    lat = []
    value = b"x" * size
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        sent = time.perf_counter()
        p.produce(topic, value=value, on_delivery=lambda e, m, s=sent: e is None and lat.append(time.perf_counter() - s))
        p.poll(0)
    p.flush(60)
    lat.sort()
    return [lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 for q in (0.5, 0.99, 0.999)], len(lat)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        lines = os.path.join(d, "messages.txt")
        with open(lines, "w") as f:
            f.write(("m" * (args.size - 1) + "\n") * args.messages)
        mb = args.messages * args.size / 1e6
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
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
            print(f"{args.messages:,} messages of {args.size} bytes ({mb:.0f} MB) per run, {args.rounds} rounds; "
                  f"the disk is measured in each round, just before the broker writes")
            ratios, all_mb, one_mb, consume_mb = [], [], [], []
            for rnd in range(args.rounds):
                plain, synced = disk_bandwidth(d, total_mb=512)
                row = [f"round {rnd + 1}: disk {plain:6.0f} MB/s (one fsync), {synced:6.0f} MB/s (fsync every MiB)"]
                for acks in ("1", "all"):
                    t, bcpu, ccpu = timed(["kcat", "-P", "-b", bootstrap, "-t", f"r{rnd}-acks-{acks}", "-X", f"acks={acks}",
                                           "-X", "linger.ms=5", "-X", "batch.size=1000000", "-l", lines], broker.pid)
                    (one_mb if acks == "1" else all_mb).append(mb / t)
                    row.append(f"  produce acks={acks:3}: {mb / t:7.1f} MB/s {args.messages / t:11,.0f} msg/s   "
                               f"CPU: broker {bcpu / t * 100:4.0f}%, kcat {ccpu / t * 100:4.0f}%")
                ratios.append(all_mb[-1] / synced)
                row[-1] += f"   ({ratios[-1] * 100:.0f}% of the fsynced disk bandwidth)"
                t, bcpu, ccpu = timed(["kcat", "-C", "-b", bootstrap, "-t", f"r{rnd}-acks-1", "-e", "-q", "-o", "beginning",
                                       "-f", "%o\n"], broker.pid, stdout=subprocess.DEVNULL)
                consume_mb.append(mb / t)
                row.append(f"  consume:          {mb / t:7.1f} MB/s {args.messages / t:11,.0f} msg/s   "
                           f"CPU: broker {bcpu / t * 100:4.0f}%, kcat {ccpu / t * 100:4.0f}%")
                print("\n".join(row))
            print(f"median: produce acks=1 {median(one_mb):.0f} MB/s, acks=all {median(all_mb):.0f} MB/s "
                  f"({median(ratios) * 100:.0f}% of the fsynced disk bandwidth), consume {median(consume_mb):.0f} MB/s")
            (p50, p99, p999), n = latency(bootstrap, "latency", 2000, 5, args.size)
            print(f"latency acks=all at 2,000 msg/s ({n} messages, confluent-kafka): "
                  f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, p99.9 {p999:.2f} ms")
        finally:
            broker.terminate()
            broker.wait()


if __name__ == "__main__":
    main()
