"""Benchmark: what the metrics cost. The seed query (bench/seed_vs_flink.py) over N JSON sensor
readings, run plainly and with `--metrics-addr` while a scraper reads /metrics every second
(Prometheus scrapes every 15 s by default), several rounds each; prints the median throughput
of both and their ratio. The runtime updates its counters either way (without a recorder they
cost nothing); with one, every update is an atomic add per batch.

    cargo build --release
    python3 bench/metrics_overhead.py [--rows 10000000] [--rounds 3]

Not a test: it never fails on speed.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from checkpoint_overhead import script  # noqa: E402
from seed_vs_flink import generate, sluice  # noqa: E402


def scrape(addr, stop, scrapes):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
                r.read()
            scrapes.append(1)
        except OSError:
            pass
        stop.wait(1.0)


def run(path, metrics):
    """One run from scratch; returns (seconds, scrapes made)."""
    with tempfile.TemporaryDirectory() as d:
        s = script(d, path, False)
        cmd = [sluice, "run", "--data-dir", os.path.join(d, "state")]
        if metrics:
            cmd += ["--metrics-addr", "127.0.0.1:0"]
        start = time.perf_counter()
        p = subprocess.Popen(cmd + [s], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stop, scrapes, scraper = threading.Event(), [], None
        if metrics:
            line = p.stderr.readline()
            addr = line.strip().removeprefix("Metrics for Prometheus at http://").removesuffix("/metrics")
            scraper = threading.Thread(target=scrape, args=(addr, stop, scrapes))
            scraper.start()
        err = p.stderr.read()
        p.wait()
        elapsed = time.perf_counter() - start
        stop.set()
        if scraper:
            scraper.join()
        if p.returncode != 0:
            sys.exit(f"sluice failed:\n{err[-3000:]}")
        return elapsed, len(scrapes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(sluice):
        sys.exit(f"{sluice} not found: run `cargo build --release` first")
    path = os.path.join(tempfile.gettempdir(), f"sluice-seed-{args.rows}.json")
    generate(path, args.rows)
    print(f"input: {args.rows:,} readings, {os.path.getsize(path) / 2**20:.0f} MiB ({path})")
    plain, with_metrics = [], []
    for r in range(args.rounds):
        t, _ = run(path, False)
        plain.append(t)
        t2, n = run(path, True)
        with_metrics.append(t2)
        print(f"round {r + 1}: plain {t:6.2f} s ({args.rows / t:11,.0f} events/s)   "
              f"metrics served {t2:6.2f} s ({args.rows / t2:11,.0f} events/s), {n} scrapes")
    a, b = statistics.median(plain), statistics.median(with_metrics)
    print(f"median: plain {args.rows / a:,.0f} events/s, with metrics {args.rows / b:,.0f} events/s: "
          f"{a / b * 100:.1f}% of the throughput without")


if __name__ == "__main__":
    main()
