"""Benchmark: what checkpoints cost. The seed query (bench/seed_vs_flink.py) over N JSON
sensor readings, with checkpoints off and with `execution.checkpointing.interval` = 1 s,
several rounds each; prints the median throughput of both and their ratio, the checkpoints
taken, their duration and state size, and the time a restarted job takes to find and read its
latest checkpoint after a SIGKILL.

    cargo build --release
    python3 bench/checkpoint_overhead.py [--rows 10000000] [--rounds 3]

Not a test: it never fails on speed.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from seed_vs_flink import DDL, QUERY, SINK, generate, sluice  # noqa: E402

CHECKPOINTS = """SET 'execution.checkpointing.interval' = '1 s';
SET 'state.checkpoints.num-retained' = '2';
"""


def script(d, path, checkpoints):
    out = os.path.join(d, "out")
    text = (CHECKPOINTS if checkpoints else "") + ";\n".join(
        [DDL.format(path=path), SINK.format(out=out), QUERY]
    ) + ";\n"
    s = os.path.join(d, "seed.sql")
    with open(s, "w") as f:
        f.write(text)
    return s


def run(path, checkpoints):
    """One run from scratch; returns (seconds, the job's counters)."""
    with tempfile.TemporaryDirectory() as d:
        s = script(d, path, checkpoints)
        start = time.perf_counter()
        p = subprocess.run([sluice, "run", "--data-dir", os.path.join(d, "state"), s],
                           capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if p.returncode != 0:
            sys.exit(f"sluice failed:\n{p.stderr[-3000:]}")
        counters = dict(
            (m.group(1), int(m.group(2)))
            for m in re.finditer(r"^\s+(.+?): (\d+)$", p.stderr, re.M)
        )
        return elapsed, counters


def recovery(path):
    """Kills a checkpointing run after its second checkpoint; returns the restarted run's time
    from start to "Restoring ..." and its total time to finish."""
    with tempfile.TemporaryDirectory() as d:
        s = script(d, path, True)
        state = os.path.join(d, "state")
        chk = os.path.join(state, "jobs", "seed", "checkpoints")
        p = subprocess.Popen([sluice, "run", "--data-dir", state, s],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            done = [c for c in os.listdir(chk)] if os.path.isdir(chk) else []
            if any(os.path.exists(os.path.join(chk, c, "_metadata")) for c in done):
                break
            time.sleep(0.01)
        time.sleep(0.5)
        p.send_signal(signal.SIGKILL)
        p.wait()
        start = time.perf_counter()
        p = subprocess.Popen([sluice, "run", "--data-dir", state, s],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        restored_at = None
        line = p.stderr.readline()
        if line.startswith("Restoring"):
            restored_at = time.perf_counter() - start
        p.communicate()
        return restored_at, time.perf_counter() - start, line.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    path = os.path.join(tempfile.gettempdir(), f"sluice-seed-{args.rows}.json")
    generate(path, args.rows)
    size = os.path.getsize(path) / 2**20
    print(f"input: {args.rows:,} readings, {size:.0f} MiB ({path})")
    plain, with_cp, stats = [], [], []
    for r in range(args.rounds):
        t, _ = run(path, False)
        plain.append(t)
        t2, c = run(path, True)
        with_cp.append(t2)
        stats.append(c)
        print(f"round {r + 1}: off {t:6.2f} s ({args.rows / t:11,.0f} events/s)   "
              f"1 s interval {t2:6.2f} s ({args.rows / t2:11,.0f} events/s), "
              f"{c.get('checkpoints completed', 0)} checkpoints, last took "
              f"{c.get('last checkpoint duration (ms)', 0)} ms, "
              f"{c.get('last checkpoint size (bytes)', 0):,} bytes")
    a, b = statistics.median(plain), statistics.median(with_cp)
    print(f"median: off {args.rows / a:,.0f} events/s, 1 s interval {args.rows / b:,.0f} events/s: "
          f"{a / b * 100:.1f}% of the throughput without checkpoints")
    restored_at, total, line = recovery(path)
    if restored_at is None:
        print(f"recovery: the restarted run did not restore ({line})")
    else:
        print(f"recovery after SIGKILL: checkpoint found and read {restored_at * 1000:.0f} ms after "
              f"start ({line}); the rest of the input done {total:.2f} s after start")


if __name__ == "__main__":
    main()
