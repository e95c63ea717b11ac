#!/usr/bin/env bash
# Starts Azurite's blob service (the Azure Blob Storage emulator) with its data in DIR, on a free
# loopback port, creates container `sluice` in the well-known development account
# devstoreaccount1, and prints the SLUICE_* settings of an Azure backup store on stdout (and
# nothing else), one KEY=value a line; progress goes to stderr.
# Stop it with scripts/emulator-stop.sh DIR. Install Azurite with scripts/install-emulators.sh.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
export PATH="$PATH:$HOME/.local/bin"
if ! command -v azurite-blob >/dev/null 2>&1; then
    echo "azurite-start: error: azurite-blob is not installed; run scripts/install-emulators.sh" >&2
    exit 1
fi

mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
LOG="$DIR/azurite.log"
PIDFILE="$DIR/azurite.pid"
ACCOUNT="devstoreaccount1"
# Azurite's well-known development key (public, the same in every installation).
KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER="sluice"
WAIT_SECONDS=30

log() { echo "azurite-start: $*" >&2; }

fail() {
    echo "azurite-start: error: $*" >&2
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
    fail "azurite (pid $(cat "$PIDFILE")) already runs from $DIR; stop it with scripts/emulator-stop.sh $DIR"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
    PORT="$(free_port)"
    mkdir -p "$DIR/data"
    log "starting azurite-blob $(azurite-blob --version 2>/dev/null || echo '?'): port=$PORT dir=$DIR"
    # --skipApiVersionCheck: object_store may send a newer x-ms-version than this Azurite knows.
    # No inherited stdout: whoever reads this script's stdout must see EOF when the script ends.
    nohup azurite-blob \
        --blobHost 127.0.0.1 --blobPort "$PORT" \
        --location "$DIR/data" \
        --skipApiVersionCheck \
        --disableProductStyleUrl \
        --disableTelemetry \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
}

# Any HTTP answer on the port means the server listens; returns 1 if the server died.
wait_http() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            return 1
        fi
        if python3 - "$PORT" <<'PY' 2>/dev/null; then
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(16).startswith(b"HTTP/") else 1)
PY
            return 0
        fi
        sleep 0.2
    done
    fail "azurite did not answer on port $PORT within ${WAIT_SECONDS}s"
}

started=false
for attempt in 1 2 3; do
    start_server
    if wait_http; then
        started=true
        break
    fi
    log "azurite exited during start-up (attempt $attempt); log tail:"
    tail -n 10 "$LOG" >&2 || true
    rm -f "$PIDFILE"
done
$started || fail "azurite could not start after 3 attempts"

ENDPOINT="http://127.0.0.1:$PORT/$ACCOUNT"

# Create the container (Shared Key authorization); 201 Created or 409 ContainerAlreadyExists.
python3 - "$ENDPOINT" "$ACCOUNT" "$KEY" "$CONTAINER" <<'PY' || fail "could not create container $CONTAINER"
import base64, hashlib, hmac, http.client, sys, urllib.parse
from email.utils import formatdate

endpoint, account, key, container = sys.argv[1:5]
url = urllib.parse.urlsplit(f"{endpoint}/{container}")
headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
# VERB, the 11 standard headers (all empty: no body, no type), canonical headers and resource.
string_to_sign = "PUT\n" + "\n" * 11 + canonical_headers + f"/{account}{url.path}\nrestype:container"
signature = base64.b64encode(
    hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()
).decode()
headers["Authorization"] = f"SharedKey {account}:{signature}"
headers["Content-Length"] = "0"
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
connection.request("PUT", f"{url.path}?restype=container", headers=headers)
response = connection.getresponse()
body = response.read().decode(errors="replace")
if response.status not in (201, 409):  # created, or ContainerAlreadyExists
    print(f"create container: HTTP {response.status}: {body}", file=sys.stderr)
    sys.exit(1)
PY

log "azurite ready (pid $(cat "$PIDFILE")), blob endpoint $ENDPOINT, container $CONTAINER"
cat <<OUT
SLUICE_BROKER_DATA_BACKUP_STORE=AZURE
SLUICE_BROKER_DATA_BACKUP_AZURE_ACCOUNT=$ACCOUNT
SLUICE_BROKER_DATA_BACKUP_AZURE_KEY=$KEY
SLUICE_BROKER_DATA_BACKUP_AZURE_ENDPOINT=$ENDPOINT
SLUICE_BROKER_DATA_BACKUP_AZURE_CONTAINER=$CONTAINER
OUT
