#!/usr/bin/env bash
# The one test command: installs Garage if needed, builds every binary (the end-to-end tests run
# them), then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/install-garage.sh
export PATH="$HOME/.cargo/bin:$PATH"
# awscli: the S3 baselines of the benchmark (tests/tests/bench_quick.rs runs sluice-bench --quick).
# (pip may put it in ~/.local/bin.)
export PATH="$PATH:$HOME/.local/bin"
command -v aws >/dev/null 2>&1 || python3 -m pip install --quiet awscli
# schemathesis: tests/tests/openapi.rs fuzzes the gateway against its OpenAPI description.
if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet schemathesis
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
# Node.js for Azurite (the Azure emulator), then the GCS and Azure emulators of the conformance
# tests (tests/tests/{azure,gcs}_conformance.rs).
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
scripts/install-emulators.sh
# promtool (Debian's prometheus package; only its promtool is used, the server is not started):
# every metrics test checks the Prometheus text of each endpoint with `promtool check metrics`.
if ! command -v promtool >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo build --release --workspace --bins

# Run every test; keep cargo's output and close with one summary line over all test binaries.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
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
