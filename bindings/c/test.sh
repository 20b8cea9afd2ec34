#!/usr/bin/env bash
# Tests of the C ABI (model-manager-c): the header check, Rust unit tests,
# C11 and C++17 programs under AddressSanitizer and UBSan, valgrind, a
# multi-threaded stress test under AddressSanitizer and ThreadSanitizer, the
# pool's lifecycle (C11, C++17, valgrind) and multi-threaded tests (ASan and
# ThreadSanitizer), and the README's example built exactly as the README
# shows it.
#
# Installs what it lacks (cbindgen 0.29.4, valgrind); exits non-zero on any
# failure. The pointer helpers' tests also run under Miri when a nightly
# toolchain is there (MM_MIRI=0 skips them).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

CBINDGEN_VERSION=0.29.4
step() { printf '\n==> c: %s\n' "$*"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/mm-c-tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step "tools"
if [ "$(cbindgen --version 2>/dev/null || true)" != "cbindgen $CBINDGEN_VERSION" ]; then
    cargo install cbindgen --version "=$CBINDGEN_VERSION" --locked
fi
cbindgen --version
if ! command -v valgrind >/dev/null; then
    apt-get update -qq && apt-get install -y -qq valgrind
fi
for tool in gcc g++ pkg-config; do
    if ! command -v "$tool" >/dev/null; then
        apt-get update -qq && apt-get install -y -qq gcc g++ pkg-config
        break
    fi
done

step "header is up to date (cbindgen $CBINDGEN_VERSION)"
cbindgen --quiet --config bindings/c/cbindgen.toml --crate model-manager-c \
    --output "$work/model_manager.h" bindings/c
if ! diff -u include/model_manager.h "$work/model_manager.h"; then
    echo "include/model_manager.h is stale: regenerate it with" >&2
    echo "  cbindgen --config bindings/c/cbindgen.toml --crate model-manager-c --output include/model_manager.h bindings/c" >&2
    exit 1
fi

step "README example is examples/quickstart.c, verbatim"
# The lines between the markers, without the code fence.
extract() {
    awk -v begin="<!-- $1:begin -->" -v end="<!-- $1:end -->" '
        $0 == begin { inside = 1; next }
        $0 == end { inside = 0 }
        inside && !/^```/ { print }' bindings/c/README.md
}
extract quickstart.c > "$work/quickstart.c"
diff -u bindings/c/examples/quickstart.c "$work/quickstart.c"

# scripts/test.sh has run fmt, clippy and the tests over the whole workspace
# (this crate included) when it sets MM_WORKSPACE_CHECKED=1: not again.
if [ "${MM_WORKSPACE_CHECKED:-0}" = 1 ]; then
    step "rustfmt, clippy, cargo test: done by scripts/test.sh for the workspace"
else
    step "rustfmt, clippy"
    cargo fmt -p model-manager-c -- --check
    cargo clippy -q -p model-manager-c --all-targets -- -D warnings

    step "cargo test -p model-manager-c"
    cargo test -q -p model-manager-c
fi

step "miri: pointer and string helpers, result codes, struct translation"
# Miri interprets the tests that need no threads, files or candle kernels:
# the ffi helpers (NULL checks, out-params, buffer copies, panic boundary,
# handles), the result codes and the struct conversions. Its first run builds
# every dependency for Miri (about 15 minutes here); later runs take seconds.
# MM_MIRI=0 skips it.
if [ "${MM_MIRI:-1}" = 0 ]; then
    echo "skipped (MM_MIRI=0)"
elif ! cargo +nightly miri --version >/dev/null 2>&1 &&
    ! { rustup toolchain list | grep -q '^nightly' &&
        timeout 120 rustup +nightly component add miri rust-src >/dev/null 2>&1; }; then
    echo "skipped: no nightly toolchain with miri (rustup +nightly component add miri)"
else
    cargo +nightly miri test -q -p model-manager-c --lib -- ffi:: result:: types::
fi

step "build the libraries"
cargo build -q --release -p model-manager-c
lib="target/release/libmodel_manager_c.a"
# The system libraries the static library needs, as rustc reports them.
native_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

warn=(-Wall -Wextra -Werror -g -fno-omit-frame-pointer)
csan=(-std=c11 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "${warn[@]}" -fsanitize=address,undefined -fno-sanitize-recover=undefined)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

step "C11 lifecycle test (ASan, UBSan, LSan)"
gcc "${csan[@]}" -I include -o "$work/lifecycle_c" bindings/c/tests/lifecycle.c "$lib" $native_libs
"$work/lifecycle_c"

step "C++17 lifecycle test through model_manager.hpp (ASan, UBSan, LSan)"
g++ -std=c++17 "${warn[@]}" -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I include -o "$work/lifecycle_cpp" bindings/c/tests/lifecycle.cpp "$lib" $native_libs
"$work/lifecycle_cpp"

step "C11 lifecycle test under valgrind (no sanitizers)"
gcc -std=c11 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "${warn[@]}" -O1 -I include \
    -o "$work/lifecycle_plain" bindings/c/tests/lifecycle.c "$lib" $native_libs
valgrind --quiet --leak-check=full --error-exitcode=1 \
    "$work/lifecycle_plain"

step "C11 pool test (ASan, UBSan, LSan)"
gcc "${csan[@]}" -I include -o "$work/pool_c" bindings/c/tests/pool.c "$lib" $native_libs
"$work/pool_c"

step "C11 pool test under valgrind (no sanitizers)"
gcc -std=c11 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "${warn[@]}" -O1 -I include \
    -o "$work/pool_plain" bindings/c/tests/pool.c "$lib" $native_libs
valgrind --quiet --leak-check=full --error-exitcode=1 "$work/pool_plain"

step "C++17 pool test through model_manager.hpp (ASan, UBSan, LSan)"
g++ -std=c++17 "${warn[@]}" -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I include -o "$work/pool_cpp" bindings/c/tests/pool.cpp "$lib" $native_libs
"$work/pool_cpp"

step "multi-threaded pool test (ASan, UBSan, LSan)"
gcc "${csan[@]}" -I include -o "$work/pool_threads_asan" bindings/c/tests/pool_threads.c \
    "$lib" $native_libs -lpthread
"$work/pool_threads_asan"

step "multi-threaded stress test (ASan, UBSan, LSan)"
gcc "${csan[@]}" -I include -o "$work/stress_asan" bindings/c/tests/stress.c "$lib" $native_libs
MM_STRESS_SECONDS=2 "$work/stress_asan"

step "multi-threaded stress test (ThreadSanitizer)"
# The Rust library is not instrumented: its synchronisation (futexes,
# atomics) is invisible to ThreadSanitizer, so the memcpy/malloc/free it
# calls would be reported as races. Linking the shared library and setting
# ignore_noninstrumented_modules=1 makes ThreadSanitizer ignore those calls
# (from the uninstrumented module) while it still checks every access of the
# C program, including those of callbacks running on the library's threads.
# (valgrind's helgrind was tried instead: it cannot see the futex-based locks
# of Rust's std and tokio either, and reports some 20,000 "possible data
# races" inside them in a one-second run, so it is not used.)
tsan=(-std=c11 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "${warn[@]}" -O1 -fsanitize=thread -I include)
tsan_link=(-L target/release -Wl,-rpath,"$root/target/release" -lmodel_manager_c -lpthread)
gcc "${tsan[@]}" -o "$work/stress_tsan" bindings/c/tests/stress.c "${tsan_link[@]}"
TSAN_OPTIONS="ignore_noninstrumented_modules=1:halt_on_error=1" MM_STRESS_SECONDS=2 \
    "$work/stress_tsan"
# ... and it is not blind: a race planted between a callback and a host
# thread must be reported.
gcc "${tsan[@]}" -DMM_TSAN_CANARY -o "$work/stress_tsan_canary" bindings/c/tests/stress.c \
    "${tsan_link[@]}"
if TSAN_OPTIONS="ignore_noninstrumented_modules=1:halt_on_error=1" MM_STRESS_SECONDS=1 \
    "$work/stress_tsan_canary" > "$work/canary.log" 2>&1; then
    echo "ThreadSanitizer missed the planted race" >&2
    exit 1
fi
grep -q "WARNING: ThreadSanitizer: data race" "$work/canary.log"
grep -q "on_event" "$work/canary.log"
echo "ThreadSanitizer reported the planted race, as it should"

step "multi-threaded pool test (ThreadSanitizer)"
gcc "${tsan[@]}" -o "$work/pool_threads_tsan" bindings/c/tests/pool_threads.c "${tsan_link[@]}"
TSAN_OPTIONS="ignore_noninstrumented_modules=1:halt_on_error=1" "$work/pool_threads_tsan"

step "README: build and run the example exactly as written"
gcc -std=c11 -D_DEFAULT_SOURCE -D_XOPEN_SOURCE=700 "${warn[@]}" -I bindings/c/tests -I include \
    -o "$work/write_model" bindings/c/tests/write_model.c "$lib" $native_libs
"$work/write_model" "$work/model"
extract build-static > "$work/build-static.sh"
bash -euo pipefail "$work/build-static.sh"
target/quickstart "$work/model" > "$work/quickstart.out" 2> "$work/quickstart.progress"
grep -q "sample_size: 64" "$work/quickstart.out"
grep -q "t2: dtype 7, 256 bytes, shape \[64\], first value 14" "$work/quickstart.out"
rm -f target/quickstart
# Strict flags and sanitizers on the example too.
gcc "${csan[@]}" -I include -o "$work/quickstart_asan" bindings/c/examples/quickstart.c "$lib" $native_libs
"$work/quickstart_asan" "$work/model" > /dev/null 2>&1
if "$work/quickstart_asan" "$work/no-such-model" > /dev/null 2> "$work/quickstart.err"; then
    echo "quickstart succeeded on a missing model" >&2
    exit 1
fi
grep -q "MM_RESULT_MISSING_FILE" "$work/quickstart.err"

step "README: the pool example, as written (ASan, UBSan, LSan)"
extract pool-example > "$work/pool_example.c"
gcc "${csan[@]}" -I include -o "$work/pool_example" "$work/pool_example.c" "$lib" $native_libs
"$work/write_model" "$work/model2"
"$work/pool_example" "$work/model" "$work/model2" > "$work/pool_example.out"
grep -q "^encoder v1: 3 tensors" "$work/pool_example.out"
grep -q "^decoder v1: 3 tensors; .* 1 evictions" "$work/pool_example.out"
grep -q "^encoder v2: 3 tensors; .* 2 evictions" "$work/pool_example.out"

step "README: install with pkg-config, build against the shared library"
{ extract install; extract build-pkg-config; } > "$work/install.sh"
# Run the README's commands in a scratch copy of the paths they use, with a
# scratch $HOME, so that nothing lands in the repository or the real home.
tree="$work/tree"
mkdir -p "$tree/include" "$tree/bindings/c/examples" "$tree/target/release" "$work/home"
cp include/model_manager.h include/model_manager.hpp "$tree/include/"
cp bindings/c/model-manager.pc.in "$tree/bindings/c/"
cp bindings/c/examples/quickstart.c "$tree/bindings/c/examples/"
cp target/release/libmodel_manager_c.so target/release/libmodel_manager_c.a "$tree/target/release/"
(cd "$tree" && HOME="$work/home" bash -euo pipefail "$work/install.sh")
"$tree/quickstart" "$work/model" > "$work/quickstart-so.out" 2> /dev/null
grep -q "sample_size: 64" "$work/quickstart-so.out"
ldd "$tree/quickstart" > "$work/ldd.out"
grep -q "$work/home/.local/lib/libmodel_manager_c.so" "$work/ldd.out"

step "README: the C++ example"
extract cpp-example > "$work/example.cpp"
g++ -std=c++17 "${warn[@]}" -fsanitize=address,undefined -I include -o "$work/example_cpp" \
    "$work/example.cpp" "$lib" $native_libs
"$work/example_cpp" "$work/model" > "$work/example-cpp.out" 2> /dev/null
grep -q "sample_size 64" "$work/example-cpp.out"

step "native libraries match rustc's list"
reported="$(cargo rustc -q -p model-manager-c --release --crate-type staticlib -- \
    --print native-static-libs 2>&1 | sed -n 's/.*native-static-libs: //p' | tail -1)"
if [ "$reported" != "$native_libs" ]; then
    echo "rustc now reports: $reported" >&2
    echo "update test.sh, README.md and model-manager.pc.in (they say: $native_libs)" >&2
    exit 1
fi

step "destroy is bounded while a progress callback blocks (ASan, UBSan, LSan)"
# Last, so that every other suite has run: it fails until the core's
# shutdown_blocking is bounded whatever a progress callback does.
# MM_SKIP_BOUNDED_DESTROY=1 skips it; this script does not set it.
gcc "${csan[@]}" -I include -o "$work/bounded_destroy" bindings/c/tests/bounded_destroy.c \
    "$lib" $native_libs
"$work/bounded_destroy"

echo
echo "bindings/c: all tests passed"
