"""Atomic writes and checkpoint validation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from bnnflow.errors import BnnflowError
from bnnflow.runs import atomic_directory, atomic_write_json, load_checkpoint, load_model, save_checkpoint


def test_atomic_write_leaves_no_temp_and_normal_mode(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a" / "x.json", {"k": 1})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.json"]
    mode = stat.S_IMODE((tmp_path / "a" / "x.json").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_atomic_directory_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "one.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "two.txt").write_text("2")
            raise RuntimeError("boom")
    assert [p.name for p in target.iterdir()] == ["one.txt"]  # the old folder survives
    with atomic_directory(target) as tmp:
        (tmp / "three.txt").write_text("3")
    assert [p.name for p in target.iterdir()] == ["three.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_checkpoint_validation(tmp_path: Path) -> None:
    torch.save({"something": "else"}, tmp_path / "foreign.pt")
    with pytest.raises(BnnflowError, match="not a bnnflow checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(BnnflowError, match="corrupted checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    save_checkpoint(tmp_path / "unknown.pt", {"model": "vgg16", "model_state": {}})
    with pytest.raises(BnnflowError, match="unknown model 'vgg16'"):
        load_model(tmp_path / "unknown.pt")
    save_checkpoint(tmp_path / "mismatch.pt", {"model": "tfc", "model_state": {"w": torch.zeros(1)}})
    with pytest.raises(BnnflowError, match="does not match model 'tfc'"):
        load_model(tmp_path / "mismatch.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": "tfc", "model_state": {}})
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(BnnflowError, match="corrupted checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")


def test_atomic_directory_refuses_to_replace_foreign_paths(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(BnnflowError, match="not a folder"):
        with atomic_directory(a_file, marker="export.json"):
            pass
    assert a_file.read_text() == "mine"
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BnnflowError, match="holds no export.json"):
        with atomic_directory(foreign, marker="export.json"):
            pass
    assert (foreign / "thesis.tex").read_text() == "precious"
    (foreign / "export.json").write_text("{}")  # an earlier export: replaced
    with atomic_directory(foreign, marker="export.json") as tmp:
        (tmp / "export.json").write_text("{}")
    assert [p.name for p in foreign.iterdir()] == ["export.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "notes.txt"]
