"""Tests for bnnflow.deploy: the deployment package (host side).

The board side (bnnflow-board, the simulated board) is tested in host_driver/tests,
in .venv-board; these tests build packages from real compiled designs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bnnflow_board.deployformat import apply_input_ops
from helpers import quick_checkpoint

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.deploy.package import (
    MANIFEST,
    build_package,
    host_input_ops,
    verification_warnings,
)
from bnnflow.errors import BnnflowError
from bnnflow.export import export_model
from bnnflow.hls import compile_model

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def digits_compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "digits"
    quick_checkpoint(run / "best.pt", "digits-mlp", "digits", 40, 16)
    export_model(run, n_verify=20)
    return compile_model(run, "Pynq-Z2", folding="fps:20000", n_verify=20, log=None).out_dir


@pytest.fixture(scope="module")
def digits_package(digits_compiled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(digits_compiled, tmp_path_factory.mktemp("pkg") / "deploy", n_images=30, log=None)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # this tree's bnnflow and bnnflow-board (which it reads the deployment format from)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent / "host_driver" / "src")])}
    return subprocess.run(
        [sys.executable, "-m", "bnnflow", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_package_layout_and_manifest(digits_package: Path, digits_compiled: Path) -> None:
    m = json.loads((digits_package / MANIFEST).read_text())
    assert m["format"] == "bnnflow-deploy" and m["board"] == "Pynq-Z2" and m["part"] == "xc7z020clg400-1"
    assert m["bitfile"]["present"] is False and "Vivado" in m["bitfile"]["why"]
    assert not (digits_package / "bitfile").exists() and m["timing_report"] is None
    # every file listed with its sha256, nothing unlisted but the manifest
    on_disk = {str(p.relative_to(digits_package)) for p in digits_package.rglob("*") if p.is_file()}
    assert on_disk - set(m["files"]) == {MANIFEST}
    for rel, digest in m["files"].items():
        assert hashlib.sha256((digits_package / rel).read_bytes()).hexdigest() == digest, rel
    for rel in ("driver/settings.json", "model.bnn", "cpu/include/bnncpu.h", "install.sh",
                "bnnflow-board/pyproject.toml", "bnnflow-board/src/bnnflow_board/cli.py"):  # fmt: skip
        assert rel in m["files"], rel
    assert (digits_package / "model.bnn").read_bytes() == (digits_compiled / "model.bnn").read_bytes()
    assert os.access(digits_package / "install.sh", os.X_OK)
    assert not list(digits_package.parent.glob(".*.tmp"))
    # weights fixed in the bitstream: no runtime weight files, no AXI-lite port but the DMAs'
    assert m["runtime_weights"] is None and not (digits_package / "driver" / "runtime_weights").exists()
    assert len(m["design"]["fingerprint"]) == 64
    assert [i["axilite_bytes"] for i in m["instances"] if i["role"] == "kernel"] == [0]


def test_driver_settings_are_finns_with_zynq_dma_names(digits_package: Path) -> None:
    info = json.loads((digits_package / "driver" / "settings.json").read_text())["driver_information"]
    shapes = info["io_shape_dict"]
    assert info["driver_type"] == "FINNDMAOverlay" and info["platform"] == "zynq-iodma"
    assert info["fclk_mhz"] == pytest.approx(100.0)
    # names FINN's MakeZYNQProject would give the IODMA partitions, filled in by FINN's own MakePYNQDriver
    assert shapes["idma_names"] == ["idma0"] and shapes["odma_names"] == ["odma0"]
    assert shapes["idt"] == ["DataType['UINT8']"] and shapes["ishape_normal"] == [[1, 1, 8, 8]]
    assert shapes["oshape_normal"] == [[1, 1]]
    m = json.loads((digits_package / MANIFEST).read_text())
    assert [(i["name"], i["role"]) for i in m["instances"]] == [
        ("idma0", "idma"),
        ("StreamingDataflowPartition_1", "kernel"),
        ("odma0", "odma"),
    ]
    assert m["instances"][0]["vlnv"] == "xilinx_finn:finn:StreamingDataflowPartition_0:1.0"


def test_golden_outputs_agree_with_the_qonnx_model(digits_package: Path, digits_compiled: Path) -> None:
    """The golden classes (FINN's hardware-layer graph) are the exported QONNX model's on the same images."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    m = json.loads((digits_package / MANIFEST).read_text())
    ts = m["testset"]
    assert (
        ts["dataset"] == "digits"
        and ts["n"] == 30
        and ts["image_shape"] == [1, 8, 8]
        and ts["n_classes"] == 10
    )
    images = np.fromfile(digits_package / ts["images"], np.uint8).reshape(30, 1, 8, 8)
    labels = np.fromfile(digits_package / ts["labels"], np.uint8)
    classes = np.fromfile(digits_package / ts["golden_classes"], "<i4")
    scores = np.fromfile(digits_package / ts["golden_scores"], "<i4").reshape(30, 10)
    qonnx = ModelWrapper(str(digits_compiled / "intermediate_models" / "input_qonnx.onnx"))
    iname, oname = qonnx.graph.input[0].name, qonnx.graph.output[0].name
    ref = [
        int(execute_onnx(qonnx, {iname: x[None].astype(np.float32)})[oname].reshape(-1)[0]) for x in images
    ]
    assert classes.tolist() == ref
    # the class is the lowest index of the highest score (LabelSelect's tie rule)
    assert classes.tolist() == np.argmax(scores, axis=1).tolist()
    assert ts["golden_accuracy"] == pytest.approx(float(np.mean(classes == labels)))
    assert ts["golden_accuracy"] > 0.5


def test_package_cli_and_bad_inputs(digits_compiled: Path, tmp_path: Path) -> None:
    run = digits_compiled.parent.parent
    out = tmp_path / "bitstreams" / "p"
    r = _cli("package", str(run), "--out", str(out), "--images", "5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "WITHOUT a bitfile" in r.stderr and (out / MANIFEST).is_file()
    # not a design
    r = _cli("package", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"bnnflow: error: {tmp_path} is not a compile folder (no compile.json and model_hw.onnx)"
    ]
    # a compile folder from a bnnflow that wrote no model.bnn
    old = tmp_path / "old"
    shutil.copytree(digits_compiled, old)
    (old / "model.bnn").unlink()
    r = _cli("package", str(old), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "no model.bnn" in r.stderr and "older bnnflow" in r.stderr and not (tmp_path / "o").exists()
    (old / "model.bnn").write_bytes(b"not a model")
    with pytest.raises(BnnflowError, match="not a bnncpu model file"):
        build_package(old, tmp_path / "o", n_images=5, log=None)
    # a foreign --out is never replaced
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BnnflowError, match="refusing to replace"):
        build_package(digits_compiled, foreign, n_images=5, log=None)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    # an earlier package is
    build_package(digits_compiled, out, n_images=4, log=None)
    assert json.loads((out / MANIFEST).read_text())["testset"]["n"] == 4
    with pytest.raises(BnnflowError, match="at least 1"):
        build_package(digits_compiled, tmp_path / "z", n_images=0, log=None)
    with pytest.raises(BnnflowError, match="no design compiled for Ultra96"):
        build_package(run, tmp_path / "z", board="Ultra96", log=None)


def test_package_from_a_vivado_build_folder(
    digits_compiled: Path, digits_package: Path, tmp_path: Path
) -> None:
    """A `bnnflow bitstream` folder: Vivado's bitfile, .hwh, FINN's settings.json and timing report are kept.

    No Vivado here: the Vivado outputs are stand-ins placed where FINN's builder writes them.
    """
    build = tmp_path / "bitstreams" / "digits-Pynq-Z2"
    shutil.copytree(digits_compiled, build)
    (build / "bitfile").mkdir()
    (build / "bitfile" / "finn-accel.bit").write_bytes(b"stand-in for Vivado's bitfile")
    (build / "bitfile" / "finn-accel.hwh").write_text("<EDKSYSTEM/>")
    shutil.copytree(digits_package / "driver", build / "driver")
    (build / "report").mkdir(exist_ok=True)
    (build / "report" / "post_route_timing.rpt").write_text("Design Timing Summary\n")
    (build / "deploy").mkdir()  # FINN's own deployment folder, replaced by bnnflow's
    out = build_package(build, log=None)
    assert out == build / "deploy"
    m = json.loads((out / MANIFEST).read_text())
    assert m["bitfile"] == {"present": True, "bit": "bitfile/finn-accel.bit", "hwh": "bitfile/finn-accel.hwh",
                            "source": "vivado"}  # fmt: skip
    assert m["timing_report"] == "report/post_route_timing.rpt"
    assert (out / "bitfile" / "finn-accel.bit").read_bytes() == b"stand-in for Vivado's bitfile"
    (build / "bitfile" / "finn-accel.hwh").unlink()
    with pytest.raises(BnnflowError, match="has no finn-accel.hwh beside it"):
        build_package(build, tmp_path / "again", log=None)


def test_host_and_board_share_the_deployment_format() -> None:
    """The host writes and reads packages and reports with the board's own definitions, not copies."""
    from bnnflow_board import deployformat, hostbits

    from bnnflow.bench import boardreport, report
    from bnnflow.deploy import package, update
    from bnnflow.finnlib import boards

    shared = {
        package: ("MANIFEST", "FORMAT", "BITFILE", "HWH", "TIMING_REPORT", "RUNTIME_WEIGHTS",
                  "DRIVER_SETTINGS", "MODEL", "CPU_SOURCES", "TESTSET_IMAGES", "labels_file",
                  "GOLDEN_CLASSES", "GOLDEN_SCORES", "BOARD_RUNTIME", "INSTALL_SCRIPT", "transpose_op",
                  "reshape_op", "sha256"),
        update: ("MANIFEST", "FORMAT", "UPDATE_FORMAT", "UPDATE_RUNTIME_WEIGHTS", "MODEL", "GOLDEN_CLASSES",
                 "GOLDEN_SCORES", "sha256", "sha256_bytes"),
        boardreport: ("BENCH_DIR", "BENCH_REPORT", "REPORT_KEYS", "REPORT_MODEL_SHA256", "same_board"),
        report: ("sha256",),
        boards: ("find_board",),
    }  # fmt: skip
    for module, names in shared.items():
        for name in names:
            assert getattr(module, name) is getattr(deployformat, name), f"{module.__name__}.{name}"
    # the images the host checks against are prepared as the board prepares them
    assert package.apply_host_ops is hostbits.apply_host_ops
    # one board table: the compiler's boards are the deployment format's, FINN's parts included
    assert list(boards.BOARDS) == list(deployformat.BOARDS)
    for name, board in boards.BOARDS.items():
        assert (board.part, board.cpu) == (deployformat.BOARDS[name].part, deployformat.BOARDS[name].cpu)
    assert boards.get_board("pynq_z2") is boards.get_board("PYNQ-Z2") is boards.BOARDS["Pynq-Z2"]
    with pytest.raises(
        BnnflowError, match="unknown board 'Zybo'; choose one of: Pynq-Z2, Ultra96, Ultra96-V2"
    ):
        boards.get_board("Zybo")


def test_host_input_ops_follow_finns_parent_graph(tmp_path: Path) -> None:
    """CNV's NCHW->NHWC Transpose stays on the host in FINN's parent graph; the package records it."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 32, 32, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("StreamingDataflowPartition", ["t"], ["y"], domain="finn.custom_op.fpgadataflow"),
    ]
    parent = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "p", [x], [y], value_info=[t])))
    ops = host_input_ops(parent)
    assert ops == [{"op": "transpose", "perm": [0, 2, 3, 1]}]
    images = np.arange(2 * 3 * 32 * 32, dtype=np.uint8).reshape(2, 3, 32, 32)
    assert np.array_equal(apply_input_ops(images, ops), images.transpose(0, 2, 3, 1))
    nodes[0] = helper.make_node("Relu", ["x"], ["t"])
    parent = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "p", [x], [y], value_info=[t])))
    with pytest.raises(BnnflowError, match=r"\(Relu\) runs on the host"):
        host_input_ops(parent)


def test_package_refuses_xnor_accumulators_that_wrap(
    digits_package: Path, digits_compiled: Path, tmp_path: Path
) -> None:
    """A compile folder whose XNOR accumulators cannot hold the popcount (as FINN made them) is refused."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    assert json.loads((digits_package / MANIFEST).read_text())["warnings"] == []
    old = tmp_path / "old" / "compile" / "Pynq-Z2"
    shutil.copytree(digits_compiled, old)
    model = ModelWrapper(str(old / "model_hw.onnx"))
    last = [n for n in model.graph.node if n.op_type.startswith("MVAU")][-1]
    getCustomOp(last).set_nodeattr("outputDataType", "INT8")  # 256 inputs: a popcount reaches 256
    model.save(str(old / "model_hw.onnx"))
    with pytest.raises(BnnflowError, match=r"too narrow for the popcount \(MVAU_hls_2: outputDataType INT8"):
        build_package(old, tmp_path / "deploy", n_images=4, log=None)
    assert not (tmp_path / "deploy").exists()


def test_package_warns_where_the_compile_was_not_verified(digits_dir: Path, tmp_path: Path) -> None:
    """Compiled with --verify 0 (digits_dir): nothing compared it with its QONNX model; the package says so.

    The board prints the manifest's warnings; a verified compile's package has none
    (test_package_refuses_xnor_accumulators_that_wrap).
    """
    out = build_package(digits_dir, tmp_path / "deploy", n_images=4, log=None)
    warnings = json.loads((out / MANIFEST).read_text())["warnings"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("the compile's verification chain did not run (compiled with --verify 0)")
    assert "checked only against golden outputs from FINN's execution of the same design" in warnings[0]


def test_verification_that_skipped_a_layer_is_a_warning(digits_compiled: Path, tmp_path: Path) -> None:
    """compile.json's verification must name every weight layer of the graph the chain checks."""
    assert verification_warnings(digits_compiled) == []
    folder = tmp_path / "compile"
    (folder / "intermediate_models").mkdir(parents=True)
    shutil.copy2(
        digits_compiled / "intermediate_models" / "step_convert_to_hw.onnx", folder / "intermediate_models"
    )
    info = json.loads((digits_compiled / "compile.json").read_text())
    checked = info["verification"]["layers"]
    info["verification"]["layers"] = checked[:-1]
    (folder / "compile.json").write_text(json.dumps(info))
    [warning] = verification_warnings(folder)
    assert warning.startswith(
        f"the compile's verification chain did not check {checked[-1]} (it checked {len(checked) - 1} of "
        f"the design's {len(checked)} weight layers on 20 images)"
    )
    assert "checked only against golden outputs from FINN's execution of the same design" in warning
