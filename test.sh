#!/usr/bin/env bash
# Runs every check: formatting, lints, unit, integration, end-to-end and conformance tests.
set -euo pipefail
cd "$(dirname "$0")"
# Real clients the tests use: kcat (librdkafka) from Debian.
if ! command -v kcat >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -q kcat >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q kcat >/dev/null; }
fi
# The dashboard's browser test: Debian's Chromium, driven by playwright-core from npm.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --silent --no-audit --no-fund
fi
# Real Python clients (confluent-kafka with its schema registry client and Avro serializers,
# kafka-python, pika for RabbitMQ, nats-py for NATS, pyarrow to read the Parquet files Sluice
# writes, moto's S3-compatible server for object storage, cramjam for fastavro's Snappy,
# prometheus-client's parser of the /metrics text, and schemathesis, which checks the REST API
# against its OpenAPI description) in a virtual environment outside the checkout; the tests
# find it through SLUICE_VENV.
export SLUICE_VENV="${SLUICE_VENV:-$HOME/.cache/sluice-venv}"
if ! "$SLUICE_VENV/bin/python" -c "import confluent_kafka.schema_registry.avro, kafka, prometheus_client, schemathesis, pika, nats, pyarrow, moto.server, cramjam" >/dev/null 2>&1; then
  python3 -m venv "$SLUICE_VENV"
  "$SLUICE_VENV/bin/pip" install -q "confluent-kafka[avro,schemaregistry]" kafka-python prometheus-client schemathesis pika nats-py pyarrow "moto[server]" cramjam
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace
fi
