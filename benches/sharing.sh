#!/usr/bin/env bash
# Sharing a link between people: how fast a reader who has only the link reads it, against the
# writer's own `dfs get` of the same link, in the same run.
#   benches/sharing.sh            (SIZES_MIB="200 1024" ROUNDS=3; as root caches are dropped)
# Six storage peers (`dfs node`, three zones) on 127.0.0.1. For each size a writer runs
# `dfs put FILE --peer ...` from its own data directory (a client: every shard goes to the
# storage peers). Then, ROUNDS times, taking turns: the writer's `dfs get LINK -o -` (it has the
# placement records of its chunks; its disk cache is off so that it never reads from it) and a
# reader's `dfs get LINK -o -` from a fresh data directory (only the link: it finds the holders
# by rendezvous rank and `Holding` queries). Both are one-shot clients that start a peer, join,
# read, and leave. Reported, as medians in MiB/s with reader/writer: the whole command (joining
# the network takes a second or two whatever the size) and the transfer alone (the time the
# command itself reports for restoring, after it has joined).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
sizes=${SIZES_MIB:-200 1024}
rounds=${ROUNDS:-3}
peers=6
cd "$root"
cargo build -q --release -p dfs
dfs=$root/target/release/dfs
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/dfs-sharing-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for i in $(seq 0 $((peers - 1))); do
  boot=()
  [ "$i" -gt 0 ] && boot=(--peer "$first")
  "$dfs" --data "$work/n$i" node --zone "z$((i % 3))" "${boot[@]}" 2>"$work/n$i.log" &
  pids+=($!)
  for _ in $(seq 200); do [ -f "$work/n$i/api.json" ] && break; sleep 0.05; done
  if [ "$i" -eq 0 ]; then
    first=$("$dfs" --data "$work/n0" status --json | python3 -c \
      'import json,sys; print([a for a in json.load(sys.stdin)["addresses"] if "/tcp/" in a][0])')
  fi
done
alive() { "$dfs" --data "$work/n0" peers --json | python3 -c \
  'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p["state"] == "alive" and not p.get("client")))'; }
for _ in $(seq 200); do [ "$(alive)" -ge $((peers - 1)) ] && break; sleep 0.1; done

drop() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
now() { date +%s.%N; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

mkdir -p -m 700 "$work/writer"
printf '[cache]\ndisk_bytes = 0\n' > "$work/writer/config.toml"
# get DATA SIZE: `dfs get` of $link from DATA; appends the whole command's MiB/s to $whole and
# the transfer's (from the time the command reports) to $xfer.
get() {
  local data=$1 size=$2 t0 t1 secs
  drop; t0=$(now)
  "$dfs" --data "$data" get "$link" -o - --peer "$first" > /dev/null 2> "$work/get.err" \
    || { echo "sharing.sh: dfs get failed:" >&2; cat "$work/get.err" >&2; exit 1; }
  t1=$(now)
  secs=$(sed -n 's/^restored .* in \([0-9.]*\)s .*/\1/p' "$work/get.err" | tail -n 1)
  whole="$whole $(echo "$size / ($t1 - $t0)" | bc -l)"
  xfer="$xfer $(echo "$size / $secs" | bc -l)"
}
ratio() { echo "$1 / $2" | bc -l; }
printf '%-8s %-9s %12s %12s %7s\n' "size" "measure" "writer MiB/s" "reader MiB/s" "ratio"
for size in $sizes; do
  head -c $((size * 1048576)) /dev/urandom > "$work/input"
  link=$("$dfs" --data "$work/writer" put "$work/input" --peer "$first" | tail -n 1)
  ww="" wx="" rw="" rx=""
  for round in $(seq "$rounds"); do
    whole="" xfer=""; get "$work/writer" "$size"; ww="$ww$whole"; wx="$wx$xfer"
    reader="$work/reader-$size-$round"
    whole="" xfer=""; get "$reader" "$size"; rw="$rw$whole"; rx="$rx$xfer"
    held=$(find "$reader" -path '*/held/shards/*' -type f | wc -l)
    [ "$held" -eq 0 ] || { echo "sharing.sh: the reader was given $held shards" >&2; exit 1; }
    rm -rf "$reader"
  done
  for m in whole transfer; do
    if [ $m = whole ]; then w=$ww r=$rw; else w=$wx r=$rx; fi
    wm=$(median "$w"); rm_=$(median "$r")
    printf '%-8s %-9s %12.0f %12.0f %7.2f\n' "${size}MiB" "$m" "$wm" "$rm_" "$(ratio "$rm_" "$wm")"
    echo "  $m rounds: writer$(printf ' %.0f' $w); reader$(printf ' %.0f' $r)" >&2
  done
  rm -f "$work/input"
done
