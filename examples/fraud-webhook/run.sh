#!/usr/bin/env bash
# Fraud alerts to a webhook: simulated card transactions -> Kafka topic 'transactions' ->
# MATCH_RECOGNIZE -> the console and a webhook. With WEBHOOK_URL (a Slack incoming webhook,
# say) the alerts go there; without, to a local stand-in that prints what it receives
# ("webhook: {...}"). Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
ensure_broker
"$SLUICE" topics create transactions --partitions 2 -b "$BOOTSTRAP" >/dev/null 2>&1 || true
if [ -z "${WEBHOOK_URL:-}" ]; then
  port="${WEBHOOK_PORT:-8099}"
  python3 receiver.py "$port" &
  PIDS+=($!)
  WEBHOOK_URL="http://127.0.0.1:$port/alerts"
  for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
fi
render ../fraud-detection/generator.sql >"$WORK/generator.sql"
render fraud.sql | sed -e "s|@WEBHOOK_URL@|$WEBHOOK_URL|g" >"$WORK/job.sql"
run_generator
echo "fraud alerts (each also posted to $WEBHOOK_URL):" >&2
"$SLUICE" run --quiet "$WORK/job.sql"
