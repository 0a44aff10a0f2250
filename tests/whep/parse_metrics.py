#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with the Prometheus project's own Python
parser, and prints what it read as JSON: the /metrics test's independent reader.

Exits non-zero, with the parser's message, on anything the parser rejects.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    families = [
        {
            "name": family.name,
            "type": family.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value}
                for s in family.samples
            ],
        }
        for family in text_string_to_metric_families(sys.stdin.read())
    ]
    json.dump(families, sys.stdout, allow_nan=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
