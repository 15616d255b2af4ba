"""``bnnflow compile --host-binarize``: the input threshold of a 1-bit-input network runs on the host.

The compiled graph takes the thresholded bits (BINARY); the verification
chain checks host thresholding + graph against the QONNX model; the CPU
engine's model file keeps the threshold as its first layer; the package's
board thresholds and packs the images before the DMA, and the simulated
board runs the design at 100% agreement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import made_once
from helpers import quick_checkpoint, unavailable

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.errors import BnnflowError

REPO = Path(__file__).resolve().parents[1]
BOARD_PYTHON = REPO / ".venv-board" / "bin" / "python"


@pytest.fixture(scope="module")
def hb_design(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits MLP (1-bit input) compiled with --host-binarize, 100 images verified."""
    from bnnflow.export import export_model
    from bnnflow.hls import compile_model

    def make(root: Path) -> str:
        run = quick_checkpoint(root / "run" / "best.pt", "digits-mlp", "digits", 40, 16).parent
        export_model(run, n_verify=20)
        out = compile_model(run, "Pynq-Z2", n_verify=100, host_binarize=True, log=None).out_dir
        return str(out)

    return Path(made_once(tmp_path_factory, "host-binarize-digits", make))


def _graphs(compile_dir: Path) -> tuple:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from bnnflow.finnlib.finn_env import prepare_finn
    from bnnflow.layout import CompileDir

    prepare_finn()
    folder = CompileDir(compile_dir)
    info = json.loads(folder.summary.read_text())
    q = cleanup_model(ModelWrapper(info["input"]))
    s = ModelWrapper(str(folder.step_graph("step_streamline")))
    h = ModelWrapper(str(folder.step_graph("step_convert_to_hw")))
    return q, s, h


def _test_images(compile_dir: Path, n: int) -> np.ndarray:
    from bnnflow.data import recorded_test_images

    images, _, _ = recorded_test_images(compile_dir, (1, 8, 8), n, None)
    return np.ascontiguousarray(images, dtype=np.uint8)


def test_compiled_graph_takes_bits_and_the_chain_passed(hb_design: Path) -> None:
    from bnnflow.finnlib.host_threshold import read_thresholds
    from bnnflow.hls.iobound import io_bound
    from bnnflow.layout import CompileDir

    info = json.loads(CompileDir(hb_design).summary.read_text())
    assert info["host_binarize"] is True
    assert info["verification"]["n_images"] == 100 and info["verification"]["first_mismatch"] is None
    assert info["verification"]["activations_identical"] == 100
    _, s, h = _graphs(hb_design)
    for graph in (s, h):
        assert graph.get_tensor_datatype(graph.graph.input[0].name).name == "BINARY"
    assert not [n for n in h.graph.node if n.op_type.startswith("Thresholding")]
    assert s.find_consumer(s.graph.input[0].name).op_type != "MultiThreshold"
    op = read_thresholds(hb_design)
    assert op is not None and op["op"] == "threshold" and len(op["values"]) in (1, 64)
    # digits' pixels are 0..16: the threshold the QONNX input quantizer implies lies inside that range
    assert all(0 < v <= 16 for v in op["values"])
    io = io_bound(hb_design)
    assert io.in_bytes * 8 >= 64 and io.in_bytes < 64  # 1 bit per pixel (words padded to bytes), not 64 B
    assert info["io_bound"]["in_bytes"] == io.in_bytes


def test_a_wrong_host_threshold_fails_the_chain(hb_design: Path) -> None:
    from bnnflow.finnlib.host_threshold import read_thresholds
    from bnnflow.hls.verify import verify_chain

    q, s, h = _graphs(hb_design)
    images = _test_images(hb_design, 40)
    op = read_thresholds(hb_design)
    right = verify_chain(q, s, h, images, host_op=op)
    assert right.ok, right.first_mismatch
    wrong = dict(op, values=[min(v + 4, 256) for v in op["values"]])
    result = verify_chain(q, s, h, images, host_op=wrong)
    assert not result.ok
    assert "layer 0" in result.first_mismatch and "QONNX dot product" in result.first_mismatch
    # and the graph given the uint8 pixels instead of the bits fails the same way
    assert not verify_chain(q, s, h, images).ok


def test_cpu_engine_takes_the_images_and_equals_finn(hb_design: Path) -> None:
    from bnnflow.bnncpu import CpuEngine
    from bnnflow.bnncpu.modelfile import LayerKind, read_model
    from bnnflow.cpu.finn_reference import finn_outputs
    from bnnflow.layout import CompileDir

    model = read_model(CompileDir(hb_design).cpu_model)
    assert model.layers[0].kind == LayerKind.THRESHOLD  # the host's threshold, kept in the file
    images = _test_images(hb_design, 150)
    ref = finn_outputs(hb_design, images)
    with CpuEngine(CompileDir(hb_design).cpu_model) as engine:
        classes, scores = engine.run(images, threads=1)
    assert np.array_equal(classes, ref.classes) and np.array_equal(scores, ref.scores)
    assert len(set(classes.tolist())) > 3  # a trained design, not a constant answer


@pytest.mark.parametrize("word", [8, 14, 16, 49, 64])
def test_pack_bits_is_finn_plus_drivers_packing(word: int) -> None:
    from bnnflow_board.hostbits import pack_bits
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.core.datatype import DataType

    rng = np.random.default_rng(word)
    bits = rng.integers(0, 2, size=(3, 112 // (word if 112 % word == 0 else 7), word), dtype=np.uint8)
    finn = finnpy_to_packed_bytearray(bits.astype(np.float32), DataType["BINARY"], True, True)
    assert np.array_equal(pack_bits(bits), finn)


def test_threshold_op_is_checked() -> None:
    from bnnflow_board.errors import BoardError
    from bnnflow_board.hostbits import threshold_images, threshold_op

    images = np.arange(2 * 64, dtype=np.uint8).reshape(2, 1, 8, 8)
    op = threshold_op(np.full((1, 1, 1), 9))
    assert np.array_equal(threshold_images(images, op), (images >= 9).astype(np.uint8))
    per_pixel = threshold_op(np.arange(64).reshape(1, 8, 8))
    assert threshold_images(images, per_pixel)[0].all()
    for bad in (dict(op, values=[300]), dict(op, shape=[2, 1]), dict(op, values=[1, 2])):
        with pytest.raises(BoardError):
            threshold_images(images, bad)


EIGHT_BIT_MLP = textwrap.dedent(
    """
    from brevitas_examples.bnn_pynq.models.FC import FC

    def build(input_shape, num_classes):
        return FC(num_classes=num_classes, weight_bit_width=1, act_bit_width=1, in_bit_width=8,
                  in_channels=input_shape[0], out_features=[32], in_features=input_shape[1:])
    """
)


def test_an_8_bit_input_network_is_refused_in_one_line(tmp_path: Path) -> None:
    from bnnflow.export import export_model
    from bnnflow.training.trainer import TrainConfig, train

    net = tmp_path / "net8.py"
    net.write_text(EIGHT_BIT_MLP)
    run = tmp_path / "run"
    torch.set_num_threads(1)
    train(TrainConfig(model=f"{net}:build", run_dir=str(run), dataset="digits", epochs=1, batch_size=50,
                      limit_train=200, limit_test=100, device="cpu", threads=1, progress=False))  # fmt: skip
    export_model(run, n_verify=10)
    r = subprocess.run(
        [sys.executable, "-m", "bnnflow", "compile", str(run), "--host-binarize", "--verify", "0"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    one_bit = "--host-binarize needs a network whose first layer takes 1-bit inputs"
    assert f"{one_bit}; this one's first layer reads 8-bit inputs" in lines[-1]
    assert "8-bit" in lines[-1]
    assert not (run / "compile" / "Pynq-Z2").exists()  # nothing half-written
    with pytest.raises(BnnflowError):  # the same from the library
        from bnnflow.hls import compile_model

        compile_model(run, "Pynq-Z2", n_verify=0, host_binarize=True, log=None)


def test_package_runs_at_100_percent_on_the_simulated_board(hb_design: Path, tmp_path: Path) -> None:
    from bnnflow.deploy.package import build_package

    if not BOARD_PYTHON.is_file():
        unavailable(f"no board environment at {BOARD_PYTHON} (make board-env)")
    pkg = build_package(hb_design, tmp_path / "pkg", n_images=48, log=None)
    manifest = json.loads((pkg / "manifest.json").read_text())
    first = manifest["fpga_input"]["from_images"][0]
    assert first["op"] == "threshold" and "BINARY" in manifest["fpga_input"]["datatype"]
    # this checkout's bnnflow-board and bnnflow, whatever the environments have installed
    src = f"{REPO / 'src'}:{REPO / 'host_driver' / 'src'}"
    compiler = tmp_path / "compiler-python"
    compiler.write_text(f'#!/bin/sh\nPYTHONPATH={src} exec {sys.executable} "$@"\n')
    compiler.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO / "host_driver" / "src")
    out = tmp_path / "bench"
    r = subprocess.run(
        [str(BOARD_PYTHON), "-m", "bnnflow_board.cli", "bench", str(pkg), "--simulated-board",
         "--compiler-python", str(compiler), "--sim-exec", "python", "--sim-cache", str(tmp_path / "cache"),
         "--out", str(out), "--batch-sizes", "1,8", "--warmup", "1", "--repeats", "1"],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["agreement"] == "100%" and report["fpga"]["first_mismatch"] is None
    assert report["fpga"]["agree_classes"] == report["testset"]["n"] == 48


def test_tfc_fit_folds_past_the_uint8_dma_bound(tmp_path_factory: pytest.TempPathFactory) -> None:
    """TFC's uint8 input caps it at 1,020,408 frames/s on the Pynq-Z2 (784 B through a 64-bit
    port at 100 MHz); with the bits as input the fit search folds past that."""
    from helpers import SHARED_DATA, need_mnist

    from bnnflow.export import export_model
    from bnnflow.hls import compile_model
    from bnnflow.hls.report import format_table

    need_mnist()
    run = quick_checkpoint(
        tmp_path_factory.mktemp("tfc") / "best.pt", "tfc", "mnist", 5, 255, SHARED_DATA
    ).parent
    export_model(run, n_verify=5, data_dir=SHARED_DATA)
    result = compile_model(run, "Pynq-Z2", n_verify=0, host_binarize=True, data_dir=SHARED_DATA, log=None)
    hb = result.estimate.extra["host_binarize"]
    assert hb["in_bytes_uint8"] == 784 and hb["io_fps_uint8"] == pytest.approx(1e8 / 98)
    assert hb["in_bytes"] < 784 / 4 and hb["io_fps"] > 5 * hb["io_fps_uint8"]
    assert result.estimate.expected_fps > 2 * hb["io_fps_uint8"]  # FINN's estimate of the new fold
    assert "host-binarize:" in format_table(result.estimate)


def test_bench_reports_the_dma_bound_and_the_hosts_cost(hb_design: Path, tmp_path: Path) -> None:
    from bnnflow.bench.report import bench_design

    result = bench_design(hb_design, out=tmp_path / "bench", limit=200, finn_images=20, log=None)
    hb = result.report["host_binarize"]
    assert hb["dma"]["in_bytes"] < hb["dma"]["in_bytes_uint8"] == 64
    assert hb["dma"]["io_fps"] > hb["dma"]["io_fps_uint8"]
    here = hb["measured_here"]
    assert here["frames_per_s"] > 0 and here["fraction_of_frame_time"] == pytest.approx(
        hb["dma"]["expected_fps"] / here["frames_per_s"]
    )
    assert hb["memory_bound"]["bytes_per_frame"] == 64 + 2 * hb["dma"]["in_bytes"]
    assert (
        "host-binarize:" in result.text and "host thresholding (host-binarize), measured here" in result.text
    )
    assert (
        "host thresholding, estimated" in result.text
        or "host thresholding on the board's ARM: no estimate" in result.text
    )


def test_host_binarize_with_runtime_weights_is_refused(tmp_path: Path) -> None:
    from bnnflow.hls import compile_model

    with pytest.raises(BnnflowError, match="--host-binarize and --runtime-weights cannot be combined"):
        compile_model(tmp_path / "none.onnx", "Pynq-Z2", host_binarize=True, runtime_weights=True, log=None)


def test_a_host_binarized_folder_without_its_thresholds_is_one_line(hb_design: Path, tmp_path: Path) -> None:
    """Without host_thresholds.json a host-binarized design would silently take raw pixels as bits."""
    import shutil

    from bnnflow.finnlib.host_threshold import read_thresholds
    from bnnflow.layout import CompileDir

    folder = tmp_path / "Pynq-Z2"
    folder.mkdir()
    shutil.copy(CompileDir(hb_design).summary, CompileDir(folder).summary)
    with pytest.raises(BnnflowError, match="compiled with --host-binarize but has no"):
        read_thresholds(folder)
    CompileDir(folder).host_thresholds.write_text("{not json")
    with pytest.raises(BnnflowError, match="not a readable threshold file"):
        read_thresholds(folder)
