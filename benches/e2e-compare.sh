#!/usr/bin/env bash
# End-to-end comparison of guts-node against C git's own smart-HTTP server
# (git http-backend under lighttpd, tuned with bitmaps + commit-graph as
# production hosts run it), driven by the real git client through the
# shared harness. Prints A/B ratios (A = guts-node, B = C git).
#
#   benches/e2e-compare.sh                    # all measures, RUNS=5
#   RUNS=9 REPOS=tokio MEASURES="clone_v2 clone_v0" benches/e2e-compare.sh
#
# Needs lighttpd (apt-get install -y lighttpd) and a release build
# (cargo build --release). Results: bench-results/ (git-ignored).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/../shared/bench}
NODE_BIN=${NODE_BIN:-$ROOT/target/release/guts-node}
NODE_PORT=${NODE_PORT:-18480}
REF_PORT=${REF_PORT:-18481}
WORK=$(mktemp -d)
mkdir -p "$ROOT/bench-results"
command -v lighttpd >/dev/null || { echo "lighttpd missing: apt-get install -y lighttpd" >&2; exit 2; }
[ -x "$NODE_BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }

"$NODE_BIN" --data-dir "$WORK/node" --api-addr "127.0.0.1:$NODE_PORT" \
    --metrics-addr "127.0.0.1:$((NODE_PORT + 10))" >"$WORK/node.log" 2>&1 &
NODE_PID=$!
trap 'kill $NODE_PID 2>/dev/null; "$BENCH/refserver.sh" stop "$WORK/ref" "$REF_PORT" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NODE_PORT/health/live" >/dev/null && break; sleep 0.1; done
# Writes need the node's admin token (made on first start).
TOKEN=$(cat "$WORK/node/admin.token")

cat >"$WORK/create-node-repo" <<EOS
#!/bin/sh
curl -sf -u "admin:$TOKEN" -X POST "http://127.0.0.1:$NODE_PORT/api/repos" -H 'Content-Type: application/json' \
     -d "{\"owner\":\"\$1\",\"name\":\"\$2\"}" >/dev/null
EOS
chmod +x "$WORK/create-node-repo"

mkdir -p "$WORK/ref"
eval "$(REFSERVER_TUNED=${REFSERVER_TUNED:-1} "$BENCH/refserver.sh" start "$WORK/ref" "$REF_PORT")"
export A_LABEL=guts-node A_GIT_BASE="http://admin:$TOKEN@127.0.0.1:$NODE_PORT/git" A_CREATE_REPO="$WORK/create-node-repo"
export A_SERVER_PID=$NODE_PID
export B_LABEL=cgit-tuned B_GIT_BASE="$GIT_BASE" B_CREATE_REPO="$CREATE_REPO" B_SERVER_PID=${SERVER_PID:-}
export JSON_OUT=${JSON_OUT:-$ROOT/bench-results/compare-$(date -u +%Y%m%dT%H%M%SZ).json}
unset GIT_BASE CREATE_REPO SERVER_PID
"$BENCH/compare.sh"
