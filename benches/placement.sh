#!/usr/bin/env bash
# A mount whose shards all live on six other peers (k+m = 4+2, every peer a separate process on
# 127.0.0.1), against the local disk in the same run:
#   benches/placement.sh        (as root: drops caches, mounts; SIZE_MIB=1024 ROUNDS=3)
# Sequential write (dd, 1 MiB blocks, fsync) and cold read (caches dropped; the mount keeps no
# shard of its own, `--no-store`), medians of ROUNDS rounds with the two targets taking turns.
# Then one storage peer is killed with -9 and the repair rate is measured: shard bytes rebuilt
# onto the live peers divided by the time from the first rebuild to full health.
# BASELINE_DFS=/path/to/an/older/dfs adds a second mount run by that binary over the same peers,
# taking turns with the others: the ratio dfs/baseline is what the change between the two
# binaries costs or gains on the mount's side (e.g. the reader's shard checks).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
size_mib=${SIZE_MIB:-1024}
rounds=${ROUNDS:-3}
peers=6
grace=3
[ "$(id -u)" -eq 0 ] || { echo "placement.sh: run as root (mounts, drop_caches)" >&2; exit 2; }
cd "$root"
cargo build -q --release -p dfs
dfs=$root/target/release/dfs
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/dfs-placement-bench.XXXXXX")
pids=()
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    # What the mounts said before the failure: the only trace left once $work is removed.
    for log in "$work"/client*.log; do
      [ -f "$log" ] && { echo "--- $(basename "$log") (last lines)" >&2; grep -v ' INFO ' "$log" | tail -n 20 >&2; }
    done
  fi
  grep -q " $work/mnt " /proc/self/mountinfo && umount -l "$work/mnt"
  grep -q " $work/mnt-base " /proc/self/mountinfo && umount -l "$work/mnt-base"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/local"
mkdir -p -m 700 "$work/client"
baseline=${BASELINE_DFS:-}
targets=(local dfs)
if [ -n "$baseline" ]; then
  mkdir -p "$work/mnt-base"
  mkdir -p -m 700 "$work/client-base"
  targets+=(base)
fi

# Six storage peers, in three zones. They share this machine's disk, so they keep no disk
# reserve: with the default 5% of the disk never filled by others' shards, how full the disk
# already is would decide how many rounds fit, not what dfs does.
for i in $(seq 0 $((peers - 1))); do
  mkdir -p -m 700 "$work/n$i"
  printf '[network]\nreserve_percent = 0\n' > "$work/n$i/config.toml"
  boot=()
  [ "$i" -gt 0 ] && boot=(--peer "$first")
  "$dfs" --data "$work/n$i" node --grace $grace --zone "z$((i % 3))" "${boot[@]}" 2>"$work/n$i.log" &
  pids+=($!)
  for _ in $(seq 200); do [ -f "$work/n$i/api.json" ] && break; sleep 0.05; done
  if [ "$i" -eq 0 ]; then
    first=$("$dfs" --data "$work/n0" status --json | python3 -c \
      'import json,sys; print([a for a in json.load(sys.stdin)["addresses"] if "/tcp/" in a][0])')
  fi
done
printf '[placement]\nrepair_interval_ms = 500\nmax_bytes_per_sec = 4294967296\n' > "$work/client/config.toml"
"$dfs" --data "$work/client" mount "$work/mnt" --no-store --grace $grace --peer "$first" 2>"$work/client.log" &
pids+=($!)
for _ in $(seq 400); do grep -q " $work/mnt " /proc/self/mountinfo && break; sleep 0.05; done
grep -q " $work/mnt " /proc/self/mountinfo || { echo "placement.sh: the mount did not come up" >&2; cat "$work/client.log" >&2; exit 1; }
if [ -n "$baseline" ]; then
  cp "$work/client/config.toml" "$work/client-base/config.toml"
  "$baseline" --data "$work/client-base" mount "$work/mnt-base" --no-store --grace $grace --peer "$first" 2>"$work/client-base.log" &
  pids+=($!)
  for _ in $(seq 400); do grep -q " $work/mnt-base " /proc/self/mountinfo && break; sleep 0.05; done
  grep -q " $work/mnt-base " /proc/self/mountinfo || { echo "placement.sh: the baseline mount did not come up" >&2; cat "$work/client-base.log" >&2; exit 1; }
fi
alive() { "$dfs" --data "$work/client" peers --json | python3 -c \
  'import json,sys; print(sum(1 for p in json.load(sys.stdin) if p["state"] == "alive" and p.get("capacity") is not None))'; }
for _ in $(seq 200); do [ "$(alive)" -ge $peers ] && break; sleep 0.1; done

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
declare -A result
record() { result[$1,$2]="${result[$1,$2]:-} $3"; }
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
run() {
  local name=$1 dir=$2 t0 t1
  drop; t0=$(now); dd if="$work/input" of="$dir/seq" bs=1M conv=fsync status=none; t1=$(now)
  record "$name" write "$(echo "$size_mib / ($t1 - $t0)" | bc -l)"
  drop; t0=$(now); dd if="$dir/seq" of=/dev/null bs=1M status=none; t1=$(now)
  record "$name" read "$(echo "$size_mib / ($t1 - $t0)" | bc -l)"
  cmp -s "$work/input" "$dir/seq" || { echo "placement.sh: $name read back different bytes" >&2; exit 1; }
  rm -f "$dir/seq"
}
for r in $(seq "$rounds"); do
  # Fresh bytes every round: the same content again would dedup (convergent encryption) and
  # be read from the disk cache, measuring neither the network nor the peers.
  head -c $((size_mib << 20)) /dev/urandom > "$work/input"
  "$dfs" --data "$work/client" cache prune >/dev/null
  [ -z "$baseline" ] || "$baseline" --data "$work/client-base" cache prune >/dev/null
  # Each round starts with the next target: every one goes first, middle and last in turn.
  n=${#targets[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${targets[$(( (i + r) % n ))]}
    case $t in
      local) run local "$work/local" ;;
      dfs) run dfs "$work/mnt" ;;
      base) run base "$work/mnt-base" ;;
    esac
  done
done

# Repair: keep one file on the network, kill a peer, time the rebuild.
head -c $((size_mib << 20)) /dev/urandom > "$work/input"
dd if="$work/input" of="$work/mnt/kept" bs=1M conv=fsync status=none
placement() { "$dfs" --data "$work/client" status --json | python3 -c \
  "import json,sys; p=json.load(sys.stdin)['placement'] or {}; print(p.get('$1', -1))"; }
rebuilt0=$(placement rebuilt); bytes0=$(placement repair_bytes)
kill -9 "${pids[1]}"
t_kill=$(now); t_first=; t_end=
for _ in $(seq 1200); do
  sleep 0.25
  rebuilt=$(placement rebuilt)
  if [ -z "$t_first" ] && [ "$rebuilt" -gt "$rebuilt0" ]; then t_first=$(now); fi
  if [ -n "$t_first" ] && [ "$(placement degraded)" -eq 0 ] && [ "$(placement pending)" -eq 0 ]; then t_end=$(now); break; fi
done
[ -n "$t_end" ] || { echo "placement.sh: repair did not finish" >&2; exit 1; }
repair_mib=$(echo "($(placement repair_bytes) - $bytes0) / 1048576" | bc -l)
repair_rate=$(echo "$repair_mib / ($t_end - $t_first)" | bc -l)
shards=$(( $(placement rebuilt) - rebuilt0 ))
cmp -s "$work/input" "$work/mnt/kept" || { echo "placement.sh: the kept file changed" >&2; exit 1; }

printf '\n%s MiB, %s rounds (medians), %s storage peers on loopback, 4+2, mount with --no-store\n\n' "$size_mib" "$rounds" "$peers"
printf '| workload | local disk | dfs | dfs/local |\n|---|---|---|---|\n'
for w in write read; do
  l=$(median "${result[local,$w]}"); d=$(median "${result[dfs,$w]}")
  printf '| seq %s MB/s | %.0f | %.0f | %.2f |\n' "$w" "$l" "$d" "$(echo "$d / $l" | bc -l)"
done
if [ -n "$baseline" ]; then
  printf '\n| workload | baseline (%s) | dfs | dfs/baseline |\n|---|---|---|---|\n' "$(basename "$baseline")"
  for w in write read; do
    b=$(median "${result[base,$w]}"); d=$(median "${result[dfs,$w]}")
    printf '| seq %s MB/s | %.0f | %.0f | %.2f |\n' "$w" "$b" "$d" "$(echo "$d / $b" | bc -l)"
  done
fi
printf '\nevery round, MB/s:'
for t in "${targets[@]}"; do for w in write read; do printf ' %s %s [%s]' "$t" "$w" "$(tr ' ' '\n' <<<"${result[$t,$w]}" | grep . | xargs printf '%.0f ' | sed 's/ $//')"; done; done
printf '\n'
printf '\nrepair after kill -9 of one peer: %s shards, %.0f MiB rebuilt in %.1f s = %.0f MiB/s (detected dead after %.1f s)\n' \
  "$shards" "$repair_mib" "$(echo "$t_end - $t_first" | bc -l)" "$repair_rate" "$(echo "$t_first - $t_kill" | bc -l)"
