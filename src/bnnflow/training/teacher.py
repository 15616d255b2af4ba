"""A float teacher for distillation (``bnnflow teacher``): a plain PyTorch MLP, exported with torch.export.

``bnnflow train --teacher FILE.pt2`` distils from it (``training.distill``). The
teacher sees what the student sees: ``data.ImageDataset``'s float pixels in
[0, 1], with the same augmentation. Its architecture is free (it is never
compiled): here Linear, BatchNorm and ReLU layers with dropout, trained with
torch's Adam and cosine learning-rate schedule.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from bnnflow import data as bdata
from bnnflow.errors import BnnflowError
from bnnflow.runs import atomic_write_bytes, atomic_write_json
from bnnflow.training.trainer import evaluate


@dataclass
class TeacherConfig:
    dataset: str
    out: str
    hidden: tuple[int, ...] = (1024, 1024, 1024)
    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    dropout: float = 0.2
    augment: str = "none"
    seed: int = 0
    data_dir: str | None = None
    download: bool = False
    limit_train: int | None = None
    threads: int = 0
    progress: bool = True


def float_mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...], dropout: float
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _check(cfg: TeacherConfig) -> None:
    if not cfg.out.endswith(".pt2"):
        raise BnnflowError(f"--out must name a .pt2 file (torch.export's format), got {cfg.out}")
    if Path(cfg.out).is_dir():
        raise BnnflowError(f"--out {cfg.out} is a folder")
    if not cfg.hidden or min(cfg.hidden) < 1:
        raise BnnflowError("--hidden must be comma-separated positive widths, e.g. 1024,1024")
    if not 0.0 <= cfg.dropout < 1.0:
        raise BnnflowError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.lr < math.inf:
        raise BnnflowError(f"--lr must be a finite positive number, got {cfg.lr}")


def train_teacher(cfg: TeacherConfig) -> dict[str, Any]:
    """Train the float MLP, export it to ``cfg.out`` (and ``<out>.json``); returns that record."""
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = bdata.open_dataset(bdata.canonical_name(cfg.dataset), cfg.data_dir, cfg.download)
    ident = data.identity
    keep = np.sort(bdata.test_subset(data.y_train, cfg.limit_train, cfg.seed))
    train_set = bdata.ImageDataset(
        data.x_train[keep], data.y_train[keep], ident.pixel_max, augment=cfg.augment
    )
    test_loader = DataLoader(bdata.ImageDataset(data.x_test, data.y_test, ident.pixel_max), batch_size=1000)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True)
    model = float_mlp(ident.input_shape, ident.num_classes, cfg.hidden, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sched.step()
        acc = evaluate(model, test_loader, torch.device("cpu"))[1]
        if cfg.progress:
            print(f"teacher epoch {epoch + 1:3d}/{cfg.epochs}  test {100 * acc:6.2f}%", flush=True)
    model.eval()
    example = torch.stack([train_set[i][0] for i in range(min(4, len(train_set)))])
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(cfg.out, buf.getvalue())
    record = {
        "file": str(Path(cfg.out).resolve()),
        "dataset": ident.name,
        "hidden": list(cfg.hidden),
        "epochs": cfg.epochs,
        "augment": cfg.augment,
        "seed": cfg.seed,
        "test_acc": acc,
        "train_seconds": time.perf_counter() - started,
    }
    atomic_write_json(cfg.out + ".json", record)
    return record
