"""The command line: help texts, one-line errors and exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bnnflow.cli import build_parser, main


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bnnflow", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"train", "evaluate", "demo"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            if not action.option_strings or action.help == "==SUPPRESS==":
                continue
            assert action.help, f"{name} {action.option_strings} has no help text"
            assert action.help.split("(")[0].strip()[:20] in text, (name, action.option_strings)


def test_unknown_model_is_one_line_error_in_a_real_process(tmp_path: Path) -> None:
    proc = _run("train", "--model", "resnet50", "--run", str(tmp_path / "r"))
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert line.startswith("bnnflow: error: unknown model 'resnet50'")
    assert not (tmp_path / "r").exists()


def test_missing_mnist_names_the_folder_and_writes_nothing(tmp_path: Path) -> None:
    proc = _run(
        "train", "--model", "tfc", "--data-dir", str(tmp_path / "nowhere"), "--run", str(tmp_path / "r")
    )
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert "nowhere" in line and "train-images-idx3-ubyte" in line
    assert not (tmp_path / "r").exists()


def test_corrupted_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert main(["evaluate", str(bad)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "corrupted checkpoint" in line
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 1
    assert "checkpoint not found" in _one_line_error(capsys.readouterr().err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["train", "--epochs", "0"], ["train", "--method", "sgd"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        _one_line_error(capsys.readouterr().err.splitlines()[-1])


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = [
        "train",
        "--run",
        str(run),
        "--epochs",
        "1",
        "--limit-train",
        "200",
        "--no-progress",
        "--tau",
        "1e-6",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digits-mlp / bop: test accuracy" in out
    assert main(["evaluate", str(run), "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 360 and 0.0 <= result["accuracy"] <= 1.0
    assert main(["evaluate", str(run), "--dataset", "mnist"]) == 1
    assert "cannot read" in capsys.readouterr().err


def _expanded_help(parser, action) -> str:  # type: ignore[no-untyped-def]
    return parser._get_formatter()._expand_help(action) if action.help else ""


def test_flags_never_show_a_default_and_options_always_do() -> None:
    """``--no-progress  no progress bars (default: True)`` read as bars off by default."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "(default" not in _expanded_help(
        commands["train"], next(a for a in commands["train"]._actions if "--no-progress" in a.option_strings)
    )
    for name, sub in commands.items():
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            text = _expanded_help(sub, action)
            if action.nargs == 0:  # a flag: its "default" is the opposite of what it does, or noise
                assert "(default: True)" not in text and "(default: False)" not in text, (name, text)
            elif action.default is not None:
                assert "default" in text, (name, action.option_strings, text)


def test_bad_training_and_export_inputs_are_one_line_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    proc = _run("train", "--run", str(a_file), "--epochs", "1", "--no-progress")
    assert proc.returncode == 1 and "is a file, not a folder" in _one_line_error(proc.stderr)
    assert a_file.read_text() == "mine"
    for flag in ("--lr", "--tau"):  # inf passed the old check and trained to nothing
        proc = _run("train", "--run", str(tmp_path / "r"), flag, "inf")
        assert proc.returncode == 2 and "must be a finite number" in proc.stderr.splitlines()[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("export", "evaluate"):
        proc = _run(command, str(empty))
        assert proc.returncode == 1
        assert _one_line_error(proc.stderr).endswith(
            "is not a run folder: it holds no best.pt or checkpoint.pt"
        )
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    proc = _run("export", str(model))
    assert proc.returncode == 1 and "is an ONNX model, not a checkpoint" in _one_line_error(proc.stderr)
    for argv in (["export", str(empty), "-n", "0"], ["export", str(empty), "--batch-size", "-1"]):
        proc = _run(*argv)
        assert proc.returncode == 2 and "must be at least 1" in proc.stderr.splitlines()[-1]
    assert not (tmp_path / "r").exists() and not (empty / "export").exists()
