"""Benchmark: MATCH_RECOGNIZE on Sluice and on Flink (PyFlink, parallelism 1) over the same
card transactions.

Writes a million transactions (2,000 cards, mostly small purchases at home, some abroad, some
large) once to a JSON file, then runs each pattern query on both engines into CSV files and
prints, per query, the seconds, transactions/s, matches, matches/s and peak memory of each
engine and the ratio of their throughput. The engines' matches are counted, not compared: the
conformance cases match_* compare rows with Flink's.

    python3 -m venv ~/flink-venv && ~/flink-venv/bin/pip install apache-flink psutil
    cargo build --release
    ~/flink-venv/bin/python bench/match_recognize.py [--transactions 1000000] [--skip-flink]

Not a test: it never fails on speed.
"""
import argparse
import datetime
import json
import os
import random
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from seed_vs_flink import FLINK_SCRIPT, count_rows, measure, sluice  # noqa: E402

TABLE = """CREATE TABLE transactions (
  card_id STRING,
  amount DOUBLE,
  country STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"""

SINK = """CREATE TABLE found ({columns}) WITH ('connector' = 'filesystem', 'path' = '{out}', 'format' = 'csv')"""

QUERIES = {
    # Flink's fraud pattern: a small transaction, then a large one from another country
    # within 5 minutes.
    "fraud": (
        "card_id STRING, small_ts TIMESTAMP(3), big_ts TIMESTAMP(3), big_amount DOUBLE, country STRING",
        """SELECT * FROM transactions MATCH_RECOGNIZE (
  PARTITION BY card_id ORDER BY ts
  MEASURES SMALL.ts AS small_ts, BIG.ts AS big_ts, BIG.amount AS big_amount, BIG.country AS country
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (SMALL BIG) WITHIN INTERVAL '5' MINUTE
  DEFINE SMALL AS SMALL.amount < 20, BIG AS BIG.amount > 1000 AND BIG.country <> SMALL.country)""",
    ),
    # The documentation's V shape, on a card's amounts: a start, falling amounts, a rise.
    "v_shape": (
        "card_id STRING, start_ts TIMESTAMP(3), bottom_ts TIMESTAMP(3), end_ts TIMESTAMP(3), downs BIGINT, avg_down DOUBLE",
        """SELECT * FROM transactions MATCH_RECOGNIZE (
  PARTITION BY card_id ORDER BY ts
  MEASURES START_ROW.ts AS start_ts, LAST(DOWN.ts) AS bottom_ts, LAST(UP.ts) AS end_ts,
    COUNT(DOWN.amount) AS downs, AVG(DOWN.amount) AS avg_down
  AFTER MATCH SKIP TO LAST UP
  PATTERN (START_ROW DOWN+ UP)
  DEFINE
    DOWN AS (LAST(DOWN.amount, 1) IS NULL AND DOWN.amount < START_ROW.amount)
      OR DOWN.amount < LAST(DOWN.amount, 1),
    UP AS UP.amount > LAST(DOWN.amount, 1))""",
    ),
}


def generate(path, n):
    marker = path + ".rows"
    if os.path.exists(marker) and open(marker).read() == str(n):
        return
    rng = random.Random(5)
    base = datetime.datetime(2026, 1, 1)
    t = 0
    with open(path, "w") as f:
        lines = []
        for _ in range(n):
            t += rng.randint(0, 4)
            abroad = rng.random() < 0.1
            amount = rng.uniform(500, 3000) if abroad and rng.random() < 0.5 else rng.uniform(1, 150)
            jitter = rng.randint(-2000, 0)
            ts = base + datetime.timedelta(milliseconds=t * 10 + jitter)
            lines.append(json.dumps({
                "card_id": f"c{rng.randint(0, 1999)}",
                "amount": round(amount, 2),
                "country": rng.choice(["FR", "US", "BR"]) if abroad else "DE",
                "ts": ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            }))
            if len(lines) == 10000:
                f.write("\n".join(lines) + "\n")
                lines = []
        if lines:
            f.write("\n".join(lines) + "\n")
    with open(marker, "w") as f:
        f.write(str(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=1_000_000)
    ap.add_argument("--queries", default=",".join(QUERIES))
    ap.add_argument("--skip-flink", action="store_true")
    ap.add_argument("--sluice", default=sluice, help="the sluice binary to run")
    args = ap.parse_args()
    if not os.path.exists(args.sluice):
        sys.exit(f"{args.sluice} not found: run `cargo build --release` first")
    data_dir = os.path.join(here, "data")
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "transactions.json")
    generate(path, args.transactions)
    n = args.transactions
    print(f"input: {n:,} transactions, {os.path.getsize(path) / 2**20:.0f} MiB of JSON")
    print(f"{'query':8} {'sluice s':>8} {'rows/s':>10} {'matches':>8} {'matches/s':>10} {'MiB':>6}   "
          f"{'flink s':>8} {'rows/s':>10} {'matches':>8} {'matches/s':>10} {'MiB':>6}   ratio")
    for q in args.queries.split(","):
        columns, query = QUERIES[q]
        results = []
        for engine in ("sluice", "flink"):
            if engine == "flink" and args.skip_flink:
                results.append(None)
                continue
            with tempfile.TemporaryDirectory() as d:
                out = os.path.join(d, "out")
                stmts = [TABLE.format(path=path), SINK.format(columns=columns, out=out), f"INSERT INTO found {query}"]
                try:
                    if engine == "sluice":
                        script = os.path.join(d, "job.sql")
                        with open(script, "w") as f:
                            f.write(";\n".join(stmts) + ";\n")
                        secs, mib, _ = measure([args.sluice, "run", "--quiet", "--data-dir", os.path.join(d, "state"), script])
                    else:
                        secs, mib, _ = measure([sys.executable, "-c", FLINK_SCRIPT, ";;".join(stmts)])
                    results.append((secs, mib, count_rows(out)))
                except SystemExit as e:
                    print(f"{q}: {engine} failed: {str(e)[-400:]}")
                    results.append(None)
        line = f"{q:8} "
        for r in results:
            if r:
                secs, mib, matches = r
                line += f"{secs:8.2f} {n / secs:10,.0f} {matches:8,} {matches / secs:10,.0f} {mib:6.0f}   "
            else:
                line += f"{'-':>8} {'-':>10} {'-':>8} {'-':>10} {'-':>6}   "
        if results[0] and results[1]:
            line += f"{results[1][0] / results[0][0]:5.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
