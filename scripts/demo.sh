#!/usr/bin/env bash
# The kafka-medic demo: installs what is missing, builds the release binaries, then runs the
# whole loop on 127.0.0.1: a tansu broker with medic-agent as its sidecar, Prometheus loading
# rules/kafka-medic.rules.yml, Alertmanager configured from rules/alertmanager.example.yml, and
# medic-actuator in dry-run mode against a fake Kubernetes API (served by the demo driver). A
# producer with a burst and a slower consumer drive the lag up; the terminal shows the lag, the
# sustain timer, the alert and every actuator decision. Ctrl-C or kill -TERM stops everything: the
# script execs the driver, which stops every server it started on SIGINT, SIGTERM and SIGHUP.
#   DEMO_SECONDS=N  run length (default 120)
#   DEMO_LIVE=1     the actuator patches the fake API and the consumer follows the replicas
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}:$PATH"
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
echo "building medic-agent, medic-actuator and the demo driver (release; a first build takes several minutes, cargo shows its progress) ..."
# In the background, so a TERM to this script during the build stops cargo too.
cargo build --release --locked -p medic-agent -p medic-actuator -p medic-e2e --bins &
build=$!
trap 'kill -TERM "$build" 2>/dev/null' INT TERM
wait "$build"
trap - INT TERM
target="${CARGO_TARGET_DIR:-target}/release"
live=()
[ "${DEMO_LIVE:-0}" = "1" ] && live=(--live)
exec "$target/medic-demo" --agent "$target/medic-agent" --actuator "$target/medic-actuator" \
  --seconds "${DEMO_SECONDS:-120}" "${live[@]}"
