"""Benchmark: Kafka source throughput. JSON sensor readings are produced with kcat into a
`sluice broker` topic, then a stateless query (a filter and a projection, into a blackhole
sink) reads the whole topic (`'scan.bounded.mode' = 'latest-offset'`) at parallelism 1 and 2.
The same rows read from a file give the engine's own rate, for comparison.

    cargo build --release -p sluice
    python3 bench/kafka_source.py [--rows 3000000] [--partitions 2] [--rounds 3]

Prints records/s and MB/s, median over the rounds. Not a test: it never fails on speed.
"""
import argparse
import os
import random
import socket
import statistics
import subprocess
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
sluice = os.path.join(target, "release", "sluice")

TABLE = """CREATE TABLE readings (
  sensor_id STRING,
  temperature DOUBLE,
  ts BIGINT
) WITH ({source}, 'format' = 'json');
CREATE TABLE sink (sensor_id STRING, fahrenheit DOUBLE, ts BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT sensor_id, temperature * 9 / 5 + 32, ts FROM readings WHERE temperature > 20;
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def generate(path, rows):
    rnd = random.Random(7)
    with open(path, "w") as f:
        for i in range(rows):
            f.write('{"sensor_id": "sensor-%d", "temperature": %.2f, "ts": %d}\n'
                    % (i % 1000, rnd.uniform(0, 120), 1700000000000 + i))


def run_job(sql, parallelism, workdir):
    script = os.path.join(workdir, "job.sql")
    with open(script, "w") as f:
        f.write(sql)
    start = time.perf_counter()
    subprocess.run([sluice, "run", "--quiet", "--parallelism", str(parallelism), script],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "readings.json")
        generate(data, args.rows)
        size_mb = os.path.getsize(data) / 1e6
        port = free_port()
        broker = subprocess.Popen([sluice, "broker", "--listen", f"127.0.0.1:{port}",
                                   "--data-dir", os.path.join(work, "broker")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            bs = f"127.0.0.1:{port}"
            for _ in range(100):
                if subprocess.run([sluice, "topics", "list", "-b", bs],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            subprocess.run([sluice, "topics", "create", "readings", "--partitions",
                            str(args.partitions), "-b", bs], check=True, capture_output=True)
            t0 = time.perf_counter()
            subprocess.run(["kcat", "-P", "-b", bs, "-t", "readings", "-X", "linger.ms=20",
                            "-X", "batch.num.messages=10000", "-l", data], check=True)
            produce_s = time.perf_counter() - t0
            print(f"{args.rows:,} JSON records, {size_mb:.0f} MB, {args.partitions} partitions; "
                  f"produced with kcat in {produce_s:.2f} s")
            kafka = (f"'connector' = 'kafka', 'topic' = 'readings', "
                     f"'properties.bootstrap.servers' = '{bs}', "
                     f"'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'")
            file = f"'connector' = 'filesystem', 'path' = '{data}'"
            results = {}
            for name, source in [("kafka", kafka), ("file", file)]:
                for p in (1, 2):
                    times = [run_job(TABLE.format(source=source), p, work)
                             for _ in range(args.rounds)]
                    results[(name, p)] = statistics.median(times)
            for (name, p), t in results.items():
                print(f"  {name:5} source, parallelism {p}: {t:6.2f} s  "
                      f"{args.rows / t:>12,.0f} records/s  {size_mb / t:7.1f} MB/s")
            for p in (1, 2):
                print(f"  parallelism {p}: Kafka source at "
                      f"{results[('file', p)] / results[('kafka', p)]:.0%} of the file source's rate")
        finally:
            broker.kill()
            broker.wait()


if __name__ == "__main__":
    main()
