#!/usr/bin/env bash
# A full clone with and without bundle URIs: server CPU and wall time of
# `git clone --bare` of a repository that has a bundle, by a client with
# `transfer.bundleURI=false` (the node walks and sends everything) and
# with `transfer.bundleURI=true` (the client downloads the bundle file,
# then fetches what is newer than it).
#
#   benches/bundle-uri.sh                      # target/release/guts-node
#   BIN=/work/rel2/release/guts-node RUNS=5 REPO=tokio benches/bundle-uri.sh
#
# The node starts with --bundle-uri-enabled and --bundle-uri-clones 1; one
# clone makes it write the bundle; then it restarts with a clone count no
# run reaches (so no new bundle is written while measuring), and one
# commit is pushed on top, so every bundled clone has something newer to
# fetch. Before every measurement a ref (refs/heads/toggle) is moved
# between two existing commits, so no shared response kept from an
# earlier clone answers it. Server CPU is user+system time of the node
# process from /proc (10 ms ticks) around one clone; wall time is the
# client's, bundle download and unbundling included. Medians of RUNS; each
# kind's last clone passes `git fsck --strict`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/corpus}
BIN=${BIN:-$ROOT/target/release/guts-node}
PORT=${NODE_PORT:-18780}
RUNS=${RUNS:-5}
REPO=${REPO:-tokio}
WORK=$(mktemp -d)
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global protocol.version 2
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start() {
    "$BIN" --data-dir "$WORK/node" --api-addr "127.0.0.1:$PORT" \
        --metrics-addr "127.0.0.1:$((PORT + 1))" --p2p-addr "127.0.0.1:$((PORT + 2))" \
        --bundle-uri-enabled --bundle-uri-min-bytes 0 --bundle-uri-clones "$1" \
        >>"$WORK/node.log" 2>&1 &
    PID=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health/live" >/dev/null && break; sleep 0.1; done
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

git clone -q --mirror "$CORPUS/$REPO.bundle" "$WORK/src.git"
start 1
token=$(cat "$WORK/node/admin.token")
curl -sf -X POST "http://127.0.0.1:$PORT/api/repos" -u "admin:$token" \
    -H 'Content-Type: application/json' -d "{\"owner\":\"bench\",\"name\":\"$REPO\"}" >/dev/null
URL="http://admin:$token@127.0.0.1:$PORT/git/bench/$REPO.git"
git -C "$WORK/src.git" push -q --mirror "$URL"
git clone -q --bare "$URL" "$WORK/warm"
for _ in $(seq 600); do
    ls "$WORK/node/repos/bench/$REPO.git/bundles/"*.bundle >/dev/null 2>&1 && break
    sleep 0.5
done
sleep 1
stop
start 1000000000
BUNDLE=$(ls "$WORK/node/repos/bench/$REPO.git/bundles/"*.bundle)
# Something newer than the bundle.
git clone -q "$WORK/src.git" "$WORK/wt"
echo newer >"$WORK/wt/bundle-uri-bench.txt"
git -C "$WORK/wt" add bundle-uri-bench.txt
git -C "$WORK/wt" commit -qm "newer than the bundle"
git -C "$WORK/wt" push -q "$URL" "HEAD:refs/heads/newer"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
toggle=0
# "<server CPU ms> <wall ms>" of one clone with transfer.bundleURI=$1.
one() {
    toggle=$((1 - toggle))
    git -C "$WORK/src.git" push -q --force "$URL" "HEAD~$toggle:refs/heads/toggle"
    rm -rf "$WORK/c"
    sleep 0.2
    local before after t0 t1
    before=$(cpu_ticks)
    t0=$(date +%s%N)
    git -c "transfer.bundleURI=$1" clone -q --bare --no-local "$URL" "$WORK/c" 2>>"$WORK/client.log"
    t1=$(date +%s%N)
    after=$(cpu_ticks)
    echo "$(( (after - before) * 1000 / $(getconf CLK_TCK) )) $(( (t1 - t0) / 1000000 ))"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A CPU WALL
for kind in false true; do one "$kind" >/dev/null; done # warm-up
for r in $(seq "$RUNS"); do
    order=(false true)
    [ $((r % 2)) = 0 ] && order=(true false)
    for kind in "${order[@]}"; do
        read -r c w < <(one "$kind")
        CPU[$kind]+="$c "
        WALL[$kind]+="$w "
    done
done
for kind in false true; do
    one "$kind" >/dev/null
    git -C "$WORK/c" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed (bundleURI=$kind)" >&2; exit 1; }
    if [ "$kind" = true ]; then
        git -C "$WORK/c" rev-parse -q --verify refs/bundles/master >/dev/null ||
            git -C "$WORK/c" for-each-ref refs/bundles/ | grep -q . ||
            { echo "the bundled clone did not use the bundle" >&2; exit 1; }
    fi
done

echo "repo=$REPO runs=$RUNS bundle=$(basename "$BUNDLE") ($(stat -c %s "$BUNDLE") bytes) commit=$(git -C "$ROOT" rev-parse --short HEAD) date=$(date -u +%FT%TZ)"
for kind in false true; do
    printf '  transfer.bundleURI=%-5s server CPU %5s ms   wall %5s ms   (runs: cpu %s| wall %s)\n' "$kind" \
        "$(echo ${CPU[$kind]} | tr ' ' '\n' | median)" "$(echo ${WALL[$kind]} | tr ' ' '\n' | median)" \
        "${CPU[$kind]}" "${WALL[$kind]}"
done
grep -E "bundle written" "$WORK/node.log" | tail -1 | sed 's/^/  node: /'
