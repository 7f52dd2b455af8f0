#!/usr/bin/env bash
# Checks the Grafana dashboards in dashboards/. Called by scripts/test.sh; can also be run
# alone from anywhere in the checkout.
#   1. dashboards/generate.py --check: every dashboards/*.json is exactly what dashboards/lib/
#      produces (the JSON is generated; edit lib/ and run python3 dashboards/generate.py)
#   2. dashboards/tests/check_dashboards.py: valid JSON, pinned stable uids, unique panel ids,
#      no overlapping panels, the datasource variable used everywhere, required template
#      variables and the cluster filter, 1h/6h/24h presets, actuator-action annotations,
#      alert thresholds equal to the rules', every expr parsed by `promtool check rules`, and
#      every metric exported by a binary (golden scrapes) or recorded by rules/
#   3. the same checks against deliberately broken copies (each break must be reported), and
#      generate.py --check against an edited copy (the drift must be reported)
#   4. the dashboards on live data: tests/tests/dashboards_live.rs starts the whole loop (tansu,
#      medic-agent, Prometheus with rules/, Alertmanager, medic-actuator, a producer and a slow
#      consumer), waits until KafkaConsumerLagPersistent fires and the actuator scales the
#      consumer up, then dashboards/tests/check_dashboards_live.py runs every panel, annotation
#      and variable query of every dashboard against that Prometheus: each must return data or
#      be in dashboards/tests/live-allowlist.yaml with its reason; then its self-test (broken
#      queries must be reported). It runs the medic-agent and medic-actuator that cargo test
#      built, building them first (as scripts/test-helm.sh does) only if they are missing or
#      older than their sources. About 30 s. DASHBOARDS_LIVE=0 skips this step (it says so).
# Every step runs even if an earlier one failed; the script then lists what failed and exits 1.
# Needs promtool and python3 with PyYAML; step 4 also cargo, prometheus, prometheus-alertmanager,
# amtool and tansu (scripts/install-deps.sh installs them all).
set -uo pipefail
cd "$(dirname "$0")/.."

export MEDIC_TOOLS=${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}
export PATH="$MEDIC_TOOLS:$PATH"
export TANSU_BIN=${TANSU_BIN:-$MEDIC_TOOLS/tansu}
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
for tool in promtool python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ! python3 -c 'import yaml' 2>/dev/null; then missing+=("python3 module yaml (python3-yaml)"); fi
live=${DASHBOARDS_LIVE:-1}
if [ "$live" != 0 ]; then
  for tool in cargo prometheus prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ -x "$TANSU_BIN" ] || missing+=("tansu ($TANSU_BIN)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'test-dashboards.sh: missing %s; run scripts/install-deps.sh\n' "${missing[*]}" >&2
  exit 1
fi

step "dashboards/*.json are generated from dashboards/lib/"
run python3 dashboards/generate.py --check

step "dashboard checks"
run python3 dashboards/tests/check_dashboards.py

step "the checks fail on broken dashboards"
run python3 dashboards/tests/check_dashboards.py --self-test

drift_check() {
  local tmp rc
  tmp=$(mktemp -d)
  cp dashboards/*.json "$tmp/"
  python3 - "$tmp/kafka-medic-broker-health.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["title"] = "edited in Grafana and exported"
json.dump(d, open(sys.argv[1], "w"), indent=2)
PY
  python3 dashboards/generate.py --check --dir "$tmp" 2>"$tmp/err"
  rc=$?
  if [ "$rc" -eq 1 ] && grep -q 'kafka-medic-broker-health.json' "$tmp/err"; then
    echo "  ok   an edited JSON file is reported: $(head -1 "$tmp/err")"
    rm -rf "$tmp"
    return 0
  fi
  echo "  FAIL generate.py --check did not report the edited file (exit $rc): $(cat "$tmp/err")"
  rm -rf "$tmp"
  return 1
}
run drift_check

# The binaries the stack runs: cargo test --workspace (scripts/test.sh) has just built them;
# when either is missing or older than its sources, they are built as scripts/test-helm.sh
# builds them. (An unconditional `cargo build -p` would rebuild tokio and everything above it
# once: it resolves features without the dev-dependencies, unlike cargo test.)
current() { # current BINARY CRATE_DIR: the binary exists and nothing it is built from is newer
  [ -x "$1" ] && [ -z "$(find Cargo.toml Cargo.lock {"$2",http,kafka}/{src,proto,build.rs,Cargo.toml} \
    -type f -newer "$1" -print -quit 2>/dev/null)" ]
}
live_check() {
  local target agent actuator
  target="$(pwd)/${CARGO_TARGET_DIR:-target}/debug"
  case ${CARGO_TARGET_DIR:-} in /*) target=$CARGO_TARGET_DIR/debug ;; esac
  agent=${MEDIC_AGENT_BIN:-$target/medic-agent}
  actuator=${MEDIC_ACTUATOR_BIN:-$target/medic-actuator}
  # MEDIC_AGENT_BIN / MEDIC_ACTUATOR_BIN, when set, are used as they are.
  if [ -z "${MEDIC_AGENT_BIN:-}${MEDIC_ACTUATOR_BIN:-}" ] && ! { current "$agent" agent && current "$actuator" actuator; }; then
    echo "cargo build -p medic-agent -p medic-actuator (missing or older than their sources) ..."
    cargo build --locked -q -p medic-agent -p medic-actuator || return 1
  fi
  MEDIC_AGENT_BIN=$agent MEDIC_ACTUATOR_BIN=$actuator \
    cargo test --workspace --locked -q --test dashboards_live -- --ignored --nocapture
}
step "the dashboards on live data (tests/tests/dashboards_live.rs, dashboards/tests/check_dashboards_live.py)"
if [ "$live" = 0 ]; then
  echo "SKIPPED: DASHBOARDS_LIVE=0; the dashboards were not checked on live data"
else
  started=$(date +%s)
  run live_check
  echo "live check: $(($(date +%s) - started))s"
fi

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test-dashboards.sh: %d check(s) FAILED:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
if [ "$live" = 0 ]; then
  printf 'test-dashboards.sh: all dashboard checks passed (the live check was SKIPPED: DASHBOARDS_LIVE=0)\n'
else
  printf 'test-dashboards.sh: all dashboard checks passed, on live data too\n'
fi
