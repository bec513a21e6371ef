"""Benchmark: keyed state. An updating GROUP BY over N distinct keys (datagen, as fast as it
can generate) into a blackhole sink, on each state backend, with checkpoints off and every
1 s; prints throughput, peak RSS, the state size and, per checkpoint, the synchronous and
asynchronous parts and the bytes written (incremental bytes where the checkpoints are
incremental), and the ratio of throughput with checkpoints to without.

    cargo build --release
    python3 bench/keyed_state.py [--keys 5000000] [--backends hashmap] [--sluice PATH]

Not a test: it never fails on speed.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
default_sluice = os.path.join(here, "..", "target", "release", "sluice")

QUERY = """SET 'pipeline.name' = 'keyed-bench';
SET 'state.backend.type' = '{backend}';
{checkpoints}
CREATE TABLE src (id BIGINT, v BIGINT) WITH (
  'connector' = 'datagen', 'rows-per-second' = '1000000000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{keys}',
  'fields.v.min' = '1', 'fields.v.max' = '100');
CREATE TABLE sink (k BIGINT, n BIGINT, total BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT id, COUNT(*), SUM(v) FROM src GROUP BY id;
"""

CHECKPOINTS = "SET 'execution.checkpointing.interval' = '1 s';"


def run(sluice, keys, backend, checkpoints):
    """One run from scratch: (seconds, peak RSS in MiB, checkpoints from history.json)."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "job.sql")
        with open(script, "w") as f:
            f.write(QUERY.format(backend=backend, keys=keys,
                                 checkpoints=CHECKPOINTS if checkpoints else ""))
        state = os.path.join(d, "state")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        p = subprocess.run(["/usr/bin/env", sluice, "run", "--data-dir", state, script],
                           capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            sys.exit(f"sluice failed:\n{p.stderr[-3000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        history = os.path.join(state, "jobs", "keyed-bench", "checkpoints", "history.json")
        chk = []
        if os.path.exists(history):
            with open(history) as f:
                chk = [c for c in json.load(f) if c.get("status") == "Completed"]
        # ru_maxrss of children is the largest child so far: only meaningful if it grew.
        return elapsed, max(peak, before) / 1024, chk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=5_000_000)
    ap.add_argument("--backends", default="hashmap")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sluice", default=default_sluice)
    a = ap.parse_args()
    print(f"updating GROUP BY over {a.keys:,} distinct keys, {a.sluice}")
    for backend in a.backends.split(","):
        results = {}
        for checkpoints in (False, True):
            runs = [run(a.sluice, a.keys, backend, checkpoints) for _ in range(a.rounds)]
            secs = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            chk = runs[-1][2]
            results[checkpoints] = a.keys / secs
            label = "1 s checkpoints" if checkpoints else "no checkpoints"
            print(f"  {backend:8} {label:16} {a.keys / secs:12,.0f} rows/s  "
                  f"{secs:6.2f} s  peak RSS {rss:7.0f} MiB")
            if chk:
                sizes = [c["state_size"] for c in chk]
                print(f"    {len(chk)} checkpoints: size median {statistics.median(sizes) / 2**20:.1f} MiB, "
                      f"max {max(sizes) / 2**20:.1f} MiB; sync median "
                      f"{statistics.median(c.get('sync_duration', 0) for c in chk)} ms, "
                      f"async median {statistics.median(c.get('async_duration', 0) for c in chk)} ms, "
                      f"end to end median {statistics.median(c['end_to_end_duration'] for c in chk)} ms")
        print(f"  {backend:8} with checkpoints / without: {results[True] / results[False]:.0%}")


if __name__ == "__main__":
    main()
