"""Small synthetic image folders and npz archives for the user-data tests.

Each class is a bright square at its own place on a noisy background, so a
tiny network learns it in one epoch and a wrong label order shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def class_images(
    label: int, n: int, size: tuple[int, int] = (8, 8), channels: int = 1, seed: int = 0
) -> np.ndarray:
    """``n`` uint8 images (N, H, W) or (N, H, W, C) of class ``label``."""
    rng = np.random.default_rng(seed * 1000 + label)
    h, w = size
    x = rng.integers(0, 60, size=(n, h, w, channels), dtype=np.uint8)
    top, left = (label * 3) % max(1, h - 2), (label * 2) % max(1, w - 2)
    x[:, top : top + 3, left : left + 3, :] = 230
    return x[..., 0] if channels == 1 else x


def write_folder(
    root: Path,
    classes: Sequence[str] = ("cat", "dog", "emu"),
    per_class: int = 12,
    size: tuple[int, int] = (8, 8),
    channels: int = 1,
    suffix: str = ".png",
) -> Path:
    """``root/<class>/<i><suffix>``: one subfolder of images per class."""
    from PIL import Image

    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(class_images(label, per_class, size, channels)):
            Image.fromarray(img).save(root / name / f"{i:03d}{suffix}")
    return root


def arrays(n_classes: int = 3, per_class: int = 10, size: tuple[int, int] = (8, 8)) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test (NCHW uint8, class-ordered) as an npz archive holds them."""
    out: dict[str, np.ndarray] = {}
    for split, n, seed in (("train", per_class, 0), ("test", per_class // 2, 1)):
        x = np.concatenate([class_images(c, n, size, seed=seed) for c in range(n_classes)])[:, None]
        out[f"x_{split}"] = x
        out[f"y_{split}"] = np.repeat(np.arange(n_classes), n).astype(np.int64)
    return out


def write_npz(path: Path, **overrides: object) -> Path:
    data: dict[str, object] = {**arrays(), **overrides}
    np.savez(path, **{k: v for k, v in data.items() if v is not None})  # type: ignore[arg-type]
    return path
