"""A network with more classes than one byte holds (300), through package and the simulated board.

Packages of up to 256 classes keep ``testset/labels.u8``; this one's labels go
into ``testset/labels.u16``, FINN's TopK gives a UINT16 class index, and the
board's output stream, golden outputs and bench report carry class indices
and names above 255.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import made_once
from helpers import unavailable
from test_network_matrix import BOARD_CLI, ROOT, SOURCE

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from tests.user_data_files import class_images

CLASSES = 300
#: the test split holds two images of each of these classes: both sides of the one-byte limit
TEST_CLASSES = (0, 7, 254, 255, 256, 257, 298, 299)
SHAPE = (4, 4)


def _dataset(path: Path) -> Path:
    """An npz archive of 1 x 4 x 4 images, one per class to train, with class names."""
    x_train = np.concatenate([class_images(k, 1, SHAPE, seed=0) for k in range(CLASSES)])
    x_test = np.concatenate([class_images(k, 2, SHAPE, seed=1) for k in TEST_CLASSES])
    names = np.array([f"class-{k}" for k in range(CLASSES)])
    np.savez(
        path, x_train=x_train, y_train=np.arange(CLASSES), x_test=x_test,
        y_test=np.repeat(TEST_CLASSES, 2), class_names=names,
    )  # fmt: skip
    return path


def _through_compile(root: Path) -> dict[str, str]:
    """A tiny MLP (16 -> 32 -> 300) trained, exported and compiled with the CLI; the folders."""
    root.mkdir(parents=True)
    data = _dataset(root / "data.npz")
    source = root / "wide.py"
    source.write_text(SOURCE.format(in_bits=8, convs="[]", fcs="[32]"))
    run, n_test = root / "run", 2 * len(TEST_CLASSES)
    argv = ["train", "--model", f"{source}:build", "--dataset", f"npz:{data}", "--run", str(run)]
    assert main([*argv, "--epochs", "1", "--batch-size", "64", "--no-progress", "--threads", "1"]) == 0
    assert main(["export", str(run), "-n", str(n_test)]) == 0
    verify = ["--verify", str(n_test), "--verify-workers", "1"]
    assert main(["compile", str(run), "--folding", "fps:20000", *verify]) == 0
    return {"data": str(data), "run": str(run), "compiled": str(run / "compile" / "Pynq-Z2")}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(made_once(tmp_path_factory, "wide-labels", _through_compile)["compiled"])


@pytest.mark.xdist_group("wide-labels")
def test_300_classes_package_and_simulated_board(compiled: Path, tmp_path: Path) -> None:
    from bnnflow.deploy.package import build_package

    n = 2 * len(TEST_CLASSES)
    package = build_package(compiled, tmp_path / "deploy", n_images=n, log=None)
    ts = json.loads((package / "manifest.json").read_text())["testset"]
    assert ts["n"] == n and ts["n_classes"] == CLASSES and ts["labels"] == "testset/labels.u16", ts
    assert ts["class_names"][299] == "class-299"
    labels = np.fromfile(package / ts["labels"], dtype="<u2")
    assert sorted(set(labels.tolist())) == list(TEST_CLASSES)
    golden = np.fromfile(package / ts["golden_classes"], dtype="<i4")
    scores = np.fromfile(package / ts["golden_scores"], dtype="<i4").reshape(n, CLASSES)
    assert np.array_equal(golden, scores.argmax(axis=1))
    if not BOARD_CLI.is_file():
        unavailable(f"no simulated board environment at {BOARD_CLI}: `make board-env` builds it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT / "host_driver" / "src")  # this tree's board runtime, not the installed one
    cmd = [str(BOARD_CLI), "bench", str(package), "--simulated-board", "--sim-exec", "python"]
    cmd += ["--batch-sizes", "1,3", "--warmup", "0", "--repeats", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((package / "bench" / "bench.json").read_text())
    assert report["simulated_board"] is True and report["agreement"] == "100%", report
    assert report["fpga"]["agree_classes"] == n and report["fpga"]["first_mismatch"] is None
    cpu = report["cpu"]
    assert cpu["available"] and cpu["agree_classes"] == cpu["agree_scores"] == n, cpu
