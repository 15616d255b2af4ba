"""Tests for bnnflow.export: QONNX export, its verification, and ``bnnflow export``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, need_mnist, quick_checkpoint

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.data import DATASET_FILE
from bnnflow.errors import BnnflowError
from bnnflow.export import (
    EXPORT_FILE,
    LOGITS_FILE,
    MODEL_FILE,
    VERIFICATION_FILE,
    PixelScale,
    check_supported_layers,
    export_model,
    export_network,
    run_qonnx,
)
from bnnflow.models import binarize_weights_, build_model, get_spec
from bnnflow.runs import load_model

MNIST_DIR = SHARED_DATA
SRC = Path(__file__).resolve().parents[1] / "src"


def _arrays(dataset: str, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from bnnflow.data import load_arrays

    data_dir = MNIST_DIR if dataset == "mnist" else None
    return load_arrays(dataset, split, data_dir=data_dir, limit=limit)


def _train_checkpoint(
    path: Path, name: str, dataset: str, steps: int, pixel_max: int, split: str = "train", skip: int = 0
) -> Path:
    data_dir = MNIST_DIR if dataset == "mnist" else None
    return quick_checkpoint(path, name, dataset, steps, pixel_max, data_dir, split, skip)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "digits"
    _train_checkpoint(run / "best.pt", "digits-mlp", "digits", steps=40, pixel_max=16)
    return run


@pytest.fixture(scope="module")
def digits_export(digits_run: Path):
    return export_model(digits_run)  # default: all 360 test images, runs/<name>/export


@pytest.fixture(scope="module")
def tfc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_mnist()
    path = tmp_path_factory.mktemp("tfc") / "best.pt"
    # Trained on test images 200.. so only the small test file is parsed; verification
    # uses test images 0..199, which training never saw.
    return _train_checkpoint(path, "tfc", "mnist", steps=25, pixel_max=255, split="test", skip=200)


# --------------------------------------------------------------------------- exports that pass
def test_digits_export_writes_verified_files(digits_run: Path, digits_export) -> None:
    out = digits_run / "export"
    assert digits_export.out_dir == out
    assert digits_export.model_path == out / MODEL_FILE and digits_export.logits_path == out / LOGITS_FILE
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MODEL_FILE, LOGITS_FILE, VERIFICATION_FILE, EXPORT_FILE, DATASET_FILE]
    )
    assert json.loads((out / DATASET_FILE).read_text())["name"] == "digits"  # the run's dataset, for compile
    report = json.loads((out / VERIFICATION_FILE).read_text())
    assert report["n_images"] == 360  # the whole digits test split
    assert report["max_abs_logit_diff"] <= 1e-4
    assert report["label_agreement"] == 1.0 and report["topk_agreement"] == 1.0
    assert report["accuracy_qonnx"] == report["accuracy_pytorch"] > 0.5  # a few steps learn digits
    meta = json.loads((out / EXPORT_FILE).read_text())
    assert meta["model"] == "digits-mlp" and meta["dataset"] == "digits"
    assert meta["input_shape"] == [1, 1, 8, 8] and meta["pixel_max"] == 16
    assert meta["pixel_scale"] == pytest.approx(1 / 16)
    assert meta["checkpoint"] == str((digits_run / "best.pt").resolve())
    assert meta["versions"]["brevitas"] == "0.13.0" and meta["versions"]["qonnx"] == "1.0.0"
    assert not [p for p in digits_run.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_input_is_uint8_and_output_is_topk(digits_export) -> None:
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    for path in (digits_export.model_path, digits_export.logits_path):
        graph = ModelWrapper(str(path))
        assert graph.get_tensor_datatype(graph.graph.input[0].name) == DataType["UINT8"]
        assert graph.get_tensor_shape(graph.graph.input[0].name) == [1, 1, 8, 8]
    deployed = ModelWrapper(str(digits_export.model_path))
    assert deployed.graph.node[-1].op_type == "TopK"
    assert deployed.get_tensor_shape(deployed.graph.output[0].name) == [1, 1]
    logits = ModelWrapper(str(digits_export.logits_path))
    assert "TopK" not in [n.op_type for n in logits.graph.node]
    # pixel scaling is inside the graph, before the network's own 2x - 1
    first = deployed.find_consumer(deployed.graph.input[0].name)
    assert first.op_type == "Mul"
    assert float(deployed.get_initializer(first.input[1])) == pytest.approx(1 / 16)


def test_topk_equals_pytorch_argmax(digits_run: Path, digits_export) -> None:
    images, _ = _arrays("digits", "test", limit=50)
    model, _ = load_model(digits_run)
    with torch.no_grad():
        ref = model(torch.from_numpy(images.astype(np.float32) / 16)).numpy()
    top = run_qonnx(digits_export.model_path, images, batch_size=16)  # 16 + 16 + 16 + 2: two batch sizes
    assert top.shape == (50, 1)
    np.testing.assert_array_equal(top[:, 0], ref.argmax(axis=1))
    assert len(set(top[:, 0].tolist())) > 3  # not a constant predictor
    logits = run_qonnx(digits_export.logits_path, images)
    assert np.max(np.abs(logits - ref)) <= 1e-4


def test_tfc_export_on_mnist(tfc_checkpoint: Path, tmp_path: Path) -> None:
    result = export_model(tfc_checkpoint, out_dir=tmp_path / "tfc_export", n_verify=200, data_dir=MNIST_DIR)
    report = result.verification
    assert report["n_images"] == 200 and report["max_abs_logit_diff"] <= 1e-4
    assert report["label_agreement"] == 1.0 and report["topk_agreement"] == 1.0
    assert report["accuracy_pytorch"] > 0.3
    meta = json.loads(result.export_path.read_text())
    assert meta["input_shape"] == [1, 1, 28, 28] and meta["pixel_max"] == 255


def test_cnv_export(tmp_path: Path) -> None:
    """CNV with BatchNorm statistics from real-looking inputs; few images keep it quick."""
    torch.manual_seed(0)
    model = build_model("cnv")
    binarize_weights_(model)
    rng = np.random.default_rng(0)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.from_numpy(rng.random((32, 3, 32, 32), dtype=np.float32)))
    model.eval()
    images = rng.integers(0, 256, (24, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 24).astype(np.int64)
    result = export_network(
        model,
        tmp_path / "cnv",
        model_name="cnv",
        dataset="cifar10",
        images=images,
        labels=labels,
        batch_size=10,
    )
    assert result.verification["max_abs_logit_diff"] <= 1e-4
    assert result.verification["topk_agreement"] == 1.0
    from qonnx.core.modelwrapper import ModelWrapper

    graph = ModelWrapper(str(result.model_path))
    assert graph.get_tensor_shape(graph.graph.input[0].name) == [1, 3, 32, 32]
    assert "Quant" in [n.op_type for n in graph.graph.node]  # the 8-bit input quantizer


# --------------------------------------------------------------------------- failures
def test_tampered_graph_fails_and_leaves_no_folder(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bnnflow.export.qonnx_export as qe

    original = qe._qonnx_graphs

    def tampered(*args, **kwargs):
        logits, deployed = original(*args, **kwargs)
        for graph in (logits, deployed):  # flip one binary weight of the last layer
            gemm = graph.get_nodes_by_op_type("Gemm")[-1]
            quant = graph.find_producer(gemm.input[1])
            weights = graph.get_initializer(quant.input[0]).copy()
            weights.flat[0] = -weights.flat[0]
            graph.set_initializer(quant.input[0], weights)
        return logits, deployed

    monkeypatch.setattr(qe, "_qonnx_graphs", tampered)
    out = tmp_path / "export"
    with pytest.raises(BnnflowError, match="verification failed"):
        export_model(digits_run, out_dir=out, n_verify=100)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder either


def test_failed_export_keeps_previous_export(digits_run: Path, digits_export, monkeypatch) -> None:
    import bnnflow.export.qonnx_export as qe

    def fail(*args, **kwargs):
        raise BnnflowError("verification failed: simulated")

    before = digits_export.model_path.read_bytes()
    monkeypatch.setattr(qe, "_qonnx_graphs", fail)
    with pytest.raises(BnnflowError, match="simulated"):
        export_model(digits_run, n_verify=10)
    assert digits_export.model_path.read_bytes() == before
    assert not [p for p in digits_run.iterdir() if p.name.startswith(".")]


def test_float_layer_is_named(tmp_path: Path) -> None:
    model = build_model("digits-mlp")
    model.features[-2] = torch.nn.Linear(256, 10, bias=False)
    with pytest.raises(BnnflowError, match=r"'features\.10' \(Linear\) is a float layer.*QuantLinear") as exc:
        check_supported_layers(model)
    assert "\n" not in str(exc.value)
    images, labels = _arrays("digits", "test", limit=8)
    with pytest.raises(BnnflowError, match="features.10"):
        export_network(
            model.eval(), tmp_path / "x", model_name="f", dataset="digits", images=images, labels=labels
        )
    assert not (tmp_path / "x").exists()


def test_two_bit_layer_is_named() -> None:
    from brevitas_examples.bnn_pynq.models.FC import FC

    model = FC(10, weight_bit_width=2, act_bit_width=1, in_bit_width=1, in_channels=1, out_features=[16])
    with pytest.raises(BnnflowError, match=r"'features\.2' \(QuantLinear\) has 2-bit weights.*1-bit weights"):
        check_supported_layers(model)
    model = FC(10, weight_bit_width=1, act_bit_width=2, in_bit_width=1, in_channels=1, out_features=[16])
    with pytest.raises(BnnflowError, match=r"'features\.4' \(QuantIdentity\) has 2-bit activations"):
        check_supported_layers(model)
    model = torch.nn.Sequential(build_model("digits-mlp"), torch.nn.ReLU())
    with pytest.raises(BnnflowError, match=r"'1' \(ReLU\) is not supported"):
        check_supported_layers(model)


def test_reference_models_pass_the_layer_check() -> None:
    for name in ("tfc", "sfc", "cnv", "digits-mlp"):  # lfc is tfc's class with wider layers
        model = PixelScale(build_model(name), 255)
        check_supported_layers(model)
        # The check walked this model's inner layers: its last BatchNorm made a ReLU is refused.
        parent_name, _, child = [n for n, m in model.named_modules() if "BatchNorm" in type(m).__name__][
            -1
        ].rpartition(".")
        setattr(model.get_submodule(parent_name), child, torch.nn.ReLU())
        with pytest.raises(
            BnnflowError, match=rf"'{re.escape(parent_name)}\.{child}' \(ReLU\) is not supported"
        ):
            check_supported_layers(model)
    assert get_spec("lfc").hidden == (1024, 1024, 1024)


def test_missing_and_corrupted_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(BnnflowError, match="checkpoint not found") as exc:
        export_model(tmp_path / "nope.pt")
    assert "\n" not in str(exc.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(BnnflowError, match="corrupted checkpoint") as exc:
        export_model(bad)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "export").exists()


def test_bad_n_verify(digits_run: Path) -> None:
    with pytest.raises(BnnflowError, match="n_verify"):
        export_model(digits_run, n_verify=0)


# --------------------------------------------------------------------------- CLI
def test_cli_export(digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bnnflow.cli import main

    code = main(["export", str(digits_run / "best.pt"), "-o", str(tmp_path / "cli_out"), "-n", "40"])
    out = capsys.readouterr().out
    assert code == 0
    assert "verified on 40 test images" in out
    assert "[torch.onnx]" not in out  # the exporter's progress lines are held back
    assert (tmp_path / "cli_out" / MODEL_FILE).is_file()

    assert main(["export", str(tmp_path / "missing.pt")]) == 1
    assert capsys.readouterr().err.startswith("bnnflow: error: checkpoint not found")
    with pytest.raises(SystemExit) as exc:
        main(["export", str(digits_run), "-n", "many"])
    assert exc.value.code == 2


def test_cli_module_exit_code(tmp_path: Path) -> None:
    """``python -m bnnflow export`` in a fresh interpreter: one line on stderr, exit 1."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "best.pt").write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "bnnflow", "export", str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bnnflow:")]
    assert lines and lines[0].startswith("bnnflow: error: corrupted checkpoint")
    assert not (bad / "export").exists()
