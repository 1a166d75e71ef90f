#!/usr/bin/env bash
# Set up dfs on a fresh Debian 12 machine and leave a mounted folder ready to use:
#   ./deploy/quickstart.sh [MOUNTPOINT]      (default: ~/dfs)
# It installs the packages dfs needs (apt), builds, checks the chunk pipeline with a put/get
# round trip, then mounts the volume at MOUNTPOINT in the background and shows it working.
# Data lives in $DFS_DATA (default ~/.local/share/dfs). Unmount with `dfs umount MOUNTPOINT`.
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

echo "== mounting at $mnt"
mkdir -p "$mnt"
if grep -q " $(realpath "$mnt") " /proc/self/mountinfo; then
  echo "$mnt is already mounted"
else
  nohup "$dfs" mount "$mnt" >"$DFS_DATA/mount.log" 2>&1 &
  for _ in $(seq 100); do grep -q " $(realpath "$mnt") " /proc/self/mountinfo && break; sleep 0.1; done
fi
cp -r /usr/share/doc/bash "$mnt/"
echo "hello from dfs" > "$mnt/hello.txt"
ls -l "$mnt"
echo
echo "Ready: $mnt is a dfs folder (encrypted, erasure-coded, verified). Use it with any tool."
echo "Unmount with: $dfs umount $mnt      (log: $DFS_DATA/mount.log)"
