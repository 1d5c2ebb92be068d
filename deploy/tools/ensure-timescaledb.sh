#!/usr/bin/env bash
# Make sure a PostgreSQL server with TimescaleDB preloaded answers on
# 127.0.0.1, for the collector's TimescaleDB tests, and print its URL.
#
# Usage: url="$(deploy/tools/ensure-timescaledb.sh)"
#   BESS_TSDB_PORT        port of the cluster this script starts (default 5433)
#   BESS_TIMESCALEDB_DIR  the prebuilt copy (default <repo>/../shared/timescaledb;
#                         for a git worktree also beside the main checkout)
#
# In this order:
# 1. A running server on this machine that has TimescaleDB installed *and*
#    in shared_preload_libraries (e.g. a Timescale package after
#    timescaledb-tune): use it.
# 2. TimescaleDB installed for the local PostgreSQL (Timescale's package
#    timescaledb-2-postgresql-NN, or files installed earlier): start a
#    second cluster "tsdb" on BESS_TSDB_PORT that preloads it.
# 3. <repo>/../shared/timescaledb/ exists: install its files (install.sh)
#    and start its cluster (start-cluster.sh BESS_TSDB_PORT).
# 4. None of these: say so on stderr and exit 0 without a URL.
#
# Idempotent. Only the URL goes to stdout
# (postgres://postgres@127.0.0.1:PORT/postgres); progress goes to stderr.
set -euo pipefail

# Everything the commands below print (pg_ctlcluster says "Removed stale pid
# file." on stdout, for one) goes to stderr; only url_for writes to the
# caller's stdout, kept on fd 3. The servers started below must not inherit
# fd 3: a caller capturing the URL with $(...) would wait for them to exit.
exec 3>&1 1>&2

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
SHARED_DIR="${BESS_TIMESCALEDB_DIR:-$REPO_ROOT/../shared/timescaledb}"
if [[ -z "${BESS_TIMESCALEDB_DIR:-}" && ! -d "$SHARED_DIR" ]]; then
    # A linked worktree: look beside the main checkout too.
    common="$(git -C "$REPO_ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    if [[ -n "$common" && -d "$(dirname "$common")/../shared/timescaledb" ]]; then
        SHARED_DIR="$(cd "$(dirname "$common")/../shared/timescaledb" && pwd)"
    fi
fi
PORT="${BESS_TSDB_PORT:-5433}"
CLUSTER="tsdb"
READY_TIMEOUT=60

say() { echo "==> timescaledb: $*" >&2; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@" 3>&-
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@" 3>&-
    else
        echo "error: '$*' needs root and sudo is not available" >&2
        return 1
    fi
}

url_for() { echo "postgres://postgres@127.0.0.1:$1/postgres" >&3; }

# Query a server on 127.0.0.1:PORT as postgres; empty output when it does not answer.
query() {
    psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc "$2" 2>/dev/null || true
}

# True if the server on PORT has TimescaleDB installed and preloaded.
preloaded_on() {
    [[ "$(query "$1" "SELECT current_setting('shared_preload_libraries') ~ 'timescaledb'
                         AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')")" == "t" ]]
}

wait_ready() {
    for _ in $(seq 1 $((READY_TIMEOUT * 2))); do
        if [[ "$(query "$1" "SELECT 1")" == "1" ]]; then
            return 0
        fi
        sleep 0.5
    done
    echo "error: PostgreSQL on 127.0.0.1:$1 did not answer within ${READY_TIMEOUT}s" >&2
    return 1
}

# The policies' jobs run as background workers: one scheduler per database
# plus one per running job. PostgreSQL's default of 8 runs out when the
# tests create databases in parallel; raise it on the cluster this script
# started, restarting it only while nobody else is connected.
enough_workers() {
    local port="$1" workers
    workers="$(query "$port" "SHOW max_worker_processes")"
    if [[ -z "$workers" || "$workers" -ge 32 ]]; then
        return 0
    fi
    query "$port" "ALTER SYSTEM SET max_worker_processes = 32" >/dev/null
    query "$port" "ALTER SYSTEM SET timescaledb.max_background_workers = 24" >/dev/null
    local others
    others="$(query "$port" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")"
    if [[ "$others" == "0" ]]; then
        say "restarting cluster $major/$CLUSTER for max_worker_processes = 32"
        as_root pg_ctlcluster --skip-systemctl-redirect "$major" "$CLUSTER" restart
        wait_ready "$port"
    else
        say "max_worker_processes = 32 takes effect when cluster $major/$CLUSTER restarts ($others clients connected now)"
    fi
}

if ! command -v psql >/dev/null 2>&1 || ! command -v pg_config >/dev/null 2>&1; then
    say "no PostgreSQL client or pg_config on this machine; no TimescaleDB server"
    exit 0
fi

major="$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"

# 1. A running, preloaded server.
if command -v pg_lsclusters >/dev/null 2>&1; then
    while read -r version name port status _; do
        if [[ "$status" == online* ]] && preloaded_on "$port"; then
            say "preloaded server on 127.0.0.1:$port"
            if [[ "$version" == "$major" && "$name" == "$CLUSTER" ]]; then
                enough_workers "$port"
            fi
            url_for "$port"
            exit 0
        fi
    done < <(pg_lsclusters --no-header 2>/dev/null)
fi

extdir="$(pg_config --sharedir)/extension"

# 2. Installed for the local PostgreSQL (a package, or files installed earlier):
#    a second cluster that preloads it.
if [[ -f "$extdir/timescaledb.control" ]] && command -v pg_createcluster >/dev/null 2>&1; then
    conf="/etc/postgresql/$major/$CLUSTER"
    if [[ ! -d "$conf" ]]; then
        say "creating cluster $major/$CLUSTER on port $PORT with TimescaleDB preloaded"
        as_root pg_createcluster "$major" "$CLUSTER" --port "$PORT" -- --auth=trust >/dev/null
        as_root tee -a "$conf/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
max_worker_processes = 32
timescaledb.max_background_workers = 24
CONF
        as_root sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1\/32[[:space:]]+).*/\1trust/' "$conf/pg_hba.conf"
        as_root sed -i -E 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1\/128[[:space:]]+).*/\1trust/' "$conf/pg_hba.conf"
    fi
    port="$(pg_lsclusters --no-header | awk -v n="$CLUSTER" -v v="$major" '$1 == v && $2 == n { print $3; exit }')"
    if ! pg_lsclusters --no-header | awk -v n="$CLUSTER" -v v="$major" '$1 == v && $2 == n && $4 ~ /^online/' | grep -q .; then
        say "starting cluster $major/$CLUSTER"
        as_root pg_ctlcluster --skip-systemctl-redirect "$major" "$CLUSTER" start
    fi
    wait_ready "$port"
    enough_workers "$port"
    if preloaded_on "$port"; then
        say "cluster $major/$CLUSTER on 127.0.0.1:$port"
        url_for "$port"
        exit 0
    fi
    echo "error: cluster $major/$CLUSTER on port $port does not preload TimescaleDB (see its postgresql.conf)" >&2
    exit 1
fi

# 3. The prebuilt copy beside the repository.
if [[ -d "$SHARED_DIR" ]]; then
    say "installing from $SHARED_DIR"
    as_root bash "$SHARED_DIR/install.sh" >&2
    as_root bash "$SHARED_DIR/start-cluster.sh" "$PORT" >&2
    wait_ready "$PORT"
    enough_workers "$PORT"
    if preloaded_on "$PORT"; then
        url_for "$PORT"
        exit 0
    fi
    echo "error: the cluster on port $PORT does not preload TimescaleDB" >&2
    exit 1
fi

# 4. Nothing to be had.
say "not available: no preloaded server, no timescaledb-2-postgresql-$major package, no $SHARED_DIR"
exit 0
