#!/usr/bin/env python3
"""Renders helm/kafka-medic in every configuration and checks the result. Run by
scripts/test-helm.sh (which puts helm, kubernetes-validate, promtool and amtool on PATH and
points HELM_*_HOME at a temporary directory).

Steps (each prints ok/FAIL; the script exits 1 if any failed):
  links       files/kafka-medic.rules.yml, files/alertmanager.example.yml and files/dashboards
              are symlinks into rules/ and dashboards/ (not copies that could drift)
  render      `helm template` with the default values and each ci/*-values.yaml
  validate    the output passes `kubernetes-validate --strict` for Kubernetes 1.25 and 1.37
  objects     manifests.check_release: RBAC exactly get/patch on deployments[/scale] in the
              policies' namespaces for their Deployments, list on HPAs and ScaledObjects and
              create on Events there; in the release namespace create + get/update (by name) on
              the one Lease with leader election, and create + get/update (by name) on the
              intent ConfigMaps of actuator.brokers; nothing else, no verb more or less; the
              token only in Secrets; secure securityContexts, resources and probes; POD_NAME and
              POD_NAMESPACE from the downward API; leader election and the Lease name in the
              config; the PDB (maxUnavailable 1); config and policies; PrometheusRule equal
              to rules/; dashboards byte-identical; monitors; sidecar; cluster-mode agent; images
  notes       NOTES.txt (helm install --dry-run=client): its Alertmanager config equals
              rules/alertmanager.example.yml but for this release's URL (checked against the
              rendered Service) and token file, passes `amtool check-config`, and shows no token
  package     `helm package` stores the linked files' contents; a packaged chart renders the same
  sidecar     helm/tests/sidecar-chart (a broker StatefulSet including kafka-medic.agentSidecar)
              with each broker-id source and with SASL: the sidecar as included, and validated
  binaries    the real medic-agent runs with the rendered sidecar and cluster-mode settings and
              reports the intended cluster, mode and broker id on /healthz; the real
              medic-actuator starts with the rendered config, policies and downward-API
              environment, reports the intended Lease and identity on /healthz, and enforces
              the token
  failures    bad values stop `helm template` with a message naming the value
  self-test   each object check reports a deliberately broken manifest; kubernetes-validate
              rejects an unknown field; the notes check reports a changed route
"""
import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import manifests as M  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(ROOT, "helm", "kafka-medic")
WRAPPER = os.path.join(HERE, "sidecar-chart")
AM_EXAMPLE = os.path.join(ROOT, "rules", "alertmanager.example.yml")
EXAMPLE_URL = "http://medic-actuator:8080/api/v1/alerts"
EXAMPLE_CREDENTIALS = "/etc/alertmanager/secrets/kafka-medic-actuator/token"
K8S_VERSIONS = ["1.25.0", "1.37.0"]
RELEASE, NAMESPACE = "kafka-medic", "kafka-medic"

results = []


def record(step, ok, detail=""):
    results.append((step, ok, detail))
    mark = "ok  " if ok else "FAIL"
    print(f"  {mark} {step}" + (f": {detail}" if detail and (not ok or len(detail) < 160) else ""))
    if not ok and detail and len(detail) >= 160:
        print("       " + detail.replace("\n", "\n       "))


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return r.returncode, r.stdout, r.stderr


def helm_stderr(err):
    """helm's stderr without its notices about followed symlinks."""
    return "\n".join(line for line in err.splitlines() if "found symbolic link" not in line)


def render(chart=CHART, values=(), sets=(), release=RELEASE, ns=NAMESPACE):
    cmd = ["helm", "template", release, chart, "-n", ns]
    for v in values:
        cmd += ["-f", v]
    for s in sets:
        cmd += ["--set", s]
    rc, out, err = run(cmd)
    return rc, out, helm_stderr(err), " ".join(cmd)


def notes_of(values=(), release=RELEASE, ns=NAMESPACE):
    cmd = ["helm", "install", release, CHART, "-n", ns, "--dry-run=client"]
    for v in values:
        cmd += ["-f", v]
    rc, out, err = run(cmd)
    if rc != 0:
        return None, f"{' '.join(cmd)} failed: {helm_stderr(err)}"
    if "\nNOTES:\n" not in out:
        return None, "helm install --dry-run printed no NOTES"
    return out.split("\nNOTES:\n", 1)[1], None


def validate(text, version):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        rc, out, err = run(["kubernetes-validate", "--strict", "--quiet", "-k", version, path])
    finally:
        os.unlink(path)
    # It has no schema for custom resources; only the chart's own CRD kinds may be skipped.
    crd = re.compile(r"^WARN .*Couldn't find schema for kind (PrometheusRule|ServiceMonitor|PodMonitor|ClusterPolicy) with api version (monitoring\.coreos\.com|kyverno\.io)/v1 ")
    problems = [line for line in (out + err).splitlines() if line.strip() and not crd.match(line)]
    return rc, problems


# ---------------------------------------------------------------- expectations from values

def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def chart_app_version():
    return str(load_yaml(os.path.join(CHART, "Chart.yaml"))["appVersion"])


def case_for(values_files, ns=NAMESPACE):
    """What the values ask for, in the terms manifests.check_release understands."""
    v = load_yaml(os.path.join(CHART, "values.yaml"))
    for f in values_files:
        v = deep_merge(v, load_yaml(f))
    a, ag = v["actuator"], v["agent"]
    app = chart_app_version()

    def image(img):
        return f"{img['repository']}@{img['digest']}" if img.get("digest") else f"{img['repository']}:{img.get('tag') or app}"

    case = {
        "namespace": ns,
        "actuator": a["enabled"],
        "actuator_sm": a["serviceMonitor"]["enabled"],
        "policies": a["policies"],
        "brokers": a.get("brokers") or [],
        "token": a["auth"]["token"],
        "token_key": a["auth"]["tokenKey"],
        "existing_secret": a["auth"]["existingSecret"],
        "cluster_wide": a["rbac"]["clusterWide"],
        "extra_namespaces": a["rbac"]["extraNamespaces"],
        "replicas": a["replicas"],
        "leader_election": bool((a["config"].get("leader_election") or {}).get("enabled")),
        "lease_name": (a["config"].get("leader_election") or {}).get("lease_name") or None,
        "lease_namespace": (a["config"].get("leader_election") or {}).get("namespace") or None,
        "tls": bool(a["tls"]["existingSecret"]),
        "persistence": a["persistence"]["enabled"],
        "alertmanager_secret": a["auth"]["alertmanagerSecret"] if a["auth"]["alertmanagerSecret"]["namespace"] else None,
        "cluster_mode": ag["clusterMode"]["enabled"],
        "pod_monitor": ag["sidecar"]["podMonitor"]["enabled"],
        "cluster": ag["cluster"],
        "rules": v["prometheusRule"]["enabled"],
        "rules_namespace": v["prometheusRule"]["namespace"],
        "dashboards": v["dashboards"]["enabled"],
        "dashboards_namespace": v["dashboards"]["namespace"],
        "sidecars": 1 if ag["sidecar"]["strimzi"]["kyvernoPolicy"] else 0,
        "log_dirs": ag["sidecar"]["logDirs"],
        "images": {"medic-actuator": image(a["image"]), "medic-agent": image(ag["image"])},
        "cluster_env": {"MEDIC_AGENT_CLUSTER": ag["cluster"],
                        "MEDIC_AGENT_BOOTSTRAP_SERVERS": ag["clusterMode"]["bootstrapServers"],
                        "MEDIC_AGENT_SECURITY_PROTOCOL": ag["kafka"]["securityProtocol"]},
        "sidecar_env": {"MEDIC_AGENT_CLUSTER": ag["cluster"],
                        "MEDIC_AGENT_BOOTSTRAP_SERVERS": ag["sidecar"]["bootstrapServers"]},
        "values": v,
    }
    if ag["sidecar"]["logDirs"]:
        case["sidecar_env"]["MEDIC_AGENT_LOG_DIRS"] = ",".join(d.get("path") or d["mountPath"] for d in ag["sidecar"]["logDirs"])
    return case


# ---------------------------------------------------------------- notes

def check_notes(notes, objs, case):
    p = []
    if not case["actuator"]:
        return p
    m = re.search(r"# ---- BEGIN kafka-medic alertmanager config ----\n(.*)\n# ---- END kafka-medic alertmanager config ----", notes, re.S)
    if not m:
        return ["NOTES.txt has no Alertmanager config between the BEGIN/END markers"]
    snippet = m.group(1)
    svc = [s for s in M.kind(objs, "Service") if s["metadata"]["name"].endswith("-actuator")]
    if not svc:
        return ["no actuator Service rendered to compare the webhook URL with"]
    s = svc[0]
    scheme = "https" if case["tls"] else "http"
    url = f"{scheme}://{s['metadata']['name']}.{s['metadata']['namespace']}.svc:{s['spec']['ports'][0]['port']}/api/v1/alerts"
    am = case["alertmanager_secret"]
    secret_name = am["name"] if am else (case["existing_secret"] or s["metadata"]["name"])
    cred = f"/etc/alertmanager/secrets/{secret_name}/{case['token_key']}"
    try:
        got = yaml.safe_load(snippet)
    except yaml.YAMLError as e:
        return [f"NOTES.txt Alertmanager config is not YAML: {e}"]
    want = load_yaml(AM_EXAMPLE)
    hooks = [w for r in got.get("receivers", []) for w in r.get("webhook_configs", []) or []]
    if [h.get("url") for h in hooks] != [url]:
        p.append(f"NOTES.txt webhook url {[h.get('url') for h in hooks]}, expected this release's Service {url}")
    creds = [h.get("http_config", {}).get("authorization", {}).get("credentials_file") for h in hooks]
    if creds != [cred]:
        p.append(f"NOTES.txt credentials_file {creds}, expected {cred}")
    for h in hooks:
        h["url"] = EXAMPLE_URL
        h.get("http_config", {}).get("authorization", {})["credentials_file"] = EXAMPLE_CREDENTIALS
    if got != want:
        diff = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
        p.append(f"NOTES.txt Alertmanager config differs from rules/alertmanager.example.yml beyond the URL and token file (keys {sorted(diff)})")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(snippet)
        path = f.name
    try:
        rc, out, err = run(["amtool", "check-config", path])
    finally:
        os.unlink(path)
    if rc != 0:
        p.append(f"amtool check-config rejects the NOTES.txt Alertmanager config: {(out + err).strip()}")
    for pol in case["policies"]:
        target = f"{pol['deployment']['namespace']}/{pol['deployment']['name']}"
        if target not in notes:
            p.append(f"NOTES.txt does not list the policy target {target}")
    return p


# ---------------------------------------------------------------- cases

def ci_files():
    d = os.path.join(CHART, "ci")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith("-values.yaml"))


def check_case(label, values):
    rc, out, err, cmd = render(values=values)
    if rc != 0:
        record(f"render {label}", False, f"{cmd}: {err}")
        return None
    objs = M.load_all(out)
    record(f"render {label}", True, f"{len(objs)} objects")
    for ver in K8S_VERSIONS:
        vrc, problems = validate(out, ver)
        record(f"kubernetes-validate --strict -k {ver} {label}", vrc == 0 and not problems, "\n".join(problems))
    case = case_for(values)
    notes, err = notes_of(values)
    if notes is None:
        record(f"notes {label}", False, err)
    problems = M.check_release(objs, case, notes)
    record(f"objects {label}", not problems, "\n".join(problems))
    if notes is not None:
        np = check_notes(notes, objs, case)
        record(f"notes {label}", not np, "\n".join(np))
    return objs, case, notes, out


def link_problems(chart=CHART):
    want = {
        "files/kafka-medic.rules.yml": os.path.join(ROOT, "rules", "kafka-medic.rules.yml"),
        "files/alertmanager.example.yml": AM_EXAMPLE,
        "files/dashboards": os.path.join(ROOT, "dashboards"),
    }
    p = []
    for rel, target in want.items():
        path = os.path.join(chart, rel)
        if not os.path.islink(path):
            p.append(f"helm/kafka-medic/{rel} is not a symlink (a copy can drift); fix: "
                     f"ln -sfn {os.path.relpath(target, os.path.dirname(path))} helm/kafka-medic/{rel}")
        elif os.path.realpath(path) != os.path.realpath(target):
            p.append(f"helm/kafka-medic/{rel} points to {os.path.realpath(path)}, not {target}")
    return p


def check_links():
    p = link_problems()
    record("links: rules and dashboards are symlinks, not copies", not p, "\n".join(p))


def self_test_links(tmp):
    """A chart whose rules link was replaced by a copy must be reported."""
    copy_dir = os.path.join(tmp, "chart-with-a-copy")
    shutil.copytree(CHART, copy_dir, symlinks=True)
    link = os.path.join(copy_dir, "files", "kafka-medic.rules.yml")
    os.unlink(link)
    shutil.copyfile(os.path.join(ROOT, "rules", "kafka-medic.rules.yml"), link)
    os.unlink(os.path.join(copy_dir, "files", "dashboards"))
    os.symlink(os.path.join(ROOT, "rules"), os.path.join(copy_dir, "files", "dashboards"))
    p = link_problems(copy_dir)
    ok = any("kafka-medic.rules.yml is not a symlink" in x for x in p) and any("files/dashboards points to" in x for x in p)
    record("self-test: a copied rules file and a wrong dashboards link are reported", ok, str(p))


def check_app_version():
    rc, out, err, cmd = render(sets=["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "actuator.enabled=false"])
    objs = M.load_all(out) if rc == 0 else []
    images = [c["image"] for d in M.kind(objs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    want = f"ghcr.io/kafka-medic/medic-agent:{chart_app_version()}"
    record("agent image tag defaults to Chart.yaml appVersion", images == [want],
           f"{images} vs {want} (kafka-medic.appVersion in templates/agent/_sidecar.tpl must equal Chart.yaml appVersion)" if images != [want] else "")


def check_package(tmp):
    rc, out, err = run(["helm", "package", CHART, "-d", tmp])
    if rc != 0:
        record("package", False, helm_stderr(err))
        return
    tgz = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".tgz")][0]
    p = []
    with tarfile.open(tgz) as t:
        names = t.getnames()
        for rel, src in (("kafka-medic/files/kafka-medic.rules.yml", "rules/kafka-medic.rules.yml"),
                         ("kafka-medic/files/alertmanager.example.yml", "rules/alertmanager.example.yml")):
            m = t.getmember(rel) if rel in names else None
            if m is None or not m.isfile():
                p.append(f"{rel} is not a regular file in the package")
                continue
            with open(os.path.join(ROOT, src), "rb") as f:
                if t.extractfile(m).read() != f.read():
                    p.append(f"{rel} in the package differs from {src}")
        for f in sorted(os.listdir(os.path.join(ROOT, "dashboards"))):
            if f.endswith(".json"):
                rel = f"kafka-medic/files/dashboards/{f}"
                if rel not in names:
                    p.append(f"{rel} missing from the package")
        stray = [n for n in names if re.search(r"files/dashboards/(lib|tests)/|\.py$|__pycache__", n)]
        if stray:
            p.append(f"the package carries the dashboards' generator or tests: {stray[:5]}")
    minimal = os.path.join(CHART, "ci", "minimal-values.yaml")
    rc1, a, e1, _ = render(values=[minimal])
    rc2, b, e2, _ = render(chart=tgz, values=[minimal])
    if rc1 or rc2 or a != b:
        p.append("the packaged chart does not render the same manifests as the chart directory")
    record("package: linked files stored by content, same rendering", not p, "\n".join(p))


# ---------------------------------------------------------------- the sidecar in a broker chart

def wrapper_dir(tmp):
    d = os.path.join(tmp, "sidecar-chart")
    if not os.path.exists(d):
        shutil.copytree(WRAPPER, d)
        os.makedirs(os.path.join(d, "charts"), exist_ok=True)
        os.symlink(CHART, os.path.join(d, "charts", "kafka-medic"))
    return d


def check_wrapper(tmp):
    d = wrapper_dir(tmp)
    base_vals = load_yaml(os.path.join(WRAPPER, "values.yaml"))["kafka-medic"]
    variants = {
        "podIndexLabel": ([], "podIndexLabel", {}),
        "hostnameSuffix": (["kafka-medic.agent.sidecar.brokerId.source=hostnameSuffix"], "hostnameSuffix", {}),
        "sasl+tls": (["kafka-medic.agent.kafka.securityProtocol=sasl_ssl",
                      "kafka-medic.agent.kafka.sasl.mechanism=SCRAM-SHA-512",
                      "kafka-medic.agent.kafka.sasl.username=medic",
                      "kafka-medic.agent.kafka.sasl.passwordSecret.name=kafka-medic-user",
                      "kafka-medic.agent.kafka.tls.caSecret.name=cluster-ca"], "podIndexLabel",
                     {"MEDIC_AGENT_SECURITY_PROTOCOL": "sasl_ssl", "MEDIC_AGENT_SASL_PASSWORD_FILE": "/etc/medic-agent/sasl/password",
                      "MEDIC_AGENT_TLS_CA_FILE": "/etc/medic-agent/tls-ca/ca.crt"}),
    }
    rendered = {}
    for label, (sets, source, extra_env) in variants.items():
        rc, out, err, cmd = render(chart=d, sets=sets, release="test", ns="kafka")
        if rc != 0:
            record(f"sidecar chart {label}", False, f"{cmd}: {err}")
            continue
        objs = M.load_all(out)
        rendered[label] = objs
        case = {
            "namespace": "kafka", "actuator": False, "rules": False, "dashboards": False,
            "pod_monitor": True, "cluster": base_vals["agent"]["cluster"], "sidecars": 1,
            "broker_id_source": source, "log_dirs": base_vals["agent"]["sidecar"]["logDirs"],
            "sidecar_env": dict({"MEDIC_AGENT_CLUSTER": "prod", "MEDIC_AGENT_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
                                 "MEDIC_AGENT_LOG_DIRS": "/var/lib/kafka/data/kafka-log",
                                 "MEDIC_AGENT_PROCESS_SOURCE": "cmdline",
                                 "MEDIC_AGENT_PROCESS_CMDLINE_PATTERN": "kafka\\.Kafka"}, **extra_env),
        }
        problems = M.check_release(objs, case)
        if label == "sasl+tls":
            sts = M.kind(objs, "StatefulSet")[0]["spec"]["template"]["spec"]
            vols = {v["name"]: v for v in sts.get("volumes", [])}
            if vols.get("medic-agent-sasl", {}).get("secret", {}).get("secretName") != "kafka-medic-user":
                problems.append(f"SASL password volume missing from the pod: {sorted(vols)}")
            if vols.get("medic-agent-tls-ca", {}).get("secret", {}).get("secretName") != "cluster-ca":
                problems.append(f"TLS CA volume missing from the pod: {sorted(vols)}")
        record(f"sidecar chart {label}: objects", not problems, "\n".join(problems))
        for ver in K8S_VERSIONS:
            vrc, vp = validate(out, ver)
            record(f"sidecar chart {label}: kubernetes-validate --strict -k {ver}", vrc == 0 and not vp, "\n".join(vp))
    return rendered


# ---------------------------------------------------------------- real binaries

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(url, headers=None, timeout=2):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_post(url, body, headers=None, timeout=2):
    req = urllib.request.Request(url, data=body.encode(), headers=dict({"Content-Type": "application/json"}, **(headers or {})), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Proc:
    """A process started by a check, always stopped (by its own pid) when the check ends."""

    def __init__(self, cmd, env, log):
        self.log = log
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()[-2000:]

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def wait_http(url, proc, headers=None, deadline=15):
    end = time.time() + deadline
    last = None
    while time.time() < end:
        if proc.p.poll() is not None:
            return None, f"exited with {proc.p.returncode}:\n{proc.output()}"
        try:
            return http_get(url, headers), None
        except (urllib.error.URLError, ConnectionError, socket.timeout) as e:
            last = e
            time.sleep(0.2)
    return None, f"no answer on {url} in {deadline}s (last error: {last}):\n{proc.output()}"


def resolve_env(container, tmp, pod_name):
    """The container's environment as the kubelet would give it, for a pod named pod_name: the
    pod-index label, Kyverno's pod-name expression, and /etc/medic-agent/... files made in tmp."""
    env = {}
    ordinal = pod_name.rsplit("-", 1)[1]
    for e in container.get("env", []):
        if "valueFrom" in e:
            ref = e["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if ref != "metadata.labels['apps.kubernetes.io/pod-index']":
                raise ValueError(f"cannot resolve {e}")
            env[e["name"]] = ordinal
            continue
        v = e["value"]
        if "request.object.metadata.name" in v:
            v = ordinal  # what Kyverno's split(name, '-') | [-1] yields
        if v.startswith("/etc/medic-agent/"):
            real = os.path.join(tmp, v.lstrip("/"))
            os.makedirs(os.path.dirname(real), exist_ok=True)
            if v.endswith(".crt"):
                run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=medic-test-ca",
                     "-keyout", real + ".key", "-out", real])
            else:
                with open(real, "w") as f:
                    f.write("secret-from-a-mounted-file\n")
            v = real
        env[e["name"]] = v
    return env


def run_agent(agent_bin, container, tmp, pod_name, want_cluster, want_mode, label):
    env = resolve_env(container, tmp, pod_name)
    port = free_port()
    env["MEDIC_AGENT_LISTEN"] = f"127.0.0.1:{port}"  # tests listen on loopback only
    env["MEDIC_AGENT_INTERVAL"] = "1s"
    env["HOSTNAME"] = pod_name
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    if not os.path.exists(os.path.join(bindir, "medic-agent")):
        os.symlink(os.path.abspath(agent_bin), os.path.join(bindir, "medic-agent"))
    env["PATH"] = bindir + ":/usr/bin:/bin"
    cmd = container.get("command") or [os.path.abspath(agent_bin)]
    proc = Proc(cmd, env, os.path.join(tmp, f"agent-{label}.log"))
    try:
        got, err = wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        if err:
            return f"{label}: medic-agent {err}"
        status, body = got
        try:
            h = json.loads(body)
        except ValueError:
            return f"{label}: /healthz is not JSON: {body[:200]}"
        if h.get("cluster") != want_cluster or h.get("mode") != want_mode:
            return f"{label}: /healthz says cluster {h.get('cluster')!r}, mode {h.get('mode')!r}; expected {want_cluster!r}, {want_mode!r}"
        return None
    finally:
        proc.stop()


def check_agent_binary(agent_bin, wrapper, cases, tmp):
    checks = []
    for label, objs in wrapper.items():
        sts = M.kind(objs, "StatefulSet")[0]
        c = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "medic-agent"][0]
        checks.append((f"sidecar ({label}) as pod kafka-2", c, "kafka-2", "prod", "sidecar (broker 2)"))
    for label, (objs, case) in cases.items():
        for d in M.kind(objs, "Deployment"):
            if d["metadata"]["name"].endswith("-agent"):
                c = d["spec"]["template"]["spec"]["containers"][0]
                checks.append((f"cluster mode ({label})", c, "agent-0", case["cluster"], "cluster"))
        for cp in M.kind(objs, "ClusterPolicy"):
            c = cp["spec"]["rules"][0]["mutate"]["patchStrategicMerge"]["spec"]["containers"][0]
            checks.append((f"Strimzi Kyverno sidecar ({label}) as pod prod-brokers-7", c, "prod-brokers-7", case["cluster"], "sidecar (broker 7)"))
    for label, c, pod, cl, mode in checks:
        work = tempfile.mkdtemp(dir=tmp)
        err = run_agent(agent_bin, c, work, pod, cl, mode, re.sub(r"\W+", "-", label))
        record(f"medic-agent runs the rendered {label}: cluster {cl!r}, {mode!r}", err is None, err or "")


def check_actuator_binary(act_bin, cases, tmp):
    for label, (objs, case) in cases.items():
        if not case["actuator"]:
            continue
        problems = run_actuator(act_bin, objs, case, tmp)
        record(f"medic-actuator starts with the rendered config and policies ({label}) and enforces its token", not problems, "\n".join(problems))


def run_actuator(act_bin, objs, case, tmp, edit_config=None):
    """Start the real actuator with the rendered config, policies, token and environment (file
    paths moved into a temporary directory, the listener on loopback); check /healthz, the
    policy count in /metrics, and that the webhook wants the token. Returns the problems."""
    work = tempfile.mkdtemp(dir=tmp)
    cm = [c for c in M.kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-actuator")][0]
    secret = ([s for s in M.kind(objs, "Secret") if s["metadata"]["name"].endswith("-actuator") and s["metadata"]["namespace"] == case["namespace"]] or [None])[0]
    config = yaml.safe_load(cm["data"]["actuator.yaml"])
    if case["existing_secret"]:
        token = "token-of-the-existing-secret"  # the Secret is the operator's; any token will do
    else:
        token = base64.b64decode(secret["data"][case["token_key"]]).decode()
    with open(os.path.join(work, "policies.yaml"), "w") as f:
        f.write(cm["data"]["policies.yaml"])
    with open(os.path.join(work, "token"), "w") as f:
        f.write(token)
    port = free_port()
    # Where the pod mounts files, the test uses its own directory; the rest is as rendered.
    config["listen"] = f"127.0.0.1:{port}"
    config["policies_file"] = os.path.join(work, "policies.yaml")
    config["auth"]["bearer_token_file"] = os.path.join(work, "token")
    config["audit"]["path"] = os.path.join(work, "audit", "audit.log")
    config.setdefault("kubernetes", {})["api_url"] = f"http://127.0.0.1:{free_port()}"
    scheme = "http"
    if "tls" in config:
        crt, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", crt])
        config["tls"] = {"cert_file": crt, "key_file": key}
        scheme = "https"
    rendered_le = copy.deepcopy(config.get("leader_election") or {})
    if edit_config:
        edit_config(config)
    with open(os.path.join(work, "actuator.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    # The container's own environment too (RUST_LOG, extraEnv): the actuator rejects an
    # unknown MEDIC_ACTUATOR_* variable.
    dep = [d for d in M.kind(objs, "Deployment") if d["metadata"]["name"].endswith("-actuator")][0]
    pod_name = "medic-actuator-test-7d9f8-x2k4q"
    fields = {"metadata.name": pod_name, "metadata.namespace": case["namespace"]}
    env = {}
    for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if ref not in fields:
                return [f"cannot resolve the actuator's environment variable {e}"]
            env[e["name"]] = fields[ref]  # what the kubelet's downward API gives the pod
    env.update({"PATH": "/usr/bin:/bin", "HOSTNAME": pod_name})
    proc = Proc([act_bin, "--config", os.path.join(work, "actuator.yaml")], env, os.path.join(work, "actuator.log"))
    problems = []
    try:
        if scheme == "https":
            import ssl
            ctx = ssl.create_default_context(cafile=os.path.join(work, "tls.crt"))
            urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx)))
        got, err = wait_http(f"{scheme}://127.0.0.1:{port}/healthz", proc)
        if err:
            problems.append(f"medic-actuator {err}")
        else:
            # The election as the binary understood the rendered settings and the pod's
            # environment (the API server is unreachable here: it runs, but never leads).
            try:
                leader = json.loads(got[1]).get("leader") or {}
            except ValueError:
                leader = {"unparsed": got[1][:200]}
            le = rendered_le
            want = {"enabled": True, "identity": pod_name, "lease": f"{le.get('namespace') or case['namespace']}/{le.get('lease_name')}"} \
                if le.get("enabled") else {"enabled": False}
            if {k: leader.get(k) for k in want} != want:
                problems.append(f"/healthz leader is {leader}, expected {want}")
            st, body = http_get(f"{scheme}://127.0.0.1:{port}/metrics")
            m = re.search(r"^medic_actuator_policies(?:\{[^}]*\})? (\S+)", body, re.M)
            if not m or float(m.group(1)) != len(case["policies"]):
                problems.append(f"/metrics medic_actuator_policies is {m.group(1) if m else 'absent'}, expected {len(case['policies'])}")
            st, body = http_post(f"{scheme}://127.0.0.1:{port}/api/v1/alerts", "{}")
            if st != 401:
                problems.append(f"POST /api/v1/alerts without the token answered {st}, expected 401")
            st, body = http_post(f"{scheme}://127.0.0.1:{port}/api/v1/alerts", "{}", {"Authorization": f"Bearer {token}"})
            if st != 400:
                problems.append(f"POST /api/v1/alerts with the chart's token and a bad body answered {st} ({body[:120]}), expected 400")
    finally:
        proc.stop()
        urllib.request.install_opener(urllib.request.build_opener())
    return problems


# ---------------------------------------------------------------- values that must fail

FAILURES = [
    ("replicas 2 with persistence", ["actuator.replicas=2", "actuator.persistence.enabled=true"], "actuator.replicas > 1 needs actuator.persistence.enabled=false"),
    ("persistence with the default replicas", ["actuator.persistence.enabled=true"], "actuator.replicas > 1 needs actuator.persistence.enabled=false"),
    ("replicas 2 without leader election", ["actuator.config.leader_election.enabled=false"], "actuator.replicas > 1 needs actuator.config.leader_election.enabled=true"),
    ("one Lease identity for every replica", ["actuator.config.leader_election.identity=medic-0"], "actuator.config.leader_election.identity cannot be set with actuator.replicas > 1"),
    ("broker entry without a cluster", ["actuator.brokers[0].backend=log-only"], "actuator.brokers[0]: cluster is required"),
    ("replicas 0", ["actuator.replicas=0"], "actuator.replicas must be at least 1"),
    ("policy without a deployment name", ["actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g", "actuator.policies[0].deployment.namespace=shop"], "actuator.policies[0] (prod/g): deployment needs both namespace and name"),
    ("policy without a deployment", ["actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g"], "actuator.policies[0]: cluster, consumergroup and deployment"),
    ("PodMonitor without a selector", ["agent.sidecar.podMonitor.enabled=true"], "agent.sidecar.podMonitor.selector is required"),
    ("cluster mode without bootstrap servers", ["agent.clusterMode.enabled=true"], "agent.clusterMode.bootstrapServers is required"),
    ("existing secret and an Alertmanager copy", ["actuator.auth.existingSecret=s", "actuator.auth.alertmanagerSecret.namespace=monitoring"], "cannot be used with actuator.auth.existingSecret"),
    ("regex with a comma", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.groupAllow[0]=a{1\\,3}"], "agent.groupAllow: \"a{1,3}\" contains a comma"),
    ("unknown security protocol", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=tls"], "agent.kafka.securityProtocol must be plaintext, ssl, sasl_plaintext or sasl_ssl"),
    ("SASL without a password Secret", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=sasl_plaintext", "agent.kafka.sasl.mechanism=PLAIN", "agent.kafka.sasl.username=u"], "agent.kafka.sasl.passwordSecret.name is required"),
    ("Strimzi policy without a cluster name", ["agent.sidecar.strimzi.kyvernoPolicy=true"], "agent.sidecar.strimzi.clusterName is required"),
    ("unknown broker id source", ["agent.sidecar.strimzi.kyvernoPolicy=true", "agent.sidecar.strimzi.clusterName=c", "agent.sidecar.brokerId.source=env"], "agent.sidecar.brokerId.source must be podIndexLabel or hostnameSuffix"),
    ("unknown process source", ["agent.sidecar.strimzi.kyvernoPolicy=true", "agent.sidecar.strimzi.clusterName=c", "agent.sidecar.process.source=jmx"], "agent.sidecar.process.source must be cmdline, pid_file, cgroup or host"),
]


def check_failures():
    for label, sets, msg in FAILURES:
        rc, out, err, cmd = render(sets=sets)
        ok = rc != 0 and msg in err
        record(f"bad values fail clearly: {label}", ok, "" if ok else f"{cmd}: exit {rc}, stderr: {err.strip()[:400]!r}, expected a message containing {msg!r}")


# ---------------------------------------------------------------- self-test

def self_test(cases, wrapper, tmp):
    objs, case, notes, text = cases["ci/full-values.yaml"]
    token = case["token"]

    def find(objs, k, pred=lambda o: True):
        return [o for o in objs if o.get("kind") == k and pred(o)][0]

    def actuator_container(o):
        return find(o, "Deployment", lambda d: d["metadata"]["name"].endswith("-actuator"))["spec"]["template"]["spec"]["containers"][0]

    def policy_role(o):
        return find(o, "Role", lambda r: r["metadata"]["name"].endswith("-actuator"))

    def lease_role(o):
        return find(o, "Role", lambda r: r["metadata"]["name"].endswith(M.LEASE_ROLE_SUFFIX))

    def intents_role(o):
        return find(o, "Role", lambda r: r["metadata"]["name"].endswith(M.INTENTS_ROLE_SUFFIX))

    def rule_of(role, resource, verb):
        return [r for r in role["rules"] if resource in r["resources"] and verb in r["verbs"]][0]

    def drop(o, obj):
        o.remove(obj)

    def env_drop(o, name):
        c = actuator_container(o)
        c["env"] = [e for e in c["env"] if e["name"] != name]

    def actuator_cm(o):
        return find(o, "ConfigMap", lambda c: c["metadata"]["name"].endswith("-actuator"))

    def edit_config(o, fn):
        cm = actuator_cm(o)
        c = yaml.safe_load(cm["data"]["actuator.yaml"])
        fn(c)
        cm["data"]["actuator.yaml"] = yaml.safe_dump(c)

    breaks = [
        ("Role grants list", lambda o: policy_role(o)["rules"][0]["verbs"].append("list"), "grants verbs ['list']"),
        ("Role grants watch on HPAs", lambda o: policy_role(o)["rules"][2]["verbs"].append("watch"), "grants verbs ['watch'] on horizontalpodautoscalers"),
        ("list rule limited by resourceNames", lambda o: policy_role(o)["rules"][3].__setitem__("resourceNames", ["orders-consumer"]), "on a list rule"),
        ("Role grants pods", lambda o: policy_role(o)["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}), "grants 'pods'"),
        ("Role grants a wildcard", lambda o: policy_role(o)["rules"][1].__setitem__("verbs", ["*"]), "wildcard"),
        ("Role in a namespace no policy names", lambda o: o.append(dict(copy.deepcopy(policy_role(o)), metadata=dict(policy_role(o)["metadata"], namespace="kube-system"))), "expected exactly the policies' namespaces"),
        ("Role for a Deployment no policy names", lambda o: policy_role(o)["rules"][0]["resourceNames"].append("api-gateway"), "resourceNames"),
        ("ClusterRole without clusterWide", lambda o: o.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": dict(policy_role(o)["metadata"], namespace=None), "rules": policy_role(o)["rules"]}), "cluster-scoped RBAC rendered without clusterWide"),
        ("RoleBinding to the default ServiceAccount", lambda o: find(o, "RoleBinding")["subjects"][0].__setitem__("name", "default"), "subjects"),
        # Events in the policy namespaces: create only, by no name.
        ("Role grants delete on events", lambda o: rule_of(policy_role(o), "events", "create")["verbs"].append("delete"), "grants verbs ['delete'] on events"),
        ("Role grants patch on events", lambda o: rule_of(policy_role(o), "events", "create")["verbs"].append("patch"), "grants verbs ['patch'] on events"),
        ("Role without create on events", lambda o: policy_role(o)["rules"].remove(rule_of(policy_role(o), "events", "create")), "missing {('', 'events'): ['create']}"),
        ("events rule limited by resourceNames", lambda o: rule_of(policy_role(o), "events", "create").__setitem__("resourceNames", ["orders-processor"]), "on a create rule"),
        ("events granted in the release namespace", lambda o: lease_role(o)["rules"].append({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}), "grants 'events'"),
        # The Lease: create by no name, get and update on the one Lease, nothing else.
        ("Lease Role grants delete", lambda o: rule_of(lease_role(o), "leases", "update")["verbs"].append("delete"), "grants verbs ['delete'] on leases"),
        ("Lease Role grants list", lambda o: rule_of(lease_role(o), "leases", "create")["verbs"].append("list"), "grants verbs ['list'] on leases"),
        ("Lease Role grants patch", lambda o: rule_of(lease_role(o), "leases", "update")["verbs"].append("patch"), "grants verbs ['patch'] on leases"),
        ("Lease Role without update", lambda o: rule_of(lease_role(o), "leases", "update")["verbs"].remove("update"), "missing {('coordination.k8s.io', 'leases'): ['update']}"),
        ("Lease Role without create", lambda o: lease_role(o)["rules"].remove(rule_of(lease_role(o), "leases", "create")), "missing {('coordination.k8s.io', 'leases'): ['create']}"),
        ("Lease get/update on any Lease", lambda o: rule_of(lease_role(o), "leases", "get").pop("resourceNames"), "resourceNames None on leases, expected exactly"),
        ("Lease get/update on another Lease", lambda o: rule_of(lease_role(o), "leases", "get").__setitem__("resourceNames", ["kube-scheduler"]), "on leases, expected exactly"),
        ("Lease create limited by resourceNames", lambda o: rule_of(lease_role(o), "leases", "create").__setitem__("resourceNames", ["x"]), "on a create rule"),
        ("Lease Role grants configmaps", lambda o: rule_of(lease_role(o), "leases", "get")["resources"].append("configmaps"), "grants 'configmaps' in API group 'coordination.k8s.io'"),
        ("Lease Role in another namespace", lambda o: lease_role(o)["metadata"].__setitem__("namespace", "kube-system"), "expected the Lease's namespace"),
        ("Lease Role missing", lambda o: drop(o, lease_role(o)), "Lease Role(s) rendered, expected 1"),
        ("Lease RoleBinding missing", lambda o: drop(o, find(o, "RoleBinding", lambda b: b["metadata"]["name"].endswith(M.LEASE_ROLE_SUFFIX))), "no RoleBinding binds it"),
        ("Lease leases granted in a policy Role", lambda o: policy_role(o)["rules"].append({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}), "grants 'leases'"),
        # The intent ConfigMaps: create by no name, get and update on the brokers' ones only.
        ("intent Role grants delete", lambda o: rule_of(intents_role(o), "configmaps", "update")["verbs"].append("delete"), "grants verbs ['delete'] on configmaps"),
        ("intent Role grants list", lambda o: rule_of(intents_role(o), "configmaps", "create")["verbs"].append("list"), "grants verbs ['list'] on configmaps"),
        ("intent Role without get", lambda o: rule_of(intents_role(o), "configmaps", "get")["verbs"].remove("get"), "missing {('', 'configmaps'): ['get']}"),
        ("intent Role without create", lambda o: intents_role(o)["rules"].remove(rule_of(intents_role(o), "configmaps", "create")), "missing {('', 'configmaps'): ['create']}"),
        ("intent get/update on any ConfigMap", lambda o: rule_of(intents_role(o), "configmaps", "get").pop("resourceNames"), "resourceNames None on configmaps, expected exactly"),
        ("intent get/update on the actuator's own ConfigMap", lambda o: rule_of(intents_role(o), "configmaps", "get")["resourceNames"].append(actuator_cm(o)["metadata"]["name"]), "on configmaps, expected exactly"),
        ("intent name computed unlike the actuator", lambda o: rule_of(intents_role(o), "configmaps", "get")["resourceNames"].__setitem__(-1, "medic-actuator-intent-prod-eu1"), "on configmaps, expected exactly"),
        ("intent create limited by resourceNames", lambda o: rule_of(intents_role(o), "configmaps", "create").__setitem__("resourceNames", ["medic-actuator-intent-prod"]), "on a create rule"),
        ("intent Role grants secrets", lambda o: rule_of(intents_role(o), "configmaps", "get")["resources"].append("secrets"), "grants 'secrets'"),
        ("intent Role missing", lambda o: drop(o, intents_role(o)), "intent ConfigMap Role(s) rendered, expected 1"),
        ("configmaps granted in a policy Role", lambda o: policy_role(o)["rules"].append({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}), "grants 'configmaps'"),
        # The pod and its config.
        ("POD_NAME not from the downward API", lambda o: env_drop(o, "POD_NAME"), "POD_NAME is None, expected the downward API fieldRef metadata.name"),
        ("POD_NAMESPACE from the wrong field", lambda o: [e for e in actuator_container(o)["env"] if e["name"] == "POD_NAMESPACE"][0]["valueFrom"]["fieldRef"].__setitem__("fieldPath", "spec.serviceAccountName"), "expected the downward API fieldRef metadata.namespace"),
        ("leader election off in the config", lambda o: edit_config(o, lambda c: c["leader_election"].__setitem__("enabled", False)), "replicas without leader election"),
        ("config Lease name unlike the RBAC's", lambda o: edit_config(o, lambda c: c["leader_election"].__setitem__("lease_name", "medic-actuator")), "config leader_election.lease_name is 'medic-actuator'"),
        ("PodDisruptionBudget maxUnavailable 2", lambda o: find(o, "PodDisruptionBudget")["spec"].__setitem__("maxUnavailable", 2), "expected maxUnavailable 1 only"),
        ("PodDisruptionBudget missing", lambda o: drop(o, find(o, "PodDisruptionBudget")), "PodDisruptionBudget rendered: False"),
        ("token in a ConfigMap", lambda o: find(o, "ConfigMap")["data"].__setitem__("token", token), "appears in plain text in a ConfigMap"),
        ("base64 token in a ConfigMap annotation", lambda o: find(o, "ConfigMap")["metadata"].__setitem__("annotations", {"t": base64.b64encode(token.encode()).decode()}), "appears base64-encoded in a ConfigMap"),
        ("token as a pod env var", lambda o: actuator_container(o)["env"].append({"name": "TOKEN", "value": token}), "appears in plain text in a non-Secret object"),
        ("writable root filesystem", lambda o: actuator_container(o)["securityContext"].__setitem__("readOnlyRootFilesystem", False), "readOnlyRootFilesystem is not true"),
        ("capabilities not dropped", lambda o: actuator_container(o)["securityContext"]["capabilities"].__setitem__("drop", []), "capabilities are not exactly drop [ALL]"),
        ("privilege escalation", lambda o: actuator_container(o)["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation is not false"),
        ("liveness on /healthz", lambda o: actuator_container(o).__setitem__("livenessProbe", {"httpGet": {"path": "/healthz", "port": "http"}}), "livenessProbe is not a tcpSocket probe"),
        ("a rule dropped from the PrometheusRule", lambda o: find(o, "PrometheusRule")["spec"]["groups"][0]["rules"].pop(), "PrometheusRule groups differ"),
        ("a dashboard edited", lambda o: [cm for cm in M.kind(o, "ConfigMap") if "dashboard" in cm["metadata"]["name"]][0]["data"].update(
            {k: v.replace("kafka-medic", "kafka-medik", 1) for k, v in [cm for cm in M.kind(o, "ConfigMap") if "dashboard" in cm["metadata"]["name"]][0]["data"].items()}), "not byte-identical"),
        ("policies changed in the ConfigMap", lambda o: find(o, "ConfigMap", lambda c: c["metadata"]["name"].endswith("-actuator"))["data"].__setitem__("policies.yaml", "policies: []\n"), "policies.yaml is"),
        ("PodMonitor without honorLabels", lambda o: find(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0].__setitem__("honorLabels", False), "honorLabels is not true"),
        ("PodMonitor broker regex takes the first number", lambda o: find(o, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["relabelings"][2].__setitem__("regex", "[^0-9]*([0-9]+).*"), "expected '3'"),
        ("Kyverno sidecar without a shared process namespace", lambda o: find(o, "ClusterPolicy")["spec"]["rules"][0]["mutate"]["patchStrategicMerge"]["spec"].pop("shareProcessNamespace"), "shareProcessNamespace"),
        ("log dir mounted writable", lambda o: find(o, "ClusterPolicy")["spec"]["rules"][0]["mutate"]["patchStrategicMerge"]["spec"]["containers"][0]["volumeMounts"][0].__setitem__("readOnly", False), "is not mounted read-only"),
    ]
    sts_breaks = [
        ("broker id not from the pod index", lambda o: [e for e in find(o, "StatefulSet")["spec"]["template"]["spec"]["containers"][1]["env"] if e["name"] == "MEDIC_AGENT_BROKER_ID"][0].__setitem__("valueFrom", {"fieldRef": {"fieldPath": "metadata.name"}}), "is not the pod-index label"),
        ("sidecar mount without a pod volume", lambda o: find(o, "StatefulSet")["spec"]["template"]["spec"]["containers"][1]["volumeMounts"][0].__setitem__("name", "logs"), "has no volume in the pod"),
        ("PodMonitor selecting other pods", lambda o: find(o, "PodMonitor")["spec"]["selector"]["matchLabels"].__setitem__("app.kubernetes.io/name", "zookeeper"), "does not select the broker pods"),
    ]
    base = M.check_release(objs, case, notes)
    if base:
        record("self-test baseline (full values) passes", False, "\n".join(base))
        return
    for label, mutate, expect in breaks:
        o = copy.deepcopy(objs)
        mutate(o)
        got = M.check_release(o, case, notes)
        hit = [p for p in got if expect in p]
        record(f"self-test: {label} is reported", bool(hit), hit[0] if hit else f"expected {expect!r}, got {got}")
    wcase = {"namespace": "kafka", "actuator": False, "rules": False, "dashboards": False, "pod_monitor": True,
             "cluster": "prod", "sidecars": 1, "broker_id_source": "podIndexLabel",
             "log_dirs": load_yaml(os.path.join(WRAPPER, "values.yaml"))["kafka-medic"]["agent"]["sidecar"]["logDirs"]}
    wobjs = wrapper.get("podIndexLabel")
    if wobjs:
        for label, mutate, expect in sts_breaks:
            o = copy.deepcopy(wobjs)
            mutate(o)
            got = M.check_release(o, wcase)
            hit = [p for p in got if expect in p]
            record(f"self-test: {label} is reported", bool(hit), hit[0] if hit else f"expected {expect!r}, got {got}")
    # kubernetes-validate --strict must reject what the API server would reject.
    bad = text.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true", 1)
    rc, problems = validate(bad, K8S_VERSIONS[-1])
    record("self-test: kubernetes-validate --strict rejects an unknown field", rc != 0, f"exit {rc}" if rc == 0 else "")
    # The notes check must see a change to the example's routes.
    changed = notes.replace("group_interval: 1m", "group_interval: 2m", 1)
    np = check_notes(changed, objs, case)
    record("self-test: a changed route in the notes is reported", any("differs from rules/alertmanager.example.yml" in p for p in np), str(np))
    wrong_url = notes.replace(".svc:8080/api/v1/alerts", ".svc:9095/api/v1/alerts")
    np = check_notes(wrong_url, objs, case)
    record("self-test: a wrong webhook URL in the notes is reported", any("webhook url" in p for p in np), str(np))
    np = check_notes(notes + f"\n{token}\n", objs, case) + M.check_release(objs, case, notes + token)
    record("self-test: the token printed in the notes is reported", any("NOTES.txt: prints the webhook token" in p for p in np), str(np))


def self_test_binaries(agent_bin, act_bin, wrapper, cases, tmp):
    """The real-binary checks must fail when the rendered settings are wrong."""
    if agent_bin and wrapper.get("podIndexLabel"):
        sts = M.kind(wrapper["podIndexLabel"], "StatefulSet")[0]
        c = copy.deepcopy([c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "medic-agent"][0])
        for e in c["env"]:
            if e["name"] == "MEDIC_AGENT_SECURITY_PROTOCOL":
                e["value"] = "tls"
        err = run_agent(agent_bin, c, tempfile.mkdtemp(dir=tmp), "kafka-2", "prod", "sidecar (broker 2)", "bad-protocol")
        record("self-test: medic-agent rejecting a rendered setting is reported", bool(err and "MEDIC_AGENT_SECURITY_PROTOCOL" in err), err or "not reported")
        c = copy.deepcopy([c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "medic-agent"][0])
        err = run_agent(agent_bin, c, tempfile.mkdtemp(dir=tmp), "kafka-2", "prod", "sidecar (broker 1)", "wrong-broker")
        record("self-test: a sidecar that reports another broker id is reported", bool(err and "sidecar (broker 2)" in err), err or "not reported")
    if act_bin and "ci/minimal-values.yaml" in cases:
        objs, case = cases["ci/minimal-values.yaml"][:2]
        problems = run_actuator(act_bin, objs, case, tmp, edit_config=lambda c: c.__setitem__("reevaluate_every", "30s"))
        record("self-test: medic-actuator rejecting a rendered config key is reported", any("exited with" in p and "reevaluate_every" in p for p in problems), str(problems)[:300])
        problems = run_actuator(act_bin, objs, case, tmp, edit_config=lambda c: c["leader_election"].__setitem__("renew_deadline", c["leader_election"]["lease_duration"]))
        record("self-test: medic-actuator rejecting the Lease timings (renew_deadline = lease_duration) is reported",
               any("exited with" in p and "leader_election.renew_deadline" in p for p in problems), str(problems)[:300])
        problems = run_actuator(act_bin, objs, case, tmp, edit_config=lambda c: c["leader_election"].__setitem__("lease_name", "another-lease"))
        record("self-test: medic-actuator electing on another Lease than the rendered one is reported",
               any("/healthz leader is" in p and "another-lease" in p for p in problems), str(problems)[:300])


def binary(name):
    path = os.path.join(ROOT, "target", "debug", name)
    return path if os.access(path, os.X_OK) else None


def main(argv):
    tmp = tempfile.mkdtemp(prefix="kafka-medic-helm-")
    try:
        print("--- links and versions")
        check_links()
        check_app_version()
        print("--- render, validate, check objects and notes")
        cases = {}
        for label, values in [("default values", [])] + [(os.path.relpath(f, CHART), [f]) for f in ci_files()]:
            got = check_case(label, values)
            if got:
                cases[label] = got
        print("--- package")
        check_package(os.path.join(tmp, "pkg"))
        print("--- the sidecar in a broker chart")
        wrapper = check_wrapper(tmp)
        print("--- bad values")
        check_failures()
        print("--- real binaries")
        agent_bin, act_bin = argv.get("agent"), argv.get("actuator")
        if agent_bin:
            check_agent_binary(agent_bin, wrapper, {k: (v[0], v[1]) for k, v in cases.items()}, tmp)
        else:
            record("medic-agent binary", False, "no medic-agent binary given (--agent PATH)")
        if act_bin:
            check_actuator_binary(act_bin, {k: (v[0], v[1]) for k, v in cases.items()}, tmp)
        else:
            record("medic-actuator binary", False, "no medic-actuator binary given (--actuator PATH)")
        print("--- self-test: the checks fail on broken input")
        self_test_links(tmp)
        self_test_binaries(agent_bin, act_bin, wrapper, cases, tmp)
        if "ci/full-values.yaml" in cases:
            self_test(cases, wrapper, tmp)
        else:
            record("self-test", False, "ci/full-values.yaml did not render")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r for r in results if not r[1]]
    print(f"\ncheck_chart.py: {len(results) - len(failed)} of {len(results)} checks passed")
    for step, _, detail in failed:
        print(f"  FAILED: {step}")
    return 1 if failed else 0


def parse_args(argv):
    out = {}
    for flag in ("agent", "actuator"):
        if f"--{flag}" in argv:
            out[flag] = argv[argv.index(f"--{flag}") + 1]
    return out


if __name__ == "__main__":
    sys.exit(main(parse_args(sys.argv[1:])))
