#!/usr/bin/env bash
# Set up dfs on a fresh Debian 12 machine and run the main job: store a directory tree through
# the chunk pipeline, restore it from its share link, and check both are identical.
#   ./deploy/quickstart.sh [PATH]   (default PATH: /usr/share/doc, any file or directory works)
# Uses a throwaway data directory unless DFS_DATA is set.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cargo build --release -p dfs
dfs=$PWD/target/release/dfs
src=${1:-/usr/share/doc}
work=$(mktemp -d /tmp/dfs-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
export DFS_DATA=${DFS_DATA:-$work/data}

echo "== dfs put $src"
link=$("$dfs" put "$src" | tee /dev/stderr | tail -n 1)
echo "== dfs get (restoring into $work/restored)"
mkdir "$work/restored"
"$dfs" get "$link" -o "$work/restored"
echo "== comparing"
diff -r --no-dereference "$src" "$work/restored/$(basename "$(realpath "$src")")" && echo "identical"
echo "== dfs verify"
"$dfs" verify "$link"
echo "== the store: $(find "$DFS_DATA/shards" -type f | wc -l) shard files, $(du -sh "$DFS_DATA/shards" | cut -f1)"
echo "share link: $link"
