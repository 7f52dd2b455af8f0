"""Assertions on the objects `helm template` renders from helm/kafka-medic.

check_release(objs, case) returns a list of problems (empty: all good). `case` says what the
values were (the token, the policies, what is enabled), so every assertion compares the rendered
objects with what the values asked for, not with what the templates happen to produce.
"""
import base64
import json
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(ROOT, "rules", "kafka-medic.rules.yml")
DASHBOARDS = os.path.join(ROOT, "dashboards")

# The only permissions the actuator may hold (see templates/actuator/rbac.yaml for why).
# In each policy namespace (or the ClusterRole with clusterWide):
RBAC_ALLOWED = {
    ("apps", "deployments/scale"): {"get", "patch"},
    ("apps", "deployments"): {"get", "patch"},
    # Is another autoscaler scaling the Deployment? (list: resourceNames cannot apply)
    ("autoscaling", "horizontalpodautoscalers"): {"list"},
    ("keda.sh", "scaledobjects"): {"list"},
    # An Event per scale on its Deployment (create: resourceNames cannot apply)
    ("", "events"): {"create"},
}
# Resources granted by name (resourceNames = the policies' Deployments); the others are lists.
RBAC_BY_NAME = {("apps", "deployments/scale"), ("apps", "deployments")}
# Where a policy says on_autoscaler: raise_min_replicas (its namespace, or the ClusterRole): read
# and patch the HPA or ScaledObject that scales its Deployment. Any of them in that namespace:
# the autoscaler's name is not in the policy, so no resourceNames.
RBAC_RAISE = {
    ("autoscaling", "horizontalpodautoscalers"): {"get", "patch"},
    ("keda.sh", "scaledobjects"): {"get", "patch"},
}
# In the Lease's namespace, with leader election: create it, and get/update it by name.
RBAC_LEASE = {("coordination.k8s.io", "leases"): {"create", "get", "update"}}
# In the release namespace, with broker clusters: the intent ConfigMaps, get/update by name.
RBAC_INTENTS = {("", "configmaps"): {"create", "get", "update"}}
# Verbs a resourceNames restriction cannot apply to (a rule limiting them would never match).
RBAC_UNNAMED_VERBS = {"create", "list"}
# The Roles of the release namespace, told apart from the policy namespaces' Roles by name.
LEASE_ROLE_SUFFIX, INTENTS_ROLE_SUFFIX = "-actuator-lease", "-actuator-intents"
INTENT_PREFIX = "medic-actuator-intent-"
COMMON_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                 "helm.sh/chart", "app.kubernetes.io/part-of")


def load_all(text):
    return [d for d in yaml.safe_load_all(text) if d]


def kind(objs, k):
    return [o for o in objs if o.get("kind") == k]


def name_of(o):
    return f'{o.get("kind")}/{o.get("metadata", {}).get("namespace", "-")}/{o.get("metadata", {}).get("name")}'


def pod_specs(objs):
    """(owner, pod spec, pod template metadata) for every workload."""
    for o in objs:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            t = o["spec"]["template"]
            yield name_of(o), t["spec"], t.get("metadata", {})


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


# ---------------------------------------------------------------- individual checks

def check_labels_and_names(objs, p):
    for o in objs:
        md = o.get("metadata", {})
        labels = md.get("labels", {}) or {}
        for label in COMMON_LABELS:
            if label not in labels:
                p.append(f"{name_of(o)}: label {label} missing")
        n = md.get("name", "")
        if len(n) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", n):
            p.append(f"{name_of(o)}: name {n!r} is not a DNS name of at most 63 characters")
    seen = {}
    for o in objs:
        key = (o.get("kind"), o["metadata"].get("namespace"), o["metadata"].get("name"))
        if key in seen:
            p.append(f"{name_of(o)}: rendered twice (name collision)")
        seen[key] = True


def check_security(objs, p, agent_liveness_tcp=True):
    for owner, spec, meta in pod_specs(objs):
        psc = spec.get("securityContext", {}) or {}
        if not psc.get("runAsNonRoot"):
            p.append(f"{owner}: pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            p.append(f"{owner}: pod seccompProfile is not RuntimeDefault")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            p.append(f"{owner}: uses the host's network, PID or IPC namespace")
        names = {c["name"] for c in spec["containers"]}
        ports = {pt["name"] for c in spec["containers"] for pt in c.get("ports", []) if "name" in pt}
        for c in spec["containers"]:
            if c["name"] not in ("medic-agent", "medic-actuator"):
                continue
            where = f"{owner} container {c['name']}"
            sc = c.get("securityContext", {}) or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                p.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("runAsNonRoot") is not True:
                p.append(f"{where}: runAsNonRoot is not true")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or (sc.get("capabilities") or {}).get("add"):
                p.append(f"{where}: capabilities are not exactly drop [ALL]")
            if sc.get("privileged"):
                p.append(f"{where}: privileged")
            if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                p.append(f"{where}: seccompProfile is not RuntimeDefault")
            res = c.get("resources") or {}
            if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
                p.append(f"{where}: no memory request and limit")
            rp, lp = c.get("readinessProbe"), c.get("livenessProbe")
            if not rp or (rp.get("httpGet") or {}).get("path") != "/healthz":
                p.append(f"{where}: readinessProbe is not GET /healthz")
            if not lp or "tcpSocket" not in lp:
                p.append(f"{where}: livenessProbe is not a tcpSocket probe")
            for probe in (rp or {}, lp or {}):
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    p.append(f"{where}: probe port {port!r} is not a named container port")
        del names


def check_token(objs, token, notes, p):
    """The token is in Secrets only: not in a ConfigMap, not in any other object, not in NOTES."""
    if not token:
        return
    b64 = base64.b64encode(token.encode()).decode()
    for o in objs:
        text = yaml.safe_dump(o)
        if o.get("kind") == "Secret":
            continue
        for form, needle in (("in plain text", token), ("base64-encoded", b64)):
            if needle in text:
                what = "a ConfigMap" if o.get("kind") == "ConfigMap" else "a non-Secret object"
                p.append(f"{name_of(o)}: the webhook token appears {form} in {what}")
    if notes and (token in notes or b64 in notes):
        p.append("NOTES.txt: prints the webhook token")


def intent_configmap_name(cluster):
    """The intent ConfigMap of a broker cluster, as medic-actuator names it (configmap_name in
    actuator/src/intent.rs): lowercase ASCII, [^a-z0-9-] -> '-', dashes trimmed; kept as it is
    when that changed nothing and fits in 63 characters, else 32 characters of it and the first
    8 hex digits of the cluster name's SHA-256."""
    import hashlib
    cluster = str(cluster)
    clean = "".join(c.lower() if c.isascii() and (c.isalnum() or c == "-") else "-" for c in cluster).strip("-")
    if clean == cluster and len(INTENT_PREFIX) + len(clean) <= 63:
        return INTENT_PREFIX + clean
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    kept = clean[:63 - len(INTENT_PREFIX) - 9].rstrip("-")
    return INTENT_PREFIX + (f"{kept}-{digest}" if kept else digest)


def actuator_name(objs):
    for d in kind(objs, "Deployment"):
        if d["metadata"]["name"].endswith("-actuator"):
            return d["metadata"]["name"]
    return None


def expected_lease_name(objs, case):
    """The Lease the values ask for: leader_election.lease_name, else the actuator's full name."""
    return case.get("lease_name") or actuator_name(objs)


def rule_pairs(rule):
    return [(g, res) for g in rule.get("apiGroups", []) for res in rule.get("resources", [])]


def check_role_rules(r, allowed, p, names_for=None):
    """The rules of one Role or ClusterRole grant exactly `allowed` ((group, resource) -> verbs):
    nothing else, no verb more or less, no wildcard, no nonResourceURLs. resourceNames: never on
    a verb they cannot limit (create, list); on the other verbs of a pair that names_for maps to
    a set of names, exactly those names (None: none expected)."""
    got = {}
    for i, rule in enumerate(r.get("rules", [])):
        where = f"{name_of(r)} rule {i}"
        if rule.get("nonResourceURLs"):
            p.append(f"{where}: grants nonResourceURLs {rule['nonResourceURLs']}")
        if "*" in json.dumps(rule):
            p.append(f"{where}: uses a wildcard")
        verbs = set(rule.get("verbs", []))
        names = rule.get("resourceNames")
        for g, res in rule_pairs(rule):
            ok = allowed.get((g, res))
            if ok is None:
                p.append(f"{where}: grants {res!r} in API group {g!r}; only {sorted(allowed)} are allowed here")
                continue
            extra = verbs - ok
            if extra:
                p.append(f"{where}: grants verbs {sorted(extra)} on {res}; only {sorted(ok)} are allowed")
            got.setdefault((g, res), set()).update(verbs)
            for v in sorted(verbs & RBAC_UNNAMED_VERBS):
                if names:
                    p.append(f"{where}: resourceNames {names} on a {v} rule ({v} ignores them: it would be refused)")
            if names_for is not None and (g, res) in names_for and verbs - RBAC_UNNAMED_VERBS:
                want = names_for[(g, res)]
                if want is None and names:
                    p.append(f"{where}: resourceNames {names} on {res} (expected none)")
                elif want is not None and set(names or []) != set(want):
                    p.append(f"{where}: resourceNames {names} on {res}, expected exactly {sorted(want)}")
    if got != allowed:
        missing = {k: sorted(v - got.get(k, set())) for k, v in allowed.items() if v - got.get(k, set())}
        p.append(f"{name_of(r)}: grants {got}, expected exactly {allowed}" + (f" (missing {missing})" if missing else ""))


def raise_namespaces(case):
    """Namespaces of the policies with on_autoscaler: raise_min_replicas."""
    return {pol["deployment"]["namespace"] for pol in case.get("policies", [])
            if pol.get("on_autoscaler") == "raise_min_replicas"}


def scaled_by_actuator(pol):
    """A policy whose Deployment the actuator reads and patches (not `scaler: keda`)."""
    return (pol.get("scaler") or "actuator") == "actuator"


def policy_rbac(deployments, raise_min):
    """What one policy Role (or the ClusterRole) must grant: the Deployment rules when the
    actuator scales Deployments there, the autoscaler lists and Events always, and get/patch on
    HPAs and ScaledObjects with a raise_min_replicas policy."""
    allowed = {k: set(v) for k, v in RBAC_ALLOWED.items() if deployments or k not in RBAC_BY_NAME}
    if raise_min:
        for k, v in RBAC_RAISE.items():
            allowed[k] = allowed.get(k, set()) | v
    return allowed


def check_rbac(objs, case, p):
    rel_ns = case["namespace"]
    sa = None
    for d in kind(objs, "Deployment"):
        if d["metadata"]["name"].endswith("-actuator"):
            sa = d["spec"]["template"]["spec"].get("serviceAccountName")
    roles = kind(objs, "Role") + kind(objs, "ClusterRole")
    on = case.get("actuator", True)
    lease_roles = [r for r in kind(objs, "Role") if r["metadata"]["name"].endswith(LEASE_ROLE_SUFFIX)]
    intent_roles = [r for r in kind(objs, "Role") if r["metadata"]["name"].endswith(INTENTS_ROLE_SUFFIX)]
    policy_roles = [r for r in kind(objs, "Role") if r not in lease_roles and r not in intent_roles]

    # The Lease: one Role in the Lease's namespace, create + get/update on that one name.
    want_lease = on and case.get("leader_election", False)
    lease_ns = case.get("lease_namespace") or rel_ns
    if len(lease_roles) != (1 if want_lease else 0):
        p.append(f"leader election {'on' if want_lease else 'off'}: {len(lease_roles)} Lease Role(s) rendered, expected {1 if want_lease else 0}")
    for r in lease_roles:
        if r["metadata"].get("namespace") != lease_ns:
            p.append(f"{name_of(r)}: in namespace {r['metadata'].get('namespace')}, expected the Lease's namespace {lease_ns}")
        lease = expected_lease_name(objs, case)
        check_role_rules(r, RBAC_LEASE, p, {("coordination.k8s.io", "leases"): {lease}})

    # The intent ConfigMaps: one Role in the release namespace, create + get/update by name.
    want_intents = sorted({intent_configmap_name(b["cluster"]) for b in case.get("brokers", [])}) if on else []
    if len(intent_roles) != (1 if want_intents else 0):
        p.append(f"{len(want_intents)} broker cluster(s): {len(intent_roles)} intent ConfigMap Role(s) rendered, expected {1 if want_intents else 0}")
    for r in intent_roles:
        if r["metadata"].get("namespace") != rel_ns:
            p.append(f"{name_of(r)}: in namespace {r['metadata'].get('namespace')}, expected the release namespace {rel_ns}")
        check_role_rules(r, RBAC_INTENTS, p, {("", "configmaps"): set(want_intents)})

    want_cluster = case.get("cluster_wide", False) and on
    crs, crbs = kind(objs, "ClusterRole"), kind(objs, "ClusterRoleBinding")
    if want_cluster:
        if len(crs) != 1 or len(crbs) != 1:
            p.append(f"clusterWide: expected 1 ClusterRole and 1 ClusterRoleBinding, got {len(crs)} and {len(crbs)}")
        if policy_roles:
            p.append(f"clusterWide: policy-namespace Roles rendered as well: {[name_of(r) for r in policy_roles]}")
        for cr in crs:
            names = {k: None for k in list(RBAC_BY_NAME) + list(RBAC_RAISE)}
            check_role_rules(cr, policy_rbac(True, bool(raise_namespaces(case))), p, names)
    else:
        if crs or crbs:
            p.append(f"cluster-scoped RBAC rendered without clusterWide: {[name_of(o) for o in crs + crbs]}")
        # namespace -> Deployment names the policies name; extra namespaces: any Deployment. A
        # policy with scaler: keda brings its namespace (autoscaler lists, Events) but not its
        # Deployment: KEDA scales it, the actuator never reads nor patches it.
        want = {}
        for pol in case.get("policies", []):
            names = want.setdefault(pol["deployment"]["namespace"], set())
            if scaled_by_actuator(pol):
                names.add(pol["deployment"]["name"])
        for ns in case.get("extra_namespaces", []):
            if not want.get(ns):
                want[ns] = None
        raise_ns = raise_namespaces(case)
        if not on:
            want = {}
        got_roles = {}
        for r in policy_roles:
            got_roles.setdefault(r["metadata"]["namespace"], []).append(r)
        if set(got_roles) != set(want) or any(len(v) > 1 for v in got_roles.values()):
            p.append(f"Roles in namespaces {sorted(ns for ns, v in got_roles.items() for _ in v)}, expected exactly the policies' namespaces {sorted(want)}")
        for ns, rs in got_roles.items():
            for r in rs:
                names = want.get(ns)
                allowed = policy_rbac(names is None or bool(names), ns in raise_ns)
                check_role_rules(r, allowed, p, {**{k: names for k in RBAC_BY_NAME}, **{k: None for k in RBAC_RAISE}})
    bound = {(b["metadata"].get("namespace"), b["roleRef"]["name"]) for b in kind(objs, "RoleBinding")}
    for r in kind(objs, "Role"):
        if (r["metadata"]["namespace"], r["metadata"]["name"]) not in bound:
            p.append(f"{name_of(r)}: no RoleBinding binds it")
    for b in kind(objs, "RoleBinding") + kind(objs, "ClusterRoleBinding"):
        ref = b["roleRef"]
        target = [r for r in roles if r["kind"] == ref["kind"] and r["metadata"]["name"] == ref["name"]
                  and (r["kind"] == "ClusterRole" or r["metadata"].get("namespace") == b["metadata"].get("namespace"))]
        if not target:
            p.append(f"{name_of(b)}: roleRef {ref} matches no rendered role")
        subj = b.get("subjects", [])
        if subj != [{"kind": "ServiceAccount", "name": sa, "namespace": rel_ns}]:
            p.append(f"{name_of(b)}: subjects {subj}, expected only the actuator's ServiceAccount {sa} in {rel_ns}")


def check_actuator(objs, case, p):
    deps = [d for d in kind(objs, "Deployment") if d["metadata"]["name"].endswith("-actuator")]
    if not case.get("actuator", True):
        if deps:
            p.append("actuator disabled but its Deployment is rendered")
        return
    if len(deps) != 1:
        p.append(f"expected 1 actuator Deployment, got {len(deps)}")
        return
    d = deps[0]
    spec = d["spec"]["template"]["spec"]
    if d["spec"]["replicas"] != case.get("replicas", 1):
        p.append(f"actuator replicas {d['spec']['replicas']}, expected {case.get('replicas', 1)}")
    pdbs = kind(objs, "PodDisruptionBudget")
    if (case.get("replicas", 1) > 1) != bool(pdbs):
        p.append(f"PodDisruptionBudget rendered: {bool(pdbs)}, expected only with more than one replica")
    pod_labels = d["spec"]["template"]["metadata"].get("labels", {})
    for pdb in pdbs:
        if pdb["spec"].get("maxUnavailable") != 1 or "minAvailable" in pdb["spec"]:
            p.append(f"{name_of(pdb)}: maxUnavailable {pdb['spec'].get('maxUnavailable')!r} (minAvailable {pdb['spec'].get('minAvailable')!r}), expected maxUnavailable 1 only")
        sel = (pdb["spec"].get("selector") or {}).get("matchLabels") or {}
        if not sel or not set(sel.items()) <= set(pod_labels.items()):
            p.append(f"{name_of(pdb)}: selector {sel} does not select the actuator pods {pod_labels}")
    c = spec["containers"][0]
    # The downward API gives the binary its identity in the Lease and the namespace of the Lease
    # and of the intent ConfigMaps.
    env = env_of(c)
    for var, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
        if ref != field:
            p.append(f"actuator container: {var} is {env.get(var)}, expected the downward API fieldRef {field}")
    cms = {cm["metadata"]["name"]: cm for cm in kind(objs, "ConfigMap")}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cm = cms.get(vols.get("config", {}).get("configMap", {}).get("name"))
    if not cm:
        p.append("actuator: the config volume names no rendered ConfigMap")
        return
    config = yaml.safe_load(cm["data"]["actuator.yaml"])
    policies = yaml.safe_load(cm["data"]["policies.yaml"])
    expected = {"policies": case.get("policies", [])}
    if case.get("brokers"):
        expected["brokers"] = case["brokers"]
    if policies != expected:
        p.append(f"policies.yaml is {policies}, expected the values' policies and brokers {expected}")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    key = case.get("token_key", "token")
    if config.get("auth", {}).get("bearer_token_file") != f"{mounts.get('token')}/{key}":
        p.append(f"config auth.bearer_token_file {config.get('auth')} is not the mounted token {mounts.get('token')}/{key}")
    if config.get("policies_file") != f"{mounts.get('policies')}/policies.yaml":
        p.append(f"config policies_file {config.get('policies_file')} is not the mounted policies file")
    if not config.get("audit", {}).get("path", "").startswith(mounts.get("audit", "//") + "/"):
        p.append(f"config audit.path {config.get('audit')} is not on the audit volume {mounts.get('audit')}")
    if config.get("insecure_no_auth"):
        p.append("config turns authentication off")
    le = config.get("leader_election") or {}
    if bool(le.get("enabled")) != bool(case.get("leader_election")):
        p.append(f"config leader_election.enabled is {le.get('enabled')!r}, expected {bool(case.get('leader_election'))}")
    if case.get("replicas", 1) > 1 and not le.get("enabled"):
        p.append(f"{case.get('replicas')} replicas without leader election: every replica would act on brokers")
    if le.get("lease_name") != expected_lease_name(objs, case):
        p.append(f"config leader_election.lease_name is {le.get('lease_name')!r}, expected {expected_lease_name(objs, case)!r} (the values' or the actuator's full name)")
    port = next(pt["containerPort"] for pt in c["ports"] if pt["name"] == "http")
    if config.get("listen") != f"0.0.0.0:{port}":
        p.append(f"config listen {config.get('listen')} does not match containerPort {port}")
    token_vol = vols.get("token", {}).get("secret", {})
    want_secret = case.get("existing_secret") or d["metadata"]["name"]
    if token_vol.get("secretName") != want_secret or [i["key"] for i in token_vol.get("items", [])] != [key]:
        p.append(f"token volume {token_vol} does not read key {key} of Secret {want_secret}")
    secrets = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in kind(objs, "Secret")}
    own = secrets.get((case["namespace"], d["metadata"]["name"]))
    if case.get("existing_secret"):
        if own:
            p.append("existingSecret is set but the chart still creates a token Secret")
    else:
        if not own or key not in own.get("data", {}):
            p.append(f"no Secret {d['metadata']['name']} with key {key}")
        elif case.get("token") and base64.b64decode(own["data"][key]).decode() != case["token"]:
            p.append("the created Secret does not hold the token given in values")
        elif not case.get("token") and len(base64.b64decode(own["data"][key])) < 32:
            p.append("the generated token is shorter than 32 characters")
    am = case.get("alertmanager_secret")
    if am:
        copy = secrets.get((am["namespace"], am["name"]))
        if not copy or copy.get("data") != (own or {}).get("data"):
            p.append(f"no copy of the token Secret in {am['namespace']}/{am['name']} for Alertmanager")
    if case.get("tls"):
        if config.get("tls") != {"cert_file": f"{mounts.get('tls')}/tls.crt", "key_file": f"{mounts.get('tls')}/tls.key"}:
            p.append(f"TLS on but config tls is {config.get('tls')}")
        if c["readinessProbe"]["httpGet"].get("scheme") != "HTTPS":
            p.append("TLS on but the readiness probe is not HTTPS")
    elif "tls" in config:
        p.append("TLS off but the config has a tls section")
    if "checksum/config" not in d["spec"]["template"]["metadata"].get("annotations", {}):
        p.append("actuator pods lack the checksum/config annotation (config changes would not roll them)")
    if spec.get("automountServiceAccountToken") is not True:
        p.append("actuator pod does not mount its ServiceAccount token (it needs the API)")
    if case.get("persistence"):
        pvcs = kind(objs, "PersistentVolumeClaim")
        claim = vols.get("audit", {}).get("persistentVolumeClaim", {}).get("claimName")
        if not pvcs or pvcs[0]["metadata"]["name"] != claim:
            p.append(f"persistence on but the audit volume {vols.get('audit')} uses no rendered PVC")
        if d["spec"].get("strategy", {}).get("type") != "Recreate":
            p.append("persistence on (ReadWriteOnce) but the strategy is not Recreate")
    elif "emptyDir" not in vols.get("audit", {}):
        p.append("persistence off but the audit volume is not an emptyDir")
    check_service_for(objs, d, "http", p)
    check_keda(objs, case, d, c, config, p)


def check_keda(objs, case, d, c, config, p):
    """KEDA's External Scaler: with actuator.keda.enabled, config keda.listen on the container
    port named grpc (= actuator.keda.port, not the webhook's), a Service port named grpc (same
    port, targetPort grpc, appProtocol grpc); with keda.tls.existingSecret, keda.tls.* naming the
    files of that Secret mounted read-only (only tls.crt, tls.key, and ca.crt exactly when a client
    certificate is required). Without it: no port, no keda.listen, no keda.tls, no volume."""
    k = case.get("keda") or {}
    spec = d["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    kc = config.get("keda") or {}
    cports = {pt.get("name"): pt for pt in c.get("ports", [])}
    svc = [s for s in kind(objs, "Service") if s["metadata"]["name"] == d["metadata"]["name"]]
    sports = {pt.get("name"): pt for pt in (svc[0]["spec"]["ports"] if svc else [])}
    if not k.get("enabled"):
        if "listen" in kc or "tls" in kc:
            p.append(f"KEDA off but the config has keda {kc}")
        if "grpc" in cports or "grpc" in sports:
            p.append("KEDA off but a grpc port is rendered")
        if "keda-tls" in vols or "keda-tls" in mounts:
            p.append("KEDA off but the keda-tls volume is rendered")
        return
    port = k["port"]
    cp = cports.get("grpc")
    if not cp or cp.get("containerPort") != port or cp.get("protocol", "TCP") != "TCP":
        p.append(f"KEDA on: container port grpc is {cp}, expected containerPort {port} (actuator.keda.port)")
    http_port = (cports.get("http") or {}).get("containerPort")
    if cp and cp.get("containerPort") == http_port:
        p.append(f"KEDA on: the grpc container port {port} is the webhook's port")
    if kc.get("listen") != f"0.0.0.0:{(cp or {}).get('containerPort')}" or kc.get("listen") != f"0.0.0.0:{port}":
        p.append(f"config keda.listen {kc.get('listen')!r} is not 0.0.0.0:{port}, the container port grpc")
    sp = sports.get("grpc")
    if not sp or sp.get("port") != port or sp.get("targetPort") != "grpc" or sp.get("appProtocol") != "grpc":
        p.append(f"KEDA on: Service port grpc is {sp}, expected port {port}, targetPort grpc, appProtocol grpc")
    secret = k.get("tls_secret")
    if not secret:
        if "tls" in kc:
            p.append(f"KEDA TLS off but the config has keda.tls {kc['tls']}")
        if "keda-tls" in vols or "keda-tls" in mounts:
            p.append("KEDA TLS off but the keda-tls volume is rendered")
        return
    m = mounts.get("keda-tls") or {}
    vol = (vols.get("keda-tls") or {}).get("secret") or {}
    if vol.get("secretName") != secret:
        p.append(f"KEDA TLS: the keda-tls volume reads {vol.get('secretName')!r}, expected Secret {secret!r}")
    want_keys = ["tls.crt", "tls.key"] + (["ca.crt"] if k.get("require_client_cert") else [])
    items = [(i.get("key"), i.get("path")) for i in vol.get("items", [])]
    if sorted(items) != sorted((x, x) for x in want_keys):
        p.append(f"KEDA TLS: the keda-tls volume mounts {items}, expected exactly {want_keys}")
    if not m or m.get("readOnly") is not True:
        p.append(f"KEDA TLS: the keda-tls mount {m or None} is not read-only")
    base = m.get("mountPath", "<unmounted>")
    want = {"cert_file": f"{base}/tls.crt", "key_file": f"{base}/tls.key"}
    if k.get("require_client_cert"):
        want["client_ca_file"] = f"{base}/ca.crt"
    if kc.get("tls") != want:
        p.append(f"config keda.tls is {kc.get('tls')}, expected {want} (the mounted Secret {secret})")


def check_service_for(objs, workload, port_name, p):
    labels = workload["spec"]["template"]["metadata"]["labels"]
    svcs = [s for s in kind(objs, "Service") if s["metadata"]["name"] == workload["metadata"]["name"]]
    if not svcs:
        p.append(f"{name_of(workload)}: no Service of the same name")
        return
    s = svcs[0]
    if not set(s["spec"]["selector"].items()) <= set(labels.items()):
        p.append(f"{name_of(s)}: selector {s['spec']['selector']} does not select the pods {labels}")
    tps = [pt.get("targetPort") for pt in s["spec"]["ports"]]
    cports = {pt["name"] for c in workload["spec"]["template"]["spec"]["containers"] for pt in c.get("ports", [])}
    for tp in tps:
        if isinstance(tp, str) and tp not in cports:
            p.append(f"{name_of(s)}: targetPort {tp} is no container port")
    for sm in kind(objs, "ServiceMonitor"):
        if sm["metadata"]["name"] != workload["metadata"]["name"]:
            continue
        if not set(sm["spec"]["selector"]["matchLabels"].items()) <= set(s["metadata"]["labels"].items()):
            p.append(f"{name_of(sm)}: selector does not match Service {s['metadata']['name']}")
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in {pt["name"] for pt in s["spec"]["ports"]}:
                p.append(f"{name_of(sm)}: endpoint port {ep['port']} is not a port of the Service")


def relabel_value(relabelings, target_label):
    for r in relabelings:
        if r.get("targetLabel") == target_label:
            return r
    return None


def check_monitors(objs, case, p):
    sms = {sm["metadata"]["name"]: sm for sm in kind(objs, "ServiceMonitor")}
    act = [n for n in sms if n.endswith("-actuator")]
    if case.get("actuator", True) and case.get("actuator_sm", True) and not act:
        p.append("no ServiceMonitor for the actuator")
    for n in act:
        r = relabel_value(sms[n]["spec"]["endpoints"][0].get("relabelings", []), "job")
        if not r or r.get("replacement") != "medic-actuator":
            p.append(f"ServiceMonitor {n}: job is not set to medic-actuator")
    agent_sm = [n for n in sms if n.endswith("-agent")]
    if bool(agent_sm) != bool(case.get("cluster_mode")):
        p.append(f"cluster-mode agent ServiceMonitor rendered: {bool(agent_sm)}, expected {bool(case.get('cluster_mode'))}")
    for n in agent_sm:
        ep = sms[n]["spec"]["endpoints"][0]
        if not ep.get("honorLabels"):
            p.append(f"ServiceMonitor {n}: honorLabels is not true (the agent's cluster label would be renamed)")
        r = relabel_value(ep.get("relabelings", []), "job")
        if not r or r.get("replacement") != "medic-agent":
            p.append(f"ServiceMonitor {n}: job is not medic-agent")
        if relabel_value(ep.get("relabelings", []), "broker"):
            p.append(f"ServiceMonitor {n}: a cluster-mode target must not carry a broker label")
    pms = kind(objs, "PodMonitor")
    if bool(pms) != bool(case.get("pod_monitor")):
        p.append(f"PodMonitor rendered: {bool(pms)}, expected {bool(case.get('pod_monitor'))}")
    for pm in pms:
        ep = pm["spec"]["podMetricsEndpoints"][0]
        rl = ep.get("relabelings", [])
        if ep.get("port") != "medic-metrics":
            p.append(f"{name_of(pm)}: scrapes port {ep.get('port')}, not the sidecar's medic-metrics")
        if not ep.get("honorLabels"):
            p.append(f"{name_of(pm)}: honorLabels is not true (cluster and broker would become exported_*)")
        job, cl, br = relabel_value(rl, "job"), relabel_value(rl, "cluster"), relabel_value(rl, "broker")
        if not job or job.get("replacement") != "medic-agent":
            p.append(f"{name_of(pm)}: job is not medic-agent")
        if not cl or cl.get("replacement") != case.get("cluster", "kafka"):
            p.append(f"{name_of(pm)}: target label cluster is not {case.get('cluster', 'kafka')!r}")
        if not br or br.get("sourceLabels") != ["__meta_kubernetes_pod_name"]:
            p.append(f"{name_of(pm)}: no broker label from the pod name")
        else:
            # Prometheus anchors relabel regexes: check the broker comes out as the ordinal.
            for pod, want in (("kafka-0", "0"), ("kafka-12", "12"), ("prod-pool-a-5", "5"), ("kafka2-broker-3", "3")):
                m = re.fullmatch(br["regex"], pod)
                got = m.expand(br["replacement"].replace("$", "\\")) if m else None
                if got != want:
                    p.append(f"{name_of(pm)}: pod {pod} gets broker {got!r}, expected {want!r}")


def check_rules(objs, case, p):
    prs = kind(objs, "PrometheusRule")
    if not case.get("rules", True):
        if prs:
            p.append("prometheusRule disabled but rendered")
        return
    if len(prs) != 1:
        p.append(f"expected 1 PrometheusRule, got {len(prs)}")
        return
    with open(RULES, encoding="utf-8") as f:
        want = yaml.safe_load(f)
    got = prs[0]["spec"]
    if set(got) != {"groups"}:
        p.append(f"PrometheusRule spec has keys {sorted(got)}, expected only groups")
    if got.get("groups") != want["groups"]:
        gn = [g["name"] for g in got.get("groups", [])]
        wn = [g["name"] for g in want["groups"]]
        detail = f"groups {gn} vs {wn}" if gn != wn else "same group names, different rules"
        p.append(f"PrometheusRule groups differ from rules/kafka-medic.rules.yml ({detail})")
    ns = case.get("rules_namespace") or case["namespace"]
    if prs[0]["metadata"]["namespace"] != ns:
        p.append(f"PrometheusRule in {prs[0]['metadata']['namespace']}, expected {ns}")


def check_dashboards(objs, case, p):
    cms = [cm for cm in kind(objs, "ConfigMap") if (cm["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "dashboards"]
    files = sorted(f for f in os.listdir(DASHBOARDS) if f.endswith(".json"))
    if not case.get("dashboards", True):
        if cms:
            p.append("dashboards disabled but ConfigMaps rendered")
        return
    by_file = {}
    for cm in cms:
        for k, v in cm.get("data", {}).items():
            by_file[k] = (cm, v)
        if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
            p.append(f"{name_of(cm)}: not labelled grafana_dashboard: \"1\"")
        ns = case.get("dashboards_namespace") or case["namespace"]
        if cm["metadata"]["namespace"] != ns:
            p.append(f"{name_of(cm)}: in namespace {cm['metadata']['namespace']}, expected {ns}")
    if sorted(by_file) != files:
        p.append(f"dashboard ConfigMaps hold {sorted(by_file)}, expected every dashboards/*.json {files}")
    for f in files:
        if f in by_file:
            with open(os.path.join(DASHBOARDS, f), encoding="utf-8") as fh:
                if by_file[f][1] != fh.read():
                    p.append(f"ConfigMap data {f} is not byte-identical to dashboards/{f}")


def sidecar_containers(objs):
    """medic-agent containers of broker pods: from StatefulSets (not the chart's own cluster-mode
    agent StatefulSet) and from the Kyverno policy."""
    out = []
    agents = cluster_agents(objs)
    for o in objs:
        if o.get("kind") == "StatefulSet" and o not in agents:
            spec = o["spec"]["template"]["spec"]
            for c in spec["containers"]:
                if c["name"] == "medic-agent":
                    out.append((name_of(o), c, spec, o))
        if o.get("kind") == "ClusterPolicy":
            for rule in o["spec"]["rules"]:
                spec = rule["mutate"]["patchStrategicMerge"]["spec"]
                for c in spec["containers"]:
                    out.append((name_of(o), c, spec, o))
    return out


def check_sidecar(objs, case, p):
    """The sidecar as included in a broker pod: shared PID namespace, log dirs read-only, broker id
    from the ordinal, and every mount backed by a volume of the pod."""
    found = sidecar_containers(objs)
    want = case.get("sidecars", 0)
    if len(found) != want:
        p.append(f"expected {want} medic-agent sidecar(s) in broker pods, found {len(found)}")
    for owner, c, spec, obj in found:
        where = f"{owner} sidecar"
        if spec.get("shareProcessNamespace") is not True:
            p.append(f"{where}: the pod does not set shareProcessNamespace: true")
        env = env_of(c)
        src = case.get("broker_id_source", "podIndexLabel")
        bid = env.get("MEDIC_AGENT_BROKER_ID")
        if obj["kind"] == "ClusterPolicy":
            if not bid or "request.object.metadata.name" not in bid.get("value", ""):
                p.append(f"{where}: broker id is not taken from the pod name ({bid})")
        elif src == "podIndexLabel":
            ref = ((bid or {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            if ref != "metadata.labels['apps.kubernetes.io/pod-index']":
                p.append(f"{where}: MEDIC_AGENT_BROKER_ID is not the pod-index label ({bid})")
            if c.get("command"):
                p.append(f"{where}: overrides the command although no shell is needed")
        else:
            if bid:
                p.append(f"{where}: MEDIC_AGENT_BROKER_ID set as env although the command derives it")
            if c.get("command", [None])[:2] != ["/bin/sh", "-c"] or "${HOSTNAME##*-}" not in c["command"][2]:
                p.append(f"{where}: command does not derive the broker id from the hostname: {c.get('command')}")
        for k, v in case.get("sidecar_env", {}).items():
            if env.get(k, {}).get("value") != v:
                p.append(f"{where}: {k} is {env.get(k, {}).get('value')!r}, expected {v!r}")
        pod_vols = {v["name"] for v in spec.get("volumes", []) or []}
        if obj["kind"] == "StatefulSet":
            pod_vols |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        for ld in case.get("log_dirs", []):
            m = mounts.get(ld["volume"])
            if not m or m.get("mountPath") != ld["mountPath"] or m.get("readOnly") is not True:
                p.append(f"{where}: log dir volume {ld['volume']} is not mounted read-only at {ld['mountPath']} ({m})")
        if obj["kind"] == "StatefulSet":
            for m in mounts.values():
                if m["name"] not in pod_vols:
                    p.append(f"{where}: mount {m['name']} has no volume in the pod")
            for vc in obj["spec"].get("volumeClaimTemplates", []):
                pass
        writable = [m["name"] for m in mounts.values() if not m.get("readOnly")]
        if writable:
            p.append(f"{where}: writable mounts {writable}; the agent needs none")
        if not any(pt.get("name") == "medic-metrics" for pt in c.get("ports", [])):
            p.append(f"{where}: no port named medic-metrics (the PodMonitor scrapes it)")
        for pm in kind(objs, "PodMonitor"):
            if obj["kind"] != "StatefulSet":
                continue
            labels = obj["spec"]["template"]["metadata"]["labels"]
            sel = pm["spec"]["selector"].get("matchLabels", {})
            if not set(sel.items()) <= set(labels.items()):
                p.append(f"{name_of(pm)}: selector {sel} does not select the broker pods {labels}")


def cluster_agents(objs):
    """The cluster-mode agent's StatefulSet(s) (by name; a sidecar's broker StatefulSet is not one)."""
    return [d for d in kind(objs, "StatefulSet") if d["metadata"]["name"].endswith("-agent")]


def check_cluster_agent(objs, case, p):
    deps = [d for d in kind(objs, "Deployment") if d["metadata"]["name"].endswith("-agent")]
    if deps:
        p.append(f"{name_of(deps[0])}: the cluster-mode agent is a Deployment, expected a StatefulSet (one pod per shard)")
    sets = cluster_agents(objs)
    if bool(sets) != bool(case.get("cluster_mode")):
        p.append(f"cluster-mode agent rendered: {bool(sets)}, expected {bool(case.get('cluster_mode'))}")
    for d in sets:
        spec = d["spec"]["template"]["spec"]
        c = spec["containers"][0]
        env = env_of(c)
        if "MEDIC_AGENT_BROKER_ID" in env:
            p.append(f"{name_of(d)}: a cluster-mode agent must not have a broker id")
        check_shards(objs, d, env, case, p)
        if spec.get("automountServiceAccountToken") is not False:
            p.append(f"{name_of(d)}: mounts a ServiceAccount token it does not need")
        for k, v in case.get("cluster_env", {}).items():
            if env.get(k, {}).get("value") != v:
                p.append(f"{name_of(d)}: {k} is {env.get(k, {}).get('value')!r}, expected {v!r}")
        vols = {v["name"] for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            if m["name"] not in vols:
                p.append(f"{name_of(d)}: mount {m['name']} has no volume")
            if not m.get("readOnly"):
                p.append(f"{name_of(d)}: mount {m['name']} is writable")
        check_service_for(objs, d, "medic-metrics", p)


def check_shards(objs, sts, env, case, p):
    """replicas = shards, MEDIC_AGENT_SHARD_COUNT = shards, the index from the pod name (POD_NAME
    from the downward API, never a fixed MEDIC_AGENT_SHARD_INDEX, which every pod would share),
    and a headless governing Service that the ServiceMonitor scrapes (one target per shard)."""
    want = case.get("shards", 1)
    if sts["spec"].get("replicas") != want:
        p.append(f"{name_of(sts)}: replicas {sts['spec'].get('replicas')}, expected shards = {want}")
    got = env.get("MEDIC_AGENT_SHARD_COUNT", {}).get("value")
    if got != str(want):
        p.append(f"{name_of(sts)}: MEDIC_AGENT_SHARD_COUNT is {got!r}, expected {str(want)!r} (shards)")
    if "MEDIC_AGENT_SHARD_INDEX" in env:
        p.append(f"{name_of(sts)}: MEDIC_AGENT_SHARD_INDEX is set, so every pod would be the same shard; the index must come from the pod name")
    ref = (env.get("POD_NAME", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
    if ref != "metadata.name":
        p.append(f"{name_of(sts)}: POD_NAME is {ref!r}, expected the downward API fieldRef metadata.name (the shard index is its ordinal)")
    svc = [s for s in kind(objs, "Service") if s["metadata"]["name"] == sts["spec"].get("serviceName")]
    if not svc:
        p.append(f"{name_of(sts)}: serviceName {sts['spec'].get('serviceName')!r} is no Service of the release")
    elif svc[0]["spec"].get("clusterIP") != "None":
        p.append(f"{name_of(svc[0])}: not headless (clusterIP {svc[0]['spec'].get('clusterIP')!r}): a Service address would answer from a different shard on each scrape")


def check_images(objs, case, p):
    for owner, spec, _ in pod_specs(objs):
        for c in spec["containers"]:
            if c["name"] in ("medic-agent", "medic-actuator"):
                want = case.get("images", {}).get(c["name"])
                if want and c["image"] != want:
                    p.append(f"{owner} {c['name']}: image {c['image']}, expected {want}")


def check_release(objs, case, notes=None):
    p = []
    # A broker StatefulSet of the sidecar example chart is not the chart's own.
    check_labels_and_names([o for o in objs if o.get("kind") != "StatefulSet" or o in cluster_agents(objs)], p)
    check_security(objs, p)
    token = case.get("token")
    if not token and case.get("actuator", True) and not case.get("existing_secret"):
        # A generated token: read it from the Secret, then look for it everywhere else.
        for s in kind(objs, "Secret"):
            if s["metadata"]["name"].endswith("-actuator"):
                token = base64.b64decode(next(iter(s["data"].values()))).decode()
    check_token(objs, token, notes, p)
    check_rbac(objs, case, p)
    check_actuator(objs, case, p)
    check_monitors(objs, case, p)
    check_rules(objs, case, p)
    check_dashboards(objs, case, p)
    check_sidecar(objs, case, p)
    check_cluster_agent(objs, case, p)
    check_images(objs, case, p)
    return p
