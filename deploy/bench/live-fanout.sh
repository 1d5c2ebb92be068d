#!/usr/bin/env bash
# WebSocket fan-out benchmark of GET /api/v1/live: 10,000 clients (one site
# each) while 100 sites write one frame per second. Prints delivery latency,
# frames lost or duplicated, collector CPU and memory.
#
# Usage: deploy/bench/live-fanout.sh [bess-api-bench live flags, e.g. --clients 2000]
# Needs: Tansu (deploy/tools/install-tansu.sh), PostgreSQL on 127.0.0.1:5432.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"

bash "$REPO_ROOT/deploy/tools/install-tansu.sh" >/dev/null
echo "==> Building (release)"
(cd "$REPO_ROOT" && cargo build --release --bins -q)
exec "$BIN/bess-api-bench" live "$@"
