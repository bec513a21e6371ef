#!/usr/bin/env bash
# IoT alerts: simulated sensors -> Kafka topic 'sensors' -> temperature alerts -> console and
# the PostgreSQL table 'alerts'. Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
ensure_postgres
ensure_broker
"$SLUICE" topics create sensors --partitions 2 -b "$BOOTSTRAP" >/dev/null 2>&1 || true
psql -q -f schema.sql
render generator.sql >"$WORK/generator.sql"
render alerts.sql >"$WORK/alerts.sql"
if [ -n "${ROWS:-}" ]; then
  "$SLUICE" run --quiet "$WORK/generator.sql"
else
  "$SLUICE" run --quiet "$WORK/generator.sql" &
  PIDS+=($!)
fi
echo "alerts (also in PostgreSQL: psql -c 'SELECT * FROM alerts'):" >&2
"$SLUICE" run --quiet "$WORK/alerts.sql"
