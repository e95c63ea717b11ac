#!/usr/bin/env bash
# Starts a single-node Garage (S3 server) whose config, metadata and data live in DIR, on free
# loopback ports, with bucket `sluice` and a read/write/owner key. Prints the SLUICE_* settings of
# an S3 backup store on stdout (and nothing else); progress goes to stderr.
# Stop it with scripts/garage-stop.sh DIR.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
export PATH="$PATH:$HOME/.cargo/bin"
if ! command -v garage >/dev/null 2>&1; then
    echo "garage is not installed; run scripts/install-garage.sh" >&2
    exit 1
fi

mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
CONFIG="$DIR/garage.toml"
LOG="$DIR/garage.log"
PIDFILE="$DIR/garage.pid"
BUCKET="sluice"
WAIT_SECONDS=30

log() { echo "garage-start: $*" >&2; }

fail() {
    echo "garage-start: error: $*" >&2
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
    fail "a garage server (pid $(cat "$PIDFILE")) already runs from $DIR; stop it with scripts/garage-stop.sh $DIR"
fi

# Three distinct free loopback ports (held open together so they differ).
free_ports() {
    python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

random_hex() { # bytes
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$1"
    else
        od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'
    fi
}

g() { garage -c "$CONFIG" "$@"; }

start_server() {
    read -r RPC_PORT S3_PORT ADMIN_PORT < <(free_ports)
    mkdir -p "$DIR/meta" "$DIR/data"
    cat >"$CONFIG" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$(random_hex 32)"
TOML
    chmod 600 "$CONFIG"
    log "starting garage: rpc=$RPC_PORT s3=$S3_PORT admin=$ADMIN_PORT dir=$DIR"
    # No inherited stdout: whoever reads this script's stdout must see EOF when the script ends.
    nohup garage -c "$CONFIG" server >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
}

# Waits until `garage status` answers; returns 1 if the server died (e.g. a port was taken).
wait_status() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            return 1
        fi
        if g status >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    fail "garage did not answer 'garage status' within ${WAIT_SECONDS}s"
}

started=false
for attempt in 1 2 3; do
    start_server
    if wait_status; then
        started=true
        break
    fi
    log "garage exited during start-up (attempt $attempt); log tail:"
    tail -n 10 "$LOG" >&2 || true
    rm -f "$PIDFILE"
    rm -rf "$DIR/meta" "$DIR/data"
done
$started || fail "garage could not start after 3 attempts"

NODE_ID="$(g node id -q 2>/dev/null | head -n1 | cut -d@ -f1)"
if ! [[ "$NODE_ID" =~ ^[0-9a-f]{16,}$ ]]; then
    fail "could not read the node id from 'garage node id -q' (got '$NODE_ID')"
fi
log "node id ${NODE_ID:0:16}"

g layout assign -z dc1 -c 1G "$NODE_ID" >&2 || fail "garage layout assign failed"
g layout apply --version 1 >&2 || fail "garage layout apply failed"

# The layout takes a moment to be effective: retry bucket creation.
deadline=$((SECONDS + WAIT_SECONDS))
until g bucket create "$BUCKET" >&2 2>&1; do
    if g bucket info "$BUCKET" >/dev/null 2>&1; then
        break
    fi
    [ $SECONDS -lt $deadline ] || fail "could not create bucket $BUCKET within ${WAIT_SECONDS}s"
    sleep 0.5
done

KEY_OUTPUT="$(g key create sluice-key 2>&1)" || fail "garage key create failed: $KEY_OUTPUT"
# Output holds lines such as "Key ID:              GK..." and "Secret key:          <hex>".
KEY_ID="$(sed -nE 's/^[[:space:]]*Key ID:[[:space:]]*([A-Za-z0-9]+)[[:space:]]*$/\1/p' <<<"$KEY_OUTPUT" | head -n1)"
SECRET="$(sed -nE 's/^[[:space:]]*Secret key:[[:space:]]*([A-Za-z0-9]+)[[:space:]]*$/\1/p' <<<"$KEY_OUTPUT" | head -n1)"
if [ -z "$KEY_ID" ] || [ -z "$SECRET" ]; then
    fail "could not parse the key id and secret from 'garage key create' output"
fi

g bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >&2 || fail "garage bucket allow failed"

# The S3 API answers once the bucket and key are known (any HTTP answer will do).
deadline=$((SECONDS + WAIT_SECONDS))
until python3 - "$S3_PORT" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(16).startswith(b"HTTP/") else 1)
PY
do
    [ $SECONDS -lt $deadline ] || fail "the S3 API on port $S3_PORT did not answer within ${WAIT_SECONDS}s"
    sleep 0.2
done

log "garage ready (pid $(cat "$PIDFILE")), S3 endpoint http://127.0.0.1:$S3_PORT, bucket $BUCKET"
cat <<OUT
SLUICE_BROKER_DATA_BACKUP_STORE=S3
SLUICE_BROKER_DATA_BACKUP_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
SLUICE_BROKER_DATA_BACKUP_S3_REGION=garage
SLUICE_BROKER_DATA_BACKUP_S3_BUCKETNAME=$BUCKET
SLUICE_BROKER_DATA_BACKUP_S3_ACCESSKEY=$KEY_ID
SLUICE_BROKER_DATA_BACKUP_S3_SECRETKEY=$SECRET
SLUICE_BROKER_DATA_BACKUP_S3_FORCEPATHSTYLEACCESS=true
OUT
