#!/usr/bin/env bash
# IoT alerts: simulated sensors -> Kafka topic 'sensors' -> temperature alerts -> console and
# the PostgreSQL table 'alerts'. Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
run_example sensors alerts.sql "alerts (also in PostgreSQL: psql -c 'SELECT * FROM alerts'):"
