#!/usr/bin/env bash
# IoT over MQTT: simulated sensors publish readings to Mosquitto (sensors/<id>/temperature); a
# job subscribed to sensors/+/temperature prints temperature alerts, keeps each sensor's latest
# in Redis (redis-cli HGETALL alert:sensor-7) and, with WEBHOOK_URL set (a Slack incoming
# webhook, say), posts each one there. Settings: see ../lib.sh, and MQTT_URL
# (tcp://127.0.0.1:1883), REDIS_URL (redis://127.0.0.1:6379), WEBHOOK_URL.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
MQTT_URL="${MQTT_URL:-tcp://127.0.0.1:1883}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
ensure_mosquitto
ensure_redis
fill() { render "$1" | sed -e "s|@MQTT_URL@|$MQTT_URL|g" -e "s|@REDIS_URL@|$REDIS_URL|g" -e "s|@WEBHOOK_URL@|${WEBHOOK_URL:-}|g"; }
fill alerts.sql >"$WORK/job.sql"
if [ -n "${WEBHOOK_URL:-}" ]; then fill webhook.sql >>"$WORK/job.sql"; fi
fill generator.sql >"$WORK/generator.sql"
# MQTT keeps nothing for a subscriber that is not there yet: the job subscribes first.
"$SLUICE" run --quiet --data-dir "$WORK/data" "$WORK/job.sql" &
JOB=$!
PIDS+=("$JOB")
sleep 2
echo "alerts (the latest per sensor also in Redis: redis-cli HGETALL alert:sensor-7):" >&2
if [ -n "${ROWS:-}" ]; then
  # A bounded run (tests): publish ROWS readings, give the job a moment, stop it.
  "$SLUICE" run --quiet --data-dir "$WORK/data" "$WORK/generator.sql"
  sleep "${DRAIN_SECONDS:-3}"
  kill -INT "$JOB"
  wait "$JOB"
else
  "$SLUICE" run --quiet --data-dir "$WORK/data" "$WORK/generator.sql" &
  PIDS+=($!)
  wait "$JOB"
fi
