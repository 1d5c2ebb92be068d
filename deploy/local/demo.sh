#!/usr/bin/env bash
# Run the whole BESS telemetry system on this machine:
#   bess-sim (Modbus battery controllers) -> bess-edge (site agent)
#     -> Tansu (Kafka-compatible broker) -> bess-collector -> PostgreSQL + HTTP API
#
# Usage: deploy/local/demo.sh
#   Ports (all on 127.0.0.1), overridable through the environment:
#     BESS_KAFKA_PORT (9092)  broker; an already running one is reused
#     BESS_API_PORT   (8080)  collector HTTP API
#     BESS_SIM_PORT   (5020)  simulator Modbus TCP
#   The edge status server listens on 127.0.0.1:9100 (BESS_EDGE_STATUS_LISTEN overrides).
#   Logs, the edge config and its buffer live in <repo>/.run/demo.
#
# Stop with Ctrl-C (or SIGTERM): the edge stops first and drains its buffer to
# the broker, then the collector, the simulator and (if started here) Tansu.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
TOOLS_DIR="$REPO_ROOT/deploy/tools"
STATE_DIR="$REPO_ROOT/.run/demo"

KAFKA_PORT="${BESS_KAFKA_PORT:-9092}"
API_PORT="${BESS_API_PORT:-8080}"
SIM_PORT="${BESS_SIM_PORT:-5020}"
EDGE_STATUS="${BESS_EDGE_STATUS_LISTEN:-127.0.0.1:9100}"
TOPIC="bess.telemetry"
TOPIC_PARTITIONS=4
DATABASE_NAME="bess"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DATABASE_NAME"
API_BASE="http://127.0.0.1:$API_PORT"

# How long each process gets to exit after SIGTERM before it is killed.
EDGE_STOP_TIMEOUT=20       # the edge drains its buffer to the broker first
COLLECTOR_STOP_TIMEOUT=15
SIM_STOP_TIMEOUT=5
HEALTH_TIMEOUT=60

# Helpers for tansu_start / tansu_create_topic / tansu_stop.
# shellcheck source-path=SCRIPTDIR source=../tools/tansu.sh
source "$TOOLS_DIR/tansu.sh"

# --- process bookkeeping --------------------------------------------------

# Children started by this script: name -> pid, in start order.
declare -A PIDS=()
ORDER=()
STARTED_TANSU=0
STOPPING=0

# True while PID runs (a child that exited but was not yet reaped is a
# zombie, which `kill -0` would still report as alive).
alive() {
    local pid="$1" state
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != "Z" ]]
}

# start_child NAME CMD...: run CMD in the background in its own session (so
# a Ctrl-C in the terminal reaches only this script, which then stops the
# children in order), stdout+stderr to STATE_DIR/NAME.log.
start_child() {
    local name="$1" log="$STATE_DIR/$1.log"
    shift
    echo "==> Starting $name (log: $log)"
    setsid "$@" </dev/null >"$log" 2>&1 &
    PIDS[$name]=$!
    ORDER+=("$name")
}

# stop_child NAME TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
stop_child() {
    local name="$1" timeout="$2" pid waited=0 rc=0
    pid="${PIDS[$name]:-}"
    [[ -n "$pid" ]] || return 0
    if alive "$pid"; then
        echo "==> Stopping $name (pid $pid, up to ${timeout}s)"
        kill -TERM "$pid" 2>/dev/null || true
        while alive "$pid"; do
            if (( waited >= timeout * 10 )); then
                echo "==> $name did not exit within ${timeout}s; killing it"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    wait "$pid" 2>/dev/null || rc=$?
    echo "==> $name exited (status $rc)"
    unset 'PIDS[$name]'
}

# Stop everything this script started, in order: edge, collector, simulator, Tansu.
stop_all() {
    (( STOPPING == 0 )) || return 0
    STOPPING=1
    trap '' INT TERM HUP
    stop_child edge "$EDGE_STOP_TIMEOUT"
    stop_child collector "$COLLECTOR_STOP_TIMEOUT"
    stop_child sim "$SIM_STOP_TIMEOUT"
    if (( STARTED_TANSU == 1 )); then
        tansu_stop "$STATE_DIR" || true
    fi
    if (( ${#ORDER[@]} > 0 || STARTED_TANSU == 1 )); then
        echo "==> stopped"
    fi
}

# Print which child died (if any) with the end of its log; return 0 if one did.
report_dead_child() {
    local name pid rc
    for name in "${ORDER[@]}"; do
        pid="${PIDS[$name]:-}"
        [[ -n "$pid" ]] || continue
        if ! alive "$pid"; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            unset 'PIDS[$name]'
            echo "error: $name exited unexpectedly (status $rc); last lines of $STATE_DIR/$name.log:" >&2
            tail -n 30 "$STATE_DIR/$name.log" >&2 || true
            return 0
        fi
    done
    return 1
}

# Ctrl-C / SIGTERM / hang-up: stop cleanly and exit 0.
on_signal() {
    echo
    echo "==> Stop requested"
    stop_all
    exit 0
}
trap on_signal INT TERM HUP
# Any other exit (an error while starting, a child that died): stop the rest.
trap stop_all EXIT

# True if something accepts TCP connections on HOST:PORT.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# --- prerequisites --------------------------------------------------------

# 1. The broker binary and PostgreSQL.
bash "$TOOLS_DIR/install-tansu.sh"
bash "$TOOLS_DIR/ensure-postgres.sh"

# 2. The collector's database.
if [[ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DATABASE_NAME'")" == "1" ]]; then
    echo "==> Database $DATABASE_NAME exists"
else
    echo "==> Creating database $DATABASE_NAME"
    createdb -h 127.0.0.1 -U postgres "$DATABASE_NAME"
fi

# 3. Build the binaries (dev profile).
echo "==> Building binaries (cargo build --bins)"
cd "$REPO_ROOT"
cargo build --bins
BIN_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug"
for bin in bess-collector bess-sim bess-edge; do
    if [[ ! -x "$BIN_DIR/$bin" ]]; then
        echo "error: $BIN_DIR/$bin was not built" >&2
        exit 1
    fi
done

# 4. Our own ports must be free (a demo already running would hold them).
for addr in "127.0.0.1:$API_PORT" "127.0.0.1:$SIM_PORT" "$EDGE_STATUS"; do
    if port_open "${addr%:*}" "${addr##*:}"; then
        echo "error: $addr is already in use (is another demo running?)" >&2
        exit 1
    fi
done

mkdir -p "$STATE_DIR"

# --- start the system -----------------------------------------------------

# 5. The broker: reuse one that already listens, else start Tansu.
if port_open 127.0.0.1 "$KAFKA_PORT"; then
    echo "==> Something already listens on 127.0.0.1:$KAFKA_PORT; using it as the Kafka broker"
else
    tansu_start "$KAFKA_PORT" "$STATE_DIR"
    STARTED_TANSU=1
fi
tansu_create_topic "$KAFKA_PORT" "$TOPIC" "$TOPIC_PARTITIONS"

# 6. The collector: Kafka -> PostgreSQL, plus the HTTP API (tokens required).
#    A demo token for every site, printed below (shown only at creation).
echo "==> Creating a demo API token"
DEMO_TOKEN="$("$BIN_DIR/bess-collector" token create --name demo --all-sites --role admin --database-url "$DATABASE_URL")"
start_child collector \
    "$BIN_DIR/bess-collector" run \
    --database-url "$DATABASE_URL" \
    --brokers "127.0.0.1:$KAFKA_PORT" \
    --topic "$TOPIC" \
    --listen "127.0.0.1:$API_PORT" \
    --rules "$REPO_ROOT/deploy/local/demo-rules.toml"

# 7. The simulator: three battery controllers behind one Modbus TCP port.
start_child sim \
    "$BIN_DIR/bess-sim" site --listen "127.0.0.1:$SIM_PORT" --units 3 --seed 42

# 8. The edge agent, configured from the example with this demo's broker,
#    simulator port and buffer location.
EDGE_CONFIG="$STATE_DIR/edge.toml"
echo "==> Writing $EDGE_CONFIG"
sed -e "s|^path = \"bess-edge-buffer.sqlite\"|path = \"$STATE_DIR/buffer.sqlite\"|" \
    -e "s|^brokers = \"127.0.0.1:9092\"|brokers = \"127.0.0.1:$KAFKA_PORT\"|" \
    -e "s|^port = 5020$|port = $SIM_PORT|" \
    -e "s|^key_file = \"bess-edge-site.key\"|key_file = \"$STATE_DIR/site.key\"|" \
    "$REPO_ROOT/edge/bess-edge.example.toml" >"$EDGE_CONFIG"
chmod 600 "$EDGE_CONFIG"
# The site's signing key (created on first use) and its enrolment: the
# collector stores only batches signed by a key enrolled for their site.
PUBLIC_KEY="$("$BIN_DIR/bess-edge" key --config "$EDGE_CONFIG" | awk '/^public key:/ {print $3}')"
echo "==> Enrolling site-001's signing key $PUBLIC_KEY"
"$BIN_DIR/bess-collector" site enroll site-001 --public-key "$PUBLIC_KEY" \
    --note "local demo" --database-url "$DATABASE_URL" 2>/dev/null \
    || echo "    (already enrolled)"
start_child edge \
    "$BIN_DIR/bess-edge" run --config "$EDGE_CONFIG"

# 9. Wait for the collector's API to answer.
echo "==> Waiting for $API_BASE/health (up to ${HEALTH_TIMEOUT}s)"
deadline=$((SECONDS + HEALTH_TIMEOUT))
until curl -fsS -o /dev/null --max-time 2 "$API_BASE/health" 2>/dev/null; do
    if report_dead_child; then
        exit 1
    fi
    if (( SECONDS >= deadline )); then
        echo "error: $API_BASE/health did not answer within ${HEALTH_TIMEOUT}s; last lines of $STATE_DIR/collector.log:" >&2
        tail -n 30 "$STATE_DIR/collector.log" >&2 || true
        exit 1
    fi
    sleep 1
done

# --- running --------------------------------------------------------------

# 10. Tell the user what to look at.
FROM="$(date -u -d '10 minutes ago' +%Y-%m-%dT%H:%M:%SZ)"
TO="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LOGS="$STATE_DIR/{collector,sim,edge}.log"
if (( STARTED_TANSU == 1 )); then
    LOGS="$STATE_DIR/{collector,sim,edge,tansu}.log"
fi
cat <<BANNER

==> BESS demo is running
    API:        $API_BASE
    Dashboard:  $API_BASE/?token=$DEMO_TOKEN
    Token:      $DEMO_TOKEN
      curl -H "Authorization: Bearer $DEMO_TOKEN" $API_BASE/api/v1/sites
      curl -H "Authorization: Bearer $DEMO_TOKEN" $API_BASE/api/v1/sites/site-001/latest
      curl -H "Authorization: Bearer $DEMO_TOKEN" '$API_BASE/api/v1/series?point=site-001/bms-1/soc&from=$FROM&to=$TO'
    Live feed:  ws://127.0.0.1:$API_PORT/api/v1/live?site=site-001&access_token=$DEMO_TOKEN
    API doc:    $API_BASE/api/v1/openapi.json
    Edge:       http://$EDGE_STATUS/status
    Metrics:    $API_BASE/metrics (collector), http://$EDGE_STATUS/metrics (edge)
    Logs:       $LOGS
    Kafka:      127.0.0.1:$KAFKA_PORT, topic $TOPIC
    Press Ctrl-C to stop.

BANNER

# 11. Wait for Ctrl-C; if a child dies meanwhile, report it and stop the rest.
while true; do
    if report_dead_child; then
        exit 1
    fi
    # Sleep in the background so a signal interrupts `wait` at once.
    sleep 1 &
    wait $! || true
done
