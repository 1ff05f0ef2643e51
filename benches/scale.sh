#!/usr/bin/env bash
# Scale of one node, beside C git (git http-backend under lighttpd, started
# from ../shared/bench/refserver.sh) where it applies, in one run:
#
#  repos   REPOS (10,000) repositories created through the admin API: the
#          creation rate (C git: REF_CREATES runs of refserver's create-repo,
#          a `git init --bare` and its config), the node's RSS and open files
#          with them all created, then opened (one capability advertisement
#          and ls-refs each), its start time with them all and the first
#          clone of a cold one after a restart against a warm one (C git: the
#          first clone after lighttpd restarts, and a second).
#  refs    one repository with REFS (100,000) refs besides the corpus's (half
#          branches refs/heads/b/NNNNNN, half tags refs/tags/t/NNNNNN): v2
#          ls-refs without a prefix, with refs/heads/, with a 10-ref prefix and
#          with one ref; `git ls-remote`; a push that moves one branch (client
#          wall time, server CPU, bytes the node wrote). C git's repository has
#          its refs packed (`git pack-refs --all`, what hosts do).
#  clones  CLONES (1,000) clones of one small repository (REPO, the guts
#          corpus) at once by a driver speaking protocol v2 over raw HTTP
#          (scale-driver.py storm: info/refs, ls-refs, fetch with `done`, all
#          N in flight together): node RSS before, with all in flight, at peak
#          and after, per clone, and every refusal. C git runs REF_CLONES
#          (100) at once: each clone is three processes there, and 1,000 of
#          them would not fit beside the node on this machine; its memory is
#          lighttpd and all its children. The node gets REF_CLONES too, for
#          the like-for-like ratio.
#
#   benches/scale.sh                                  # full sizes
#   REPOS=500 REFS=5000 CLONES=100 REF_CLONES=20 benches/scale.sh   # quick
#   SCENARIOS="refs" benches/scale.sh                 # one scenario
#
# Needs a release build (cargo build --release) and lighttpd. The node runs
# with --repo-creates-per-minute 0 (the per-address creation limit would
# otherwise allow 60 a minute). The driver opens at most PER_SOURCE (200)
# connections from each loopback address (127.0.0.2, .3, ...), under the
# node's per-client limit (connections_per_client_max, 256); its limit on
# all connections (connections_max) is 16,384 per shard.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-$ROOT/../shared/corpus}
BENCH=${BENCH:-$ROOT/../shared/bench}
NODE_BIN=${NODE_BIN:-$ROOT/target/release/guts-node}
DRIVER=$ROOT/benches/scale-driver.py
PORT=${NODE_PORT:-18780}
REF_PORT=${REF_PORT:-18790}
REPOS=${REPOS:-10000}
REF_CREATES=${REF_CREATES:-200}
REFS=${REFS:-100000}
CLONES=${CLONES:-1000}
REF_CLONES=${REF_CLONES:-100}
PER_SOURCE=${PER_SOURCE:-200}
RUNS=${RUNS:-5}
REPO=${REPO:-guts}
SCENARIOS=${SCENARIOS:-repos refs clones}
WORK=$(mktemp -d)
[ -x "$NODE_BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -z "${LIGHTTPD:-}" ] && [ -x /usr/sbin/lighttpd ] && export LIGHTTPD=/usr/sbin/lighttpd
export HOME=$WORK/home GIT_CONFIG_NOSYSTEM=1
mkdir -p "$HOME"
git config --global user.name bench
git config --global user.email bench@example.com
git config --global protocol.version 2
git config --global init.defaultBranch main
git config --global advice.detachedHead false
NODE_PID=
REF_STARTED=
cleanup() {
    [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null
    [ -n "$REF_STARTED" ] && "$BENCH/refserver.sh" stop "$WORK/ref" "$REF_PORT" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
ms_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b - a) * 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
# CPU ms of a process and of the children it reaped (C git's CGI processes).
cpu_ms() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) * 1000 / t}' "/proc/$1/stat"; }
written() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io"; }
json() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, d))' "$1" "$2"; }

start_node() {
    local t0
    t0=$(now)
    "$NODE_BIN" --data-dir "$WORK/node" --api-addr "127.0.0.1:$PORT" \
        --metrics-addr "127.0.0.1:$((PORT + 1))" --p2p-addr "127.0.0.1:$((PORT + 2))" \
        --repo-creates-per-minute 0 "$@" >>"$WORK/node.log" 2>&1 &
    NODE_PID=$!
    for _ in $(seq 1200); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.05; done
    START_MS=$(ms_since "$t0")
    TOKEN=$(cat "$WORK/node/admin.token")
}
stop_node() { kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; NODE_PID=; }
node_url() { echo "http://admin:$TOKEN@127.0.0.1:$PORT/git/$1.git"; }
node_create() {
    curl -sf -X POST "http://127.0.0.1:$PORT/api/repos" -u "admin:$TOKEN" \
        -H 'Content-Type: application/json' -d "{\"owner\":\"${1%/*}\",\"name\":\"${1#*/}\"}" >/dev/null
}
start_ref() {
    eval "$("$BENCH/refserver.sh" start "$WORK/ref" "$REF_PORT" 2>/dev/null)"
    REF_STARTED=1
}
ref_url() { echo "$GIT_BASE/$1.git"; }
ref_create() { "$CREATE_REPO" "${1%/*}" "${1#*/}"; }

git clone -q --mirror "$CORPUS/$REPO.bundle" "$WORK/src.git"
start_node
start_ref
echo "scale: node $NODE_BIN, commit $(git -C "$ROOT" rev-parse --short HEAD), $(date -u +%FT%TZ)," \
    "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(git --version)"

# --- 10,000 repositories -------------------------------------------------------
if [[ " $SCENARIOS " == *" repos "* ]]; then
    echo "== $REPOS repositories"
    rss0=$(rss_mib "$NODE_PID"); fd0=$(fds "$NODE_PID")
    out=$(python3 "$DRIVER" create --base "http://127.0.0.1:$PORT" --auth "admin:$TOKEN" \
        --owner many --prefix r --count "$REPOS")
    rss1=$(rss_mib "$NODE_PID"); fd1=$(fds "$NODE_PID")
    disk_kib=$(du -sk "$WORK/node/repos/many" | cut -f1)
    t0=$(now)
    for i in $(seq "$REF_CREATES"); do ref_create "many/c$(printf %05d "$i")"; done
    ref_ms=$(ms_since "$t0")
    ref_rate=$(awk -v n="$REF_CREATES" -v ms="$ref_ms" 'BEGIN{printf "%.1f", n * 1000 / ms}')
    node_rate=$(json "$out" per_s)
    echo "create: node $node_rate repos/s ($(json "$out" created) in $(json "$out" seconds) s, refused $(json "$out" refused))," \
        "C git $ref_rate repos/s ($REF_CREATES), ratio (time) $(ratio "$ref_rate" "$node_rate")"
    echo "node with 0 repos: RSS $rss0 MiB, $fd0 open files; with $REPOS created: RSS $rss1 MiB, $fd1 open files," \
        "disk $((disk_kib / 1024)) MiB ($(awk -v k="$disk_kib" -v n="$REPOS" 'BEGIN{printf "%.1f", k / n}') KiB a repository)"
    cold=many/r$(printf %05d $((REPOS / 2)))
    ref_create "$cold"
    git -C "$WORK/src.git" push -q --mirror "$(node_url "$cold")"
    git -C "$WORK/src.git" push -q --mirror "$(ref_url "$cold")"
    out=$(python3 "$DRIVER" open --base "http://127.0.0.1:$PORT" --auth "admin:$TOKEN" \
        --owner many --prefix r --count "$REPOS")
    rss2=$(rss_mib "$NODE_PID"); fd2=$(fds "$NODE_PID")
    echo "open all (info/refs + ls-refs each): $(json "$out" per_s) repos/s, median $(json "$out" median_ms) ms," \
        "max $(json "$out" max_ms) ms; then RSS $rss2 MiB ($(awk -v a="$rss2" -v b="$rss0" -v n="$REPOS" 'BEGIN{printf "%.1f", (a - b) * 1024 / n}') KiB a repository), $fd2 open files"
    cold_ms=() warm_ms=() cold_cpu=() warm_cpu=() starts=() ref_cold=() ref_warm=()
    for r in $(seq 3); do
        stop_node
        start_node
        starts+=("$START_MS")
        rss3=$(rss_mib "$NODE_PID"); fd3=$(fds "$NODE_PID")
        for k in cold warm; do
            rm -rf "$WORK/c"
            c0=$(cpu_ms "$NODE_PID"); t0=$(now)
            git clone -q --bare --no-local "$(node_url "$cold")" "$WORK/c"
            eval "${k}_ms+=($(ms_since "$t0"))"
            eval "${k}_cpu+=($(awk -v a="$(cpu_ms "$NODE_PID")" -v b="$c0" 'BEGIN{print a - b}'))"
        done
        git -C "$WORK/c" fsck --strict --no-progress >/dev/null 2>&1 || { echo "fsck failed" >&2; exit 1; }
        "$BENCH/refserver.sh" restart "$WORK/ref" "$REF_PORT" >/dev/null 2>&1
        for k in cold warm; do
            rm -rf "$WORK/c"
            t0=$(now)
            git clone -q --bare --no-local "$(ref_url "$cold")" "$WORK/c"
            eval "ref_${k}+=($(ms_since "$t0"))"
        done
    done
    eval "$("$BENCH/refserver.sh" env "$WORK/ref" "$REF_PORT")"
    echo "restart with $REPOS repositories: ready in $(printf '%s\n' "${starts[@]}" | median) ms (runs: ${starts[*]})," \
        "RSS $rss3 MiB, $fd3 open files"
    nc=$(printf '%s\n' "${cold_ms[@]}" | median); nw=$(printf '%s\n' "${warm_ms[@]}" | median)
    rc=$(printf '%s\n' "${ref_cold[@]}" | median); rw=$(printf '%s\n' "${ref_warm[@]}" | median)
    echo "first clone of a cold $REPO repository after restart: node $nc ms (server CPU $(printf '%s\n' "${cold_cpu[@]}" | median) ms)," \
        "warm $nw ms (CPU $(printf '%s\n' "${warm_cpu[@]}" | median) ms); C git first $rc ms, second $rw ms;" \
        "ratio cold $(ratio "$nc" "$rc"), warm $(ratio "$nw" "$rw") (runs node ${cold_ms[*]} / ${warm_ms[*]}, C git ${ref_cold[*]} / ${ref_warm[*]})"
fi

# --- one repository with 100,000 refs -------------------------------------------
if [[ " $SCENARIOS " == *" refs "* ]]; then
    echo "== one repository with $REFS refs"
    git -C "$WORK/src.git" rev-list --all --max-count=1000 >"$WORK/commits"
    node_create bench/refs
    ref_create bench/refs
    for s in node ref; do
        git -C "$WORK/src.git" push -q --mirror "$("${s}_url" bench/refs)"
        out=$(python3 "$DRIVER" mkrefs --url "$("${s}_url" bench/refs)" --commits "$WORK/commits" --count "$REFS")
        echo "$s: creating $REFS refs (receive-pack requests of 10,000 new refs each): $(json "$out" seconds) s"
    done
    git -C "$WORK/ref/bench/refs.git" pack-refs --all
    total=$(( $(git -C "$WORK/src.git" for-each-ref | wc -l) + REFS ))
    for p in "" "refs/heads/" "refs/tags/t/00001" "refs/heads/main"; do
        args=(); [ -n "$p" ] && args=(--prefix "$p")
        a=$(python3 "$DRIVER" lsrefs --url "$(node_url bench/refs)" --runs "$RUNS" "${args[@]}")
        b=$(python3 "$DRIVER" lsrefs --url "$(ref_url bench/refs)" --runs "$RUNS" "${args[@]}")
        [ "$(json "$a" refs)" = "$(json "$b" refs)" ] || echo "  ! ref counts differ: node $(json "$a" refs), C git $(json "$b" refs)"
        printf 'ls-refs %-20s %6s refs: node %8s ms, C git %8s ms, ratio %s\n' "${p:-(no prefix)}" "$(json "$a" refs)" \
            "$(json "$a" median_ms)" "$(json "$b" median_ms)" "$(ratio "$(json "$a" median_ms)" "$(json "$b" median_ms)")"
    done
    for s in node ref; do
        t=()
        for r in $(seq "$RUNS"); do t0=$(now); git ls-remote "$("${s}_url" bench/refs)" >"$WORK/ls-$s"; t+=("$(ms_since "$t0")"); done
        eval "ls_$s=$(printf '%s\n' "${t[@]}" | median)"
        [ "$(grep -c refs/ "$WORK/ls-$s")" -ge "$total" ] || echo "  ! $s ls-remote shows $(wc -l <"$WORK/ls-$s") refs, expected $total"
    done
    echo "git ls-remote ($total refs): node $ls_node ms, C git $ls_ref ms, ratio $(ratio "$ls_node" "$ls_ref")"
    git clone -q "$CORPUS/$REPO.bundle" "$WORK/w"
    git -C "$WORK/w" checkout -q -B main origin/main 2>/dev/null || git -C "$WORK/w" checkout -q -B main
    git -C "$WORK/w" push -q -f "$(node_url bench/refs)" main:refs/heads/main
    git -C "$WORK/w" push -q -f "$(ref_url bench/refs)" main:refs/heads/main
    declare -A P
    for r in $(seq 0 "$RUNS"); do
        echo "$r" >"$WORK/w/scale-push.txt"
        git -C "$WORK/w" add scale-push.txt
        git -C "$WORK/w" commit -q -m "one-ref push $r"
        order=(node ref); [ $((r % 2)) = 1 ] && order=(ref node)
        for s in "${order[@]}"; do
            pid=$NODE_PID; [ "$s" = ref ] && pid=$SERVER_PID
            c0=$(cpu_ms "$pid"); w0=$(written "$NODE_PID"); t0=$(now)
            git -C "$WORK/w" push -q "$("${s}_url" bench/refs)" main:refs/heads/main
            ms=$(ms_since "$t0")
            cpu=$(awk -v a="$(cpu_ms "$pid")" -v b="$c0" 'BEGIN{print a - b}')
            wr=$(( $(written "$NODE_PID") - w0 ))
            [ "$r" = 0 ] && continue # warm-up
            P[$s,ms]+="$ms "; P[$s,cpu]+="$cpu "
            [ "$s" = node ] && P[node,wr]+="$wr "
        done
    done
    for s in node ref; do
        P[$s,ms]=$(echo ${P[$s,ms]} | tr ' ' '\n' | median); P[$s,cpu]=$(echo ${P[$s,cpu]} | tr ' ' '\n' | median)
    done
    echo "push moving one branch among $total refs: node ${P[node,ms]} ms (server CPU ${P[node,cpu]} ms," \
        "$(( $(echo ${P[node,wr]} | tr ' ' '\n' | median) / 1024 )) KiB written), C git ${P[ref,ms]} ms (CPU ${P[ref,cpu]} ms)," \
        "ratio $(ratio "${P[node,ms]}" "${P[ref,ms]}"), CPU $(ratio "${P[node,cpu]}" "${P[ref,cpu]}")"
fi

# --- 1,000 concurrent clones ----------------------------------------------------------
if [[ " $SCENARIOS " == *" clones "* ]]; then
    echo "== $CLONES concurrent clones of $REPO"
    node_create bench/storm
    ref_create bench/storm
    git -C "$WORK/src.git" push -q --mirror "$(node_url bench/storm)"
    git -C "$WORK/src.git" push -q --mirror "$(ref_url bench/storm)"
    show() {
        echo "$1: $(json "$2" ok)/$(json "$2" clones) complete in $(json "$2" seconds) s" \
            "(all in flight together: $(json "$2" all_in_flight_together)), refused $(json "$2" refused), errors $(json "$2" errors) $(json "$2" error_samples);" \
            "RSS before $(json "$2" 'round(rss_before_kib/1024,1)') MiB, all in flight $(json "$2" 'round(rss_in_flight_kib/1024,1)') MiB," \
            "peak $(json "$2" 'round(rss_peak_kib/1024,1)') MiB ($(json "$2" procs_at_peak) processes), after $(json "$2" 'round(rss_after_kib/1024,1)') MiB;" \
            "$(json "$2" per_clone_kib) KiB a clone at peak; pack $(json "$2" pack_bytes) bytes"
    }
    # REF_CLONES first, on a node that has served no clone yet: its
    # memory per clone is what the node adds, not what it kept from before.
    a=$(python3 "$DRIVER" storm --url "$(node_url bench/storm)" --clones "$REF_CLONES" --pids "$NODE_PID" --per-source "$PER_SOURCE") || true
    b=$(python3 "$DRIVER" storm --url "$(ref_url bench/storm)" --clones "$REF_CLONES" --pids "$SERVER_PID" --tree --per-source "$PER_SOURCE") || true
    show "node, $REF_CLONES at once" "$a"
    show "C git, $REF_CLONES at once" "$b"
    echo "$REF_CLONES at once: wall ratio $(ratio "$(json "$a" seconds)" "$(json "$b" seconds)")," \
        "memory per clone: C git $(ratio "$(json "$b" per_clone_kib)" "$(json "$a" per_clone_kib)")x the node's"
    a=$(python3 "$DRIVER" storm --url "$(node_url bench/storm)" --clones "$CLONES" --pids "$NODE_PID" --per-source "$PER_SOURCE") || true
    show "node, $CLONES at once" "$a"
    a=$(python3 "$DRIVER" storm --url "$(node_url bench/storm)" --clones "$CLONES" --pids "$NODE_PID" --per-source "$PER_SOURCE") || true
    show "node, $CLONES at once, again" "$a"
    # All from one address: the per-client limit (256 per shard) answers
    # the rest with 429, by design.
    a=$(python3 "$DRIVER" storm --url "$(node_url bench/storm)" --clones "$CLONES" --pids "$NODE_PID") || true
    show "node, $CLONES at once from one address" "$a"
fi
echo "node log: $(grep -ciE ' (warn|error) ' "$WORK/node.log" || true) warnings/errors"
grep -iE ' (warn|error) ' "$WORK/node.log" | head -5 || true
