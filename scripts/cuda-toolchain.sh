#!/usr/bin/env bash
# A CUDA 13.0 build toolchain for `--features cuda` on a machine without CUDA
# (no toolkit, no driver, no GPU), made from NVIDIA's PyPI wheels only.
#
#     eval "$(bash scripts/cuda-toolchain.sh)"
#     cargo build --release -p model-manager-cli --features model-manager/cuda
#
# What it does, each step skipped when already done (safe to run every time):
#   1. a Python venv under $MM_CUDA_PREFIX (default
#      ~/.cache/model-manager/cuda-13.0) holding the pinned CUDA 13.0 wheels;
#      they share one toolkit-like prefix site-packages/nvidia/cu13/{bin,
#      include,lib,nvvm}. A marker file records the installed versions.
#   2. $MM_CUDA_PREFIX/root/lib: unversioned .so symlinks (libcudart.so, ...)
#      that the linker needs and the wheels do not ship.
#   3. $MM_CUDA_PREFIX/root/lib/stubs/libcuda.so: a stub of the driver API
#      (soname libcuda.so.1), generated from the cu* functions cudarc
#      declares, so that binaries link. Every stub function returns
#      CUDA_ERROR_NO_DEVICE (100): nothing pretends to work. Build-only; never
#      ship it. On a GPU machine the driver provides the real libcuda.so.1.
#   4. prints `export ...` lines on stdout (and nothing else); all progress
#      goes to stderr.
#
# Why these versions: nvcc must be 13.0 (a newer one writes PTX that the GPU
# machines' driver 580 cannot JIT), and cudarc cannot parse the newest
# wheel's version string, hence CUDARC_CUDA_VERSION=13000.
#
# Needs: python3 (with venv/ensurepip), gcc, network access to PyPI, and
# cargo's copy of cudarc's source (fetched with `cargo fetch` if missing).
set -euo pipefail

PREFIX="${MM_CUDA_PREFIX:-$HOME/.cache/model-manager/cuda-13.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# CUDA 13.0, pinned; the order is the marker file's content.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.1.0.3
    nvidia-curand==10.4.0.35
    nvidia-cuda-cccl==13.0.85
)
# Libraries linked by name (-lcudart ...) that need an unversioned symlink.
LINKED_LIBS=(cudart cublas cublasLt curand nvrtc)
CUDARC_CUDA_VERSION=13000
COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" # H100/H200

log() { printf '[cuda-toolchain] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$PREFIX"
VENV="$PREFIX/venv"
MARKER="$PREFIX/wheels.installed"

# --- 1. venv and wheels -----------------------------------------------------

if ! command -v python3 >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "python3 not found: installing python3 and python3-venv with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
    else
        die "python3 not found (apt-get install python3 python3-venv, as root)"
    fi
fi

# Debian splits venv/ensurepip out of python3: say which package is needed and
# install it when running as root.
ensure_venv_support() {
    python3 -c 'import ensurepip' 2>/dev/null && return 0
    local pkg
    pkg="python3.$(python3 -c 'import sys; print(sys.version_info.minor)')-venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "python3 has no ensurepip: installing $pkg with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
        die "python3 cannot create a venv (no ensurepip): install $pkg (or python3-venv) as root"
    fi
}

if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    ensure_venv_support
    log "creating venv $VENV"
    rm -rf "$VENV" "$MARKER"
    # Created in place: a venv's scripts name its path, so it cannot be moved.
    python3 -m venv "$VENV" >&2 || { rm -rf "$VENV"; die "python3 -m venv failed"; }
fi

wanted="$(printf '%s\n' "${WHEELS[@]}")"
if [ "$(cat "$MARKER" 2>/dev/null)" != "$wanted" ]; then
    log "installing ${#WHEELS[@]} CUDA 13.0 wheels (about 1.2 GB) into $VENV"
    rm -f "$MARKER"
    # --no-cache-dir: the wheels are big and are not needed twice.
    "$VENV/bin/python" -m pip install --quiet --no-cache-dir \
        --disable-pip-version-check "${WHEELS[@]}" >&2
    printf '%s\n' "$wanted" >"$MARKER"
else
    log "wheels already installed ($MARKER)"
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
CU="$SITE/nvidia/cu13"
[ -x "$CU/bin/nvcc" ] || die "no nvcc at $CU/bin/nvcc"
NVCC_VERSION="$("$CU/bin/nvcc" --version)" || die "$CU/bin/nvcc does not run"
case "$NVCC_VERSION" in
    *"release 13.0,"*) ;;
    *) die "$CU/bin/nvcc is not CUDA 13.0: $NVCC_VERSION" ;;
esac

# --- 2. unversioned symlinks ------------------------------------------------

ROOT="$PREFIX/root"
mkdir -p "$ROOT/lib/stubs"
for lib in "${LINKED_LIBS[@]}"; do
    # The shortest versioned name is the soname (libcudart.so.13, not .13.0.96).
    target="$(find "$CU/lib" -maxdepth 1 -name "lib$lib.so.*" -printf '%f\n' \
        | awk 'NR == 1 || length < length(best) { best = $0 } END { print best }')"
    [ -n "$target" ] || die "no lib$lib.so.* in $CU/lib"
    ln -sfn "$CU/lib/$target" "$ROOT/lib/lib$lib.so"
done

# --- 3. libcuda stub --------------------------------------------------------

# cudarc's version from the lock file; its source from cargo's registry.
CUDARC_VERSION="$(awk '/^name = "cudarc"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
    "$REPO/Cargo.lock")"
[ -n "$CUDARC_VERSION" ] || die "cudarc not in $REPO/Cargo.lock"
STUB="$ROOT/lib/stubs/libcuda.so"
STUB_MARKER="$ROOT/lib/stubs/from-cudarc-$CUDARC_VERSION"
if [ ! -f "$STUB" ] || [ ! -f "$STUB_MARKER" ]; then
    find_cudarc() {
        local dir
        for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$CUDARC_VERSION"; do
            [ -d "$dir" ] && { printf '%s\n' "$dir"; return; }
        done
        return 0
    }
    src="$(find_cudarc)"
    if [ -z "$src" ]; then
        log "fetching crates (cudarc $CUDARC_VERSION's source)"
        (cd "$REPO" && nice -n 19 cargo fetch --locked >&2)
        src="$(find_cudarc)"
    fi
    decls="$src/src/driver/sys/mod.rs"
    [ -f "$decls" ] || die "cannot find $decls"
    log "building the libcuda stub from $decls"
    c="$ROOT/lib/stubs/libcuda-stub.c"
    {
        echo "/* Generated by scripts/cuda-toolchain.sh from cudarc $CUDARC_VERSION:"
        echo " * a stub of the CUDA driver API for linking on machines without CUDA."
        echo " * Every function fails with CUDA_ERROR_NO_DEVICE. Never ship it. */"
        echo 'static const char msg[] = "stub libcuda.so (build-only): no CUDA driver on this machine";'
        echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = msg; return 0; }'
        echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE (stub libcuda)"; return 0; }'
        grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$decls" | awk '{ print $4 }' | sort -u \
            | grep -vxE 'cuGetError(String|Name)' \
            | sed 's/.*/int &(void) { return 100; }/'
    } >"$c"
    count="$(grep -c 'return 100' "$c")"
    [ "$count" -gt 400 ] || die "only $count cu* functions found in $decls"
    gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$STUB.tmp" "$c"
    mv "$STUB.tmp" "$STUB"
    ln -sfn libcuda.so "$ROOT/lib/stubs/libcuda.so.1"
    rm -f "$ROOT"/lib/stubs/from-cudarc-*
    touch "$STUB_MARKER"
    log "stub exports $((count + 2)) cu* functions"
fi

# --- 4. environment ---------------------------------------------------------

# Prepend $1 to the colon list $2 unless it is already in it.
prepend() {
    case ":$2:" in
        *":$1:"*) printf '%s' "$2" ;;
        ::) printf '%s' "$1" ;;
        *) printf '%s:%s' "$1" "$2" ;;
    esac
}
# At run time (tests, the CLI) binaries need libcuda.so.1: the driver's where
# there is one, the stub otherwise.
path="$(prepend "$CU/bin" "$PATH")"
ld="${LD_LIBRARY_PATH:-}"
# (The listing is read whole: grep -q in a pipe could cut it short, and
# pipefail would then call the driver missing.)
case "$(/sbin/ldconfig -p 2>/dev/null || true)" in
    *"libcuda.so.1 "*) ;;
    *) ld="$(prepend "$ROOT/lib/stubs" "$ld")" ;;
esac
ld="$(prepend "$CU/lib" "$ld")"

[[ $NVCC_VERSION =~ V([0-9.]+) ]] && log "ready: nvcc ${BASH_REMATCH[1]}, compute capability $COMPUTE_CAP"
printf 'export %s=%q\n' \
    CUDARC_CUDA_VERSION "$CUDARC_CUDA_VERSION" \
    CUDA_HOME "$CU" \
    CUDA_ROOT "$ROOT" \
    CUDA_COMPUTE_CAP "$COMPUTE_CAP" \
    PATH "$path" \
    LD_LIBRARY_PATH "$ld"
