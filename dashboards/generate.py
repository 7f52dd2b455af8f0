#!/usr/bin/env python3
"""Writes the Grafana dashboards in this directory from their sources in lib/.

The JSON files are what users import (and what the Helm chart ships as ConfigMaps); lib/ is
where they are edited. scripts/test-dashboards.sh fails if the two differ, so run this after
every change:

    python3 dashboards/generate.py          # rewrite dashboards/*.json
    python3 dashboards/generate.py --check  # exit 1 if a file is not what lib/ produces
    (--dir DIR: read or write the JSON files in DIR instead of dashboards/)
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from lib import actuator, broker_health, consumer_lag  # noqa: E402

DASHBOARDS = {
    "kafka-medic-consumer-lag.json": consumer_lag.build,
    "kafka-medic-broker-health.json": broker_health.build,
    "kafka-medic-actuator.json": actuator.build,
}


def render(build):
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv):
    check = "--check" in argv
    out_dir = argv[argv.index("--dir") + 1] if "--dir" in argv else HERE
    stale = []
    for name, build in DASHBOARDS.items():
        path = os.path.join(out_dir, name)
        text = render(build)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote dashboards/{name}")
    if stale:
        print("dashboards out of date with dashboards/lib/: " + ", ".join(stale)
              + "\n  fix: python3 dashboards/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
