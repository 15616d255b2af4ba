"""Outputs against the golden outputs: where they first differ, and how many differ."""

from __future__ import annotations

from typing import Any

import numpy as np


def first_mismatch(
    golden: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    what: str,
    scores: bool = False,
    names: list[str] | None = None,
) -> dict[str, Any] | None:
    """The lowest image index where ``got`` differs from the golden outputs, described (with the
    class names, where given)."""
    bad = np.flatnonzero(np.any(golden != got, axis=1) if scores else golden != got)
    if not len(bad):
        return None
    i = int(bad[0])
    if scores:
        j = int(np.flatnonzero(golden[i] != got[i])[0])
        text = f"image {i}: {what} score {j} is {int(got[i, j])}, golden {int(golden[i, j])}"
    else:
        text = (
            f"image {i} (label {_named(int(labels[i]), names)}): {what} says class "
            f"{_named(int(got[i]), names)}, golden {_named(int(golden[i]), names)}"
        )
    return {"image": i, "count": int(len(bad)), "text": text}


def _named(label: int, names: list[str] | None) -> str:
    """``3`` or, with class names, ``3 (cat)``; a name that only repeats the number is left out."""
    named = names and 0 <= label < len(names) and names[label] != str(label)
    return f"{label} ({names[label]})" if named else str(label)


def engine_mismatch(
    classes: np.ndarray, scores: np.ndarray, golden_classes: np.ndarray, golden_scores: np.ndarray,
    labels: np.ndarray, names: list[str] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The CPU engine's first difference: in a class, else in a score."""
    return first_mismatch(golden_classes, classes, labels, "the CPU engine", names=names) or first_mismatch(
        golden_scores, scores, labels, "the CPU engine's", scores=True
    )


def verdict(fpga: dict[str, Any], cpu: dict[str, Any]) -> bool:
    """Both sides equal the golden outputs on every image (the CPU only where it ran)."""
    return fpga["first_mismatch"] is None and (not cpu["available"] or cpu["first_mismatch"] is None)
