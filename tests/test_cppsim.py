"""The cppsim stage: FINN's generated HLS C++ compiled with gcc and run against FINN's Python execution.

These tests need the hls-sim kit (../shared/hls-sim from the project root, or
$BNNFLOW_HLS_SIM); without it they skip (under CI they fail), except the missing-kit error.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, quick_checkpoint, unavailable

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.errors import BnnflowError
from bnnflow.export import export_model
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.hls import compile_model
from bnnflow.hls.cppsim import (
    CPP,
    KIT_VARIABLES,
    MISSING_SIMULATOR,
    PYTHON,
    check_compile_dir,
    compiled_design,
    find_hls_sim,
    run_cppsim,
)

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _kit_dir() -> Path | None:
    for candidate in (os.environ.get("BNNFLOW_HLS_SIM"), ROOT.parent / "shared" / "hls-sim"):
        if candidate and (Path(candidate) / "env.sh").is_file():
            return Path(candidate)
    return None


KIT = _kit_dir()
KIT_MISSING = "hls-sim kit not found (../shared/hls-sim or BNNFLOW_HLS_SIM)"


def needs_kit(test):
    """The test needs the hls-sim kit: skipped without it, failed under CI."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if KIT is None:
            unavailable(KIT_MISSING)
        return test(*args, **kwargs)

    return wrapper


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bnnflow", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
    )


def _clean_env() -> dict[str, str]:
    """The environment without any C++ toolchain for FINN."""
    return {k: v for k, v in os.environ.items() if k not in (*KIT_VARIABLES, "BNNFLOW_HLS_SIM")}


def _train_run(
    run: Path, name: str, dataset: str, steps: int, pixel_max: int, data_dir: Path | None, n_verify: int = 20
) -> Path:
    quick_checkpoint(run / "best.pt", name, dataset, steps, pixel_max, data_dir)
    export_model(run, n_verify=n_verify, data_dir=data_dir)
    return run


def _finn_state() -> tuple[dict[str, str | None], str]:
    from finn.util.settings import get_settings

    prepare_finn()
    return {k: os.environ.get(k) for k in KIT_VARIABLES}, str(get_settings().finn_deps)


@pytest.fixture(scope="module")
def digits_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The 8x8-digits MLP compiled by the CLI with --cppsim 4."""
    if KIT is None:
        unavailable(KIT_MISSING)
    base = tmp_path_factory.mktemp("cppsim")
    run = _train_run(base / "digits", "digits-mlp", "digits", 40, 16, None)
    out = base / "digits-compiled"
    r = _cli(
        "compile", str(run), "--verify", "8", "--cppsim", "4", "--hls-sim", str(KIT), "--out", str(out),
        cwd=base, env=_clean_env(),
    )  # fmt: skip
    return out, r


@needs_kit
def test_digits_cli_cppsim_end_to_end(digits_cli) -> None:
    from qonnx.core.modelwrapper import ModelWrapper

    out, r = digits_cli
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "cppsim (end-to-end" in ln)
    assert "4/4 images" in line and "C++: 3 MVAU_hls, 1 LabelSelect_hls" in line
    report = json.loads((out / "cppsim.json").read_text())
    assert report["mode"] == "end-to-end" and report["first_mismatch"] is None
    assert report["n_images"] == report["images_checked"] == report["images_identical"] == 4
    assert report["classes_identical"] == report["scores_identical"] == 4
    # The C CPU engine, run on the same images, matched the generated C++ too.
    assert report["cpu_engine"] == {"images": 4, "first_mismatch": None}
    # Every node of the compiled graph is listed: the *_hls ones ran as compiled C++,
    # the RTL layers as FINN's Python reference, each compared on every image.
    graph = ModelWrapper(str(out / "intermediate_models" / "step_hw_codegen.onnx"))
    listed = {n["node"]: n for n in report["nodes"]}
    assert list(listed) == [n.name for n in graph.graph.node]
    for node in graph.graph.node:
        entry = listed[node.name]
        assert entry["runs_as"] == (CPP if node.op_type.endswith("_hls") else PYTHON), entry
        assert entry["compared_images"] == 4
    assert report["cpp_nodes"] == ["MVAU_hls_0", "MVAU_hls_1", "MVAU_hls_2", "LabelSelect_hls_0"]
    assert all("RTL layer" in listed[n]["reason"] for n in report["python_nodes"])
    # The C++ side's classes and scores are kept per image; they agree with the
    # verification chain's labels (same first images) and the argmax of the scores.
    scores = np.array(report["scores"])
    assert scores.shape == (4, 10) and report["classes"] == scores.argmax(axis=1).tolist()
    summary = json.loads((out / "compile.json").read_text())["cppsim"]
    assert summary["images_identical"] == 4 and "scores" not in summary
    assert summary["simulator"] == f"hls-sim kit {os.path.abspath(KIT)}"
    # Sources and binaries lived in FINN_BUILD_DIR scratch, gone now, not in the output folder.
    assert not list(out.rglob("node_model")) and not list(out.rglob("*.o"))


def _flip_threshold_to_accumulator(folder: Path, compile_dir: Path, node: str, image: np.ndarray) -> int:
    """Lower one output channel's threshold in the generated thresh.h so that it fires on ``image``.

    The channel is one that stays 0 in FINN's Python execution (accumulator
    below its threshold); its threshold becomes that accumulator, so the C++
    must output 1 there. Returns the channel.
    """
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.finnlib.execution import execute, integer_tensors

    hw = ModelWrapper(str(compile_dir / "intermediate_models" / "step_hw_codegen.onnx"))
    ref = ModelWrapper(str(compile_dir / "intermediate_models" / "step_convert_to_hw.onnx"))
    ctx, _ = execute(ref, image[None].astype(np.float32), integer_tensors(ref))
    (mvau,) = [n for n in hw.graph.node if n.name == node]
    bare = helper.make_node("MVAU", mvau.input[:2], ["acc"], domain="finn.custom_op.fpgadataflow", name="acc")
    bare.attribute.extend(a for a in mvau.attribute if a.name not in ("code_gen_dir_ipgen",))
    inst = getCustomOp(bare)
    inst.set_nodeattr("noActivation", 1)
    acc_ctx = {mvau.input[0]: ctx[mvau.input[0]], mvau.input[1]: hw.get_initializer(mvau.input[1])}
    acc_ctx["acc"] = np.zeros(inst.get_normal_output_shape(), dtype=np.float32)
    inst.execute_node(acc_ctx, hw.graph)
    acc = acc_ctx["acc"].reshape(-1)
    bits = ctx[mvau.output[0]].reshape(-1)
    channel = int(np.flatnonzero(bits == 0)[0])
    # thresh.h holds the thresholds as [PE][TMEM][1]: FINN deals output rows to the PEs round robin.
    pe = getCustomOp(mvau).get_nodeattr("PE")
    tmem = len(bits) // pe
    path = folder / "thresh.h"
    text = path.read_text()
    values = list(re.finditer(r"\{(-?\d+)\}", text))
    assert len(values) == len(bits)
    m = values[(channel % pe) * tmem + channel // pe]
    assert int(acc[channel]) < int(m.group(1))  # the channel is below its threshold in Python
    path.write_text(text[: m.start(1)] + str(int(acc[channel])) + text[m.end(1) :])
    return channel


@needs_kit
def test_flipped_threshold_in_generated_code_is_caught(digits_cli) -> None:
    """A threshold changed in the generated C++ only (not in any graph): cppsim names that node."""
    from bnnflow.data import load_arrays

    out, r = digits_cli
    assert r.returncode == 0, r.stderr
    images, _ = load_arrays("digits", "test", limit=2)
    sim = find_hls_sim(KIT)
    before = _finn_state()
    seen: dict[str, object] = {}

    def tamper(folders: dict[str, Path]) -> None:
        seen["env"] = os.environ.get("XILINX_HLS")
        seen["channel"] = _flip_threshold_to_accumulator(folders["MVAU_hls_1"], out, "MVAU_hls_1", images[0])

    result = check_compile_dir(out, images, sim, nodes=["MVAU_hls_1"], before_compile=tamper)
    assert not result.ok and result.mode == "end-to-end"
    assert (result.mismatch_image, result.mismatch_node) == (0, "MVAU_hls_1")
    assert result.first_mismatch.startswith("image 0, MVAU_hls_1 (generated C++): output differs")
    assert result.cpp_nodes == ["MVAU_hls_1"]  # the rest ran as Python references
    # The toolchain's variables were set while cppsim ran, and are restored now.
    assert seen["env"] == sim.variables["XILINX_HLS"]
    assert _finn_state() == before


@needs_kit
def test_cpp_binary_that_fails_is_a_named_mismatch(digits_cli) -> None:
    """Generated code that exits with an error fails the check at that node, without a traceback."""
    from bnnflow.data import load_arrays

    out, r = digits_cli
    assert r.returncode == 0, r.stderr

    def exit_early(folders: dict[str, Path]) -> None:
        (source,) = folders["LabelSelect_hls_0"].glob("execute_*.cpp")
        text = source.read_text()
        assert text.count("int main(){") == 1
        source.write_text(text.replace("int main(){", "int main(){ return 3;"))

    images, _ = load_arrays("digits", "test", limit=2)
    result = check_compile_dir(
        out, images, find_hls_sim(KIT), nodes=["LabelSelect_hls_0"], before_compile=exit_early
    )
    assert not result.ok and (result.mismatch_image, result.mismatch_node) == (0, "LabelSelect_hls_0")
    assert "cppsim run failed" in result.first_mismatch and "\n" not in result.first_mismatch


@needs_kit
def test_corrupted_weight_in_compiled_design_is_caught(digits_cli) -> None:
    """One neuron's weights flipped in the compiled graph: the C++ reads them, the Python graph does not."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.cpu import CpuEngine
    from bnnflow.data import load_arrays
    from bnnflow.hls.cppsim import cppsim_check

    out, r = digits_cli
    assert r.returncode == 0, r.stderr
    inter = out / "intermediate_models"
    model = ModelWrapper(str(inter / "step_hw_codegen.onnx"))
    reference = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    (last,) = [n for n in model.graph.node if n.name == "MVAU_hls_2"]
    w = model.get_initializer(last.input[1]).copy()  # (K, classes), binary {0, 1} in XNOR mode
    images, _ = load_arrays("digits", "test", limit=1)
    # The uncorrupted design's scores for this image, from the engine (bit-exact with FINN's graph).
    scores = CpuEngine(out / "model.bnn").scores(images)[0]
    # Flipping every weight of a class maps its popcount s to K - s: pick a class where that changes it.
    cls = int(np.argmax(np.abs(2 * scores - w.shape[0])))
    w[:, cls] = 1 - w[:, cls]
    model.set_initializer(last.input[1], w)
    result = cppsim_check(model, reference, images, find_hls_sim(KIT), nodes=["MVAU_hls_2"])
    assert not result.ok and result.mismatch_node == "MVAU_hls_2"
    assert "MVAU_hls_2 (generated C++)" in result.first_mismatch
    assert result.scores[0][cls] == w.shape[0] - scores[cls]


def test_missing_kit_is_one_line_error(tmp_path: Path) -> None:
    """--cppsim N > 0 without a toolchain fails before compiling, in one line."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read")
    env = _clean_env()
    r = _cli(
        "compile",
        str(model),
        "--cppsim",
        "2",
        "--verify",
        "0",
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"bnnflow: error: {MISSING_SIMULATOR}"]
    nowhere = str(tmp_path / "nowhere")
    r = _cli("compile", str(model), "--cppsim", "2", "--hls-sim", nowhere, cwd=tmp_path, env=env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "no env.sh there" in r.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "compile").exists()
    with pytest.raises(BnnflowError, match="--cppsim must be 0 or more"):
        compile_model(model, n_cppsim=-1, n_verify=0, log=None)
    with pytest.raises(BnnflowError, match="no include/ap_int.h"):
        find_hls_sim(environ={"XILINX_HLS": str(tmp_path)})


@needs_kit
def test_tfc_end_to_end(tfc_dir: Path) -> None:
    """The session's TFC (published folding): every *_hls node as C++, on real MNIST images.

    compile_model's own --cppsim path is the digits CLI test's; this one checks a larger design.
    """
    from bnnflow.data import load_arrays

    images, _ = load_arrays("mnist", "test", data_dir=SHARED_DATA, limit=3)
    before = _finn_state()
    cppsim = check_compile_dir(tfc_dir, images, find_hls_sim(KIT))
    assert cppsim.ok and cppsim.mode == "end-to-end" and cppsim.images_identical == 3
    assert cppsim.cpp_nodes == ["MVAU_hls_0", "MVAU_hls_1", "MVAU_hls_2", "MVAU_hls_3", "LabelSelect_hls_0"]
    assert cppsim.python_nodes == ["Reshape_rtl_0", "Thresholding_rtl_0"]
    assert cppsim.mismatch_with(cppsim.reference_classes, cppsim.reference_scores, "Python") is None
    other = cppsim.classes.copy()
    other[2] = (other[2] + 1) % 10
    assert cppsim.mismatch_with(other, source="C engine").startswith("image 2: class")
    assert _finn_state() == before


@pytest.fixture(scope="module")
def cnv_compiled(cnv_dir: Path) -> Path:
    """The session's CNV (tests/conftest.py), compiled once for the whole suite."""
    if KIT is None:
        unavailable(KIT_MISSING)
    return cnv_dir


@needs_kit
def test_cnv_layer_by_layer_and_end_to_end(cnv_compiled: Path, cifar10_dir: Path) -> None:
    """CNV: Pool_hls has no C++ with this finn-hlslib and runs as Python; both modes agree with Python."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.data import load_arrays

    inter = cnv_compiled / "intermediate_models"
    model = ModelWrapper(str(inter / "step_hw_codegen.onnx"))
    reference = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    images, _ = load_arrays("cifar10", "test", data_dir=cifar10_dir, limit=1)
    # C++ for the first convolution and an attempt at the first pool; compiling all twelve
    # *_hls nodes is the CLI's job (minutes on two cores).
    chosen = ["MVAU_hls_0", "Pool_hls_0"]
    with compiled_design(model, find_hls_sim(KIT), nodes=chosen) as design:
        pool = design.nodes["Pool_hls_0"]
        assert pool.runs_as == PYTHON and "does not compile" in pool.reason and "error:" in pool.reason
        by_layer = run_cppsim(design, reference, images, mode="layer-by-layer")
        chained = run_cppsim(design, reference, images)  # auto
    for result in (by_layer, chained):
        assert result.ok, result.first_mismatch
        assert result.cpp_nodes == ["MVAU_hls_0"]
        assert result.classes.tolist() == result.reference_classes.tolist()
        assert np.array_equal(result.scores, result.reference_scores)
    assert by_layer.mode == "layer-by-layer" and chained.mode == "end-to-end"
    nodes = {n.name: n for n in chained.nodes}
    # The depthwise sliding window before the Python Pool runs as FINN's generic layer, in the
    # order the Python Pool reads; the window feeding the C++ MVAU runs in FINN's cppsim mode.
    assert "generic Python layer Pool" in nodes["Pool_hls_0"].note
    assert "generic Python layer ConvolutionInputGenerator" in nodes["ConvolutionInputGenerator_rtl_2"].note
    assert "cppsim-mode" in nodes["ConvolutionInputGenerator_rtl_0"].note
    assert all(n.compared_images == 1 for n in chained.nodes + by_layer.nodes)


@needs_kit
def test_cppsim_stream_order_is_compared_in_finn_layout(cnv_compiled: Path, cifar10_dir: Path) -> None:
    """A depthwise window feeding C++ is interleaved in cppsim mode; its values are still checked."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.data import load_arrays
    from bnnflow.finnlib.execution import execute, integer_tensors
    from bnnflow.hls.cppsim import NodeRun, _compare_end_to_end, _run_single

    inter = cnv_compiled / "intermediate_models"
    model = ModelWrapper(str(inter / "step_hw_codegen.onnx"))
    reference = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    images, _ = load_arrays("cifar10", "test", data_dir=cifar10_dir, limit=1)
    ref, _ = execute(reference, images[:1].astype(np.float32), integer_tensors(reference))
    window = next(
        n for n in model.graph.node if n.op_type.startswith("ConvolutionInputGenerator")
        and getCustomOp(n).get_nodeattr("depthwise")
    )  # fmt: skip
    getCustomOp(window).set_nodeattr("exec_mode", "cppsim")
    getCustomOp(window).set_nodeattr("SIMD", 1)  # so that cppsim's interleave is not the identity
    got = dict(ref)
    got.update(_run_single(window, model.graph, {window.input[0]: ref[window.input[0]]}))
    out = window.output[0]
    assert not np.array_equal(got[out], ref[out])  # interleaved by SIMD: not FINN's plain layout
    # Pretend the Pool it feeds ran as C++ (with a newer finn-hlslib it would).
    runs = {
        n.name: NodeRun(n.name, n.op_type, CPP if n.op_type.endswith("_hls") else PYTHON, "")
        for n in model.graph.node
    }
    assert _compare_end_to_end(0, runs, model, got, ref) is None
    assert "plain layout" in runs[window.name].note
    got[out] = got[out].copy()
    got[out][0, 0, 0, 0] = 1 - got[out][0, 0, 0, 0]
    problem = _compare_end_to_end(0, runs, model, got, ref)
    assert problem is not None and problem[1] == window.name


def test_kit_environment_from_env_sh(tmp_path: Path) -> None:
    """The variables come from the kit's env.sh; they are not left in this process."""
    if KIT is None:
        unavailable(KIT_MISSING)
    before = _finn_state()
    sim = find_hls_sim(KIT, environ=_clean_env())
    assert sim.kind == "kit" and set(sim.variables) == set(KIT_VARIABLES)
    assert sim.variables["FINN_DEPS"] == os.path.join(os.path.abspath(KIT), "deps")
    assert (Path(sim.variables["XILINX_HLS"]) / "include" / "ap_int.h").is_file()
    assert _finn_state() == before
    # BNNFLOW_HLS_SIM is the fallback for --hls-sim.
    assert find_hls_sim(environ={**_clean_env(), "BNNFLOW_HLS_SIM": str(KIT)}).path == Path(
        os.path.abspath(KIT)
    )
    fake = tmp_path / "kit"
    shutil.copytree(KIT, fake, ignore=shutil.ignore_patterns("deps", "vitis", "patches"))
    (fake / "env.sh").chmod(0o644)
    (fake / "env.sh").write_text("exit 3\n")
    with pytest.raises(BnnflowError, match=r"env.sh failed \(exit 3\)"):
        find_hls_sim(fake)


@needs_kit
def test_xnor_accumulator_holds_full_popcount(digits_cli) -> None:
    """An input equal to a neuron's weight bits gives popcount K; FINN's accumulator type wraps it.

    MVAU_hls_1 is put back to the type FINN's minimisation chooses (INT9 for
    K = 256): its C++ wraps 256 to -256 and the neuron stays off. MVAU_hls_2
    keeps the corrected type (bnnflow/finnlib/xnor_acc.py) and outputs 256, as FINN's Python does.
    """
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.hls.cppsim import _run_single, python_form

    out, r = digits_cli
    assert r.returncode == 0, r.stderr
    model = ModelWrapper(str(out / "intermediate_models" / "step_hw_codegen.onnx"))
    mvaus = {n.name: n for n in model.graph.node if n.op_type == "MVAU_hls"}
    for node in mvaus.values():  # every XNOR layer of the compiled design holds its popcount
        inst = getCustomOp(node)
        acc = DataType[inst.get_nodeattr("accDataType")]
        assert inst.get_nodeattr("binaryXnorMode") and acc.max() >= inst.get_nodeattr("MW"), node.name
        if len(node.input) > 2:
            assert model.get_tensor_datatype(node.input[2]).bitwidth() >= acc.bitwidth()
    (label,) = [n for n in model.graph.node if n.op_type == "LabelSelect_hls"]
    assert getCustomOp(label).get_nodeattr("inputDataType") == getCustomOp(mvaus["MVAU_hls_2"]).get_nodeattr(
        "outputDataType"
    )

    hidden = getCustomOp(mvaus["MVAU_hls_1"])
    hidden.minimize_accumulator_width(model)  # FINN's choice, as before the correction
    finn_type = DataType[hidden.get_nodeattr("accDataType")]
    assert finn_type.max() < 256
    model.set_tensor_datatype(mvaus["MVAU_hls_1"].input[2], finn_type)
    thresholds = model.get_initializer(mvaus["MVAU_hls_1"].input[2]).reshape(-1)
    c = int(np.flatnonzero((thresholds > finn_type.min()) & (thresholds <= 256))[0])
    with compiled_design(model, find_hls_sim(KIT), nodes=["MVAU_hls_1", "MVAU_hls_2"]) as design:
        outputs = {}
        for name, channel in (("MVAU_hls_1", c), ("MVAU_hls_2", 0)):
            (node,) = [n for n in design.model.graph.node if n.name == name]
            weights = design.model.get_initializer(node.input[1])
            x = weights[:, channel].reshape(1, -1).astype(np.float32)  # agrees with every weight bit
            inputs = {i: design.model.get_initializer(i) for i in node.input[1:]}
            inputs[node.input[0]] = x
            cpp = _run_single(node, design.model.graph, inputs)[node.output[0]].reshape(-1)
            py = _run_single(python_form(node), design.model.graph, inputs)[node.output[0]].reshape(-1)
            outputs[name] = (cpp[channel], py[channel])
    assert outputs["MVAU_hls_1"] == (0, 1)  # wrapped to -256 in FINN's INT9: below the threshold
    assert outputs["MVAU_hls_2"] == (256, 256)
