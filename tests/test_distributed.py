"""DDP training under torchrun: two CPU processes on the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bnnflow.runs import load_checkpoint


def test_two_gloo_ranks_flip_the_same_weights(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = dict(os.environ, BNNFLOW_BACKEND="gloo", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(Path(__file__).with_name("ddp_worker.py")), str(tmp_path / "run"), str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    # Every rank's Bop saw the same all-reduced gradient, so the weights agree bit for bit.
    assert len(result["digests"]) == 2 and len(set(result["digests"])) == 1
    assert result["summary"]["world_size"] == 2
    assert result["summary"]["total_flips"] > 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == 2
    # 300 images over 2 ranks at 25 per rank: 6 steps per epoch.
    assert ckpt["history"][0]["steps"] == 6


def test_bnnflow_train_under_torchrun(tmp_path: Path) -> None:
    """The command users run: `torchrun -m bnnflow train ... --run-dir DIR` (torchrun's own parser
    reads `--run` as its `--run-path`); one summary line, from rank 0, and a clean exit."""
    env = dict(os.environ, BNNFLOW_BACKEND="gloo", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "bnnflow", "train", "--model", "digits-mlp", "--epochs", "1", "--limit-train", "300",
        "--limit-test", "100", "--no-progress", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("digits-mlp / bop: ")]
    assert len(summaries) == 1 and summaries[0].endswith(f"-> {tmp_path / 'run'}"), proc.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 2
