"""KEDA's side of the chart, checked offline: the example ScaledObjects of helm/kafka-medic/examples
against what KEDA's CRD accepts and what medic-actuator answers, and a minimal gRPC client that
asks the real actuator's External Scaler for a trigger's metric spec.

kubernetes-validate has no schema for KEDA's CRDs, so scaled_object_problems() checks the fields
of keda.sh/v1alpha1 ScaledObject and TriggerAuthentication structurally (the field names and types
of KEDA 2.x's CRDs, required fields, trigger metadata as a map of strings, minReplicaCount <=
maxReplicaCount), and the HPA behaviour is validated by kubernetes-validate inside a
HorizontalPodAutoscaler. example_problems() then ties a ScaledObject to the chart rendering it was
written for (scalerAddress = the actuator Service's grpc port, TLS as the values say, the group's
policy says scaler: keda, the metric is one the policy can serve).

The gRPC client speaks HTTP/2 with prior knowledge (or TLS with ALPN h2, as KEDA's grpc-go does),
sends one unary call, and returns the response message; it needs no grpc or h2 module. Response
headers are not decoded (HPACK): a call that returns no message failed (the actuator's log says
why).
"""
import math
import re
import socket
import ssl
import struct

# What medic-actuator reads from a trigger's metadata (actuator/src/keda/service.rs), and what
# KEDA's external scalers read themselves (pkg/scalers/external_scaler.go: scalerAddress,
# enableTLS, unsafeSsl; KEDA passes every key on to the scaler).
ACTUATOR_METADATA = {"cluster", "consumergroup", "metric"}
KEDA_EXTERNAL_METADATA = {"scalerAddress", "enableTLS", "unsafeSsl"}
METRICS = {"lag": "kafka_medic_consumergroup_lag", "lag_seconds": "kafka_medic_consumergroup_lag_seconds"}
EXTERNAL_TYPES = {"external", "external-push"}
# TriggerAuthentication parameters of the external scalers (authParams in external_scaler.go).
EXTERNAL_AUTH_PARAMS = {"caCert", "tlsClientCert", "tlsClientKey"}

# Fields of KEDA 2.x's ScaledObject and TriggerAuthentication CRDs that these examples may use.
SO_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
           "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SO_INT_FIELDS = ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                 "minReplicaCount", "maxReplicaCount")
SCALE_TARGET_REF = {"name", "kind", "apiVersion", "envSourceContainerName"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
AUTH_REF = {"name", "kind"}
ADVANCED = {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TA_SPEC = {"secretTargetRef", "env", "hashiCorpVault", "podIdentity", "azureKeyVault",
           "awsSecretManager", "gcpSecretManager", "configMapTargetRef", "boundServiceAccountToken"}
SECRET_TARGET_REF = {"parameter", "name", "key"}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _unknown(obj, allowed, where, p):
    if not isinstance(obj, dict):
        p.append(f"{where}: is {type(obj).__name__}, expected a mapping")
        return False
    extra = sorted(set(obj) - allowed)
    if extra:
        p.append(f"{where}: unknown field(s) {extra} (KEDA's CRD has {sorted(allowed)})")
    return True


def _name_ok(md, where, p):
    for key in ("name", "namespace"):
        v = (md or {}).get(key)
        if not isinstance(v, str) or len(v) > 63 or not DNS_LABEL.fullmatch(v):
            p.append(f"{where}: metadata.{key} {v!r} is not a DNS label")


def scaled_object_problems(so, where):
    """Structural check of one keda.sh/v1alpha1 ScaledObject (the fields these examples use)."""
    p = []
    if so.get("apiVersion") != "keda.sh/v1alpha1" or so.get("kind") != "ScaledObject":
        p.append(f"{where}: apiVersion/kind {so.get('apiVersion')}/{so.get('kind')}, expected keda.sh/v1alpha1/ScaledObject")
    _unknown(so, {"apiVersion", "kind", "metadata", "spec"}, where, p)
    _name_ok(so.get("metadata"), where, p)
    spec = so.get("spec")
    if not _unknown(spec, SO_SPEC, f"{where} spec", p):
        return p
    ref = spec.get("scaleTargetRef")
    if _unknown(ref, SCALE_TARGET_REF, f"{where} spec.scaleTargetRef", p):
        if not isinstance(ref.get("name"), str) or not ref.get("name"):
            p.append(f"{where}: spec.scaleTargetRef.name is required")
        if ref.get("kind", "Deployment") != "Deployment" or ref.get("apiVersion", "apps/v1") != "apps/v1":
            p.append(f"{where}: spec.scaleTargetRef is {ref.get('apiVersion')}/{ref.get('kind')}; kafka-medic's policies name Deployments (apps/v1)")
    for f in SO_INT_FIELDS:
        if f in spec and (not isinstance(spec[f], int) or isinstance(spec[f], bool) or spec[f] < 0):
            p.append(f"{where}: spec.{f} {spec[f]!r} is not a non-negative integer")
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)  # KEDA's defaults
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        p.append(f"{where}: spec.minReplicaCount {lo} is greater than maxReplicaCount {hi}")
    adv = spec.get("advanced")
    if adv is not None and _unknown(adv, ADVANCED, f"{where} spec.advanced", p):
        hpa = adv.get("horizontalPodAutoscalerConfig")
        if hpa is not None:
            _unknown(hpa, HPA_CONFIG, f"{where} spec.advanced.horizontalPodAutoscalerConfig", p)
    triggers = spec.get("triggers")
    if not isinstance(triggers, list) or not triggers:
        p.append(f"{where}: spec.triggers must be a non-empty list")
        return p
    for i, t in enumerate(triggers):
        tw = f"{where} spec.triggers[{i}]"
        if not _unknown(t, TRIGGER, tw, p):
            continue
        if not isinstance(t.get("type"), str) or not t.get("type"):
            p.append(f"{tw}: type is required")
        md = t.get("metadata")
        if not isinstance(md, dict):
            p.append(f"{tw}: metadata is required (a map of strings)")
        else:
            for k, v in md.items():
                if not isinstance(v, str):
                    p.append(f"{tw}: metadata.{k} is {type(v).__name__} {v!r}; KEDA's CRD takes strings only (quote it)")
        if "authenticationRef" in t and _unknown(t["authenticationRef"], AUTH_REF, f"{tw}.authenticationRef", p):
            if not t["authenticationRef"].get("name"):
                p.append(f"{tw}: authenticationRef.name is required")
            if t["authenticationRef"].get("kind", "TriggerAuthentication") not in ("TriggerAuthentication", "ClusterTriggerAuthentication"):
                p.append(f"{tw}: authenticationRef.kind {t['authenticationRef'].get('kind')!r}")
        if t.get("metricType", "AverageValue") not in ("AverageValue", "Value", "Utilization"):
            p.append(f"{tw}: metricType {t.get('metricType')!r} is not AverageValue, Value or Utilization")
    return p


def trigger_authentication_problems(ta, where):
    p = []
    if ta.get("apiVersion") != "keda.sh/v1alpha1" or ta.get("kind") != "TriggerAuthentication":
        p.append(f"{where}: apiVersion/kind {ta.get('apiVersion')}/{ta.get('kind')}, expected keda.sh/v1alpha1/TriggerAuthentication")
    _unknown(ta, {"apiVersion", "kind", "metadata", "spec"}, where, p)
    _name_ok(ta.get("metadata"), where, p)
    spec = ta.get("spec")
    if _unknown(spec, TA_SPEC, f"{where} spec", p):
        for i, r in enumerate(spec.get("secretTargetRef") or []):
            if _unknown(r, SECRET_TARGET_REF, f"{where} spec.secretTargetRef[{i}]", p):
                missing = sorted(SECRET_TARGET_REF - set(r))
                if missing:
                    p.append(f"{where} spec.secretTargetRef[{i}]: {missing} required")
    return p


def hpa_for_behavior(so):
    """A HorizontalPodAutoscaler carrying the ScaledObject's HPA behaviour, for kubernetes-validate
    (KEDA copies spec.advanced.horizontalPodAutoscalerConfig.behavior into the HPA it makes)."""
    behavior = (((so.get("spec") or {}).get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
    if behavior is None:
        return None
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{so['metadata']['name']}", "namespace": so["metadata"]["namespace"]},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": so["spec"]["scaleTargetRef"]["name"]},
                 "maxReplicas": so["spec"].get("maxReplicaCount", 100), "behavior": behavior},
    }


def duration_seconds(text):
    """humantime as in the policies (5m, 1h30m, 90s) -> seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+)\s*(ms|s|m|h|d)", str(text)):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(str(text)) and pos else None


def written_for(text):
    """(release, namespace, values file) from the example's `Written for: helm install ...` line."""
    m = re.search(r"^# Written for: helm install (\S+) helm/kafka-medic -n (\S+) -f helm/kafka-medic/(examples/\S+)$", text, re.M)
    return m.groups() if m else None


def commented_kafka_trigger(text):
    """The `- type: kafka` block commented between `# --- kafka trigger` and `# ---`, parsed."""
    import yaml
    m = re.search(r"^# --- kafka trigger\n((?:#.*\n)+?)# ---\n", text, re.M)
    if not m:
        return None
    block = "\n".join(line[1:] for line in m.group(1).splitlines())
    try:
        got = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    return got[0] if isinstance(got, list) and got else None


def example_problems(docs, text, objs, values, release, ns, where):
    """One example file against the chart rendering it was written for. docs: the file's objects;
    objs: the rendered objects; values: the merged values of that rendering."""
    p = []
    a = values["actuator"]
    k = a["keda"]
    sos = [d for d in docs if d.get("kind") == "ScaledObject"]
    tas = {(d["metadata"].get("namespace"), d["metadata"].get("name")): d for d in docs if d.get("kind") == "TriggerAuthentication"}
    if not sos:
        return [f"{where}: no ScaledObject"]
    for d in docs:
        if d.get("kind") == "ScaledObject":
            p += scaled_object_problems(d, f"{where} ScaledObject {d.get('metadata', {}).get('name')}")
        elif d.get("kind") == "TriggerAuthentication":
            p += trigger_authentication_problems(d, f"{where} TriggerAuthentication {d.get('metadata', {}).get('name')}")
        elif d.get("kind") != "Certificate":
            p.append(f"{where}: unexpected object {d.get('apiVersion')}/{d.get('kind')}")
    if not k.get("enabled"):
        return p + [f"{where}: written for values with actuator.keda.enabled off"]
    svcs = [s for s in objs if s.get("kind") == "Service" and s["metadata"]["name"].endswith("-actuator")]
    grpc = [pt for s in svcs for pt in s["spec"]["ports"] if pt.get("name") == "grpc"]
    if not svcs or not grpc:
        return p + [f"{where}: the rendering ({release} in {ns}) has no actuator Service port grpc"]
    address = f"{svcs[0]['metadata']['name']}.{svcs[0]['metadata']['namespace']}.svc:{grpc[0]['port']}"
    tls, mtls = bool(k["tls"]["existingSecret"]), bool(k["tls"]["requireClientCert"])
    policies = {(pol["cluster"], pol["consumergroup"]): pol for pol in a.get("policies") or []}
    for so in sos:
        sw = f"{where} ScaledObject {so['metadata'].get('namespace')}/{so['metadata'].get('name')}"
        spec = so.get("spec") or {}
        for i, t in enumerate(spec.get("triggers") or []):
            tw = f"{sw} trigger {i}"
            md = t.get("metadata") or {}
            if t.get("type") not in EXTERNAL_TYPES:
                p.append(f"{tw}: type {t.get('type')!r}, expected external-push (or external)")
                continue
            unknown = sorted(set(md) - ACTUATOR_METADATA - KEDA_EXTERNAL_METADATA)
            if unknown:
                p.append(f"{tw}: metadata {unknown} is read by neither KEDA's external scaler ({sorted(KEDA_EXTERNAL_METADATA)}) nor medic-actuator ({sorted(ACTUATOR_METADATA)})")
            if md.get("scalerAddress") != address:
                p.append(f"{tw}: scalerAddress {md.get('scalerAddress')!r}, but release {release} in {ns} serves the External Scaler at {address} (Service port grpc)")
            if t.get("metricType", "AverageValue") != "AverageValue":
                p.append(f"{tw}: metricType {t.get('metricType')!r}: the actuator's targets are per replica (AverageValue)")
            if (md.get("enableTLS") == "true") != tls:
                p.append(f"{tw}: enableTLS {md.get('enableTLS')!r} but the External Scaler {'serves' if tls else 'does not serve'} TLS (actuator.keda.tls.existingSecret)")
            params = set()
            ref = t.get("authenticationRef")
            if ref:
                ta = tas.get((so["metadata"].get("namespace"), ref.get("name")))
                if not ta:
                    p.append(f"{tw}: authenticationRef {ref.get('name')!r} names no TriggerAuthentication of namespace {so['metadata'].get('namespace')} in this file")
                else:
                    params = {r.get("parameter") for r in (ta.get("spec") or {}).get("secretTargetRef") or []}
                    odd = sorted(params - EXTERNAL_AUTH_PARAMS)
                    if odd:
                        p.append(f"{tw}: TriggerAuthentication parameters {odd} are not the external scalers' {sorted(EXTERNAL_AUTH_PARAMS)}")
            if tls and "caCert" not in params and md.get("unsafeSsl") != "true":
                p.append(f"{tw}: TLS without caCert: KEDA would verify the actuator's certificate against its system roots")
            if mtls and not {"tlsClientCert", "tlsClientKey"} <= params:
                p.append(f"{tw}: the External Scaler requires a client certificate (requireClientCert) but the trigger presents none (tlsClientCert, tlsClientKey)")
            metric = md.get("metric", "lag")
            if metric not in METRICS:
                p.append(f"{tw}: metric {metric!r} is not one of {sorted(METRICS)}")
            if not md.get("cluster") or not md.get("consumergroup"):
                p.append(f"{tw}: metadata needs cluster and consumergroup (the actuator answers InvalidArgument)")
                continue
            pol = policies.get((md["cluster"], md["consumergroup"]))
            if not pol:
                p.append(f"{tw}: no policy for cluster {md['cluster']!r} consumergroup {md['consumergroup']!r} in the values (the actuator answers NotFound)")
                continue
            if (pol.get("scaler") or "actuator") != "keda":
                p.append(f"{tw}: the policy of {md['cluster']}/{md['consumergroup']} does not say scaler: keda (the actuator would scale the Deployment too)")
            dep = pol["deployment"]
            if (dep["namespace"], dep["name"]) != (so["metadata"].get("namespace"), (spec.get("scaleTargetRef") or {}).get("name")):
                p.append(f"{tw}: scales {so['metadata'].get('namespace')}/{(spec.get('scaleTargetRef') or {}).get('name')}, but the policy names {dep['namespace']}/{dep['name']}")
            if metric == "lag_seconds" and not pol.get("lag_seconds_per_replica"):
                p.append(f"{tw}: metric lag_seconds but the policy has no lag_seconds_per_replica (the actuator answers InvalidArgument)")
            window = ((((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}).get("scaleDown") or {}).get("stabilizationWindowSeconds")
            if window is not None and window != duration_seconds(pol.get("scale_down_cooldown", "5m")):
                p.append(f"{tw}: scaleDown stabilizationWindowSeconds {window}, but the policy's scale_down_cooldown is {pol.get('scale_down_cooldown', '5m')}")
    kafka = commented_kafka_trigger(text)
    if "--- kafka trigger" in text:
        first = ((sos[0].get("spec") or {}).get("triggers") or [{}])[0].get("metadata") or {}
        pol = policies.get((first.get("cluster"), first.get("consumergroup"))) or {}
        if not kafka or kafka.get("type") != "kafka":
            p.append(f"{where}: the commented kafka trigger does not parse as a `- type: kafka` block")
        else:
            if (kafka.get("metadata") or {}).get("consumerGroup") != first.get("consumergroup"):
                p.append(f"{where}: the commented kafka trigger's consumerGroup {(kafka.get('metadata') or {}).get('consumerGroup')!r} is not the external trigger's consumergroup {first.get('consumergroup')!r}")
            if str((kafka.get("metadata") or {}).get("lagThreshold")) != str(pol.get("lag_per_replica", 1000)):
                p.append(f"{where}: the commented kafka trigger's lagThreshold {(kafka.get('metadata') or {}).get('lagThreshold')!r} is not the policy's lag_per_replica {pol.get('lag_per_replica', 1000)}")
    for c in (d for d in docs if d.get("kind") == "Certificate"):
        spec = c.get("spec") or {}
        if spec.get("secretName") == k["tls"]["existingSecret"]:
            if c["metadata"].get("namespace") != ns:
                p.append(f"{where}: Certificate {c['metadata'].get('name')} makes the External Scaler's Secret in {c['metadata'].get('namespace')}, not the release namespace {ns}")
            if address.rsplit(":", 1)[0] not in (spec.get("dnsNames") or []):
                p.append(f"{where}: Certificate {c['metadata'].get('name')} names {spec.get('dnsNames')}, not the scalerAddress host {address.rsplit(':', 1)[0]}")
        else:
            users = [ta for ta in tas.values() if any(r.get("name") == spec.get("secretName") for r in (ta.get("spec") or {}).get("secretTargetRef") or [])]
            if not users:
                p.append(f"{where}: Certificate {c['metadata'].get('name')} makes Secret {spec.get('secretName')!r}, which neither actuator.keda.tls.existingSecret nor a TriggerAuthentication uses")
            for ta in users:
                if ta["metadata"].get("namespace") != c["metadata"].get("namespace"):
                    p.append(f"{where}: Certificate {c['metadata'].get('name')} is in {c['metadata'].get('namespace')}, its TriggerAuthentication in {ta['metadata'].get('namespace')}")
    return p


# ---------------------------------------------------------------- a minimal gRPC client

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, payload):
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def scaled_object_ref(name, namespace, metadata):
    """externalscaler.ScaledObjectRef {name = 1; namespace = 2; map<string,string> scalerMetadata = 3}."""
    out = _field(1, name.encode()) + _field(2, namespace.encode())
    for k, v in sorted(metadata.items()):
        out += _field(3, _field(1, k.encode()) + _field(2, str(v).encode()))
    return out


def _read_varint(b, i):
    shift = n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def decode_fields(b):
    """A protobuf message -> [(field number, wire type, value)]."""
    out, i = [], 0
    while i < len(b):
        key, i = _read_varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = _read_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((num, wt, v))
    return out


def metric_specs(msg):
    """GetMetricSpecResponse -> [{metricName, targetSize, targetSizeFloat}]."""
    specs = []
    for num, wt, v in decode_fields(msg):
        if num == 1 and wt == 2:
            s = {"metricName": "", "targetSize": 0, "targetSizeFloat": 0.0}
            for n2, w2, v2 in decode_fields(v):
                if n2 == 1 and w2 == 2:
                    s["metricName"] = v2.decode()
                elif n2 == 2 and w2 == 0:
                    s["targetSize"] = v2
                elif n2 == 3 and w2 == 1:
                    s["targetSizeFloat"] = struct.unpack("<d", v2)[0]
            specs.append(s)
    return specs


def _hpack_int(n, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = bytearray([first | limit])
    n -= limit
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def _hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    out = b"\x00"
    for s in (name.encode(), value.encode()):
        out += _hpack_int(len(s), 7) + s
    return out


def _frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def grpc_unary(host, port, method, request, authority, tls=None, timeout=5.0):
    """Call `method` (e.g. /externalscaler.ExternalScaler/GetMetricSpec) once. tls: None (h2c with
    prior knowledge) or an ssl.SSLContext (ALPN h2, server name = authority's host). Returns
    (message bytes or None, note): None when the server sent no message (an error status, or the
    connection was refused or closed)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname=authority.rsplit(":", 1)[0])
            if sock.selected_alpn_protocol() != "h2":
                return None, f"TLS without ALPN h2 (got {sock.selected_alpn_protocol()!r}); gRPC clients refuse it"
        headers = b"".join(_hpack_literal(n, v) for n, v in (
            (":method", "POST"), (":scheme", "https" if tls else "http"), (":path", method),
            (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")))
        body = b"\x00" + struct.pack(">I", len(request)) + request
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0)
                     + _frame(1, 0x4, 1, headers) + _frame(0, 0x1, 1, body))
        buf, data, ended = b"", b"", False
        while not ended:
            while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                chunk = sock.recv(65536)
                if not chunk:
                    return (data[5:] if len(data) >= 5 else None), "the server closed the connection"
                buf += chunk
            n = int.from_bytes(buf[:3], "big")
            ftype, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + n], buf[9 + n:]
            if ftype == 4 and not flags & 1:
                sock.sendall(_frame(4, 1, 0))  # SETTINGS ACK
            elif ftype == 6 and not flags & 1:
                sock.sendall(_frame(6, 1, 0, payload))  # PING ACK
            elif ftype == 7:
                return None, "GOAWAY from the server"
            elif stream == 1 and ftype == 3:
                return None, "the server reset the stream"
            elif stream == 1 and ftype == 0:
                if flags & 0x8:  # padded
                    payload = payload[1:len(payload) - payload[0]]
                data += payload
                ended = bool(flags & 1)
            elif stream == 1 and ftype == 1:
                ended = bool(flags & 1)
        if len(data) < 5:
            return None, "no response message (the call failed: an error status in the trailers)"
        return data[5:5 + int.from_bytes(data[1:5], "big")], ""
    except (OSError, ssl.SSLError) as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        sock.close()


def expected_metric_spec(policy, metric):
    """What GetMetricSpec must answer for a policy and a trigger's metric (README "With KEDA")."""
    if metric == "lag_seconds":
        t = float(policy["lag_seconds_per_replica"])
        return {"metricName": METRICS["lag_seconds"], "targetSize": math.ceil(t), "targetSizeFloat": t}
    t = int(policy.get("lag_per_replica", 1000))
    return {"metricName": METRICS["lag"], "targetSize": t, "targetSizeFloat": float(t)}
