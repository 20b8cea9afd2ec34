#!/usr/bin/env bash
# Builds the JavaScript package: the wasm crate (cargo, wasm32, size-tuned
# release profile), its JS glue (wasm-bindgen --target web, shared by the
# browser and Node entry points), then wasm-opt when the `binaryen` npm
# package is installed (a devDependency; skipped with a note otherwise).
#
#   npm run build            # or: bash build.sh
#   MM_WASM_DEBUG=1 npm run build    # unoptimised, with debug checks in the glue
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

wasm_bindgen_version="$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' Cargo.toml)"
if ! command -v wasm-bindgen > /dev/null \
    || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$wasm_bindgen_version" ]; then
    echo "error: wasm-bindgen $wasm_bindgen_version is needed (the version pinned in Cargo.toml):" >&2
    echo "  cargo install wasm-bindgen-cli --version $wasm_bindgen_version --locked" >&2
    exit 1
fi

# A profile of our own, defined here: the workspace's release profile stays
# untouched and the two builds never evict each other.
profile=wasm-release
profile_config=(
    --config "profile.$profile.inherits=\"release\""
    --config "profile.$profile.opt-level=\"s\""
    --config "profile.$profile.lto=true"
    --config "profile.$profile.codegen-units=1"
    --config "profile.$profile.panic=\"abort\""
)
# Names only serve stack traces; wasm-opt drops them anyway.
bindgen_flags=(--remove-name-section --remove-producers-section)
if [ -n "${MM_WASM_DEBUG:-}" ]; then
    profile=dev
    profile_config=()
    bindgen_flags=(--debug --keep-debug)
fi

cargo build --manifest-path Cargo.toml --target wasm32-unknown-unknown \
    --profile "$profile" "${profile_config[@]}"

target_dir="$(cargo metadata --manifest-path Cargo.toml --format-version 1 --no-deps \
    | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
[ "$profile" = dev ] && dir=debug || dir="$profile"
wasm="$target_dir/wasm32-unknown-unknown/$dir/model_manager_wasm.wasm"

rm -rf pkg
wasm-bindgen "$wasm" --out-dir pkg --out-name model_manager_wasm --target web \
    "${bindgen_flags[@]}"

out=pkg/model_manager_wasm_bg.wasm
if [ -z "${MM_WASM_DEBUG:-}" ] && [ -x node_modules/.bin/wasm-opt ]; then
    node_modules/.bin/wasm-opt "$out" -Os -o "$out.opt" \
        --enable-bulk-memory --enable-nontrapping-float-to-int \
        --enable-sign-ext --enable-mutable-globals --enable-reference-types \
        --enable-multivalue
    mv "$out.opt" "$out"
    opt="wasm-opt -Os"
else
    opt="no wasm-opt"
fi

raw=$(wc -c < "$out")
gz=$(gzip -9 -c "$out" | wc -c)
echo "built $out: $raw bytes, $gz gzipped ($opt)"
