#!/usr/bin/env bash
# Push-to-final latency, batched throughput and catch-up of a network of
# validators, against a standalone node measured in the same run, all
# driven by the real git client on loopback.
#
#   benches/network-push.sh                 # PUSHES=100 BLOCKS=1000 REFS=10000
#   PUSHES=300 VALIDATORS=4 benches/network-push.sh
#
# Measures (release build: cargo build --release):
#  1. latency: PUSHES one-commit pushes, one after another, timed around
#     `git push` (the client sees the acknowledgement only once the update
#     is final and on disk), to a standalone node and to node 0 of a
#     VALIDATORS-validator devnet; p50/p99 and the ratio.
#  2. throughput: finalized ref updates per second, from the first request
#     sent to the last acknowledgement, driven by benches/push-driver.py
#     (receive-pack requests creating branches at an existing commit, as
#     git sends them): one request of REFS updates, and CLIENTS concurrent
#     requests of REFS/CLIENTS each through different validators; the same
#     against the standalone node for the ratio. Also one push of
#     GIT_REFS branches by the real git client, which is bound by the
#     client itself: its send-pack matches each of the refspecs the remote
#     helper hands it against every local ref (quadratic in the number of
#     refs: 1,000 refs take it 0.9 s, 2,000 take 3.5 s, 4,000 take 15 s
#     before it sends its first byte, against any server).
#  3. catch-up: the last validator is stopped, BLOCKS one-commit pushes are
#     finalized without it, it is started again, and the time until its
#     block height equals the others' is reported.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${NODE_BIN:-$ROOT/target/release/guts-node}
PUSHES=${PUSHES:-100}
VALIDATORS=${VALIDATORS:-4}
REFS=${REFS:-10000}
GIT_REFS=${GIT_REFS:-1000}
CLIENTS=${CLIENTS:-4}
BLOCKS=${BLOCKS:-1000}
BASE=${BASE_PORT:-28400}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
wait_live() {
    for _ in $(seq 300); do curl -sf "http://$1/health/live" >/dev/null && return 0; sleep 0.1; done
    echo "node at $1 did not start" >&2; exit 1
}
height() { # metrics address -> finalized height
    curl -sf "http://$1/metrics" | awk '/^guts_consensus_block_height /{print $2; exit}'
}
stats() { # label file-of-ms
    python3 - "$1" "$2" <<'EOF'
import sys, statistics
xs = sorted(float(l) for l in open(sys.argv[2]) if l.strip())
q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
print(f"{sys.argv[1]:<28} n={len(xs)} p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms mean={statistics.mean(xs):.1f} ms")
EOF
}
p50() { python3 -c "import sys; xs=sorted(float(l) for l in open(sys.argv[1]) if l.strip()); print(xs[len(xs)//2])" "$1"; }

# A local repository to push from.
git init -q -b main "$WORK/src"
git -C "$WORK/src" -c user.name=b -c user.email=b@b commit -q --allow-empty -m root

push_series() { # url outfile
    local url=$1 out=$2
    : >"$out"
    for i in $(seq "$PUSHES"); do
        echo "$i" >"$WORK/src/f"
        git -C "$WORK/src" add f
        git -C "$WORK/src" -c user.name=b -c user.email=b@b commit -q -m "c$i"
        local t0 t1
        t0=$(now_ms)
        git -C "$WORK/src" push -q "$url" HEAD:refs/heads/main
        t1=$(now_ms)
        echo $((t1 - t0)) >>"$out"
    done
}

# 1a. standalone node
"$BIN" --data-dir "$WORK/solo" --api-addr "127.0.0.1:$BASE" --metrics-addr "127.0.0.1:$((BASE + 1))" \
    --p2p-addr "127.0.0.1:$((BASE + 2))" --shards 1 >"$WORK/solo.log" 2>&1 &
PIDS+=($!)
wait_live "127.0.0.1:$BASE"
TOK=$(cat "$WORK/solo/admin.token")
curl -sf -u "admin:$TOK" -X POST "http://127.0.0.1:$BASE/api/repos" -d '{"owner":"b","name":"solo"}' >/dev/null
push_series "http://admin:$TOK@127.0.0.1:$BASE/git/b/solo.git" "$WORK/solo.ms"
DRIVER="python3 $ROOT/benches/push-driver.py --commit $(git -C "$WORK/src" rev-parse HEAD)"
SOLO_URL="http://admin:$TOK@127.0.0.1:$BASE/git/b/solo.git"
$DRIVER --url "$SOLO_URL" --prefix one --branches "$REFS" --clients 1 >"$WORK/solo-one.txt"
$DRIVER --url "$SOLO_URL" --prefix many --branches "$REFS" --clients "$CLIENTS" >"$WORK/solo-many.txt"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()

# 1b. devnet
NET_BASE=$((BASE + 10))
"$BIN" devnet init --validators "$VALIDATORS" --dir "$WORK/net" --base-port "$NET_BASE" >/dev/null
start_node() {
    "$BIN" --config "$WORK/net/node-$1/config.toml" >>"$WORK/net/node-$1/node.log" 2>&1 &
    NODE_PID[$1]=$!
    PIDS+=($!)
}
declare -a NODE_PID
for i in $(seq 0 $((VALIDATORS - 1))); do start_node "$i"; done
for i in $(seq 0 $((VALIDATORS - 1))); do wait_live "127.0.0.1:$((NET_BASE + 10 * i))"; done
TOK=$(cat "$WORK/net/admin.token")
API0="127.0.0.1:$NET_BASE"
curl -sf -u "admin:$TOK" -X POST "http://$API0/api/repos" -d '{"owner":"b","name":"net"}' >/dev/null
URL0="http://admin:$TOK@$API0/git/b/net.git"
git -C "$WORK/src" checkout -q --orphan fresh
git -C "$WORK/src" -c user.name=b -c user.email=b@b commit -q --allow-empty -m root2
push_series "$URL0" "$WORK/net.ms"

server_ms() { # node log -> the first PUSHES receive-pack request durations (ms)
    sed 's/\x1b\[[0-9;]*m//g' "$1" | grep 'path=/git/.*/git-receive-pack status=200' |
        grep -o 'duration_ms=[0-9]*' | cut -d= -f2 | head -n "$PUSHES"
}
server_ms "$WORK/solo.log" >"$WORK/solo.server.ms"
server_ms "$WORK/net/node-0/node.log" >"$WORK/net.server.ms"
echo "== push-to-final latency, $PUSHES one-commit pushes"
echo "client-observed (git push, from start to exit):"
stats "  standalone" "$WORK/solo.ms"
stats "  $VALIDATORS validators" "$WORK/net.ms"
python3 -c "print(f'  ratio {$VALIDATORS}v / standalone (p50): {float($(p50 "$WORK/net.ms"))/float($(p50 "$WORK/solo.ms")):.2f}')"
echo "server-side (the receive-pack request, from its first byte to the acknowledgement):"
stats "  standalone" "$WORK/solo.server.ms"
stats "  $VALIDATORS validators" "$WORK/net.server.ms"
python3 -c "print(f'  ratio {$VALIDATORS}v / standalone (p50): {max(1.0, float($(p50 "$WORK/net.server.ms")))/max(1.0, float($(p50 "$WORK/solo.server.ms"))):.2f}')"

# 2. throughput: many ref updates, batched
DRIVER="python3 $ROOT/benches/push-driver.py --commit $(git -C "$WORK/src" rev-parse HEAD)"
URLS=()
for i in $(seq 0 $((VALIDATORS - 1))); do
    URLS+=(--url "http://admin:$TOK@127.0.0.1:$((NET_BASE + 10 * i))/git/b/net.git")
done
for k in $(seq "$GIT_REFS"); do echo "create refs/heads/git-$k HEAD"; done |
    git -C "$WORK/src" update-ref --stdin
t0=$(now_ms)
git -C "$WORK/src" push -q "$URL0" "refs/heads/git-*:refs/heads/git-*"
t1=$(now_ms)
echo "== batched throughput (finalized ref updates per second)"
echo "$VALIDATORS validators, the git client pushing $GIT_REFS new branches: $((t1 - t0)) ms (client-bound, see the header)"
echo "standalone: $(cat "$WORK/solo-one.txt")"
echo "standalone: $(cat "$WORK/solo-many.txt")"
echo "$VALIDATORS validators: $($DRIVER --url "$URL0" --prefix one --branches "$REFS" --clients 1)"
echo "$VALIDATORS validators: $($DRIVER "${URLS[@]}" --prefix many --branches "$REFS" --clients "$CLIENTS")"

# 3. catch-up
LAST=$((VALIDATORS - 1))
kill "${NODE_PID[$LAST]}"; wait "${NODE_PID[$LAST]}" 2>/dev/null || true
# The devnet's main was pushed from the orphan branch `fresh`.
git -C "$WORK/src" checkout -q fresh
for i in $(seq "$BLOCKS"); do
    echo "x$i" >"$WORK/src/f"
    git -C "$WORK/src" -c user.name=b -c user.email=b@b commit -q -am "x$i"
    git -C "$WORK/src" push -q "$URL0" HEAD:refs/heads/main
done
target=$(height "127.0.0.1:$((NET_BASE + 1))")
t0=$(now_ms)
start_node "$LAST"
M="127.0.0.1:$((NET_BASE + 10 * LAST + 1))"
until [ "$(height "$M" 2>/dev/null || echo 0)" -ge "$target" ] 2>/dev/null; do sleep 0.05; done
t1=$(now_ms)
echo "== catch-up"
echo "node-$LAST restarted $BLOCKS blocks behind (height $target): caught up in $((t1 - t0)) ms (process start included)"
