#!/usr/bin/env bash
# Stops the emulator started in DIR by scripts/azurite-start.sh or scripts/gcs-emulator-start.sh
# (whichever pid file DIR holds: azurite.pid, fake-gcs-server.pid): SIGTERM, then SIGKILL after
# 10 s. Nothing to stop is not an error.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$1"

# Stops the process of one pid file; returns 1 if it survives SIGKILL.
stop() { # name pidfile
    local name="$1" pidfile="$2" pid
    pid="$(cat "$pidfile")"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid ${pid:-?}) is not running" >&2
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            echo "$name (pid $pid) stopped" >&2
            return 0
        fi
        sleep 0.1
    done
    echo "$name (pid $pid) did not stop within 10 s after SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            return 0
        fi
        sleep 0.1
    done
    echo "$name (pid $pid) is still running after SIGKILL" >&2
    return 1
}

status=0
found=false
for name in azurite fake-gcs-server; do
    if [ -f "$DIR/$name.pid" ]; then
        found=true
        stop "$name" "$DIR/$name.pid" || status=1
    fi
done
$found || echo "no emulator pid file in $DIR: nothing to stop" >&2
exit "$status"
