"""Parses Prometheus' text exposition format from standard input with the reference client's
parser (prometheus_client), failing on anything malformed, and prints one JSON object per
sample: {"name", "labels", "value", "type"}."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}))
