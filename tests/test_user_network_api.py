"""From Python: the user's own loop with Bop, then the stages on the module, to a compile folder, model file
and package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.bnncpu import CpuEngine
from bnnflow.data import load_arrays
from bnnflow.deploy.package import build_package
from bnnflow.export import export_network, run_qonnx
from bnnflow.hls import compile_model
from bnnflow.layout import CompileDir
from bnnflow.models import binarize_weights_, build_user_network
from bnnflow.training.optimizers import build_optimizer
from tests.test_user_network import write_network


def test_own_loop_to_package(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    source = write_network(tmp_path / "user")
    model, _, _ = build_user_network(f"{source}:build", (1, 8, 8), 10)
    binarize_weights_(model)
    optimizer = build_optimizer(model, "bop")
    x_train, y_train = load_arrays("digits", "train", limit=400)
    model.train()
    for start in range(0, 400, 50):
        x = torch.from_numpy(x_train[start : start + 50].astype(np.float32) / 16)
        loss = F.cross_entropy(model(x), torch.from_numpy(y_train[start : start + 50]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    out = tmp_path / "mine" / "export"
    export = export_network(model, out, model_name="mine", dataset="digits", n_verify=40)
    assert export.verification["n_images"] == 40 and export.verification["label_agreement"] == 1.0
    compiled = compile_model(tmp_path / "mine", "Pynq-Z2", folding="fps:20000", n_verify=40, log=None)
    assert compiled.out_dir == (tmp_path / "mine" / "compile" / "Pynq-Z2").absolute()
    assert compiled.verification is not None and compiled.verification.ok
    model_file = CompileDir(compiled.out_dir).cpu_model
    assert model_file.is_file()

    images, _ = load_arrays("digits", "test", limit=40)
    with CpuEngine(model_file) as engine:
        classes, _ = engine.run(np.ascontiguousarray(images), threads=1)
    qonnx = run_qonnx(export.model_path, images).reshape(len(images), -1)[:, 0]
    assert np.array_equal(np.asarray(classes).ravel(), qonnx.astype(np.int64))

    package = build_package(compiled.out_dir, tmp_path / "deploy", n_images=10, log=None)
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["board"] == "Pynq-Z2"
