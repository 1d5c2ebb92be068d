#!/usr/bin/env bash
# Benchmark of GET /api/v1/sites/{site}/latest through the whole stack:
# a simulated site, the edge, the broker and the collector with token auth,
# loaded by wrk. Prints wrk's latency distribution (p50/p99) and rate.
#
# Usage: deploy/bench/api-latest.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: the workspace built in release mode (the script builds it), wrk
# (apt-get install wrk), Tansu (deploy/tools/install-tansu.sh), PostgreSQL.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
DURATION="${1:-20}"
CONNECTIONS="${2:-32}"
STATE="$(mktemp -d /tmp/bess-api-bench.XXXXXX)"
BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
bash "$REPO_ROOT/deploy/tools/install-tansu.sh" >/dev/null
echo "==> Building (release)"
(cd "$REPO_ROOT" && cargo build --release --bins -q)

# shellcheck source=../tools/tansu.sh
source "$REPO_ROOT/deploy/tools/tansu.sh"
KAFKA_PORT="$(free_port)"; SIM_PORT="$(free_port)"; API_PORT="$(free_port)"
DB="bess_api_bench_$$"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  tansu_stop "$STATE" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$STATE"
}
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
URL="postgres://postgres@127.0.0.1:5432/$DB"
tansu_start "$KAFKA_PORT" "$STATE" >/dev/null
"$BIN/bess-collector" migrate --database-url "$URL" >/dev/null
TOKEN="$("$BIN/bess-collector" token create --name bench --all-sites --role read --database-url "$URL")"
"$BIN/bess-sim" site --listen "127.0.0.1:$SIM_PORT" --units 3 >"$STATE/sim.log" 2>&1 & PIDS+=($!)
"$BIN/bess-collector" run --database-url "$URL" --brokers "127.0.0.1:$KAFKA_PORT" --listen "127.0.0.1:$API_PORT" \
  --rate-limit none >"$STATE/collector.log" 2>&1 & PIDS+=($!)
sed -e "s/port = 5020/port = $SIM_PORT/" -e "s/127.0.0.1:9092/127.0.0.1:$KAFKA_PORT/" \
    -e "s#path = \"bess-edge-buffer.sqlite\"#path = \"$STATE/buffer.sqlite\"#" \
    "$REPO_ROOT/edge/bess-edge.example.toml" >"$STATE/edge.toml"
"$BIN/bess-edge" run --config "$STATE/edge.toml" --status-listen 127.0.0.1:0 >"$STATE/edge.log" 2>&1 & PIDS+=($!)

echo "==> Waiting for site-001 to have latest values"
for _ in $(seq 1 120); do
  if curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$API_PORT/api/v1/sites/site-001/latest" | grep -q '"soc"'; then break; fi
  sleep 0.5
done
echo "==> wrk: $CONNECTIONS connections, 2 threads, ${DURATION}s (collector, broker, edge, simulator and PostgreSQL share this machine)"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$API_PORT/api/v1/sites/site-001/latest"
