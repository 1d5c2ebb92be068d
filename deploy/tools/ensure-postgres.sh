#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 for the collector and the
# integration tests (user postgres, no password).
#
# Usage: deploy/tools/ensure-postgres.sh
#   BESS_PG_PORT overrides the port (default 5432).
#
# - Already answering: nothing to do.
# - A cluster exists but is down: start it with pg_ctlcluster.
# - PostgreSQL not installed: install Debian's package, allow the postgres
#   user in without a password over 127.0.0.1 (only on a server this script
#   installed), and start it.
# Then wait (up to 60 s) until it accepts connections.
set -euo pipefail

PG_HOST="127.0.0.1"
PG_PORT="${BESS_PG_PORT:-5432}"
READY_TIMEOUT=60

# Run a command as root (directly, or through sudo when not root).
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not available" >&2
        return 1
    fi
}

# True if PostgreSQL accepts connections on PG_HOST:PG_PORT.
pg_ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

# True if a PostgreSQL server (not just the client) is installed.
server_installed() {
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && command -v pg_lsclusters >/dev/null 2>&1
}

# Print "VERSION NAME STATUS" of the cluster configured for PG_PORT, if any.
cluster_for_port() {
    pg_lsclusters --no-header 2>/dev/null | awk -v port="$PG_PORT" '$3 == port { print $1, $2, $4; exit }'
}

# 1. Already up: done.
if pg_ready; then
    echo "==> PostgreSQL is ready on $PG_HOST:$PG_PORT"
    exit 0
fi

# 2. Not installed at all: install Debian's server package. Its post-install
#    step creates the default cluster (VERSION/main on port 5432).
installed_here=0
if ! server_installed; then
    echo "==> PostgreSQL is not installed; installing it with apt-get"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
    installed_here=1
fi

# 3. Find the cluster for the port; create one if the package made none.
cluster="$(cluster_for_port)"
if [[ -z "$cluster" ]]; then
    if (( installed_here == 0 )); then
        echo "error: PostgreSQL is installed but no cluster is configured for port $PG_PORT (see pg_lsclusters)" >&2
        exit 1
    fi
    version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
    echo "==> Creating PostgreSQL cluster $version/main on port $PG_PORT"
    as_root pg_createcluster --port "$PG_PORT" "$version" main
    cluster="$(cluster_for_port)"
fi
read -r version name status <<<"$cluster"

# 4. On a server installed just now, let the postgres user in over loopback
#    without a password (first matching pg_hba.conf line wins, so prepend).
if (( installed_here == 1 )); then
    hba="/etc/postgresql/$version/$name/pg_hba.conf"
    if ! as_root grep -q "^host all postgres 127.0.0.1/32 trust" "$hba"; then
        echo "==> Allowing user postgres from 127.0.0.1 without a password ($hba)"
        as_root sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
        if [[ "$status" == online* ]]; then
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" reload
        fi
    fi
fi

# 5. Start the cluster if it is down (no systemd here, so skip its redirect).
if [[ "$status" != online* ]]; then
    echo "==> Starting PostgreSQL cluster $version/$name"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
fi

# 6. Wait until it accepts connections.
echo "==> Waiting for PostgreSQL on $PG_HOST:$PG_PORT (up to ${READY_TIMEOUT}s)"
for _ in $(seq 1 "$READY_TIMEOUT"); do
    if pg_ready; then
        echo "==> PostgreSQL is ready on $PG_HOST:$PG_PORT"
        exit 0
    fi
    sleep 1
done
echo "error: PostgreSQL did not become ready on $PG_HOST:$PG_PORT within ${READY_TIMEOUT}s" >&2
log="/var/log/postgresql/postgresql-$version-$name.log"
[[ -r "$log" ]] && tail -n 20 "$log" >&2
exit 1
