#!/usr/bin/env bash
# The one test command: installs Garage if needed, builds every binary (the end-to-end tests run
# them), then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/install-garage.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --workspace --bins

# Run every test; keep cargo's output and close with one summary line over all test binaries.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) passed += $i
         if ($(i+1) ~ /^failed;?$/) failed += $i
       }
     }
     END { printf "sluice: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
