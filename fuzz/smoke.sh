#!/usr/bin/env bash
# Build every fuzz target of dfs and run each for FUZZ_SECONDS (default 60) on its corpus;
# fail if any crashes. CI calls this from tests/run.sh; see README.md, "Fuzzing".
# `fuzz/smoke.sh seeds` instead rewrites the seed corpus (fuzz/corpus/) from examples/seeds.rs.
#
# No cargo-fuzz needed: the targets are built with plain `cargo build --release` and the
# RUSTFLAGS cargo-fuzz uses (sanitizer coverage for libFuzzer, `--cfg fuzzing`, AddressSanitizer
# unless FUZZ_SANITIZER=none). Those need a nightly compiler: `cargo +nightly` where rustup has
# one, otherwise the stable one with RUSTC_BOOTSTRAP=1.
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60; 0 only builds)
#   FUZZ_JOBS       targets run at once (default 2, the cores CI has)
#   FUZZ_TARGETS    space-separated subset of targets (default: all in fuzz_targets/)
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_TARGET_DIR where to build (default fuzz/target)
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-2}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
started=$(date +%s)

cargo=(cargo)
if command -v rustup >/dev/null && rustup toolchain list 2>/dev/null | grep -q '^nightly' &&
    rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
host=$(rustc -vV | sed -n 's/^host: //p')

# The flags of `cargo fuzz build` (sanitizer coverage with 8-bit counters, PC table and
# comparison tracing), plus the root's `.cargo/config.toml` rustflags that RUSTFLAGS replaces.
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Cforce-frame-pointers
    --cfg chacha20_avx512
)
case "$FUZZ_SANITIZER" in
address) flags+=(-Zsanitizer=address) ;;
none) ;;
*) echo "FUZZ_SANITIZER must be address or none" >&2; exit 2 ;;
esac
export RUSTFLAGS="${flags[*]}"
# Same as cargo-fuzz: ASan's leak checker off (libFuzzer reports leaks itself when asked).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

if [ "${1:-}" = seeds ]; then
    # Rewrite the seed corpus (examples/seeds.rs), built with the same flags as the targets.
    "${cargo[@]}" build --release --locked --target "$host" --example seeds
    "$CARGO_TARGET_DIR/$host/release/examples/seeds"
    echo "== fuzz: seeds written to fuzz/corpus/"
    exit 0
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=()
    for f in fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

echo "== fuzz: building ${#targets[@]} targets (${cargo[*]}, $FUZZ_SANITIZER sanitizer)"
# --target keeps the flags off build scripts and proc macros, as cargo-fuzz does.
"${cargo[@]}" build --release --locked --target "$host" --bins
bin="$CARGO_TARGET_DIR/$host/release"
built=$(date +%s)
echo "== fuzz: built in $((built - started)) s"
[ "$FUZZ_SECONDS" -gt 0 ] || exit 0

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run() {
    local t=$1
    # The seed corpus is read; what the run finds goes to a scratch directory (commit new
    # seeds by hand, after minimising: see README.md).
    local scratch="$logs/$t.corpus"
    mkdir -p "$scratch" "corpus/$t"
    if "$bin/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$logs/$t-" "$scratch" "corpus/$t" \
        >"$logs/$t.log" 2>&1; then
        echo "   $t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" |
            grep -o '[0-9]*$') runs)"
    else
        echo "   $t: FAILED" >&2
        tail -n 60 "$logs/$t.log" >&2
        for a in "$logs/$t"-*; do
            [ -e "$a" ] || continue
            mkdir -p artifacts/"$t"
            cp "$a" artifacts/"$t"/
            echo "   crashing input kept in fuzz/artifacts/$t/$(basename "$a")" >&2
        done
        return 1
    fi
}

echo "== fuzz: running each target for $FUZZ_SECONDS s, $FUZZ_JOBS at a time"
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$FUZZ_JOBS" ]; do
        wait -n || true
    done
    (run "$t" && touch "$logs/$t.ok") &
done
wait
echo "== fuzz: $(($(date +%s) - started)) s in all"
for t in "${targets[@]}"; do
    if [ ! -e "$logs/$t.ok" ]; then
        echo "== fuzz: $t crashed or failed to run" >&2
        exit 1
    fi
done
