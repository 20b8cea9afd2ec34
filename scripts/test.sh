#!/usr/bin/env bash
# Installs what is missing on a fresh machine, then runs every test:
# formatting, lints, the Rust test suite (unit, integration, property,
# compile-fail, doc tests), then each binding's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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
bash scripts/fuzz-smoke.sh

step "README's C example is bindings/c/examples/quickstart.c, verbatim"
awk '$0 == "<!-- quickstart.c:begin -->" { inside = 1; next }
     $0 == "<!-- quickstart.c:end -->" { inside = 0 }
     inside && !/^```/ { print }' README.md | diff -u bindings/c/examples/quickstart.c -

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
# from PyPI wheels, see scripts/cuda-toolchain.sh): clippy over the code
# behind the `cuda` feature, then the binary scripts/gpu-check.sh runs on
# a GPU machine. Both in the release profile, so candle's CUDA kernels are
# built once per run. MM_CUDA=0 skips it.
if [ "${MM_CUDA:-1}" != "0" ]; then
    step "cuda: clippy and the device-check binary (--features cuda)"
    (
        toolchain=$(bash scripts/cuda-toolchain.sh)
        eval "$toolchain"
        cargo clippy --release --features cuda \
            -p model-manager -p model-manager-c -p model-manager-gpu-check --lib --bins -- -D warnings
        bash scripts/gpu-check.sh build
    )
else
    echo "cuda build skipped (MM_CUDA=0)"
fi
