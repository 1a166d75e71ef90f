#!/usr/bin/env bash
# A local dfs network on 127.0.0.1: N storage peers (`dfs node`), each a separate process with
# its own data directory, in three zones.
#   deploy/local-network.sh start [N]   start N peers (default 5); prints the bootstrap address
#   deploy/local-network.sh address     the bootstrap address (for `dfs mount --peer ...`)
#   deploy/local-network.sh status      `dfs status` of every peer
#   deploy/local-network.sh stop        stop them (SIGTERM; shards stay on disk)
# Data lives under $DFS_NETWORK (default ~/.local/share/dfs-network/p0, p1, ...); starting again
# reuses it, so the peers keep their identities and the shards they hold.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dfs=${DFS_BIN:-$root/target/release/dfs}
net=${DFS_NETWORK:-${XDG_DATA_HOME:-$HOME/.local/share}/dfs-network}
[ -x "$dfs" ] || { echo "local-network.sh: build dfs first (cargo build --release -p dfs)" >&2; exit 2; }

address() {
  "$dfs" --data "$net/p0" status --json | python3 -c \
    'import json,sys; print([a for a in json.load(sys.stdin)["addresses"] if "/tcp/" in a][0])'
}

running() { [ -f "$1/api.json" ] && "$dfs" --data "$1" status >/dev/null 2>&1; }

case "${1:-}" in
  start)
    n=${2:-5}
    mkdir -p "$net"
    for i in $(seq 0 $((n - 1))); do
      dir=$net/p$i
      if running "$dir"; then continue; fi
      boot=()
      [ "$i" -gt 0 ] && boot=(--peer "$(address)")
      mkdir -p "$dir"
      nohup "$dfs" --data "$dir" node --zone "zone-$((i % 3))" "${boot[@]}" >"$net/p$i.log" 2>&1 &
      for _ in $(seq 100); do running "$dir" && break; sleep 0.1; done
      running "$dir" || { echo "local-network.sh: peer $i did not start; see $net/p$i.log" >&2; exit 1; }
    done
    echo "$n peers running on 127.0.0.1 (data under $net); bootstrap: $(address)"
    ;;
  address) address ;;
  status)
    for dir in "$net"/p*/; do echo "== ${dir%/}"; "$dfs" --data "$dir" status || true; done
    ;;
  stop)
    for dir in "$net"/p*/; do
      pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$dir/api.json" 2>/dev/null || true)
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    echo "stopped the peers under $net"
    ;;
  *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
