#!/usr/bin/env bash
# A clone storm: the server CPU of one clone against N identical clones at
# once (a CI fleet cloning the same commit), full (`git clone --bare`) and
# shallow (`--depth 1`), with the real git client. Two node binaries can be
# compared in one run: both run at once on their own ports, and every round
# measures A then B (the next round B then A).
#
#   benches/clone-storm.sh                          # A only: target/release
#   A_BIN=/tmp/old B_BIN=target/release/guts-node benches/clone-storm.sh
#   RUNS=5 N=8 REPO=tokio                           # the defaults
#
# Server CPU is user+system time of the node process (all its threads)
# from /proc (10 ms ticks) from the first clone's start to the last one's
# end; the median of RUNS rounds is reported. Before every measurement a
# ref (refs/heads/storm-toggle) is moved, so the ref state is new and no
# response kept from before can answer it: every measurement computes its
# clone once at least. One clone of each kind passes `git fsck --strict`
# and every clone must succeed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/corpus}
A_BIN=${A_BIN:-$ROOT/target/release/guts-node}
B_BIN=${B_BIN:-}
PORT=${NODE_PORT:-18680}
RUNS=${RUNS:-5}
N=${N:-8}
REPO=${REPO:-tokio}
WORK=$(mktemp -d)
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global protocol.version 2
declare -A PID URL
LABELS=(A)
[ -n "$B_BIN" ] && LABELS+=(B)
cleanup() { for l in "${LABELS[@]}"; do [ -n "${PID[$l]:-}" ] && kill "${PID[$l]}" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT

git clone -q --mirror "$CORPUS/$REPO.bundle" "$WORK/src.git"
for i in "${!LABELS[@]}"; do
    l=${LABELS[$i]}
    bin_var=${l}_BIN
    bin=${!bin_var}
    [ -x "$bin" ] || { echo "no binary $bin" >&2; exit 2; }
    port=$((PORT + 10 * i))
    "$bin" --data-dir "$WORK/node-$l" --api-addr "127.0.0.1:$port" \
        --metrics-addr "127.0.0.1:$((port + 1))" --p2p-addr "127.0.0.1:$((port + 2))" \
        >>"$WORK/node-$l.log" 2>&1 &
    PID[$l]=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health/live" >/dev/null && break; sleep 0.1; done
    token=$(cat "$WORK/node-$l/admin.token")
    curl -sf -X POST "http://127.0.0.1:$port/api/repos" -u "admin:$token" \
        -H 'Content-Type: application/json' -d "{\"owner\":\"bench\",\"name\":\"$REPO\"}" >/dev/null
    URL[$l]="http://admin:$token@127.0.0.1:$port/git/bench/$REPO.git"
    git -C "$WORK/src.git" push -q --mirror "${URL[$l]}"
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Move refs/heads/storm-toggle between two existing commits (no new
# objects). Kept in a file: storm runs in a command substitution.
new_ref_state() {
    local f="$WORK/toggle-$1" t
    t=$((1 - $(cat "$f" 2>/dev/null || echo 0)))
    echo "$t" >"$f"
    git -C "$WORK/src.git" push -q --force "${URL[$1]}" "HEAD~$t:refs/heads/storm-toggle"
}
# Server CPU (ms) of $3 identical clones of kind $2 at once on node $1.
storm() {
    local l=$1 kind=$2 n=$3 before after k pids=() args=(clone -q --bare --no-local)
    [ "$kind" = depth1 ] && args+=(--depth 1)
    new_ref_state "$l"
    rm -rf "$WORK"/c-*
    sleep 0.2
    before=$(cpu_ticks "${PID[$l]}")
    for k in $(seq "$n"); do
        git "${args[@]}" "${URL[$l]}" "$WORK/c-$k" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { echo "clone failed ($l $kind)" >&2; exit 1; }; done
    after=$(cpu_ticks "${PID[$l]}")
    echo $(( (after - before) * 1000 / $(getconf CLK_TCK) ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A S
for kind in full depth1; do
    for l in "${LABELS[@]}"; do storm "$l" "$kind" 1 >/dev/null; storm "$l" "$kind" "$N" >/dev/null; done # warm-up
    for r in $(seq "$RUNS"); do
        order=("${LABELS[@]}")
        [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${LABELS[@]}" | tac))
        for l in "${order[@]}"; do
            S[$l,$kind,1]+="$(storm "$l" "$kind" 1) "
            S[$l,$kind,N]+="$(storm "$l" "$kind" "$N") "
        done
    done
    for l in "${LABELS[@]}"; do
        storm "$l" "$kind" 1 >/dev/null
        git -C "$WORK/c-1" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed ($l $kind)" >&2; exit 1; }
    done
done

echo "repo=$REPO N=$N runs=$RUNS commit=$(git -C "$ROOT" rev-parse --short HEAD) date=$(date -u +%FT%TZ)"
for l in "${LABELS[@]}"; do
    bin_var=${l}_BIN
    echo "$l = ${!bin_var}"
    for kind in full depth1; do
        one=$(echo ${S[$l,$kind,1]} | tr ' ' '\n' | median)
        many=$(echo ${S[$l,$kind,N]} | tr ' ' '\n' | median)
        printf '  %-7s 1 clone: %4s ms   %s clones: %4s ms   ratio %s   (runs: 1: %s| %s: %s)\n' "$kind" "$one" "$N" "$many" \
            "$(awk "BEGIN{printf \"%.2f\", $many/($one>0?$one:1)}")" "${S[$l,$kind,1]}" "$N" "${S[$l,$kind,N]}"
    done
done
