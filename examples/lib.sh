# Shared by the examples' run.sh: a sluice binary, a broker, PostgreSQL, and cleanup.
# Settings (environment): SLUICE (a built binary; default: build one), BROKER_PORT (9092),
# PGHOST/PGPORT/PGDATABASE/PGUSER (127.0.0.1/5432/test/postgres), BOUNDED=1 (read what the
# topics hold, then stop: for tests), ROWS (how many simulated events; default: endless),
# RATE (simulated events per second; 200).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${SLUICE:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p sluice)
  SLUICE="${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice"
fi
BROKER_PORT="${BROKER_PORT:-9092}"
BOOTSTRAP="127.0.0.1:$BROKER_PORT"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGDATABASE="${PGDATABASE:-test}" PGUSER="${PGUSER:-postgres}"
JDBC_URL="jdbc:postgresql://$PGHOST:$PGPORT/$PGDATABASE"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

# Starts PostgreSQL if it is not running (the machine's cluster), and checks it answers.
ensure_postgres() {
  if ! psql -Atqc 'SELECT 1' >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    for _ in $(seq 50); do psql -Atqc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
}

# Starts the machine's Mosquitto (MQTT, port 1883) if nothing listens there.
ensure_mosquitto() {
  if ! (echo >/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.2; done
  fi
}

# Starts the machine's Redis (port 6379) if it does not answer.
ensure_redis() {
  if ! redis-cli ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
}

# Starts a broker on $BROKER_PORT unless one already listens there.
ensure_broker() {
  if ! "$SLUICE" topics list -b "$BOOTSTRAP" >/dev/null 2>&1; then
    "$SLUICE" broker --listen "$BOOTSTRAP" --data-dir "$WORK/broker" >"$WORK/broker.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do "$SLUICE" topics list -b "$BOOTSTRAP" >/dev/null 2>&1 && break; sleep 0.1; done
  fi
}

# Prints a SQL file with @BOOTSTRAP@, @JDBC_URL@, @PGUSER@, @ROWS@ and @BOUNDED@ filled in.
render() {
  local rows_option="" bounded_option=""
  if [ -n "${ROWS:-}" ]; then rows_option="'number-of-rows' = '$ROWS',"; fi
  if [ "${BOUNDED:-0}" = 1 ]; then bounded_option="'scan.bounded.mode' = 'latest-offset',"; fi
  sed -e "s|@BOOTSTRAP@|$BOOTSTRAP|g" -e "s|@JDBC_URL@|$JDBC_URL|g" -e "s|@PGUSER@|$PGUSER|g" \
      -e "s|@ROWS@|$rows_option|g" -e "s|@BOUNDED@|$bounded_option|g" -e "s|@RATE@|${RATE:-200}|g" "$1"
}

# Runs the simulated events of $WORK/generator.sql: to the end when ROWS is set, else in the
# background until the example stops.
run_generator() {
  if [ -n "${ROWS:-}" ]; then
    "$SLUICE" run --quiet "$WORK/generator.sql"
  else
    "$SLUICE" run --quiet "$WORK/generator.sql" &
    PIDS+=($!)
  fi
}

# Runs an example from its directory: creates topic $1 (2 partitions) and the tables of
# schema.sql, starts the simulated events of generator.sql (to the end when ROWS is set, else
# in the background), prints $3 to standard error and runs the job $2 until it ends or Ctrl-C.
run_example() {
  local topic="$1" job="$2" banner="$3"
  ensure_postgres
  ensure_broker
  "$SLUICE" topics create "$topic" --partitions 2 -b "$BOOTSTRAP" >/dev/null 2>&1 || true
  psql -q -f schema.sql
  render generator.sql >"$WORK/generator.sql"
  render "$job" >"$WORK/job.sql"
  run_generator
  echo "$banner" >&2
  "$SLUICE" run --quiet "$WORK/job.sql"
}
