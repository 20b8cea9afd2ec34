"""Time until every tensor of one safetensors file (1 GiB by default, in the
page cache) is in memory and usable from Python: model-manager
(`load_model` + `numpy.from_dlpack` of every tensor) against
`safetensors.numpy.load_file`, and `safetensors.torch.load_file` + touching
every page when torch is installed. One run of each after a warm-up read;
the figures are the best of `--repeat` runs.

    pip install safetensors==0.8.0 numpy==2.4.6   # the baseline
    python bench.py [--mib 1024] [--repeat 3] [--file PATH]

Build the package in release (`pip install ./bindings/python`) for figures
worth reporting: a dev build does not optimize the core.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import model_manager as mm


def write_file(path: Path, mib: int) -> None:
    """`mib` MiB of f32 tensors of 16 MiB each, random bytes."""
    n = max(1, mib // 16)
    per = (16 << 20) // 4
    header: dict[str, object] = {}
    for i in range(n):
        header[f"layer.{i}.weight"] = {"dtype": "F32", "shape": [per], "data_offsets": [i * per * 4, (i + 1) * per * 4]}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _ in range(n):
            f.write(rng.standard_normal(per, dtype=np.float32).tobytes())


def best(repeat: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "bench.safetensors"
        if args.file is None:
            write_file(path, args.mib)
        size = os.path.getsize(path)
        with open(path, "rb") as f:  # into the page cache
            while f.read(64 << 20):
                pass
        results: list[tuple[str, float]] = []

        manager = mm.ModelManager()

        def model_manager() -> None:
            manager.load_model(path)
            with manager.acquire() as lease:
                arrays = [np.from_dlpack(lease.tensor(c, k)) for c in lease.components() for k in lease.keys(c)]
                assert arrays
                del arrays
            manager.unload_model()

        results.append(("model-manager: load_model + from_dlpack", best(args.repeat, model_manager)))
        manager.shutdown()

        try:
            from safetensors.numpy import load_file as np_load
        except ImportError:
            print("safetensors is not installed: pip install safetensors")
        else:
            results.append(("safetensors.numpy.load_file", best(args.repeat, lambda: np_load(path) and None)))
        try:
            import torch
            from safetensors.torch import load_file as torch_load
        except ImportError:
            print("torch is not installed: the torch baseline is skipped")
        else:

            def torch_touch() -> None:
                tensors = torch_load(path)
                for t in tensors.values():
                    t.sum()  # every page read

            results.append(("safetensors.torch.load_file + touch", best(args.repeat, torch_touch)))

        print(f"\n{size / (1 << 30):.2f} GiB, best of {args.repeat}\n")
        print("| loader | seconds | GiB/s |")
        print("|---|---:|---:|")
        for name, seconds in results:
            print(f"| {name} | {seconds:.3f} | {size / seconds / (1 << 30):.2f} |")


if __name__ == "__main__":
    main()
