"""The demo end to end, shortened: three trainings, export, compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnnflow.cli import main
from bnnflow.demo import BOARD_CLI, BOARD_IMAGES, run_demo


def test_demo_runs_the_whole_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # FINN's Python execution on the simulated board: the demo's C simulation costs a minute more
    summary = run_demo(
        tmp_path / "demo", epochs=1, progress=False, board="Pynq-Z2", n_verify=5, sim_exec="python"
    )
    out = capsys.readouterr().out
    assert {"bop", "bop-compact", "latent-adam"} == set(summary["training"])
    assert "bytes/weight" in out and "frames/s" in out
    # persistent state per binary weight (plus per-layer counters, under 0.01 byte):
    # weight, gradient, average; sign bit and bfloat16 average; weight, gradient, two moments
    assert 12.0 < summary["training"]["bop"]["bytes_per_binary_weight"] < 12.01
    assert 2.125 < summary["training"]["bop-compact"]["bytes_per_binary_weight"] < 2.135
    assert 16.0 < summary["training"]["latent-adam"]["bytes_per_binary_weight"] < 16.01
    hw = summary["hardware"]
    assert hw["export"]["max_abs_logit_diff"] <= 1e-4
    assert hw["verification"]["n_images"] == 5 and hw["verification"]["first_mismatch"] is None
    assert hw["fps"] > 0
    cpu = hw["cpu"]  # the C engine on the design: all 360 test images, 5 compared with FINN
    assert cpu["n_images"] == 360 and cpu["finn_images"] == 5 and cpu["first_difference"] is None
    assert "agreement with FINN      5/5 classes" in out
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["hardware"]["board"] == "Pynq-Z2"
    for sub in ("bop", "bop-compact", "latent-adam"):
        assert (tmp_path / "demo" / sub / "best.pt").is_file()
    assert (tmp_path / "demo" / "bop" / "compile" / "Pynq-Z2").is_dir()

    # the ending: the design packaged, on the simulated board, then the FPGA-against-CPU table
    bench = summary["bench"]
    assert out.rstrip().splitlines()[-1].startswith("report in ") and "== FPGA against CPU" in out
    table = out[out.index("== FPGA against CPU") :]
    assert "CPU, measured here" in table and "FPGA, estimated" in table
    assert bench["cpu"]["finn"]["classes_agree"] == 5 and bench["problems"] == []
    sim = summary["simulated_board"]
    if BOARD_CLI.is_file():
        assert sim["exit_code"] == 0 and "--simulated-board" in sim["command"]
        brd = bench["board_report"]
        assert brd["simulated"] and brd["agreement"] == "100%" and brd["n_images"] == BOARD_IMAGES
        assert brd["fpga"]["classes_agree"] == brd["cpu"]["scores_agree"] == BOARD_IMAGES
        sim_rows = [
            line for line in table.splitlines() if line.startswith("simulated board  ")
        ]  # the rows, not the note
        # FPGA accelerator and end-to-end, the CPU engine through Python and by its own C loop
        assert len(sim_rows) == 4 and not any("measured" in line for line in sim_rows)
        assert "C loop" in sim_rows[3]
    else:  # no board environment: said plainly, and the table without board figures
        assert "make board-env" in sim["skipped"] and bench["board_report"] is None
        assert "`make board-env` builds" in out


def test_demo_without_the_board_environment_says_so(
    tmp_path: Path, digits_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bnnflow.demo import _simulated_board

    missing = tmp_path / "no-board-env" / "bin" / "bnnflow-board"
    result = _simulated_board(tmp_path / "run", digits_dir, missing, "python")
    out = capsys.readouterr().out
    assert result["skipped"].startswith(f"{missing} not found") and "report" not in result
    assert f"simulated board: not run: {missing} not found: `make board-env` builds" in out
    assert (tmp_path / "run" / "deploy" / "manifest.json").is_file()  # the package is made all the same


def test_demo_rejects_unknown_board_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--run", str(tmp_path / "d"), "--board", "Zedboard"]) == 1
    assert "Zedboard" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
