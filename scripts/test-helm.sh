#!/usr/bin/env bash
# Checks the Helm chart helm/kafka-medic offline. Called by scripts/test.sh; can also be run
# alone from anywhere in the checkout.
#   1. helm lint --strict, with the default values and with each ci/*-values.yaml, and the
#      sidecar example chart (helm/tests/sidecar-chart) that includes the agent snippet
#   2. values.yaml: a comment above every key; README.md's values table lists every value
#      (helm/tests/values_table.py; regenerate with --write)
#   3. cargo build of medic-agent and medic-actuator (incremental after cargo test), so that
#      the rendered settings can be run by the real binaries
#   4. helm/tests/check_chart.py: helm template with the default values and each ci file,
#      kubernetes-validate --strict (1.25 and 1.37), assertions on the rendered objects (RBAC,
#      token only in Secrets, securityContext, probes, PrometheusRule == rules/, dashboards ==
#      dashboards/, monitors, sidecar), NOTES.txt's Alertmanager config against
#      rules/alertmanager.example.yml and amtool, helm package, the sidecar example chart, the
#      real binaries on the rendered settings, bad values that must fail, and a self-test that
#      breaks each checked property once and expects it reported
#   5. the values-table check against a values.yaml with an uncommented key (must fail)
# Every step runs even if an earlier one failed; the script then lists what failed and exits 1.
# Needs helm (in ~/.cache/kafka-medic/bin), kubernetes-validate, amtool, openssl, cargo and
# python3 with PyYAML; scripts/install-deps.sh installs them.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

export MEDIC_TOOLS=${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}
export PATH="$MEDIC_TOOLS:$HOME/.local/bin:$PATH"
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

failed=()
step() { printf '\n--- %s\n' "$*"; }
run() {
  printf '+ %s\n' "$*"
  "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf 'FAILED (exit %d): %s\n' "$rc" "$*"
    failed+=("$*")
  fi
}

missing=()
for tool in helm kubernetes-validate amtool openssl cargo python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ! python3 -c 'import yaml' 2>/dev/null; then missing+=("python3 module yaml (python3-yaml)"); fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'test-helm.sh: missing %s; run scripts/install-deps.sh\n' "${missing[*]}" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Helm keeps its caches and settings in the temporary directory, never in $HOME.
export HELM_CACHE_HOME="$tmp/helm/cache" HELM_CONFIG_HOME="$tmp/helm/config" HELM_DATA_HOME="$tmp/helm/data"

# helm prints an INFO line each time it follows the chart's links into rules/ and dashboards/.
quiet_links() { grep -v 'found symbolic link in path' || true; }

lint() {
  local out rc
  out=$(helm lint --strict "$@" 2>&1)
  rc=$?
  printf '%s\n' "$out" | quiet_links
  return $rc
}

step "helm lint --strict"
run lint helm/kafka-medic
for f in helm/kafka-medic/ci/*-values.yaml; do
  run lint helm/kafka-medic -f "$f"
done
mkdir -p "$tmp/sidecar" && cp -r helm/tests/sidecar-chart "$tmp/sidecar/chart" && mkdir -p "$tmp/sidecar/chart/charts" \
  && ln -s "$ROOT/helm/kafka-medic" "$tmp/sidecar/chart/charts/kafka-medic"
run lint "$tmp/sidecar/chart"

step "values.yaml comments and README values table"
run python3 helm/tests/values_table.py

step "the values-table check fails on an uncommented key"
uncommented_check() {
  cp helm/kafka-medic/values.yaml "$tmp/values.yaml"
  printf 'undocumentedKey: true\n' >>"$tmp/values.yaml"
  local out
  if out=$(python3 helm/tests/values_table.py --values "$tmp/values.yaml" 2>&1); then
    echo "  FAIL an uncommented key was not reported: $out"
    return 1
  fi
  if ! grep -q 'key undocumentedKey has no comment above it' <<<"$out"; then
    echo "  FAIL unexpected message: $out"
    return 1
  fi
  echo "  ok   reported: $(grep undocumentedKey <<<"$out" | head -1)"
}
run uncommented_check

step "build medic-agent and medic-actuator (the rendered settings are run by the real binaries)"
target=${CARGO_TARGET_DIR:-$ROOT/target}
run cargo build --locked -q -p medic-agent -p medic-actuator

step "render, validate and check the chart"
run python3 helm/tests/check_chart.py --agent "$target/debug/medic-agent" --actuator "$target/debug/medic-actuator"

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test-helm.sh: %d check(s) FAILED:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
printf 'test-helm.sh: all chart checks passed\n'
