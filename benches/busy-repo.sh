#!/usr/bin/env bash
# A busy repository: the server CPU of a full clone right after the first
# push (the tokio corpus, mirrored), after 300 small pushes without
# background repacking (--repack-quiet-ms 0), and after the same 300 with
# it (the default), all in one run on one data directory. Prints the
# ratios to the first clone and the pack counts.
#
#   benches/busy-repo.sh               # PUSHES=300 RUNS=5 REPO=tokio
#
# Needs a release build (cargo build --release). Server CPU is user+system
# time of the node process (all its threads) from /proc, per clone; the
# median of RUNS clones after one warm-up clone is reported.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/corpus}
NODE_BIN=${NODE_BIN:-$ROOT/target/release/guts-node}
PORT=${NODE_PORT:-18580}
PUSHES=${PUSHES:-300}
RUNS=${RUNS:-5}
REPO=${REPO:-tokio}
WORK=$(mktemp -d)
[ -x "$NODE_BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global init.defaultBranch main
git config --global protocol.version 2
NODE_PID=
trap '[ -n "$NODE_PID" ] && kill $NODE_PID 2>/dev/null; rm -rf "$WORK"' EXIT

start_node() {
    "$NODE_BIN" --data-dir "$WORK/node" --api-addr "127.0.0.1:$PORT" \
        --metrics-addr "127.0.0.1:$((PORT + 1))" --p2p-addr "127.0.0.1:$((PORT + 2))" \
        "$@" >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health/live" >/dev/null && break; sleep 0.1; done
}
stop_node() { kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$NODE_PID/stat"; }
packs() { ls "$WORK/node/repos/bench/$REPO.git/objects/pack/" | grep -c '^pack-.*\.pack$'; }

# Median server CPU (ms) of RUNS full clones after one warm-up clone.
clone_cpu() {
    local url=$1 samples=() i before after
    rm -rf "$WORK/c"; git clone -q --mirror "$url" "$WORK/c"
    for i in $(seq "$RUNS"); do
        rm -rf "$WORK/c"
        before=$(cpu_ticks)
        git clone -q --mirror "$url" "$WORK/c"
        after=$(cpu_ticks)
        samples+=($(( (after - before) * 1000 / $(getconf CLK_TCK) )))
    done
    git -C "$WORK/c" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed" >&2; exit 1; }
    printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

start_node --repack-quiet-ms 0
TOKEN=$(cat "$WORK/node/admin.token")
URL="http://admin:$TOKEN@127.0.0.1:$PORT/git/bench/$REPO.git"
curl -sf -X POST "http://127.0.0.1:$PORT/api/repos" -u "admin:$TOKEN" \
    -H 'Content-Type: application/json' -d "{\"owner\":\"bench\",\"name\":\"$REPO\"}" >/dev/null
git clone -q --mirror "$CORPUS/$REPO.bundle" "$WORK/src.git"
git -C "$WORK/src.git" push -q --mirror "$URL"
stop_node; start_node --repack-quiet-ms 0
first=$(clone_cpu "$URL")
first_packs=$(packs)

git clone -q "$URL" "$WORK/wt" 2>/dev/null
for i in $(seq "$PUSHES"); do
    echo "push $i" >"$WORK/wt/busy-$((i % 10)).txt"
    git -C "$WORK/wt" add -A
    git -C "$WORK/wt" commit -q -m "push $i"
    git -C "$WORK/wt" push -q origin HEAD
done
stop_node; start_node --repack-quiet-ms 0
busy_off=$(clone_cpu "$URL")
off_packs=$(packs)

stop_node; start_node
git ls-remote "$URL" >/dev/null  # opens the repository
for _ in $(seq 600); do [ "$(packs)" -le 32 ] && break; sleep 0.1; done
sleep 2
busy_on=$(clone_cpu "$URL")
on_packs=$(packs)
stop_node

echo "repo=$REPO pushes=$PUSHES runs=$RUNS commit=$(git -C "$ROOT" rev-parse --short HEAD) date=$(date -u +%FT%TZ)"
echo "clone after first push:            ${first} ms server CPU, ${first_packs} packs"
echo "after $PUSHES pushes, no repacking:   ${busy_off} ms server CPU, ${off_packs} packs, ratio $(awk "BEGIN{printf \"%.2f\", $busy_off/($first>0?$first:1)}")"
echo "after $PUSHES pushes, repacked:       ${busy_on} ms server CPU, ${on_packs} packs, ratio $(awk "BEGIN{printf \"%.2f\", $busy_on/($first>0?$first:1)}")"
