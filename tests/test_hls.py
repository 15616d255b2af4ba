"""Tests for bnnflow.hls: FINN compile flow, folding, verification chain, bitstream hand-off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA, need_mnist, quick_checkpoint

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.errors import BnnflowError
from bnnflow.export import export_model
from bnnflow.finnlib.finn_env import prepare_finn
from bnnflow.hls import BOARDS, compile_model, get_board
from bnnflow.hls.bitstream import build_bitstream, check_vivado
from bnnflow.hls.report import format_table
from bnnflow.hls.steps import load_build_config

DATA_DIR = SHARED_DATA
SRC = Path(__file__).resolve().parents[1] / "src"


def _train_run(run: Path, name: str, dataset: str, steps: int, pixel_max: int, data_dir: Path | None) -> Path:
    """A checkpoint after a few Adam steps on real images, exported to QONNX."""
    quick_checkpoint(run / "best.pt", name, dataset, steps, pixel_max, data_dir)
    export_model(run, n_verify=50, data_dir=data_dir)
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_run(tmp_path_factory.mktemp("runs") / "digits", "digits-mlp", "digits", 40, 16, None)


@pytest.fixture(scope="module")
def tfc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_mnist()
    return _train_run(tmp_path_factory.mktemp("runs") / "tfc", "tfc", "mnist", 25, 255, DATA_DIR)


@pytest.fixture(scope="module")
def tfc_compiled(tfc_run: Path):
    return compile_model(tfc_run, "Pynq-Z2", folding="published", n_verify=40, data_dir=DATA_DIR, log=None)


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bnnflow", *args], cwd=cwd, env=full_env, capture_output=True, text=True
    )


def test_boards_use_finn_parts() -> None:
    from finn.util.basic import pynq_part_map

    for name, board in BOARDS.items():
        assert pynq_part_map[name] == board.part
    assert get_board("pynq-z2").name == "Pynq-Z2"
    with pytest.raises(BnnflowError, match="Pynq-Z2, Ultra96, Ultra96-V2"):
        get_board("ZedBoard")


def test_tfc_published_folding_compiles_and_verifies(tfc_compiled) -> None:
    out = tfc_compiled.out_dir
    assert out == tfc_compiled.out_dir.parent / "Pynq-Z2" and out.parent.name == "compile"
    est = tfc_compiled.estimate
    mvaus = [la for la in est.layers if la.op_type.startswith("MVAU")]
    # finn-examples tfc-w1a1 folding: (PE, SIMD) = (16, 49), (8, 8), (8, 8), (10, 8)
    assert [(la.pe, la.simd) for la in mvaus] == [(16, 49), (8, 8), (8, 8), (10, 8)]
    assert est.extra["binary_xnor_mvaus"] == 4  # every TFC layer is XNOR-popcount
    assert est.fps == pytest.approx(1e8 / est.max_cycles)
    # bottleneck of the published TFC folding: MVAU 0, (64 / 16) * (784 / 49) = 64 cycles;
    # the Reshape layer the published JSON predates must not become the bottleneck
    assert (est.bottleneck, est.max_cycles) == ("MVAU_hls_0", 64)
    ver = tfc_compiled.verification
    assert ver.ok and ver.n_images == 40
    assert ver.labels_match == ver.accumulators_match == ver.activations_match == 40
    for name in ("model_hw.onnx", "folding.json", "estimates.json", "estimates.png", "verification.json"):
        assert (out / name).is_file(), name
    inter = out / "intermediate_models"
    for step in ("step_streamline", "step_convert_to_hw", "step_specialize_layers", "step_hw_codegen"):
        assert (inter / f"{step}.onnx").is_file()
    cpp = list((out / "hw_codegen").glob("MVAU_hls_0/*.cpp"))
    assert cpp and "Matrix_Vector_Activate" in cpp[0].read_text()
    assert "XnorMul" in "".join(p.read_text() for p in (out / "hw_codegen").glob("MVAU_hls_1/*.cpp"))
    assert not list(out.parent.glob(".*.tmp"))  # nothing half-written left next to it


def test_build_config_hands_over_to_finn(tfc_compiled) -> None:
    from finn.builder.build_dataflow_config import DataflowBuildConfig

    path = tfc_compiled.build_config_path
    cfg = load_build_config(path)
    assert cfg.folding_config_file == tfc_compiled.folding_path
    assert cfg.board == "Pynq-Z2" and cfg.synth_clk_period_ns == 10.0
    assert cfg.start_step == "step_generate_hardware"
    assert cfg.steps[cfg.steps.index(cfg.start_step) - 1] == "step_hw_codegen"
    assert DataflowBuildConfig.from_json(path.read_text()).fpga_part == "xc7z020clg400-1"
    # The builder resumes from the model of the step before start_step.
    prepare_finn()
    from finn.builder.build_dataflow import resolve_step_filename  # noqa: F401  (needs the xsi stub)

    assert resolve_step_filename(cfg.start_step, cfg, -1).name == "step_hw_codegen.onnx"


def test_folding_json_is_accepted_by_finn_builder_step(tfc_compiled, tmp_path: Path) -> None:
    from finn.builder.build_dataflow_config import DataflowBuildConfig
    from finn.builder.build_dataflow_steps import step_apply_folding_config
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    out = tfc_compiled.out_dir
    model = ModelWrapper(str(out / "intermediate_models" / "step_specialize_layers.onnx"))
    cfg = DataflowBuildConfig(
        output_dir=str(tmp_path), board="Pynq-Z2", folding_config_file=out / "folding.json"
    )
    model = step_apply_folding_config(model, cfg)
    folded = {n.name: getCustomOp(n) for n in ModelWrapper(str(out / "model_hw.onnx")).graph.node}
    for node in model.graph.node:
        if node.op_type.startswith("MVAU"):
            for attr in ("PE", "SIMD"):
                assert getCustomOp(node).get_nodeattr(attr) == folded[node.name].get_nodeattr(attr)


def _label_select_graph(labels: int):
    """One LabelSelect over ``labels`` UINT8 scores: a hardware graph with a known DMA transfer."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    node = helper.make_node(
        "LabelSelect_hls", ["x"], ["y"], domain="finn.custom_op.fpgadataflow.hls", backend="fpgadataflow",
        Labels=labels, PE=1, K=1, inputDataType="UINT8", name="LabelSelect_hls_0",
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, labels])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
    )
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType["UINT8"])
    model.set_tensor_datatype("y", DataType["UINT8"])
    return model


@pytest.mark.parametrize(
    "labels, board, clock_ns, width, cycles",
    [
        (12, "Pynq-Z2", 10.0, 32, 3),  # 96 bits: FINN narrows the 64-bit port to gcd(96, 64) = 32
        (16, "Pynq-Z2", 10.0, 64, 2),  # 128 bits over 64
        (16, "Ultra96-V2", 5.0, 128, 1),  # 128 bits over the UltraScale+ 128-bit port, 200 MHz
        (40, "Ultra96", 10.0, 64, 5),  # 320 bits: gcd(320, 128) = 64
    ],
)
def test_io_bound_arithmetic(labels: int, board: str, clock_ns: float, width: int, cycles: int) -> None:
    from bnnflow.hls import io_bound

    prepare_finn()
    bound = io_bound(_label_select_graph(labels), board, clock_ns)
    assert (bound.in_bytes, bound.out_bytes) == (labels, 1)
    assert bound.port_bits == (64 if board == "Pynq-Z2" else 128)
    assert (bound.in_width_bits, bound.in_cycles) == (width, cycles)
    assert (bound.out_width_bits, bound.out_cycles) == (8, 1)  # one byte, the label
    assert bound.cycles == cycles and bound.limit == "input DMA"
    assert bound.fps == pytest.approx(1e9 / clock_ns / cycles)
    assert bound.describe() == f"I/O: input DMA, {cycles} cycles/frame"


def test_io_bound_rejects_other_graphs(tfc_compiled, tmp_path: Path) -> None:
    from bnnflow.hls import io_bound

    inter = tfc_compiled.out_dir / "intermediate_models"
    with pytest.raises(BnnflowError, match="needs the hardware-layer graph"):
        io_bound(inter / "step_streamline.onnx", "Pynq-Z2", 10.0)
    with pytest.raises(BnnflowError, match="no hardware graph at"):
        io_bound(tmp_path, "Pynq-Z2", 10.0)
    with pytest.raises(BnnflowError, match="needs a board and a clock"):
        io_bound(tfc_compiled.model_path)
    with pytest.raises(BnnflowError, match="must be positive"):
        io_bound(tfc_compiled.out_dir, clock_ns=-5)


def test_published_tfc_is_dma_bound(tfc_compiled) -> None:
    """finn-examples' tfc-w1a1 folding computes faster than 784 bytes a frame arrive.

    Measured by finn-examples at 100 MHz (board not named): 837,019 images/s,
    784 B per image at 656 MB/s. The 64-bit port at 100 MHz moves 800 MB/s,
    so the bound must lie above that figure and not far from it.
    """
    from bnnflow.hls import io_bound

    est = tfc_compiled.estimate
    io = est.io
    assert (io.in_bytes, io.out_bytes, io.port_bits, io.in_cycles, io.out_cycles) == (784, 1, 64, 98, 1)
    assert io.fps == pytest.approx(1e8 / 98)
    assert 837_019 < io.fps < 837_019 / 0.8
    assert est.fps == pytest.approx(1e8 / 64)  # the compute estimate is left as it is
    assert est.expected_fps == io.fps and est.bound == "I/O: input DMA, 98 cycles/frame"
    assert io_bound(tfc_compiled.out_dir) == io  # board and clock from compile.json
    on_disk = json.loads((tfc_compiled.out_dir / "estimates.json").read_text())
    summary = json.loads((tfc_compiled.out_dir / "compile.json").read_text())
    for report in (on_disk, summary):
        assert report["throughput_bound"] == "I/O: input DMA, 98 cycles/frame"
        assert report["expected_fps"] == pytest.approx(1e8 / 98)
    assert on_disk["fps"] == summary["estimated_fps"] == pytest.approx(1e8 / 64)
    assert on_disk["io"]["cycles"] == summary["io_bound"]["cycles"] == 98
    assert "decided by I/O: input DMA, 98 cycles/frame" in format_table(est)


def test_tfc_fit_stops_at_the_dma_bound(tfc_compiled) -> None:
    """The fit search buys no throughput the DMA cannot deliver; the compute-only search does."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hls.folding import fit_to_board

    spec = ModelWrapper(str(tfc_compiled.out_dir / "intermediate_models" / "step_specialize_layers.onnx"))
    board = get_board("Pynq-Z2")
    bounded = fit_to_board(spec, board, 10.0, 0.85).estimate
    unbounded = fit_to_board(spec, board, 10.0, 0.85, io_bound=False).estimate
    assert unbounded.io is None and unbounded.fps > bounded.io.fps  # folds past the DMA
    assert bounded.max_cycles <= bounded.io.cycles == 98
    assert bounded.expected_fps == bounded.io.fps and bounded.bound == "I/O: input DMA, 98 cycles/frame"
    assert bounded.fits(0.85)
    assert bounded.totals["LUT"] < 0.5 * unbounded.totals["LUT"]
    assert bounded.totals["BRAM_18K"] <= unbounded.totals["BRAM_18K"]


def test_verification_names_first_differing_layer(tfc_compiled) -> None:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from bnnflow.data import load_arrays
    from bnnflow.hls.verify import verify_chain

    inter = tfc_compiled.out_dir / "intermediate_models"
    hw = ModelWrapper(str(inter / "step_convert_to_hw.onnx"))
    mvau = [n for n in hw.graph.node if n.op_type == "MVAU"][1]
    thresholds = hw.get_initializer(mvau.input[2])
    hw.set_initializer(mvau.input[2], thresholds + 3)  # a wrong BatchNorm fold in layer 1
    images, labels = load_arrays("mnist", "test", data_dir=DATA_DIR, limit=5)
    result = verify_chain(
        cleanup_model(ModelWrapper(str(inter / "input_qonnx.onnx"))),
        ModelWrapper(str(inter / "step_streamline.onnx")),
        hw,
        images,
        labels,
    )
    assert not result.ok
    assert "layer 1 (MVAU_1)" in result.first_mismatch and "activations" in result.first_mismatch


def _tfc_graphs(compiled) -> tuple:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    inter = compiled.out_dir / "intermediate_models"
    return (
        cleanup_model(ModelWrapper(str(inter / "input_qonnx.onnx"))),
        ModelWrapper(str(inter / "step_streamline.onnx")),
        ModelWrapper(str(inter / "step_convert_to_hw.onnx")),
    )


def _outcome(result) -> dict:
    out = result.to_json()
    for key in ("seconds", "images_per_s", "workers", "batched_graphs"):
        out.pop(key)
    return out


def test_pool_and_batching_match_sequential(tfc_compiled) -> None:
    from bnnflow.data import load_arrays
    from bnnflow.hls.verify import verify_chain

    images, labels = load_arrays("mnist", "test", data_dir=DATA_DIR, limit=24)
    plain = verify_chain(*_tfc_graphs(tfc_compiled), images, labels, workers=1, batch=False)
    batched = verify_chain(*_tfc_graphs(tfc_compiled), images, labels, workers=1, chunk=10)
    pooled = verify_chain(*_tfc_graphs(tfc_compiled), images, labels, workers=2, chunk=5)
    assert plain.ok and plain.labels_match == 24 and plain.batched == []
    assert batched.batched == ["qonnx", "streamlined"]  # TFC's graphs take a batch
    assert pooled.workers == 2 and pooled.batched == ["qonnx", "streamlined"]
    assert _outcome(plain) == _outcome(batched) == _outcome(pooled)

    # A broken layer is found at the same image and layer on every path.
    q, s, hw = _tfc_graphs(tfc_compiled)
    mvau = [n for n in hw.graph.node if n.op_type == "MVAU"][2]
    hw.set_initializer(mvau.input[2], hw.get_initializer(mvau.input[2]) + 2)
    bad_plain = verify_chain(q, s, hw, images, labels, workers=1, batch=False)
    bad_batched = verify_chain(q, s, hw, images, labels, workers=1, chunk=7)
    assert not bad_plain.ok and "layer 2 (MVAU_2)" in bad_plain.first_mismatch
    assert _outcome(bad_plain) == _outcome(bad_batched)


@pytest.mark.filterwarnings("ignore:The values of tensor .* will be rounded")  # the re-run case, on purpose
def test_unsanitized_execution_equals_library_default(tfc_compiled) -> None:
    from finn.core.onnx_exec import execute_onnx

    from bnnflow.data import load_arrays
    from bnnflow.finnlib.execution import execute, fast_execution, integer_tensors

    images, _ = load_arrays("mnist", "test", data_dir=DATA_DIR, limit=3)
    for model in _tfc_graphs(tfc_compiled):
        name = model.graph.input[0].name
        for x in (images[:1].astype(np.float32), images[2:3].astype(np.float32), images[:1] + 0.005):
            x = x.astype(np.float32)
            ref = execute_onnx(model, {name: x}, return_full_exec_context=True)  # sanitising on
            with fast_execution():
                ctx, reruns = execute(model, x, integer_tensors(model))
            # Integer inputs: nothing to sanitise. Off-grid inputs (UINT8 + 0.005, within
            # qonnx's rounding tolerance): the check notices, the image runs the default way.
            assert reruns == int(not float(x[0, 0, 0, 0]).is_integer())
            assert ctx.keys() == ref.keys()
            for key, value in ref.items():
                assert np.array_equal(ctx[key], value), key


def test_cache_key_ignores_random_tensor_names(tfc_compiled) -> None:
    """FINN names inserted tensors randomly; the same conversion must give the same key."""
    from bnnflow.hls.verify import cache_key, graph_fingerprint

    q, s, hw = _tfc_graphs(tfc_compiled)
    model = tfc_compiled.out_dir / "intermediate_models" / "input_qonnx.onnx"
    images = np.zeros((3, 1, 28, 28), dtype=np.uint8)
    key = cache_key(model, [s, hw], images, None)
    old = hw.graph.node[1].output[0]
    hw.rename_tensor(old, "renamed_" + old)
    assert graph_fingerprint(hw) == graph_fingerprint(_tfc_graphs(tfc_compiled)[2])
    assert cache_key(model, [s, hw], images, None) == key
    assert cache_key(model, [s, hw], images + 1, None) != key  # other images
    assert cache_key(model, [s, hw], images, np.zeros(3, dtype=np.int64)) != key
    hw.graph.node[1].attribute[0].i += 1  # a different hardware graph
    assert cache_key(model, [s, hw], images, None) != key


def test_im2col_graphs_run_image_by_image() -> None:
    """qonnx's Im2Col is wrong for batch > 1, the reason with_batch refuses it."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.basic import qonnx_make_model

    from bnnflow.finnlib.execution import with_batch

    node = helper.make_node(
        "Im2Col", ["x"], ["y"], domain="qonnx.custom_op.general", stride=[1, 1], kernel_size=[2, 2],
        input_shape="(1, 4, 4, 2)", pad_amount=[0, 0, 0, 0],
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 3, 8])],
    )
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType["UINT8"])
    x = np.arange(64, dtype=np.float32).reshape(2, 4, 4, 2)
    both = execute_onnx(model, {"x": x})["y"]
    assert with_batch(model, 2) is None
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    singles = np.concatenate([execute_onnx(model, {"x": x[i : i + 1]})["y"] for i in range(2)])
    assert not np.array_equal(both, singles)  # if this fails, qonnx fixed Im2Col: drop BATCH_1_OPS


def test_fit_to_board_beats_fps_target_and_fits(digits_run: Path, tmp_path: Path) -> None:
    fps = compile_model(digits_run, "Ultra96", tmp_path / "fps", folding="fps:20000", n_verify=20, log=None)
    fit = compile_model(
        digits_run, "Ultra96", tmp_path / "fit", folding="fit", budget=0.85, n_verify=20, log=None
    )
    assert fps.estimate.fps >= 20000
    assert fit.estimate.fits(0.85)
    assert fit.estimate.fps >= fps.estimate.fps
    assert fit.verification.ok and fit.verification.n_images == 20
    # The verification runs before folding: the second compile of the same export
    # and images reuses the first one's, from the run's cache; opting out runs it again.
    cache = digits_run / "compile" / "verification-cache"
    assert fps.verification.cached_from is None
    assert fit.verification.cached_from is not None
    assert Path(fit.verification.cached_from).parent == cache and len(list(cache.glob("*.json"))) == 1
    on_disk = json.loads((tmp_path / "fit" / "verification.json").read_text())
    assert on_disk["cached_from"] == fit.verification.cached_from and on_disk["labels_identical"] == 20
    again = compile_model(
        digits_run, "Ultra96", tmp_path / "again", "fps:20000", n_verify=20, verify_cache=False, log=None
    )
    assert again.verification.cached_from is None and again.verification.labels_match == 20
    summary = json.loads((tmp_path / "fit" / "compile.json").read_text())
    assert summary["part"] == "xczu3eg-sbva484-1-e" and summary["folding"]["mode"] == "fit"


def test_folding_that_cannot_fit_fails_cleanly(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    with pytest.raises(BnnflowError, match="no folding fits 1% of Pynq-Z2"):
        compile_model(digits_run, "Pynq-Z2", out, folding="fit", budget=0.01, n_verify=0, log=None)
    assert not out.exists() and not list(tmp_path.glob(".*"))


def test_published_folding_refuses_other_networks(digits_run: Path, tmp_path: Path) -> None:
    with pytest.raises(BnnflowError, match="no published FINN folding"):
        compile_model(digits_run, "Pynq-Z2", tmp_path / "p", folding="published", n_verify=0, log=None)
    assert not (tmp_path / "p").exists()


def test_unmappable_model_is_one_line_error(tmp_path: Path) -> None:
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    # A float (unquantized) MatMul: FINN has no hardware layer for it.
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])
    outp = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [10, 4], np.linspace(-1, 1, 40).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [inp], [outp], [w])
    path = tmp_path / "float_matmul.onnx"
    ModelWrapper(qonnx_make_model(graph)).save(str(path))
    with pytest.raises(BnnflowError, match="FINN cannot map these layers to hardware: .*MatMul"):
        compile_model(path, "Pynq-Z2", tmp_path / "out", n_verify=0, log=None)
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line(digits_run: Path, tmp_path: Path) -> None:
    r = _cli("compile", str(digits_run), "--board", "Zybo", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "bnnflow: error: unknown board 'Zybo'; choose one of: Pynq-Z2, Ultra96, Ultra96-V2"
    ]
    r = _cli("compile", str(digits_run), "--budget", "0.01", "--verify", "0", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "bnnflow: error: no folding fits"
    )
    assert not (digits_run / "compile" / "Pynq-Z2").exists()


def test_folding_json_with_unknown_nodes_stops_the_compile(digits_run: Path, tmp_path: Path) -> None:
    """FINN's ApplyConfig only logs names it cannot find: the compile would ignore them silently."""
    ghost = tmp_path / "my.json"
    ghost.write_text(json.dumps({"Defaults": {}, "MVAU_hls_0": {"PE": 4}, "MVAU_hls_99": {"PE": 2}}))
    r = _cli("compile", str(digits_run), "--folding", str(ghost), "--verify", "0", "--out", "o", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"bnnflow: error: folding JSON {ghost} names nodes this graph does not have: MVAU_hls_99; "
        "its foldable nodes: Reshape_rtl_0, Thresholding_rtl_0, MVAU_hls_0, MVAU_hls_1, MVAU_hls_2, "
        "LabelSelect_hls_0"
    )
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()

    def fails(cfg: object, match: str) -> None:
        path = tmp_path / "folding.json"
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
        with pytest.raises(BnnflowError, match=match):
            compile_model(digits_run, "Pynq-Z2", tmp_path / "out", folding=str(path), n_verify=0, log=None)
        assert not (tmp_path / "out").exists()

    fails("{not json", "cannot read folding JSON")
    fails(
        {"Defaults": {}, "MVAU_hls_0": {"PEE": 2}},
        r"MVAU_hls_0 \(MVAU_hls\) has no attribute 'PEE'; it has PE, SIMD",
    )
    fails({"Defaults": {}, "MVAU_hls_0": {"PE": "four"}}, "cannot be applied: Attribute PE expects int")
    fails({"Defaults": {}, "MVAU_hls_0": 4}, "MVAU_hls_0 must map to an object, got 4")
    fails(
        {"Defaults": {}, "MVAU_hls_0": {"PE": 3}}, r"FINN rejects MVAU_hls_0 \(PE=3, SIMD=1\): .*MH \(256\)"
    )
    # a JSON that names every node, with any capitalisation of the suffix, is applied as it is
    good = tmp_path / "Good.JSON"
    good.write_text(json.dumps({"Defaults": {}, "MVAU_hls_0": {"PE": 4, "SIMD": 8}}))
    done = compile_model(digits_run, "Pynq-Z2", tmp_path / "good", folding=str(good), n_verify=0, log=None)
    mvau = next(la for la in done.estimate.layers if la.name == "MVAU_hls_0")
    assert (mvau.pe, mvau.simd) == (4, 8)


def test_bad_compile_inputs_are_one_line_errors(digits_run: Path, tmp_path: Path) -> None:
    from bnnflow.hls.flow import resolve_input

    for args, code, message in (
        (["--clock-ns", "nan"], 1, "--clock-ns must be a positive number of ns, got nan"),
        (["--clock-ns", "-5"], 1, "--clock-ns must be a positive number of ns, got -5.0"),
        (["--folding", "fps:nan"], 1, "bad --folding 'fps:nan': fps:<N> needs a positive number"),
        (["--folding", "fps:inf"], 1, "bad --folding 'fps:inf': fps:<N> needs a positive number"),
        (["--folding", "missing.json"], 1, "folding JSON not found: missing.json"),
        (["--verify", "-3"], 2, "argument --verify: must be 0 or more: -3"),
        (["--verify-workers", "0"], 2, "argument --verify-workers: must be at least 1: 0"),
    ):
        r = _cli("compile", str(digits_run), *args, "--out", "o", cwd=tmp_path)
        assert r.returncode == code, (args, r.stderr)
        assert r.stderr.strip().splitlines()[-1].endswith(message), (args, r.stderr)
        assert "Traceback" not in r.stderr and "step_" not in r.stderr  # refused before FINN runs
    (tmp_path / "notes").mkdir()
    r = _cli("compile", "notes", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip() == (
        "bnnflow: error: notes is not a run folder (no export/model.onnx, best.pt or checkpoint.pt); "
        "give a run folder or a QONNX .onnx file"
    )
    assert not (tmp_path / "o").exists()
    # the export folder itself is a fine way to name the model
    assert resolve_input(digits_run / "export") == (digits_run / "export" / "model.onnx", digits_run)


def test_cli_compile_digits_prints_table(digits_run: Path, tmp_path: Path) -> None:
    r = _cli("compile", str(digits_run), "--board", "pynq-z2", "--verify", "25", cwd=tmp_path)  # any case
    assert r.returncode == 0, r.stderr
    assert "estimated throughput" in r.stderr and "MVAU_hls_0" in r.stderr and "bottleneck" in r.stderr
    assert "I/O bound:" in r.stderr and "decided by compute: " in r.stderr  # 64 bytes a frame: 8 cycles
    assert (
        json.loads((digits_run / "compile" / "Pynq-Z2" / "verification.json").read_text())["n_images"] == 25
    )


def test_bitstream_without_vivado_exits_2_with_instructions(tfc_compiled, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XILINX_VIVADO"}
    out = tmp_path / "bits"
    r = subprocess.run(
        [sys.executable, "-m", "bnnflow", "bitstream", str(tfc_compiled.out_dir), "--out", str(out)],
        env={**env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "XILINX_VIVADO" in r.stderr and "docker run" in r.stderr and "bnnflow bitstream" in r.stderr
    assert not out.exists()


def test_bitstream_rejects_wrong_vivado(tfc_compiled, tmp_path: Path) -> None:
    fake = tmp_path / "Xilinx" / "Vivado" / "2020.1"
    (fake / "bin").mkdir(parents=True)
    with pytest.raises(BnnflowError, match="no bin/vivado"):
        build_bitstream(tfc_compiled.out_dir, tmp_path / "b", env={"XILINX_VIVADO": str(fake)})
    (fake / "bin" / "vivado").write_text("#!/bin/sh\n")
    with pytest.raises(BnnflowError, match=r"Vivado 2020\.1 is too old"):
        build_bitstream(tfc_compiled.out_dir, tmp_path / "b", env={"XILINX_VIVADO": str(fake)})
    good = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    (good / "bin").mkdir(parents=True)
    (good / "bin" / "vivado").write_text("#!/bin/sh\n")
    with pytest.raises(BnnflowError, match="XILINX_HLS is not set"):
        build_bitstream(tfc_compiled.out_dir, tmp_path / "b", env={"XILINX_VIVADO": str(good)})
    env = {"XILINX_VIVADO": str(good), "XILINX_HLS": str(tmp_path / "Xilinx" / "Vitis_HLS" / "2024.2")}
    assert check_vivado("Pynq-Z2", env).version == (2024, 2)
    if not check_board_files_present("Pynq-Z2"):
        with pytest.raises(
            BnnflowError, match=r"board files for Pynq-Z2 \(pynq-z2\) not found.*finn deps update"
        ):
            build_bitstream(tfc_compiled.out_dir, tmp_path / "b", env=env)
    odd = tmp_path / "tools" / "vivado"
    (odd / "bin").mkdir(parents=True)
    (odd / "bin" / "vivado").write_text("#!/bin/sh\n")
    with pytest.raises(BnnflowError, match="cannot tell the Vivado version"):
        check_vivado("Pynq-Z2", {"XILINX_VIVADO": str(odd)})
    assert not (tmp_path / "b").exists()


def check_board_files_present(board: str) -> bool:
    from bnnflow.hls.bitstream import check_board_files

    try:
        check_board_files(board)
    except BnnflowError:
        return False
    return True


def test_cnv_published_and_fit_on_cifar10(cnv_dir: Path, cifar10_dir: Path, tmp_path: Path) -> None:
    """CNV on real CIFAR-10 test images: the published folding and the fit-to-board search.

    The published design is the session's CNV (tests/conftest.py: compiled with the
    published folding); the fit search compiles the same run again and is verified.
    """
    pub = json.loads((cnv_dir / "compile.json").read_text())
    assert pub["folding"]["mode"] == "published" and 2900 < pub["estimated_fps"] < 3200
    run = cnv_dir.parents[1]
    fit = compile_model(run, "Pynq-Z2", tmp_path / "fit", folding="fit", n_verify=3, data_dir=cifar10_dir)
    assert fit.verification.ok
    assert fit.estimate.fits(0.85) and fit.estimate.fps >= 2 * pub["estimated_fps"]
    # 3,072 input bytes a frame over the 64-bit DMA: 384 cycles, far below either fold's
    # bottleneck, so CNV stays compute-bound and the search is unchanged by the bound.
    fit_json = json.loads((tmp_path / "fit" / "compile.json").read_text())
    for report in (pub, fit_json):
        assert (report["io_bound"]["in_bytes"], report["io_bound"]["cycles"]) == (3072, 384)
        assert report["expected_fps"] == report["estimated_fps"]
        assert report["throughput_bound"] == f"compute: {report['bottleneck']}"
    assert fit_json["throughput_bound"].startswith("compute: MVAU_hls_")
    assert fit.estimate.bound == f"compute: {fit.estimate.bottleneck}"


def test_bitstream_never_replaces_a_foreign_out_folder(
    tfc_compiled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bnnflow.hls.bitstream as bitstream

    good = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    (good / "bin").mkdir(parents=True)
    (good / "bin" / "vivado").write_text("#!/bin/sh\n")
    env = {"XILINX_VIVADO": str(good), "XILINX_HLS": str(tmp_path / "Xilinx" / "Vitis_HLS" / "2024.2")}
    monkeypatch.setattr(bitstream, "check_board_files", lambda board: tmp_path)  # past the board-file check
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BnnflowError, match="refusing to replace"):
        build_bitstream(tfc_compiled.out_dir, foreign, env=env)
    assert (foreign / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(BnnflowError, match="not a folder"):
        build_bitstream(tfc_compiled.out_dir, a_file, env=env)
    assert a_file.read_text() == "mine"


def test_reshape_folding_divides_input_and_output(tfc_compiled) -> None:
    """A streaming Reshape folds input and output: its PE must divide both last axes.

    TFC's 1x28x28 -> 784: PE 49 divides 784 but not 28, and FINN's codegen fails
    with "PE must divide last axis" (SFC and LFC compiled with fit folding hit it).
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hls.folding import _layer_settings

    model = ModelWrapper(str(tfc_compiled.model_path))
    (reshape,) = [n for n in model.graph.node if n.op_type.startswith("Reshape")]
    pes = sorted(s[reshape.name]["PE"] for s in _layer_settings(model, reshape))
    assert pes == [1, 2, 4, 7, 14, 28]


def test_xnor_accumulators_hold_the_popcount(tfc_compiled) -> None:
    """Every XNOR MVAU can hold 0..MW matches; its thresholds act as before bit-width minimisation.

    finn-plus sizes these accumulators for a {0,1} x {-1,+1} product (INT7 for
    64 inputs, which cannot hold 64): see bnnflow/finnlib/xnor_acc.py.
    """
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.finnlib.xnor_acc import xnor_mvaus

    hw = ModelWrapper(str(tfc_compiled.model_path))
    ref = ModelWrapper(str(tfc_compiled.out_dir / "intermediate_models" / "step_convert_to_hw.onnx"))
    ref_nodes = xnor_mvaus(ref)
    nodes = xnor_mvaus(hw)
    assert len(nodes) == len(ref_nodes) == 4
    for node, ref_node in zip(nodes, ref_nodes, strict=True):
        inst = getCustomOp(node)
        mw = inst.get_nodeattr("MW")
        acc = DataType[inst.get_nodeattr("accDataType")]
        assert acc.min() <= 0 and acc.max() >= mw, (node.name, acc, mw)
        if inst.get_nodeattr("noActivation"):
            out = DataType[inst.get_nodeattr("outputDataType")]
            assert out.max() >= mw and hw.get_tensor_datatype(node.output[0]) == out
        else:
            # Same function on 0..MW: equal once both are clipped to 0..MW+1
            expected = np.clip(np.ceil(ref.get_initializer(ref_node.input[2])), 0, mw + 1)
            assert np.array_equal(np.clip(hw.get_initializer(node.input[2]), 0, mw + 1), expected), node.name


def test_thresholds_above_the_narrow_range_are_not_lowered(tfc_compiled) -> None:
    """A threshold above FINN's too-small accumulator range keeps its meaning (here: never fires)."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.finnlib.xnor_acc import CorrectXnorAccumulators, thresholds_by_node, xnor_mvaus

    model = ModelWrapper(str(tfc_compiled.out_dir / "intermediate_models" / "step_convert_to_hw.onnx"))
    node = xnor_mvaus(model)[1]  # 64 inputs
    mw = getCustomOp(node).get_nodeattr("MW")
    thresholds = model.get_initializer(node.input[2]).copy()
    thresholds[0] = mw + 20  # this channel never fires
    model.set_initializer(node.input[2], thresholds)
    before = thresholds_by_node(model)
    finn_only = model.transform(MinimizeAccumulatorWidth()).transform(RoundAndClipThresholds())
    lowered = finn_only.get_initializer(xnor_mvaus(finn_only)[1].input[2])[0, 0]
    assert lowered <= mw  # FINN alone: fires when all 64 bits match
    fixed = finn_only.transform(CorrectXnorAccumulators(before))
    assert fixed.get_initializer(xnor_mvaus(fixed)[1].input[2])[0, 0] > mw  # never, as trained


def test_fit_search_skips_folds_finn_rejects(tfc_compiled) -> None:
    """FINN's SetFolding picks the Reshape's PE from its output alone; the search must skip such folds."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from bnnflow.hls.folding import _foldable, _set_folding

    spec = ModelWrapper(str(tfc_compiled.out_dir / "intermediate_models" / "step_specialize_layers.onnx"))
    folded = _set_folding(spec, 98)
    (reshape,) = [n for n in folded.graph.node if n.op_type.startswith("Reshape")]
    pe = getCustomOp(reshape).get_nodeattr("PE")
    assert 784 % pe == 0 and 28 % pe != 0  # divides the output row, not the input row
    assert not _foldable(folded)
    assert _foldable(_set_folding(spec, 1000)) and _foldable(ModelWrapper(str(tfc_compiled.model_path)))


def test_compile_steps_follow_finns_builder_order() -> None:
    """The compile's and the rebuild's steps map to FINN's step names, in FINN's default order.

    bnnflow's own steps may sit between FINN's, and a list may skip FINN's
    later steps, but every FINN step before the hand-over to FINN's builder
    runs, so that the builder resumes from a folder it could have written.
    """
    from finn.builder.build_dataflow_config import default_build_dataflow_steps as finn_steps

    from bnnflow.finnlib.finn_env import step_functions
    from bnnflow.finnlib.steps import finn_order
    from bnnflow.hls.runtime_weights import REBUILD_STEPS
    from bnnflow.hls.steps import COMPILE_STEPS, RESUME_STEP

    prepare_finn()
    for steps in (COMPILE_STEPS, REBUILD_STEPS):
        names = finn_order(steps)
        assert set(names) <= set(finn_steps), set(names) - set(finn_steps)
        positions = [finn_steps.index(n) for n in names]
        assert positions == sorted(positions), list(zip(names, [s.name for s in steps], strict=True))
        assert all(s.name in step_functions() for s in steps if s.is_finn)
    ran = [s.name for s in COMPILE_STEPS if s.is_finn]
    assert ran == [*finn_steps[: finn_steps.index(RESUME_STEP)], "step_hw_codegen"]
    assert [s.name for s in REBUILD_STEPS if s.is_finn] == ran[:-1]


def test_compile_folder_holds_finns_intermediate_models(tfc_compiled) -> None:
    """One model per FINN step up to code generation, named as FINN's builder names them, and no other.

    bnnflow's own steps that only check or record save nothing, so the folder
    is what FINN's builder would have written and resumes from.
    """
    from finn.builder.build_dataflow_config import default_build_dataflow_steps as finn_steps

    from bnnflow.hls.steps import RESUME_STEP
    from bnnflow.layout import CompileDir

    folder = CompileDir(tfc_compiled.out_dir)
    saved = {p.name for p in folder.intermediate.glob("*.onnx")}  # beside FINN's partition folder
    steps = [*finn_steps[: finn_steps.index(RESUME_STEP)], "step_hw_codegen"]
    assert saved == {f"{s}.onnx" for s in steps} | {CompileDir.INPUT_GRAPH, CompileDir.PARENT_GRAPH}
    top = {p.name for p in folder.path.iterdir()}
    assert {CompileDir.SUMMARY, CompileDir.HW_GRAPH, CompileDir.CPU_MODEL, CompileDir.FOLDING} <= top
    assert {CompileDir.BUILD_CONFIG, CompileDir.ESTIMATES, CompileDir.VERIFICATION, CompileDir.CODEGEN} <= top


FAKE_FINN = """#!/bin/sh
# Stands in for finn-plus's `finn build`: records how it was called and writes what FINN's
# builder writes into the output folder on a Vivado host (bitfile, .hwh, timing report, log,
# its own deploy/ folder); exits with $FAKE_FINN_EXIT.
printf '%s\\n' "$PWD" "$@" > "$FAKE_FINN_ARGS"
out="$4"
mkdir -p "$out/bitfile" "$out/report" "$out/deploy/driver"
printf 'bit' > "$out/bitfile/finn-accel.bit"
cp "$FAKE_FINN_HWH" "$out/bitfile/finn-accel.hwh"
printf 'timing met\\n' > "$out/report/post_route_timing.rpt"
printf 'FINN deploy\\n' > "$out/deploy/driver/driver.py"
printf 'build log\\n' > "$out/build_dataflow.log"
exit "${FAKE_FINN_EXIT:-0}"
"""


def test_bitstream_runs_finns_builder_on_a_copy_of_the_design(
    tfc_compiled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the Vivado checks: `finn build` on PATH is called on a copy of the compile folder whose
    paths point at the copy; a failed build is moved aside with its log, never left as the output."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    import bnnflow.hls.bitstream as bitstream

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "finn").write_text(FAKE_FINN)
    (bin_dir / "finn").chmod(0o755)
    args_file = tmp_path / "finn-args.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_FINN_ARGS", str(args_file))
    monkeypatch.setenv("FAKE_FINN_HWH", str(tmp_path / "fake.hwh"))
    (tmp_path / "fake.hwh").write_text("<hwh/>")
    monkeypatch.setattr(bitstream, "check_board_files", lambda board: tmp_path)  # no finn deps here
    vivado = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    (vivado / "bin").mkdir(parents=True)
    (vivado / "bin" / "vivado").write_text("#!/bin/sh\n")
    env = {"XILINX_VIVADO": str(vivado), "XILINX_HLS": str(tmp_path / "Xilinx" / "Vitis_HLS" / "2024.2")}
    src = tfc_compiled.out_dir
    out = tmp_path / "bits"

    checked = []
    assert build_bitstream(src, out, env=env, check_design=checked.append) == out.absolute()
    assert checked == [src.absolute()]
    cwd, *argv = args_file.read_text().splitlines()
    assert cwd == str(out.absolute())
    built = out.absolute()
    config, graph = str(built / "dataflow_build_config.json"), str(built / "model_hw.onnx")
    assert argv == ["build", "--accept-defaults", "-o", str(built), config, graph]
    # The copy is complete and self-contained: FINN's config and the generated code point into it.
    for name in ("model_hw.onnx", "compile.json", "model.bnn", "folding.json", "intermediate_models"):
        assert (out / name).exists(), name
    assert (out / "model.bnn").read_bytes() == (src / "model.bnn").read_bytes()
    assert json.loads((out / "dataflow_build_config.json").read_text())["output_dir"] == str(out.absolute())
    codegen = ModelWrapper(str(out / "intermediate_models" / "step_hw_codegen.onnx"))
    dirs = [
        getCustomOp(n).get_nodeattr("code_gen_dir_ipgen") for n in codegen.graph.node if "_hls" in n.op_type
    ]
    assert dirs and all(d.startswith(str(out.absolute())) for d in dirs), dirs
    assert (out / "bitfile" / "finn-accel.bit").is_file()

    # The builder fails: nothing at --out, the attempt kept beside it for its log.
    monkeypatch.setenv("FAKE_FINN_EXIT", "3")
    again = tmp_path / "again"
    with pytest.raises(BnnflowError, match=r"FINN's builder failed \(exit 3\)"):
        build_bitstream(src, again, env=env)
    assert not again.exists()
    assert (tmp_path / "again.failed" / "build_dataflow.log").read_text() == "build log\n"


def test_bitstream_command_packages_the_finished_build(
    tfc_compiled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bnnflow bitstream` builds, then writes bnnflow's package to deploy/ with Vivado's bitfile,
    keeping FINN's own deploy/ as deploy.finn/."""
    import bnnflow.hls.bitstream as bitstream
    from bnnflow.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "finn").write_text(FAKE_FINN)
    (bin_dir / "finn").chmod(0o755)
    (tmp_path / "fake.hwh").write_text("<hwh/>")
    vivado = tmp_path / "Xilinx" / "Vivado" / "2024.2"
    (vivado / "bin").mkdir(parents=True)
    (vivado / "bin" / "vivado").write_text("#!/bin/sh\n")
    for key, value in (
        ("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}"),
        ("FAKE_FINN_ARGS", str(tmp_path / "args.txt")),
        ("FAKE_FINN_HWH", str(tmp_path / "fake.hwh")),
        ("XILINX_VIVADO", str(vivado)),
        ("XILINX_HLS", str(tmp_path / "Xilinx" / "Vitis_HLS" / "2024.2")),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(bitstream, "check_board_files", lambda board: tmp_path)
    out = tmp_path / "bits"
    args = ["bitstream", str(tfc_compiled.out_dir), "--out", str(out), "--data-dir", str(DATA_DIR)]
    assert main(args) == 0
    manifest = json.loads((out / "deploy" / "manifest.json").read_text())
    assert manifest["bitfile"]["present"] and manifest["bitfile"]["source"] == "vivado"
    assert (out / "deploy" / "bitfile" / "finn-accel.hwh").read_text() == "<hwh/>"
    assert (out / "deploy.finn" / "driver" / "driver.py").read_text() == "FINN deploy\n"
    assert f"bitfile and PYNQ driver in {out}" in capsys.readouterr().out
