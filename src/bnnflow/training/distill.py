"""Knowledge distillation: a trained teacher's outputs as a second target for the binary network.

The binary network (the student) is unchanged, so FINN maps it as before; only
its loss changes. With weight ``a`` and temperature ``T`` the student learns from

    (1 - a) * cross_entropy(student, labels) + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))

as in Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network"
(2015); the ``T^2`` keeps the soft term's gradients at the scale of the hard one
as ``T`` changes.

The teacher is either a network saved with ``torch.export.save`` (a ``.pt2``
file: any PyTorch model, a float one included, exported with a dynamic batch
dimension) or a bnnflow run folder or checkpoint (a larger binary network). It
receives the same input tensors as the student (``data.ImageDataset``: float
pixels in [0, 1], shape (N, C, H, W), after augmentation) and must return one
logit per class. ``benchmarks/float_teacher.py`` trains and exports a float
teacher for a dataset.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.errors import BnnflowError
from bnnflow.runs import load_model


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def teacher_file(path: str) -> Path:
    """The file that holds the teacher: the ``.pt2`` itself, or a run folder's checkpoint."""
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt" if (p / "best.pt").is_file() else p / "checkpoint.pt"
    if not p.is_file():
        raise BnnflowError(f"--teacher {path}: no such file (a .pt2 from torch.export.save, or a run folder)")
    return p


def load_teacher(path: str, example: torch.Tensor, num_classes: int) -> nn.Module:
    """The teacher in eval mode, without gradients, checked on ``example`` for one logit per class."""
    file = teacher_file(path)
    if file.suffix == ".pt2" and not zipfile.is_zipfile(file):  # torch would also log a warning
        raise BnnflowError(f"--teacher {path}: not a torch.export file (.pt2 files are zip archives)")
    try:
        if file.suffix == ".pt2":
            teacher = torch.export.load(file).module()
        else:
            teacher = load_model(file)[0]
    except BnnflowError:
        raise
    except Exception as exc:  # torch's loaders raise many kinds; the user needs one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BnnflowError(f"--teacher {path}: cannot load it: {first}") from None
    try:
        teacher.eval()
    except NotImplementedError:  # an exported program's module has no train/eval switch (exported in eval)
        pass
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            out = teacher(example)
    except Exception as exc:  # a teacher exported for other shapes fails inside torch
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BnnflowError(
            f"--teacher {path}: fails on this data's input of shape {tuple(example.shape)}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (example.shape[0], num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BnnflowError(
            f"--teacher {path}: returns {shape} for a batch of {example.shape[0]}, "
            f"not ({example.shape[0]}, {num_classes}): one logit per class of this dataset"
        )
    return teacher


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``(1 - weight) * CE + weight * T^2 * KL(teacher_T || student_T)``, averaged over the batch.

    ``label_smoothing`` is passed to the hard term's ``F.cross_entropy``."""
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    if weight == 0:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * t * t * soft
