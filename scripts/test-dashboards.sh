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
# Every step runs even if an earlier one failed; the script then lists what failed and exits 1.
# Needs promtool and python3 with PyYAML (scripts/install-deps.sh installs them).
set -uo pipefail
cd "$(dirname "$0")/.."

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

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test-dashboards.sh: %d check(s) FAILED:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
printf 'test-dashboards.sh: all dashboard checks passed\n'
