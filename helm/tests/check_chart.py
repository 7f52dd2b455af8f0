#!/usr/bin/env python3
"""Renders helm/kafka-medic in every configuration and checks the result. Run by
scripts/test-helm.sh (which puts helm, kubernetes-validate, promtool and amtool on PATH and
points HELM_*_HOME at a temporary directory).

Steps (each prints ok/FAIL; the script exits 1 if any failed):
  links       files/kafka-medic.rules.yml, files/alertmanager.example.yml and files/dashboards
              are symlinks into rules/ and dashboards/ (not copies that could drift)
  render      `helm template` with the default values, each ci/*-values.yaml, and the values of
              the KEDA examples (examples/*-values.yaml) as the release and namespace their
              ScaledObjects name
  validate    the output passes `kubernetes-validate --strict` for Kubernetes 1.25 and 1.37
  objects     manifests.check_release: RBAC exactly get/patch on deployments[/scale] in the
              policies' namespaces for their Deployments, list on HPAs and ScaledObjects and
              create on Events there; in the release namespace create + get/update (by name) on
              the one Lease with leader election, and create + get/update (by name) on the
              intent ConfigMaps of actuator.brokers; get + patch on HPAs and ScaledObjects
              (by no name) exactly in the namespaces of policies with on_autoscaler:
              raise_min_replicas (the ClusterRole: when any policy has it); no Deployment of a
              scaler: keda policy; nothing else, no verb more or less; the
              token only in Secrets; secure securityContexts, resources and probes; POD_NAME and
              POD_NAMESPACE from the downward API; leader election and the Lease name in the
              config; the PDB (maxUnavailable 1); config and policies; with actuator.keda the
              config keda.listen on the container port grpc, the Service port grpc (appProtocol
              grpc), keda.tls.* on the read-only mount of exactly the Secret's needed keys, and
              none of it without; PrometheusRule equal
              to rules/; dashboards byte-identical; monitors; sidecar; cluster-mode agent (a
              StatefulSet: replicas = shards = MEDIC_AGENT_SHARD_COUNT, POD_NAME from the
              downward API and no fixed shard index, a headless governing Service); images
  notes       NOTES.txt (helm install --dry-run=client): its Alertmanager config equals
              rules/alertmanager.example.yml but for this release's URL (checked against the
              rendered Service) and token file, passes `amtool check-config`, and shows no token;
              the External Scaler address equals the Service's grpc port
  examples    helm lint --strict with each example's values; each examples/scaledobject-*.yaml:
              KEDA's CRD fields checked structurally (keda_checks.py; kubernetes-validate has no
              KEDA schema), the HPA behavior through kubernetes-validate, trigger type and
              metadata keys, scalerAddress = the rendered Service's grpc port for the release
              and namespace of its `Written for:` line, enableTLS and TriggerAuthentication as the
              TLS values need, the group's policy (scaler: keda, same Deployment, metric it can
              serve), the commented kafka trigger, and the cert-manager Certificates
  package     `helm package` stores the linked files' contents; a packaged chart renders the same
  sidecar     helm/tests/sidecar-chart (a broker StatefulSet including kafka-medic.agentSidecar)
              with each broker-id source and with SASL: the sidecar as included, and validated
  binaries    the real medic-agent runs with the rendered sidecar and cluster-mode settings and
              reports the intended cluster, mode and broker id (or shard, from the pod name) on
              /healthz; the real
              medic-actuator starts with the rendered config, policies and downward-API
              environment, reports the intended Lease and identity on /healthz, and enforces
              the token; with the External Scaler, a minimal gRPC client (keda_checks.py) gets
              GetMetricSpec for each scaler: keda policy and each example trigger over the
              rendered TLS settings (certificates made like cert-manager's CA issuer would), and
              with a client CA a client without a certificate is refused
  failures    bad values stop `helm template` with a message naming the value
  self-test   each object check reports a deliberately broken manifest; kubernetes-validate
              rejects an unknown field; the notes check reports a changed route; each example
              check reports a broken ScaledObject, trigger or TLS wiring; the gRPC probe reports
              a refused call, a wrong target and a server taking clients without a certificate
"""
import base64
import copy
import json
import os
import re
import shutil
import socket
import ssl
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
import keda_checks as K  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
CHART = os.path.join(ROOT, "helm", "kafka-medic")
WRAPPER = os.path.join(HERE, "sidecar-chart")
EXAMPLES = os.path.join(CHART, "examples")
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
        "keda": {"enabled": bool(a["keda"]["enabled"]), "port": a["keda"]["port"],
                 "tls_secret": a["keda"]["tls"]["existingSecret"],
                 "require_client_cert": bool(a["keda"]["tls"]["requireClientCert"])},
        "persistence": a["persistence"]["enabled"],
        "alertmanager_secret": a["auth"]["alertmanagerSecret"] if a["auth"]["alertmanagerSecret"]["namespace"] else None,
        "cluster_mode": ag["clusterMode"]["enabled"],
        "shards": ag["clusterMode"]["shards"],
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
    # KEDA's scalerAddress: this release's Service and its grpc port.
    grpc = [pt for pt in s["spec"]["ports"] if pt.get("name") == "grpc"]
    lines = re.findall(r"^External Scaler \(KEDA\): (\S+)", notes, re.M)
    if case["keda"]["enabled"]:
        want = f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc:{grpc[0]['port'] if grpc else '?'}"
        if lines != [want]:
            p.append(f"NOTES.txt External Scaler address {lines}, expected this release's Service port grpc {want}")
        if f'scalerAddress: "{want}"' not in notes:
            p.append(f"NOTES.txt trigger example does not carry scalerAddress {want}")
        if ('enableTLS: "true"' in notes) != bool(case["keda"]["tls_secret"]):
            p.append(f"NOTES.txt trigger example: enableTLS shown {'enableTLS' in notes}, TLS {bool(case['keda']['tls_secret'])}")
    elif lines:
        p.append(f"NOTES.txt prints an External Scaler address {lines} with actuator.keda.enabled off")
    return p


# ---------------------------------------------------------------- cases

def ci_files():
    d = os.path.join(CHART, "ci")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith("-values.yaml"))


def check_case(label, values, release=RELEASE, ns=NAMESPACE):
    rc, out, err, cmd = render(values=values, release=release, ns=ns)
    if rc != 0:
        record(f"render {label}", False, f"{cmd}: {err}")
        return None
    objs = M.load_all(out)
    record(f"render {label}", True, f"{len(objs)} objects")
    for ver in K8S_VERSIONS:
        vrc, problems = validate(out, ver)
        record(f"kubernetes-validate --strict -k {ver} {label}", vrc == 0 and not problems, "\n".join(problems))
    case = case_for(values, ns)
    notes, err = notes_of(values, release, ns)
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
    images = [c["image"] for d in M.cluster_agents(objs) for c in d["spec"]["template"]["spec"]["containers"]]
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
            if ref == "metadata.name":
                env[e["name"]] = pod_name
                continue
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
        for d in M.cluster_agents(objs):
            c = d["spec"]["template"]["spec"]["containers"][0]
            # The last shard, as its pod: the index comes from the pod name's ordinal.
            n = case["shards"]
            pod = f"{d['metadata']['name']}-{n - 1}"
            mode = "cluster" if n == 1 else f"cluster (shard_index {n - 1}, shard_count {n})"
            checks.append((f"cluster mode ({label}) as pod {pod}", c, pod, case["cluster"], mode))
        for cp in M.kind(objs, "ClusterPolicy"):
            c = cp["spec"]["rules"][0]["mutate"]["patchStrategicMerge"]["spec"]["containers"][0]
            checks.append((f"Strimzi Kyverno sidecar ({label}) as pod prod-brokers-7", c, "prod-brokers-7", case["cluster"], "sidecar (broker 7)"))
    for label, c, pod, cl, mode in checks:
        work = tempfile.mkdtemp(dir=tmp)
        err = run_agent(agent_bin, c, work, pod, cl, mode, re.sub(r"\W+", "-", label))
        record(f"medic-agent runs the rendered {label}: cluster {cl!r}, {mode!r}", err is None, err or "")


def check_actuator_binary(act_bin, cases, tmp, keda_requests=None):
    for label, (objs, case) in cases.items():
        if not case["actuator"]:
            continue
        requests = (keda_requests or {}).get(label)
        problems = run_actuator(act_bin, objs, case, tmp, keda_requests=requests)
        what = "and enforces its token"
        if case["keda"]["enabled"]:
            n = len(requests if requests is not None else keda_requests_of(case))
            tls = "mutual TLS" if case["keda"]["require_client_cert"] else "TLS" if case["keda"]["tls_secret"] else "h2c"
            what += f"; its External Scaler ({tls}) answers {n} GetMetricSpec call(s) as the policies say"
        record(f"medic-actuator starts with the rendered config and policies ({label}) {what}", not problems, "\n".join(problems))


# ---------------------------------------------------------------- the KEDA examples

def example_files():
    return sorted(os.path.join(EXAMPLES, f) for f in os.listdir(EXAMPLES) if f.startswith("scaledobject-") and f.endswith(".yaml"))


def example_renders():
    """{values file: (release, namespace)} of the examples' `Written for:` lines, and
    [(example file, values file, release, namespace)] (None for a file without that line)."""
    renders, files = {}, []
    for f in example_files():
        with open(f, encoding="utf-8") as fh:
            wf = K.written_for(fh.read())
        if not wf:
            files.append((f, None, None, None))
            continue
        release, ns, rel_values = wf
        values = os.path.join(CHART, rel_values)
        renders[values] = (release, ns)
        files.append((f, values, release, ns))
    return renders, files


def example_label(values):
    return os.path.relpath(values, CHART)


def lint_examples(renders):
    for values in sorted(renders):
        rc, out, err = run(["helm", "lint", "--strict", CHART, "-f", values])
        record(f"helm lint --strict -f {example_label(values)}", rc == 0, helm_stderr(out + err)[-600:] if rc else "")


def example_check(path, cases, label_of):
    """The problems of one example file against its rendering, and its GetMetricSpec requests."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    wf = K.written_for(text)
    if not wf:
        return [f"{os.path.basename(path)}: no `# Written for: helm install <release> helm/kafka-medic -n <namespace> -f helm/kafka-medic/examples/<values>` line"], [], None
    release, ns, rel_values = wf
    label = label_of(os.path.join(CHART, rel_values))
    if label not in cases:
        return [f"{os.path.basename(path)}: its rendering ({rel_values}) failed"], [], None
    objs, case = cases[label][:2]
    docs = [d for d in yaml.safe_load_all(text) if d]
    return K.example_problems(docs, text, objs, case["values"], release, ns, os.path.basename(path)), docs, label


def example_requests(docs, case):
    """GetMetricSpec as KEDA would send it for each external trigger of the example: its
    ScaledObject's name and namespace and the trigger's metadata exactly as written."""
    pols = {(p["cluster"], p["consumergroup"]): p for p in case["policies"]}
    out = []
    for so in (d for d in docs if d.get("kind") == "ScaledObject"):
        for t in so["spec"]["triggers"]:
            md = t.get("metadata") or {}
            pol = pols.get((md.get("cluster"), md.get("consumergroup")))
            if t.get("type") in K.EXTERNAL_TYPES and pol:
                out.append((f"ScaledObject {so['metadata']['namespace']}/{so['metadata']['name']}", so["metadata"]["name"],
                            so["metadata"]["namespace"], md, pol, md.get("metric", "lag")))
    return out


def check_examples(files, cases):
    """Each example ScaledObject: its structure, and its consistency with the rendering it names;
    the HPA behaviour it sets through kubernetes-validate. Returns {case label: GetMetricSpec requests}."""
    requests = {}
    if not files:
        record("examples: ScaledObject files", False, f"no scaledobject-*.yaml in {EXAMPLES}")
    for path, values, release, ns in files:
        name = os.path.basename(path)
        problems, docs, label = example_check(path, cases, example_label)
        record(f"example {name}: KEDA fields, trigger, scalerAddress and TLS match release {release} in {ns} ({example_label(values) if values else '-'})",
               not problems, "\n".join(problems))
        for so in (d for d in docs if d.get("kind") == "ScaledObject"):
            hpa = K.hpa_for_behavior(so)
            if hpa is not None:
                vrc, vp = validate(yaml.safe_dump(hpa), K8S_VERSIONS[-1])
                record(f"example {name}: the ScaledObject's HPA behavior passes kubernetes-validate --strict (in a HorizontalPodAutoscaler)", vrc == 0 and not vp, "\n".join(vp))
        if label:
            requests.setdefault(label, []).extend(example_requests(docs, cases[label][1]))
    return requests


def make_pki(work, host):
    """A CA, a server certificate for `host` (and 127.0.0.1) and a client certificate, both
    signed by the CA, as cert-manager's CA issuer would make them. Returns their paths."""
    f = {n: os.path.join(work, n) for n in ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")}
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kafka-medic-test-ca",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", f["ca.key"], "-out", f["ca.crt"]])
    for who, subj, ext in (("server", f"/CN={host}", f"subjectAltName=DNS:{host},IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                           ("client", "/CN=keda-operator", "extendedKeyUsage=clientAuth")):
        extfile = os.path.join(work, f"{who}.ext")
        with open(extfile, "w") as fh:
            fh.write(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}\n")
        csr = os.path.join(work, f"{who}.csr")
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", f[f"{who}.key"], "-out", csr])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", f["ca.crt"], "-CAkey", f["ca.key"], "-set_serial", str(int(time.time() * 1000) + len(who)),
             "-days", "1", "-extfile", extfile, "-out", f[f"{who}.crt"]])
    return f


def keda_requests_of(case):
    """One GetMetricSpec per policy with scaler: keda (metric lag, and lag_seconds when the policy
    has lag_seconds_per_replica): (label, ScaledObject name, namespace, trigger metadata, policy, metric)."""
    out = []
    for pol in case["policies"]:
        if (pol.get("scaler") or "actuator") != "keda":
            continue
        for metric in ["lag"] + (["lag_seconds"] if pol.get("lag_seconds_per_replica") else []):
            md = {"cluster": pol["cluster"], "consumergroup": pol["consumergroup"], "metric": metric}
            out.append((f"{pol['cluster']}/{pol['consumergroup']} metric {metric}", pol["deployment"]["name"], pol["deployment"]["namespace"], md, pol, metric))
    return out


def keda_probe(rendered_tls, objs, port, pki, requests):
    """Ask the running actuator's External Scaler for each request's metric spec, as KEDA would
    with the rendered settings (rendered_tls: the chart's keda.tls; TLS with the CA and, for
    mutual TLS, the client certificate); with a rendered client CA, a client without a
    certificate must be refused. Returns the problems."""
    problems = []
    svc = [s for s in M.kind(objs, "Service") if s["metadata"]["name"].endswith("-actuator")][0]
    grpc = [pt for pt in svc["spec"]["ports"] if pt.get("name") == "grpc"]
    authority = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc:{grpc[0]['port'] if grpc else 0}"
    kt = rendered_tls or {}

    def ctx(with_client_cert=True):
        if not kt:
            return None
        c = ssl.create_default_context(cafile=pki["ca.crt"])
        if with_client_cert and kt.get("client_ca_file"):
            c.load_cert_chain(pki["client.crt"], pki["client.key"])
        return c

    method = "/externalscaler.ExternalScaler/GetMetricSpec"
    for label, name, namespace, md, pol, metric in requests:
        msg, note = K.grpc_unary("127.0.0.1", port, method, K.scaled_object_ref(name, namespace, md), authority, tls=ctx())
        if msg is None:
            problems.append(f"External Scaler GetMetricSpec for {label} ({md}) got no answer: {note}")
            continue
        got, want = K.metric_specs(msg), [K.expected_metric_spec(pol, metric)]
        if got != want:
            problems.append(f"External Scaler GetMetricSpec for {label} answered {got}, expected {want}")
    if requests and kt.get("cert_file") and kt.get("client_ca_file"):
        label, name, namespace, md, pol, metric = requests[0]
        msg, note = K.grpc_unary("127.0.0.1", port, method, K.scaled_object_ref(name, namespace, md), authority, tls=ctx(False))
        if msg is not None:
            problems.append("External Scaler with a client CA answered a client without a certificate")
    return problems


def run_actuator(act_bin, objs, case, tmp, edit_config=None, keda_requests=None):
    """Start the real actuator with the rendered config, policies, token and environment (file
    paths moved into a temporary directory, the listeners on loopback); check /healthz, the
    policy count in /metrics, and that the webhook wants the token; with the External Scaler,
    ask it for the metric spec of each `scaler: keda` policy (or of keda_requests) over the
    rendered TLS settings. Returns the problems."""
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
    keda_port, pki, rendered_keda_tls = None, None, None
    kc = config.get("keda") or {}
    if kc.get("listen"):
        keda_port = free_port()
        kc["listen"] = f"127.0.0.1:{keda_port}"
        if kc.get("tls"):
            svc = [s for s in M.kind(objs, "Service") if s["metadata"]["name"].endswith("-actuator")][0]
            pki = make_pki(work, f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc")
            # The files of the rendered keys, made here; the keys themselves stay as rendered.
            for key, f in (("cert_file", "server.crt"), ("key_file", "server.key"), ("client_ca_file", "ca.crt")):
                if key in kc["tls"]:
                    kc["tls"][key] = pki[f]
            rendered_keda_tls = copy.deepcopy(kc["tls"])
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
            if keda_port:
                requests = keda_requests if keda_requests is not None else keda_requests_of(case)
                problems += keda_probe(rendered_keda_tls, objs, keda_port, pki, requests)
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
    ("cluster mode with 0 shards", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.clusterMode.shards=0"], "agent.clusterMode.shards must be at least 1; got 0"),
    ("existing secret and an Alertmanager copy", ["actuator.auth.existingSecret=s", "actuator.auth.alertmanagerSecret.namespace=monitoring"], "cannot be used with actuator.auth.existingSecret"),
    ("regex with a comma", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.groupAllow[0]=a{1\\,3}"], "agent.groupAllow: \"a{1,3}\" contains a comma"),
    ("unknown granularity", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.granularity=group"], "agent.granularity must be partition or topic, got \"group\""),
    ("unknown security protocol", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=tls"], "agent.kafka.securityProtocol must be plaintext, ssl, sasl_plaintext or sasl_ssl"),
    ("unknown SASL mechanism", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=sasl_ssl", "agent.kafka.sasl.mechanism=GSSAPI"], "agent.kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM, got \"GSSAPI\""),
    ("OAUTHBEARER without a client secret", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=sasl_ssl", "agent.kafka.sasl.mechanism=OAUTHBEARER", "agent.kafka.sasl.oauthbearer.tokenEndpointUrl=https://idp/token", "agent.kafka.sasl.oauthbearer.clientId=medic"], "agent.kafka.sasl.oauthbearer.clientSecret.name is required with mechanism OAUTHBEARER"),
    ("AWS_MSK_IAM without a region", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9098", "agent.kafka.securityProtocol=sasl_ssl", "agent.kafka.sasl.mechanism=AWS_MSK_IAM"], "agent.kafka.sasl.awsRegion is required with mechanism AWS_MSK_IAM"),
    ("SASL without a password Secret", ["agent.clusterMode.enabled=true", "agent.clusterMode.bootstrapServers=k:9092", "agent.kafka.securityProtocol=sasl_plaintext", "agent.kafka.sasl.mechanism=PLAIN", "agent.kafka.sasl.username=u"], "agent.kafka.sasl.passwordSecret.name is required"),
    ("Strimzi policy without a cluster name", ["agent.sidecar.strimzi.kyvernoPolicy=true"], "agent.sidecar.strimzi.clusterName is required"),
    ("unknown broker id source", ["agent.sidecar.strimzi.kyvernoPolicy=true", "agent.sidecar.strimzi.clusterName=c", "agent.sidecar.brokerId.source=env"], "agent.sidecar.brokerId.source must be podIndexLabel or hostnameSuffix"),
    ("unknown process source", ["agent.sidecar.strimzi.kyvernoPolicy=true", "agent.sidecar.strimzi.clusterName=c", "agent.sidecar.process.source=jmx"], "agent.sidecar.process.source must be cmdline, pid_file, cgroup or host"),
    # KEDA's External Scaler and the policies' scaler / on_autoscaler.
    ("client certificate without a TLS Secret", ["actuator.keda.enabled=true", "actuator.keda.tls.requireClientCert=true"], "actuator.keda.tls.requireClientCert needs actuator.keda.tls.existingSecret"),
    ("client certificate with KEDA off", ["actuator.keda.tls.requireClientCert=true"], "actuator.keda.tls.requireClientCert needs actuator.keda.tls.existingSecret"),
    ("KEDA TLS Secret with KEDA off", ["actuator.keda.tls.existingSecret=keda-tls"], "actuator.keda.tls.existingSecret needs actuator.keda.enabled=true"),
    ("KEDA port = the webhook's port", ["actuator.keda.enabled=true", "actuator.keda.port=9095"], "actuator.keda.port 9095 is actuator.containerPort"),
    ("KEDA port 0", ["actuator.keda.enabled=true", "actuator.keda.port=0"], "actuator.keda.port must be a port number from 1 to 65535; got 0"),
    ("KEDA port not a number", ["actuator.keda.enabled=true", "actuator.keda.port=grpc"], "actuator.keda.port must be a port number from 1 to 65535; got grpc"),
    ("KEDA port above 65535", ["actuator.keda.enabled=true", "actuator.keda.port=70000"], "actuator.keda.port must be a port number from 1 to 65535; got 70000"),
    ("scaler: keda with KEDA off", ["actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g", "actuator.policies[0].deployment.namespace=shop", "actuator.policies[0].deployment.name=d", "actuator.policies[0].scaler=keda"], "actuator.policies[0] (prod/g): scaler: keda needs actuator.keda.enabled=true"),
    ("raise_min_replicas with scaler: keda", ["actuator.keda.enabled=true", "actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g", "actuator.policies[0].deployment.namespace=shop", "actuator.policies[0].deployment.name=d", "actuator.policies[0].scaler=keda", "actuator.policies[0].on_autoscaler=raise_min_replicas"], "actuator.policies[0] (prod/g): on_autoscaler: raise_min_replicas does not go with scaler: keda"),
    ("unknown scaler", ["actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g", "actuator.policies[0].deployment.namespace=shop", "actuator.policies[0].deployment.name=d", "actuator.policies[0].scaler=hpa"], "actuator.policies[0] (prod/g): scaler must be actuator or keda; got \"hpa\""),
    ("unknown on_autoscaler", ["actuator.policies[0].cluster=prod", "actuator.policies[0].consumergroup=g", "actuator.policies[0].deployment.namespace=shop", "actuator.policies[0].deployment.name=d", "actuator.policies[0].on_autoscaler=raise"], "actuator.policies[0] (prod/g): on_autoscaler must be refuse or raise_min_replicas; got \"raise\""),
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
    def cluster_agent(o):
        return M.cluster_agents(o)[0]

    def cluster_env(o, name):
        return [e for e in cluster_agent(o)["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == name][0]

    def agent_service(o):
        return find(o, "Service", lambda s: s["metadata"]["name"] == cluster_agent(o)["metadata"]["name"])

    breaks += [
        # The cluster-mode agent: a StatefulSet of `shards` pods, each its own shard.
        ("cluster-mode agent as a Deployment", lambda o: cluster_agent(o).__setitem__("kind", "Deployment"), "expected a StatefulSet"),
        ("replicas unlike shards", lambda o: cluster_agent(o)["spec"].__setitem__("replicas", 2), "replicas 2, expected shards = 3"),
        ("shard count unlike shards", lambda o: cluster_env(o, "MEDIC_AGENT_SHARD_COUNT").__setitem__("value", "1"), "MEDIC_AGENT_SHARD_COUNT is '1', expected '3'"),
        ("a fixed shard index", lambda o: cluster_agent(o)["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "MEDIC_AGENT_SHARD_INDEX", "value": "0"}), "MEDIC_AGENT_SHARD_INDEX is set"),
        ("POD_NAME from the node name", lambda o: cluster_env(o, "POD_NAME")["valueFrom"]["fieldRef"].__setitem__("fieldPath", "spec.nodeName"), "POD_NAME is 'spec.nodeName', expected the downward API fieldRef metadata.name"),
        ("agent Service not headless", lambda o: agent_service(o)["spec"].pop("clusterIP"), "not headless"),
        ("serviceName of no Service", lambda o: cluster_agent(o)["spec"].__setitem__("serviceName", "nothing"), "serviceName 'nothing' is no Service"),
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


def self_test_keda(cases, act_bin, tmp):
    """The RBAC of raise_min_replicas, the External Scaler's objects, the notes' address, the
    example checks and the gRPC probe each report a deliberately broken input."""
    def find(o, k, pred=lambda x: True):
        return [x for x in o if x.get("kind") == k and pred(x)][0]

    def role_in(o, ns):
        return find(o, "Role", lambda r: r["metadata"]["name"].endswith("-actuator") and r["metadata"]["namespace"] == ns)

    def rule_of(role, resource, verb):
        return [r for r in role["rules"] if resource in r["resources"] and verb in r["verbs"]][0]

    def dep(o):
        return find(o, "Deployment", lambda d: d["metadata"]["name"].endswith("-actuator"))

    def container(o):
        return dep(o)["spec"]["template"]["spec"]["containers"][0]

    def svc_port(o, name):
        return [pt for pt in find(o, "Service", lambda x: x["metadata"]["name"].endswith("-actuator"))["spec"]["ports"] if pt["name"] == name][0]

    def volume(o, name):
        return [v for v in dep(o)["spec"]["template"]["spec"]["volumes"] if v["name"] == name][0]

    def mount(o, name):
        return [m for m in container(o)["volumeMounts"] if m["name"] == name][0]

    def edit_config(o, fn):
        cm = find(o, "ConfigMap", lambda c: c["metadata"]["name"].endswith("-actuator"))
        c = yaml.safe_load(cm["data"]["actuator.yaml"])
        fn(c)
        cm["data"]["actuator.yaml"] = yaml.safe_dump(c)

    def without_raise(case):
        c = copy.deepcopy(case)
        for pol in c["policies"]:
            pol.pop("on_autoscaler", None)
        return c

    def expect(label, got, want):
        hit = [x for x in got if want in x]
        record(f"self-test: {label} is reported", bool(hit), hit[0] if hit else f"expected {want!r}, got {got}")

    full_objs, full_case, full_notes = cases["ci/full-values.yaml"][:3]
    hpa_get_patch = {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "patch"]}
    breaks = [
        # raise_min_replicas: get and patch on HPAs and ScaledObjects where such a policy is, by no name.
        ("raise Role grants delete on HPAs", lambda o: rule_of(role_in(o, "billing"), "horizontalpodautoscalers", "patch")["verbs"].append("delete"), "grants verbs ['delete'] on horizontalpodautoscalers"),
        ("raise Role grants update on ScaledObjects", lambda o: rule_of(role_in(o, "billing"), "scaledobjects", "patch")["verbs"].append("update"), "grants verbs ['update'] on scaledobjects"),
        ("raise Role without patch on ScaledObjects", lambda o: rule_of(role_in(o, "billing"), "scaledobjects", "patch")["verbs"].remove("patch"), "missing {('keda.sh', 'scaledobjects'): ['patch']}"),
        ("raise Role without get on HPAs", lambda o: rule_of(role_in(o, "billing"), "horizontalpodautoscalers", "get")["verbs"].remove("get"), "missing {('autoscaling', 'horizontalpodautoscalers'): ['get']}"),
        ("raise get/patch limited by resourceNames", lambda o: rule_of(role_in(o, "billing"), "scaledobjects", "get").__setitem__("resourceNames", ["billing-consumer"]), "resourceNames ['billing-consumer'] on scaledobjects (expected none)"),
        ("get/patch on HPAs in a namespace without a raise policy", lambda o: role_in(o, "shop")["rules"].append(copy.deepcopy(hpa_get_patch)), "grants verbs ['get', 'patch'] on horizontalpodautoscalers"),
        # scaler: keda: the actuator never reads nor patches that Deployment.
        ("Deployment rules in a namespace with only scaler: keda policies", lambda o: role_in(o, "search")["rules"].insert(0, {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["search-indexer"], "verbs": ["get", "patch"]}), "grants 'deployments/scale' in API group 'apps'"),
        ("a scaler: keda Deployment in resourceNames", lambda o: rule_of(role_in(o, "shop"), "deployments", "get")["resourceNames"].append("inventory-consumer"), "on deployments, expected exactly"),
        ("the keda-only namespace's Role missing", lambda o: o.remove(role_in(o, "search")), "expected exactly the policies' namespaces"),
        # The External Scaler's port, Service, config and TLS files.
        ("keda.listen on the webhook's port", lambda o: edit_config(o, lambda c: c["keda"].__setitem__("listen", "0.0.0.0:9095")), "config keda.listen '0.0.0.0:9095' is not 0.0.0.0:9443"),
        ("keda.listen missing", lambda o: edit_config(o, lambda c: c["keda"].pop("listen")), "config keda.listen None"),
        ("the grpc container port missing", lambda o: container(o).__setitem__("ports", [pt for pt in container(o)["ports"] if pt["name"] != "grpc"]), "container port grpc is None"),
        ("the grpc container port on another number", lambda o: [pt for pt in container(o)["ports"] if pt["name"] == "grpc"][0].__setitem__("containerPort", 9444), "expected containerPort 9443"),
        ("the Service port grpc without appProtocol", lambda o: svc_port(o, "grpc").pop("appProtocol"), "Service port grpc is"),
        ("the Service port grpc targeting http", lambda o: svc_port(o, "grpc").__setitem__("targetPort", "http"), "Service port grpc is"),
        ("the Service port grpc missing", lambda o: find(o, "Service", lambda x: x["metadata"]["name"].endswith("-actuator"))["spec"].__setitem__("ports", [svc_port(o, "http")]), "Service port grpc is None"),
        ("the keda-tls mount writable", lambda o: mount(o, "keda-tls").__setitem__("readOnly", False), "is not read-only"),
        ("the keda-tls volume from the webhook's Secret", lambda o: volume(o, "keda-tls")["secret"].__setitem__("secretName", "medic-actuator-tls"), "the keda-tls volume reads 'medic-actuator-tls'"),
        ("the keda-tls volume without ca.crt", lambda o: volume(o, "keda-tls")["secret"]["items"].pop(), "expected exactly ['tls.crt', 'tls.key', 'ca.crt']"),
        ("the keda-tls volume with every key", lambda o: volume(o, "keda-tls")["secret"].pop("items"), "expected exactly ['tls.crt', 'tls.key', 'ca.crt']"),
        ("no client CA in the config with requireClientCert", lambda o: edit_config(o, lambda c: c["keda"]["tls"].pop("client_ca_file")), "config keda.tls is"),
        ("keda.tls naming the webhook's certificate", lambda o: edit_config(o, lambda c: c["keda"]["tls"].__setitem__("cert_file", "/etc/medic-actuator/tls/tls.crt")), "config keda.tls is"),
    ]
    for label, mutate, want in breaks:
        o = copy.deepcopy(full_objs)
        mutate(o)
        expect(label, M.check_release(o, full_case, full_notes), want)
    expect("get/patch on HPAs and ScaledObjects without a raise_min_replicas policy",
           M.check_release(full_objs, without_raise(full_case), full_notes), "grants verbs ['get', 'patch'] on horizontalpodautoscalers")
    if "ci/cluster-role-values.yaml" in cases:
        cobjs, ccase, cnotes = cases["ci/cluster-role-values.yaml"][:3]
        expect("ClusterRole get/patch on HPAs without a raise_min_replicas policy", M.check_release(cobjs, without_raise(ccase), cnotes),
               "grants verbs ['get', 'patch'] on horizontalpodautoscalers")
        o = copy.deepcopy(cobjs)
        rule_of(find(o, "ClusterRole"), "scaledobjects", "patch")["verbs"].remove("patch")
        expect("ClusterRole without patch on ScaledObjects with a raise_min_replicas policy", M.check_release(o, ccase, cnotes), "missing {('keda.sh', 'scaledobjects'): ['patch']}")
    mobjs, mcase, mnotes = cases["ci/minimal-values.yaml"][:3]
    o = copy.deepcopy(mobjs)
    edit_config(o, lambda c: c.__setitem__("keda", {"listen": "0.0.0.0:9096"}))
    expect("keda.listen with actuator.keda.enabled off", M.check_release(o, mcase, mnotes), "KEDA off but the config has keda")
    o = copy.deepcopy(mobjs)
    container(o)["ports"].append({"name": "grpc", "containerPort": 9096, "protocol": "TCP"})
    expect("a grpc port with actuator.keda.enabled off", M.check_release(o, mcase, mnotes), "KEDA off but a grpc port is rendered")
    # The notes' scalerAddress.
    expect("a wrong External Scaler address in the notes",
           check_notes(full_notes.replace(".svc:9443", ".svc:9096"), full_objs, full_case), "NOTES.txt External Scaler address")

    # The examples: each break of a ScaledObject, its trigger or its TLS wiring.
    def so_of(docs):
        return [d for d in docs if d.get("kind") == "ScaledObject"][0]

    def trigger(docs):
        return so_of(docs)["spec"]["triggers"][0]

    def cert(docs, secret):
        return [d for d in docs if d.get("kind") == "Certificate" and d["spec"]["secretName"] == secret][0]

    plain = os.path.join(EXAMPLES, "scaledobject-external-push.yaml")
    mtls = os.path.join(EXAMPLES, "scaledobject-external-push-mtls.yaml")
    ex_breaks = [
        (plain, "an example scalerAddress on the webhook's port", lambda d, t, v: trigger(d)["metadata"].__setitem__("scalerAddress", "kafka-medic-actuator.monitoring.svc:8080"), "but release kafka-medic in monitoring serves the External Scaler at kafka-medic-actuator.monitoring.svc:9096"),
        (plain, "an example scalerAddress in another namespace", lambda d, t, v: trigger(d)["metadata"].__setitem__("scalerAddress", "kafka-medic-actuator.kafka-medic.svc:9096"), "scalerAddress 'kafka-medic-actuator.kafka-medic.svc:9096'"),
        (plain, "an example trigger of type kafka", lambda d, t, v: trigger(d).__setitem__("type", "kafka"), "type 'kafka', expected external-push"),
        (plain, "an example metadata key the actuator does not read", lambda d, t, v: trigger(d)["metadata"].__setitem__("consumerGroup", trigger(d)["metadata"].pop("consumergroup")), "metadata ['consumerGroup'] is read by neither"),
        (plain, "an example metric the actuator does not know", lambda d, t, v: trigger(d)["metadata"].__setitem__("metric", "lag_offsets"), "metric 'lag_offsets' is not one of"),
        (plain, "an example metric lag_seconds without lag_seconds_per_replica", lambda d, t, v: trigger(d)["metadata"].__setitem__("metric", "lag_seconds"), "has no lag_seconds_per_replica"),
        (plain, "an example naming no policy's group", lambda d, t, v: trigger(d)["metadata"].__setitem__("consumergroup", "orders"), "no policy for cluster 'prod' consumergroup 'orders'"),
        (plain, "an example for a policy without scaler: keda", lambda d, t, v: [pol.pop("scaler") for pol in v["actuator"]["policies"] if pol["consumergroup"] == "orders-processor"], "does not say scaler: keda"),
        (plain, "an example scaling another Deployment than the policy's", lambda d, t, v: so_of(d)["spec"]["scaleTargetRef"].__setitem__("name", "orders-api"), "but the policy names shop/orders-processor"),
        (plain, "an example minReplicaCount above maxReplicaCount", lambda d, t, v: so_of(d)["spec"].__setitem__("minReplicaCount", 20), "minReplicaCount 20 is greater than maxReplicaCount 12"),
        (plain, "an example without scaleTargetRef.name", lambda d, t, v: so_of(d)["spec"]["scaleTargetRef"].pop("name"), "spec.scaleTargetRef.name is required"),
        (plain, "an example with an HPA field name in the ScaledObject", lambda d, t, v: so_of(d)["spec"].__setitem__("minReplicas", 1), "unknown field(s) ['minReplicas']"),
        (plain, "an example of apiVersion keda.sh/v1", lambda d, t, v: so_of(d).__setitem__("apiVersion", "keda.sh/v1"), "expected keda.sh/v1alpha1/ScaledObject"),
        (plain, "an example metadata value that is not a string", lambda d, t, v: trigger(d)["metadata"].__setitem__("enableTLS", False), "KEDA's CRD takes strings only"),
        (plain, "an example metricType Value", lambda d, t, v: trigger(d).__setitem__("metricType", "Value"), "the actuator's targets are per replica"),
        (plain, "an example scaleDown window unlike the policy's cooldown", lambda d, t, v: so_of(d)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].__setitem__("stabilizationWindowSeconds", 600), "scale_down_cooldown is 5m"),
        (plain, "an example with enableTLS on a plain port", lambda d, t, v: trigger(d)["metadata"].__setitem__("enableTLS", "true"), "enableTLS 'true' but the External Scaler does not serve TLS"),
        (plain, "an example's commented kafka trigger with another threshold", None, "lagThreshold '500' is not the policy's lag_per_replica 5000"),
        (mtls, "an mTLS example without enableTLS", lambda d, t, v: trigger(d)["metadata"].pop("enableTLS"), "enableTLS None but the External Scaler serves TLS"),
        (mtls, "an mTLS example without a client certificate", lambda d, t, v: [d2["spec"].__setitem__("secretTargetRef", d2["spec"]["secretTargetRef"][:1]) for d2 in d if d2.get("kind") == "TriggerAuthentication"], "presents none (tlsClientCert, tlsClientKey)"),
        (mtls, "an mTLS example without caCert", lambda d, t, v: [d2["spec"].__setitem__("secretTargetRef", d2["spec"]["secretTargetRef"][1:]) for d2 in d if d2.get("kind") == "TriggerAuthentication"], "TLS without caCert"),
        (mtls, "an mTLS example whose authenticationRef names nothing", lambda d, t, v: trigger(d)["authenticationRef"].__setitem__("name", "kafka-medic"), "names no TriggerAuthentication"),
        (mtls, "an mTLS example server certificate for another host", lambda d, t, v: cert(d, "kafka-medic-keda-tls")["spec"].__setitem__("dnsNames", ["kafka-medic-actuator.monitoring"]), "not the scalerAddress host kafka-medic-actuator.monitoring.svc"),
        (mtls, "an mTLS example client certificate in another namespace", lambda d, t, v: cert(d, "kafka-medic-keda-client")["metadata"].__setitem__("namespace", "monitoring"), "its TriggerAuthentication in shop"),
        (mtls, "an mTLS example TriggerAuthentication with a misspelt field", lambda d, t, v: [d2["spec"].__setitem__("secretTargetRefs", d2["spec"].pop("secretTargetRef")) for d2 in d if d2.get("kind") == "TriggerAuthentication"], "unknown field(s) ['secretTargetRefs']"),
    ]
    for path, label, mutate, want in ex_breaks:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        release, ns, rel_values = K.written_for(text)
        key = rel_values
        if key not in cases:
            record(f"self-test: {label} is reported", False, f"{rel_values} did not render")
            continue
        objs, case = cases[key][:2]
        values = copy.deepcopy(case["values"])
        if mutate is None:
            text = text.replace('lagThreshold: "5000"', 'lagThreshold: "500"')
        docs = [d for d in yaml.safe_load_all(text) if d]
        if mutate is not None:
            mutate(docs, text, values)
        expect(label, K.example_problems(docs, text, objs, values, release, ns, os.path.basename(path)), want)
    # The HPA behaviour goes through kubernetes-validate: a bad one is refused.
    with open(plain, encoding="utf-8") as fh:
        so = [d for d in yaml.safe_load_all(fh.read()) if d and d.get("kind") == "ScaledObject"][0]
    so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilisationWindowSeconds"] = 300
    rc, vp = validate(yaml.safe_dump(K.hpa_for_behavior(so)), K8S_VERSIONS[-1])
    record("self-test: a misspelt HPA behavior field in an example is refused by kubernetes-validate", rc != 0, "" if rc else "accepted")

    # The real External Scaler: a group without a policy, another target, no client CA.
    if act_bin:
        pol = [p for p in full_case["policies"] if p.get("scaler") == "keda"][0]
        md = {"cluster": pol["cluster"], "consumergroup": pol["consumergroup"]}
        problems = run_actuator(act_bin, full_objs, full_case, tmp, keda_requests=[
            ("a group without a policy", "x", "shop", {"cluster": "prod", "consumergroup": "no-such-group"}, pol, "lag")])
        expect("a GetMetricSpec the External Scaler refuses", problems, "got no answer")
        problems = run_actuator(act_bin, full_objs, full_case, tmp, keda_requests=[
            ("another target", "x", "shop", md, dict(pol, lag_per_replica=801), "lag")])
        expect("a metric spec unlike the policy's", problems, "answered [{'metricName': 'kafka_medic_consumergroup_lag', 'targetSize': 800")
        problems = run_actuator(act_bin, full_objs, full_case, tmp, edit_config=lambda c: c["keda"]["tls"].pop("client_ca_file"),
                                keda_requests=[("mutual TLS", "x", "shop", md, pol, "lag")])
        expect("an External Scaler that takes clients without a certificate", problems, "answered a client without a certificate")
        problems = run_actuator(act_bin, full_objs, full_case, tmp, edit_config=lambda c: c["keda"]["tls"].__setitem__("key_file", c["keda"]["tls"]["client_ca_file"]))
        expect("medic-actuator refusing the rendered keda.tls files", problems, "keda.tls.key_file")


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
    if agent_bin and "ci/full-values.yaml" in cases:
        sts = M.cluster_agents(cases["ci/full-values.yaml"][0])[0]
        c = copy.deepcopy(sts["spec"]["template"]["spec"]["containers"][0])
        err = run_agent(agent_bin, c, tempfile.mkdtemp(dir=tmp), "medic-agent", "prod", "cluster (shard_index 0, shard_count 3)", "no-ordinal")
        record("self-test: a shard whose pod name has no ordinal is reported", bool(err and "POD_NAME = \"medic-agent\" does not end in -<ordinal>" in err), err or "not reported")
        err = run_agent(agent_bin, c, tempfile.mkdtemp(dir=tmp), "x-agent-1", "prod", "cluster (shard_index 2, shard_count 3)", "wrong-shard")
        record("self-test: a shard that reports another index is reported", bool(err and "cluster (shard_index 1, shard_count 3)" in err), err or "not reported")
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
        renders, examples = example_renders()
        for label, values in [("default values", [])] + [(os.path.relpath(f, CHART), [f]) for f in ci_files()]:
            got = check_case(label, values)
            if got:
                cases[label] = got
        # The values the KEDA examples were written for, as the release and namespace they name.
        for values, (release, ns) in sorted(renders.items()):
            got = check_case(f"{example_label(values)} (release {release} in {ns})", [values], release, ns)
            if got:
                cases[example_label(values)] = got
        print("--- the KEDA examples")
        lint_examples(renders)
        example_requests_by_case = check_examples(examples, cases)
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
            requests = {label: reqs + keda_requests_of(cases[label][1]) for label, reqs in example_requests_by_case.items()}
            check_actuator_binary(act_bin, {k: (v[0], v[1]) for k, v in cases.items()}, tmp, requests)
        else:
            record("medic-actuator binary", False, "no medic-actuator binary given (--actuator PATH)")
        print("--- self-test: the checks fail on broken input")
        self_test_links(tmp)
        self_test_binaries(agent_bin, act_bin, wrapper, cases, tmp)
        if "ci/full-values.yaml" in cases:
            self_test(cases, wrapper, tmp)
            self_test_keda(cases, act_bin, tmp)
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
