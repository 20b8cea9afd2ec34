#!/usr/bin/env bash
# Fuzz smoke test: installs what is missing (a nightly toolchain, cargo-fuzz
# at a pinned version), builds the cargo-fuzz targets in fuzz/ once, then
# runs each target for a bounded time on its committed seed corpus
# (fuzz/corpus/<target>), failing on the first crash (a panic, an abort, a
# sanitizer report) or on an input that runs longer than 10 s. The whole
# run, install and build excepted, stays under 2 minutes.
#
# A smoke, not a campaign: the targets are built without optimizations
# (`--dev`, with AddressSanitizer and coverage as always). That build
# takes about 3.5 minutes on 2 cores where cargo-fuzz's default optimized
# one takes 8, and runs some 20 times fewer inputs per second (about 700/s
# on `header`, 150/s on `c_api`): every committed input still runs, and
# thousands of new ones. It also checks every crate's arithmetic for
# overflow (the dev profile's overflow checks, off in the optimized build):
# reproduce its crashes with `--dev`. Long runs use the optimized build
# (FUZZING.md).
#
# Environment:
#   MM_FUZZ=0            skip (prints a message, exits 0)
#   MM_FUZZ_SECONDS=N    seconds per target (default 15)
#   MM_FUZZ_TOOLCHAIN=T  the nightly toolchain to use (default nightly)
#   CARGO_TARGET_DIR     the build goes to $CARGO_TARGET_DIR/fuzz (default
#                        target/fuzz), beside the rest of the build
#
# Long runs and their results: FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${MM_FUZZ:-1}" = "0" ]; then
    echo "fuzz smoke skipped (MM_FUZZ=0)"
    exit 0
fi

CARGO_FUZZ_VERSION=0.13.2
TOOLCHAIN=${MM_FUZZ_TOOLCHAIN:-nightly}
SECONDS_PER_TARGET=${MM_FUZZ_SECONDS:-15}
TARGETS=(header folder inspect_path stream c_api pytorch)
target_root=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_root"
FUZZ_TARGET_DIR="$(cd "$target_root" && pwd)/fuzz"

step() { printf '\n==> %s\n' "$*"; }
now() { date +%s; }

start=$(now)
step "fuzz: toolchain $TOOLCHAIN and cargo-fuzz $CARGO_FUZZ_VERSION"
if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
installed=$(now)

step "fuzz: build (${TARGETS[*]})"
cargo "+$TOOLCHAIN" fuzz build --dev --target-dir "$FUZZ_TARGET_DIR"
built=$(now)

# New inputs found go to a scratch folder, not into the committed corpus.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${TARGETS[@]}"; do
    step "fuzz: $target for ${SECONDS_PER_TARGET}s"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo "+$TOOLCHAIN" fuzz run --dev --target-dir "$FUZZ_TARGET_DIR" "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target failed; the input is under fuzz/artifacts/$target" >&2
        echo "reproduce: cargo +$TOOLCHAIN fuzz run --dev --target-dir $FUZZ_TARGET_DIR $target fuzz/artifacts/$target/<input>" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
done
ran=$(now)

step "fuzz smoke passed: install $((installed - start))s, build $((built - installed))s, run $((ran - built))s"
