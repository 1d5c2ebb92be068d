#!/usr/bin/env bash
# Build and test the whole workspace against a real broker and database.
#
# Usage: deploy/local/test.sh [CARGO TEST ARGS...]
#   Extra arguments go to `cargo test --workspace`, e.g.
#     deploy/local/test.sh -p bess-edge
#     deploy/local/test.sh -- --nocapture
#
# The integration tests start their own Tansu brokers from $BESS_TANSU_BIN and
# create their own databases on the server in $BESS_TEST_DATABASE_URL (plain
# PostgreSQL) and, for the TimescaleDB variants, in $BESS_TEST_TIMESCALEDB_URL
# (found or started by deploy/tools/ensure-timescaledb.sh).
# Honours CARGO_TARGET_DIR.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
TOOLS_DIR="$REPO_ROOT/deploy/tools"

# 1. The Tansu broker binary the tests start.
echo "==> Installing Tansu"
bash "$TOOLS_DIR/install-tansu.sh" "$REPO_ROOT/.tools/bin"

# 1b. Node.js, headless Chromium and playwright-core for the dashboard test.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> Installing Node.js (dashboard browser test)"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> Installing Chromium (dashboard browser test)"
  apt-get update -qq && apt-get install -y -qq chromium
fi
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "==> Installing Prometheus Alertmanager (notification tests)"
  apt-get update -qq && apt-get install -y -qq prometheus-alertmanager
fi
if ! command -v stunnel4 >/dev/null 2>&1; then
  echo "==> Installing stunnel (TLS proxy in front of the broker, transport security tests)"
  apt-get update -qq && apt-get install -y -qq stunnel4
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "==> Installing openssl (test certificates, transport security tests)"
  apt-get update -qq && apt-get install -y -qq openssl
fi
echo "==> Installing the browser test's node modules"
(cd "$REPO_ROOT/tests/browser" && npm ci --no-audit --no-fund --silent)

# 2. PostgreSQL on 127.0.0.1:5432.
echo "==> Checking PostgreSQL"
bash "$TOOLS_DIR/ensure-postgres.sh"

# 2b. A server with TimescaleDB preloaded, for the TimescaleDB variant of
#     every storage, writer and API query test (an installed package, or
#     ../shared/timescaledb beside the repository).
echo "==> Checking TimescaleDB"
if [[ -z "${BESS_TEST_TIMESCALEDB_URL:-}" ]]; then
  BESS_TEST_TIMESCALEDB_URL="$(bash "$TOOLS_DIR/ensure-timescaledb.sh")"
fi
if [[ -n "$BESS_TEST_TIMESCALEDB_URL" && ! "$BESS_TEST_TIMESCALEDB_URL" =~ ^postgres(ql)?://[^[:space:]]+$ ]]; then
  echo "error: BESS_TEST_TIMESCALEDB_URL is not a postgres:// URL: '$BESS_TEST_TIMESCALEDB_URL'" >&2
  exit 1
fi
if [[ -n "$BESS_TEST_TIMESCALEDB_URL" ]]; then
  export BESS_TEST_TIMESCALEDB_URL
else
  unset BESS_TEST_TIMESCALEDB_URL
  cat >&2 <<'BANNER'

################################################################################
#  NO TIMESCALEDB: the TimescaleDB variants are SKIPPED                        #
#  (`...::on_timescaledb` in collector/tests/storage.rs, writer.rs,            #
#  api_lists.rs, api_access.rs, tests/tests/pipeline.rs `..._on_timescaledb`,  #
#  and the not-preloaded start-up tests in collector/tests/storage.rs).        #
#  Only plain PostgreSQL is tested. Install timescaledb-2-postgresql-NN and    #
#  run timescaledb-tune, or set BESS_TEST_TIMESCALEDB_URL. Under CI these      #
#  tests fail instead of skipping.                                             #
################################################################################

BANNER
fi

# 3. Independent Modbus peers for the edge's interoperability tests.
echo "==> Installing pymodbus (Modbus peer for interoperability tests)"
python3 -m pip install --quiet --disable-pip-version-check "pymodbus==3.16.1" pyserial

# 3b. A local S3 server, so the broker-restart scenario can keep the broker's data.
echo "==> Installing moto (local S3 server for the broker-restart test)"
python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.1"

# 3c. Independent readers of the history lake (pyarrow for S3 + Parquet, DuckDB for SQL).
echo "==> Installing pyarrow and DuckDB (history lake read-back)"
python3 -m pip install --quiet --disable-pip-version-check "pyarrow==26.0.1" "duckdb==2.0.1"

# 4. Where the tests find the broker and the database server.
export BESS_TANSU_BIN="$REPO_ROOT/.tools/bin/tansu"
export BESS_TEST_DATABASE_URL="${BESS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
echo "==> BESS_TANSU_BIN=$BESS_TANSU_BIN"
echo "==> BESS_TEST_DATABASE_URL=$BESS_TEST_DATABASE_URL"
echo "==> BESS_TEST_TIMESCALEDB_URL=${BESS_TEST_TIMESCALEDB_URL:-(none: TimescaleDB variants skipped)}"

cd "$REPO_ROOT"

# 5. Build the binaries first: the end-to-end tests run them as processes.
echo "==> Building binaries (cargo build --bins)"
cargo build --bins

# 6. Run every test in the workspace.
echo "==> Running tests (cargo test --workspace${*:+ $*})"
cargo test --workspace "$@"
