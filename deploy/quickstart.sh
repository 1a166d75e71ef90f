#!/usr/bin/env bash
# Set up dfs on a fresh Debian 12 machine and leave a mounted folder ready to use:
#   ./deploy/quickstart.sh [MOUNTPOINT]      (default: ~/dfs; PEERS=5)
# It installs the packages dfs needs (apt), builds, checks the chunk pipeline with a put/get
# round trip, starts a local network of PEERS storage peers on 127.0.0.1
# (deploy/local-network.sh), mounts the volume at MOUNTPOINT in the background as one more peer,
# writes some files and shows where their shards went (`dfs status`).
# Data lives in $DFS_DATA (default ~/.local/share/dfs); the peers' under ~/.local/share/dfs-network.
# Unmount with `dfs umount MOUNTPOINT`; stop the peers with `deploy/local-network.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cargo build --release -p dfs
dfs=$PWD/target/release/dfs
mnt=${1:-$HOME/dfs}
export DFS_DATA=${DFS_DATA:-${XDG_DATA_HOME:-$HOME/.local/share}/dfs}
work=$(mktemp -d /tmp/dfs-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== round trip: dfs put /usr/share/doc/bash, dfs get, diff"
link=$("$dfs" put /usr/share/doc/bash | tail -n 1)
"$dfs" get "$link" -o "$work/restored"
diff -r /usr/share/doc/bash "$work/restored" && echo "identical; link: $link"

echo "== starting a local network of ${PEERS:-5} peers"
DFS_BIN=$dfs ./deploy/local-network.sh start "${PEERS:-5}"
boot=$(DFS_BIN=$dfs ./deploy/local-network.sh address)

echo "== mounting at $mnt"
mkdir -p "$mnt"
if grep -q " $(realpath "$mnt") " /proc/self/mountinfo; then
  echo "$mnt is already mounted"
else
  nohup "$dfs" mount "$mnt" --peer "$boot" >"$DFS_DATA/mount.log" 2>&1 &
  for _ in $(seq 300); do grep -q " $(realpath "$mnt") " /proc/self/mountinfo && break; sleep 0.1; done
fi
cp -r /usr/share/doc/bash "$mnt/"
echo "hello from dfs" > "$mnt/hello.txt"
head -c 64M /dev/urandom > "$mnt/random.bin"
sync
ls -l "$mnt"
sleep 3   # one repair round, so status counts every chunk
echo
"$dfs" status
echo
echo "Ready: $mnt is a dfs folder (encrypted, erasure-coded, spread over the peers). Use it with any tool."
echo "Unmount with: $dfs umount $mnt      (log: $DFS_DATA/mount.log)"
echo "Peers: deploy/local-network.sh status | stop"
