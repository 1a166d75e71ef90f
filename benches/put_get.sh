#!/usr/bin/env bash
# End-to-end timing of `dfs put` and `dfs get` of one large random file, against `cp` (write
# baseline) and a cold `cat` (read baseline), all on the same filesystem in the same run.
#
#   benches/put_get.sh                      # 1 GiB file under /var/tmp
#   SIZE_MIB=256 RUNS=5 BENCH_DIR=/mnt/x benches/put_get.sh
#
# Each step runs RUNS times (default 3) and the median time is reported, with the largest peak
# RSS; every `dfs put` goes to a fresh data directory so nothing dedups.
# Every step starts with cold caches (all of them dropped through /proc/sys/vm/drop_caches when
# that is writable, else the pages of the files the step reads are evicted one file at a time)
# and its time includes a `sync` afterwards, so cp and dfs both pay for reaching the disk.
# `dfs get -o -` to /dev/null is timed too: the same reads as `cat`, where `dfs get -o OUT` also
# writes and syncs the output. Peak RSS comes from /usr/bin/time -v (Debian package `time`), else
# from sampling VmHWM.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
size_mib=${SIZE_MIB:-1024}
bench_dir=${BENCH_DIR:-/var/tmp}
runs=${RUNS:-3}
for var in size_mib runs; do
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "put_get.sh: ${var^^} must be a positive integer, got '${!var}'" >&2
        exit 2
    fi
done
bytes=$((size_mib * 1048576))

cd "$root"
echo "building dfs (release)..." >&2
cargo build --release -p dfs >&2
dfs="${CARGO_TARGET_DIR:-$root/target}/release/dfs"
dfs=$(realpath "$dfs")

mkdir -p "$bench_dir"
tmp=$(mktemp -d "$bench_dir/dfs-put-get.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
data="$tmp/data"

notes=()
cache_mode=
# Make the next read of "$@" (files or directories) come from the disk.
cold() {
    sync
    if [[ $cache_mode != evict ]] && (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        cache_mode=global
        return
    fi
    if [[ $cache_mode != evict ]]; then
        cache_mode=evict
        notes+=("/proc/sys/vm/drop_caches is not writable: evicted only the files each step reads (dd iflag=nocache)")
    fi
    find "$@" -type f -print0 | while IFS= read -r -d '' f; do
        dd if="$f" iflag=nocache count=0 status=none
    done
}

have_time=
if [[ -x /usr/bin/time ]] && /usr/bin/time -v true 2>/dev/null; then
    have_time=1
else
    notes+=("/usr/bin/time not found (apt-get install time): peak RSS sampled from VmHWM every 50 ms")
fi

# run NAME STDOUT CMD...: run CMD then sync; sets $secs and $rss_mib.
run() {
    local name=$1 out=$2
    shift 2
    local err="$tmp/$name.err" start end
    start=$EPOCHREALTIME
    if [[ $have_time ]]; then
        if ! /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$out" 2>"$err"; then
            echo "put_get.sh: $name failed:" >&2
            cat "$err" >&2
            exit 1
        fi
        sync
        end=$EPOCHREALTIME
        rss_mib=$(awk -F': *' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$tmp/$name.time")
    else
        "$@" >"$out" 2>"$err" &
        local pid=$! hwm=0 v
        while [[ -r /proc/$pid/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; do
            v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            if [[ -n $v ]] && ((v > hwm)); then hwm=$v; fi
            sleep 0.05
        done
        if ! wait "$pid"; then
            echo "put_get.sh: $name failed:" >&2
            cat "$err" >&2
            exit 1
        fi
        sync
        end=$EPOCHREALTIME
        rss_mib=$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}')
    fi
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
}

echo "writing $size_mib MiB of random bytes to $tmp/f..." >&2
head -c "$bytes" /dev/urandom >"$tmp/f"

declare -A secs_of rss_of
# record STEP: append this run's $secs and keep the largest $rss_mib.
record() {
    secs_of[$1]+="$secs "
    rss_of[$1]=$(awk -v a="${rss_of[$1]:-0}" -v b="$rss_mib" 'BEGIN {print (b > a ? b : a)}')
}
median() { tr ' ' '\n' <<<"${secs_of[$1]}" | sed '/^$/d' | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

for ((round = 1; round <= runs; round++)); do
    echo "round $round of $runs..." >&2
    cold "$tmp/f"
    run cp /dev/null cp "$tmp/f" "$tmp/copy"
    record cp
    rm -f "$tmp/copy"

    # A fresh data directory each round: the same content would otherwise dedup.
    rm -rf "$data" "$tmp/out"
    cold "$tmp/f"
    run put "$tmp/put.out" "$dfs" --data "$data" put "$tmp/f"
    record put
    link=$(tail -n 1 "$tmp/put.out")
    if [[ $link != dfs://* ]]; then
        echo "put_get.sh: dfs put did not end with a dfs:// link:" >&2
        cat "$tmp/put.out" >&2
        exit 1
    fi

    cold "$tmp/f"
    run cat /dev/null cat "$tmp/f"
    record cat

    # The same read path without writing the output: compares with cat like for like.
    cold "$data"
    run get_null /dev/null "$dfs" --data "$data" get "$link" -o -
    record get_null

    cold "$data"
    run get /dev/null "$dfs" --data "$data" get "$link" -o "$tmp/out"
    record get
    if ! cmp -s "$tmp/f" "$tmp/out"; then
        echo "put_get.sh: the restored file differs from the original" >&2
        exit 1
    fi
done

fs=$(df -T "$tmp" | awk 'NR == 2 {print $1 " (" $2 ")"}')
echo "dfs put/get of $size_mib MiB of random bytes; $(nproc) cores; $tmp on $fs; median of $runs runs"
if [[ $cache_mode == global ]]; then caches="dropped (drop_caches)"; else caches="evicted per file"; fi
echo "caches $caches before every step; every time includes a sync; restored file verified with cmp"
row() { # operation secs baseline_secs baseline_name rss
    awk -v op="$1" -v s="$2" -v b="$3" -v bn="$4" -v rss="$5" -v n="$bytes" \
        'BEGIN {printf "%-19s %8.3f %9.1f %10.2fx %-4s %8s\n", op, s, n / 1e6 / s, s / b, bn, rss}'
}
printf '%-19s %8s %9s %16s %8s\n' operation seconds MB/s "time vs base" "RSS MiB"
row "cp + sync" "$(median cp)" "$(median cp)" cp "${rss_of[cp]}"
row "dfs put + sync" "$(median put)" "$(median cp)" cp "${rss_of[put]}"
row "cat (cold)" "$(median cat)" "$(median cat)" cat "${rss_of[cat]}"
row "dfs get >/dev/null" "$(median get_null)" "$(median cat)" cat "${rss_of[get_null]}"
row "dfs get + sync" "$(median get)" "$(median cat)" cat "${rss_of[get]}"
for note in "${notes[@]}"; do
    echo "note: $note"
done
