"""Distillation: the loss, the teacher's loading and checks, and that training follows the teacher."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.errors import BnnflowError
from bnnflow.runs import load_model
from bnnflow.training.distill import distillation_loss, file_sha256, load_teacher
from bnnflow.training.trainer import TrainConfig, train

EXAMPLE = torch.rand(3, 1, 8, 8)  # the digits' shape


class _Fixed(nn.Module):
    """A teacher sure of one class whatever it sees."""

    def __init__(self, num_classes: int = 10, favourite: int = 0) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.full((num_classes,), -5.0))
        with torch.no_grad():
            self.logits[favourite] = 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def _export(model: nn.Module, path: Path) -> Path:
    program = torch.export.export(model.eval(), (EXAMPLE,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    path.write_bytes(buf.getvalue())
    return path


def _cfg(run: Path, **kw: object) -> TrainConfig:
    base = dict(
        model="digits-mlp", run_dir=str(run), epochs=3, batch_size=50, tau=1e-6, seed=0, progress=False
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_loss_is_hintons_mix_of_hard_and_soft_targets() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    hard = F.cross_entropy(s, y)
    assert torch.equal(distillation_loss(s, t, y, 0.0, 4.0), hard)
    soft = (F.softmax(t / 2, 1) * (F.log_softmax(t / 2, 1) - F.log_softmax(s / 2, 1))).sum(1).mean()
    expected = 0.25 * hard + 0.75 * 4 * soft
    assert torch.allclose(distillation_loss(s, t, y, 0.75, 2.0), expected, atol=1e-6)
    assert (
        distillation_loss(s, s, y, 1.0, 3.0).abs() < 1e-6
    )  # a student equal to its teacher has no soft loss
    # label smoothing applies to the hard term only: by hand, targets 1 - e + e / C and e / C
    e = 0.2
    smoothed = torch.full((5, 4), e / 4).scatter(1, y[:, None], 1 - e + e / 4)
    hard_smooth = -(smoothed * F.log_softmax(s, 1)).sum(1).mean()
    expected = 0.25 * hard_smooth + 0.75 * 4 * soft
    assert torch.allclose(distillation_loss(s, t, y, 0.75, 2.0, label_smoothing=e), expected, atol=1e-6)


def test_teacher_files_are_checked_in_one_line(tmp_path: Path) -> None:
    assert load_teacher(str(_export(_Fixed(), tmp_path / "ok.pt2")), EXAMPLE, 10)(EXAMPLE).shape == (3, 10)
    wrong = _export(_Fixed(num_classes=5), tmp_path / "five.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    cases = {
        str(tmp_path / "missing.pt2"): "no such file",
        str(wrong): r"not \(3, 10\): one logit per class",
        str(tmp_path / "junk.pt2"): "not a torch.export file",
    }
    for path, message in cases.items():
        with pytest.raises(BnnflowError, match=message) as err:
            load_teacher(path, EXAMPLE, 10)
        assert "\n" not in str(err.value)
    with pytest.raises(BnnflowError, match="fails on this data's input"):
        load_teacher(str(_export(_Fixed(), tmp_path / "ok2.pt2")), torch.rand(3, 2), 10)


def test_training_follows_the_teacher_and_resume_keeps_it(tmp_path: Path) -> None:
    """A teacher that always says 0 pulls the student there; without it the student learns the digits."""
    teacher = _export(_Fixed(favourite=0), tmp_path / "zero.pt2")
    train(_cfg(tmp_path / "plain"))
    train(_cfg(tmp_path / "taught", teacher=str(teacher), distill_weight=1.0, distill_temperature=1.0))
    from bnnflow import data as bdata

    x, y = bdata.load_arrays("digits", "test")
    images = torch.as_tensor(x, dtype=torch.float32) / 16
    for name, low, high in (("plain", 0.5, 1.0), ("taught", 0.0, 0.2)):
        model, _ = load_model(tmp_path / name / "checkpoint.pt")
        predicted = model(images).argmax(1)
        share_zero = float((predicted == 0).float().mean())
        assert (share_zero < 0.3) if name == "plain" else (share_zero > 0.8), (name, share_zero)
        acc = float((predicted == torch.as_tensor(y)).float().mean())
        assert low <= acc <= high, (name, acc)
    recorded = json.loads((tmp_path / "taught" / "run.json").read_text())
    assert recorded["config"]["teacher"] == str(teacher) and recorded["config"]["distill_weight"] == 1.0
    assert len(recorded["teacher_sha256"]) == 64

    # --resume takes the teacher from the checkpoint, and refuses a changed teacher file
    train(_cfg(tmp_path / "taught", epochs=4, resume=True, teacher=None))
    _export(_Fixed(favourite=1), teacher)
    with pytest.raises(BnnflowError, match="teacher .* has changed"):
        train(_cfg(tmp_path / "taught", epochs=5, resume=True))
    with pytest.raises(BnnflowError, match="need --teacher"):
        train(_cfg(tmp_path / "bad", distill_weight=0.5))


def test_bnnflow_teacher_writes_a_float_network_train_can_use(tmp_path: Path) -> None:
    out = tmp_path / "digits.pt2"
    cmd = [sys.executable, "-m", "bnnflow", "teacher", "--dataset", "digits", "--out", str(out)]
    r = subprocess.run(
        [*cmd, "--epochs", "2", "--hidden", "64", "--no-progress"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "digits.pt2.json").read_text())
    assert record["test_acc"] > 0.8 and record["hidden"] == [64]
    summary = train(_cfg(tmp_path / "student", teacher=str(out), epochs=1))
    assert summary["final_test_acc"] > 0.3
    bad = subprocess.run([*cmd[:-1], str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and ".pt2" in bad.stderr


def test_distill_cost_benchmark_times_both_kinds_of_run(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_cost.py"
    teacher = _export(_Fixed(), tmp_path / "fixed.pt2")
    cmd = [sys.executable, str(script), "--model", "digits-mlp", "--limit-train", "200", "--rounds", "2"]
    r = subprocess.run([*cmd, "--teacher", str(teacher)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| with")}
    assert set(rows) == {"without", "with"}
    assert rows["without"].rstrip().endswith("| 1.00x |")
    assert len(rows["with"].split("|")[3].split(",")) == 2  # one time per round
    # the timed runs are the ones with and without the teacher, as their run.json say
    assert rows["with"].split("|")[2].strip() == file_sha256(teacher)
    assert rows["without"].split("|")[2].strip() == "none"
    bad = subprocess.run([*cmd, "--teacher", str(tmp_path / "none.pt2")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("distill_cost: ") and bad.stderr.count("\n") == 1
