"""Writes the PyTorch checkpoints the tests load (tests/pytorch.rs), with
torch.save as users do. Run with torch installed (any version >= 1.6):

    python tests/data/pytorch/make.py

The files are committed, so the tests run without torch; the values they
hold are described in tests/pytorch.rs.
"""
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))


def state():
    a = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    return {
        "a": a,
        "b": torch.arange(8, dtype=torch.float16) * 0.5,
        "c": torch.arange(8, dtype=torch.bfloat16),
        "d": torch.tensor([1, -2, 3], dtype=torch.int64),
        # A view sharing a's storage, from its 5th element.
        "tied": a[1],
        "p": torch.nn.Parameter(torch.full((2, 2), 3.0)),
        "scalar": torch.tensor(7.0),
        "empty": torch.zeros(0, 3),
    }


torch.save(state(), os.path.join(here, "weights.pt"))
torch.save({"state_dict": state(), "epoch": 3}, os.path.join(here, "checkpoint.pth"))
torch.save({"t": torch.arange(6, dtype=torch.float32).reshape(2, 3).t()},
           os.path.join(here, "transposed.pt"))
torch.save({"x": torch.ones(2)}, os.path.join(here, "legacy.pt"),
           _use_new_zipfile_serialization=False)
torch.save({"flag": torch.tensor([True, False])}, os.path.join(here, "bool.pt"))
