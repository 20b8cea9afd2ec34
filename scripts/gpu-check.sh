#!/usr/bin/env bash
# The device check, in two halves:
#
#   scripts/gpu-check.sh build [-p CRATE ...]  # here: needs Rust, no GPU
#   scripts/gpu-check.sh run [ARGS]   # there: needs an NVIDIA GPU, no Rust
#
# `build` installs the CUDA 13.0 toolchain from PyPI wheels
# (scripts/cuda-toolchain.sh), builds tools/gpu-check with the `cuda`
# feature (release), and strips it to target/gpu-check/gpu_check: one
# binary (about 45 MB, most of it candle's kernels). In the same build, the
# Python extension with the `cuda` feature, laid out as an importable
# package folder in target/gpu-check/python. Both go into
# target/gpu-check.tar.gz (about 24 MB): the only file the GPU machine needs
# besides this script and tools/gpu-check/dlpack.py (`run` unpacks it).
# Arguments after `build` go to cargo (scripts/test.sh adds
# `-p model-manager-c`, so that the C library is built with the cuda
# feature in the same build).
#
# `run` finds the CUDA runtime libraries the binary links (libcudart,
# libcublas, libcublasLt, libcurand) in the Python packages of the machine
# (PyTorch's `nvidia/*` wheels) or the system, then runs the binary, which
# prints one Markdown table: load and a first unload (its release bounded
# at 16 MiB: CUDA keeps kernel modules once used), cancels mid-load, 20
# load/lease/matmul/unload cycles with device memory back within 2 MiB
# after each, the BERT of examples/embed on the GPU against the CPU, a C
# host reading a tensor through mm_lease_tensor_on_device, and load
# throughput against pinned host-to-device bandwidth and candle's loader;
# then the Python package (its folder made by `build`, read by the
# machine's PyTorch): torch.from_dlpack of a leased CUDA tensor shares the
# manager's device memory, copies hold no lease, an exported tensor holds
# the lease, device memory back within 2 MiB (tools/gpu-check/dlpack.py).
# ARGS go to the binary (--model-mib N, default 2048; --cycles N, default 20; --device
# cuda:N; --dir DIR, default $TMPDIR/mm-gpu-check). Exit status 1 if a
# check failed. The whole run stays under 9 minutes (a 2 GiB model).
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
    cargo build --release -p model-manager-gpu-check -p model-manager-python --features cuda "$@"
    out=$(dirname "$bin")
    mkdir -p "$out"
    strip -o "$bin" "${CARGO_TARGET_DIR:-target}/release/gpu_check"
    # The Python package as an importable folder (PYTHONPATH), for the
    # DLPack check: its pure-Python part and the extension built above.
    rm -rf "$out/python"
    mkdir -p "$out/python"
    cp -r bindings/python/python/model_manager "$out/python/"
    strip -o "$out/python/model_manager/_model_manager.abi3.so" \
        "${CARGO_TARGET_DIR:-target}/release/lib_model_manager.so"
    # What travels to the GPU machine (at most 64 MiB): both, compressed.
    tar -C "$out" -czf "$out.tar.gz" "$(basename "$bin")" python
    ls -l "$bin" "$out/python/model_manager/_model_manager.abi3.so" "$out.tar.gz"
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

# Carried as the archive `build` makes: unpacked next to it.
if [ ! -x "$bin" ] && [ -f "$(dirname "$bin").tar.gz" ]; then
    mkdir -p "$(dirname "$bin")"
    tar -C "$(dirname "$bin")" -xzf "$(dirname "$bin").tar.gz"
fi
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
status=0
timeout 470 "$bin" "$@" || status=$?

# The Python package's CUDA DLPack export, read by PyTorch (the GPU
# machine has it): rows of its own, on the same device.
device=cuda:0
prev=""
for arg in "$@"; do
    [ "$prev" = "--device" ] && device=$arg
    case "$arg" in --device=*) device=${arg#--device=} ;; esac
    prev=$arg
done
python_pkg="$(dirname "$bin")/python"
if [ ! -d "$python_pkg/model_manager" ]; then
    echo "| Python: CUDA DLPack export | not run | no package at $python_pkg (scripts/gpu-check.sh build) |"
elif ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "| Python: CUDA DLPack export | not run | python3 has no torch with CUDA |"
else
    PYTHONPATH="$python_pkg${PYTHONPATH:+:$PYTHONPATH}" \
        timeout 60 python3 tools/gpu-check/dlpack.py --device "$device" || status=1
fi
exit "$status"
