#!/usr/bin/env bash
# Start, stop and create topics on a local Tansu broker (Kafka-compatible,
# in-memory storage) for the demo and the integration tests.
#
# Called as a command:
#   deploy/tools/tansu.sh start PORT DATADIR
#       Start a broker on 127.0.0.1:PORT in the background (log: DATADIR/tansu.log,
#       pid: DATADIR/tansu.pid) and wait until the port accepts connections.
#       Does nothing if the broker recorded in DATADIR is already running.
#   deploy/tools/tansu.sh create-topic PORT NAME PARTITIONS
#       Create a topic; a topic that already exists is not an error.
#   deploy/tools/tansu.sh stop DATADIR
#       Stop the broker recorded in DATADIR/tansu.pid (no-op if not running).
#
# Or sourced (`source deploy/tools/tansu.sh`), which defines the functions
# tansu_start, tansu_create_topic and tansu_stop with the same arguments.
#
# The binary is $TANSU_BIN, else $BESS_TANSU_BIN, else <repo>/.tools/bin/tansu
# (installed by deploy/tools/install-tansu.sh), else `tansu` on PATH.
# Storage is memory://: everything the broker holds is lost when it stops.

_TANSU_SH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_TANSU_SH_REPO="$(cd "$_TANSU_SH_DIR/../.." && pwd)"

# How long to wait for the broker to accept connections, and to exit on stop.
TANSU_START_TIMEOUT="${TANSU_START_TIMEOUT:-30}"
TANSU_STOP_TIMEOUT="${TANSU_STOP_TIMEOUT:-10}"

# Print the path of the Tansu binary to use, or fail with a hint.
tansu_bin() {
    local candidate
    for candidate in "${TANSU_BIN:-}" "${BESS_TANSU_BIN:-}" "$_TANSU_SH_REPO/.tools/bin/tansu"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
        return 0
    fi
    echo "error: tansu not found; run deploy/tools/install-tansu.sh first" >&2
    return 1
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
tansu_port_open() {
    local port="$1"
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# True while PID runs. A child of the calling shell that exited but was not
# yet reaped is a zombie, which `kill -0` would still report as alive.
_tansu_alive() {
    local pid="$1" state
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != "Z" ]]
}

# Print the pid recorded in DATADIR/tansu.pid if that process is alive and is
# a Tansu process (guards against a stale pid reused by something else).
_tansu_running_pid() {
    local datadir="$1" pid
    [[ -f "$datadir/tansu.pid" ]] || return 1
    pid="$(cat "$datadir/tansu.pid" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    _tansu_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q tansu || return 1
    echo "$pid"
}

# tansu_start PORT DATADIR
tansu_start() {
    local port="${1:?usage: tansu_start PORT DATADIR}" datadir="${2:?usage: tansu_start PORT DATADIR}"
    local bin pid log waited=0

    mkdir -p "$datadir"
    datadir="$(cd "$datadir" && pwd)"
    log="$datadir/tansu.log"

    # Already started from this DATADIR and still listening: reuse it.
    if pid="$(_tansu_running_pid "$datadir")" && tansu_port_open "$port"; then
        echo "==> Tansu already running on 127.0.0.1:$port (pid $pid)"
        return 0
    fi

    # Something else holds the port: a second broker could not bind it.
    if tansu_port_open "$port"; then
        echo "error: 127.0.0.1:$port is already in use by another process" >&2
        return 1
    fi

    bin="$(tansu_bin)" || return 1

    # Start the broker in its own session (setsid) so a Ctrl-C in the
    # terminal does not reach it; whoever started it stops it with `stop`.
    # SCHEMA_REGISTRY and OTEL_EXPORTER_OTLP_ENDPOINT are read by Tansu from
    # the environment; clear them so a stray value can't change its behaviour.
    echo "==> Starting Tansu on 127.0.0.1:$port (log: $log)"
    env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT NO_COLOR=1 \
        setsid "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$datadir/tansu.pid"

    # Wait until the port accepts connections (or the broker dies).
    while ! tansu_port_open "$port"; do
        if ! _tansu_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            echo "error: Tansu exited during start; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            rm -f "$datadir/tansu.pid"
            return 1
        fi
        if (( waited >= TANSU_START_TIMEOUT * 10 )); then
            echo "error: Tansu did not accept connections on 127.0.0.1:$port within ${TANSU_START_TIMEOUT}s; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            kill "$pid" 2>/dev/null || true
            rm -f "$datadir/tansu.pid"
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "==> Tansu is up on 127.0.0.1:$port (pid $pid)"
}

# tansu_create_topic PORT NAME PARTITIONS
tansu_create_topic() {
    local port="${1:?usage: tansu_create_topic PORT NAME PARTITIONS}"
    local name="${2:?usage: tansu_create_topic PORT NAME PARTITIONS}"
    local partitions="${3:?usage: tansu_create_topic PORT NAME PARTITIONS}"
    local bin out rc=0

    bin="$(tansu_bin)" || return 1
    echo "==> Creating topic $name ($partitions partitions) on 127.0.0.1:$port"
    out="$(NO_COLOR=1 "$bin" topic create "$name" \
        --broker "tcp://127.0.0.1:$port" --partitions "$partitions" 2>&1)" || rc=$?
    if (( rc == 0 )); then
        echo "==> Topic $name created"
    elif grep -qi "already exists" <<<"$out"; then
        echo "==> Topic $name already exists"
    else
        echo "error: creating topic $name failed (exit $rc):" >&2
        echo "$out" >&2
        return 1
    fi
}

# tansu_stop DATADIR
tansu_stop() {
    local datadir="${1:?usage: tansu_stop DATADIR}" pid waited=0

    if ! pid="$(_tansu_running_pid "$datadir")"; then
        echo "==> Tansu is not running (no live pid in $datadir/tansu.pid)"
        rm -f "$datadir/tansu.pid"
        return 0
    fi

    # Ask it to stop, then wait; kill it if it doesn't exit in time.
    echo "==> Stopping Tansu (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while _tansu_alive "$pid"; do
        if (( waited >= TANSU_STOP_TIMEOUT * 10 )); then
            echo "==> Tansu did not exit within ${TANSU_STOP_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    # Reap it when it is a child of this shell (when sourced); harmless otherwise.
    wait "$pid" 2>/dev/null || true
    rm -f "$datadir/tansu.pid"
    echo "==> Tansu stopped"
}

# Run as a command (not sourced): dispatch on the first argument.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    cmd="${1:-}"
    shift || true
    case "$cmd" in
        start)        tansu_start "$@" ;;
        create-topic) tansu_create_topic "$@" ;;
        stop)         tansu_stop "$@" ;;
        *)
            echo "usage: $0 start PORT DATADIR | create-topic PORT NAME PARTITIONS | stop DATADIR" >&2
            exit 2
            ;;
    esac
fi
