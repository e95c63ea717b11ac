#!/usr/bin/env bash
# The one test command: installs Garage if needed, builds every binary (the end-to-end tests run
# them), then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/install-garage.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --workspace --bins
cargo test --release --workspace "$@"
