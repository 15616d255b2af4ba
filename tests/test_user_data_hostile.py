"""Bad data through ``bnnflow train --dataset``: one line on stderr, exit 1, and no run folder."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from tests.user_data_files import arrays, write_folder, write_npz


def _train_error(capsys: pytest.CaptureFixture[str], tmp_path: Path, dataset: str, *extra: str) -> str:
    """``bnnflow train`` on ``dataset``: its one error line, no traceback, no run folder left."""
    run = tmp_path / "run"
    args = ["train", "--dataset", dataset, "--run", str(run), "--epochs", "1", "--no-progress", *extra]
    assert main(args) == 1, args
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("bnnflow: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert not run.exists()
    return errors[0]


def _mixed_sizes(root: Path) -> str:
    write_folder(root)
    write_folder(root, ("dog",), per_class=1, size=(9, 8), suffix=".bmp")
    return f"folder:{root}"


def _one_class(root: Path) -> str:
    return f"folder:{write_folder(root, ('cat',))}"


def _empty_class(root: Path) -> str:
    write_folder(root)
    (root / "gnu").mkdir()
    return f"folder:{root}"


def _unreadable(root: Path) -> str:
    write_folder(root)
    (root / "dog" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return f"folder:{root}"


def _not_an_image(root: Path) -> str:
    write_folder(root)
    (root / "emu" / "notes.txt").write_text("hello")
    return f"folder:{root}"


def _too_few_to_split(root: Path) -> str:
    write_folder(root)
    write_folder(root, ("gnu",), per_class=1)
    return f"folder:{root}"


def _npz(**overrides: object) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        root.mkdir()
        return f"npz:{write_npz(root / 'data.npz', **overrides)}"

    return make


A = arrays()
CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "mixed sizes": (_mixed_sizes, r"images of different sizes .*dog/000.bmp is 9x8.*pass --resize HxW"),
    "one class": (_one_class, r"1 class folder\(s\); give one subfolder per class \(2 or more\)"),
    "an empty class": (_empty_class, r"gnu: class 'gnu' holds no images"),
    "an unreadable image": (_unreadable, r"cannot read image .*dog/005.png"),
    "not an image": (_not_an_image, r"emu/notes.txt: not a PNG, JPEG or BMP image"),
    "a class too small to split": (_too_few_to_split, r"class 3 holds 1 image; a split needs 2 or more"),
    "a label out of range": (
        _npz(y_test=np.array([0, 1, 2, 7] + [0] * 11), class_names=np.array(["a", "b", "c"])),
        r"test label 7 \(image 3\) outside 0..2 for 3 classes",
    ),
    "a negative label": (_npz(y_train=-A["y_train"]), r"train label -1 \(image \d+\) outside 0..2"),
    "one class in an npz": (_npz(y_train=np.zeros(30, np.int64), y_test=np.zeros(15, np.int64)), r"1 class"),
    "an empty test split": (
        _npz(x_test=np.zeros((0, 1, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)),
        r"the test split is empty",
    ),
    "float pixels": (
        _npz(x_train=A["x_train"].astype(np.float32)),
        r"x_train is float32; store the raw pixels",
    ),
    "float labels": (
        _npz(y_train=A["y_train"].astype(np.float64)),
        r"y_train is float64; labels must be integers",
    ),
    "channels last without saying so": (
        _npz(x_train=A["x_train"].transpose(0, 2, 3, 1), x_test=A["x_test"].transpose(0, 2, 3, 1)),
        r"looks channels-last; store layout='NHWC'",
    ),
    "a missing array": (_npz(y_test=None), r"no array 'y_test'"),
    "labels for other images": (_npz(y_train=A["y_train"][:-1]), r"30 train images but 29 labels"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_is_one_line_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = CASES[case]
    line = _train_error(capsys, tmp_path, make(tmp_path / "data"), "--model", "digits-mlp")
    assert re.search(message, line), line


def test_other_bad_dataset_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(tmp_path / "big", size=(16, 16))
    line = _train_error(capsys, tmp_path, f"folder:{folder}")
    assert "model 'digits-mlp' takes 1x8x8 inputs, dataset folder:" in line and "16x16" in line
    assert main(["train", "--dataset", f"folder:{folder}", "--resize", "8x8", "--run", str(tmp_path / "ok"),
                 "--epochs", "1", "--no-progress", "--batch-size", "12"]) == 0  # fmt: skip
    capsys.readouterr()
    assert "not found" in _train_error(capsys, tmp_path, f"folder:{tmp_path / 'nowhere'}")
    assert "not found" in _train_error(capsys, tmp_path, f"npz:{tmp_path / 'nowhere.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert "cannot read" in _train_error(capsys, tmp_path, f"npz:{tmp_path / 'junk.npz'}")
    (tmp_path / "text.npz").write_text("label,pixels\n")
    assert "not a numpy .npz archive" in _train_error(capsys, tmp_path, f"npz:{tmp_path / 'text.npz'}")
    assert "--resize '8by8'" in _train_error(capsys, tmp_path, f"folder:{folder}", "--resize", "8by8")
    assert "apply to folder: and npz: datasets" in _train_error(capsys, tmp_path, "digits", "--resize", "8x8")
    assert "give the path" in _train_error(capsys, tmp_path, "folder:")
