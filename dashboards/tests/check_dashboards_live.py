#!/usr/bin/env python3
"""Runs every query of the Grafana dashboards in dashboards/ against a live Prometheus.

Grafana cannot run here, so this does what Grafana would do with each dashboard: resolve the
template variables with their own queries (label_values(...)), substitute them and Grafana's
built-ins ($__rate_interval, $__interval, $__range, ...), and send every panel target, every
annotation and every variable query to the Prometheus HTTP API. Each must return data (a series
with at least one value that is not NaN), or be listed in the allow-list file with the reason it
is empty in the scenario. scripts/test-dashboards.sh runs it through tests/tests/dashboards_live.rs,
which starts the whole kafka-medic loop (tansu, medic-agent, Prometheus with rules/, Alertmanager,
medic-actuator, a producer and a slow consumer) and waits until the actuator has acted.

    check_dashboards_live.py --prometheus URL --start UNIX [--end UNIX] [options]
    check_dashboards_live.py --prometheus URL --start UNIX --self-test [options]

Options:
  --var NAME=VALUE     the value of a template variable (repeatable); it must be one of the
                       values the variable's own query returns. A variable without --var takes
                       every value its query returns (as Grafana's "All" with those values).
  --scrape-interval D  Prometheus' scrape interval (Grafana's data source setting; default 15s):
                       $__interval = the step = max(scrape interval, range / 1000), and
                       $__rate_interval = max($__interval + scrape interval, 4 × scrape interval)
  --wait SECONDS       poll (every 2 s) until every query that must return data does, for at most
                       this long, then report; a query that errors fails at once
  --allow FILE         the allow-list (default dashboards/tests/live-allowlist.yaml)
  --dir DIR            the dashboards (default dashboards/)
  --markdown FILE      also write the result table as Markdown

Range queries (panel targets that are not instant, annotations) run over [start, end] with the
step; instant queries at end; variable queries as /api/v1/label/<label>/values with match[] over
[start, end]. A panel query of the form `X or vector(0)` shows 0 when X is empty, so X must
return data (or be allow-listed); the whole expression must still run without an error.

The allow-list must stay true: an entry that matches no query, an entry without a reason, an
allow-listed query that returns data (unless the entry says under `may_return_data` when the
scenario gives it data; it is then printed as a note), and an allow-listed query whose metrics
do not exist in Prometheus at all (a misspelled metric is empty too; unless the entry names the
metric under `absent_metrics` with the reason) are failures.

--self-test breaks copies of the dashboards and of the allow-list (a misspelled metric, a query
Prometheus rejects, a variable that breaks the query once substituted, a wrong label, an
allow-listed panel that returns data, a misspelled metric in an allow-listed panel, a stale
allow-list entry, an entry without a reason, a variable query that returns nothing) and fails
unless each break is reported against the same live Prometheus. It first requires the
unmodified dashboards to pass.

Exits 1 if there is any problem.
"""
import argparse
import copy
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import promql  # noqa: E402
from check_dashboards import VAR_REF, all_panels  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("check_dashboards_live.py needs PyYAML: apt-get install python3-yaml")

ROOT = os.path.dirname(os.path.dirname(HERE))
DASH_DIR = os.path.join(ROOT, "dashboards")
ALLOW = os.path.join(HERE, "live-allowlist.yaml")
FALLBACK = re.compile(r"^(?P<data>.*\S)\s+or\s+vector\(\s*0\s*\)\s*$", re.S)


# ---------------------------------------------------------------- durations and escaping

def seconds(d):
    """A Prometheus duration (`1s`, `1m30s`, `250ms`) or a number of seconds."""
    if re.fullmatch(r"[0-9.]+", d):
        return float(d)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h|d|w|y)", d)
    if not parts or "".join(a + b for a, b in parts) != d:
        raise ValueError(f"not a duration: {d!r}")
    return sum(float(a) * units[b] for a, b in parts)


def duration(s):
    """Whole seconds as a PromQL duration (at least 1s)."""
    return f"{max(1, int(math.ceil(s - 1e-9)))}s"


def regex_escape(v):
    """Grafana's Prometheus data source, multi-value or All variables: regex metacharacters
    escaped, written inside a PromQL string (so the backslash is doubled)."""
    v = v.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\\\" + m.group(), v)


def plain_escape(v):
    """Grafana's Prometheus data source, single-value variables."""
    return v.replace("\\", "\\\\").replace("'", "\\'")


# ---------------------------------------------------------------- Prometheus

class Prom:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.calls = 0

    def get(self, path, params):
        """(data, None) or (None, error text)."""
        self.calls += 1
        q = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}{path}?{q}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")
            try:
                j = json.loads(body)
                return None, f"HTTP {e.code}: {j.get('errorType', '')}: {j.get('error', body)}"
            except ValueError:
                return None, f"HTTP {e.code}: {body[:300]}"
        except (urllib.error.URLError, OSError) as e:
            return None, f"cannot reach Prometheus at {self.url}: {e}"
        j = json.loads(body)
        if j.get("status") != "success":
            return None, f"{j.get('errorType', '')}: {j.get('error', body)}"
        return j["data"], None


def count_series(data):
    """Series with at least one value that is not NaN, and the total number of series."""
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return (0 if math.isnan(float(result[1])) else 1), 1
    if kind == "string":
        return 1, 1
    good = 0
    for s in result:
        vals = s.get("values") or ([s["value"]] if "value" in s else [])
        if any(not math.isnan(float(v[1])) for v in vals):
            good += 1
    return good, len(result)


# ---------------------------------------------------------------- the queries of a dashboard

class Query:
    """One thing Grafana sends to Prometheus."""

    def __init__(self, dash, kind, panel, ref, expr, instant=False, label=None, panel_id=None):
        self.dash, self.kind, self.panel, self.ref = dash, kind, panel, ref
        self.expr, self.instant, self.label, self.panel_id = expr, instant, label, panel_id
        self.sub = None          # expr with the variables substituted
        self.data_expr = None    # the part that must return data (X of `X or vector(0)`)
        self.series = None       # series with data (of data_expr)
        self.error = None
        self.undefined = []
        self.allowed = None      # the allow-list entry
        self.values = []         # a variable's values

    def where(self):
        if self.kind == "panel":
            return f'{self.dash}: panel {self.panel_id} "{self.panel}" {self.ref}'
        return f'{self.dash}: {self.kind} "{self.panel}"'


def variable_query(v):
    q = v.get("query")
    return q.get("query", "") if isinstance(q, dict) else (q or "")


def dashboard_queries(uid, d):
    """Variables first (in order: later ones may use earlier ones), then panels, annotations."""
    out = []
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = variable_query(v).strip()
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", q, re.S)
        if m:
            out.append(Query(uid, "variable", v.get("name"), None, m.group(1), label=m.group(2)))
            continue
        m = re.fullmatch(r"label_values\(\s*(\w+)\s*\)", q, re.S)
        if m:
            out.append(Query(uid, "variable", v.get("name"), None, None, label=m.group(1)))
            continue
        m = re.fullmatch(r"query_result\((.*)\)", q, re.S)
        if m:
            out.append(Query(uid, "variable", v.get("name"), None, m.group(1), instant=True))
            continue
        qq = Query(uid, "variable", v.get("name"), None, q)
        qq.error = f"unsupported variable query: {q}"
        out.append(qq)
    for p in all_panels(d):
        for t in p.get("targets", []) or []:
            if "expr" in t:
                instant = bool(t.get("instant")) and not t.get("range")
                out.append(Query(uid, "panel", p.get("title"), t.get("refId"), t["expr"],
                                 instant=instant, panel_id=p.get("id")))
    for a in d.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append(Query(uid, "annotation", a.get("name"), None, a["expr"]))
    return out


# ---------------------------------------------------------------- running them

class Run:
    def __init__(self, prom, start, end, scrape, given):
        self.prom, self.start, self.end = prom, start, end
        self.scrape = scrape
        self.given = given
        rng = max(end - start, 1.0)
        self.step = max(scrape, math.ceil(rng / 1000))
        self.builtins = {
            "__interval": duration(self.step),
            "__interval_ms": str(int(self.step * 1000)),
            "__rate_interval": duration(max(self.step + scrape, 4 * scrape)),
            "__range": duration(rng),
            "__range_s": str(int(math.ceil(rng))),
            "__range_ms": str(int(math.ceil(rng)) * 1000),
            "__from": str(int(start * 1000)),
            "__to": str(int(end * 1000)),
        }

    def substitute(self, expr, variables):
        undefined = []

        def repl(m):
            name = m.group(1) or m.group(2) or m.group(3)
            if name in self.builtins:
                return self.builtins[name]
            if name not in variables:
                undefined.append(name)
                return m.group(0)
            return variables[name]

        return VAR_REF.sub(repl, expr), undefined

    def evaluate(self, q, variables):
        if q.error:
            return
        if q.expr is None:
            q.sub = ""
        else:
            q.sub, q.undefined = self.substitute(q.expr, variables)
            if q.undefined:
                q.error = "undefined variable(s) " + ", ".join("$" + u for u in q.undefined)
                return
        window = {"start": f"{self.start:.3f}", "end": f"{self.end:.3f}"}
        if q.kind == "variable" and q.label:
            params = dict(window)
            if q.sub:
                params["match[]"] = q.sub
            data, err = self.prom.get(f"/api/v1/label/{q.label}/values", params)
            if err:
                q.error = err
                return
            q.values = sorted(data or [])
            q.series = len(q.values)
            q.data_expr = q.sub
            return
        m = FALLBACK.match(q.sub) if q.kind == "panel" else None
        exprs = [q.sub] + ([m.group("data")] if m else [])
        q.data_expr = exprs[-1]
        for e in exprs:
            if q.instant:
                data, err = self.prom.get("/api/v1/query", {"query": e, "time": f"{self.end:.3f}"})
            else:
                data, err = self.prom.get("/api/v1/query_range", {
                    "query": e, **window, "step": f"{self.step:g}"})
            if err:
                q.error = err if e is q.sub else f"{err} (in the part before `or vector(0)`)"
                return
            good, _ = count_series(data)
        q.series = good
        if q.kind == "variable":
            q.values = sorted({json.dumps(s.get("metric", {}), sort_keys=True) for s in data["result"]})

    def variable_value(self, v, q, problems):
        """The text that replaces $name, from --var or every value the query returned."""
        name = v.get("name")
        values = q.values
        if name in self.given:
            want = self.given[name]
            if q.error is None and want not in values:
                problems.append(f"{q.where()}: --var {name}={want} is not among the values its query "
                                f"returns: {values}")
            values = [want]
        if not values:
            return "__no_value__"
        if v.get("multi") or v.get("includeAll"):
            esc = [regex_escape(x) for x in values]
            return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
        return plain_escape(values[0])

    def run_dashboard(self, uid, d, problems):
        queries = dashboard_queries(uid, d)
        variables = {}
        var_defs = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        for q in queries:
            if q.kind == "variable":
                self.evaluate(q, variables)
                variables[q.panel] = self.variable_value(var_defs[q.panel], q, problems)
        for name, v in var_defs.items():
            if v.get("type") == "datasource":
                variables.setdefault(name, "__datasource_in_a_query__")
            elif name not in variables and v.get("type") in ("custom", "constant", "textbox", "interval"):
                variables[name] = plain_escape(str(v.get("query", "")).split(",")[0])
        for q in queries:
            if q.kind != "variable":
                self.evaluate(q, variables)
        return queries


# ---------------------------------------------------------------- the allow-list

def load_allow(path, problems):
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"allow-list {shown(path)}: {e}")
        return []
    entries = doc.get("empty", []) if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        problems.append(f"allow-list {shown(path)}: needs a list under `empty:`")
        return []
    good = []
    for i, e in enumerate(entries):
        where = f"allow-list entry {i + 1} ({e.get('dashboard') if isinstance(e, dict) else e})"
        if not isinstance(e, dict) or not e.get("dashboard") or not (e.get("panel") or e.get("annotation") or e.get("variable")):
            problems.append(f"{where}: needs `dashboard` and one of `panel`, `annotation`, `variable`")
            continue
        what = e.get('panel') or e.get('annotation') or e.get('variable')
        if not str(e.get("reason") or "").strip():
            problems.append(f"{where} {what!r}: no reason given")
        absent = e.get("absent_metrics") or {}
        if not isinstance(absent, dict) or not all(str(r or "").strip() for r in absent.values()):
            problems.append(f"{where} {what!r}: absent_metrics must map each metric to the reason it is absent")
            e["absent_metrics"] = {}
        if "may_return_data" in e and not str(e.get("may_return_data") or "").strip():
            problems.append(f"{where} {what!r}: may_return_data must say when the scenario gives it data")
        e["_hits"] = []
        good.append(e)
    return good


def entry_matches(e, q):
    if e["dashboard"] != q.dash:
        return False
    if q.kind == "panel":
        return (e.get("panel") == q.panel and e.get("ref", q.ref) == q.ref
                and e.get("id", q.panel_id) == q.panel_id)
    return e.get(q.kind) == q.panel


def shown(path):
    """A path relative to the checkout if it is inside it."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def metric_names(expr):
    try:
        return sorted({n for n, _ in promql.selectors(expr) if n})
    except promql.PromQLScanError:
        return []


# ---------------------------------------------------------------- one pass over everything

def check(prom, start, end, scrape, given, dash_dir, allow_path):
    """(problems, notes, queries)."""
    problems, notes = [], []
    run = Run(prom, start, end, scrape, given)
    entries = load_allow(allow_path, problems)
    files = sorted(glob.glob(os.path.join(dash_dir, "*.json")))
    if not files:
        problems.append(f"no dashboards in {dash_dir}")
    queries = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        queries += run.run_dashboard(d.get("uid") or os.path.basename(path), d, problems)
    exists = {}

    def metric_exists(name):
        if name not in exists:
            data, err = prom.get("/api/v1/series", {"match[]": "{__name__=%s}" % json.dumps(name),
                                                     "start": f"{start:.3f}", "end": f"{end:.3f}"})
            exists[name] = bool(data) if err is None else None
        return exists[name]

    for q in queries:
        for e in entries:
            if entry_matches(e, q):
                q.allowed = e
                e["_hits"].append(q)
        if q.error:
            problems.append(f"{q.where()}: the query fails: {q.error}\n      query: {q.sub or q.expr}")
            continue
        if q.allowed is None:
            if not q.series:
                what = "no values" if q.kind == "variable" else "no data"
                problems.append(f"{q.where()}: returned {what}, and is not in the allow-list "
                                f"{shown(allow_path)}\n      query: {q.data_expr}")
            continue
        e = q.allowed
        if q.series and e.get("may_return_data"):
            notes.append(f"{q.where()}: allow-listed as empty, returned {q.series} series this time, which "
                         f"the allow-list expects when: {' '.join(str(e['may_return_data']).split())}")
            continue
        if q.series:
            problems.append(f"{q.where()}: allow-listed as empty ({' '.join(e.get('reason', '').split())[:80]!r}) "
                            f"but returned {q.series} series; remove it from the allow-list\n      query: {q.data_expr}")
            continue
        absent_ok = set(e.get("absent_metrics") or {})
        for name in metric_names(q.data_expr):
            if name == "ALERTS" and name not in absent_ok:
                continue  # an ALERTS series exists only for an alert that is pending or firing
            ok = metric_exists(name)
            if ok is None:
                problems.append(f"{q.where()}: cannot tell whether its metric {name} exists (the series API failed)")
            elif ok is False and name not in absent_ok:
                problems.append(f"{q.where()}: allow-listed as empty, but its metric {name} has no series "
                                f"in Prometheus at all (misspelled?); if that is expected, list it under "
                                f"absent_metrics with the reason")
            elif ok and name in absent_ok:
                problems.append(f"{q.where()}: the allow-list says metric {name} is absent, but it has "
                                f"series; remove it from absent_metrics")
    for e in entries:
        if not e["_hits"]:
            what = e.get("panel") or e.get("annotation") or e.get("variable")
            problems.append(f"allow-list entry {e['dashboard']} {what!r}"
                            f"{' ' + e['ref'] if e.get('ref') else ''}: matches no query of the dashboards")
    return problems, notes, queries


def report(queries, markdown=None):
    rows = []
    for q in queries:
        if q.error:
            res = "ERROR"
        elif q.allowed is not None and not q.series:
            res = "allow-listed: " + " ".join(q.allowed.get("reason", "").split())
        elif q.allowed is not None and q.allowed.get("may_return_data"):
            res = f"{q.series} series (allow-listed, may return data)"
        elif q.kind == "variable":
            res = f"{q.series} value(s): {', '.join(q.values[:4])}" + (" ..." if len(q.values) > 4 else "")
        else:
            res = f"{q.series} series" if q.series else "EMPTY"
            if q.kind == "panel" and FALLBACK.match(q.sub or ""):
                res += " (before `or vector(0)`)"
        kind = {"panel": f"{q.panel_id}", "variable": "var", "annotation": "annot."}[q.kind]
        mode = "" if q.kind == "variable" else ("instant" if q.instant else "range")
        rows.append((q.dash, kind, q.panel + (f" {q.ref}" if q.ref else ""), mode, res))
    if not rows:
        return
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  ".join(r[i].ljust(w[i]) for i in range(4)) + "  " + r[4])
    if markdown:
        with open(markdown, "w", encoding="utf-8") as f:
            f.write("| dashboard | id | query | mode | result |\n|---|---|---|---|---|\n")
            for r in rows:
                f.write("| " + " | ".join(x.replace("|", "\\|") for x in r) + " |\n")


# ---------------------------------------------------------------- self-test

def _mutations():
    """(name, dashboard file or None, mutate(dashboard), mutate(allow-list doc), expected text)."""
    lag, broker, act = "kafka-medic-consumer-lag.json", "kafka-medic-broker-health.json", "kafka-medic-actuator.json"

    def expr(title, f, ref="A"):
        def m(d):
            for p in all_panels(d):
                if p.get("title") == title:
                    for t in p.get("targets", []):
                        if t.get("refId") == ref:
                            new = f(t["expr"])
                            assert new != t["expr"], f"mutation of {title} changed nothing"
                            t["expr"] = new
                            return
            raise KeyError(title)
        return m

    def var(name, f):
        def m(d):
            for v in d["templating"]["list"]:
                if v.get("name") == name:
                    v["query"] = f(variable_query(v))
                    return
            raise KeyError(name)
        return m

    def add_entry(entry):
        return lambda doc: doc["empty"].append(entry)

    def absent_but_present(doc):
        for e in doc["empty"]:
            if e.get("panel") == "Webhook errors (range)":
                e["absent_metrics"] = {"medic_actuator_webhooks_total": "wrongly said to be absent"}
                return
        raise KeyError("Webhook errors (range)")

    def drop_reason(doc):
        doc["empty"][0]["reason"] = ""

    return [
        ("misspelled metric", lag,
         expr("Total lag", lambda e: e.replace("kafka_consumergroup_lag:sum", "kafka_consumergroup_lagg:sum")),
         None, '"Total lag" A: returned no data'),
        ("query Prometheus rejects", lag,
         expr("Total lag", lambda e: "sum(" + e), None, '"Total lag" A: the query fails'),
        ("variable that breaks the query once substituted", lag,
         expr("Kafka requests", lambda e: e.replace("[$__rate_interval]", "[$topic]")),
         None, '"Kafka requests" A: the query fails'),
        ("wrong label name", lag,
         expr("Lag per partition (offsets)", lambda e: e.replace("consumergroup=~", "group=~")),
         None, '"Lag per partition (offsets)" A: returned no data'),
        ("query error in the part before `or vector(0)`", act,
         expr("Scaled (range)", lambda e: e.replace("[$__range]", "[$instance]")),
         None, '"Scaled (range)" A: the query fails'),
        ("misspelled metric before `or vector(0)`", act,
         expr("Scaled (range)", lambda e: e.replace("medic_actuator_actions_total", "medic_actuator_action_total")),
         None, '"Scaled (range)" A: returned no data'),
        ("allow-listed panel that returns data", broker,
         expr("Brokers down", lambda e: e.replace("== 0", "== 1")),
         None, '"Brokers down" A: allow-listed as empty'),
        ("misspelled metric in an allow-listed panel", act,
         expr("Webhook errors (range)", lambda e: e.replace("medic_actuator_webhooks_total", "medic_actuator_webhook_total")),
         None, "its metric medic_actuator_webhook_total has no series"),
        ("stale allow-list entry", None, None,
         add_entry({"dashboard": "kafka-medic-actuator", "panel": "No such panel", "reason": "gone"}),
         "'No such panel': matches no query"),
        ("allow-list entry without a reason", None, None, drop_reason, "no reason given"),
        ("absent_metrics naming a metric that exists", None, None, absent_but_present,
         "says metric medic_actuator_webhooks_total is absent"),
        ("variable query that returns nothing", broker,
         var("cluster", lambda q: q.replace("kafka_broker_up", "kafka_broker_upp")),
         None, 'variable "cluster": returned no values'),
    ]


def self_test(args, given):
    failures = []
    prom = Prom(args.prometheus)
    end = args.end or time.time()
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        os.makedirs(base)
        for f in glob.glob(os.path.join(args.dir, "*.json")):
            shutil.copy(f, base)
        with open(args.allow, encoding="utf-8") as f:
            allow_doc = yaml.safe_load(f)
        problems, _, _ = check(prom, args.start, end, args.scrape, given, base, args.allow)
        if problems:
            print("self-test: the unmodified dashboards must pass first:\n  " + "\n  ".join(problems))
            return 1
        cases = _mutations()
        for name, fname, mutate, mutate_allow, expect in cases:
            work = os.path.join(tmp, "case")
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            allow = os.path.join(tmp, "allow.yaml")
            doc = copy.deepcopy(allow_doc)
            if mutate_allow:
                mutate_allow(doc)
            with open(allow, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f)
            if mutate:
                path = os.path.join(work, fname)
                with open(path, encoding="utf-8") as f:
                    d = json.load(f)
                mutate(d)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(d, f)
            problems, _, _ = check(prom, args.start, end, args.scrape, given, work, allow)
            hit = [p for p in problems if expect in p]
            if hit:
                print(f"  ok   {name}: reported ({hit[0].splitlines()[0][:170]})")
            else:
                print(f"  FAIL {name}: expected a problem containing {expect!r}; got {problems}")
                failures.append(name)
    if failures:
        print(f"self-test: {len(failures)} break(s) NOT detected: {', '.join(failures)}")
        return 1
    print(f"self-test: all {len(cases)} deliberate breaks were reported ({prom.calls} Prometheus requests)")
    return 0


# ---------------------------------------------------------------- main

def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float)
    ap.add_argument("--var", action="append", default=[])
    ap.add_argument("--scrape-interval", default="15s")
    ap.add_argument("--wait", type=float, default=0)
    ap.add_argument("--allow", default=ALLOW)
    ap.add_argument("--dir", default=DASH_DIR)
    ap.add_argument("--markdown")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args(argv)
    args.scrape = seconds(args.scrape_interval)
    given = {}
    for v in args.var:
        k, sep, val = v.partition("=")
        if not sep:
            ap.error(f"--var {v}: expected NAME=VALUE")
        given[k] = val
    _, err = Prom(args.prometheus).get("/api/v1/status/buildinfo", {})
    if err:
        print(f"check_dashboards_live.py: {err}")
        return 1
    if args.self_test:
        return self_test(args, given)

    prom = Prom(args.prometheus)
    t0 = time.time()
    polls, waited_for = 0, []
    while True:
        end = args.end or time.time()
        problems, notes, queries = check(prom, args.start, end, args.scrape, given, args.dir, args.allow)
        polls += 1
        errors = [q for q in queries if q.error]
        missing = [q for q in queries if not q.error and q.allowed is None and not q.series]
        if polls == 1:
            waited_for = [q.where() for q in missing]
        if not missing or errors or time.time() - t0 >= args.wait:
            break
        time.sleep(2)
    waited = time.time() - t0
    n = len(queries)
    data = sum(1 for q in queries if q.series and not q.error)
    allowed = sum(1 for q in queries if q.allowed is not None and not q.series and not q.error)
    run = Run(prom, args.start, end, args.scrape, given)
    print(f"window {end - args.start:.0f}s, step {run.step:g}s, "
          + ", ".join(f"${k}={run.builtins[k]}" for k in ("__interval", "__rate_interval", "__range"))
          + f"; {polls} poll(s) in {waited:.1f}s, {prom.calls} Prometheus requests")
    if polls > 1 and waited_for:
        print(f"empty at the first poll (waited for them): {'; '.join(waited_for)}")
    report(queries, args.markdown)
    for note in notes:
        print("note: " + note)
    if problems:
        print(f"\n{len(problems)} problem(s) with the dashboards on live data:")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"\ndashboards on live data OK: {n} queries; {data} returned data, {allowed} allow-listed as empty")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
