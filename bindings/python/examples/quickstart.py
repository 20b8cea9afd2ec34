"""Load a model without blocking the event loop, watch it load, read a
tensor without a copy, unload.

Usage: python quickstart.py [MODEL]   (a .safetensors file, a model or
diffusers pipeline folder, or a hub repo id in the local cache; without
one, a tiny model written to a temporary folder)
"""

import asyncio
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from model_manager import ModelManager, Progress, State


def tiny_model(folder: Path) -> Path:
    """A safetensors file with one 4x4 f32 tensor."""
    weight = np.arange(16, dtype=np.float32).reshape(4, 4)
    header = json.dumps({"weight": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    path = folder / "tiny.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + weight.tobytes())
    return path


async def main(source: str | Path) -> None:
    async with ModelManager(memory_budget=8 << 30) as manager:

        def on_progress(p: Progress) -> None:  # on this event loop's thread
            print(f"\rloading {p.fraction:.0%}", end="", file=sys.stderr)

        info = await manager.load_model_async(source, progress=on_progress)
        print(f"\n{info.tensors} tensors, {info.bytes} bytes, sample_size {manager.sample_size}")

        with manager.acquire() as lease:  # the model stays loaded while held
            component = lease.components()[0]
            name = lease.keys(component)[0]
            tensor = lease.tensor(component, name)
            array = np.from_dlpack(tensor)  # shares the manager's memory, read-only
            print(f"{component}/{name}: {tensor.dtype} {tensor.shape}, first value {array.flat[0]}")
            del array  # an exported array holds the lease too

        await manager.unload_model_async()  # waits for leases, frees the memory
        assert manager.current_state is State.IDLE
        assert manager.snapshot().resident_bytes == 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else tiny_model(Path(tmp))))
