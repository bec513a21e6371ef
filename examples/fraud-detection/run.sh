#!/usr/bin/env bash
# Fraud detection: simulated card transactions -> Kafka topic 'transactions' -> MATCH_RECOGNIZE
# (a small transaction, then a large one from another country within 5 minutes) -> console and
# the PostgreSQL table 'fraud_alerts'. Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
run_example transactions fraud.sql "fraud alerts (also in PostgreSQL: psql -c 'SELECT * FROM fraud_alerts'):"
