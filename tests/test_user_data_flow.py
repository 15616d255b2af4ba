"""A user's image folder through every stage: ``bnnflow train --dataset folder:...`` (one epoch of the
named digits MLP on 8x8 grayscale images of 3 classes), export, compile with its verification,
``bnnflow cpu`` on the folder's test split, and the package with the folder's class names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.cli import main
from bnnflow.data import legacy_identity, write_identity
from tests.user_data_files import write_folder

CLASSES = ("cat", "dog", "emu")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, run folder) after train, export and compile; 10 test images per class."""
    root = tmp_path_factory.mktemp("user") / "pets"
    write_folder(root, CLASSES, per_class=50)  # 20% to test: 10 per class
    run = root.parent / "run"
    argv = ["train", "--model", "digits-mlp", "--dataset", f"folder:{root}", "--run", str(run)]
    assert main([*argv, "--epochs", "1", "--batch-size", "10", "--no-progress", "--threads", "1"]) == 0
    assert main(["export", str(run), "-n", "12"]) == 0
    assert (
        main(["compile", str(run), "--folding", "fps:20000", "--verify", "12", "--verify-workers", "1"]) == 0
    )
    return root, run


def test_every_stage_takes_the_folder_from_the_run(
    folder_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, run = folder_run
    compiled = run / "compile" / "Pynq-Z2"
    for folder in (run, run / "export", compiled):  # the record travels with each stage's folder
        record = json.loads((folder / "dataset.json").read_text())
        assert record["name"] == f"folder:{root.resolve()}" and record["class_names"] == list(CLASSES)
    verification = json.loads((compiled / "verification.json").read_text())
    assert verification["n_images"] == 12 and verification["labels_identical"] == 12
    capsys.readouterr()
    assert main(["cpu", str(run), "--finn", "30"]) == 0
    out = capsys.readouterr().out
    assert (
        f"on 30 folder:{root.resolve()} test images" in out
        and "classes                  3: cat, dog, emu" in out
    )
    report = json.loads((compiled / "cpu.json").read_text())
    assert report["n_images"] == 30 and report["num_classes"] == 3 and report["finn_classes_agree"] == 30
    assert set(report["class_accuracy"]) == set(CLASSES)
    assert report["accuracy"] > 0.5  # learnt: a bright square at its class's place


def test_a_model_against_another_datasets_classes_is_one_line(
    folder_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 3-class design told it is a 10-class dataset's: refused, not evaluated to a wrong accuracy."""
    _, run = folder_run
    other = tmp_path / "compile"
    shutil.copytree(run / "compile" / "Pynq-Z2", other)
    (other / "cpu.json").unlink(missing_ok=True)  # the first test's report
    write_identity(other, legacy_identity("digits"))
    assert main(["cpu", str(other), "--finn", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has 3 classes, dataset digits has 10" in err, err
    assert not (other / "cpu.json").exists()


def test_the_package_carries_a_stratified_subset_and_the_class_names(
    folder_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from bnnflow.deploy.package import build_package

    _, run = folder_run
    out = build_package(run, tmp_path / "deploy", n_images=6, log=None)
    manifest = json.loads((out / "manifest.json").read_text())
    ts = manifest["testset"]
    assert ts["class_names"] == list(CLASSES) and ts["n_classes"] == 3 and ts["n"] == 6
    labels = np.fromfile(out / ts["labels"], dtype=np.uint8)
    assert np.bincount(labels, minlength=3).tolist() == [2, 2, 2]  # the test split is class-ordered on disk
