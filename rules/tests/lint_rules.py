#!/usr/bin/env python3
"""Checks on rules/ that promtool does not make. Run by scripts/test-rules.sh.

- The shared names (recording rules and alerts that dashboards and the actuator use) exist.
- Every alert has `severity`, `summary`, `description` and a `runbook_url` whose anchor is a
  heading of rules/RUNBOOK.md; KafkaConsumerLagPersistent also has `lag_offsets`.
- Every recording rule and alert is described in rules/README.md.
- Every recording rule is the subject of a promql_expr_test, and every alert has, within one
  test, a "not yet" case, then a case with exact labels and annotations, then a resolved case.

Prints every problem found and exits 1 if there is any.
"""
import glob
import os
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("lint_rules.py needs PyYAML: apt-get install python3-yaml (or pip install pyyaml)")

RULES_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(RULES_DIR, "kafka-medic.rules.yml")
RULE_FILES = [MAIN] + sorted(glob.glob(os.path.join(RULES_DIR, "examples", "*.rules.yml")))
RUNBOOK_BASE = "https://github.com/kafka-medic/kafka-medic/blob/main/rules/RUNBOOK.md#"

# The names agreed across kafka-medic's parts (dashboards and the actuator query them).
SHARED_RECORDS = {
    "cluster_consumergroup:kafka_consumergroup_lag:sum",
    "cluster_consumergroup_topic:kafka_consumergroup_lag:sum",
    "cluster_consumergroup_topic:kafka_consumergroup_lag:max",
    "cluster_consumergroup:kafka_consumergroup_lag_seconds:max",
    "cluster_consumergroup_topic:kafka_consumergroup_lag_seconds:max",
    "cluster_consumergroup_topic:kafka_consumergroup_consumed:rate5m",
    "cluster_broker:kafka_broker_cpu_usage:ratio",
    "cluster_broker_path:kafka_broker_disk_used:ratio",
}
SHARED_ALERTS = {
    "KafkaConsumerLagPersistent",
    "KafkaBrokerOverloaded",
    "KafkaBrokerDiskPressure",
    "KafkaBrokerDown",
    "KafkaConsumerStalled",
    "KafkaMedicMassFailure",
}
SEVERITIES = {"critical", "warning", "info"}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
ALERT_NAME = re.compile(r"^Kafka[A-Z][A-Za-z]+$")

problems = []


def problem(msg):
    problems.append(msg)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def rules_of(path):
    for group in load(path)["groups"]:
        for rule in group["rules"]:
            yield rule


def runbook_anchors():
    anchors = set()
    with open(os.path.join(RULES_DIR, "RUNBOOK.md"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
            if m:
                # GitHub's anchor: lower case, spaces to dashes, punctuation dropped.
                text = m.group(1).strip().lower()
                anchors.add(re.sub(r"[^a-z0-9 _-]", "", text).replace(" ", "-"))
    return anchors


def main():
    anchors = runbook_anchors()
    with open(os.path.join(RULES_DIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()

    records = {}  # name -> rule file
    alerts = {}  # (name, rule file) -> rule
    for path in RULE_FILES:
        rel = os.path.relpath(path, RULES_DIR)
        for rule in rules_of(path):
            if "record" in rule:
                name = rule["record"]
                if not RECORD_NAME.match(name):
                    problem(f"{rel}: recording rule {name} is not named level:metric:operation")
                records[name] = path
            else:
                name = rule["alert"]
                alerts[(name, path)] = rule
                if not ALERT_NAME.match(name):
                    problem(f"{rel}: alert {name} is not named Kafka<Component><Symptom>")
                labels = rule.get("labels") or {}
                ann = rule.get("annotations") or {}
                if labels.get("severity") not in SEVERITIES:
                    problem(f"{rel}: alert {name} has severity {labels.get('severity')!r}, "
                            f"expected one of {sorted(SEVERITIES)}")
                for key in ("summary", "description", "runbook_url"):
                    if not ann.get(key):
                        problem(f"{rel}: alert {name} has no {key} annotation")
                if name == "KafkaConsumerLagPersistent" and not ann.get("lag_offsets"):
                    problem(f"{rel}: alert {name} has no lag_offsets annotation")
                if "$value" not in ann.get("description", "") and \
                        "| query" not in ann.get("description", ""):
                    problem(f"{rel}: alert {name}'s description does not show the live value")
                url = ann.get("runbook_url", "")
                if url != RUNBOOK_BASE + name.lower():
                    problem(f"{rel}: alert {name} has runbook_url {url!r}, "
                            f"expected {RUNBOOK_BASE + name.lower()!r}")
                if name.lower() not in anchors:
                    problem(f"RUNBOOK.md has no heading for {name} (anchor #{name.lower()})")
            if f"`{name}`" not in readme:
                problem(f"README.md does not describe `{name}`")

    main_records = {n for n, p in records.items() if p == MAIN}
    main_alerts = {n for (n, p) in alerts if p == MAIN}
    for name in sorted(SHARED_RECORDS - main_records):
        problem(f"kafka-medic.rules.yml lacks the shared recording rule {name}")
    for name in sorted(SHARED_ALERTS - main_alerts):
        problem(f"kafka-medic.rules.yml lacks the shared alert {name}")

    # Test coverage.
    tested_exprs = []  # (rule files, expr)
    alert_cases = {}  # (alert, rule file) -> list of per-test case lists
    for tpath in sorted(glob.glob(os.path.join(RULES_DIR, "tests", "*.test.yml"))):
        doc = load(tpath)
        files = {os.path.normpath(os.path.join(os.path.dirname(tpath), f))
                 for f in doc.get("rule_files", [])}
        for test in doc.get("tests", []):
            for case in test.get("promql_expr_test") or []:
                tested_exprs.append((files, case["expr"]))
            per_alert = {}
            for case in test.get("alert_rule_test") or []:
                per_alert.setdefault(case["alertname"], []).append(case)
            for name, cases in per_alert.items():
                for f in files:
                    alert_cases.setdefault((name, f), []).append(cases)

    for name, path in sorted(records.items()):
        if not any(path in files and re.search(re.escape(name) + r"(?![a-z0-9_:])", expr)
                   for files, expr in tested_exprs):
            problem(f"no promql_expr_test covers recording rule {name} "
                    f"({os.path.relpath(path, RULES_DIR)})")

    def seconds(duration):
        total = 0
        for num, unit in re.findall(r"(\d+)(ms|s|m|h|d)", str(duration)):
            total += int(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return total

    for (name, path), rule in sorted(alerts.items(), key=lambda kv: kv[0]):
        rel = os.path.relpath(path, RULES_DIR)
        ann_keys = set((rule.get("annotations") or {}).keys())
        label_keys = set((rule.get("labels") or {}).keys())
        ok = False
        for cases in alert_cases.get((name, path), []):
            cases = sorted(cases, key=lambda c: seconds(c["eval_time"]))
            states = []
            for c in cases:
                exp = c.get("exp_alerts") or []
                exact = all(set((a.get("exp_annotations") or {}).keys()) == ann_keys
                            and label_keys <= set((a.get("exp_labels") or {}).keys())
                            for a in exp)
                states.append("fire" if exp and exact else ("none" if not exp else "loose"))
            # "not yet", then fired with exact labels and annotations, then resolved.
            seq = "".join({"none": "n", "fire": "f", "loose": "l"}[s] for s in states)
            if re.search(r"n+f+n", seq):
                ok = True
                break
        if not ok:
            problem(f"{rel}: alert {name} lacks a test with a 'not yet' case, then a case with "
                    f"exact labels and annotations, then a resolved case")

    if problems:
        print("lint_rules.py: %d problem(s):" % len(problems))
        for p in problems:
            print("  - " + p)
        return 1
    print("lint_rules.py: %d recording rules and %d alerts: names, annotations, runbook "
          "anchors, README entries and test coverage OK" % (len(records), len(alerts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
