#!/usr/bin/env bash
# Tests of the Python package (model_manager): builds the wheel with maturin,
# installs it into a venv under the build dir, then runs pytest (every test
# bounded by pytest-timeout), mypy --strict and ty over the package, its
# stubs and the quickstart example.
#
#   bash bindings/python/test.sh               # no torch: its tests skip, with their reason
#   bash bindings/python/test.sh --with-torch  # also installs torch + diffusers and runs their tests
#
# Needs python3 (>= 3.10) with venv and pip, and a Rust toolchain. Builds in
# $CARGO_TARGET_DIR if set, else the workspace's target directory, so that
# the core's dependencies are compiled once for every suite.
set -euo pipefail
cd "$(dirname "$0")"
here="$PWD"

with_torch=0
for arg in "$@"; do
    case "$arg" in
        --with-torch) with_torch=1 ;;
        *) echo "usage: $0 [--with-torch]" >&2; exit 2 ;;
    esac
done

# Pinned versions of everything installed from PyPI.
MATURIN=maturin==1.9.6
TEST_DEPS=(pytest==9.2.0 pytest-asyncio==1.5.0 pytest-timeout==2.4.0 numpy==2.4.6 mypy==2.4.1 ty==1.0.0)
TORCH_DEPS=(torch==2.15.0 diffusers==0.42.1)

step() { printf '\n==> python: %s\n' "$*"; }

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    CARGO_TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path ../../Cargo.toml |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
fi
export CARGO_TARGET_DIR
venv="$CARGO_TARGET_DIR/python/venv"
wheels="$CARGO_TARGET_DIR/python/wheels"

step "venv ($venv)"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --disable-pip-version-check "$MATURIN" "${TEST_DEPS[@]}"
if [ "$with_torch" = 1 ]; then
    step "torch and diffusers"
    "$py" -m pip install -q --disable-pip-version-check "${TORCH_DEPS[@]}"
fi

step "wheel (maturin, dev profile)"
rm -rf "$wheels"
"$venv/bin/maturin" build --profile dev --quiet --out "$wheels"
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl

step "pytest"
# From the tests' folder, so that `model_manager` is the installed wheel and
# not the source tree.
(cd "$here" && "$py" -m pytest -q -rs -p no:cacheprovider tests)

step "mypy --strict and ty"
targets=(python/model_manager examples/quickstart.py)
if [ "$with_torch" = 1 ]; then
    targets+=(examples/diffusers_from_lease.py)
fi
"$venv/bin/mypy" --strict --no-incremental --cache-dir=/dev/null "${targets[@]}"
# ty reads diffusers' own (conditional, partly dummy) classes as unions
# with no common attributes: the diffusers example is checked by mypy, which
# treats diffusers as untyped (pyproject.toml), and not by ty.
"$venv/bin/ty" check --python "$venv" python/model_manager examples/quickstart.py
echo "python: all passed"
