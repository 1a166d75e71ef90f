#!/usr/bin/env bash
# Filesystem workloads on the dfs mount, a bindfs passthrough mount and the local disk, all on
# the same disk in the same run, with ratios to bindfs:
#   benches/mount.sh            (as root: drops caches, mounts; SIZE_MIB=1024 FILES=10000 ROUNDS=3)
# Every workload runs ROUNDS times, the targets taking turns within a round, and the median is
# reported: this VM's disk swings between about 400 and 1,600 MB/s from one read to the next.
# Workloads: sequential write (dd, 1 MiB blocks, fsync) and read with caches dropped; 4 KiB
# random read/write (fio, 30 s budget each); 10,000 small files created, stat-ed (ls -lR),
# removed; untar of a 5,000-file tree, then grep -r.
# BASELINE_DFS=/path/to/an/older/dfs adds a mount run by that binary (its own data directory),
# taking its turn in every round, and a second table of dfs against it: what the change between
# the two binaries costs or gains.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
size_mib=${SIZE_MIB:-1024}
files=${FILES:-10000}
rounds=${ROUNDS:-3}
baseline=${BASELINE_DFS:-}
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "mount.sh: BASELINE_DFS=$baseline is not an executable" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "mount.sh: run as root (mounts, drop_caches)" >&2; exit 2; }
for tool in bindfs fio; do command -v $tool >/dev/null || { echo "mount.sh: needs $tool (deploy/install-deps.sh)" >&2; exit 2; }; done
cd "$root"
cargo build -q --release -p dfs
dfs=$root/target/release/dfs
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/dfs-mount-bench.XXXXXX")
pid= base_pid=
cleanup() {
  for m in "$work/dfs" "$work/bindfs" "$work/base"; do grep -q " $m " /proc/self/mountinfo && umount -l "$m"; done
  [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  [ -n "$base_pid" ] && wait "$base_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/dfs" "$work/bindfs" "$work/bindfs-src" "$work/local" "$work/data"
"$dfs" --data "$work/data" mount "$work/dfs" 2>"$work/dfs.log" & pid=$!
bindfs "$work/bindfs-src" "$work/bindfs"
for _ in $(seq 200); do grep -q " $work/dfs " /proc/self/mountinfo && break; sleep 0.05; done
if [ -n "$baseline" ]; then
  mkdir -p "$work/base" "$work/data-base"
  "$baseline" --data "$work/data-base" mount "$work/base" 2>"$work/base.log" & base_pid=$!
  for _ in $(seq 200); do grep -q " $work/base " /proc/self/mountinfo && break; sleep 0.05; done
fi

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# A 5,000-file tree to untar: /usr/include and /usr/share/doc files, first 5000.
(cd / && find usr/include usr/share/doc -type f | awk 'NR <= 5000' | tar -cf "$work/tree.tar" -T - 2>/dev/null)
head -c $((size_mib << 20)) /dev/urandom > "$work/input"

declare -A result
record() { # record TARGET KEY VALUE: one round's figure
  result[$1,$2]="${result[$1,$2]:-} $3"
}
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
run() { # run NAME TARGET: one target's workloads
  local name=$1 dir=$2 t0 t1
  drop; t0=$(now); dd if="$work/input" of="$dir/seq" bs=1M conv=fsync status=none; t1=$(now)
  record "$name" write $(echo "$size_mib / ($t1 - $t0)" | bc -l)
  drop; t0=$(now); dd if="$dir/seq" of=/dev/null bs=1M status=none; t1=$(now)
  record "$name" read $(echo "$size_mib / ($t1 - $t0)" | bc -l)
  rm -f "$dir/seq"
  for rw in randread randwrite; do
    record "$name" $rw $(fio --name=r --directory="$dir" --rw=$rw --bs=4k --size=256m --runtime=30 \
      --time_based=0 --ioengine=psync --direct=0 --end_fsync=1 --output-format=terse 2>/dev/null \
      | awk -F';' -v rw=$rw '{ print (rw == "randread") ? $8 : $49 }')
    rm -f "$dir"/r.*
  done
  mkdir "$dir/small"; t0=$(now)
  for i in $(seq "$files"); do : > "$dir/small/f$i"; done; t1=$(now)
  record "$name" create $(echo "$files / ($t1 - $t0)" | bc -l)
  drop; t0=$(now); ls -lR "$dir/small" > /dev/null; t1=$(now)
  record "$name" stat $(echo "$files / ($t1 - $t0)" | bc -l)
  t0=$(now); rm -rf "$dir/small"; t1=$(now)
  record "$name" remove $(echo "$files / ($t1 - $t0)" | bc -l)
  mkdir "$dir/untar"; t0=$(now); tar -C "$dir/untar" -xf "$work/tree.tar"; sync; t1=$(now)
  record "$name" untar $(echo "$t1 - $t0" | bc -l)
  drop; t0=$(now); grep -r -c zzzz-never "$dir/untar" > /dev/null || true; t1=$(now)
  record "$name" grep $(echo "$t1 - $t0" | bc -l)
  rm -rf "$dir/untar"
}
for round in $(seq "$rounds"); do
  echo "round $round of $rounds" >&2
  # Fresh bytes every round: dfs would dedup the same content (convergent encryption) and
  # store nothing the second time.
  head -c $((size_mib << 20)) /dev/urandom > "$work/input"
  run local "$work/local"
  run bindfs "$work/bindfs"
  run dfs "$work/dfs"
  [ -z "$baseline" ] || run base "$work/base"
done

printf '%-28s %12s %12s %12s %10s\n' workload local bindfs dfs "dfs/bindfs"
row() { # row LABEL KEY HIGHER_IS_BETTER
  local l b d ratio
  l=$(median "${result[local,$2]}") b=$(median "${result[bindfs,$2]}") d=$(median "${result[dfs,$2]}")
  if [ "$3" = 1 ]; then ratio=$(echo "$d / $b" | bc -l); else ratio=$(echo "$b / $d" | bc -l); fi
  printf '%-28s %12.1f %12.1f %12.1f %10.2f\n' "$1" "$l" "$b" "$d" "$ratio"
}
row "seq write MB/s (fsync)" write 1
row "seq read MB/s (cold)" read 1
row "4k rand read KB/s" randread 1
row "4k rand write KB/s" randwrite 1
row "create files/s" create 1
row "ls -lR files/s (cold)" stat 1
row "remove files/s" remove 1
row "untar 5k files s" untar 0
row "grep -r s (cold)" grep 0
echo "(medians of $rounds rounds; MB = MiB here; ratio > 1 means dfs is better; $size_mib MiB sequential, $files small files)"
[ -n "$baseline" ] || exit 0
echo
printf '%-28s %12s %12s %10s\n' workload baseline dfs "dfs/base"
base_row() { # base_row LABEL KEY HIGHER_IS_BETTER
  local b d ratio
  b=$(median "${result[base,$2]}") d=$(median "${result[dfs,$2]}")
  if [ "$3" = 1 ]; then ratio=$(echo "$d / $b" | bc -l); else ratio=$(echo "$b / $d" | bc -l); fi
  printf '%-28s %12.1f %12.1f %10.2f\n' "$1" "$b" "$d" "$ratio"
}
base_row "seq write MB/s (fsync)" write 1
base_row "seq read MB/s (cold)" read 1
base_row "4k rand read KB/s" randread 1
base_row "4k rand write KB/s" randwrite 1
base_row "create files/s" create 1
base_row "ls -lR files/s (cold)" stat 1
base_row "remove files/s" remove 1
base_row "untar 5k files s" untar 0
base_row "grep -r s (cold)" grep 0
echo "(baseline: $baseline; ratio > 1 means this build is better)"
