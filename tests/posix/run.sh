#!/usr/bin/env bash
# POSIX conformance of the dfs mount: pjdfstest (the Rust port) as root inside a fresh mount,
# then real tools (tests/posix/tools.sh). Needs root and /dev/fuse; CI runs it via tests/run.sh.
#   tests/posix/run.sh [--release]
# Fails if fewer than MIN_PASSED (default 380) pjdfstest cases pass or any case fails that is
# not listed in docs/posix.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
profile=debug
[ "${1:-}" = "--release" ] && profile=release
min_passed=${MIN_PASSED:-380}
# Failures explained in docs/posix.md: Linux checks EEXIST before EXDEV in link(2); the
# ETXTBSY test races its own exec (it opens the binary before the child has exec'd it).
known_failures="link::exdev_target open::etxtbsy truncate::etxtbsy ftruncate::etxtbsy"

if [ "$(id -u)" -ne 0 ] || [ ! -e /dev/fuse ]; then
  if [ "${DFS_REQUIRE_ROOT:-}" = 1 ]; then
    echo "posix: needs root and /dev/fuse, and DFS_REQUIRE_ROOT=1 says this machine must run it" >&2
    exit 1
  fi
  echo "posix: skipped (needs root and /dev/fuse)"
  exit 0
fi
command -v pjdfstest >/dev/null || cargo install pjdfstest --version 0.2.2 --locked
cd "$root"
cargo build -q $([ $profile = release ] && echo --release) -p dfs
dfs=$root/target/$profile/dfs

work=$(mktemp -d /var/tmp/dfs-posix.XXXXXX)
# pjdfstest 0.2.2 builds PATH_MAX-long paths with an underflow for some base path lengths
# (remaining % 127 == 0); this mount point length is known to be safe.
mnt=/var/tmp/pjd-dfs01
second=$work/second
mkdir -p "$mnt" "$second"
mount -t tmpfs -o size=64m tmpfs "$second"
pid=
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  grep -q " $mnt " /proc/self/mountinfo && umount -l "$mnt" || true
  umount "$second" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mount_dfs() {
  "$dfs" --data "$work/data" mount "$mnt" --allow-other 2>>"$work/mount.log" &
  pid=$!
  for _ in $(seq 300); do grep -q " $mnt " /proc/self/mountinfo && return 0; sleep 0.05; done
  echo "posix: mount did not come up"; cat "$work/mount.log"; exit 1
}
unmount_dfs() {
  "$dfs" umount "$mnt"
  wait "$pid"
  pid=
}

mount_dfs
echo "== pjdfstest in the dfs mount"
(cd "$mnt" && pjdfstest -c "$here/pjdfstest.toml" -p "$mnt" -s "$second") >"$work/pjdfstest.log" 2>&1 || true
summary=$(grep '^Summary' "$work/pjdfstest.log" || echo "no summary")
echo "$summary"
passed=$(echo "$summary" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
failed=$(grep -E 'FAILED$' "$work/pjdfstest.log" | awk '{print $1}' || true)
unexpected=$(for f in $failed; do case " $known_failures " in *" $f "*) ;; *) echo "$f";; esac; done)
if [ -z "$passed" ] || [ "$passed" -lt "$min_passed" ] || [ -n "$unexpected" ]; then
  echo "posix: pjdfstest below the bar (passed ${passed:-?} < $min_passed, or unexpected failures):"
  echo "$unexpected"
  grep -A4 'FAILED$' "$work/pjdfstest.log" | head -80
  exit 1
fi

echo "== real tools in the dfs mount"
"$here/tools.sh" "$mnt" "$work"
unmount_dfs
mount_dfs
echo "== after unmount and mount again"
diff -r --no-dereference /usr/include "$mnt/include" && echo "/usr/include copy intact"
unmount_dfs
echo "== dfs fsck of the volume pjdfstest and the tools left behind"
"$dfs" --data "$work/data" fsck
echo "posix: ok"
