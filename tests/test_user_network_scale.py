"""Brevitas' stock binary weight quantizer (scale 0.1) compiles and verifies; a wrong popcount still fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.data import load_arrays
from bnnflow.export import export_network
from bnnflow.hls import compile_model
from bnnflow.hls.verify import _matches_scaled
from bnnflow.models import binarize_weights_, build_user_network
from tests.test_user_network import MLP_SOURCE, write_network

STOCK_SOURCE = MLP_SOURCE.replace(
    "weight_quant=CommonWeightQuant)", "weight_quant=SignedBinaryWeightPerTensorConst)"
).replace("import torch\n", "import torch\nfrom brevitas.quant import SignedBinaryWeightPerTensorConst\n", 1)


def test_scaled_dot_products() -> None:
    expected = np.array([[-5.0, 3.0, 1.0, 7.0]], dtype=np.float32)
    for scale in (np.array([0.1]), np.array([0.1, 0.25, 1.0, 3.0])):
        q_dot = (expected * scale).astype(np.float32)
        assert _matches_scaled(q_dot, expected, scale)
        wrong = q_dot.copy()
        wrong[0, 1] += np.float32(2 * scale[min(1, len(scale) - 1)])  # one popcount more
        assert not _matches_scaled(wrong, expected, scale)
    assert _matches_scaled(expected, expected, None)
    assert not _matches_scaled(expected * np.float32(0.1), expected, None)


def test_stock_binary_quantizer_compiles_and_verifies(tmp_path: Path) -> None:
    assert "SignedBinaryWeightPerTensorConst)" in STOCK_SOURCE
    torch.manual_seed(0)
    torch.set_num_threads(1)
    source = write_network(tmp_path / "user", "stock.py", STOCK_SOURCE)
    model, _, _ = build_user_network(f"{source}:build", (1, 8, 8), 10)
    binarize_weights_(model)
    weight = model.body[2].quant_weight()
    assert float(weight.scale) == torch.tensor(0.1).item()
    images, _ = load_arrays("digits", "train", limit=256)
    model.train()
    with torch.no_grad():  # BatchNorm statistics
        model(torch.from_numpy(images.astype(np.float32) / 16))
    model.eval()
    export_network(model, tmp_path / "run" / "export", model_name="stock", dataset="digits", n_verify=30)
    result = compile_model(tmp_path / "run", "Pynq-Z2", folding="fps:20000", n_verify=30, log=None)
    assert result.verification is not None and result.verification.ok
    assert result.verification.accumulators_match == result.verification.activations_match == 30
    assert result.verification.labels_match >= 28  # a float tie in QONNX (verify._float_tie) may differ
