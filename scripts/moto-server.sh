#!/usr/bin/env bash
# Start or stop a moto_server (a local AWS emulator) for trying pitstop by hand.
#
#   scripts/moto-server.sh start [PORT]   # default port 5000; prints the AWS_* exports to use
#   scripts/moto-server.sh stop
#   scripts/moto-server.sh status
#
# It listens on 127.0.0.1 only: moto accepts any credentials, so it must not be reachable from
# elsewhere. State lives in .work/ (pidfile, port, log). The Rust tests do not need this
# script; they start their own moto_server.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/.work"
PIDFILE="$WORK/moto-server.pid"
PORTFILE="$WORK/moto-server.port"
LOG="$WORK/moto-server.log"
MOTO="${MOTO_SERVER:-$ROOT/.venv/bin/moto_server}"

die() {
    echo "moto-server: $*" >&2
    exit 1
}

# The PID from the pidfile, if that process is still a moto_server (a stale pidfile's PID may
# since belong to something else, which must not be killed).
running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    ps -p "$pid" -o args= 2>/dev/null | grep -q moto_server || return 1
    echo "$pid"
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

print_env() {
    local port="$1"
    cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
EOF
}

start() {
    local port="${1:-5000}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "port must be a number, got '$port'"
    [[ -x "$MOTO" ]] || die "$MOTO not found: run \`make venv\` first (or set MOTO_SERVER)"
    local pid
    if pid="$(running_pid)"; then
        echo "moto-server: already running (pid $pid, port $(cat "$PORTFILE" 2>/dev/null || echo '?'))" >&2
        print_env "$(cat "$PORTFILE" 2>/dev/null || echo "$port")"
        return 0
    fi
    listening "$port" && die "port $port is already in use"
    mkdir -p "$WORK"
    # setsid: its own session, so a Ctrl-C in the shell that started it does not stop it.
    setsid "$MOTO" -H 127.0.0.1 -p "$port" >"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    echo "$port" >"$PORTFILE"
    for _ in $(seq 1 300); do
        if listening "$port"; then
            echo "moto-server: listening on 127.0.0.1:$port (pid $pid, log $LOG)" >&2
            print_env "$port"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE" "$PORTFILE"
            cat "$LOG" >&2
            die "moto_server exited before listening"
        fi
        sleep 0.1
    done
    stop
    die "moto_server did not listen on port $port within 30 s (log: $LOG)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE" "$PORTFILE"
        echo "moto-server: not running" >&2
        return 0
    fi
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid"
    fi
    rm -f "$PIDFILE" "$PORTFILE"
    echo "moto-server: stopped (pid $pid)" >&2
}

status() {
    local pid
    if pid="$(running_pid)"; then
        echo "running: pid $pid, port $(cat "$PORTFILE" 2>/dev/null || echo '?')"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start [PORT] | stop | status" ;;
esac
