"""Regenerates cases/*/expected.txt with Flink (PyFlink, local mini-cluster).

Set up once, outside the repository:
    python3 -m venv ~/flink-venv && ~/flink-venv/bin/pip install apache-flink
Then:
    ~/flink-venv/bin/python tests/conformance/regenerate.py [case ...]

Each case's query.sql holds DDL statements and, last, the query; ${DATA} stands for the
data directory. Flink runs it in streaming mode with parallelism 1 and the local time zone
UTC; the changelog rows it produces are written one per line as KIND|v1|v2|...
"""
import datetime
import decimal
import os
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

here = os.path.dirname(os.path.abspath(__file__))


def fmt(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    return str(v)


def case_sql(case):
    """A case's script: ${NEXMARK_TABLES} stands for bench/nexmark's table over the events file
    and its views (the events in data/nexmark.json); ${DATA} for the data directory."""
    sql = open(os.path.join(here, "cases", case, "query.sql")).read()
    if "${NEXMARK_TABLES}" in sql:
        bench = os.path.join(here, "..", "..", "bench", "nexmark")
        tables = open(os.path.join(bench, "events_file.sql")).read() + open(os.path.join(bench, "views.sql")).read()
        sql = sql.replace("${NEXMARK_TABLES}", tables.replace("${EVENTS_FILE}", "${DATA}/nexmark.json"))
    return sql.replace("${DATA}", os.path.join(here, "data"))


def run(case):
    sql = case_sql(case)
    t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t.get_config().set("parallelism.default", "1")
    t.get_config().set("table.local-time-zone", "UTC")
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    for s in statements[:-1]:
        t.execute_sql(s)
    lines = []
    with t.execute_sql(statements[-1]).collect() as results:
        for r in results:
            lines.append("|".join([str(r.get_row_kind())] + [fmt(v) for v in r]))
    # An upsert result (marker file `upsert-key`) keeps Flink's order: the last row of a key
    # is its result.
    if not os.path.exists(os.path.join(here, "cases", case, "upsert-key")):
        lines.sort()
    with open(os.path.join(here, "cases", case, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    print(f"{case}: {len(lines)} rows")


cases = sys.argv[1:] or sorted(os.listdir(os.path.join(here, "cases")))
failed = []
for c in cases:
    try:
        run(c)
    except Exception as e:  # keep going: report every case Flink cannot run
        print(f"{c}: FAILED: {str(e).splitlines()[0]}")
        print("\n".join(l for l in str(e).splitlines() if "Exception" in l)[:2000])
        failed.append(c)
sys.exit(1 if failed else 0)
