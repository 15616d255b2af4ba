"""Runtime-writable weights: the --runtime-weights compile and write_runtime_weights."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.errors import BnnflowError
from bnnflow.hls.runtime_weights import (
    SUMMARY_FILE,
    finn_weight_files,
    first_difference,
    write_runtime_weights,
)


@pytest.fixture(scope="module")
def runs(rtw_runs: dict[str, Path]) -> dict[str, Path]:
    """conftest.py's rtw_runs: first (compiled with --runtime-weights) and later (retrained)."""
    return rtw_runs


def _design(compile_dir: Path):  # type: ignore[no-untyped-def]
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(compile_dir / "model_hw.onnx"))


def test_compile_makes_weights_and_thresholds_writable(runs: dict[str, Path]) -> None:
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.hls.steps import load_build_config

    out = runs["compiled"]
    summary = json.loads((out / "compile.json").read_text())
    assert summary["runtime_weights"] is True and summary["verification"]["labels_identical"] == 20
    assert load_build_config(out / "dataflow_build_config.json").standalone_thresholds is True
    model = _design(out)
    kinds = [n.op_type for n in model.graph.node]
    # every MVAU is followed by its own Thresholding layer but the last, which feeds the label select
    assert kinds == [
        "Reshape_rtl", "Thresholding_rtl", "MVAU_hls", "Thresholding_rtl", "MVAU_hls",
        "Thresholding_rtl", "MVAU_hls", "LabelSelect_hls",
    ]  # fmt: skip
    for node in model.graph.node:
        inst = getCustomOp(node)
        if node.op_type.startswith(("MVAU", "Thresholding")):
            assert inst.get_nodeattr("runtime_writeable_weights") == 1, node.name
            assert inst.get_verilog_top_module_intf_names()["axilite"] == ["s_axilite"], node.name
        if node.op_type.startswith("MVAU"):
            assert (
                inst.get_nodeattr("noActivation") == 1
                and inst.get_nodeattr("mem_mode") == "internal_decoupled"
            )
            # widths from the datatypes' worst case, not from this checkpoint's values:
            # an XNOR popcount over MW inputs lies in [0, MW]
            mw = inst.get_nodeattr("MW")
            assert inst.get_nodeattr("accDataType") == f"UINT{int(np.ceil(np.log2(mw + 1)))}"
    folding = json.loads((out / "folding.json").read_text())
    assert all(
        folding[n.name]["runtime_writeable_weights"] == 1 for n in model.graph.node if "MVAU" in n.op_type
    )


def _decode_mvau(path: Path, inst, shape: tuple[int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A binary MVAU's runtime weight file back to its (MW, MH) matrix.

    One memory line per (output fold, input fold), PE * SIMD bits, written as
    32-bit words least significant first; bit ``pe * SIMD + simd`` holds the
    weight of output ``fold * PE + pe`` and input ``sfold * SIMD + simd``
    (FINN's make_weight_file, decoupled_runtime).
    """
    pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
    mw, mh = shape
    words = path.read_text().split()
    per_line = len(words) // ((mh // pe) * (mw // simd))
    out = np.zeros(shape)
    for line in range((mh // pe) * (mw // simd)):
        value = int("".join(reversed(words[line * per_line : (line + 1) * per_line])), 16)
        nf, sf = divmod(line, mw // simd)
        for p in range(pe):
            for s in range(simd):
                out[sf * simd + s, nf * pe + p] = (value >> (p * simd + s)) & 1
    return out


def test_retrained_weights_and_thresholds_land_in_finn_files(runs: dict[str, Path], tmp_path: Path) -> None:
    from qonnx.custom_op.registry import getCustomOp

    out = tmp_path / "weights"
    result = write_runtime_weights(runs["compiled"], runs["later"], out, n_verify=20)
    design = _design(runs["compiled"])
    writable = [n for n in design.graph.node if n.op_type.startswith(("MVAU", "Thresholding"))]
    assert [la.node for la in result.layers] == [n.name for n in writable]
    assert result.verified_images == 20
    # FINN's names: <dataflow partition>_<layer in partition>_<node>; each writable
    # layer heads its own partition (0: input DMA, 1: the Reshape)
    assert [la.file for la in result.layers] == [f"{i + 2}_0_{n.name}.dat" for i, n in enumerate(writable)]
    assert sorted(p.name for p in out.iterdir()) == sorted([la.file for la in result.layers] + [SUMMARY_FILE])
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["changed_words"] == sum(la.changed_words for la in result.layers) > 0
    # Training on changes weights (sign flips) and thresholds (BatchNorm): both must be writable.
    by_kind = {"weights": 0, "thresholds": 0}
    for la in result.layers:
        by_kind[la.kind] += la.changed_values
    assert by_kind["weights"] > 0 and by_kind["thresholds"] > 0
    for node, la in zip(writable, result.layers, strict=True):
        inst = getCustomOp(node)
        compiled = design.get_initializer(node.input[1])
        if node.op_type.startswith("MVAU"):
            written = _decode_mvau(out / la.file, inst, compiled.shape)
        else:
            # one 32-bit word per threshold, channels in order for a power-of-two PE
            assert (
                inst.get_nodeattr("numSteps") == 1
                and (inst.get_nodeattr("PE") & (inst.get_nodeattr("PE") - 1)) == 0
            )
            words = [int(w, 16) for w in (out / la.file).read_text().split()]
            written = np.array(words[: compiled.shape[0]], dtype=np.float64).reshape(-1, 1)
            if compiled.shape[0] == 1:  # one threshold for all channels, written once per PE
                assert set(words) == {words[0]}
        assert written.shape == compiled.shape
        assert int(np.sum(written != compiled)) == la.changed_values, node.name


def test_same_checkpoint_changes_nothing(runs: dict[str, Path], tmp_path: Path) -> None:
    from bnnflow.finnlib.boards import get_board

    result = write_runtime_weights(runs["compiled"], runs["first"], tmp_path / "same", n_verify=5)
    assert all(la.changed_words == la.changed_values == 0 for la in result.layers)
    assert sum(la.words for la in result.layers) > 0
    finn = finn_weight_files(_design(runs["compiled"]), get_board("Pynq-Z2"), tmp_path / "finn")
    for la in result.layers:  # byte for byte what FINN writes for the compiled design itself
        assert (tmp_path / "same" / la.file).read_bytes() == finn[la.node].read_bytes()


def test_refuses_other_architectures_and_foldings(runs: dict[str, Path], tmp_path: Path) -> None:
    from bnnflow.models import build_model
    from bnnflow.runs import save_checkpoint

    out = tmp_path / "out"
    tfc = tmp_path / "tfc" / "best.pt"
    save_checkpoint(tfc, {"model": "tfc", "model_state": build_model("tfc").state_dict()})
    with pytest.raises(
        BnnflowError, match=r"^weights from another architecture: the checkpoint is a tfc, .* digits-mlp$"
    ):
        write_runtime_weights(runs["compiled"], tfc, out)

    # the same network folded differently: the compile folder's folding.json edited afterwards
    edited = tmp_path / "edited"
    shutil.copytree(runs["compiled"], edited)
    folding = json.loads((edited / "folding.json").read_text())
    pe = folding["MVAU_hls_2"]["PE"]
    folding["MVAU_hls_2"]["PE"] = 1 if pe != 1 else 2
    (edited / "folding.json").write_text(json.dumps(folding))
    new_pe = folding["MVAU_hls_2"]["PE"]
    with pytest.raises(
        BnnflowError,
        match=rf"^weights from another architecture: MVAU_hls_2 PE is {new_pe}, the design has {pe}$",
    ):
        write_runtime_weights(edited, runs["later"], out, n_verify=0)

    plain = tmp_path / "plain"
    shutil.copytree(runs["compiled"], plain)
    summary = json.loads((plain / "compile.json").read_text())
    summary["runtime_weights"] = False
    (plain / "compile.json").write_text(json.dumps(summary))
    with pytest.raises(BnnflowError, match="compiled without --runtime-weights"):
        write_runtime_weights(plain, runs["later"], out)
    with pytest.raises(BnnflowError, match="not a compile folder"):
        write_runtime_weights(tmp_path, runs["later"], out)
    assert not out.exists()


def test_first_difference_names_what_differs(runs: dict[str, Path]) -> None:
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    design = _design(runs["compiled"])
    assert first_difference(design, ModelWrapper(design.model)) is None
    other = ModelWrapper(copy.deepcopy(design.model))
    other.set_initializer(other.graph.node[2].input[1], np.zeros((64, 256), dtype=np.float32))
    assert first_difference(design, other) is None  # values alone are what runtime weights change
    thresholds = other.graph.node[3].input[1]
    compiled = design.get_tensor_datatype(thresholds).name
    other.set_tensor_datatype(thresholds, DataType["INT32"])
    assert (
        first_difference(design, other)
        == f"Thresholding_rtl_1 parameters of type INT32, the design has {compiled}"
    )
    other.graph.node.pop()
    assert first_difference(design, other) == "7 layers where the design has 8"


def test_negative_final_scale_becomes_flipped_weights(runs: dict[str, Path], tmp_path: Path) -> None:
    """TensorNorm's scale turning negative: streamlining absorbs the sign into the last
    layer's XNOR weights, so it is still a runtime weight update (and the verification
    chain must expect the mirrored accumulator there, as for a negative BatchNorm scale)."""
    from bnnflow.runs import load_checkpoint, save_checkpoint

    payload = load_checkpoint(runs["later"])
    state = dict(payload["model_state"])
    (scale,) = [k for k, v in state.items() if k.endswith("weight") and v.numel() == 1]  # TensorNorm
    state[scale] = -state[scale].abs()
    flipped = tmp_path / "flipped" / "best.pt"
    save_checkpoint(flipped, {"model": payload["model"], "dataset": payload["dataset"], "model_state": state})
    normal = write_runtime_weights(runs["compiled"], runs["later"], tmp_path / "normal", n_verify=10)
    result = write_runtime_weights(runs["compiled"], flipped, tmp_path / "out", n_verify=10)
    last_normal, last = normal.layers[-1], result.layers[-1]
    assert last.node == "MVAU_hls_2" and last.values == 2560
    # every weight of the last layer is the negation of the retrained one
    assert last.changed_values + last_normal.changed_values == last.values
    assert [la.changed_values for la in result.layers[:-1]] == [
        la.changed_values for la in normal.layers[:-1]
    ]


def test_runtime_weights_design_runs_in_the_cpu_engine(runs: dict[str, Path]) -> None:
    """Standalone thresholds fold back into the MVAUs of the CPU model file, which equals FINN."""
    from helpers import finn_reference

    from bnnflow.cpu import MODEL_FILE, CpuEngine, read_model
    from bnnflow.data import load_arrays

    out = runs["compiled"]
    assert json.loads((out / "compile.json").read_text())["cpu_model"] == MODEL_FILE
    model = read_model(out / MODEL_FILE)
    assert [(la.kind.name, la.output_type.name) for la in model.layers] == [
        ("THRESHOLD", "BITS"), ("MVAU", "BITS"), ("MVAU", "BITS"), ("MVAU", "INT32"),
        ("LABEL_SELECT", "CLASS"),
    ]  # fmt: skip
    images, _ = load_arrays("digits", "test")
    want_classes, want_scores = finn_reference(out, images)
    with CpuEngine(out / MODEL_FILE) as engine:
        classes, scores = engine.run(images)
    assert np.array_equal(classes, want_classes) and np.array_equal(scores, want_scores)
