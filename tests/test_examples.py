"""The worked examples in examples/, run as their users run them: `run.sh --quick`.

Each script goes from `bnnflow check` through train, export, compile, the CPU
engine and the package to `bnnflow-board bench --simulated-board` and
`bnnflow bench`; its quick mode trains one epoch on a few images per class.
The test runs the script itself, so an example that no longer runs fails
here, and then checks what the run left: the C engine equal to FINN (classes
and scores) on every test image, the simulated board's classes equal to the
golden outputs, and a bench report without problems. Each example is an
xdist group of its own, as the network matrix's networks are, so that
`make test` runs the two on different workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BOARD_CLI = ROOT / ".venv-board" / "bin" / "bnnflow-board"
STEPS = (
    "bnnflow check",
    "bnnflow train",
    "bnnflow export",
    "bnnflow compile",
    "bnnflow cpu",
    "bnnflow package",
    "bnnflow-board bench --simulated-board",
    "bnnflow bench",
)


def run_quick(example: str, work: Path) -> str:
    """``examples/<example>/run.sh --quick work``: its output; a failure shows the output's end."""
    if not BOARD_CLI.is_file():
        from helpers import unavailable

        unavailable(f"{BOARD_CLI} not found: `make board-env` builds the simulated board's environment")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("QUICK", None)
    env.pop("BNNFLOW_BOARD", None)
    r = subprocess.run(
        ["bash", str(EXAMPLES / example / "run.sh"), "--quick", str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{example}/run.sh --quick exited {r.returncode}:\n{out[-4000:]}"
    return out


def check_outcome(out: str, run: Path) -> dict:
    """Every step ran, in order; engine, FINN and the simulated board agree; the run's dataset record."""
    at = [out.find(f"== {step}") for step in STEPS]
    found = dict(zip(STEPS, at, strict=True))
    assert -1 not in at and at == sorted(at), f"steps missing or out of order: {found}"
    compiled = run / "compile" / "Pynq-Z2"
    dataset = json.loads((compiled / "dataset.json").read_text())
    n_test = dataset["n_test"]

    cpu = json.loads((compiled / "cpu.json").read_text())  # `bnnflow cpu`: every test image against FINN
    assert cpu["n_images"] == cpu["finn_images"] == n_test and cpu["first_difference"] is None
    assert cpu["finn_classes_agree"] == cpu["finn_scores_agree"] == n_test

    board = json.loads((run / "deploy" / "bench" / "bench.json").read_text())  # the simulated board
    assert board["simulated_board"] and board["agreement"] == "100%"
    assert board["fpga"]["agree_classes"] == n_test and board["fpga"]["first_mismatch"] is None

    bench = json.loads((compiled / "bench" / "bench.json").read_text())  # `bnnflow bench`
    assert bench["problems"] == [] and bench["board_report"]["simulated"]
    assert bench["cpu"]["finn"]["first_difference"] is None
    return dataset


def hardware_layers(run: Path) -> set[str]:
    import onnx

    graph = onnx.load(str(run / "compile" / "Pynq-Z2" / "model_hw.onnx")).graph
    return {node.op_type for node in graph.node}


@pytest.mark.xdist_group("example-padded-cnn-images")
def test_padded_cnn_on_an_image_folder(tmp_path: Path) -> None:
    out = run_quick("padded-cnn-images", tmp_path)
    dataset = check_outcome(out, tmp_path / "run")
    assert dataset["name"] == f"folder:{tmp_path / 'digits16'}"
    assert dataset["input_shape"] == [1, 16, 16] and dataset["num_classes"] == 10
    assert dataset["n_test"] == 10  # 6 images of each digit, one of them to test/
    assert "FMPadding_rtl" in hardware_layers(tmp_path / "run")  # the padding reached the hardware


@pytest.mark.xdist_group("example-signal-1d")
def test_signal_network_on_an_npz_archive(tmp_path: Path) -> None:
    out = run_quick("signal-1d", tmp_path)
    dataset = check_outcome(out, tmp_path / "run")
    assert dataset["name"] == f"npz:{tmp_path / 'signals.npz'}"
    assert dataset["input_shape"] == [16, 1, 32] and dataset["num_classes"] == 6
    assert dataset["class_names"][:2] == ["noise", "low-tone"]
    layers = hardware_layers(tmp_path / "run")
    assert "ConvolutionInputGenerator_rtl" in layers and "FMPadding_rtl" not in layers
