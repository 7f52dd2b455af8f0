#!/usr/bin/env bash
# The kafka-medic demo: installs what is missing, builds the binaries, then runs a local tansu
# broker with medic-agent as its sidecar, a producer and a slower consumer, printing the lag
# the agent exports as it rises. Ctrl-C stops everything. DEMO_SECONDS sets how long (90).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}:$PATH"
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
echo "building medic-agent and the demo driver (release) ..."
cargo build --release --locked -q -p medic-agent -p medic-e2e --bins
exec target/release/medic-demo --agent target/release/medic-agent --seconds "${DEMO_SECONDS:-90}"
