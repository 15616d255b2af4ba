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
