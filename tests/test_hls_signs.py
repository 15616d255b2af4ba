"""A BatchNorm with negative scales: FINN folds the sign into the binary weights.

Training (Bop's Adam half in particular) can drive a BatchNorm gamma below
zero. FINN's streamlining factors the sign out and absorbs it into the
XNOR weight column, so the streamlined accumulator of such a channel is the
mirror image of the QONNX dot product; the design is still exact and the
verification chain must accept it, channel by channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import bnnflow  # noqa: F401
from bnnflow.data import load_arrays
from bnnflow.export import export_model
from bnnflow.hls import compile_model
from bnnflow.models import binarize_weights_, build_model
from bnnflow.runs import save_checkpoint


def test_negative_batchnorm_scales_compile_and_verify(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("digits-mlp")
    binarize_weights_(model)
    images, labels = load_arrays("digits", "train", limit=512)
    model.train()
    with torch.no_grad():  # realistic BatchNorm statistics
        for start in range(0, 512, 128):
            model(torch.from_numpy(images[start : start + 128].astype(np.float32) / 16))
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert len(bns) == 2
        for bn in bns:
            bn.weight[::7] *= -1.0  # every seventh channel of both hidden layers
    model.eval()
    run = tmp_path / "run"
    save_checkpoint(
        run / "best.pt", {"model": "digits-mlp", "dataset": "digits", "model_state": model.state_dict()}
    )
    exported = export_model(run, n_verify=60)
    # The negative scales reached the QONNX graph FINN streamlines: every seventh channel of
    # both BatchNormalization nodes, and no other.
    graph = onnx.load(str(exported.model_path)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scales = [initializers[n.input[1]] for n in graph.node if n.op_type == "BatchNormalization"]
    assert len(scales) == 2
    for scale in scales:
        assert np.array_equal(np.flatnonzero(scale < 0), np.arange(0, len(scale), 7))
    result = compile_model(run, "Pynq-Z2", n_verify=30, log=None)
    assert result.verification is not None and result.verification.ok
    assert result.verification.labels_match == 30
