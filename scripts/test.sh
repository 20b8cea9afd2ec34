#!/usr/bin/env bash
# Installs what is missing on a fresh machine, then runs every test:
# formatting, lints, the Rust test suite (unit, integration, property,
# compile-fail, doc tests), then each binding's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time, printed as it ends and listed at the end (and on
# a failure), so that a slow CI run says where its time went.
timings=()
current=""
started=$(date +%s)
step_start=$started
end_step() {
    if [ -n "$current" ]; then
        timings+=("$(printf '%5ds  %s' "$(( $(date +%s) - step_start ))" "$current")")
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "fuzz smoke"
bash scripts/fuzz-smoke.sh

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
done

step "demo"
cargo run -q -p model-manager-cli -- demo > /dev/null
echo "demo ran"

step "example: sentence embeddings from a lease (examples/embed)"
cargo run -q --example embed

step "device check on the CPU (tools/gpu-check; scripts/gpu-check.sh runs it on a GPU)"
cargo run -q -p model-manager-gpu-check -- --device cpu --model-mib 64 --cycles 3

# The CUDA path, compiled on a machine without CUDA (the toolchain comes
# from PyPI wheels, see scripts/cuda-toolchain.sh): the code behind the
# `cuda` feature linted and built, then the binary scripts/gpu-check.sh runs
# on a GPU machine. Linted while built: clippy-driver compiles the
# workspace's crates (running clippy's lints on them) in the same release
# build that makes the binary, so the CUDA dependencies and candle's CUDA
# kernels are built once, not checked and then built. A warning fails the
# step. MM_CUDA=0 skips it.
if [ "${MM_CUDA:-1}" != "0" ]; then
    step "cuda: clippy and the device-check binary (--features cuda)"
    (
        toolchain=$(bash scripts/cuda-toolchain.sh)
        eval "$toolchain"
        RUSTC_WORKSPACE_WRAPPER="$(command -v clippy-driver)"
        export RUSTC_WORKSPACE_WRAPPER
        # Plain text, so that the check below sees every warning line.
        export CARGO_TERM_COLOR=never
        log=$(mktemp)
        trap 'rm -f "$log"' EXIT
        bash scripts/gpu-check.sh build -p model-manager-c 2>&1 | tee "$log"
        if grep -q '^warning' "$log"; then
            echo "cuda: the build above has warnings (clippy's or rustc's): fix them" >&2
            exit 1
        fi
    )
else
    echo "cuda build skipped (MM_CUDA=0)"
fi
