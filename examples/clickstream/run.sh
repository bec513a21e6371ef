#!/usr/bin/env bash
# Clickstream: simulated clicks -> Kafka topic 'clicks' -> page views per page per minute on the
# console, and a continuously updated total per page in the PostgreSQL table 'page_totals'.
# Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
ensure_postgres
ensure_broker
"$SLUICE" topics create clicks --partitions 2 -b "$BOOTSTRAP" >/dev/null 2>&1 || true
psql -q -f schema.sql
render generator.sql >"$WORK/generator.sql"
render clickstream.sql >"$WORK/clickstream.sql"
if [ -n "${ROWS:-}" ]; then
  "$SLUICE" run --quiet "$WORK/generator.sql"
else
  "$SLUICE" run --quiet "$WORK/generator.sql" &
  PIDS+=($!)
fi
echo "views per page per minute (totals in PostgreSQL: psql -c 'SELECT * FROM page_totals'):" >&2
"$SLUICE" run --quiet "$WORK/clickstream.sql"
