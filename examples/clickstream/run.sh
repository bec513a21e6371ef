#!/usr/bin/env bash
# Clickstream: simulated clicks -> Kafka topic 'clicks' -> page views per page per minute on the
# console, and a continuously updated total per page in the PostgreSQL table 'page_totals'.
# Settings: see ../lib.sh.
source "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")"
run_example clicks clickstream.sql "views per page per minute (totals in PostgreSQL: psql -c 'SELECT * FROM page_totals'):"
