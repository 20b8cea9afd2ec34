"""The Python package's DLPack export on a device, checked with PyTorch.

Run by `scripts/gpu-check.sh run` on the GPU machine (with the package folder
that `scripts/gpu-check.sh build` makes on PYTHONPATH); prints Markdown rows
(check, result, detail) and exits 1 if a check failed. `--device cpu` runs
the same checks against host memory (no device-memory row), which is how the
script itself is tried on a machine without a GPU.

    PYTHONPATH=target/gpu-check/python python3 tools/gpu-check/dlpack.py --device cuda:0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import struct
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

import model_manager as mm

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    header: dict[str, object] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        data = t.contiguous().flatten().view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def expected_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "w32": torch.randn(512, 256, generator=g),
        "w16": torch.randn(64, 96, generator=g).to(torch.float16),
        "wbf": torch.randn(33, 7, generator=g).to(torch.bfloat16),
    }


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def row(self, name: str, check: Callable[[], str]) -> None:
        try:
            detail = check()
            print(f"| Python: {name} | pass | {detail} |", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is a row
            self.failed += 1
            where = traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()
            print(f"| Python: {name} | FAIL | {type(e).__name__}: {e} ({where}) |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(device)
        ordinal = device.index or 0
        dl = (2, ordinal)
    else:
        dl = (1, 0)

    expected = expected_tensors()
    checks = Checks()
    print(f"\n| check (Python {sys.version.split()[0]}, torch {torch.__version__}) | result | detail |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        write_safetensors(path, expected)
        with mm.ModelManager(device=args.device) as manager:

            def shares() -> str:
                manager.load_model(path)
                with manager.acquire() as lease:
                    for name, want in expected.items():
                        t = lease.tensor("model", name)
                        assert t.__dlpack_device__() == dl, t.__dlpack_device__()
                        assert t.device == (str(device) if on_gpu else "cpu"), t.device
                        x = torch.from_dlpack(t)
                        assert x.device == device, x.device
                        assert x.dtype == want.dtype, x.dtype
                        assert x.data_ptr() == t.data_ptr, "a copy was made"
                        assert torch.equal(x.cpu(), want), f"{name}: values differ"
                        del x
                return f"f32, f16, bf16 on {device}, at the lease's addresses, values as written"

            checks.row("torch.from_dlpack shares the leased memory", shares)

            def computes() -> str:
                with manager.acquire() as lease:
                    sd = lease.state_dict("model")
                w = sd["w32"]
                x = torch.randn(8, 512, device=device)
                got = x @ w
                want = x @ expected["w32"].to(device)
                assert torch.allclose(got, want), "matmul differs"
                del sd, w, got, want
                return "state_dict's tensors used by a matmul on torch's stream, after the lease object is released"

            checks.row("state_dict feeds torch kernels", computes)

            def copies() -> str:
                with manager.acquire() as lease:
                    t = lease.tensor("model", "w16")
                    copied = torch.from_dlpack(t.__dlpack__(copy=True))
                    # From a GPU, another device: a copy without asking.
                    host = torch.from_dlpack(t.__dlpack__(dl_device=(1, 0), copy=None if on_gpu else True))
                    assert copied.device == device and copied.data_ptr() != t.data_ptr
                    assert host.device.type == "cpu"
                    if on_gpu:
                        try:
                            t.__dlpack__(dl_device=(1, 0), copy=False)
                        except BufferError:
                            pass
                        else:
                            raise AssertionError("copy=False to the host did not raise")
                assert manager.outstanding_leases == 0, "a copy holds the lease"
                assert torch.equal(copied.cpu(), expected["w16"]) and torch.equal(host, expected["w16"])
                return "copy=True: a new buffer on the device; dl_device=(1, 0): a host copy; neither holds the lease"

            checks.row("copies hold no lease", copies)

            def waits() -> str:
                with manager.acquire() as lease:
                    x = torch.from_dlpack(lease.tensor("model", "w32"))

                async def start() -> tuple[asyncio.Future[None], bool]:
                    task = asyncio.ensure_future(manager.unload_model_async())
                    await asyncio.sleep(0.2)
                    assert x.sum().isfinite(), "the tensor is readable while the unload waits"
                    return task, not task.done()

                loop = asyncio.new_event_loop()
                try:
                    task, waited = loop.run_until_complete(start())
                    del x
                    gc.collect()
                    loop.run_until_complete(asyncio.wait_for(task, 10))
                finally:
                    loop.close()
                assert waited, "the unload did not wait for the torch tensor"
                assert manager.current_state is mm.State.IDLE, manager.current_state
                return "the unload waited for a live torch tensor and ended after `del`"

            checks.row("an exported tensor holds the lease", waits)

            if on_gpu:

                def memory_back() -> str:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    before = torch.cuda.mem_get_info(device)[0]
                    for _ in range(3):
                        manager.load_model(path)
                        with manager.acquire() as lease:
                            sd = lease.state_dict("model")
                        (sd["w32"].float().sum()).item()
                        del sd
                        gc.collect()
                        manager.unload_model(timeout=10)
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    after = torch.cuda.mem_get_info(device)[0]
                    lost = before - after
                    assert lost <= 2 << 20, f"{lost / 2**20:.1f} MiB of device memory not back"
                    return f"3 load/export/unload cycles: {max(lost, 0) / 2**20:.2f} MiB not back (bound 2 MiB)"

                checks.row("device memory back after the exports are freed", memory_back)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
