#!/usr/bin/env bash
# Benchmark of GET /api/v1/sites/{site}/latest (token auth on) while the load
# generator keeps writing: p50/p90/p99 at fixed request rates (open loop,
# latency from the scheduled send) and the maximum throughput measured by wrk
# in the same run, with each rate's share of it.
#
# Usage: deploy/bench/api-latest.sh [bess-api-bench latest flags, e.g. --rates 1000,3000 --duration 20s]
# Needs: wrk (apt-get install wrk; or pass --no-ceiling), Tansu
# (deploy/tools/install-tansu.sh), PostgreSQL on 127.0.0.1:5432.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"

bash "$REPO_ROOT/deploy/tools/install-tansu.sh" >/dev/null
echo "==> Building (release)"
(cd "$REPO_ROOT" && cargo build --release --bins -q)
exec "$BIN/bess-api-bench" latest "$@"
