"""Parses a Prometheus text exposition on stdin with the Prometheus project's own
parser and prints its samples as JSON: [{"family", "type", "name", "labels",
"value"}]. A malformed exposition raises, and the exit status is non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append(
            {
                "family": family.name,
                "type": family.type,
                "name": s.name,
                "labels": s.labels,
                "value": s.value,
            }
        )
json.dump(samples, sys.stdout)
