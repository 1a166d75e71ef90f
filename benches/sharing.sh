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
# read, and leave; the times are whole commands. Reported: medians in MiB/s and reader/writer.
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

mkdir -p "$work/writer"
printf '[cache]\ndisk_bytes = 0\n' > "$work/writer/config.toml"
printf '%-9s %12s %12s %8s\n' "size" "writer MiB/s" "reader MiB/s" "ratio"
for size in $sizes; do
  head -c $((size * 1048576)) /dev/urandom > "$work/input"
  link=$("$dfs" --data "$work/writer" put "$work/input" --peer "$first" | tail -n 1)
  w="" r=""
  for round in $(seq "$rounds"); do
    drop; t0=$(now)
    "$dfs" --data "$work/writer" get "$link" -o - --peer "$first" > /dev/null
    t1=$(now); w="$w $(echo "$size / ($t1 - $t0)" | bc -l)"
    reader="$work/reader-$size-$round"
    drop; t0=$(now)
    "$dfs" --data "$reader" get "$link" -o - --peer "$first" > /dev/null
    t1=$(now); r="$r $(echo "$size / ($t1 - $t0)" | bc -l)"
    held=$(find "$reader" -path '*/held/shards/*' -type f | wc -l)
    [ "$held" -eq 0 ] || { echo "sharing.sh: the reader was given $held shards" >&2; exit 1; }
    rm -rf "$reader"
  done
  wm=$(median "$w"); rm_=$(median "$r")
  printf '%-9s %12.0f %12.0f %8.2f\n' "${size}MiB" "$wm" "$rm_" "$(echo "$rm_ / $wm" | bc -l)"
  echo "  rounds: writer$(printf ' %.0f' $w); reader$(printf ' %.0f' $r)" >&2
  rm -f "$work/input"
done
