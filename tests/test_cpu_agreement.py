"""benchmarks/cpu_agreement.py: the oracle and the engine are compared with FINN on FINN's own images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_agreement.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900, cwd=ROOT
    )


def test_whole_test_set_agrees_and_a_reuse_must_name_the_same_images(
    digits_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "finn.npz"
    done = _run(str(digits_dir), "--workers", "1", "--oracle", "--engine", "--out", str(out))
    assert done.returncode == 0, done.stderr
    head, _, row = done.stdout.strip().splitlines()[-3:]
    cells = dict(zip(head.strip("| ").split(" | "), row.strip("| ").split(" | "), strict=True))
    assert cells["images"] == "360"  # the whole digits test split, in its order
    assert cells["classes differ"] == "0" and cells["scores differ"] == "0", cells
    engines = [v for k, v in cells.items() if k.startswith("engine ")]
    assert engines and set(engines) == {"0 / 0"}, cells
    # Another --limit is another (seeded, stratified) set of images: refused, not compared.
    again = _run(str(digits_dir), "--reuse", "--limit", "30", "--oracle", "--out", str(out))
    assert again.returncode != 0 and "--limit -1, not 30" in again.stderr.strip().splitlines()[-1]
