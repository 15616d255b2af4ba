"""install.sh, run as on a board, into a fresh environment holding only the image's numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnnflow_board.package import checksum_problems, load_package

NUMPY = "1.23.5"  # stands in for the image's (requirements/board-lock.txt)


@pytest.mark.slow
def test_install_keeps_the_images_numpy(designs: Path, tmp_path: Path) -> None:
    venv = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", f"numpy=={NUMPY}"], check=True, timeout=600
    )
    pkg = designs / "digits-pkg"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHON=str(py), BNNFLOW_BOARD_ALLOW_NO_PYNQ="1")
    r = subprocess.run(
        ["bash", str(pkg / "install.sh")], capture_output=True, text=True, env=env, timeout=900
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"keeping numpy=={NUMPY}" in r.stdout and f"(numpy {NUMPY} kept)" in r.stdout
    probe = (
        "import numpy, bitstring, finn_plus_driver, qonnx; print(numpy.__version__, bitstring.__version__)"
    )
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == NUMPY and out[1].startswith("4.")
    r = subprocess.run([str(venv / "bin" / "bnnflow-board"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("bnnflow-board ")
    assert checksum_problems(load_package(pkg)) == ([], [])  # pip built a copy, not in the package


def test_install_refuses_a_python_without_pynq(designs: Path, tmp_path: Path) -> None:
    """A Python with numpy 1.x but no pynq: the refusal names pynq (not some earlier check)."""
    import numpy

    venv = tmp_path / "no-pynq"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "numpy").symlink_to(Path(numpy.__file__).parent)  # this suite's numpy 1.x, nothing else
    env = {k: v for k, v in os.environ.items() if k != "BNNFLOW_BOARD_ALLOW_NO_PYNQ"}
    env["PYTHON"] = str(venv / "bin" / "python")
    r = subprocess.run(
        ["bash", str(designs / "digits-pkg" / "install.sh")], capture_output=True, text=True, env=env
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("install.sh: pynq is not importable")
