#!/usr/bin/env python3
"""Checks the Grafana dashboards in dashboards/. Run by scripts/test-dashboards.sh.

    check_dashboards.py [--dir DIR]     check every DIR/*.json (default: dashboards/)
    check_dashboards.py --self-test     break a copy of the dashboards in each way the checks
                                        look for, and fail unless each break is reported

Checks, per dashboard:
  json        the file is valid JSON, and a dashboard (title, panels, templating)
  uid         `uid` is set, is the one pinned below (links and provisioning rely on it), is
              unique, and `id` is null (so an import never overwrites another dashboard)
  panels      panel ids are unique (rows' nested panels included); every panel has a gridPos
              inside the 24-column grid and no two panels overlap
  datasource  a `datasource` variable of type datasource/prometheus exists, and every panel,
              query, annotation and variable uses ${datasource}, never a fixed data source
  variables   the variables a dashboard must have exist (cluster, consumergroup, topic for lag;
              cluster, broker for brokers); every $variable used is defined or a Grafana
              built-in; in a dashboard with a `cluster` variable, every selector filters on it
  time        time_options offer 1h, 6h and 24h, and links to them exist
  promql      every expr (panels, annotations, variable queries), with Grafana's variables
              replaced, is accepted by `promtool check rules`
  metrics     every metric used is exported by a binary (agent/tests/golden/sidecar.prom; the
              actuator's golden scrape actuator/tests/golden/*.prom, else the names listed in
              actuator/README.md) or recorded by rules/kafka-medic.rules.yml; ALERTS only for
              alerts defined there; `up` only for job="medic-agent"
  thresholds  the thresholds drawn on the broker panels are the numbers in the alert rules
  annotations the dashboard annotates actuator actions (medic_actuator_actions_total)

Prints every problem with the file and panel, and exits 1 if there is any.
"""
import copy
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import promql  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("check_dashboards.py needs PyYAML: apt-get install python3-yaml")

ROOT = os.path.dirname(os.path.dirname(HERE))
DASH_DIR = os.path.join(ROOT, "dashboards")
RULES = os.path.join(ROOT, "rules", "kafka-medic.rules.yml")
AGENT_GOLDEN = os.path.join(ROOT, "agent", "tests", "golden", "sidecar.prom")
ACTUATOR_GOLDEN_GLOB = os.path.join(ROOT, "actuator", "tests", "golden", "*.prom")
ACTUATOR_README = os.path.join(ROOT, "actuator", "README.md")

# The stable uids (Grafana URLs, links between the dashboards and provisioning use them).
UIDS = {
    "kafka-medic-consumer-lag.json": "kafka-medic-consumer-lag",
    "kafka-medic-broker-health.json": "kafka-medic-broker-health",
    "kafka-medic-actuator.json": "kafka-medic-actuator",
}
REQUIRED_VARS = {
    "kafka-medic-consumer-lag": {"datasource", "cluster", "consumergroup", "topic"},
    "kafka-medic-broker-health": {"datasource", "cluster", "broker"},
    "kafka-medic-actuator": {"datasource"},
}
# Panels whose drawn thresholds must equal the constants an alert compares with:
# (dashboard uid, panel title) -> (alert name, the threshold values drawn).
THRESHOLDS = {
    ("kafka-medic-broker-health", "CPU use / capacity"): ("KafkaBrokerOverloaded", {0.8}),
    ("kafka-medic-broker-health", "Highest CPU use"): ("KafkaBrokerOverloaded", {0.8}),
    ("kafka-medic-broker-health", "Log directory use"): ("KafkaBrokerDiskPressure", {0.6, 0.85}),
    ("kafka-medic-broker-health", "Fullest log directory"): ("KafkaBrokerDiskPressure", {0.6, 0.85}),
}
GRAFANA_BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__interval_ms": "60000", "__range": "1h",
    "__range_s": "3600", "__range_ms": "3600000", "__from": "0", "__to": "0",
    "__dashboard": "x", "__name": "x",
}
TIME_PRESETS = {"1h", "6h", "24h"}
VAR_REF = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+)|\[\[(\w+)\]\])")


class Ctx:
    def __init__(self, label):
        self.label = label
        self.problems = []
        self.unknown = set()

    def add(self, where, msg):
        self.problems.append(f"{self.label}: {where}: {msg}")


# ---------------------------------------------------------------- known names

def prom_names(text):
    """Metric names in a Prometheus text exposition (histograms expanded)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                names.add(parts[2])
                if parts[3] in ("histogram", "summary"):
                    names.update({parts[2] + "_bucket", parts[2] + "_sum", parts[2] + "_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def known_metrics(rules_path, agent_golden, actuator_golden_glob, actuator_readme, ctx):
    """(binary metric name -> where it comes from, recording rule names, alert names)."""
    exported = {}
    if os.path.exists(agent_golden):
        with open(agent_golden, encoding="utf-8") as f:
            for n in prom_names(f.read()):
                exported[n] = os.path.relpath(agent_golden, ROOT)
    else:
        ctx.add("metrics", f"the agent's golden scrape {os.path.relpath(agent_golden, ROOT)} is "
                           "missing: cannot tell which kafka_* and medic_agent_* metrics exist")
    goldens = sorted(glob.glob(actuator_golden_glob))
    if goldens:
        for g in goldens:
            with open(g, encoding="utf-8") as f:
                for n in prom_names(f.read()):
                    exported[n] = os.path.relpath(g, ROOT)
    elif os.path.exists(actuator_readme):
        with open(actuator_readme, encoding="utf-8") as f:
            for n in set(re.findall(r"\bmedic_(?:actuator|consumergroup)_[a-z0-9_]*[a-z0-9]\b", f.read())):
                for suffix in ("", "_bucket", "_sum", "_count"):
                    exported.setdefault(n + suffix, os.path.relpath(actuator_readme, ROOT))
    else:
        ctx.add("metrics", "neither an actuator golden scrape (actuator/tests/golden/*.prom) nor "
                           "actuator/README.md exists: cannot tell which medic_actuator_* metrics exist")
    with open(rules_path, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    records, alerts = {}, {}
    for g in rules.get("groups", []):
        for r in g.get("rules", []):
            if "record" in r:
                records[r["record"]] = r["expr"]
            elif "alert" in r:
                alerts[r["alert"]] = r["expr"]
    return exported, records, alerts


# ---------------------------------------------------------------- walking a dashboard

def all_panels(d):
    for p in d.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def exprs(d):
    """(where, expr) for every PromQL expression in the dashboard."""
    for p in all_panels(d):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                yield f'panel {p.get("id")} "{p.get("title")}" refId {t.get("refId")}', t["expr"]
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr"):
            yield f'annotation "{a.get("name")}"', a["expr"]
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
            if m:
                yield f'variable "{v.get("name")}"', m.group(1)
                continue
            m = re.fullmatch(r"\s*query_result\((.*)\)\s*", q, re.S)
            if m:
                yield f'variable "{v.get("name")}"', m.group(1)
                continue
            yield f'variable "{v.get("name")}"', "<<unsupported variable query: " + q + ">>"


def substitute(expr, defined):
    """Replace Grafana variables with values PromQL accepts; return (expr, undefined names)."""
    undefined = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if m.group(3):
            undefined.append(f"[[{name}]] (old syntax)")
            return "x"
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in defined:
            undefined.append(name)
        return "x"

    return VAR_REF.sub(repl, expr), undefined


# ---------------------------------------------------------------- checks

def check_structure(ctx, d, fname):
    if not isinstance(d, dict) or not isinstance(d.get("panels"), list) or "templating" not in d:
        ctx.add("json", "not a Grafana dashboard (needs panels and templating)")
        return False
    want = UIDS.get(fname)
    uid = d.get("uid")
    if not uid:
        ctx.add("uid", "no uid: every import would create a new dashboard and links break")
    elif not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        ctx.add("uid", f"uid {uid!r} is not 1-40 characters of [A-Za-z0-9_-]")
    if want is None:
        ctx.add("uid", f"{fname} has no pinned uid in check_dashboards.py UIDS; add it there")
    elif uid and uid != want:
        ctx.add("uid", f"uid is {uid!r}, expected the stable {want!r}")
    if d.get("id") is not None:
        ctx.add("uid", f"id is {d.get('id')!r}; must be null so an import never replaces another dashboard")
    if not d.get("title"):
        ctx.add("json", "no title")
    return True


def check_panels(ctx, d):
    seen = {}
    boxes = []

    def place(p, group):
        g = p.get("gridPos")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            ctx.add(f'panel {p.get("id")} "{p.get("title")}"', "gridPos missing or not integers")
            return
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24 or g["h"] < 1:
            ctx.add(f'panel {p.get("id")} "{p.get("title")}"', f"gridPos {g} outside the 24-column grid")
        for (other, og, ogroup) in boxes:
            if ogroup not in (group, "top") and group != "top":
                continue
            if (g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"]
                    and g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]):
                ctx.add(f'panel {p.get("id")} "{p.get("title")}"',
                        f'overlaps panel {other.get("id")} "{other.get("title")}"')
        boxes.append((p, g, group))

    for p in d["panels"]:
        place(p, "top")
        nested = p.get("panels") or []
        if nested and not p.get("collapsed"):
            ctx.add(f'row "{p.get("title")}"', "an expanded row must not hold panels")
        for q in nested:
            place(q, p.get("id"))
            qy = (q.get("gridPos") or {}).get("y", -1)
            if isinstance(qy, int) and qy <= p["gridPos"]["y"]:
                ctx.add(f'panel {q.get("id")} "{q.get("title")}"', f'sits above its collapsed row "{p.get("title")}" (y {qy} <= {p["gridPos"]["y"]})')
    for p in all_panels(d):
        pid = p.get("id")
        if not isinstance(pid, int):
            ctx.add(f'panel "{p.get("title")}"', f"id {pid!r} is not an integer")
            continue
        if pid in seen:
            ctx.add(f'panel {pid} "{p.get("title")}"', f'duplicate panel id (also "{seen[pid]}")')
        seen[pid] = p.get("title")
        if p.get("type") != "row":
            if not p.get("targets"):
                ctx.add(f'panel {pid} "{p.get("title")}"', "has no queries")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if len(refs) != len(set(refs)) or None in refs:
                ctx.add(f'panel {pid} "{p.get("title")}"', f"refIds {refs} are not unique")


def is_ds_var(ds):
    if isinstance(ds, dict):
        return ds.get("uid") in ("${datasource}", "$datasource")
    return ds in ("${datasource}", "$datasource")


def check_datasource(ctx, d):
    vars_ = {v.get("name"): v for v in d["templating"].get("list", [])}
    v = vars_.get("datasource")
    if not v or v.get("type") != "datasource" or v.get("query") != "prometheus":
        ctx.add("datasource", "no `datasource` variable of type datasource with query prometheus")
    for p in all_panels(d):
        if p.get("type") == "row":
            continue
        where = f'panel {p.get("id")} "{p.get("title")}"'
        if not is_ds_var(p.get("datasource")):
            ctx.add(where, f"datasource {p.get('datasource')!r} is not ${{datasource}}")
        for t in p.get("targets", []):
            if "datasource" in t and not is_ds_var(t["datasource"]):
                ctx.add(where, f"query {t.get('refId')} datasource {t['datasource']!r} is not ${{datasource}}")
    for a in d.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        if not is_ds_var(a.get("datasource")):
            ctx.add(f'annotation "{a.get("name")}"', f"datasource {a.get('datasource')!r} is not ${{datasource}}")
    for name, v in vars_.items():
        if v.get("type") == "query" and not is_ds_var(v.get("datasource")):
            ctx.add(f'variable "{name}"', f"datasource {v.get('datasource')!r} is not ${{datasource}}")


def check_variables_and_time(ctx, d):
    names = {v.get("name") for v in d["templating"].get("list", [])}
    for need in sorted(REQUIRED_VARS.get(d.get("uid"), set()) - names):
        ctx.add("variables", f"missing template variable `{need}`")
    opts = set(d.get("timepicker", {}).get("time_options", []))
    if not TIME_PRESETS <= opts:
        ctx.add("time", f"timepicker.time_options {sorted(opts)} lack {sorted(TIME_PRESETS - opts)}")
    linked = {re.search(r"from=now-(\w+)", link.get("url", "")).group(1)
              for link in d.get("links", []) if re.search(r"from=now-(\w+)", link.get("url", ""))}
    if not TIME_PRESETS <= linked:
        ctx.add("time", f"no dashboard links for the presets {sorted(TIME_PRESETS - linked)}")
    if not any("medic_actuator_actions_total" in (a.get("expr") or "")
               for a in d.get("annotations", {}).get("list", []) if a.get("enable")):
        ctx.add("annotations", "no enabled annotation of actuator actions (medic_actuator_actions_total)")


def check_exprs(ctx, d, exported, records, alerts, to_parse):
    names = {v.get("name") for v in d["templating"].get("list", [])}
    has_cluster = "cluster" in names
    for where, expr in exprs(d):
        if expr.startswith("<<unsupported"):
            ctx.add(where, expr.strip("<>"))
            continue
        sub, undefined = substitute(expr, names)
        for u in undefined:
            ctx.add(where, f"undefined variable ${u} in: {expr}")
        to_parse.append((ctx, where, expr, sub))
        try:
            sels = promql.selectors(expr)
        except promql.PromQLScanError as e:
            ctx.add(where, f"cannot scan the expression ({e}): {expr}")
            continue
        for name, matchers in sels:
            labels = {m[0]: m for m in matchers}
            if name is None:
                ctx.add(where, f"selector without a metric name: {expr}")
                continue
            if name == "ALERTS":
                m = labels.get("alertname")
                if not m or m[1] not in ("=", "=~"):
                    ctx.add(where, "ALERTS must select alertname with = or =~")
                else:
                    for a in m[2].split("|"):
                        if a not in alerts:
                            ctx.add(where, f"ALERTS{{alertname=...}} names {a!r}, which is not an alert in rules/kafka-medic.rules.yml")
            elif name == "up":
                if labels.get("job", (None, None, None))[1:] != ("=", "medic-agent"):
                    ctx.add(where, 'up is only used for the sidecar targets: up{job="medic-agent"}')
            elif name not in exported and name not in records:
                if name not in ctx.unknown:
                    ctx.unknown.add(name)
                    ctx.add(where, f"metric {name} is not exported by a binary (golden scrapes / actuator README) nor recorded in rules/kafka-medic.rules.yml (reported once per dashboard)")
            # The actuator's own metrics have no cluster label (only its override gauges do).
            if has_cluster and not where.startswith('variable "cluster"') and not name.startswith("medic_actuator_"):
                m = labels.get("cluster")
                if not m or "$cluster" not in m[2] and "${cluster" not in m[2]:
                    ctx.add(where, f"selector {name} does not filter on the cluster variable (cluster=~\"$cluster\")")


def check_thresholds(ctx, d, alerts):
    for p in all_panels(d):
        key = (d.get("uid"), p.get("title"))
        if key not in THRESHOLDS:
            continue
        alert, want = THRESHOLDS[key]
        steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        drawn = {s.get("value") for s in steps if s.get("value") is not None}
        if drawn != want:
            ctx.add(f'panel {p.get("id")} "{p.get("title")}"', f"draws thresholds {sorted(drawn)}, expected {sorted(want)} ({alert})")
        expr = alerts.get(alert, "")
        consts = {float(x) for x in re.findall(r"[<>]=?\s*([0-9.]+)", expr)}
        for v in want:
            if v not in consts:
                ctx.add(f'panel {p.get("id")} "{p.get("title")}"', f"threshold {v} is not a comparison in alert {alert}'s expression (the rules changed?)")
        style = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get("thresholdsStyle", {}).get("mode")
        if p.get("type") == "timeseries" and style in (None, "off"):
            ctx.add(f'panel {p.get("id")} "{p.get("title")}"', "thresholds are not drawn (thresholdsStyle.mode is off)")
    seen = {t for (u, t) in THRESHOLDS if u == d.get("uid")}
    titles = {p.get("title") for p in all_panels(d)}
    for t in sorted(seen - titles):
        ctx.add("thresholds", f'panel "{t}" (with the alert threshold drawn) is missing')


def promtool_check(items, problems):
    """Parse every expression with `promtool check rules`: all at once, then one by one to
    name the failing ones."""
    if not items:
        return

    def run(batch):
        doc = {"groups": [{"name": "dashboards", "rules": [
            {"record": f"dashboard:expr_{i}:check", "expr": sub} for i, (_, _, _, sub) in enumerate(batch)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".rules.yml", delete=False) as f:
            yaml.safe_dump(doc, f)
            path = f.name
        try:
            r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
        finally:
            os.unlink(path)
        return r.returncode, (r.stdout + r.stderr).strip()

    rc, _ = run(items)
    if rc == 0:
        return
    for item in items:
        rc, out = run([item])
        if rc != 0:
            ctx, where, expr, sub = item
            detail = " ".join(line.strip() for line in out.splitlines() if "rror" in line or "parse" in line)
            ctx.add(where, f"promtool check rules rejects it: {detail or out}\n      expr: {sub}")


def check_dir(dash_dir, rules=RULES, agent_golden=AGENT_GOLDEN,
              actuator_golden_glob=ACTUATOR_GOLDEN_GLOB, actuator_readme=ACTUATOR_README):
    problems = []
    names_ctx = Ctx("known metrics")
    exported, records, alerts = known_metrics(rules, agent_golden, actuator_golden_glob, actuator_readme, names_ctx)
    problems += names_ctx.problems
    files = sorted(glob.glob(os.path.join(dash_dir, "*.json")))
    if not files:
        problems.append(f"no dashboards in {dash_dir}")
    for fname in sorted(set(UIDS) - {os.path.basename(f) for f in files}):
        problems.append(f"dashboard {fname} is missing")
    uids = {}
    to_parse = []
    ctxs = []
    for path in files:
        fname = os.path.basename(path)
        ctx = Ctx(f"dashboards/{fname}")
        ctxs.append(ctx)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            ctx.add("json", f"not valid JSON: {e}")
            continue
        if not check_structure(ctx, d, fname):
            continue
        if d.get("uid") in uids:
            ctx.add("uid", f"uid {d.get('uid')!r} is also used by {uids[d.get('uid')]}")
        uids[d.get("uid")] = fname
        check_panels(ctx, d)
        check_datasource(ctx, d)
        check_variables_and_time(ctx, d)
        check_exprs(ctx, d, exported, records, alerts, to_parse)
        check_thresholds(ctx, d, alerts)
    promtool_check(to_parse, problems)
    for ctx in ctxs:
        problems += ctx.problems
    return problems, len(files), len(to_parse)


# ---------------------------------------------------------------- self-test

def _first_target(d, title=None):
    for p in all_panels(d):
        if p.get("targets") and (title is None or p.get("title") == title):
            return p, p["targets"][0]
    raise KeyError(title)


def _mutations():
    """(name, file, mutate(dict) or None for a raw-text break, substring expected in a problem)."""
    lag, broker, act = "kafka-medic-consumer-lag.json", "kafka-medic-broker-health.json", "kafka-medic-actuator.json"

    def set_expr(title, new):
        def f(d):
            _, t = _first_target(d, title)
            t["expr"] = new(t["expr"])
        return f

    def dup_id(d):
        ps = [p for p in all_panels(d)]
        ps[3]["id"] = ps[2]["id"]

    def overlap(d):
        ps = [p for p in d["panels"] if p.get("type") != "row"]
        ps[1]["gridPos"] = dict(ps[0]["gridPos"])

    def drop_var(name):
        def f(d):
            d["templating"]["list"] = [v for v in d["templating"]["list"] if v.get("name") != name]
        return f

    def fixed_ds(d):
        p, _ = _first_target(d)
        p["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}

    def threshold(d):
        for p in all_panels(d):
            if p.get("title") == "CPU use / capacity":
                p["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] = 0.9

    def no_threshold_line(d):
        for p in all_panels(d):
            if p.get("title") == "CPU use / capacity":
                p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] = "off"

    def no_annotation(d):
        d["annotations"]["list"] = [a for a in d["annotations"]["list"] if "medic_actuator" not in (a.get("expr") or "")]

    def row_above(d):
        r = [p for p in d["panels"] if p.get("type") == "row" and p.get("collapsed")][0]
        r["panels"][0]["gridPos"]["y"] = r["gridPos"]["y"] - 1

    def no_preset(d):
        d["timepicker"]["time_options"] = ["1h", "24h"]

    return [
        ("invalid JSON", lag, "raw", "not valid JSON"),
        ("duplicate panel id", lag, dup_id, "duplicate panel id"),
        ("overlapping panels", broker, overlap, "overlaps panel"),
        ("uid removed", lag, lambda d: d.pop("uid"), "no uid"),
        ("uid changed", broker, lambda d: d.__setitem__("uid", "broker"), "expected the stable"),
        ("id set", act, lambda d: d.__setitem__("id", 12), "must be null"),
        ("datasource variable removed", act, drop_var("datasource"), "no `datasource` variable"),
        ("fixed datasource", lag, fixed_ds, "is not ${datasource}"),
        ("topic variable removed", lag, drop_var("topic"), "missing template variable `topic`"),
        ("unparsable expr", lag, set_expr("Total lag", lambda e: "sum(rate(" + e + "[5m])"), "promtool check rules rejects it"),
        ("unknown metric", broker, set_expr("Memory used", lambda e: e.replace("kafka_broker_memory_used_bytes", "kafka_broker_memory_bytes")), "metric kafka_broker_memory_bytes is not exported"),
        ("unknown actuator metric", act, set_expr("Policies", lambda e: e.replace("medic_actuator_policies", "medic_actuator_policy_count")), "metric medic_actuator_policy_count is not exported"),
        ("undefined variable", lag, set_expr("Total lag", lambda e: e.replace("$cluster", "$clustr")), "undefined variable $clustr"),
        ("no cluster filter", lag, set_expr("Total lag", lambda e: e.replace('cluster=~"$cluster", ', "")), "does not filter on the cluster variable"),
        ("unknown alert", lag, set_expr("Groups lagging persistently", lambda e: e.replace("KafkaConsumerLagPersistent", "KafkaLagTooHigh")), "'KafkaLagTooHigh', which is not an alert"),
        ("up without job", broker, set_expr("Sidecar target up (scraped by Prometheus)", lambda e: e.replace('job="medic-agent", ', "")), 'up{job="medic-agent"}'),
        ("threshold differs from the rule", broker, threshold, "draws thresholds [0.9]"),
        ("threshold not drawn", broker, no_threshold_line, "thresholds are not drawn"),
        ("no actuator annotation", broker, no_annotation, "no enabled annotation of actuator actions"),
        ("6h preset removed", act, no_preset, "lack ['6h']"),
        ("panel above its collapsed row", lag, row_above, "sits above its collapsed row"),
    ]


def self_test():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        shutil.copytree(DASH_DIR, base, ignore=shutil.ignore_patterns("lib", "tests", "*.py", "*.md", "__pycache__"))
        problems, _, _ = check_dir(base)
        if problems:
            print("self-test: the unmodified dashboards must pass first:\n  " + "\n  ".join(problems))
            return 1
        for name, fname, mutate, expect in _mutations():
            work = os.path.join(tmp, "case")
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            path = os.path.join(work, fname)
            if mutate == "raw":
                with open(path, "a", encoding="utf-8") as f:
                    f.write("}\n")
            else:
                with open(path, encoding="utf-8") as f:
                    d = json.load(f)
                mutate(d)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(d, f)
            problems, _, _ = check_dir(work)
            hit = [p for p in problems if expect in p and fname in p or expect in p and "known metrics" in p]
            if hit:
                print(f"  ok   {name}: reported ({hit[0].splitlines()[0][:150]})")
            else:
                print(f"  FAIL {name}: expected a problem containing {expect!r} for {fname}; got {problems}")
                failures.append(name)
        # The names the metric check compares with must come from real files: without the
        # agent's golden scrape every kafka_* metric is reported.
        problems, _, _ = check_dir(base, agent_golden=os.path.join(tmp, "missing.prom"))
        if any("golden scrape" in p and "missing" in p for p in problems) and any("kafka_broker_up is not exported" in p for p in problems):
            print("  ok   agent golden scrape missing: reported, and its metrics with it")
        else:
            print(f"  FAIL agent golden scrape missing: not reported: {problems}")
            failures.append("agent golden missing")
    if failures:
        print(f"self-test: {len(failures)} break(s) NOT detected: {', '.join(failures)}")
        return 1
    print(f"self-test: all {len(_mutations()) + 1} deliberate breaks were detected")
    return 0


def main(argv):
    if "--self-test" in argv:
        return self_test()
    dash_dir = argv[argv.index("--dir") + 1] if "--dir" in argv else DASH_DIR
    problems, n, m = check_dir(dash_dir)
    if problems:
        print(f"{len(problems)} problem(s) in the dashboards:")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"dashboards OK: {n} dashboards, {m} PromQL expressions parsed by promtool, every metric known")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
