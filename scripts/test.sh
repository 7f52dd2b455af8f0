#!/usr/bin/env bash
# The one command that runs every kafka-medic test on a fresh Debian 12 machine.
# It installs what it needs first (scripts/install-deps.sh), then runs, in order:
# formatting, clippy, the Rust test suites (unit, integration against a real tansu broker,
# end-to-end), the promtool rule tests, and the Helm chart checks.
set -euo pipefail
cd "$(dirname "$0")/.."

"$(pwd)/scripts/install-deps.sh"
export MEDIC_TOOLS=${MEDIC_TOOLS:-$HOME/.cache/kafka-medic/bin}
export PATH="$MEDIC_TOOLS:$PATH"
export TANSU_BIN=${TANSU_BIN:-$MEDIC_TOOLS/tansu}
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

# A one-shot build gains nothing from incremental state, which costs as much disk as the
# build itself.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n=== %s ===\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

for extra in scripts/test-rules.sh scripts/test-dashboards.sh scripts/test-helm.sh; do
  if [ -x "$extra" ]; then
    step "$extra"
    "$extra"
  fi
done
step "all tests passed"
