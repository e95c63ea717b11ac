#!/usr/bin/env bash
# Stops the Garage server started by scripts/garage-start.sh DIR.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR="$1"
PIDFILE="$DIR/garage.pid"
if [ ! -f "$PIDFILE" ]; then
    echo "no $PIDFILE: nothing to stop" >&2
    exit 0
fi
PID="$(cat "$PIDFILE")"
if [ -z "$PID" ] || ! kill -0 "$PID" 2>/dev/null; then
    echo "garage (pid ${PID:-?}) is not running" >&2
    rm -f "$PIDFILE"
    exit 0
fi
kill -TERM "$PID" 2>/dev/null || true
for _ in $(seq 1 100); do
    if ! kill -0 "$PID" 2>/dev/null; then
        rm -f "$PIDFILE"
        echo "garage (pid $PID) stopped" >&2
        exit 0
    fi
    sleep 0.1
done
echo "garage (pid $PID) did not stop within 10 s after SIGTERM; sending SIGKILL" >&2
kill -KILL "$PID" 2>/dev/null || true
for _ in $(seq 1 50); do
    if ! kill -0 "$PID" 2>/dev/null; then
        rm -f "$PIDFILE"
        exit 0
    fi
    sleep 0.1
done
echo "garage (pid $PID) is still running after SIGKILL" >&2
exit 1
