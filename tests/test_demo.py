"""The demo end to end, shortened: three trainings, export, compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bnnflow.cli import main
from bnnflow.demo import run_demo


def test_demo_runs_the_whole_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_demo(tmp_path / "demo", epochs=1, progress=False, board="Pynq-Z2", n_verify=5)
    out = capsys.readouterr().out
    assert {"bop", "bop-compact", "latent-adam"} == set(summary["training"])
    assert "bytes/weight" in out and "frames/s" in out
    assert summary["training"]["bop"]["bytes_per_binary_weight"] == 8.0
    assert summary["training"]["bop-compact"]["bytes_per_binary_weight"] == 6.0
    assert summary["training"]["latent-adam"]["bytes_per_binary_weight"] == 12.0
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


def test_demo_rejects_unknown_board_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--run", str(tmp_path / "d"), "--board", "Zedboard"]) == 1
    assert "Zedboard" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
