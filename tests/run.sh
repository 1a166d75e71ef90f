#!/usr/bin/env bash
# Run every check and test of dfs: import cycles, formatting, clippy, and the whole workspace's tests
# (unit, property and end-to-end tests through the real `dfs` binary), then a short run of every
# fuzz target (fuzz/smoke.sh; FUZZ_SECONDS=0 only builds them).
# Tests that need root (tmpfs for full-disk cases, FUSE mounts, pjdfstest) run when this runs as
# root, as CI does; elsewhere they say they skipped, and with DFS_REQUIRE_ROOT=1 (set by .ci/run)
# they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== no import cycles among the modules of node, fs and tools (tests/arch/import_cycles.py)"
python3 tests/arch/import_cycles.py node/src fs/src tools/src
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo build --locked -p dfs
# The fuzz targets build (their own workspace and flags) while the tests run, at the lowest
# priority: the end-to-end tests spend much of their time waiting on peers and timers.
fuzz_build_log=$(mktemp)
FUZZ_SECONDS=0 nice -n 19 ./fuzz/smoke.sh >"$fuzz_build_log" 2>&1 &
fuzz_build=$!
cargo test --workspace --locked -- --test-threads="${DFS_TEST_THREADS:-2}"
echo "== POSIX conformance and real tools in the mount (root only)"
./tests/posix/run.sh
echo "== fuzz smoke: every fuzz target built and run for FUZZ_SECONDS s (fuzz/smoke.sh)"
if ! wait "$fuzz_build"; then
    cat "$fuzz_build_log" >&2
    echo "== fuzz targets failed to build" >&2
    exit 1
fi
cat "$fuzz_build_log"
FUZZ_SECONDS=${FUZZ_SECONDS:-60} ./fuzz/smoke.sh
echo "== all tests passed"
