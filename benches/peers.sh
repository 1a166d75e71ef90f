#!/usr/bin/env bash
# Time for PEERS (default 20) `dfs node` processes on 127.0.0.1 to discover each other, against
# the time the same processes take just to start and listen, in the same run (issue 4).
#
#   benches/peers.sh
#   PEERS=10 RUNS=1 TIMEOUT=60 benches/peers.sh
#
# Every round has two phases, each on fresh data directories (new identities):
#  - startup (the baseline): start peer 0 and wait until it listens; then launch peers 1..N-1
#    with no bootstrap peer and time until every one of them has written DATA/api.json (its
#    control API is up, which `dfs node` does right after it starts listening);
#  - discovery: start peer 0 and wait until it listens; then launch peers 1..N-1, each with
#    `--peer <peer 0's TCP address>`, and time until every peer (peer 0 too) lists N-1 others
#    as "alive", and until every peer lists at least one.
# Both clocks start when the first of peers 1..N-1 is launched (launching them all takes a
# fraction of a second; the time is printed).
#
# Each peer is polled with `dfs peers --json`, one call at a time, a cycle over the peers still
# waiting every POLL_MS (default 100) ms, until it lists N-1 others alive; then it is not polled
# again. While 20 peers start on 2 cores the CPU is saturated for seconds and one such call can
# take 0.3 s, so a cycle over 20 peers takes seconds and the time a poll sees the condition is
# late by that much. The exact times therefore come from the peers' own logs (run with
# DFS_LOG=...,dfs_node::net::swarm=info): each logs every change of another peer's state with a
# timestamp, and replaying them gives the moment its table first held N-1 peers alive at once
# (and first held one). The polls decide when the phase is over and confirm the final state;
# their times are printed too, as upper bounds.
#
# Everything listens on 127.0.0.1 only (the default), mDNS stays off, and the only address ever
# given to a peer is peer 0's loopback address. Times are medians over RUNS (default 3) rounds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-20}
runs=${RUNS:-3}
timeout_s=${TIMEOUT:-120}
poll_ms=${POLL_MS:-100}
for var in peers runs timeout_s poll_ms; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "peers.sh: ${var^^} must be a positive integer, got '${!var}'" >&2
        exit 2
    fi
done
if ((peers < 2)); then
    echo "peers.sh: PEERS must be at least 2" >&2
    exit 2
fi
others=$((peers - 1))
timeout_us=$((timeout_s * 1000000))
poll_sleep=$(awk -v ms="$poll_ms" 'BEGIN {printf "%.3f", ms / 1000}')
# The default filter of `dfs` plus the swarm's info lines: listening, every peer state change.
log_filter=warn,fuser=error,libp2p_kad=error,dfs_node::net::swarm=info

cd "$root"
echo "building dfs (release)..." >&2
cargo build -q --release -p dfs >&2
dfs=$(realpath "${CARGO_TARGET_DIR:-$root/target}/release/dfs")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dfs-peers.XXXXXX")
pids=()

# Stop every peer this script started: SIGTERM, then SIGKILL after 10 s.
stop_all() {
    local pid n left
    ((${#pids[@]})) || return 0
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((n = 0; n < 100; n++)); do
        left=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then left=1; fi
        done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
cleanup() {
    stop_all
    rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Microseconds since the epoch, in $now (no subshell: polling loops call this often).
tick() { now=${EPOCHREALTIME/./}; }

# fail MESSAGE [DIR...]: print MESSAGE and the end of the named peers' logs, then exit.
fail() {
    echo "peers.sh: $1" >&2
    shift
    local d
    for d in "$@"; do
        echo "--- last lines of $d/node.log:" >&2
        tail -n 20 "$d/node.log" >&2 || true
    done
    exit 1
}

# start DIR [ARGS...]: launch `dfs node` on DIR in the background, logging to DIR/node.log.
start() {
    local dir=$1
    shift
    mkdir -p "$dir"
    DFS_LOG=$log_filter NO_COLOR=1 "$dfs" --data "$dir" node "$@" >"$dir/node.log" 2>&1 &
    pids+=("$!")
}

# Wait until the peer on DIR (started last) listens; its TCP multiaddr in $addr.
wait_listening() {
    local dir=$1 pid=${pids[-1]} deadline out
    tick
    deadline=$((now + timeout_us))
    addr=
    while tick && ((now < deadline)); do
        kill -0 "$pid" 2>/dev/null || fail "the peer on $dir exited" "$dir"
        if [[ -e $dir/api.json ]] && out=$("$dfs" --data "$dir" status --json 2>/dev/null); then
            if [[ $out =~ \"(/ip4/[^\"]*/tcp/[^\"]*)\" ]]; then
                addr=${BASH_REMATCH[1]}
                if [[ $addr != /ip4/127.0.0.1/tcp/*/p2p/* ]]; then
                    fail "the peer listens on $addr, not on 127.0.0.1" "$dir"
                fi
                return
            fi
        fi
        sleep 0.02
    done
    fail "the peer on $dir did not listen within $timeout_s s" "$dir"
}

# Alive peers in the JSON array printed by `dfs peers --json` (pretty-printed), in $alive.
count_alive() {
    local pat='"state": "alive"'
    local rest=${1//"$pat"/}
    alive=$(((${#1} - ${#rest}) / ${#pat}))
}

# from_log LOG T0: replay the peer state changes logged in LOG; prints the first moments, in
# microseconds after T0 (microseconds since the epoch), at which at least 1 and at least N-1
# other peers were alive at once, "-" for a moment that never came.
from_log() {
    awk -v t0="$(($2 % 86400000000))" -v want="$others" '
        { gsub(/\033\[[0-9;]*m/, "") }
        $1 ~ /^[0-9-]+T[0-9:.]+Z$/ && / peer is (alive|suspect|dead) peer=/ {
            split(substr($1, 12), hms, ":")
            t = (hms[1] * 3600 + hms[2] * 60 + substr(hms[3], 1, length(hms[3]) - 1)) * 1e6 - t0
            if (t < -43200e6) t += 86400e6 # the day changed after T0
            match($0, /peer=[^ ]+/)
            p = substr($0, RSTART + 5, RLENGTH - 5)
            if ($0 ~ / peer is alive /) {
                if (!(p in up)) { up[p] = 1; n++ }
            } else if (p in up) {
                delete up[p]; n--
            }
            if (n >= 1 && one == "") one = sprintf("%.0f", t)
            if (n >= want && all == "") all = sprintf("%.0f", t)
        }
        END { print (one == "" ? "-" : one), (all == "" ? "-" : all) }' "$1"
}

# Results of the last phase, in microseconds after its clock started.
launch_us=0
all_listen_us=0
poll_one_us=0
poll_all_us=0
log_one_us=
log_all_us=
log_all_times=()
polls=0
cycle_us=0

# startup_phase DIR: the baseline.
startup_phase() {
    local base=$1 i t0 d
    start "$base/0"
    wait_listening "$base/0"
    tick
    t0=$now
    for ((i = 1; i < peers; i++)); do
        start "$base/$i"
    done
    tick
    launch_us=$((now - t0))
    local pending=()
    for ((i = 1; i < peers; i++)); do pending+=("$i"); done
    while ((${#pending[@]})); do
        tick
        if ((now - t0 > timeout_us)); then
            d=()
            for i in "${pending[@]}"; do d+=("$base/$i"); done
            fail "startup: ${#pending[@]} peers did not write api.json within $timeout_s s" "${d[@]}"
        fi
        local next=()
        for i in "${pending[@]}"; do
            kill -0 "${pids[i]}" 2>/dev/null || fail "startup: peer $i exited" "$base/$i"
            [[ -e $base/$i/api.json ]] || next+=("$i")
        done
        pending=("${next[@]}")
        if ((${#pending[@]})); then sleep 0.01; fi
    done
    tick
    all_listen_us=$((now - t0))
    stop_all
}

# discovery_phase DIR
discovery_phase() {
    local base=$1 i t0 out one all
    start "$base/0"
    wait_listening "$base/0"
    tick
    t0=$now
    for ((i = 1; i < peers; i++)); do
        start "$base/$i" --peer "$addr"
    done
    tick
    launch_us=$((now - t0))
    local pending=() seen_one=() seen_all=() cycles=0 cycle_start cycle_total=0
    for ((i = 0; i < peers; i++)); do pending+=("$i"); done
    polls=0
    while ((${#pending[@]})); do
        tick
        if ((now - t0 > timeout_us)); then
            local report=()
            for i in "${pending[@]}"; do
                out=$("$dfs" --data "$base/$i" peers --json 2>/dev/null) || out=
                count_alive "$out"
                report+=("peer $i: $alive")
            done
            fail "discovery: not every peer saw all $others others alive within $timeout_s s (alive as seen by $(
                IFS=,
                echo "${report[*]}"
            ))" "$base/${pending[0]}"
        fi
        cycle_start=$now
        local next=()
        for i in "${pending[@]}"; do
            kill -0 "${pids[i]}" 2>/dev/null || fail "discovery: peer $i exited" "$base/$i"
            if ! out=$("$dfs" --data "$base/$i" peers --json 2>/dev/null); then
                next+=("$i") # still starting: no api.json yet
                continue
            fi
            tick
            polls=$((polls + 1))
            if [[ $out != \[* ]]; then
                fail "discovery: \`dfs peers --json\` of peer $i printed no JSON array: ${out:0:200}" "$base/$i"
            fi
            count_alive "$out"
            if ((alive >= 1)) && [[ -z ${seen_one[i]:-} ]]; then seen_one[i]=$((now - t0)); fi
            if ((alive >= others)); then seen_all[i]=$((now - t0)); else next+=("$i"); fi
        done
        pending=("${next[@]}")
        cycles=$((cycles + 1))
        tick
        cycle_total=$((cycle_total + now - cycle_start))
        if ((${#pending[@]})); then sleep "$poll_sleep"; fi
    done
    cycle_us=$((cycle_total / cycles))
    poll_one_us=0
    poll_all_us=0
    for ((i = 0; i < peers; i++)); do
        if ((seen_one[i] > poll_one_us)); then poll_one_us=${seen_one[i]}; fi
        if ((seen_all[i] > poll_all_us)); then poll_all_us=${seen_all[i]}; fi
    done
    # Flush the logs: the peers log as they go, but stop them before reading to be sure.
    stop_all
    log_one_us=0
    log_all_us=0
    log_all_times=()
    for ((i = 0; i < peers; i++)); do
        read -r one all < <(from_log "$base/$i/node.log" "$t0")
        if [[ $one == - || $all == - ]]; then
            echo "peers.sh: no state changes of other peers in $base/$i/node.log (log format" \
                "changed?): the times below are the polls' only" >&2
            log_one_us=
            log_all_us=
            return
        fi
        if ((one > log_one_us)); then log_one_us=$one; fi
        if ((all > log_all_us)); then log_all_us=$all; fi
        log_all_times+=("$all")
    done
}

secs() { awk -v us="$1" 'BEGIN {printf "%.3f", us / 1e6}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

startup=() launches=() log_one=() log_all=() poll_one=() poll_all=() cycles=() npolls=() spread=()
logs_ok=1
for ((round = 1; round <= runs; round++)); do
    echo "round $round of $runs: startup of $peers peers..." >&2
    startup_phase "$tmp/r$round/startup"
    startup+=("$all_listen_us")
    launches+=("$launch_us")
    echo "round $round of $runs: discovery among $peers peers..." >&2
    discovery_phase "$tmp/r$round/discovery"
    launches+=("$launch_us")
    poll_one+=("$poll_one_us")
    poll_all+=("$poll_all_us")
    cycles+=("$cycle_us")
    npolls+=("$polls")
    if [[ -n $log_all_us ]]; then
        log_one+=("$log_one_us")
        log_all+=("$log_all_us")
        sorted=$(printf '%s\n' "${log_all_times[@]}" | sort -g)
        spread+=("$(secs "$(head -n 1 <<<"$sorted")")/$(secs "$(median "${log_all_times[@]}")")/$(secs "$(tail -n 1 <<<"$sorted")")")
        echo "round $round: startup $(secs "$all_listen_us") s; discovery (logs) every peer sees one $(secs "$log_one_us") s, all $(secs "$log_all_us") s; polls saw all at $(secs "$poll_all_us") s" >&2
    else
        logs_ok=0
        echo "round $round: startup $(secs "$all_listen_us") s; discovery (polls) every peer sees one $(secs "$poll_one_us") s, all $(secs "$poll_all_us") s" >&2
    fi
    rm -rf -- "${tmp:?}/r$round"
done

s=$(median "${startup[@]}")
echo "$peers dfs peers on 127.0.0.1 (peer 0 first; peers 1..$others launched together, bootstrapped from peer 0); $(nproc) cores; median of $runs rounds"
echo "clock: from the launch of the first of peers 1..$others (all launched within $(secs "$(median "${launches[@]}")") s)"
printf '%-52s %8s %11s\n' phase seconds "vs startup"
row() { awk -v p="$1" -v t="$2" -v b="$s" 'BEGIN {printf "%-52s %8.3f %10.2fx\n", p, t / 1e6, t / b}'; }
row "startup: peers 1..$others listening (api.json)" "$s"
if ((logs_ok)); then
    o=$(median "${log_one[@]}")
    f=$(median "${log_all[@]}")
    src="(logs)"
else
    o=$(median "${poll_one[@]}")
    f=$(median "${poll_all[@]}")
    src="(polls)"
fi
row "discovery: every peer sees >= 1 other alive $src" "$o"
row "discovery: every peer sees all $others alive $src" "$f"
awk -v t="$((f - s))" 'BEGIN {printf "%-52s %8.3f\n", "discovery on top of startup", t / 1e6}'
if ((logs_ok)); then
    echo "per round, when each peer first saw all others alive (logs; min/median/max s): ${spread[*]}"
fi
echo "polls: $(median "${npolls[@]}") \`dfs peers --json\` calls per discovery phase, one cycle over the waiting peers took $(secs "$(median "${cycles[@]}")") s on average; they saw every peer with one other alive at $(secs "$(median "${poll_one[@]}")") s, with all at $(secs "$(median "${poll_all[@]}")") s"
