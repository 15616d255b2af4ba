"""The test set's labels file: one byte per label up to 256 classes, two (little-endian) above."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bnnflow_board.deployformat import (
    GOLDEN_CLASSES,
    GOLDEN_SCORES,
    TESTSET_IMAGES,
    TESTSET_LABELS,
    TESTSET_LABELS_WIDE,
    FormatError,
    labels_file,
)
from bnnflow_board.errors import BoardError
from bnnflow_board.package import Package

N, SHAPE = 5, (1, 2, 2)


def _package(root: Path, n_classes: int, labels: np.ndarray, name: str, dtype: str) -> Package:
    """A package folder holding only its test set, as ``bnnflow package`` lays it out."""
    rng = np.random.default_rng(0)
    scores = rng.integers(-50, 50, size=(N, n_classes)).astype("<i4")
    (root / "testset").mkdir(parents=True)
    arrays = {
        TESTSET_IMAGES: rng.integers(0, 256, size=(N, *SHAPE)).astype(np.uint8),
        name: np.asarray(labels).astype(dtype),
        GOLDEN_CLASSES: scores.argmax(axis=1).astype("<i4"),
        GOLDEN_SCORES: scores,
    }
    for rel, array in arrays.items():
        (root / rel).write_bytes(array.tobytes())
    testset = {
        "n": N, "image_shape": list(SHAPE), "n_classes": n_classes, "dataset": "synthetic",
        "images": TESTSET_IMAGES, "labels": name, "golden_classes": GOLDEN_CLASSES,
        "golden_scores": GOLDEN_SCORES,
    }  # fmt: skip
    return Package(root, {"testset": testset})


def test_the_labels_file_by_class_count() -> None:
    assert labels_file(2) == labels_file(256) == (TESTSET_LABELS, "u1")
    assert labels_file(257) == labels_file(65536) == (TESTSET_LABELS_WIDE, "<u2")
    with pytest.raises(FormatError, match="65,537 classes: .* at most 65,536"):
        labels_file(65537)


def test_two_byte_labels_read(tmp_path: Path) -> None:
    labels = np.array([0, 255, 256, 299, 258])
    ts = _package(tmp_path, 300, labels, TESTSET_LABELS_WIDE, "<u2").testset()
    assert ts.labels.tolist() == labels.tolist() and ts.labels.dtype == np.int64
    assert ts.golden_scores.shape == (N, 300) and ts.class_names[299] == "299"
    # and an existing one-byte package as before
    ts = _package(tmp_path / "u8", 10, [0, 9, 3, 3, 1], TESTSET_LABELS, "u1").testset()
    assert ts.labels.tolist() == [0, 9, 3, 3, 1]


def test_a_label_above_the_class_count_is_refused(tmp_path: Path) -> None:
    pkg = _package(tmp_path, 300, [0, 1, 300, 2, 3], TESTSET_LABELS_WIDE, "<u2")
    with pytest.raises(BoardError, match="label 300 of image 2 is not one of the 300 classes"):
        pkg.testset()


def test_an_unknown_labels_file_is_refused(tmp_path: Path) -> None:
    pkg = _package(tmp_path, 300, [0, 1, 2, 3, 4], "testset/labels.i32", "<i4")
    with pytest.raises(BoardError) as err:
        pkg.testset()
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "manifest.json")), message
    assert "labels.i32: unknown file type '.i32', not one of .u8, .u16" in message, message


@pytest.mark.parametrize(
    ("name", "dtype", "held"),
    [(TESTSET_LABELS_WIDE, "u1", 2), (TESTSET_LABELS_WIDE, "<u4", 10), (TESTSET_LABELS, "<u2", 10)],
)
def test_a_labels_file_of_the_wrong_size_is_refused(tmp_path: Path, name: str, dtype: str, held: int) -> None:
    """Labels written one byte each into labels.u16 (5 bytes: 2 whole values), four bytes each into
    labels.u16, or two each into labels.u8."""
    pkg = _package(tmp_path, 10, [0, 1, 2, 3, 4], name, dtype)
    with pytest.raises(BoardError, match=re.escape(f"{name} holds {held} values, the manifest says {N}")):
        pkg.testset()
