#!/usr/bin/env bash
# Installs what is missing on a fresh machine, then runs every test:
# formatting, lints, the Rust test suite (unit, integration, property,
# compile-fail, doc tests), then each binding's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# A run builds everything from scratch: incremental compilation's caches
# would only cost time and gigabytes of disk.
export CARGO_INCREMENTAL=0

# Each step's wall time and the disk left after it, printed as it ends and
# listed at the end (and on a failure), so that a slow or full CI run says
# where its time and its disk went.
target_root="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_root"
disk_free() { df -h --output=avail "$target_root" 2>/dev/null | tail -1 | tr -d ' ' || true; }
timings=()
current=""
started=$(date +%s)
step_start=$started
end_step() {
    if [ -n "$current" ]; then
        timings+=("$(printf '%5ds  %6s free  %s' "$(( $(date +%s) - step_start ))" "$(disk_free)" "$current")")
    fi
    current=""
}
step() {
    end_step
    current="$*"
    step_start=$(date +%s)
    printf '\n==> %s\n' "$*"
}
report() {
    status=$?
    end_step
    printf '\n==> time per step (%s)\n' "$([ "$status" = 0 ] && echo passed || echo "failed, status $status")"
    printf '%s\n' "${timings[@]}"
    printf '%5ds  in all\n' "$(( $(date +%s) - started ))"
}
trap report EXIT

step "toolchain"
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done
cargo --version

# A CI machine's disk may be nearly full: when less than 20 GiB is left
# where the builds go, a build folder that only one step uses goes once
# that step has passed.
free_if_low_disk() {
    local avail_kib
    avail_kib=$(df --output=avail -k "$target_root" 2>/dev/null | tail -1 | tr -d ' ') || avail_kib=""
    if [ -n "$avail_kib" ] && [ "$avail_kib" -lt $((20 * 1024 * 1024)) ]; then
        echo "less than 20 GiB of disk left: removing $*"
        rm -rf "$@"
    fi
}

step "cargo fmt --check"
cargo fmt --all -- --check

# Linted while built: clippy-driver compiles the workspace's crates (running
# clippy's lints on them) in the build the tests use, so the dependencies
# are built once, not checked for clippy and then built again for the
# tests. A warning, clippy's or rustc's, fails the step.
clippy_driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
linted() { RUSTC_WORKSPACE_WRAPPER="$clippy_driver" "$@"; }
no_warnings() {
    local log status=0
    log=$(mktemp)
    CARGO_TERM_COLOR=never "$@" 2>&1 | tee "$log" || status=$?
    if [ "$status" = 0 ] && grep -q '^warning' "$log"; then
        echo "the build above has warnings (clippy's or rustc's): fix them" >&2
        status=1
    fi
    rm -f "$log"
    return "$status"
}

step "cargo clippy: every target of the workspace, linted while built"
no_warnings linted cargo test --workspace --all-targets --no-run
# The example and the device check below run these builds (`cargo run` of
# one package would build the crates again with that package's features).
no_warnings linted cargo build --workspace --bins --examples

step "cargo test"
linted cargo test --workspace
# trybuild's own check of every dependency, for the compile-fail cases.
free_if_low_disk "$target_root/tests"

step "fuzz smoke"
bash scripts/fuzz-smoke.sh
free_if_low_disk "$target_root/fuzz"

step "README's C example is bindings/c/examples/quickstart.c, verbatim"
awk '$0 == "<!-- quickstart.c:begin -->" { inside = 1; next }
     $0 == "<!-- quickstart.c:end -->" { inside = 0 }
     inside && !/^```/ { print }' README.md | diff -u bindings/c/examples/quickstart.c -

# The workspace's fmt, clippy and tests (every binding's crate included)
# have run: the suites below need not run them again for their crate.
export MM_WORKSPACE_CHECKED=1
for suite in bindings/*/test.sh; do
    [ -f "$suite" ] || continue
    step "$suite"
    bash "$suite"
    case "$suite" in
        bindings/c/*) free_if_low_disk "$target_root/miri" ;;
        bindings/wasm/*) free_if_low_disk "$target_root/wasm32-unknown-unknown" "$target_root/wasm-release" ;;
    esac
done

step "demo"
linted cargo run -q -p model-manager-cli -- demo > /dev/null
echo "demo ran"

step "example: sentence embeddings from a lease (examples/embed)"
"$target_root/debug/examples/embed"

step "device check on the CPU (tools/gpu-check; scripts/gpu-check.sh runs it on a GPU)"
"$target_root/debug/gpu_check" --device cpu --model-mib 64 --cycles 3

# The CUDA path, compiled on a machine without CUDA (the toolchain comes
# from PyPI wheels, see scripts/cuda-toolchain.sh): the code behind the
# `cuda` feature linted and built, then what scripts/gpu-check.sh runs on a
# GPU machine (its binary and the Python extension, packed). Linted while built: clippy-driver compiles the
# workspace's crates (running clippy's lints on them) in the same release
# build that makes the binary, so the CUDA dependencies and candle's CUDA
# kernels are built once, not checked and then built. A warning fails the
# step. MM_CUDA=0 skips it.
if [ "${MM_CUDA:-1}" != "0" ]; then
    step "cuda: clippy and the device-check binary (--features cuda)"
    (
        toolchain=$(bash scripts/cuda-toolchain.sh)
        eval "$toolchain"
        no_warnings linted bash scripts/gpu-check.sh build -p model-manager-c
    )
else
    echo "cuda build skipped (MM_CUDA=0)"
fi
