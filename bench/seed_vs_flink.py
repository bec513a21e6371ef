"""Benchmark: the seed query (temperature alerts, a 10 s tumbling window with HAVING) over
about 5 million JSON sensor readings, run by Sluice and by Flink (PyFlink, parallelism 1,
filesystem source) in the same run. Prints events per second and peak memory of each and
their ratios, and the time to the first output row of a small Sluice job.

    python3 -m venv ~/flink-venv && ~/flink-venv/bin/pip install apache-flink psutil
    cargo build --release
    ~/flink-venv/bin/python bench/seed_vs_flink.py [--rows 5000000] [--skip-flink] [--sluice PATH]

Not a test: it never fails on speed.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
sluice = os.path.join(target, "release", "sluice")

DDL = """CREATE TEMPORARY TABLE sensor_data (
  sensor_id STRING,
  temperature DOUBLE,
  ts BIGINT,
  event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"""

SINK = """CREATE TEMPORARY TABLE alerts (sensor_id STRING, cnt BIGINT, window_end TIMESTAMP(3))
WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv')"""

QUERY = """INSERT INTO alerts
SELECT sensor_id, COUNT(*), TUMBLE_END(event_time, INTERVAL '10' SECOND) AS window_end
FROM sensor_data
WHERE temperature > 100
GROUP BY sensor_id, TUMBLE(event_time, INTERVAL '10' SECOND)
HAVING COUNT(*) > 5"""


def generate(path, rows):
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path + ".rows") as f:
            if int(f.read()) == rows:
                return
    random.seed(42)
    base = 1704103200000
    with open(path, "w") as f:
        chunk = []
        for i in range(rows):
            # 1000 sensors, 5 readings per millisecond on average, out of order by up to 3 s.
            t = base + i // 5 - random.randint(0, 3000)
            chunk.append('{"sensor_id":"sensor-%d","temperature":%.2f,"ts":%d}' % (random.randint(0, 999), 80 + random.random() * 30, t))
            if len(chunk) == 100000:
                f.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            f.write("\n".join(chunk) + "\n")
    with open(path + ".rows", "w") as f:
        f.write(str(rows))


def measure(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS of its process tree in MiB, stdout)."""
    import psutil  # in the Flink venv; not needed by the scripts that only import `generate`

    start = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    peak = [0]
    proc = psutil.Process(p.pid)

    def sample():
        while p.poll() is None:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    out, err = p.communicate()
    t.join()
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{err[-3000:]}")
    return elapsed, peak[0] / 2**20, out


def count_rows(out_dir):
    n = 0
    for root_dir, _, files in os.walk(out_dir):
        for f in files:
            if not f.startswith("."):
                with open(os.path.join(root_dir, f)) as fh:
                    n += sum(1 for _ in fh)
    return n


FLINK_SCRIPT = """
import sys
from pyflink.table import EnvironmentSettings, TableEnvironment
t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t.get_config().set("parallelism.default", "1")
t.get_config().set("table.local-time-zone", "UTC")
for s in sys.argv[1].split(";;"):
    r = t.execute_sql(s)
r.wait()
"""


def first_output_ms():
    """Time from start to the first printed row of a small job, over 10 runs."""
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "s.json")
        with open(data, "w") as f:
            for i in range(100):
                f.write(json.dumps({"sensor_id": "s1", "temperature": 101.0, "ts": 1704103200000 + i * 100}) + "\n")
        script = os.path.join(d, "q.sql")
        with open(script, "w") as f:
            f.write(DDL.format(path=data) + ";\nSELECT sensor_id, temperature FROM sensor_data;\n")
        times = []
        for _ in range(10):
            start = time.perf_counter()
            p = subprocess.Popen([sluice, "run", "--quiet", script], stdout=subprocess.PIPE, text=True)
            p.stdout.readline()
            times.append((time.perf_counter() - start) * 1000)
            p.communicate()
        times.sort()
        return times[len(times) // 2], times[-1]


def run_both(path, rows, skip_flink, label):
    """Runs the seed query over `path` with both engines; returns {engine: (seconds, MiB, rows)}."""
    results = {}
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "sluice-out")
        script = os.path.join(d, "seed.sql")
        with open(script, "w") as f:
            f.write(";\n".join([DDL.format(path=path), SINK.format(out=out), QUERY]) + ";\n")
        s_time, s_mem, _ = measure([sluice, "run", "--quiet", script])
        results["sluice"] = (s_time, s_mem, count_rows(out))
        if not skip_flink:
            fout = os.path.join(d, "flink-out")
            statements = ";;".join([DDL.format(path=path), SINK.format(out=fout), QUERY])
            f_time, f_mem, _ = measure([sys.executable, "-c", FLINK_SCRIPT, statements])
            results["flink"] = (f_time, f_mem, count_rows(fout))
    for engine, (t, m, n) in results.items():
        print(f"{label} {engine:6} {t:7.2f} s  {rows / t:12,.0f} events/s  peak {m:7.1f} MiB  ({n} alert rows)")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--skip-flink", action="store_true")
    ap.add_argument("--sluice", default=sluice, help="the sluice binary to run")
    args = ap.parse_args()
    globals()["sluice"] = args.sluice
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    data_dir = os.path.join(here, "data")
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "sensors.json")
    t0 = time.perf_counter()
    generate(path, args.rows)
    size_mb = os.path.getsize(path) / 2**20
    print(f"input: {args.rows:,} readings, {size_mb:.0f} MiB ({time.perf_counter() - t0:.1f} s to prepare)")

    big = run_both(path, args.rows, args.skip_flink, "5M:   ")
    if not args.skip_flink:
        # The same query over 10,000 rows measures each engine's fixed cost (start-up,
        # planning, shutdown), to give the throughput without it as well.
        small_path = os.path.join(data_dir, "sensors-small.json")
        generate(small_path, 10_000)
        small = run_both(small_path, 10_000, False, "10k:  ")
        s_t, s_m, s_n = big["sluice"]
        f_t, f_m, f_n = big["flink"]
        print(f"ratio (end to end):      sluice {f_t / s_t:.1f}x Flink's events/s, at {s_m / f_m * 100:.1f}% of its peak memory")
        s_net = max(s_t - small["sluice"][0], 1e-3)
        f_net = max(f_t - small["flink"][0], 1e-3)
        print(f"ratio (without start-up): sluice {args.rows / s_net:,.0f} events/s, Flink {args.rows / f_net:,.0f} events/s: {f_net / s_net:.1f}x")
        if s_n != f_n:
            print(f"warning: the engines produced different numbers of rows ({s_n} vs {f_n})")
    median, worst = first_output_ms()
    print(f"first output of a small job: median {median:.1f} ms, worst {worst:.1f} ms over 10 runs")


if __name__ == "__main__":
    main()
