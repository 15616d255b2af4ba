"""Checkpoints and data shared by the export and compile tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.data import load_arrays
from bnnflow.models import build_model
from bnnflow.runs import save_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def quick_checkpoint(
    path: Path,
    name: str,
    dataset: str,
    steps: int,
    pixel_max: int,
    data_dir: Path | None = None,
    split: str = "train",
    skip: int = 0,
) -> Path:
    """A few Adam steps on real images: BatchNorm statistics set, predictions spread over classes."""
    torch.manual_seed(0)
    model = build_model(name)
    images, labels = load_arrays(dataset, split, data_dir=data_dir, limit=skip + 1024)
    images, labels = images[skip:], labels[skip:]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        idx = rng.choice(len(labels), 64, replace=False)
        x = torch.from_numpy(images[idx].astype(np.float32) / pixel_max)
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_checkpoint(path, {"model": name, "dataset": dataset, "model_state": model.state_dict(), "epoch": 3})
    return path


def ensure_model_file(compile_dir: Path) -> Path:
    """<compile_dir>/model.bnn: the compile stage's, or a stand-in with bnncpu.h's 64-byte header only.

    The deployment package treats the CPU engine's model file as opaque (it checks
    the header of cpu/include/bnncpu.h and copies the file); the stand-in lets the
    deployment tests run until `bnnflow compile` writes the real file, which is then
    used as it is. Nothing reads the stand-in's (absent) layers.
    """
    import struct
    import zlib

    path = Path(compile_dir) / "model.bnn"
    if not path.exists():
        header = bytearray(64)
        header[:8] = b"BNNCPU\0\0"
        struct.pack_into("<HHIQ", header, 8, 1, 0, 64, 64)  # version 1.0, header and file bytes
        struct.pack_into("<I", header, 24, zlib.crc32(bytes(header)))
        path.write_bytes(bytes(header))
    return path
