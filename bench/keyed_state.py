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
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
default_sluice = os.path.join(target, "release", "sluice")

QUERY = """SET 'pipeline.name' = 'keyed-bench';
SET 'state.backend.type' = '{backend}';
SET 'state.backend.memory.size' = '{memory}';
{checkpoints}
CREATE TABLE src (id BIGINT, v BIGINT) WITH (
  'connector' = 'datagen', 'rows-per-second' = '1000000000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{keys}',
  'fields.v.min' = '1', 'fields.v.max' = '100');
CREATE TABLE sink (k BIGINT, n BIGINT, total BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO sink SELECT id, COUNT(*), SUM(v) FROM src GROUP BY id;
"""

CHECKPOINTS = """SET 'execution.checkpointing.interval' = '1 s';
SET 'execution.checkpointing.incremental' = '{incremental}';"""


def run(sluice, keys, backend, checkpoints, memory, incremental):
    """One run from scratch: (seconds, peak RSS in MiB, checkpoints from history.json)."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "job.sql")
        with open(script, "w") as f:
            cp = CHECKPOINTS.format(incremental=str(incremental).lower()) if checkpoints else ""
            f.write(QUERY.format(backend=backend, keys=keys, memory=memory, checkpoints=cp))
        state = os.path.join(d, "state")
        start = time.perf_counter()
        err = open(os.path.join(d, "stderr"), "w+")
        p = subprocess.Popen([sluice, "run", "--data-dir", state, script],
                             stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while p.poll() is None:
            peak = max(peak, peak_rss_kib(p.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            err.seek(0)
            sys.exit(f"sluice failed:\n{err.read()[-3000:]}")
        history = os.path.join(state, "jobs", "keyed-bench", "checkpoints", "history.json")
        chk = []
        if os.path.exists(history):
            with open(history) as f:
                chk = [c for c in json.load(f) if c.get("status") == "Completed"]
        return elapsed, peak / 1024, chk


def peak_rss_kib(pid):
    """The process's peak resident set (VmHWM) so far, in KiB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=5_000_000)
    ap.add_argument("--backends", default="hashmap")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sluice", default=default_sluice)
    ap.add_argument("--memory", default="512 mb", help="state.backend.memory.size")
    ap.add_argument("--full", action="store_true", help="full checkpoints, not incremental")
    a = ap.parse_args()
    kind = "full" if a.full else "incremental"
    print(f"updating GROUP BY over {a.keys:,} distinct keys; {kind} checkpoints; "
          f"state.backend.memory.size {a.memory}; {a.sluice}")
    for backend in a.backends.split(","):
        results = {}
        for checkpoints in (False, True):
            runs = [run(a.sluice, a.keys, backend, checkpoints, a.memory, not a.full)
                    for _ in range(a.rounds)]
            secs = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            chk = runs[-1][2]
            results[checkpoints] = a.keys / secs
            label = "1 s checkpoints" if checkpoints else "no checkpoints"
            print(f"  {backend:8} {label:16} {a.keys / secs:12,.0f} rows/s  "
                  f"{secs:6.2f} s  peak RSS {rss:7.0f} MiB")
            if chk:
                mib = lambda b: b / 2**20
                sizes = [c["state_size"] for c in chk]
                written = [c.get("checkpointed_size", c["state_size"]) for c in chk]
                med = lambda k: statistics.median(c.get(k, 0) for c in chk)
                print(f"    {len(chk)} checkpoints; state size median {mib(statistics.median(sizes)):.1f} MiB, "
                      f"last {mib(sizes[-1]):.1f} MiB; written per checkpoint median "
                      f"{mib(statistics.median(written)):.1f} MiB, max {mib(max(written)):.1f} MiB")
                print(f"    sync part median {med('sync_duration')} ms (max "
                      f"{max(c.get('sync_duration', 0) for c in chk)} ms), async part median "
                      f"{med('async_duration')} ms, end to end median {med('end_to_end_duration')} ms")
        print(f"  {backend:8} with checkpoints / without: {results[True] / results[False]:.0%}")


if __name__ == "__main__":
    main()
