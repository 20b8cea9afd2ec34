#!/usr/bin/env bash
# The device check, in two halves:
#
#   scripts/gpu-check.sh build [-p CRATE ...]  # here: needs Rust, no GPU
#   scripts/gpu-check.sh run [ARGS]   # there: needs an NVIDIA GPU, no Rust
#
# `build` installs the CUDA 13.0 toolchain from PyPI wheels
# (scripts/cuda-toolchain.sh), builds tools/gpu-check with the `cuda`
# feature (release), and strips it to target/gpu-check/gpu_check: one
# binary (about 45 MB, most of it candle's kernels), the only file the GPU
# machine needs besides this script. Arguments after `build` go to cargo
# (scripts/test.sh adds `-p model-manager-c`, so that the C library is
# built with the cuda feature in the same build).
#
# `run` finds the CUDA runtime libraries the binary links (libcudart,
# libcublas, libcublasLt, libcurand) in the Python packages of the machine
# (PyTorch's `nvidia/*` wheels) or the system, then runs the binary, which
# prints one Markdown table: load and a first unload (its release bounded
# at 16 MiB: CUDA keeps kernel modules once used), cancels mid-load, 20
# load/lease/matmul/unload cycles with device memory back within 2 MiB
# after each, the BERT of examples/embed on the GPU against the CPU, a C
# host reading a tensor through mm_lease_tensor_on_device, and load
# throughput against pinned host-to-device bandwidth and candle's loader. ARGS go to the
# binary (--model-mib N, default 2048; --cycles N, default 20; --device
# cuda:N; --dir DIR, default $TMPDIR/mm-gpu-check). Exit status 1 if a
# check failed. The whole run stays under 8 minutes (a 2 GiB model).
#
# Environment: MM_GPU_CHECK_BIN (default target/gpu-check/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${MM_GPU_CHECK_BIN:-target/gpu-check/gpu_check}
mode=${1:-run}
[ $# -gt 0 ] && shift

case "$mode" in
build)
    toolchain=$(bash scripts/cuda-toolchain.sh)
    eval "$toolchain"
    cargo build --release -p model-manager-gpu-check --features cuda "$@"
    mkdir -p "$(dirname "$bin")"
    strip -o "$bin" "${CARGO_TARGET_DIR:-target}/release/gpu_check"
    ls -l "$bin"
    echo "needs at run time:"
    ldd "$bin" | awk '/=>/ { print "  " $1 }'
    exit 0
    ;;
run) ;;
*)
    echo "usage: scripts/gpu-check.sh build | run [--model-mib N] [--cycles N] [--device cuda:N] [--dir DIR]" >&2
    exit 2
    ;;
esac

if [ ! -x "$bin" ]; then
    echo "gpu-check: no binary at $bin: run 'scripts/gpu-check.sh build' on a machine with Rust" >&2
    exit 2
fi

# The CUDA libraries from pip packages: nvidia/<name>/lib (CUDA 12 layout),
# nvidia/cu13/lib (CUDA 13), torch/lib.
libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
roots = list(site.getsitepackages())
try:
    roots.append(site.getusersitepackages())
except Exception:
    pass
dirs = []
for root in roots:
    for pattern in ("nvidia/*/lib", "torch/lib"):
        dirs.extend(glob.glob(os.path.join(root, pattern)))
print(":".join(sorted({d for d in dirs if os.path.isdir(d)})))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
        --format=csv,noheader || true
fi
if ldd "$bin" | grep -q "not found"; then
    echo "gpu-check: libraries not found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    ldd "$bin" | grep "not found" >&2
    exit 2
fi
timeout 470 "$bin" "$@"
