#!/usr/bin/env bash
# Installs Garage 2.5.x (the S3 server the end-to-end tests run against) unless it is already there.
set -euo pipefail

export PATH="$PATH:$HOME/.cargo/bin"
WANT_VERSION="2.5.0"

if command -v garage >/dev/null 2>&1; then
    version_line="$(garage --version 2>/dev/null || true)"
    # e.g. "garage cargo:2.5.0 [features: ...]" or "garage v2.5.0"
    if grep -Eq '(^|[^0-9.])v?2\.5\.[0-9]+' <<<"$version_line"; then
        echo "garage already installed: $version_line" >&2
        exit 0
    fi
    echo "garage found but not 2.5.x ($version_line); installing $WANT_VERSION" >&2
else
    echo "garage not found; installing $WANT_VERSION (this takes a while)" >&2
fi

cargo install garage --version "$WANT_VERSION" --locked
garage --version >&2
