#!/usr/bin/env bash
# Tests of the WebAssembly/JavaScript binding. Installs what is missing (the
# wasm32 target, wasm-bindgen-cli at the version pinned in Cargo.toml, the
# npm devDependencies from package-lock.json, Debian's chromium), builds the
# package with its one build command, then runs: clippy for wasm32, the Node
# tests, the browser test in headless Chromium, and the TypeScript check.
# Called by scripts/test.sh; exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

step() { printf '\n==> wasm: %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "toolchain"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
wbg_version="$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' Cargo.toml)"
if [ -z "$wbg_version" ]; then
    echo "error: Cargo.toml must pin wasm-bindgen with \"=VERSION\"" >&2
    exit 1
fi
if ! command -v wasm-bindgen > /dev/null \
    || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$wbg_version" ]; then
    # --locked first; if the registry no longer offers a locked dependency
    # (a yanked crate), the same CLI version with fresh dependencies.
    cargo install wasm-bindgen-cli --version "$wbg_version" --locked \
        || cargo install wasm-bindgen-cli --version "$wbg_version"
fi
wasm-bindgen --version
node --version

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    step "npm ci"
    npm ci --no-audit --no-fund
fi

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    step "apt-get install chromium"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

step "build (npm run build)"
t=$(now)
npm run --silent build
echo "build: $(since "$t")"

step "cargo clippy --target wasm32-unknown-unknown"
cargo clippy --manifest-path Cargo.toml --target wasm32-unknown-unknown --all-targets -- -D warnings

step "Node tests"
t=$(now)
npm run --silent test:node
echo "Node tests: $(since "$t")"

step "browser test (headless Chromium)"
t=$(now)
CHROMIUM="$chromium" npm run --silent test:browser
echo "browser test: $(since "$t")"

step "TypeScript declarations"
npm run --silent test:types
echo "types: ok"
