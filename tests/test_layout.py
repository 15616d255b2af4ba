"""bnnflow.layout: each folder's file names spelled once, compile.json through one dataclass."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from bnnflow.errors import BnnflowError
from bnnflow.layout import BitstreamDir, CompileDir, CompileInfo, DeployDir, ExportDir, RunDir

SRC = Path(__file__).resolve().parents[1] / "src" / "bnnflow"
OWNED = {CompileDir.HW_GRAPH, CompileDir.SUMMARY, CompileDir.CPU_MODEL, DeployDir.MANIFEST}


def test_file_names_are_spelled_only_in_layout() -> None:
    """No module but layout.py writes these names as a string (an f-string's part included)."""
    assert OWNED == {"model_hw.onnx", "compile.json", "model.bnn", "manifest.json"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in OWNED:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "spell these through bnnflow.layout:\n" + "\n".join(found)


def test_paths(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "runs" / "tfc")
    assert run.export.model == tmp_path / "runs" / "tfc" / "export" / "model.onnx"
    assert run.export.summary.name == "export.json"
    board = run.compiled("Pynq-Z2")
    assert board.path == tmp_path / "runs" / "tfc" / "compile" / "Pynq-Z2"
    assert board.parent_graph == board.path / "intermediate_models" / "dataflow_parent.onnx"
    assert board.step_graph("step_streamline") == board.path / "intermediate_models" / "step_streamline.onnx"
    assert run.verification_cache == tmp_path / "runs" / "tfc" / "compile" / "verification-cache"
    built = BitstreamDir(tmp_path / "bitstreams" / "tfc-Pynq-Z2")
    assert built.deploy.manifest == built.path / "deploy" / "manifest.json"
    assert built.hw_graph == built.path / "model_hw.onnx"
    assert ExportDir(tmp_path).logits.name == "model_logits.onnx"


def _summary() -> dict:
    return {
        "input": "/r/export/model.onnx",
        "board": "Pynq-Z2",
        "part": "xc7z020clg400-1",
        "clock_ns": 10.0,
        "folding": {"mode": "published", "preset": "tfc"},
        "estimated_fps": 100.0,
        "bottleneck": "MVAU_hls_0",
        "io_bound": None,
        "expected_fps": 100.0,
        "throughput_bound": "compute: MVAU_hls_0",
        "totals": {"LUT": 1.0},
        "utilisation": {"LUT": 0.1},
        "verification": None,
        "cppsim": None,
        "resume_step": "step_generate_hardware",
        "cpu_model": "model.bnn",
        "runtime_weights": False,
    }


def test_compile_info_round_trips_the_file() -> None:
    """to_json of what was read is the file's dict: the written compile.json is unchanged."""
    data = _summary()
    assert CompileInfo.from_json(data).to_json() == data
    unsupported = {**data, "cpu_model": None, "cpu_model_error": "padding"}
    assert CompileInfo.from_json(unsupported).to_json() == unsupported
    # an older compile.json without the later fields still reads
    old = {k: data[k] for k in ("input", "board", "part", "clock_ns", "folding", "estimated_fps")}
    info = CompileInfo.from_json(old)
    assert info.runtime_weights is False and info.cpu_model is None


def test_read_info_errors(tmp_path: Path) -> None:
    folder = CompileDir(tmp_path)
    with pytest.raises(BnnflowError, match="not a compile folder"):
        folder.read_info()
    folder.summary.write_text("{")
    with pytest.raises(BnnflowError, match="cannot read"):
        folder.read_info()
    folder.summary.write_text(json.dumps({"board": "Pynq-Z2"}))
    with pytest.raises(BnnflowError, match="not a bnnflow compile summary"):
        folder.read_info()
    folder.summary.write_text(json.dumps(_summary()))
    assert folder.read_info().board == "Pynq-Z2"
