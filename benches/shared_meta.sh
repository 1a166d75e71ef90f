#!/usr/bin/env bash
# Metadata operations per second in a shared volume, every peer a separate process on 127.0.0.1:
#   benches/shared_meta.sh        (as root: mounts; FILES=1000 ROUNDS=3)
# - team: volume of three members, each with its own mount; the operations run in the first
#   mount while the other two are live (they receive, apply and invalidate every op).
# - solo: a volume with a single member (the same code path, nobody to send ops to).
# - own:  the peer's own volume (`dfs mount` without --volume): no op log at all.
# Each round creates FILES empty files, renames each, then unlinks each (Python, one syscall
# per op, close included in create), in one directory; medians of ROUNDS rounds, the three
# targets taking turns. Ratios are team/solo (what sharing costs) and team/own.
# Then the propagation delay: a 4 KiB file closed in the first mount, polled for in the second
# (every 1 ms) until it reads back right; median and worst of 20.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
files=${FILES:-1000}
rounds=${ROUNDS:-3}
[ "$(id -u)" -eq 0 ] || { echo "shared_meta.sh: run as root (mounts)" >&2; exit 2; }
cd "$root"
cargo build -q --release -p dfs
dfs=$root/target/release/dfs
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/dfs-shared-bench.XXXXXX")
pids=()
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do grep -q " $m " /proc/self/mountinfo && umount -l "$m"; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_api() { for _ in $(seq 200); do [ -f "$1/api.json" ] && return; sleep 0.05; done; echo "no API on $1" >&2; exit 1; }
address() { "$dfs" --data "$1" status --json | python3 -c \
  'import json,sys; print([a for a in json.load(sys.stdin)["addresses"] if "/tcp/" in a][0])'; }
joined() { "$dfs" --data "$1" volume list --json | python3 -c \
  "import json,sys; print(sum(1 for v in json.load(sys.stdin) if v['name'] == '$2' and v['joined'] and v['members'] == $3))"; }
mount_on() { # data dir, mount point, extra args...
  local data=$1 mnt=$2; shift 2
  mkdir -p "$mnt"
  "$dfs" --data "$data" mount "$mnt" --peer "$boot" "$@" 2>"$data.mount.log" &
  pids+=($!); mounts+=("$mnt")
  for _ in $(seq 600); do grep -q " $mnt " /proc/self/mountinfo && return; sleep 0.05; done
  echo "shared_meta.sh: the mount at $mnt did not come up" >&2; cat "$data.mount.log" >&2; exit 1
}

# A storage peer everyone bootstraps from (not a member of anything).
"$dfs" --data "$work/s" node 2>"$work/s.log" &
pids+=($!); wait_api "$work/s"; boot=$(address "$work/s")

# Volumes are made while the members run as nodes, then the nodes stop and the mounts start.
node_pids=()
for m in a b c d; do
  "$dfs" --data "$work/$m" node --peer "$boot" 2>"$work/$m.node.log" &
  node_pids+=($!); wait_api "$work/$m"
done
"$dfs" --data "$work/a" volume create team >/dev/null
"$dfs" --data "$work/d" volume create solo >/dev/null
for m in b c; do
  ticket=$("$dfs" --data "$work/a" volume invite team | tail -1)
  "$dfs" --data "$work/$m" volume join "$ticket" >/dev/null
done
for m in a b c; do
  for _ in $(seq 300); do [ "$(joined "$work/$m" team 3)" = 1 ] && break; sleep 0.1; done
  [ "$(joined "$work/$m" team 3)" = 1 ] || { echo "shared_meta.sh: $m did not join" >&2; exit 1; }
done
kill "${node_pids[@]}"; wait "${node_pids[@]}" 2>/dev/null || true

for m in a b c; do mount_on "$work/$m" "$work/mnt-$m" --volume team; done
mount_on "$work/d" "$work/mnt-d" --volume solo
mount_on "$work/e" "$work/mnt-e"

ops() { # dir -> "create rename unlink" ops/s
  python3 - "$1" "$files" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
rates = []
t = time.perf_counter()
for i in range(n):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for i in range(n):
    os.rename(f"{d}/f{i}", f"{d}/g{i}")
rates.append(n / (time.perf_counter() - t))
t = time.perf_counter()
for i in range(n):
    os.unlink(f"{d}/g{i}")
rates.append(n / (time.perf_counter() - t))
os.rmdir(d)
print(" ".join(f"{r:.1f}" for r in rates))
EOF
}
declare -A result
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
run() {
  local name=$1 dir=$2 r
  read -r c m u <<<"$(ops "$dir")"
  result[$name,create]="${result[$name,create]:-} $c"
  result[$name,rename]="${result[$name,rename]:-} $m"
  result[$name,unlink]="${result[$name,unlink]:-} $u"
}
for r in $(seq "$rounds"); do
  case $((r % 3)) in
    1) run team "$work/mnt-a/r$r"; run solo "$work/mnt-d/r$r"; run own "$work/mnt-e/r$r" ;;
    2) run solo "$work/mnt-d/r$r"; run own "$work/mnt-e/r$r"; run team "$work/mnt-a/r$r" ;;
    0) run own "$work/mnt-e/r$r"; run team "$work/mnt-a/r$r"; run solo "$work/mnt-d/r$r" ;;
  esac
done

# The other two mounts applied everything: their trees match the writer's.
tree() { (cd "$1" && ls -laR --time-style=+ . | grep -v '^total'); }
for m in b c; do
  diff <(tree "$work/mnt-a") <(tree "$work/mnt-$m") >/dev/null \
    || { sleep 2; diff <(tree "$work/mnt-a") <(tree "$work/mnt-$m") >/dev/null; } \
    || { echo "shared_meta.sh: mount $m differs from a:" >&2; diff <(tree "$work/mnt-a") <(tree "$work/mnt-$m") | head >&2; exit 1; }
done

delays=$(python3 - "$work/mnt-a" "$work/mnt-b" <<'EOF'
import os, sys, time
a, b = sys.argv[1], sys.argv[2]
out = []
for i in range(20):
    data = os.urandom(4096)
    with open(f"{a}/lat{i}", "wb") as f:
        f.write(data)
    t = time.perf_counter()
    while True:
        try:
            with open(f"{b}/lat{i}", "rb") as f:
                if f.read() == data:
                    break
        except OSError:
            pass
        if time.perf_counter() - t > 30:
            sys.exit(f"lat{i} never arrived")
        time.sleep(0.001)
    out.append(time.perf_counter() - t)
out.sort()
print(f"{out[len(out) // 2] * 1000:.0f} {out[-1] * 1000:.0f}")
EOF
)
read -r lat_median lat_worst <<<"$delays"

printf '\n%s files per round, %s rounds (medians), every peer a process on 127.0.0.1\n\n' "$files" "$rounds"
printf '| op/s | own volume | solo shared | team (3 mounts) | team/solo | team/own |\n|---|---|---|---|---|---|\n'
for w in create rename unlink; do
  o=$(median "${result[own,$w]}"); s=$(median "${result[solo,$w]}"); t=$(median "${result[team,$w]}")
  printf '| %s | %.0f | %.0f | %.0f | %.2f | %.2f |\n' "$w" "$o" "$s" "$t" \
    "$(echo "$t / $s" | bc -l)" "$(echo "$t / $o" | bc -l)"
done
printf '\nfile closed in one mount -> read back right in another: median %s ms, worst %s ms (20 files)\n' \
  "$lat_median" "$lat_worst"
