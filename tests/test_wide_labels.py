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
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import made_once
from helpers import unavailable
from test_network_matrix import BOARD_CLI, ROOT, SOURCE

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from tests.user_data_files import class_images

CLASSES = 300
#: the classes with images (the others only have names): both sides of the one-byte limit
USED = (0, 7, 254, 255, 256, 257, 298, 299)
PER_CLASS_TRAIN, PER_CLASS_TEST = 24, 2


def _images(n: int, seed: int) -> np.ndarray:
    """``n`` 4 x 4 uint8 images of each class in USED: noise, and a bright 2 x 2 block at the class's place
    (``class_images`` places a class by its index, which on 4 x 4 leaves two places for all of them)."""
    x = np.concatenate([class_images(k, n, (4, 4), seed=seed) // 4 for k in USED])
    for i in range(len(USED)):
        top, left = divmod(i, 3)
        x[i * n : (i + 1) * n, top : top + 2, left : left + 2] = 230
    return x


def _dataset(path: Path) -> Path:
    """An npz archive of 1 x 4 x 4 images of the USED classes, and a name for each of the 300 classes."""
    np.savez(
        path,
        x_train=_images(PER_CLASS_TRAIN, 0), y_train=np.repeat(USED, PER_CLASS_TRAIN),
        x_test=_images(PER_CLASS_TEST, 1), y_test=np.repeat(USED, PER_CLASS_TEST),
        class_names=np.array([f"class-{k}" for k in range(CLASSES)]),
    )  # fmt: skip
    return path


def _through_compile(root: Path) -> dict[str, str]:
    """A tiny MLP (16 -> 32 -> 300) trained, exported and compiled with the CLI; the folders."""
    root.mkdir(parents=True)
    data = _dataset(root / "data.npz")
    source = root / "wide.py"
    source.write_text(SOURCE.format(in_bits=8, convs="[]", fcs="[32]"))
    run, n_test = root / "run", PER_CLASS_TEST * len(USED)
    argv = ["train", "--model", f"{source}:build", "--dataset", f"npz:{data}", "--run", str(run)]
    assert main([*argv, "--epochs", "8", "--batch-size", "16", "--no-progress", "--threads", "1"]) == 0
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

    n = PER_CLASS_TEST * len(USED)
    package = build_package(compiled, tmp_path / "deploy", n_images=n, log=None)
    ts = json.loads((package / "manifest.json").read_text())["testset"]
    assert ts["n"] == n and ts["n_classes"] == CLASSES and ts["labels"] == "testset/labels.u16", ts
    assert ts["class_names"][299] == "class-299"
    labels = np.fromfile(package / ts["labels"], dtype="<u2")
    assert sorted(set(labels.tolist())) == list(USED)
    golden = np.fromfile(package / ts["golden_classes"], dtype="<i4")
    scores = np.fromfile(package / ts["golden_scores"], dtype="<i4").reshape(n, CLASSES)
    assert np.array_equal(golden, scores.argmax(axis=1))
    # the accelerator's UINT16 class index carries classes above 255 (FINN's TopK for 300 classes)
    settings = json.loads((package / "driver" / "settings.json").read_text())["driver_information"]
    assert settings["io_shape_dict"]["odt"] == ["DataType['UINT16']"], settings["io_shape_dict"]
    assert (golden > 255).sum() >= 2 and (golden <= 255).sum() >= 2, golden
    # a weights-only update for the package reads its test set back as the board does
    from bnnflow.deploy.update import _deploy_testset

    manifest = json.loads((package / "manifest.json").read_text())
    _, read_back, _, _ = _deploy_testset(SimpleNamespace(deploy=package, deploy_manifest=manifest))
    assert np.array_equal(read_back, labels)
    if not BOARD_CLI.is_file():
        unavailable(f"no simulated board environment at {BOARD_CLI}: `make board-env` builds it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # this tree's board runtime and compiler side (the simulated accelerator), whichever tree the two
    # environments were installed from
    env["PYTHONPATH"] = str(ROOT / "host_driver" / "src")
    compiler = tmp_path / "python"
    compiler.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT / "src"} exec {sys.executable} "$@"\n')
    compiler.chmod(0o755)
    cmd = [str(BOARD_CLI), "bench", str(package), "--simulated-board", "--sim-exec", "python"]
    cmd += ["--compiler-python", str(compiler)]
    cmd += ["--batch-sizes", "1,3", "--warmup", "0", "--repeats", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((package / "bench" / "bench.json").read_text())
    assert report["simulated_board"] is True and report["agreement"] == "100%", report
    accuracy = float(np.mean(golden == labels))
    assert accuracy > 0.5 and report["fpga"]["accuracy"] == pytest.approx(accuracy), report["fpga"]
    assert report["fpga"]["agree_classes"] == n and report["fpga"]["first_mismatch"] is None
    cpu = report["cpu"]
    assert cpu["available"] and cpu["agree_classes"] == cpu["agree_scores"] == n, cpu
