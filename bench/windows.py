"""Benchmark: window aggregates. Tumbling windows over few and over many keys, hopping
windows and session windows, over datagen rows (as fast as it can generate them) into a
blackhole sink; prints rows/s and peak RSS of each query for one or more Sluice binaries
side by side (to compare a change with the binary before it), on a state backend.

    cargo build --release
    python3 bench/windows.py [--rows 5000000] [--backend hashmap] [--sluice PATH[,PATH...]]

Not a test: it never fails on speed.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from keyed_state import peak_rss_kib

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
default_sluice = os.path.join(target, "release", "sluice")

SOURCE = """SET 'pipeline.name' = 'windows-bench';
SET 'state.backend.type' = '{backend}';
CREATE TABLE src (id BIGINT, v BIGINT, ts AS TO_TIMESTAMP_LTZ(id, 3), k AS id % 3000,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (
  'connector' = 'datagen', 'rows-per-second' = '1000000000', 'number-of-rows' = '{rows}',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
  'fields.v.min' = '1', 'fields.v.max' = '100');
CREATE TABLE sink (k BIGINT, s TIMESTAMP(3), n BIGINT, total BIGINT, top BIGINT)
  WITH ('connector' = 'blackhole');
"""

# One row per millisecond of event time: a 10 s window holds 10,000 rows.
QUERIES = {
    "tumble 10 s, 100 keys": """INSERT INTO sink SELECT id % 100, window_start, COUNT(*), SUM(v), MAX(v)
FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY id % 100, window_start, window_end;""",
    "tumble 100 s, all keys": """INSERT INTO sink SELECT id, window_start, COUNT(*), SUM(v), MAX(v)
FROM TABLE(TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '100' SECOND)) GROUP BY id, window_start, window_end;""",
    "hop 10 s / 2 s, 100 keys": """INSERT INTO sink SELECT id % 100, window_start, COUNT(*), SUM(v), MAX(v)
FROM TABLE(HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY id % 100, window_start, window_end;""",
    "session 2 s, 3,000 keys": """INSERT INTO sink SELECT k, window_start, COUNT(*), SUM(v), MAX(v)
FROM TABLE(SESSION(TABLE src PARTITION BY k, DESCRIPTOR(ts), INTERVAL '2' SECOND)) GROUP BY k, window_start, window_end;""",
}


def run(sluice, sql):
    """One run from scratch: (seconds, peak RSS in MiB)."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "job.sql")
        with open(script, "w") as f:
            f.write(sql)
        err = open(os.path.join(d, "stderr"), "w+")
        start = time.perf_counter()
        p = subprocess.Popen([sluice, "run", "--data-dir", os.path.join(d, "state"), script],
                             stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while p.poll() is None:
            peak = max(peak, peak_rss_kib(p.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"{sluice} failed:\n{err.read()[-3000:]}")
        return elapsed, peak / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--backend", default="hashmap")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sluice", default=default_sluice, help="binaries, comma-separated")
    a = ap.parse_args()
    binaries = a.sluice.split(",")
    print(f"window aggregates over {a.rows:,} rows, state.backend.type {a.backend}")
    for i, b in enumerate(binaries):
        print(f"  [{i}] {b}")
    for name, query in QUERIES.items():
        sql = SOURCE.format(backend=a.backend, rows=a.rows) + query
        rates = []
        cells = []
        for b in binaries:
            runs = [run(b, sql) for _ in range(a.rounds)]
            secs = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            rates.append(a.rows / secs)
            cells.append(f"{a.rows / secs:11,.0f} rows/s {rss:6.0f} MiB")
        ratio = f"  [last]/[0] {rates[-1] / rates[0]:.2f}" if len(rates) > 1 else ""
        print(f"  {name:28}" + "  |".join(cells) + ratio)


if __name__ == "__main__":
    main()
