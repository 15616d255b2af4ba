"""Careless or hostile inputs to the host's commands: each is one line on stderr, exit 1, a prompt
answer (no hang, no reading of gigabytes) and nothing left half-written."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import bnnflow  # noqa: F401  (installs the torch shim before brevitas)
from bnnflow.bnncpu import CpuEngine, read_model
from bnnflow.cli import main
from bnnflow.errors import BnnflowError


def _error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The command's one error line (its progress lines may come before it), and no traceback."""
    assert main(list(args)) == 1, args
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("bnnflow: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


def test_the_python_model_reader_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    for path, what in ((fifo, "a FIFO"), (tmp_path, "a folder"), (Path("/dev/zero"), "a character device")):
        t0 = time.monotonic()
        with pytest.raises(BnnflowError, match=f"{path} is {what}, not a model file"):
            read_model(path)
        assert time.monotonic() - t0 < 5


def test_the_python_model_reader_checks_the_header_before_the_rest(tmp_path: Path) -> None:
    """A large file that is not a model (or /dev/zero) is refused without reading it whole."""
    import tracemalloc

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that take no disk
    tracemalloc.start()
    try:
        with pytest.raises(BnnflowError, match="bad magic"):
            read_model(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_model_load_errors_name_the_path_once(tmp_path: Path, digits_dir: Path) -> None:
    bad = tmp_path / "bad.bnn"
    bad.write_bytes((digits_dir / "model.bnn").read_bytes()[:100])
    with pytest.raises(BnnflowError) as exc:
        CpuEngine(bad)
    assert str(exc.value).count(str(bad)) == 1, str(exc.value)
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    with pytest.raises(BnnflowError, match="FIFO") as exc:
        CpuEngine(fifo)
    assert str(exc.value).count(str(fifo)) == 1


def test_an_empty_onnx_file_is_one_line_and_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "export" / "model.onnx").write_bytes(b"")
    line = _error(capsys, "compile", str(run / "export" / "model.onnx"), "--verify", "0")
    assert "is not an ONNX model (no nodes, no input, no output, no opset)" in line
    assert sorted(p.name for p in run.iterdir()) == ["export"]  # no empty compile/ left behind
    folder = tmp_path / "compiled"
    (folder / "intermediate_models").mkdir(parents=True)
    (folder / "model_hw.onnx").write_bytes(b"")
    (folder / "intermediate_models" / "dataflow_parent.onnx").write_bytes(b"")
    line = _error(capsys, "cpu", "export", str(folder))
    assert "model_hw.onnx is not an ONNX model" in line


def test_a_failed_compile_leaves_no_empty_compile_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx
    from onnx import TensorProto, helper

    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), run / "export" / "model.onnx"
    )
    line = _error(capsys, "compile", str(run / "export" / "model.onnx"), "--verify", "0")
    assert "FINN cannot map these layers" in line
    assert sorted(p.name for p in run.iterdir()) == ["export"]


def test_another_designs_model_file_in_a_compile_folder(
    tmp_path: Path, digits_dir: Path, tfc_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "digits"
    shutil.copytree(digits_dir, folder)
    shutil.copy2(tfc_dir / "model.bnn", folder / "model.bnn")
    line = _error(capsys, "cpu", "run", str(folder), "--finn", "5")
    assert "model.bnn is another design's model file: it takes 1x28x28 images, this design 1x8x8" in line
    assert f"bnnflow cpu export {folder}" in line
    line = _error(capsys, "package", str(folder), "--out", str(tmp_path / "pkg"), "--images", "4")
    assert "model.bnn is another design's model file" in line and not (tmp_path / "pkg").exists()


def test_an_out_folder_under_a_file(
    tmp_path: Path, digits_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    line = _error(capsys, "package", str(digits_dir), "--out", str(a_file / "pkg"), "--images", "4")
    assert f"{a_file} is not a folder" in line
    assert a_file.read_text() == "mine"
