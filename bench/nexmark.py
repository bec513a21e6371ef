"""Benchmark: the Nexmark queries (bench/nexmark/q*.sql) on Sluice and on Flink (PyFlink,
parallelism 1) over the same events.

Sluice's `nexmark` connector writes the events once to a JSON file (one event per line, the
columns of nexmark-flink's `datagen` table); both engines then read that file through the same
views (bench/nexmark/views.sql) and run each query into a blackhole sink. Prints, per query,
the seconds, events/s and peak memory of each engine and the ratio of their events/s.

    python3 -m venv ~/flink-venv && ~/flink-venv/bin/pip install apache-flink psutil
    cargo build --release
    ~/flink-venv/bin/python bench/nexmark.py [--events 2000000] [--queries q0,q1] [--skip-flink]

The rows themselves are compared with Flink's by the conformance cases nexmark_q* (over a
smaller file of the same generator). q6 and q13 are not in the list: Flink cannot run q6 (an
OVER window over an updating input), nor q13 as written (a lookup join on a filesystem table,
which only Flink's removed legacy connector could do). Not a test: it never fails on speed.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from seed_vs_flink import FLINK_SCRIPT, measure, sluice  # noqa: E402

queries_dir = os.path.join(here, "nexmark")
QUERIES = [f"q{i}" for i in range(23) if i not in (6, 13)]
BASE_TIME = "2026-01-01 00:00:00"


def read(name):
    with open(os.path.join(queries_dir, name)) as f:
        return f.read()


def statements(text):
    """The statements of a script, without comments."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def generate(path, events, rate):
    """Writes `events` Nexmark events to the JSON file `path` with Sluice's generator."""
    marker = path + ".events"
    if os.path.exists(marker) and open(marker).read() == f"{events} {rate}":
        return
    # The sink adds part files to the directory: an earlier generation's must go first.
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    ddl = read("events_nexmark.sql").replace("${EVENTS}", str(events)).replace("${RATE}", str(rate))
    ddl = ddl.replace("${BASE_TIME}", BASE_TIME)
    sink = re.sub(r"CREATE TABLE datagen", "CREATE TABLE events_out", ddl.split("`dateTime` AS")[0]).rstrip().rstrip(",")
    sink += f"\n) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "gen.sql")
        with open(script, "w") as f:
            f.write(";\n".join([ddl.strip().rstrip(";"), sink, "INSERT INTO events_out SELECT event_type, person, auction, bid FROM datagen"]) + ";\n")
        measure([sluice, "run", "--quiet", "--data-dir", os.path.join(d, "state"), script])
    with open(marker, "w") as f:
        f.write(f"{events} {rate}")


def script_for(query, events_file, out_dir, side_input):
    """The statements that run `query` over the events file."""
    text = read(f"{query}.sql")
    text = text.replace("${OUT}", out_dir).replace("${SIDE_INPUT}", side_input)
    events = read("events_file.sql").replace("${EVENTS_FILE}", events_file)
    return statements(events) + statements(read("views.sql")) + statements(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=10_000, help="first-event.rate: events per second of event time")
    ap.add_argument("--queries", default=",".join(QUERIES))
    ap.add_argument("--skip-flink", action="store_true")
    ap.add_argument("--sluice", default=sluice, help="the sluice binary to run")
    args = ap.parse_args()
    globals()["sluice"] = args.sluice
    import seed_vs_flink

    seed_vs_flink.sluice = args.sluice
    if not os.path.exists(args.sluice):
        sys.exit(f"{args.sluice} not found: run `cargo build --release` first")
    data_dir = os.path.join(here, "data")
    os.makedirs(data_dir, exist_ok=True)
    events_file = os.path.join(data_dir, "nexmark-events.json")
    t0 = time.perf_counter()
    generate(events_file, args.events, args.rate)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(events_file) for f in fs) if os.path.isdir(events_file) else os.path.getsize(events_file)
    print(f"input: {args.events:,} Nexmark events, {size / 2**20:.0f} MiB of JSON ({time.perf_counter() - t0:.1f} s to prepare)")
    side_input = os.path.join(data_dir, "nexmark-side-input.csv")
    with open(side_input, "w") as f:
        f.writelines(f"{k},value-{k}\n" for k in range(10_000))

    print(f"{'query':6} {'sluice s':>9} {'events/s':>12} {'MiB':>7}   {'flink s':>8} {'events/s':>12} {'MiB':>7}   ratio")
    table = []
    for q in args.queries.split(","):
        with tempfile.TemporaryDirectory() as d:
            stmts = script_for(q, events_file, os.path.join(d, "sluice-out"), side_input)
            script = os.path.join(d, f"{q}.sql")
            with open(script, "w") as f:
                f.write(";\n".join(stmts) + ";\n")
            try:
                s_t, s_m, _ = measure([args.sluice, "run", "--quiet", "--data-dir", os.path.join(d, "state"), script])
                s = (s_t, s_m)
            except SystemExit as e:
                s = None
                print(f"{q}: sluice failed: {str(e)[-400:]}")
            f_res = None
            if not args.skip_flink:
                fstmts = script_for(q, events_file, os.path.join(d, "flink-out"), side_input)
                try:
                    f_t, f_m, _ = measure([sys.executable, "-c", FLINK_SCRIPT, ";;".join(fstmts)])
                    f_res = (f_t, f_m)
                except SystemExit as e:
                    print(f"{q}: flink failed: {str(e)[-400:]}")
            line = f"{q:6} "
            line += f"{s[0]:9.2f} {args.events / s[0]:12,.0f} {s[1]:7.0f}   " if s else f"{'-':>9} {'-':>12} {'-':>7}   "
            line += f"{f_res[0]:8.2f} {args.events / f_res[0]:12,.0f} {f_res[1]:7.0f}   " if f_res else f"{'-':>8} {'-':>12} {'-':>7}   "
            if s and f_res:
                line += f"{f_res[0] / s[0]:5.1f}x"
            print(line, flush=True)
            table.append((q, s, f_res))
    both = [(s, f) for _, s, f in table if s and f]
    if both:
        ratios = sorted(f[0] / s[0] for s, f in both)
        print(f"ratio of events/s (sluice / flink): min {ratios[0]:.1f}x, median {ratios[len(ratios) // 2]:.1f}x, max {ratios[-1]:.1f}x")


if __name__ == "__main__":
    main()
