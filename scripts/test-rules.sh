#!/usr/bin/env bash
# Checks and tests the Prometheus rules and the Alertmanager example in rules/.
# Called by scripts/test.sh; can also be run alone from anywhere in the checkout.
#   1. promtool check rules    on every rule file
#   2. promtool test rules     on every rules/tests/*.test.yml
#   3. rules/tests/lint_rules.py: shared names, annotations, runbook anchors, README entries,
#      and that every rule and alert is tested (not yet / exact / resolved)
#   4. amtool check-config     on rules/alertmanager.example.yml; promtool check config --agent
#      on agent/examples/prometheus-agent.yml (the README's remote-write example)
#   5. amtool config routes test: the receivers each kind of alert reaches
#   6. rules/tests/alertmanager_live.py: the example in a real Alertmanager (inhibition,
#      bearer token from the file, send_resolved)
# Every step runs even if an earlier one failed; the script then lists what failed and exits 1.
# Needs promtool, amtool, prometheus-alertmanager and python3 with PyYAML
# (scripts/install-deps.sh installs them).
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()

step() { printf '\n--- %s\n' "$*"; }

# run CMD...: print it, run it, remember it if it fails.
run() {
  printf '+ %s\n' "$*"
  "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf 'FAILED (exit %d): %s\n' "$rc" "$*"
    failed+=("$*")
  fi
}

# route_expect RECEIVERS LABEL=VALUE...: the alert with these labels reaches exactly RECEIVERS
# (comma-separated, in route order).
route_expect() {
  local want=$1
  shift
  local cmd=(amtool config routes test --config.file=rules/alertmanager.example.yml "$@")
  printf '+ %s  (expect: %s)\n' "${cmd[*]}" "$want"
  local got rc
  got=$("${cmd[@]}" 2>/dev/null)
  rc=$?
  if [ "$rc" -ne 0 ] || [ "$got" != "$want" ]; then
    printf 'FAILED: %s reached "%s" (exit %d), expected "%s"\n' "$*" "$got" "$rc" "$want"
    failed+=("amtool config routes test $*: got '$got', expected '$want'")
    return
  fi
  # --verify.receivers makes amtool itself assert it too (exit 1 on a mismatch).
  if ! "${cmd[@]}" --verify.receivers="$want" >/dev/null 2>&1; then
    printf 'FAILED: amtool --verify.receivers=%s rejected %s\n' "$want" "$*"
    failed+=("amtool config routes test --verify.receivers=$want $*")
  fi
}

missing=()
for tool in promtool amtool prometheus-alertmanager python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ! python3 -c 'import yaml' 2>/dev/null; then missing+=("python3 module yaml (python3-yaml)"); fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'test-rules.sh: missing %s; run scripts/install-deps.sh\n' "${missing[*]}" >&2
  exit 1
fi

rule_files=(rules/*.rules.yml rules/examples/*.rules.yml)
test_files=(rules/tests/*.test.yml)

step "promtool check rules"
run promtool check rules "${rule_files[@]}"

step "promtool test rules"
for t in "${test_files[@]}"; do
  run promtool test rules "$t"
done

step "lint: names, annotations, runbook, README, test coverage"
run python3 rules/tests/lint_rules.py

step "amtool check-config"
run amtool check-config rules/alertmanager.example.yml

step "promtool check config --agent: the remote-write example of the README"
run promtool check config --agent agent/examples/prometheus-agent.yml

step "amtool config routes test"
# The four alerts the actuator acts on reach it (and people); the stall alert and the
# actuator's own mass-failure alert page only; foreign alerts, including look-alike names,
# never reach the actuator.
route_expect kafka-medic-actuator,default alertname=KafkaConsumerLagPersistent cluster=prod consumergroup=billing severity=warning
route_expect kafka-medic-actuator,default alertname=KafkaBrokerOverloaded cluster=prod broker=1 severity=warning
route_expect kafka-medic-actuator,default alertname=KafkaBrokerDiskPressure cluster=prod broker=1 path=/var/lib/kafka severity=warning
route_expect kafka-medic-actuator,kafka-oncall alertname=KafkaBrokerDown cluster=prod broker=1 severity=critical
route_expect kafka-oncall alertname=KafkaConsumerStalled cluster=prod consumergroup=billing topic=orders severity=critical
route_expect kafka-oncall alertname=KafkaMedicMassFailure cluster=prod severity=critical
route_expect default alertname=KafkaMedicMassFailureTest cluster=prod severity=critical
route_expect default alertname=NodeFilesystemAlmostFull instance=node-1 severity=critical
route_expect default alertname=KafkaBrokerDownLegacy cluster=prod broker=1 severity=critical

step "Alertmanager: the example in a real server"
run python3 rules/tests/alertmanager_live.py

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test-rules.sh: %d check(s) FAILED:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
printf 'test-rules.sh: all rule checks passed (%d rule files, %d test files)\n' "${#rule_files[@]}" "${#test_files[@]}"
