"""Checkpoints and data shared by the export and compile tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
import torch

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.data import load_arrays
from bnnflow.models import build_model
from bnnflow.runs import save_checkpoint

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_MNIST_MISSING = "MNIST files not found in ../shared/data/mnist"


def under_ci() -> bool:
    """Whether this run is CI's (CI=true), which installs every tool the tests use."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(why: str) -> NoReturn:
    """A test that cannot run here for a missing tool, package or data file.

    On a user's machine it is skipped, saying what is missing; under CI it fails:
    CI must never test less than it claims (requirements/debian.txt lists the packages).
    """
    if under_ci():
        pytest.fail(f"under CI nothing may be skipped: {why}", pytrace=False)
    pytest.skip(why)


CPU = Path(__file__).resolve().parents[1] / "cpu"


def make_cpu(*targets: str, timeout: int = 900) -> str:
    """``make`` in cpu/; a failure fails the test with make's own output (its last 4,000 characters)."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(CPU), *targets],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"make {' '.join(targets)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def need_mnist() -> None:
    if not (SHARED_DATA / "mnist").is_dir():
        unavailable(SHARED_MNIST_MISSING)


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


def negate_batchnorm_scales(checkpoint: Path) -> int:
    """Every seventh channel of every BatchNorm gets a negative scale; returns how many."""
    from bnnflow.runs import load_checkpoint

    payload = load_checkpoint(checkpoint)
    state = payload["model_state"]
    flipped = 0
    for key in list(state):
        if key.endswith(".running_mean"):
            weight = state[key[: -len("running_mean")] + "weight"]
            if weight.numel() > 1:  # BatchNorm layers, not the scalar TensorNorm before the scores
                weight[::7] *= -1.0
                flipped += weight[::7].numel()
    save_checkpoint(checkpoint, payload)
    return flipped


def compiled_with_negative_scales(
    run: Path, name: str, dataset: str, steps: int, pixel_max: int, data_dir: Path | None = None
) -> Path:
    """A compile folder (Pynq-Z2) of a quick checkpoint whose BatchNorm scales are partly negative."""
    from bnnflow.export import export_model
    from bnnflow.hls import compile_model

    quick_checkpoint(run / "best.pt", name, dataset, steps, pixel_max, data_dir)
    assert negate_batchnorm_scales(run / "best.pt") > 0
    export_model(run, n_verify=20, data_dir=data_dir)
    folding = "fit" if name == "digits-mlp" else "published"
    return compile_model(run, "Pynq-Z2", folding=folding, n_verify=0, data_dir=data_dir, log=None).out_dir


_FINN_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def finn_reference(compile_dir: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FINN's classes and scores (hardware-layer graph, Python execution), once per design and images."""
    import hashlib

    from bnnflow.cpu.finn_reference import finn_outputs

    key = (str(compile_dir), hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest())
    if key not in _FINN_CACHE:
        result = finn_outputs(compile_dir, np.asarray(images))
        _FINN_CACHE[key] = (result.classes.astype(np.int32), result.scores.astype(np.int32))
    return _FINN_CACHE[key]
